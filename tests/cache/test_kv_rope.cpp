// kernels/kv_rope.h, the RoPE angle the decode kernels form and reduce in double, on the CPU (the
// same function the kernels call): against the exact angle reduced in long double, for the
// frequencies of LLaMA-style tables and token distances from 0 to ten million, both signs, and
// where the angle sits on an odd multiple of pi (the product with 1 / (2 pi) may pick either
// neighbouring period there).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "kv_rope.h"

namespace kvq::kernels {
namespace {

constexpr long double kTwoPiL = 6.28318530717958647692528676655900577L;
constexpr double kPi = 3.14159265358979323846;

// inv_freq as the runner forms it: base^(-2i / head_dim) in float.
std::vector<float> frequencies(int head_dim, double base) {
  std::vector<float> f;
  for (int i = 0; i < head_dim / 2; ++i) {
    f.push_back(static_cast<float>(std::pow(base, -2.0 * i / head_dim)));
  }
  return f;
}

// The angle's phase against the exact one: the larger of the cosine's and the sine's errors.
double phase_error(double angle, double delta, float inv_freq) {
  const long double exact = std::remainder(static_cast<long double>(delta) * inv_freq, kTwoPiL);
  return std::max(std::fabs(std::cos(angle) - static_cast<double>(std::cos(exact))),
                  std::fabs(std::sin(angle) - static_cast<double>(std::sin(exact))));
}

TEST(KvRope, ReducedAngleKeepsThePhaseForDistancesUpToTenMillion) {
  std::vector<double> deltas = {0,   1,    -1,    2,      7,      8,       -8,      80,
                                319, 4095, 32767, 131071, 524287, 1048575, 9999999, -9999999};
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> distance(-10000000, 10000000);
  for (int i = 0; i < 200; ++i) deltas.push_back(distance(rng));
  for (const auto& [head_dim, base] :
       {std::pair{128, 10000.0}, std::pair{64, 10000.0}, std::pair{128, 500000.0}}) {
    for (const float f : frequencies(head_dim, base)) {
      for (const double d : deltas) {
        const double a = kv_rope_angle(d, f);
        ASSERT_LE(std::fabs(a), kPi + 4e-9) << "delta " << d << ", inv_freq " << f;
        // |delta * inv_freq| <= 1e7 rounds to double within 1e-9; the reduction adds less.
        ASSERT_LE(phase_error(a, d, f), 4e-9) << "delta " << d << ", inv_freq " << f;
      }
    }
  }
}

TEST(KvRope, ZeroDistanceIsExactlyZero) {
  for (const float f : frequencies(128, 10000.0)) EXPECT_EQ(kv_rope_angle(0.0, f), 0.0);
}

TEST(KvRope, OddMultiplesOfPiReduceToPlusOrMinusPi) {
  for (int64_t k = 0; k < 2000000; k += 997) {
    for (const double sign : {1.0, -1.0}) {
      const double d = sign * static_cast<double>(2 * k + 1) * kPi;  // inv_freq 1: the angle is d
      const double a = kv_rope_angle(d, 1.0f);
      EXPECT_NEAR(std::fabs(a), kPi, 4e-9) << "k " << k;
      EXPECT_LE(phase_error(a, d, 1.0f), 4e-9) << "k " << k;
    }
  }
}

}  // namespace
}  // namespace kvq::kernels
