// Internal to lib/kvq/methods: the LibTorch fake-quantizers each method dispatches to, and the
// scalar fp8 rounding the CPU reference uses. Inputs are float32 tensors; contracts (which
// arithmetic, in which order) are in quantizer.h.
//
// Exactness rule for the LibTorch paths: never divide by a C++ scalar (CUDA turns a / s into
// a * (1 / s), one rounding off the reference); divisors are tensors on the data's device.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "kvq/methods/method.h"
#include "kvq/methods/quantizer.h"

namespace kvq::methods::detail {

// x [outer, n, inner]: uniform asymmetric min-max over groups of `group` consecutive indices
// along n (the last group short when group does not divide n), each (outer, inner) separately;
// clip r scales the scale and the zero (uniform.h).
at::Tensor uniform_grouped(const at::Tensor& x, int64_t group, int bits, float clip);

// fp8 with a per-tensor scale (quantizer.h); amax 0: max |x| of this tensor.
at::Tensor fp8_fake_quant(const at::Tensor& x, float amax, Fp8Format format);
float fp8_max(Fp8Format format);
// v (|v| <= fp8_max) rounded to the nearest fp8 value, ties to even; the reference's scalar.
float fp8_round_ref(float v, Fp8Format format);
// x' of one element given the per-tensor scale s (0: x' = 0).
float fp8_fake_quant_ref(float x, float scale, Fp8Format format);

// KVQuant keys: x [rows, C] with per-channel p.lo / p.hi; counts outliers into c.
at::Tensor nuq_keys(const at::Tensor& x, const TensorParams& p, QuantCounters* c);
// KVQuant values: x [vectors, head_dim], per-vector dense range with p.outlier_fraction.
at::Tensor nuq_values(const at::Tensor& x, const TensorParams& p, QuantCounters* c);

// SKVQ: x [rows, C] -> permute channels, uniform groups of `group` with p.clip, un-permute.
at::Tensor skvq_tokens(const at::Tensor& x, const TensorParams& p, int64_t group);

// The CPU reference (reference.cpp): x contiguous float32 [b, t, h, d] on the CPU.
at::Tensor quantize_ref(const MethodSpec& spec, const TensorParams& p, bool key,
                        const at::Tensor& x, QuantCounters* c);

}  // namespace kvq::methods::detail
