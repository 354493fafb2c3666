// Converts a checkpoint's tensor views (io/checkpoint.h) into ATen tensors in the compute dtype
// on the target device, in the runner's layout (Hugging Face rotate-half q/k row order).
#pragma once

#include <ATen/ATen.h>

#include "kvq/model/io/checkpoint.h"
#include "kvq/model/llama.h"

namespace kvq::model {

// Copies a view into a fresh CPU tensor of its own dtype (no aliasing of the mapped file).
at::Tensor tensor_from_view(const TensorView& view);

// Row permutation of a q/k projection from llama2.c's interleaved RoPE order (pairs (2j, 2j+1)
// within a head) to rotate-half order (pairs (j, j + head_dim/2)): w [n_heads * head_dim, in].
at::Tensor deinterleave_rope_rows(const at::Tensor& w, int64_t n_heads, int64_t head_dim);

// Also sets Weights::checksum (see there).
Weights load_weights(const Checkpoint& checkpoint, const LoadOptions& options);

// The checksum load_weights computes, from weights already in memory (e.g. random ones).
std::string weights_checksum(const Weights& weights);

}  // namespace kvq::model
