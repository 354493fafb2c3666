// kvq bench: the command line of the GPU benchmarks; the work is in bench/ (kernels_bench.h).
#include <memory>

#include "command.h"
#include "kernels_bench.h"
#include "kvq/common/error.h"

namespace kvq::app {

void register_bench(CLI::App& app) {
  auto flags = std::make_shared<bench::KernelsBenchOptions>();
  CLI::App* bench =
      app.add_subcommand("bench", "GPU benchmarks against fp16 baselines measured in the same run");
  bench->require_subcommand(1);
  CLI::App* cmd = bench->add_subcommand(
      "kernels", "Decode attention from the compressed KV cache vs fp16 attention (one layer)");
  cmd->add_option("--contexts", flags->contexts, "Context lengths in tokens (comma-separated)")
      ->delimiter(',');
  cmd->add_option("--batches", flags->batches, "Batch sizes (comma-separated)")->delimiter(',');
  cmd->add_option("--methods", flags->methods,
                  "Method strings the CUDA cache serves: nuqB[-P%][-sink[N]][-vhead], kiviB-gG-rR")
      ->delimiter(',');
  cmd->add_option("--shapes", flags->shapes,
                  "mha (32 heads) and/or gqa (32 query, 8 KV heads), head_dim 128")
      ->delimiter(',');
  cmd->add_option("--warmup", flags->warmup, "Untimed runs first");
  cmd->add_option("--repeats", flags->repeats, "Timed runs (the median is reported)");
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->add_option("--json-file", flags->json_file, "Also write the JSON document to this file");
  cmd->callback([flags] {
#if KVQ_HAVE_KERNELS
    bench::run_kernels_bench(*flags);
#else
    fail("kernels: built without CUDA (kvq_kernels needs nvcc at configure time)");
#endif
  });
}

}  // namespace kvq::app
