// RoPE frequencies (RoFormer; LLaMA's rotate-half RoPE), with Llama 3.1's long-context scaling,
// in the C++ standard library only: the one definition the model runner, SKVQ's post-RoPE fit,
// the runtime and the kernels' CPU twins share. Not here: rotating vectors (each caller rotates
// in its own layout), parsing the scaling from config.json (model/io/config.h) or from an
// artifact's fingerprint (artifact/fingerprint.h).
#pragma once

#include <cstdint>
#include <vector>

namespace kvq::quant {

struct RopeScaling {
  enum class Kind { None, Llama3 };
  Kind kind = Kind::None;
  // Llama 3 ("rope_type": "llama3") parameters.
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// [head_dim / 2] inverse frequencies, inv_freq[i] = 1 / theta^(2i / head_dim), in fp32 in the
// order Hugging Face computes them (the power rounded once to fp32, so within an ulp of torch's
// powf). Llama 3: wavelengths 2 pi / f above original / low_freq_factor are divided by factor,
// those below original / high_freq_factor kept, and a linear blend of the two in between.
// Throws kvq::Error for theta <= 0 or head_dim not even and positive.
std::vector<float> rope_inv_freq(double theta, int64_t head_dim, const RopeScaling& scaling = {});

}  // namespace kvq::quant
