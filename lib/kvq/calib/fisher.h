// The gradient of the language-model loss with respect to every layer's pre-RoPE Keys and
// Values (KVQuant section 3.3): squared, these are the per-element Fisher information that
// weights the codebook fit. Not here: accumulating statistics over many sequences (stats.h).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "kvq/model/llama.h"

namespace kvq::calib {

// One sequence's activations and gradients, each [t, n_kv_heads * head_dim] in fp32 on the
// model's device, channels in Hugging Face order (head-major).
struct KVGradients {
  double loss = 0.0;  // mean next-token cross-entropy over the t - 1 predictions
  std::vector<at::Tensor> k, v, k_grad, v_grad;  // one per layer
};

// Forward with the next-token loss, then backward to the Keys and Values only (the weights
// take no gradient). tokens: [t] int64, t >= 2. Throws kvq::Error naming the layer if a
// gradient is not finite (e.g. an fp16 overflow), with a hint to use fp32 or bf16.
KVGradients kv_gradients(const model::LlamaModel& model, const at::Tensor& tokens);

}  // namespace kvq::calib
