// LLaMA-shaped models with random weights, for the benchmarks that need a model's size but not
// its knowledge (bench_calibrate, kvq bench e2e): the tensors a checkpoint of that shape holds,
// drawn from N(0, 0.02^2), norms at 1. Their outputs mean nothing; their cost is the real one.
#pragma once

#include <string>

#include "kvq/model/llama.h"

namespace kvq::bench {

// "7b": LLaMA-7B / Llama-2-7B (32 layers, dim 4096, 32 heads x 128, FFN 11008, vocab 32000,
// context 4096); "tiny": 2 layers, dim 256, 4/2 heads x 64, a CPU smoke test. Throws kvq::Error
// naming `flag` for another name.
model::ModelConfig llama_preset(const std::string& name, const std::string& flag);

// The model with seeded random weights (at::manual_seed(seed) first), source "random".
model::LlamaModel random_llama(const model::ModelConfig& c, at::ScalarType dtype, at::Device device,
                               uint64_t seed = 0);

}  // namespace kvq::bench
