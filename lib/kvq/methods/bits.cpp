// Bits per cached element (contract in bits.h).
#include "kvq/methods/bits.h"

#include "kvq/common/error.h"
#include "kvq/quant/kv_format.h"

namespace kvq::methods {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Parameter bits of nq quantized tokens of one layer's keys or values.
double param_bits(const MethodSpec& s, bool key, int64_t h, int64_t d, int64_t nq) {
  const int64_t channels = h * d;
  switch (s.kind) {
    case MethodKind::kFp16:
    case MethodKind::kFp8: return 0.0;
    case MethodKind::kNuq:
      return key ? 64.0 * channels
                 : 32.0 * nq * (s.value_per_head ? h : 1);  // fp16 offset, scale per vector
    case MethodKind::kSkvq: return 32.0 * nq * ceil_div(channels, s.group);
    case MethodKind::kInt:
    case MethodKind::kKivi: break;
  }
  if (key && s.key_time_group() > 0) return 32.0 * channels * ceil_div(nq, s.key_time_group());
  const int64_t group =
      s.kind == MethodKind::kKivi || s.granularity == IntGranularity::kGroup ? s.group : d;
  return 32.0 * nq * h * ceil_div(d, group);
}

}  // namespace

BitsBreakdown tensor_bits(const Quantizer& q, bool key, int64_t layer, int64_t n_kv_heads,
                          int64_t head_dim, int64_t n_tokens, double outlier_rate) {
  if (n_tokens < 1) fail("bits per element: context: expected >= 1 tokens, found {}", n_tokens);
  if (n_kv_heads < 1 || head_dim < 1)
    fail("bits per element: expected positive sizes, found {} x {}", n_kv_heads, head_dim);
  if (!(outlier_rate >= 0.0 && outlier_rate <= 1.0))
    fail("bits per element: outlier rate: expected 0..1, found {}", outlier_rate);
  const MethodSpec& s = q.spec();
  BitsBreakdown r;
  const double elements = static_cast<double>(n_tokens) * n_kv_heads * head_dim;
  if (s.kind == MethodKind::kFp16) {
    r.fp16 = 16.0;
    return r;
  }
  const int64_t n16 = std::min(n_tokens, s.fp16_tokens(n_tokens));
  const int64_t nq = n_tokens - n16;
  const double quantized = static_cast<double>(nq) * n_kv_heads * head_dim;
  const int bits = key ? q.key_params(layer).bits : q.value_params(layer).bits;
  r.fp16 = 16.0 * static_cast<double>(n16) / static_cast<double>(n_tokens);
  r.codes = bits * quantized / elements;
  r.params = param_bits(s, key, n_kv_heads, head_dim, nq) / elements;
  r.outliers = 32.0 * outlier_rate * quantized / elements;
  return r;
}

double nominal_outlier_rate(const Quantizer& q, bool key, int64_t layer, int64_t n_kv_heads,
                            int64_t head_dim) {
  if (q.spec().kind != MethodKind::kNuq) return 0.0;
  const double f =
      key ? q.key_params(layer).outlier_fraction : q.value_params(layer).outlier_fraction;
  if (key) return f;
  const int64_t n =
      q.spec().value_per_head ? head_dim : n_kv_heads * head_dim;  // elements per vector
  return 2.0 * static_cast<double>(quant::outliers_per_side(n, f)) / static_cast<double>(n);
}

BitsBreakdown cache_bits(const Quantizer& q, int64_t n_layers, int64_t n_kv_heads, int64_t head_dim,
                         int64_t n_tokens, const QuantCounters& keys, const QuantCounters& values) {
  if (n_layers < 1) fail("bits per element: expected >= 1 layers, found {}", n_layers);
  if (q.n_layers() > 0 && q.n_layers() != n_layers) {
    fail("bits per element: the quantizer has {} layers, found {}", q.n_layers(), n_layers);
  }
  BitsBreakdown sum;
  for (int64_t i = 0; i < n_layers; ++i) {
    for (const bool key : {true, false}) {
      const QuantCounters& c = key ? keys : values;
      const double rate = c.elements > 0
                              ? static_cast<double>(c.outliers) / static_cast<double>(c.elements)
                              : nominal_outlier_rate(q, key, i, n_kv_heads, head_dim);
      const BitsBreakdown b = tensor_bits(q, key, i, n_kv_heads, head_dim, n_tokens, rate);
      sum.codes += b.codes;
      sum.params += b.params;
      sum.outliers += b.outliers;
      sum.fp16 += b.fp16;
    }
  }
  const double n = 2.0 * static_cast<double>(n_layers);
  sum.codes /= n;
  sum.params /= n;
  sum.outliers /= n;
  sum.fp16 /= n;
  return sum;
}

}  // namespace kvq::methods
