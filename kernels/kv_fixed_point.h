// Sums of float terms as int32 fixed point, at a scale set for each batch of terms from a bound
// on their magnitudes: v3's value-outlier corrections (kv_attention_v3.cuh), which sm_90 adds in
// shared memory natively as int32 (ATOMS.ADD) but as float only by a compare-and-swap loop.
// Host and device alike, so that the CPU tests (tests/cache/test_kv_fixed_point.cpp) check the
// arithmetic the kernel runs.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kv_layout.h"

namespace kvq::kernels {

// A float's bits and back, host and device alike.
KVQ_HD uint32_t kv_float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return bits;
#endif
}
KVQ_HD float kv_bits_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
#endif
}

// Bits of a scaled term's magnitude: sums of up to max_terms terms under 2^bits each stay under
// 2^30, clear of int32's range (23 for v3's blocks of 80 or 128 tokens).
KVQ_HD constexpr int kv_fixed_sum_bits(int max_terms) {
  int log2_terms = 0;
  while ((1 << log2_terms) < max_terms) ++log2_terms;
  return 30 - log2_terms;
}

struct KvFixedScale {
  float scale;  // a term times scale, rounded to an int32 (kv_fixed_round), is the term in units
  float unit;   // of `unit`: a sum of those int32 times unit is the sum of the terms
};

// For terms |t| <= bound (0 < bound): scale = 2^(sum_bits - e), unit = 1 / scale, where
// 2^(e-1) <= bound < 2^e, so that |t| scale < 2^sum_bits and each term is rounded to within
// unit / 2 <= bound 2^-sum_bits. A bound under 2^(sum_bits - 127) (2^-104 for sums of 80 terms;
// fp16's smallest value is 2^-24) keeps the scale at 2^126, a float, and rounds its terms more
// coarsely than that. A bound that is inf or NaN gives scale 0 and unit NaN: every sum is then
// NaN, so that such values in the input still show.
KVQ_HD KvFixedScale kv_fixed_scale(float bound, int sum_bits) {
  if (!(bound <= FLT_MAX)) return {0.0f, NAN};
  const int e = static_cast<int>((kv_float_bits(bound) >> 23) & 0xFFu) - 126;  // bound < 2^e
  const int shift = sum_bits - e < 126 ? sum_bits - e : 126;  // >= 22 - 128 for a finite bound
  return {kv_bits_float(static_cast<uint32_t>(127 + shift) << 23),
          kv_bits_float(static_cast<uint32_t>(127 - shift) << 23)};
}

// x rounded to the nearest int32, ties to even (x within int32's range).
KVQ_HD int32_t kv_fixed_round(float x) {
#if defined(__CUDA_ARCH__)
  return __float2int_rn(x);
#else
  return static_cast<int32_t>(std::nearbyint(x));
#endif
}

}  // namespace kvq::kernels
