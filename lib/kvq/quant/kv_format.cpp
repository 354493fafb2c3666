// CPU reference for the element-level definitions in kv_format.h: fp16 rounding, the
// dense-and-sparse range, uniform and nuq coding, and the KVQuant fake-quantizers the kernels
// are tested against. Written for exactness and clarity, not speed; no LibTorch.
#include "kvq/quant/kv_format.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kvq/common/error.h"

namespace kvq::quant {
namespace {

uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}

float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

// IEEE binary32 -> binary16 bits, round to nearest even.
uint16_t half_bits(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
  // 65520 (0x477FF000) is the tie between 65504 and 2^16, which rounds to even: inf.
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);
  if (abs >= 0x38800000u) {  // normal in fp16: |x| >= 2^-14
    // Adding 0xFFF plus the kept lsb rounds the 13 dropped bits half to even; a carry into
    // the exponent is the correct result (mantissa overflow to the next binade).
    const uint32_t rounded = abs + 0xFFFu + ((abs >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));  // rebias 127 -> 15
  }
  if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // below 2^-25: rounds to zero
  // fp16 subnormal: m * 2^-24 with m = mantissa (implicit bit included) >> shift.
  const int exponent = static_cast<int>(abs >> 23);
  const uint32_t mantissa = (abs & 0x7FFFFFu) | 0x800000u;
  const int shift = 126 - exponent;  // 14..24
  uint32_t m = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rest > half || (rest == half && (m & 1u))) ++m;  // m == 0x400 is the smallest normal
  return static_cast<uint16_t>(sign | m);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1Fu) return bits_float(sign | 0x7F800000u | (mantissa << 13));
  if (exponent != 0) return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // exact
  return sign ? -magnitude : magnitude;
}

void check_uniform_bits(int bits) {
  if (bits < 1 || bits > 8) fail("bits: expected 1..8, found {}", bits);
}

void check_stride(const char* fn, int64_t stride) {
  if (stride < 1) fail("{}: stride: expected >= 1, found {}", fn, stride);
}

// Levels are checked once per vector so that nuq_encode's binary search can trust them.
void check_levels(const char* fn, const float* levels, int n_levels) {
  if (n_levels < 1) fail("{}: n_levels: expected >= 1, found {}", fn, n_levels);
  KVQ_CHECK(levels != nullptr, "{}: null levels", fn);
  for (int i = 0; i < n_levels; ++i) {
    if (!std::isfinite(levels[i])) {
      fail("{}: levels[{}]: expected a finite value, found {}", fn, i, levels[i]);
    }
    if (i > 0 && !(levels[i] > levels[i - 1])) {
      fail("{}: levels[{}]: expected strictly ascending levels (> {}), found {}", fn, i,
           levels[i - 1], levels[i]);
    }
  }
}

// Dense part of both nuq paths: normalize, code, dequantize.
float nuq_dense(float v, float offset, float scale, const float* levels, int n_levels) {
  if (scale == 0.0f) return offset;
  const float xn = (v - offset) / scale;
  return levels[nuq_encode(xn, levels, n_levels)] * scale + offset;
}

}  // namespace

float round_to_fp16(float x) { return half_to_float(half_bits(x)); }

int64_t outliers_per_side(int64_t n, double fraction) {
  if (!(fraction >= 0.0 && fraction < 1.0)) {
    fail("outlier fraction: expected 0 <= f < 1, found {}", fraction);
  }
  if (n < 1) fail("outliers_per_side: expected n >= 1 values, found {}", n);
  int64_t k = 0;
  if (fraction > 0.0) {
    const double half = fraction * static_cast<double>(n) / 2.0;
    // A product that is an integer in decimal (0.14 * 100 / 2 = 7) may come out a few ulps
    // above it in binary; ceil would then add a spurious outlier per side.
    const double nearest = std::nearbyint(half);
    const bool integral = std::fabs(half - nearest) <= 1e-9 * std::max(1.0, half);
    k = static_cast<int64_t>(integral ? nearest : std::ceil(half));
  }
  if (2 * k >= n) {
    fail("outlier fraction {} of {} values: expected 2k < n, found k = {} per side", fraction, n,
         k);
  }
  return k;
}

DenseRange dense_range_ref(const float* x, int64_t n, int64_t stride, double fraction) {
  if (n < 1) fail("dense_range_ref: expected n >= 1 values, found {}", n);
  check_stride("dense_range_ref", stride);
  const int64_t k = outliers_per_side(n, fraction);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    v[i] = x[i * stride];
    if (!std::isfinite(v[i])) {
      fail("dense_range_ref: element {} of {}: expected a finite value, found {}", i, n, v[i]);
    }
  }
  DenseRange range;
  if (k == 0) {
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    range.lo = *lo;
    range.hi = *hi;
    return range;
  }
  std::nth_element(v.begin(), v.begin() + k, v.end());
  range.lo = v[k];
  const int64_t upper = n - 1 - k;  // >= k since 2k < n
  if (upper > k) std::nth_element(v.begin() + k + 1, v.begin() + upper, v.end());
  range.hi = v[upper];
  return range;
}

