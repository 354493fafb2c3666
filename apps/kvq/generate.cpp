// kvq generate: greedy decoding from a prompt (unquantized cache for now).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "kvq/common/error.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"
#include "options.h"

namespace kvq::app {
namespace {

struct GenerateFlags {
  ModelFlags model;
  std::string prompt;
  int64_t n_new = 64;
  double temperature = 0.0;
  bool json = false;
};

void run_generate(const GenerateFlags& f) {
  if (f.temperature != 0.0) {
    fail("--temperature: only 0 (greedy decoding) is implemented, found {}", f.temperature);
  }
  if (f.n_new <= 0) fail("-n: expected a positive number of tokens, found {}", f.n_new);
  const model::LlamaModel m = f.model.load();
  const auto tokenizer = f.model.tokenizer(m);
  const std::vector<int32_t> prompt = tokenizer->encode(f.prompt, /*add_bos=*/true);
  const std::vector<int32_t> out = m.generate_greedy(prompt, f.n_new);
  const std::string text = tokenizer->decode(out);
  if (f.json) {
    nlohmann::json j = {
        {"prompt", f.prompt}, {"prompt_ids", prompt}, {"new_ids", out}, {"text", text}};
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{}{}\n", f.prompt, text);
  }
}

}  // namespace

void register_generate(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Greedy text generation from a prompt");
  flags->model.add_to(*cmd);
  cmd->add_option("--prompt", flags->prompt, "Prompt text (BOS is prepended; may be empty)");
  cmd->add_option("-n,--n-tokens", flags->n_new, "Number of tokens to generate");
  cmd->add_option("--temperature", flags->temperature, "Sampling temperature (0: greedy)");
  cmd->add_flag("--json", flags->json, "Print one JSON document with ids and text");
  cmd->callback([flags] { run_generate(*flags); });
}

}  // namespace kvq::app
