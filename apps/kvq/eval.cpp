// kvq eval: perplexity of a model on a text file with the protocol of ../shared/data/README.md.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "kvq/common/error.h"
#include "kvq/data/text.h"
#include "kvq/eval/perplexity.h"

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
  bool json = false;
  bool quiet = false;
};

void run_eval(const EvalFlags& f) {
  if (f.max_tokens < 0) fail("--max-tokens: expected a positive number, found {}", f.max_tokens);
  const model::LlamaModel m = f.model.load();
  eval::window_length(m, f.seq_len);  // before the (slow) tokenization of the data
  const auto tokenizer = f.model.tokenizer(m);
  const std::string text = data::load_text(f.data, data::parse_format(f.format), f.jsonl_field);
  std::vector<int32_t> tokens = tokenizer->encode(text, /*add_bos=*/true);
  if (f.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > f.max_tokens) tokens.resize(f.max_tokens);

  eval::PerplexityOptions options;
  options.seq_len = f.seq_len;
  options.batch_size = f.batch_size;
  options.progress = !f.quiet;
  options.label = "eval";
  const eval::PerplexityResult r = eval::perplexity(m, tokens, options);

  if (f.json) {
    nlohmann::json j = {{"model", f.model.path},       {"data", f.data},
                        {"dtype", f.model.dtype},      {"device", f.model.device},
                        {"tokens", r.n_tokens},        {"seq_len", r.seq_len},
                        {"windows", r.n_windows},      {"scored_tokens", r.n_scored},
                        {"mean_loss", r.mean_loss},    {"ppl", r.ppl},
                        {"seconds", r.seconds},        {"tokens_per_s", r.tokens_per_s}};
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("| model | data | tokens | L | windows | mean loss | ppl | tok/s |\n");
  fmt::print("|---|---|---|---|---|---|---|---|\n");
  fmt::print("| {} | {} | {} | {} | {} | {:.5f} | {:.4f} | {:.0f} |\n", f.model.path, f.data,
             r.n_tokens, r.seq_len, r.n_windows, r.mean_loss, r.ppl, r.tokens_per_s);
}

}  // namespace

void register_eval(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand("eval", "Perplexity of a model on a text data set");
  flags->model.add_to(*cmd);
  cmd->add_option("--data", flags->data, "Text: a file (plain, WikiText, .jsonl) or a Brown corpus directory")
      ->required();
  cmd->add_option("--format", flags->format, "Data format: auto, plain, jsonl or brown");
  cmd->add_option("--jsonl-field", flags->jsonl_field, "jsonl: the field holding the text");
  cmd->add_option("--seq-len", flags->seq_len, "Window length L in tokens (0: the model's context)");
  cmd->add_option("--max-tokens", flags->max_tokens, "Use only the first N tokens (0: all)");
  cmd->add_option("--batch-size", flags->batch_size, "Windows per forward pass (0: about 8192 tokens)");
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->add_flag("--quiet", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_eval(*flags); });
}

}  // namespace kvq::app
