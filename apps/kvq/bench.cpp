// kvq bench: the command line of the benchmarks; the work is in bench/ (kernels_bench.h,
// e2e_bench.h, serve_bench.h).
#include <memory>
#include <string>

#include "command.h"
#include "e2e_bench.h"
#include "kernels_bench.h"
#include "kernels_report.h"
#include "kvq/common/error.h"
#include "kvq/methods/method.h"
#include "serve_bench.h"

namespace kvq::app {

void register_bench(CLI::App& app) {
  auto flags = std::make_shared<bench::KernelsBenchOptions>();
  CLI::App* bench =
      app.add_subcommand("bench", "GPU benchmarks against fp16 baselines measured in the same run");
  bench->require_subcommand(1);
  CLI::App* cmd = bench->add_subcommand(
      "kernels",
      "Decode attention from the compressed KV cache vs fp16 attention (one layer), every "
      "output checked against fp64; exits 1 if any is wrong");
  cmd->add_option("--contexts", flags->contexts, "Context lengths in tokens (comma-separated)")
      ->delimiter(',');
  cmd->add_option("--batches", flags->batches, "Batch sizes (comma-separated)")->delimiter(',');
  cmd->add_option("--methods", flags->methods,
                  "Method strings the CUDA cache serves: nuqB[-P%][-sink[N]][-vhead], kiviB-gG-rR")
      ->delimiter(',');
  cmd->add_option("--shapes", flags->shapes,
                  "mha (32 heads) and/or gqa (32 query, 8 KV heads), head_dim 128")
      ->delimiter(',');
  cmd->add_option("--versions", flags->versions,
                  "Compressed-cache kernels to time: 1 (simple), 2 (mma, tensor cores: KIVI), 3 "
                  "(two-phase, tensor cores: KVQuant)")
      ->delimiter(',');
  cmd->add_flag("--probe", flags->probe,
                "Also time v3's score side alone (nuq3 layouts, with version 3): a measuring "
                "probe checked against v3's softmax statistics, not a decode kernel");
  cmd->add_option("--warmup", flags->warmup, "Untimed runs first");
  cmd->add_option("--repeats", flags->repeats, "Timed runs (the median is reported)");
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->add_option("--json-file", flags->json_file, "Also write the JSON document to this file");
  cmd->callback([flags] {
    // Bad flags are errors before any GPU work, with or without one.
    bench::check_kernels_bench_options(*flags);
    methods::parse_methods(flags->methods, "--methods");
#if KVQ_HAVE_KERNELS
    bench::run_kernels_bench(*flags);
#else
    fail("kernels: built without CUDA (kvq_kernels needs nvcc at configure time)");
#endif
  });

  auto e2e = std::make_shared<bench::E2eBenchOptions>();
  cmd = bench->add_subcommand(
      "e2e",
      "Decode tokens/s and the largest context per cache, LLaMA-7B shapes with random weights");
  cmd->add_option("--preset", e2e->preset, "Model shape: 7b, or tiny (a CPU smoke test)");
  cmd->add_option("--device", e2e->device, "cuda[:N] or cpu");
  cmd->add_option("--dtype", e2e->dtype, "bf16, fp16 or fp32 (the CPU)");
  cmd->add_option("--contexts", e2e->contexts, "Context lengths in tokens (comma-separated)")
      ->delimiter(',');
  cmd->add_option("--batches", e2e->batches, "Batch sizes (comma-separated)")->delimiter(',');
  cmd->add_option("--methods", e2e->methods,
                  "Compressed caches beside fp16 (method strings, comma-separated)")
      ->delimiter(',');
  cmd->add_option("--warmup", e2e->warmup, "Untimed decode steps per cell");
  cmd->add_option("--steps", e2e->steps, "Timed decode steps per cell");
  cmd->add_flag("--max-context,!--no-max-context", e2e->max_context,
                "Search each cache's largest context at batch 1");
  cmd->add_option("--model-context", e2e->model_context,
                  "The model's context in tokens (0: 2^21 for 7b, 4096 for tiny)");
  cmd->add_option("--reserve", e2e->reserve_gib,
                  "GiB of device memory the largest-context search leaves outside the cache");
  cmd->add_option("--kv-mem", e2e->kv_mem_gib,
                  "GiB for the cache (0: the runtime's default; the CPU's largest-context "
                  "search needs it)");
  cmd->add_option("--calib-tokens", e2e->calib_tokens, "Random tokens the methods are fitted on");
  cmd->add_flag("--json", e2e->json, "Print one JSON document instead of the tables");
  cmd->add_option("--json-file", e2e->json_file, "Also write the JSON document to this file");
  cmd->callback([e2e] { bench::run_e2e_bench(*e2e); });

  auto sb = std::make_shared<bench::ServeBenchOptions>();
  cmd = bench->add_subcommand(
      "serve",
      "Load test of a running kvq serve: requests/s, generated tokens/s and time to first token "
      "at each number of concurrent streaming clients");
  cmd->add_option("--url", sb->url, "The server: http://HOST:PORT");
  cmd->add_option("--api-key", sb->api_key, "Sent as 'Authorization: Bearer KEY' (or $KVQ_API_KEY)")
      ->envname("KVQ_API_KEY");
  cmd->add_option("--concurrency", sb->concurrency,
                  "Concurrent clients per level (comma-separated)")
      ->delimiter(',');
  cmd->add_option("--requests", sb->requests,
                  "Requests per level (0: 4 x the clients, at least 8)");
  cmd->add_option("--max-tokens", sb->max_tokens, "Tokens each request generates");
  cmd->add_option("--prompt", sb->prompt, "The prompt of every request");
  cmd->add_option("--temperature", sb->temperature, "Sampling temperature (0: greedy)");
  cmd->add_flag("--ignore-eos,!--stop-at-eos", sb->ignore_eos,
                "Generate --max-tokens tokens whatever the model says (kvq serve's ignore_eos)");
  cmd->add_option("--timeout", sb->timeout_s, "Seconds a request may take to connect or read");
  cmd->add_option("--wait-ready", sb->wait_ready_s,
                  "Seconds to wait for GET /health to answer 200 (a loading server)");
  cmd->add_flag("--json", sb->json, "Print one JSON document instead of the table");
  cmd->add_option("--json-file", sb->json_file, "Also write the JSON document to this file");
  cmd->callback([sb] {
#if KVQ_HAVE_SERVE
    bench::run_serve_bench(*sb);
#else
    fail("built without cpp-httplib (apt-get install libcpp-httplib-dev, then rebuild)");
#endif
  });
}

}  // namespace kvq::app
