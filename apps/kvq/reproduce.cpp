// kvq reproduce: calibrate -> fit -> eval for the KVQuant paper's method list and kvq's own
// mixed precision, on one model and data set, writing every artifact and the table to a folder.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/artifact/output_path.h"
#include "kvq/calib/calib_writer.h"
#include "kvq/calib/calibrate.h"
#include "kvq/common/error.h"
#include "kvq/data/text.h"
#include "kvq/eval/perplexity.h"
#include "kvq/eval/table.h"
#include "kvq/methods/fit.h"
#include "kvq/methods/method.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"
#include "options.h"
#include "results.h"

namespace kvq::app {
namespace {

struct ReproduceFlags {
  ModelFlags model;
  std::string train = "../shared/data/wikitext-2/wiki.train.tokens";
  std::string test = "../shared/data/wikitext-2/wiki.test.tokens";
  std::string out_dir = "reproduce";
  int64_t samples = 16;
  int64_t calib_seq_len = 0;
  int64_t seq_len = 0;
  int64_t max_tokens = 0;
  uint64_t seed = 0;
  std::vector<double> budgets = {3.0, 2.5};
  bool json = false;
  bool quiet = false;
};

// The paper's list (KVQuant Table 1/2 and the ablations, with Q-Norm and the CUDA cache's
// per-head value format), sized for this model.
std::vector<std::string> method_list(const model::ModelConfig& c) {
  const int64_t channels = c.n_kv_heads * c.head_dim;
  const int64_t group = std::min<int64_t>(128, channels);
  const int64_t window = std::min<int64_t>(128, c.max_seq_len / 8);
  return {"int4-token",
          "int3-token",
          "int2-token",
          "nuq4",
          "nuq3",
          "nuq2",
          "nuq4-1%",
          "nuq3-1%",
          "nuq2-1%",
          "nuq3-1%-vhead",
          "nuq2-1%-vhead",
          "nuq3-1%-qnorm",
          "nuq2-1%-qnorm",  // kvq's runtime format; Q-Norm
          fmt::format("kivi4-g32-r{}", window / 32 * 32 > 0 ? window / 32 * 32 : 32),
          fmt::format("kivi2-g32-r{}", window / 32 * 32 > 0 ? window / 32 * 32 : 32),
          fmt::format("skvq-k2-v2-g{}-w{}", group, window),
          "fp8-e4m3",
          "nuq4-post",
          "nuq3-post",
          "nuq3-1%-post",
          "nuq2-1%-post",
          "int3-token-post"};
}

std::string load_input(const std::string& flag, const std::string& path) {
  try {
    return data::load_text(path);
  } catch (const Error& e) {
    fail("{}: {}", flag, e.what());
  }
}

// Removes the --out-dir this run created if the run fails before writing into it.
class CreatedDir {
 public:
  explicit CreatedDir(std::string path) : path_(std::move(path)) {}
  ~CreatedDir() {
    if (!kept_) ::rmdir(path_.c_str());  // fails harmlessly if something is in it
  }
  CreatedDir(const CreatedDir&) = delete;
  CreatedDir& operator=(const CreatedDir&) = delete;
  void keep() { kept_ = true; }

