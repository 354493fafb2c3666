// Every step is fp32, as Hugging Face's _compute_default_rope_parameters and
// _compute_llama3_parameters run it in torch.float32 (scalars rounded to fp32 first), so the
// runner's rotations match the reference models' to the last bit or so.
#include "kvq/quant/rope.h"

#include <cmath>

#include "kvq/common/error.h"

namespace kvq::quant {

std::vector<float> rope_inv_freq(double theta, int64_t head_dim, const RopeScaling& scaling) {
  if (!(theta > 0.0) || head_dim < 2 || head_dim % 2 != 0) {
    fail("rope: expected theta > 0 and an even head_dim, found theta {} head_dim {}", theta,
         head_dim);
  }
  const double base = static_cast<float>(theta);
  std::vector<float> inv_freq(static_cast<size_t>(head_dim / 2));
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / static_cast<float>(std::pow(base, static_cast<double>(exponent)));
  }
  if (scaling.kind == RopeScaling::Kind::None) return inv_freq;

  const RopeScaling& s = scaling;
  const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
  const float low_freq_wavelen = static_cast<float>(old_ctx / s.low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(old_ctx / s.high_freq_factor);
  const float factor = static_cast<float>(s.factor);
  const float low = static_cast<float>(s.low_freq_factor);
  const float span = static_cast<float>(s.high_freq_factor - s.low_freq_factor);
  for (float& f : inv_freq) {
    const float wavelen = static_cast<float>(2 * M_PI) / f;
    const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
    if (wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen) {
      const float smooth = (static_cast<float>(old_ctx) / wavelen - low) / span;
      f = (1.0f - smooth) * scaled / factor + smooth * scaled;
    } else {
      f = scaled;
    }
  }
  return inv_freq;
}

}  // namespace kvq::quant
