// kvq generate: text generation through the runtime (lib/kvq/runtime): the model over a KV cache
// quantized by a quant.h5 (compressed pages and CUDA kernels on the GPU; the method's quantizer
// through LibTorch on the CPU) or a plain fp16 cache, one prompt streamed or many batched.
#include <chrono>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "kvq/common/error.h"
#include "kvq/common/json.h"
#include "kvq/common/limits.h"
#include "kvq/common/memory.h"
#include "kvq/common/utf8.h"
#include "kvq/methods/fit.h"
#include "kvq/methods/quant_file.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"
#include "kvq/runtime/engine.h"
#include "kvq/runtime/generator.h"
#include "options.h"

namespace kvq::app {
namespace {

struct GenerateFlags {
  ModelFlags model;
  std::string quant;
  std::string kv;
  std::string prompt;
  bool has_prompt = false;
  std::string prompt_file;
  std::string prompts;
  int64_t n_new = 64;
  runtime::SamplingParams sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  double kv_mem = 0;
  int max_batch = 8;
  bool json = false;
};

std::string read_whole(const std::string& path, const char* flag) {
  require_regular_file(path, fmt::format("{}: {}", flag, path));  // /dev/zero has no end
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open {}", flag, path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// One prompt per line: {"prompt": "..."} (other fields are ignored); blank lines skipped.
std::vector<std::string> read_prompts(const std::string& path) {
  const std::string text = read_whole(path, "--prompts");
  std::vector<std::string> out;
  size_t line_no = 0, at = 0;
  while (at < text.size()) {
    const size_t end = std::min(text.find('\n', at), text.size());
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = parse_json_strict(line, fmt::format("--prompts: {}:{}", path, line_no));
    } catch (const nlohmann::json::exception&) {
      fail("--prompts: {}:{}: not a JSON object", path, line_no);
    }
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string()) {
      fail("--prompts: {}:{}: expected an object with a string \"prompt\"", path, line_no);
    }
    out.push_back(j["prompt"].get<std::string>());
    if (out.back().empty()) fail("--prompts: {}:{}: empty prompt", path, line_no);
    require_utf8_text(out.back(), fmt::format("--prompts: {}:{}: the prompt", path, line_no));
  }
  if (out.empty()) fail("--prompts: {}: no prompts", path);
  return out;
}

void run_generate(const GenerateFlags& f) {
  const int sources = int{f.has_prompt} + int{!f.prompt_file.empty()} + int{!f.prompts.empty()};
  if (sources != 1) fail("give exactly one of --prompt, --prompt-file and --prompts");
  if (!f.quant.empty() && !f.kv.empty()) fail("--quant and --kv: give one (a quant.h5, or fp16)");
  if (!f.kv.empty() && f.kv != "fp16") {
    fail("--kv: expected fp16 (quantized caches come from a quant.h5: --quant), found '{}'", f.kv);
  }
  if (f.n_new <= 0) fail("-n: expected a positive number of tokens, found {}", f.n_new);
  runtime::check_sampling(f.sampling);
  std::vector<std::string> prompts;
  if (f.has_prompt) {
    require_utf8_text(f.prompt, "--prompt", kUtf8Hint);
    prompts.push_back(f.prompt);
  }
  if (!f.prompt_file.empty()) {
    prompts.push_back(read_whole(f.prompt_file, "--prompt-file"));
    if (prompts.back().empty()) fail("--prompt-file: {}: no text", f.prompt_file);
    require_utf8_text(prompts.back(), "--prompt-file: " + f.prompt_file, kUtf8Hint);
  }
  if (!f.prompts.empty()) prompts = read_prompts(f.prompts);
  // The artifact is read and checked before the model's weights are loaded.
  const methods::Quantizer q = f.quant.empty()
                                   ? methods::fit(methods::parse_method("fp16"), nullptr)
                                   : methods::read_quant(f.quant);
  const model::LlamaModel m = f.model.load();
  // Against the context before any prompt is run: a -n near 2^63 would overflow prompt + n.
  const int64_t context = m.config().max_seq_len;
  if (f.n_new > context)
    fail("-n: expected 1..{} (the model's context), found {}", context, f.n_new);
  const auto tokenizer = f.model.tokenizer(m);
  runtime::EngineOptions eo;
  eo.max_batch = f.max_batch;
  eo.kv_mem_gib = f.kv_mem;
  runtime::Engine engine(m, q, eo);

  runtime::Generator gen(engine, tokenizer.get());
  std::vector<int64_t> ids;
  std::vector<std::vector<int32_t>> prompt_ids;
  for (const std::string& p : prompts) {
    runtime::Request r;
    r.prompt = tokenizer->encode(p, /*add_bos=*/true);
    r.max_new_tokens = f.n_new;
    r.sampling = f.sampling;
    r.stop = f.stop;
    r.stop_at_eos = !f.ignore_eos;
    prompt_ids.push_back(r.prompt);
    ids.push_back(gen.submit(std::move(r)));
  }
  // Every request was checked (submit throws); now the cache is worth describing.
  for (const std::string& line : engine.describe()) fmt::print(stderr, "{}\n", line);
  const bool stream = !f.json && prompts.size() == 1;
  if (stream) {
    fmt::print("{}", prompts[0]);
    std::fflush(stdout);
  }
  const auto t0 = std::chrono::steady_clock::now();
  bool told_wait = false;
  while (!gen.done()) {
    const std::vector<runtime::Event> events = gen.step();
    if (!told_wait && gen.waiting() > 0) {  // once: the queue is visible, not every step of it
      fmt::print(stderr, "generate: prompts waiting: {} (running: {}): {}\n", gen.waiting(),
                 gen.running(), gen.waiting_reason());
      told_wait = true;
    }
    for (const runtime::Event& e : events) {
      if (stream && !e.text.empty()) {
        fmt::print("{}", e.text);
        std::fflush(stdout);
      } else if (!f.json && !stream && e.finished) {
        const runtime::Completion& c = gen.completion(e.request);
        fmt::print("--- prompt {} ({} tokens, {} new, {}) ---\n{}{}\n", e.request, c.prompt_tokens,
                   c.tokens.size(), c.finish_reason, prompts[e.request], c.text);
      }
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (stream) fmt::print("\n");

  const runtime::GenerationStats& s = gen.stats();
  const runtime::CacheCost cost = engine.store().cost();
  const auto [dev_used, dev_total] = runtime::device_memory(m.device());
  const double prefill_tps = s.prefill_seconds > 0 ? s.prompt_tokens / s.prefill_seconds : 0;
  const double decode_tps = s.decode_seconds > 0 ? s.decode_tokens / s.decode_seconds : 0;
  nlohmann::json stats = {{"prompt_tokens", s.prompt_tokens},
                          {"generated_tokens", s.generated_tokens},
                          {"prefill_tokens_per_s", prefill_tps},
                          {"decode_tokens_per_s", decode_tps},
                          {"seconds", wall},
                          {"max_running", s.max_running},
                          {"cache_bytes_per_token", cost.bytes_per_token},
                          {"cache_bits_per_element", cost.bits_per_element},
                          {"key_outliers_dropped", cost.key_outliers_dropped},
                          {"cache_pages", engine.total_pages()},
                          {"peak_rss_bytes", peak_rss_bytes()},
                          {"device_bytes_in_use", dev_used}};
  if (f.json) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < ids.size(); ++i) {
      const runtime::Completion& c = gen.completion(ids[i]);
      out.push_back({{"prompt", prompts[i]},
                     {"prompt_ids", prompt_ids[i]},
                     {"new_ids", c.tokens},
                     {"text", c.text},
                     {"finish_reason", c.finish_reason}});
    }
    nlohmann::json j = out.size() == 1 ? out[0] : nlohmann::json{{"completions", out}};
    j["kv"] = q.label();
    j["stats"] = stats;
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  fmt::print(
      stderr,
      "generate: {} prompt tokens at {:.1f} tok/s (prefill), {} tokens generated, decode "
      "{:.1f} tok/s at up to {} sequences; cache {:.1f} B/token ({:.3f} bits/element); "
      "peak RSS {:.1f} MiB{}{}\n",
      s.prompt_tokens, prefill_tps, s.generated_tokens, decode_tps, s.max_running,
      cost.bytes_per_token, cost.bits_per_element, peak_rss_bytes() / 1048576.0,
      dev_used >= 0 ? fmt::format(", GPU memory in use {:.2f} GiB", dev_used / 1073741824.0) : "",
      cost.key_outliers_dropped > 0
          ? fmt::format("; {} key outliers found their page full and were clamped",
                        cost.key_outliers_dropped)
          : "");
}

}  // namespace

void register_generate(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Generate text through the runtime, with a quantized (quant.h5) or fp16 cache");
  flags->model.add_to(*cmd);
  cmd->add_option("--quant", flags->quant, "quant.h5 (kvq fit): the KV cache's method");
  cmd->add_option("--kv", flags->kv, "fp16: a plain fp16 cache (the default without --quant)");
  cmd->add_option("--prompt", flags->prompt, "Prompt text (BOS is prepended; may be empty)")
      ->each([flags](const std::string&) { flags->has_prompt = true; });
  cmd->add_option("--prompt-file", flags->prompt_file, "A file whose whole text is the prompt");
  cmd->add_option("--prompts", flags->prompts,
                  "JSON lines, one {\"prompt\": ...} each: generated as one batch");
  cmd->add_option("-n,--n-tokens", flags->n_new, "Tokens to generate per prompt (at most)");
  cmd->add_option("--temperature", flags->sampling.temperature, "Sampling temperature (0: greedy)");
  cmd->add_option("--top-k", flags->sampling.top_k, "Keep the k most likely tokens (0: all)");
  cmd->add_option("--top-p", flags->sampling.top_p, "Nucleus sampling mass (1: all)");
  cmd->add_option("--seed", flags->sampling.seed, "Random seed of the sampler");
  cmd->add_option("--stop", flags->stop, "Stop string (repeatable); the text ends before it");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Do not stop at the end-of-sequence token");
  cmd->add_option("--kv-mem", flags->kv_mem,
                  "GiB for the KV cache (0: 90% of the free GPU memory; CPU: max-batch full "
                  "sequences)");
  cmd->add_option("--max-batch", flags->max_batch, "Sequences decoded together at most");
  cmd->add_flag("--json", flags->json, "Print one JSON document with ids, text and statistics");
  cmd->callback([flags] { run_generate(*flags); });
}

}  // namespace kvq::app
