// Storage accounting: bits per cached element of a method, as the compressed cache would hold
// a layer's keys or values for a context of n tokens (schemas/quant-2.md, "Bits per element").
//
//   fp16 tokens   n16 = spec.fp16_tokens(n) (sinks + recent window or residual): 16 bits each;
//                 the other nq = n - n16 tokens are quantized.
//   codes         `bits` per quantized element (fp8: 8).
//   parameters    16 bits per fp16 scale or offset of each online vector or group:
//                 per (token, head) vectors and channel groups: 32 per group of a token;
//                 keys grouped along time (KIVI, intB-channel): 32 per channel per group of G
//                 tokens, ceil(nq / G) groups; nuq keys: their offline per-channel lo and hi
//                 (fp32: 64 bits per channel), amortized over the n tokens.
//                 Model-level constants (codebooks, SKVQ's permutation and clip ratio, fp8's
//                 per-tensor scale) are not counted, like the weights.
//   outliers      32 bits (fp16 value + 16-bit index) per outlier of the quantized elements.
// Every figure is per element of the whole cache of n tokens (n x n_kv_heads x head_dim).
#pragma once

#include <cstdint>

#include "kvq/methods/quantizer.h"

namespace kvq::methods {

struct BitsBreakdown {
  double codes = 0.0, params = 0.0, outliers = 0.0, fp16 = 0.0;
  double total() const { return codes + params + outliers + fp16; }
};

// One layer's keys (key = true) or values; outlier_rate = outliers / quantized elements.
// Throws on n_tokens < 1, non-positive sizes or a rate outside [0, 1].
BitsBreakdown tensor_bits(const Quantizer& q, bool key, int64_t layer, int64_t n_kv_heads,
                          int64_t head_dim, int64_t n_tokens, double outlier_rate);

// The expected outlier rate before measuring: keys the calibrated fraction f, values
// 2 outliers_per_side(n, f) / n with n the elements of a value vector (n_kv_heads * head_dim,
// or head_dim with -vhead); 0 for every method without outliers.
double nominal_outlier_rate(const Quantizer& q, bool key, int64_t layer, int64_t n_kv_heads,
                            int64_t head_dim);

// The whole cache: the mean over n_layers of keys and values (every layer holds as many keys as
// values). Outlier rates from the counters where they saw elements, else nominal.
BitsBreakdown cache_bits(const Quantizer& q, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
                         int64_t n_tokens, const QuantCounters& keys, const QuantCounters& values);
inline double bits_per_element(const Quantizer& q, int64_t n_layers, int64_t n_kv_heads,
                               int64_t head_dim, int64_t n_tokens, const QuantCounters& keys,
                               const QuantCounters& values) {
  return cache_bits(q, n_layers, n_kv_heads, head_dim, n_tokens, keys, values).total();
}

}  // namespace kvq::methods
