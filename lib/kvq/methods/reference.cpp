// The CPU reference of every method (quantizer.h): plain loops over lib/kvq/quant, one vector or
// group at a time, which the LibTorch paths must match bit for bit. Slow by design.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kvq/common/error.h"
#include "kvq/methods/detail.h"
#include "kvq/quant/kv_format.h"
#include "kvq/quant/uniform.h"

namespace kvq::methods::detail {
namespace {

quant::UniformConfig uniform(int bits, quant::GroupAxis axis, int64_t group, float clip = 1.0f) {
  quant::UniformConfig c;
  c.bits = bits;
  c.mode = quant::UniformMode::kAsymmetric;
  c.axis = axis;
  c.group = group;
  c.clip = clip;
  return c;
}

// Dense part of a nuq element: code with the encode levels, value from the decode levels.
float nuq_element(float v, float offset, float scale, const TensorParams& p) {
  if (scale == 0.0f) return offset;
  const int n = static_cast<int>(p.levels_encode.size());
  const int code = quant::nuq_encode((v - offset) / scale, p.levels_encode.data(), n);
  return p.levels_decode[code] * scale + offset;
}

// Keys: rows [n_rows, C]; channel c uses [lo_c, hi_c] as nuq_fake_quant_channel_ref does.
int64_t nuq_keys_ref(const float* x, int64_t n_rows, int64_t channels, const TensorParams& p,
                     float* out) {
  const bool keep_outliers = p.outlier_fraction > 0;
  int64_t n_outliers = 0;
  for (int64_t c = 0; c < channels; ++c) {
    const float lo = p.lo[c], hi = p.hi[c];
    const float offset = (lo + hi) / 2.0f;
    const float scale = (hi - lo) / 2.0f;
    for (int64_t r = 0; r < n_rows; ++r) {
      const float v = x[r * channels + c];
      if (!std::isfinite(v))
        fail("nuq keys reference: row {} channel {}: expected a finite value, found {}", r, c, v);
      if (keep_outliers && (v < lo || v > hi)) {
        out[r * channels + c] = quant::round_to_fp16(v);
        ++n_outliers;
      } else {
        out[r * channels + c] = nuq_element(v, offset, scale, p);
      }
    }
  }
  return n_outliers;
}

// Values: vectors [n, d], each with its dense range and fp16 offset/scale (kv_format.h).
int64_t nuq_values_ref(const float* x, int64_t n, int64_t d, const TensorParams& p, float* out) {
  int64_t n_outliers = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* v = x + i * d;
    const quant::DenseRange r = quant::dense_range_ref(v, d, 1, p.outlier_fraction);
    const float offset = quant::round_to_fp16((r.lo + r.hi) / 2.0f);
    const float scale = quant::round_to_fp16((r.hi - r.lo) / 2.0f);
    for (int64_t j = 0; j < d; ++j) {
      if (v[j] < r.lo || v[j] > r.hi) {
        out[i * d + j] = quant::round_to_fp16(v[j]);
        ++n_outliers;
      } else {
        out[i * d + j] = nuq_element(v[j], offset, scale, p);
      }
    }
  }
  return n_outliers;
}

void fp8_ref(const float* x, int64_t n, float amax, Fp8Format format, float* out) {
  if (amax == 0.0f) {  // dynamic: max |x| of the tensor
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(x[i]))
        fail("fp8 reference: element {}: expected a finite value, found {}", i, x[i]);
      amax = std::max(amax, std::fabs(x[i]));
    }
  }
  const float scale = amax / fp8_max(format);
  for (int64_t i = 0; i < n; ++i) out[i] = fp8_fake_quant_ref(x[i], scale, format);
}

void skvq_ref(const float* x, int64_t n_rows, int64_t channels, const TensorParams& p,
              int64_t group, float* out) {
  std::vector<float> in(channels), q(channels);
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t i = 0; i < channels; ++i) in[i] = x[r * channels + p.perm[i]];
    quant::uniform_fake_quant_ref(in.data(), 1, channels,
                                  uniform(p.bits, quant::GroupAxis::kRow, group, p.clip), q.data());
    for (int64_t i = 0; i < channels; ++i) out[r * channels + p.perm[i]] = q[i];
  }
}

}  // namespace

at::Tensor quantize_ref(const MethodSpec& spec, const TensorParams& p, bool key,
                        const at::Tensor& x, QuantCounters* c) {
  KVQ_CHECK(
      x.dim() == 4 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
      "reference input must be contiguous float32 [b, t, h, d] on the CPU");
  const int64_t b = x.size(0), t = x.size(1), h = x.size(2), d = x.size(3), channels = h * d;
  at::Tensor result = at::empty_like(x);
  const float* in = x.data_ptr<float>();
  float* out = result.data_ptr<float>();
  int64_t n_outliers = 0;
  switch (spec.kind) {
    case MethodKind::kFp16: result.copy_(x); break;
    case MethodKind::kFp8: fp8_ref(in, x.numel(), p.amax, spec.fp8, out); break;
    case MethodKind::kInt:
    case MethodKind::kKivi: {
      const bool time_groups = key && spec.key_time_group() > 0;
      if (time_groups) {  // per channel down each sequence's tokens
        for (int64_t i = 0; i < b; ++i) {
          quant::uniform_fake_quant_ref(
              in + i * t * channels, t, channels,
              uniform(p.bits, quant::GroupAxis::kColumn, spec.key_time_group()),
              out + i * t * channels);
        }
      } else {  // per (token, head) along head_dim
        const int64_t group =
            spec.kind == MethodKind::kKivi || spec.granularity == IntGranularity::kGroup
                ? spec.group
                : d;
        quant::uniform_fake_quant_ref(in, b * t * h, d,
                                      uniform(p.bits, quant::GroupAxis::kRow, group), out);
      }
      break;
    }
    case MethodKind::kSkvq: skvq_ref(in, b * t, channels, p, spec.group, out); break;
    case MethodKind::kNuq:
      n_outliers = key ? nuq_keys_ref(in, b * t, channels, p, out)
                       : (spec.value_per_head ? nuq_values_ref(in, b * t * h, d, p, out)
                                              : nuq_values_ref(in, b * t, channels, p, out));
      break;
  }
  if (c) {
    c->elements += x.numel();
    c->outliers += n_outliers;
  }
  return result;
}

}  // namespace kvq::methods::detail
