// The element-level definitions every method, the fake-quantizing evaluator and the CUDA
// kernels' CPU twins share (DESIGN.md section 3). One definition per quantity, so that eval's
// perplexities and the runtime's attention agree bit for bit on what a cached element becomes.
//
// Conventions
//   - A "vector" is what one scale/offset pair covers: for KVQuant values one token over all KV
//     heads (n_kv_heads * head_dim elements, as the paper), or one token of one KV head
//     (head_dim elements: method -vhead); the CUDA cache holds both; for keys one channel of
//     one KV head over tokens.
//   - Uniform asymmetric min-max (the int-token reference of ../shared/data/README.md):
//       scale = (max - min) / (2^B - 1), q = clamp(nearbyint((x - min) / scale), 0, 2^B - 1),
//       x' = q * scale + min; scale == 0 (constant vector) gives x' = min.
//     nearbyint rounds half to even, as torch.round does.
//   - Non-uniform (nuqB): 2^B ascending levels in [-1, 1]; an element normalized as
//       xn = (x - offset) / scale is coded as the nearest level (ties to the lower level), and
//       dequantized as x' = level[code] * scale + offset. scale == 0 gives x' = offset.
//   - Dense-and-sparse (KVQuant section 3.4): with outlier fraction f > 0, a vector of n
//     elements keeps k = outliers_per_side(n, f) elements on each side exactly: the dense range
//     is [lo, hi] = [(k+1)-th smallest, (k+1)-th largest]; elements outside it are outliers,
//     stored as fp16 (so they round-trip through fp16); the dense part uses
//     offset = (lo + hi) / 2, scale = (hi - lo) / 2. With f = 0, lo/hi are the min/max.
//   - Per-token value scale and offset are stored as fp16 in the cache, so the reference rounds
//     them to fp16 (round_to_fp16) before coding with them. Per-channel key scales/offsets
//     come from quant.h5 as fp32 and are used as they are.
// Not here: how levels are fitted (kmeans.h), packing (pack.h), any LibTorch.
#pragma once

#include <cstdint>

namespace kvq::quant {

// Round-to-nearest-even conversion of a float to IEEE fp16 and back (overflow to +-inf, NaN
// kept), as __float2half_rn does.
float round_to_fp16(float x);

// k = ceil(f * n / 2) for f > 0, else 0. Throws kvq::Error unless 0 <= f < 1 and 2k < n.
// f * n / 2 within 1e-9 (relative) of an integer counts as that integer, so that decimal
// fractions keep their exact meaning (0.14 * 100 / 2 is 7.000000000000001 in binary: k = 7).
int64_t outliers_per_side(int64_t n, double fraction);

struct DenseRange {
  float lo = 0.0f;
  float hi = 0.0f;
};

// [lo, hi] of n values read at x[0], x[stride], ...: the (k+1)-th smallest and largest with
// k = outliers_per_side(n, fraction). Throws on n < 1, stride < 1, a fraction that
// outliers_per_side rejects, or a non-finite value (naming its index).
DenseRange dense_range_ref(const float* x, int64_t n, int64_t stride, double fraction);

// Uniform asymmetric min-max over the n values at x[0], x[stride], ... with `bits` in 1..8.
// uniform_params_ref throws on bits outside 1..8, n < 1, stride < 1 or a non-finite value.
// uniform_encode codes NaN as 0 and clamps everything else (infinities included).
struct UniformParams {
  float scale = 0.0f;
  float zero = 0.0f;  // the value of code 0 (the minimum)
};
UniformParams uniform_params_ref(const float* x, int64_t n, int64_t stride, int bits);
int uniform_encode(float x, UniformParams p, int bits);  // 0..2^bits-1
inline float uniform_decode(int code, UniformParams p) {
  return static_cast<float>(code) * p.scale + p.zero;
}

// Nearest of n_levels ascending levels (ties to the lower index); NaN codes as 0. The levels
// are trusted here (binary search); the vector functions below check them once.
int nuq_encode(float xn, const float* levels, int n_levels);

// The threshold between ascending levels a and b: the largest float <= (a + b) / 2, the sum taken
// in double as nuq_encode takes it. For every float x, nuq_encode's rule 2x > a + b (in double)
// holds exactly when x > nuq_threshold(a, b), so an encoder given these thresholds (the CUDA
// append, kernels/kv_device.cuh) compares floats only and codes every value as nuq_encode does.
float nuq_threshold(float a, float b);

// Fake-quantizes one vector in place of out[0], out[stride], ... (x and out may alias):
// dense-and-sparse with `fraction`, per-vector offset/scale rounded to fp16, nuq levels.
// Returns the number of outliers kept. The KVQuant value path, and the kernels' reference.
// Throws on levels that are not finite and strictly ascending, on what dense_range_ref rejects,
// and when the fp16 offset or scale overflows (a dense range wider than fp16 can hold), all
// before writing anything.
int64_t nuq_fake_quant_vector_ref(const float* x, int64_t n, int64_t stride, const float* levels,
                                  int n_levels, double fraction, float* out);

// KVQuant key path for one channel with offline normalization: values outside [lo, hi] are
// outliers (fp16-exact) when keep_outliers, else clamped to the end levels by the coding;
// inside, nuq with offset = (lo + hi) / 2, scale = (hi - lo) / 2. Returns the outlier count.
// n may be 0. Throws (before writing anything) on bad levels, lo > hi, a non-finite lo, hi or
// element.
int64_t nuq_fake_quant_channel_ref(const float* x, int64_t n, int64_t stride, float lo, float hi,
                                   bool keep_outliers, const float* levels, int n_levels,
                                   float* out);

}  // namespace kvq::quant
