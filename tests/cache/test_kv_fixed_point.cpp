// kernels/kv_fixed_point.h, the int32 fixed point in which v3 sums its value-outlier corrections,
// on the CPU (the same functions the kernel calls): the scale against its definition at bounds
// over the whole float range, sums of random terms against exact sums in long double within the
// stated rounding, the int32 range's worst case (every term at the bound, one sign), and inf/NaN.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kv_fixed_point.h"
#include "kv_layout.h"

namespace kvq::kernels {
namespace {

TEST(KvFixedPoint, SumBitsKeepEverySumUnder2To30) {
  EXPECT_EQ(kv_fixed_sum_bits(1), 30);
  EXPECT_EQ(kv_fixed_sum_bits(2), 29);
  EXPECT_EQ(kv_fixed_sum_bits(64), 24);
  EXPECT_EQ(kv_fixed_sum_bits(65), 23);
  for (const int bits : {2, 3, 4}) {  // v3's blocks: 128, 80 and 64 tokens
    const int n = kv_block_tokens(bits);
    EXPECT_LE(static_cast<double>(n) * std::ldexp(1.0, kv_fixed_sum_bits(n)), std::ldexp(1.0, 30))
        << n << " tokens";
  }
}

TEST(KvFixedPoint, ScaleIsThePowerOfTwoBelowTheBound) {
  const int sum_bits = kv_fixed_sum_bits(80);
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exponent(-125.0, 127.9);
  std::vector<float> bounds = {1.0f,     0.5f,     0.75f,   std::nextafter(2.0f, 0.0f),
                               60000.0f, 65504.0f, FLT_MAX, FLT_MIN};
  for (int i = 0; i < 2000; ++i) bounds.push_back(static_cast<float>(std::exp2(exponent(rng))));
  for (const float bound : bounds) {
    SCOPED_TRACE(::testing::Message() << "bound " << bound);
    const KvFixedScale s = kv_fixed_scale(bound, sum_bits);
    const double scaled = static_cast<double>(bound) * s.scale;
    EXPECT_LT(scaled, std::ldexp(1.0, sum_bits));
    if (bound >= std::ldexp(1.0f, sum_bits - 127)) {
      EXPECT_GE(scaled, std::ldexp(1.0, sum_bits - 1));  // the finest scale that fits
    } else {
      EXPECT_EQ(s.scale, std::ldexp(1.0f, 126));  // clamped, still a float
    }
    EXPECT_EQ(static_cast<double>(s.scale) * s.unit, 1.0);
  }
}

TEST(KvFixedPoint, TinyBoundsKeepAScaleThatIsAFloat) {
  for (const float bound : {1e-33f, 1e-40f, std::numeric_limits<float>::denorm_min(), 1e-38f}) {
    const KvFixedScale s = kv_fixed_scale(bound, kv_fixed_sum_bits(80));
    EXPECT_TRUE(std::isfinite(s.scale) && s.scale > 0.0f) << bound;
    EXPECT_LT(static_cast<double>(bound) * s.scale, std::ldexp(1.0, kv_fixed_sum_bits(80)));
    EXPECT_EQ(static_cast<double>(s.scale) * s.unit, 1.0) << bound;
  }
}

TEST(KvFixedPoint, NonFiniteBoundsMakeTheSumsNaN) {
  for (const float bound :
       {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    const KvFixedScale s = kv_fixed_scale(bound, kv_fixed_sum_bits(80));
    EXPECT_EQ(s.scale, 0.0f);
    EXPECT_TRUE(std::isnan(s.unit));
    EXPECT_TRUE(std::isnan(static_cast<float>(kv_fixed_round(3.0f * s.scale)) * s.unit));
  }
}

TEST(KvFixedPoint, RoundsToNearestTiesToEven) {
  EXPECT_EQ(kv_fixed_round(2.5f), 2);
  EXPECT_EQ(kv_fixed_round(3.5f), 4);
  EXPECT_EQ(kv_fixed_round(-2.5f), -2);
  EXPECT_EQ(kv_fixed_round(-2.6f), -3);
  EXPECT_EQ(kv_fixed_round(1073741824.0f), 1073741824);
}

// Sums as v3 forms them: up to n terms p * dx, p in [0, 1], dx of either sign over many
// magnitudes, the bound the largest |p dx| (v3's is at least that). The error of a sum is at most
// n rounding steps of unit / 2 plus the float product's own rounding (2^-24 of a term).
TEST(KvFixedPoint, SumsMatchExactSumsWithinTheRounding) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> prob(0.0f, 1.0f), mag(-12.0f, 16.0f);
  for (const int n : {1, 7, 64, 80, 128}) {
    const int sum_bits = kv_fixed_sum_bits(n);
    for (int trial = 0; trial < 400; ++trial) {
      std::vector<float> p(n), dx(n);
      float bound = 0.0f;
      for (int i = 0; i < n; ++i) {
        p[i] = trial % 4 == 0 ? 1.0f : prob(rng);
        dx[i] = std::exp2(mag(rng)) * (rng() % 2 ? 1.0f : -1.0f);
        if (trial % 5 == 0 && i % 3 == 0) dx[i] = 60000.0f;  // fp16's edge beside small terms
        bound = std::max(bound, p[i] * std::fabs(dx[i]));
      }
      const KvFixedScale s = kv_fixed_scale(bound, sum_bits);
      int64_t sum = 0;
      long double exact = 0.0L;
      for (int i = 0; i < n; ++i) {
        const float dxs = dx[i] * s.scale;  // as the kernel: dx scaled once, then times p
        sum += kv_fixed_round(p[i] * dxs);
        exact += static_cast<long double>(p[i]) * dx[i];
      }
      ASSERT_LE(std::llabs(sum), int64_t{1} << 30) << "n " << n << " trial " << trial;
      const long double got = static_cast<long double>(sum) * s.unit;
      const long double tol =
          n * (0.5L * s.unit + std::ldexp(static_cast<long double>(bound), -24));
      EXPECT_LE(std::fabs(got - exact), tol) << "n " << n << " trial " << trial;
    }
  }
}

// The int32 range's worst case: every term of a block at the bound, one sign, the bound just
// under a power of two (the scale is then the coarsest for its exponent's range's top).
TEST(KvFixedPoint, EveryTermAtTheBoundFitsInt32) {
  for (const int n : {64, 80, 128}) {
    const int sum_bits = kv_fixed_sum_bits(n);
    for (const float bound : {std::nextafter(65536.0f, 0.0f), std::nextafter(1.0f, 0.0f), 60000.0f,
                              std::nextafter(FLT_MAX, 0.0f)}) {
      const KvFixedScale s = kv_fixed_scale(bound, sum_bits);
      for (const float sign : {1.0f, -1.0f}) {
        int64_t sum = 0;
        for (int i = 0; i < n; ++i) sum += kv_fixed_round(1.0f * (sign * bound * s.scale));
        EXPECT_LE(std::llabs(sum), int64_t{1} << 30) << n << " terms of " << bound;
        EXPECT_NEAR(static_cast<double>(sum) * s.unit, sign * static_cast<double>(bound) * n,
                    static_cast<double>(bound) * n * 1e-6);
      }
    }
  }
}

}  // namespace
}  // namespace kvq::kernels