UniformParams uniform_params_ref(const float* x, int64_t n, int64_t stride, int bits) {
  check_uniform_bits(bits);
  if (n < 1) fail("uniform_params_ref: expected n >= 1 values, found {}", n);
  check_stride("uniform_params_ref", stride);
  float lo = x[0];
  float hi = x[0];
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (!std::isfinite(v)) {
      fail("uniform_params_ref: element {} of {}: expected a finite value, found {}", i, n, v);
    }
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  UniformParams p;
  p.scale = (hi - lo) / static_cast<float>((1 << bits) - 1);
  p.zero = lo;
  if (!std::isfinite(p.scale)) {
    fail("uniform_params_ref: range [{}, {}]: expected a finite max - min, found {}", lo, hi,
         hi - lo);
  }
  return p;
}

int uniform_encode(float x, UniformParams p, int bits) {
  check_uniform_bits(bits);
  if (p.scale == 0.0f) return 0;
  const float q = std::nearbyint((x - p.zero) / p.scale);
  if (std::isnan(q)) return 0;
  // Clamp in float before converting: out-of-range float -> int is undefined behaviour.
  const float max_code = static_cast<float>((1 << bits) - 1);
  return static_cast<int>(std::clamp(q, 0.0f, max_code));
}

int nuq_encode(float xn, const float* levels, int n_levels) {
  if (n_levels < 1) fail("nuq_encode: n_levels: expected >= 1, found {}", n_levels);
  if (std::isnan(xn)) return 0;
  // First level >= xn; the answer is it or the one below.
  const float* upper = std::lower_bound(levels, levels + n_levels, xn);
  if (upper == levels) return 0;
  if (upper == levels + n_levels) return n_levels - 1;
  const int hi = static_cast<int>(upper - levels);
  // Compared in double, where the sum of two floats and 2 * xn are exact for any levels of
  // comparable magnitude, so a tie is a true tie and goes to the lower level.
  const double twice = 2.0 * static_cast<double>(xn);
  const double mid_twice = static_cast<double>(levels[hi - 1]) + static_cast<double>(levels[hi]);
  return twice > mid_twice ? hi : hi - 1;
}

float nuq_threshold(float a, float b) {
  const double half = (static_cast<double>(a) + static_cast<double>(b)) * 0.5;  // exact halving
  float t = static_cast<float>(half);                                           // to nearest
  if (static_cast<double>(t) > half) t = std::nextafter(t, -std::numeric_limits<float>::infinity());
  return t;
}

int64_t nuq_fake_quant_vector_ref(const float* x, int64_t n, int64_t stride, const float* levels,
                                  int n_levels, double fraction, float* out) {
  check_levels("nuq_fake_quant_vector_ref", levels, n_levels);
  const DenseRange range = dense_range_ref(x, n, stride, fraction);  // checks n, stride, x
  const float offset = round_to_fp16((range.lo + range.hi) / 2.0f);
  const float scale = round_to_fp16((range.hi - range.lo) / 2.0f);
  if (!std::isfinite(offset) || !std::isfinite(scale)) {
    fail(
        "nuq_fake_quant_vector_ref: dense range [{}, {}]: expected an fp16 offset and scale, "
        "found offset {} scale {}",
        range.lo, range.hi, offset, scale);
  }
  int64_t n_outliers = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i * stride];  // read before the write: out may alias x
    if (v < range.lo || v > range.hi) {
      out[i * stride] = round_to_fp16(v);
      ++n_outliers;
    } else {
      out[i * stride] = nuq_dense(v, offset, scale, levels, n_levels);
    }
  }
  return n_outliers;
}

int64_t nuq_fake_quant_channel_ref(const float* x, int64_t n, int64_t stride, float lo, float hi,
                                   bool keep_outliers, const float* levels, int n_levels,
                                   float* out) {
  check_levels("nuq_fake_quant_channel_ref", levels, n_levels);
  if (n < 0) fail("nuq_fake_quant_channel_ref: expected n >= 0 values, found {}", n);
  check_stride("nuq_fake_quant_channel_ref", stride);
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo <= hi)) {
    fail("nuq_fake_quant_channel_ref: channel range: expected finite lo <= hi, found [{}, {}]", lo,
         hi);
  }
  const float offset = (lo + hi) / 2.0f;
  const float scale = (hi - lo) / 2.0f;
  if (!std::isfinite(offset) || !std::isfinite(scale)) {
    fail(
        "nuq_fake_quant_channel_ref: channel range [{}, {}]: expected a finite offset and "
        "scale, found offset {} scale {}",
        lo, hi, offset, scale);
  }
  // A separate pass, so that a bad element throws before anything (possibly x itself) is written.
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i * stride])) {
      fail("nuq_fake_quant_channel_ref: element {} of {}: expected a finite value, found {}", i, n,
           x[i * stride]);
    }
  }
  int64_t n_outliers = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i * stride];
    if (keep_outliers && (v < lo || v > hi)) {
      out[i * stride] = round_to_fp16(v);
      ++n_outliers;
    } else {
      out[i * stride] = nuq_dense(v, offset, scale, levels, n_levels);
    }
  }
  return n_outliers;
}

}  // namespace kvq::quant
