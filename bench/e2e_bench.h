// `kvq bench e2e`: whole decode steps of a LLaMA-7B-shaped model with random weights through the
// runtime (runtime/engine.h), the fp16 cache against compressed ones in the same run: decode
// tokens/s per batch and context, and the largest context each cache holds on the device
// (e2e_bench.cpp). The options are plain data so that the CLI (apps/kvq/bench.cpp) builds
// without CUDA.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvq::bench {

struct E2eBenchOptions {
  std::string preset = "7b";  // llama_preset(): 7b, or tiny (a CPU smoke test)
  std::string device = "cuda";
  std::string dtype = "bf16";
  std::vector<int64_t> contexts = {4096, 32768, 131072, 524288, 1048576};
  std::vector<int> batches = {1, 8};
  // Compressed caches, fitted from a calibration of the random model on random tokens; the fp16
  // cache is always measured first, as the baseline.
  std::vector<std::string> methods = {"nuq4-1%", "nuq3-1%", "nuq2-1%"};
  int warmup = 2;              // untimed decode steps per cell
  int steps = 8;               // timed decode steps per cell
  bool max_context = true;     // also search each cache's largest context at batch 1
  int64_t model_context = 0;   // the model's context (RoPE table); 0: 2^21 (7b), 4096 (tiny)
  double reserve_gib = 2.0;    // device memory left outside the cache for a decode step
  double kv_mem_gib = 0;       // the cache's memory; 0: the runtime's default (GPU: 90% free)
  int64_t calib_tokens = 512;  // random tokens the methods are fitted on
  bool json = false;           // print one JSON document instead of the tables
  std::string json_file;       // also write the JSON document here
};

// Runs the benchmark and prints the tables (or JSON) to stdout, progress to stderr. Throws
// kvq::Error on bad options; a cell that does not fit or fails gets a note instead of a time.
void run_e2e_bench(const E2eBenchOptions& options);

}  // namespace kvq::bench
