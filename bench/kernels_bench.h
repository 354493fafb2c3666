// `kvq bench kernels`: decode attention over the compressed KV cache against fp16 attention
// (LibTorch SDPA, our flash-decoding and cuBLAS kernels) in the same run (kernels_bench.cpp).
// The options are plain data so that the CLI (apps/kvq/bench.cpp) builds without CUDA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvq::bench {

struct KernelsBenchOptions {
  std::vector<int64_t> contexts = {4096, 32768, 131072, 524288, 1048576};
  std::vector<int> batches = {1, 8};
  // Method strings the CUDA cache serves (runtime/cache_config.h); others get a row saying why not.
  // KVQuant with values per token over all KV heads: what `kvq fit` writes by default.
  std::vector<std::string> methods = {"nuq4-1%", "nuq3-1%", "nuq2-1%", "kivi2-g32-r128"};
  std::vector<std::string> shapes = {"mha", "gqa"};  // mha: 32 heads; gqa: 32 query, 8 KV
  // Compressed-cache kernels: 1 simple (all methods), 2 mma (tensor cores, KIVI), 3 two-phase
  // (tensor cores, KVQuant); a version that does not serve a method gets no row.
  std::vector<int> versions = {1, 2, 3};
  // Also time the score probe (kernels/kv_score_probe.h) after v3 where it serves the layout
  // (nuq3, MHA and GQA): v3's key side alone, checked against v3's softmax statistics.
  bool probe = false;
  int warmup = 3;
  int repeats = 20;
  bool json = false;      // print one JSON document instead of the table
  std::string json_file;  // also write the JSON document here
};

// Runs the benchmark on the current CUDA device and prints the table (or JSON) to stdout,
// progress to stderr. Throws kvq::Error on bad options or a CUDA failure outside a method's row.
void run_kernels_bench(const KernelsBenchOptions& options);

}  // namespace kvq::bench