 private:
  std::string path_;
  bool kept_ = false;
};

void run_reproduce(ReproduceFlags& f) {
  if (f.samples < 1 || f.samples > calib::kMaxSamples)  // as kvq calibrate's
    fail("--samples: expected 1..{}, found {}", calib::kMaxSamples, f.samples);
  if (f.max_tokens < 0) fail("--max-tokens: expected a positive number, found {}", f.max_tokens);
  for (double b : f.budgets) {
    if (!(b >= 2.0 && b <= 4.0)) fail("--bits-budget: expected values in [2, 4], found {}", b);
  }
  // Every input is read before anything is created: a missing --data leaves no folder behind.
  const model::LlamaModel m = f.model.load();
  // Both window lengths against the model before the calibration runs (as calibrate, eval do).
  const int64_t context = m.config().max_seq_len;
  calib::sequence_length(context, f.calib_seq_len, m.source(), "--calib-seq-len");
  data::window_length(context, f.seq_len, m.source(), "--seq-len");
  const auto tokenizer = f.model.tokenizer(m);
  const auto fingerprint =
      artifact::model_fingerprint(m.config(), m.weights().checksum, f.model.path);
  const std::string train_text = load_input("--train", f.train);
  const std::string test_text = load_input("--data", f.test);

  struct stat st {};
  const bool existed = ::stat(f.out_dir.c_str(), &st) == 0;
  if (existed && !S_ISDIR(st.st_mode)) fail("--out-dir: {}: expected a directory", f.out_dir);
  if (!existed && mkdir(f.out_dir.c_str(), 0777) != 0) {
    fail("--out-dir: {}: cannot create directory ({})", f.out_dir, std::strerror(errno));
  }
  CreatedDir created(existed ? std::string() : f.out_dir);
  if (existed) created.keep();
  const std::string calib_path = f.out_dir + "/calib.h5";
  const std::vector<std::string> names = {"table.md", "results.csv", "results.json", "plot.svg"};
  std::vector<artifact::NamedPath> outputs = {{"--out-dir", calib_path}};
  for (const std::string& name : names) outputs.push_back({"--out-dir", f.out_dir + "/" + name});
  artifact::check_outputs(outputs,
                          {{"--model", f.model.path}, {"--train", f.train}, {"--data", f.test}});

  // 1. calibrate
  const std::vector<int32_t> train = tokenizer->encode(train_text, /*add_bos=*/true);
  calib::CalibOptions co;
  co.n_samples = f.samples;
  co.seq_len = f.calib_seq_len;
  co.seed = f.seed;
  co.progress = !f.quiet;
  const calib::CalibResult cr = calib::calibrate(m, train, co);
  const artifact::DataFingerprint data =
      data_fingerprint(f.train, static_cast<int64_t>(train.size()), cr.options);
  // calib.h5 stays under its temp name until every other file is ready too.
  artifact::AtomicOutput calib_out(calib_path);
  calib::write_calib(calib_out.temp_path(), cr, fingerprint, data,
                     {f.model.resolved_device(), f.model.dtype, utc_now()});
  const artifact::CalibData calib = artifact::read_calib(calib_out.temp_path());

  // 2. fit: every method of the list, and per-layer bits under each budget
  std::vector<methods::Quantizer> qs;
  qs.push_back(methods::fit(methods::parse_method("fp16"), nullptr));
  methods::FitOptions fo;
  fo.model = &fingerprint;
  for (const std::string& s : method_list(m.config()))
    qs.push_back(methods::fit(methods::parse_method(s), &calib, fo));
  for (double budget : f.budgets) {
    methods::FitOptions mixed = fo;
    mixed.bits_budget = budget;
    qs.push_back(methods::fit(methods::parse_method("nuq3-1%"), &calib, mixed));
  }

  // 3. eval on the test split
  // Encoding stops once --max-tokens tokens are there (a prefix of the whole encoding).
  const std::vector<int32_t> test =
      model::encode_up_to(*tokenizer, test_text, /*add_bos=*/true, f.max_tokens, !f.quiet);
  eval::PerplexityOptions eo;
  eo.seq_len = f.seq_len;
  eo.progress = !f.quiet;
  eval::PerplexityResult base;
  const std::vector<eval::ResultRow> rows = evaluate_all(m, test, qs, eo, &base);

  const std::string header = fmt::format(
      "kvq reproduce, {}: model {} ({}), calibration {} x {} tokens of {} (seed {}), evaluation on "
      "{} "
      "({} tokens, {} windows of L = {}), device {}, dtype {}\n\n",
      utc_now(), f.model.path, fingerprint.weights_checksum, cr.options.n_samples,
      cr.options.seq_len, f.train, f.seed, f.test, base.n_tokens, base.n_windows, base.seq_len,
      f.model.resolved_device(), f.model.dtype);
  const std::string table = eval::markdown_table(rows);
  nlohmann::json j = {{"model", f.model.path},
                      {"weights_checksum", fingerprint.weights_checksum},
                      {"train", f.train},
                      {"test", f.test},
                      {"calib", calib_path},
                      {"calib_sequences", cr.options.n_samples},
                      {"calib_seq_len", cr.options.seq_len},
                      {"seed", f.seed},
                      {"tokens", base.n_tokens},
                      {"seq_len", base.seq_len},
                      {"windows", base.n_windows},
                      {"device", f.model.resolved_device()},
                      {"dtype", f.model.dtype},
                      {"date", utc_now()},
                      {"methods", eval::json_rows(rows)}};
  const std::string plot =
      results_plot_svg(f.out_dir + "/plot.svg", rows, qs, f.model.path, f.test, base.seq_len);
  calib_out.commit();
  artifact::write_text_files_atomic(
      {{f.out_dir + "/table.md", header + table},
       {f.out_dir + "/results.csv", eval::csv_table(rows)},
       {f.out_dir + "/results.json",
        j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"},
       {f.out_dir + "/plot.svg", plot}});
  created.keep();
  if (f.json) {
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    fmt::print("{}{}\nwritten: {}/calib.h5, table.md, results.csv, results.json, plot.svg\n",
               header, table, f.out_dir);
  }
}

}  // namespace

void register_reproduce(CLI::App& app) {
  auto flags = std::make_shared<ReproduceFlags>();
  flags->model.path = "../shared/data/models/wt2-llama-1m";
  flags->model.device = "auto";
  CLI::App* cmd = app.add_subcommand(
      "reproduce",
      "calibrate -> fit -> eval for the KVQuant paper's method list; table, CSV, JSON and plot");
  cmd->add_option("--model", flags->model.path,
                  "Model: a Hugging Face directory or a llama2.c .bin checkpoint");
  cmd->add_option("--dtype", flags->model.dtype, "Compute dtype: fp32, bf16 or fp16");
  cmd->add_option("--device", flags->model.device,
                  "Device: cpu, cuda, cuda:N or auto (cuda when present)");
  cmd->add_option("--train", flags->train, "Calibration text");
  cmd->add_option("--data", flags->test, "Evaluation text");
  cmd->add_option("--out-dir", flags->out_dir,
                  "Folder for calib.h5, table.md, results.csv, results.json, plot.svg");
  cmd->add_option("--samples", flags->samples, "Calibration sequences");
  cmd->add_option("--calib-seq-len", flags->calib_seq_len,
                  "Calibration tokens per sequence (0: min(2048, context))");
  cmd->add_option("--seq-len", flags->seq_len, "Evaluation window L (0: the model's context)");
  cmd->add_option("--max-tokens", flags->max_tokens,
                  "Evaluate only the first N test tokens (0: all)");
  cmd->add_option("--seed", flags->seed, "Seed for drawing the calibration sequences");
  cmd->add_option("--bits-budget", flags->budgets,
                  "Average code bits for kvq's per-layer mixed precision (nuq3-1% base)");
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->add_flag("--quiet", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_reproduce(*flags); });
}

}  // namespace kvq::app
