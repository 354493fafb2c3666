// kvq eval: perplexity of a model on a text file with the protocol of ../shared/data/README.md,
// with the KV cache unquantized or quantized by any list of methods in one run.
#include <algorithm>
#include <cstdio>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/artifact/output_path.h"
#include "kvq/common/error.h"
#include "kvq/data/text.h"
#include "kvq/eval/perplexity.h"
#include "kvq/eval/quantized.h"
#include "kvq/eval/table.h"
#include "kvq/methods/fit.h"
#include "kvq/methods/quant_file.h"
#include "kvq/model/llama.h"
#include "options.h"
#include "results.h"
#include "runtime_eval.h"

namespace kvq::app {
namespace {

struct EvalFlags {
  ModelFlags model;
  std::string data;
  std::string format = "auto";
  std::string jsonl_field = "text";
  int64_t seq_len = 0;
  int64_t max_tokens = 0;
  int64_t batch_size = 0;
  std::string methods;
  std::string calib;
  std::string quant;
  std::string csv;
  std::string plot;
  bool json = false;
  bool quiet = false;
  bool runtime = false;
  int64_t runtime_prefill = 256;
  int runtime_batch = 0;
  double kv_mem = 0;
};

// An option given with an empty value (`--methods "$UNSET"`) is a usage error, not "none".
const CLI::Validator kNonEmpty(
    [](const std::string& v) { return v.empty() ? std::string("expected a list, found ''") : ""; },
    "LIST");

// A comma-separated flag value: an empty item ("int4,,nuq3", a trailing comma) or one given twice
// is a mistake to report, not to skip.
std::vector<std::string> split_list(const std::string& s, const char* flag) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  std::set<std::string> seen;  // not a search of `out`: a list may be as long as a command line
  size_t begin = 0;
  for (size_t i = 1;; ++i) {
    const size_t end = std::min(s.find(',', begin), s.size());
    std::string item = s.substr(begin, end - begin);
    if (item.empty()) fail("{}: item {} of '{}' is empty", flag, i, s);
    if (!seen.insert(item).second) fail("{}: '{}' is given twice", flag, item);
    out.push_back(std::move(item));
    if (end == s.size()) break;
    begin = end + 1;
  }
  return out;
}

// --methods parsed before any work; two strings naming one method (int4 and int4-token) are
// refused as a repeat.
std::vector<methods::MethodSpec> method_list(const std::string& s) {
  return methods::parse_methods(split_list(s, "--methods"), "--methods");
}

// The quantizers to evaluate, fp16 first (the baseline every delta refers to).
std::vector<methods::Quantizer> quantizers(const EvalFlags& f,
                                           const std::vector<methods::MethodSpec>& specs,
                                           const std::vector<std::string>& quant_paths,
                                           const model::LlamaModel& m) {
  const auto fingerprint =
      artifact::model_fingerprint(m.config(), m.weights().checksum, f.model.path);
  std::unique_ptr<artifact::CalibData> calib;
  if (!f.calib.empty()) {
    calib = std::make_unique<artifact::CalibData>(artifact::read_calib(f.calib));
    artifact::require_same_model(f.calib, calib->model, fingerprint);
  }
  std::vector<methods::Quantizer> out;
  out.push_back(methods::fit(methods::parse_method("fp16"), nullptr));
  for (const methods::MethodSpec& spec : specs) {
    if (spec.kind == methods::MethodKind::kFp16) continue;
    if (spec.needs_calib() && !calib) {
      fail("--methods: {} needs calibration statistics: pass --calib calib.h5 (kvq calibrate)",
           spec.name());
    }
    methods::FitOptions options;
    options.model = &fingerprint;
    out.push_back(methods::fit(spec, calib.get(), options));
  }
  for (const std::string& path : quant_paths) {
    methods::Quantizer q = methods::read_quant(path);
    q.require_model(fingerprint);
    out.push_back(std::move(q));
  }
  return out;
}

void run_eval(const EvalFlags& f) {
  if (f.max_tokens < 0) fail("--max-tokens: expected a positive number, found {}", f.max_tokens);
  if (f.batch_size < 0)
    fail("--batch-size: expected >= 0 windows (0: about 8192 tokens), found {}", f.batch_size);
  // The runtime's flags are checked before the (long) fake-quantized evaluation that precedes it.
  RuntimeEvalOptions ro;
  ro.seq_len = f.seq_len;
  ro.prefill = f.runtime_prefill;
  ro.max_batch = f.runtime_batch;
  ro.kv_mem_gib = f.kv_mem;
  ro.progress = !f.quiet;
  check_runtime_eval_options(ro);
  const bool quantized = !f.methods.empty() || !f.quant.empty();
  if (!f.calib.empty() && f.methods.empty())
    fail("--calib: given without --methods to fit from it");
  if ((!f.csv.empty() || !f.plot.empty()) && !quantized)
    fail("--csv/--plot: need --methods or --quant");
  if (f.runtime && f.quant.empty()) fail("--runtime: needs --quant (the quant.h5 files to serve)");
  const std::vector<methods::MethodSpec> specs = method_list(f.methods);
  const std::vector<std::string> quant_paths = split_list(f.quant, "--quant");
  std::vector<artifact::NamedPath> inputs = {
      {"--data", f.data}, {"--model", f.model.path}, {"--calib", f.calib}};
  for (const std::string& q : quant_paths) inputs.push_back({"--quant", q});
  artifact::check_outputs({{"--csv", f.csv}, {"--plot", f.plot}}, inputs);
  const model::LlamaModel m = f.model.load();
  data::window_length(m.config().max_seq_len, f.seq_len,
                      m.source());  // before the (slow) tokenization
  // Methods are parsed and fitted before the data is read, so a bad one fails fast.
  const std::vector<methods::Quantizer> qs =
      quantized ? quantizers(f, specs, quant_paths, m) : std::vector<methods::Quantizer>{};
  const auto tokenizer = f.model.tokenizer(m);
  const std::string text = data::load_text(f.data, data::parse_format(f.format), f.jsonl_field);
  // Stops encoding once --max-tokens is reached: a long text costs only what is used.
  const std::vector<int32_t> tokens =
      model::encode_up_to(*tokenizer, text, /*add_bos=*/true, f.max_tokens, !f.quiet);

  eval::PerplexityOptions options;
  options.seq_len = f.seq_len;
  options.batch_size = f.batch_size;
  options.progress = !f.quiet;
  options.label = "eval";
  if (!quantized) {
    const eval::PerplexityResult r = eval::perplexity(m, tokens, options);
    if (f.json) {
      nlohmann::json j = {{"model", f.model.path},    {"data", f.data},
                          {"dtype", f.model.dtype},   {"device", f.model.device},
                          {"tokens", r.n_tokens},     {"seq_len", r.seq_len},
                          {"windows", r.n_windows},   {"scored_tokens", r.n_scored},
                          {"mean_loss", r.mean_loss}, {"ppl", r.ppl},
                          {"seconds", r.seconds},     {"tokens_per_s", r.tokens_per_s}};
      fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
      return;
    }
    fmt::print("| model | data | tokens | L | windows | mean loss | ppl | tok/s |\n");
    fmt::print("|---|---|---|---|---|---|---|---|\n");
    fmt::print("| {} | {} | {} | {} | {} | {:.5f} | {:.4f} | {:.0f} |\n", f.model.path, f.data,
               r.n_tokens, r.seq_len, r.n_windows, r.mean_loss, r.ppl, r.tokens_per_s);
    return;
  }

  eval::PerplexityResult base;
  std::vector<eval::ResultRow> rows = evaluate_all(m, tokens, qs, options, &base);
  if (f.runtime) {
    // Each quant.h5 once more, through the runtime, beside its fake-quantized row.
    const size_t n_fake = rows.size();
    for (size_t i = 0; i < n_fake; ++i) {
      if (qs[i].provenance.path.empty()) continue;
      const RuntimeEvalResult r = runtime_perplexity(m, tokens, qs[i], ro);
      rows.push_back(runtime_row(r, rows[i], base));
    }
  }
  // Rendered first and written together: a run that fails writes neither.
  std::vector<std::pair<std::string, std::string>> files;
  if (!f.csv.empty()) files.emplace_back(f.csv, eval::csv_table(rows));
  if (!f.plot.empty()) {
    // The fake-quantized rows, one per quantizer (runtime rows repeat their methods).
    const std::vector<eval::ResultRow> fake(rows.begin(), rows.begin() + qs.size());
    files.emplace_back(f.plot,
                       results_plot_svg(f.plot, fake, qs, f.model.path, f.data, base.seq_len));
  }
  artifact::write_text_files_atomic(files);
  if (f.json) {
    nlohmann::json j = {{"model", f.model.path},     {"data", f.data},
                        {"dtype", f.model.dtype},    {"device", f.model.resolved_device()},
                        {"tokens", base.n_tokens},   {"seq_len", base.seq_len},
                        {"windows", base.n_windows}, {"scored_tokens", base.n_scored},
                        {"calib", f.calib},          {"methods", eval::json_rows(rows)}};
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  fmt::print("{} on {}: {} tokens, {} windows of L = {}{}\n\n", f.model.path, f.data, base.n_tokens,
             base.n_windows, base.seq_len, f.calib.empty() ? "" : ", calibration " + f.calib);
  fmt::print("{}", eval::markdown_table(rows));
}

}  // namespace

void register_eval(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Perplexity of a model on a text data set, with the KV cache quantized by any methods");
  flags->model.add_to(*cmd);
  cmd->add_option("--data", flags->data,
                  "Text: a file (plain, WikiText, .jsonl) or a Brown corpus directory")
      ->required();
  cmd->add_option("--format", flags->format, "Data format: auto, plain, jsonl or brown");
  cmd->add_option("--jsonl-field", flags->jsonl_field, "jsonl: the field holding the text");
  cmd->add_option("--seq-len", flags->seq_len,
                  "Window length L in tokens (0: the model's context)");
  cmd->add_option("--max-tokens", flags->max_tokens, "Use only the first N tokens (0: all)");
  cmd->add_option("--batch-size", flags->batch_size,
                  "Windows per forward pass (0: about 8192 tokens)");
  cmd->add_option(
         "--methods", flags->methods,
         std::string("Comma-separated method strings, fp16 always included as the baseline:\n") +
             methods::method_forms())
      ->check(kNonEmpty);
  cmd->add_option("--calib", flags->calib,
                  "calib.h5 to fit the methods that need calibration from");
  cmd->add_option("--quant", flags->quant,
                  "Comma-separated quant.h5 files (kvq fit) to evaluate too")
      ->check(kNonEmpty);
  cmd->add_option("--csv", flags->csv, "Also write the results table as CSV to this file");
  cmd->add_option("--plot", flags->plot,
                  "Also write Δ perplexity against bits per element, with the Pareto front, as SVG")
      ->check(CLI::Validator(
          [](const std::string& path) {
            const bool svg = path.size() > 4 && path.compare(path.size() - 4, 4, ".svg") == 0;
            return svg ? std::string() : "expected a file name ending in .svg, found " + path;
          },
          "FILE.svg"));
  CLI::Option* runtime =
      cmd->add_flag("--runtime", flags->runtime,
                    "Also run each --quant through the runtime (its cache and kernels): prefill, "
                    "then decode token by token");
  cmd->add_option("--runtime-prefill", flags->runtime_prefill,
                  "--runtime: tokens of each window prefilled before decoding the rest")
      ->needs(runtime);
  cmd->add_option("--runtime-batch", flags->runtime_batch,
                  "--runtime: windows decoded together (0: 64 on a GPU, 8 on the CPU)")
      ->needs(runtime);
  cmd->add_option("--kv-mem", flags->kv_mem, "--runtime: GiB for the KV cache (0: default)")
      ->needs(runtime);
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->add_flag("--quiet", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_eval(*flags); });
}

}  // namespace kvq::app
