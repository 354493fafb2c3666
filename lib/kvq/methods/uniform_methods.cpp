// LibTorch fake-quantizers of the uniform families (intB, KIVI, SKVQ's groups) and fp8, in the
// float32 arithmetic and order of quant/uniform.h and the scalar fp8 reference below.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kvq/common/error.h"
#include "kvq/methods/detail.h"

namespace kvq::methods::detail {
namespace {

// A 0-dim tensor on x's device: divisors must not be C++ scalars (detail.h).
at::Tensor constant(const at::Tensor& x, float value) { return at::full({}, value, x.options()); }

// One set of groups: x [..., g, ...] reduced over `dim` (the group's elements).
at::Tensor quantize_groups(const at::Tensor& x, int64_t dim, int bits, float clip) {
  const at::Tensor mn = x.amin({dim}, /*keepdim=*/true);
  const at::Tensor mx = x.amax({dim}, /*keepdim=*/true);
  const float max_code = static_cast<float>((1 << bits) - 1);
  at::Tensor scale = (mx - mn) / constant(x, max_code);
  at::Tensor zero = mn;
  if (clip != 1.0f) {
    scale = scale * constant(x, clip);
    zero = zero * constant(x, clip);
  }
  at::Tensor q = ((x - zero) / scale).round().clamp(0.0, static_cast<double>(max_code));
  q = at::where(scale == 0, at::zeros_like(q), q);  // constant group: code 0 (0/0 above)
  return q * scale + zero;
}

}  // namespace

at::Tensor uniform_grouped(const at::Tensor& x, int64_t group, int bits, float clip) {
  KVQ_CHECK(x.dim() == 3 && group >= 1, "x {} dims, group {}", x.dim(), group);
  const int64_t outer = x.size(0), n = x.size(1), inner = x.size(2);
  const int64_t n_full = n / group, rest = n - n_full * group;
  std::vector<at::Tensor> parts;
  if (n_full > 0) {
    const at::Tensor full = x.narrow(1, 0, n_full * group).reshape({outer, n_full, group, inner});
    parts.push_back(quantize_groups(full, 2, bits, clip).reshape({outer, n_full * group, inner}));
  }
  if (rest > 0) parts.push_back(quantize_groups(x.narrow(1, n_full * group, rest), 1, bits, clip));
  return parts.size() == 1 ? parts[0] : at::cat(parts, 1);
}

float fp8_max(Fp8Format format) { return format == Fp8Format::kE4M3 ? 448.0f : 57344.0f; }

namespace {

int fp8_mantissa_bits(Fp8Format format) { return format == Fp8Format::kE4M3 ? 3 : 2; }
int fp8_min_exponent(Fp8Format format) { return format == Fp8Format::kE4M3 ? -6 : -14; }

}  // namespace

float fp8_round_ref(float v, Fp8Format format) {
  if (v == 0.0f || !std::isfinite(v)) return v;
  int e = 0;
  std::frexp(v, &e);  // v = m 2^e, 0.5 <= |m| < 1: the binade's exponent is e - 1
  const int exponent =
      std::max(e - 1, fp8_min_exponent(format));  // subnormals share the lowest step
  const float step = std::ldexp(1.0f, exponent - fp8_mantissa_bits(format));
  return std::nearbyint(v / step) * step;
}

float fp8_fake_quant_ref(float x, float scale, Fp8Format format) {
  if (scale == 0.0f) return 0.0f;
  const float m = fp8_max(format);
  return fp8_round_ref(std::clamp(x / scale, -m, m), format) * scale;
}

at::Tensor fp8_fake_quant(const at::Tensor& x, float amax, Fp8Format format) {
  const float m = fp8_max(format);
  // The scale in float as the reference computes it: amax / M.
  const at::Tensor scale = amax > 0.0f ? constant(x, amax / m) : x.abs().amax() / constant(x, m);
  const at::Tensor v = (x / scale).clamp(-static_cast<double>(m), static_cast<double>(m));
  // The step of v's binade, from its float exponent bits (exact on every device), never below
  // the subnormal step.
  const at::Tensor biased = at::bitwise_and(at::bitwise_right_shift(v.view(at::kInt), 23), 255);
  const at::Tensor exponent = at::clamp_min(biased - 127, fp8_min_exponent(format));
  const at::Tensor step =
      at::bitwise_left_shift(exponent - fp8_mantissa_bits(format) + 127, 23).view(at::kFloat);
  at::Tensor out = (v / step).round() * step * scale;
  return at::where(scale == 0, at::zeros_like(out), out);
}

}  // namespace kvq::methods::detail
