// Grouped uniform fake quantization (contract in uniform.h). The asymmetric coding is
// kv_format.h's, so intB here and the int-token reference of the shared data agree exactly.
#include "kvq/quant/uniform.h"

#include <algorithm>
#include <cmath>

#include "kvq/common/error.h"
#include "kvq/quant/kv_format.h"

namespace kvq::quant {
namespace {

void check_symmetric_bits(int bits) {
  if (bits < 2 || bits > 8) fail("bits: expected 2..8 for symmetric quantization, found {}", bits);
}

void check_clip(float clip) {
  if (!(clip > 0.0f && clip <= 1.0f)) fail("clip ratio: expected 0 < r <= 1, found {}", clip);
}

int symmetric_max_code(int bits) { return (1 << (bits - 1)) - 1; }

// One group of n elements at in[0], in[stride], ... into out at the same offsets.
void quantize_group(const float* in, int64_t n, int64_t stride, const UniformConfig& config,
                    float* out) {
  if (config.mode == UniformMode::kAsymmetric) {
    UniformParams p = uniform_params_ref(in, n, stride, config.bits);
    if (config.clip != 1.0f) {
      p.scale *= config.clip;
      p.zero *= config.clip;
    }
    for (int64_t i = 0; i < n; ++i) {
      out[i * stride] = uniform_decode(uniform_encode(in[i * stride], p, config.bits), p);
    }
    return;
  }
  const float scale = symmetric_scale_ref(in, n, stride, config.bits, config.clip);
  for (int64_t i = 0; i < n; ++i) {
    out[i * stride] = symmetric_decode(symmetric_encode(in[i * stride], scale, config.bits), scale);
  }
}

}  // namespace

void check_uniform_config(const UniformConfig& config) {
  if (config.mode == UniformMode::kSymmetric) {
    check_symmetric_bits(config.bits);
  } else if (config.bits < 1 || config.bits > 8) {
    fail("bits: expected 1..8, found {}", config.bits);
  }
  if (config.group < 1) fail("group: expected >= 1 elements, found {}", config.group);
  check_clip(config.clip);
}

float symmetric_scale_ref(const float* x, int64_t n, int64_t stride, int bits, float clip) {
  check_symmetric_bits(bits);
  check_clip(clip);
  if (n < 1) fail("symmetric_scale_ref: expected n >= 1 values, found {}", n);
  if (stride < 1) fail("symmetric_scale_ref: stride: expected >= 1, found {}", stride);
  float max_abs = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v)) {
      fail("symmetric_scale_ref: element {} of {}: expected a finite value, found {}", i, n, v);
    }
    max_abs = std::max(max_abs, std::fabs(v));
  }
  return (max_abs * clip) / static_cast<float>(symmetric_max_code(bits));
}

int symmetric_encode(float x, float scale, int bits) {
  check_symmetric_bits(bits);
  if (scale == 0.0f) return 0;
  const float q = std::nearbyint(x / scale);
  if (std::isnan(q)) return 0;
  const float max_code = static_cast<float>(symmetric_max_code(bits));
  return static_cast<int>(std::clamp(q, -max_code, max_code));  // clamp first: no UB on cast
}

void uniform_fake_quant_ref(const float* x, int64_t n_rows, int64_t n_cols,
                            const UniformConfig& config, float* out) {
  check_uniform_config(config);
  if (n_rows < 0) fail("uniform_fake_quant_ref: n_rows: expected >= 0, found {}", n_rows);
  if (n_cols < 0) fail("uniform_fake_quant_ref: n_cols: expected >= 0, found {}", n_cols);
  if (n_rows == 0 || n_cols == 0) return;
  KVQ_CHECK(x && out, "uniform_fake_quant_ref: null buffer for [{}, {}]", n_rows, n_cols);
  // Checked up front so that an error leaves out (possibly x itself) untouched.
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t c = 0; c < n_cols; ++c) {
      const float v = x[r * n_cols + c];
      if (!std::isfinite(v)) {
        fail("uniform_fake_quant_ref: x[{}][{}]: expected a finite value, found {}", r, c, v);
      }
    }
  }
  if (config.axis == GroupAxis::kRow) {
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t c = 0; c < n_cols; c += config.group) {
        const int64_t n = std::min(config.group, n_cols - c);
        quantize_group(x + r * n_cols + c, n, /*stride=*/1, config, out + r * n_cols + c);
      }
    }
    return;
  }
  for (int64_t c = 0; c < n_cols; ++c) {
    for (int64_t r = 0; r < n_rows; r += config.group) {
      const int64_t n = std::min(config.group, n_rows - r);
      quantize_group(x + r * n_cols + c, n, /*stride=*/n_cols, config, out + r * n_cols + c);
    }
  }
}

double uniform_bits_per_element(const UniformConfig& config) {
  check_uniform_config(config);
  const int n_params = config.mode == UniformMode::kAsymmetric ? 2 : 1;  // fp16 scale (+ zero)
  return config.bits + 16.0 * n_params / static_cast<double>(config.group);
}

}  // namespace kvq::quant
