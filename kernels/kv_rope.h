// The RoPE angle the kernels rotate queries and keys by: delta * theta for a token distance
// delta and a pair's frequency theta, formed and reduced in double so that distances in the
// millions keep fp32 accuracy once the reduced angle is rounded to float (rope_phase in
// kv_device.cuh takes its sine and cosine). Host and device alike, so that the CPU tests
// (tests/cache/test_kv_rope.cpp) check the arithmetic the kernels run.
#pragma once

#include <cmath>

#include "kv_layout.h"

namespace kvq::kernels {

// delta * inv_freq less the nearest whole number of periods: within [-pi, pi] but for an ulp.
// The period count is a product with 1 / (2 pi), not a division: on the GPU a double division is
// a reciprocal and a Newton chain, and for a zero angle (every lane whose distance is 0) a call
// to an out-of-line slow path. Where the angle is within an ulp of an odd multiple of pi the
// product may round to the neighbouring period; the result is then pi plus that ulp, the same
// phase.
KVQ_HD double kv_rope_angle(double delta, float inv_freq) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  constexpr double kInvTwoPi = 0.15915494309189533576888376337251;
  const double a = delta * static_cast<double>(inv_freq);
  return a - kTwoPi * rint(a * kInvTwoPi);
}

}  // namespace kvq::kernels
