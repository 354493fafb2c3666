// kvq/quant/kv_format: the element-level definitions every method and kernel shares. fp16
// rounding on known values and against an independent table of every fp16 value; the
// outlier count table; the dense range against sorting; nuq coding ties and edges; both
// KVQuant fake-quantizers under a named error bound; uniform coding round trips; messages.
#include "kvq/quant/kv_format.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq::quant {
namespace {

using kvq::test::error_of;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Whether `fraction` leaves a dense part in n values (outliers_per_side accepts it).
bool has_dense_part(int64_t n, double fraction) {
  return error_of([&] { outliers_per_side(n, fraction); }) == "<no error>";
}

// Every positive finite fp16 value, ascending, built from its definition (not from bits).
std::vector<double> fp16_table() {
  std::vector<double> t;
  for (int m = 0; m < 1024; ++m) t.push_back(std::ldexp(m, -24));  // subnormals and 0
  for (int e = -14; e <= 15; ++e) {
    for (int m = 0; m < 1024; ++m) t.push_back(std::ldexp(1024 + m, e - 10));
  }
  return t;
}

// Round to nearest, ties to the even mantissa (even index in the table), beyond 65520 to inf.
double fp16_reference(const std::vector<double>& t, double x) {
  const double a = std::fabs(x);
  double r;
  if (a >= 65520.0) {
    r = HUGE_VAL;
  } else {
    const size_t hi = std::lower_bound(t.begin(), t.end(), a) - t.begin();
    if (hi == t.size()) {
      r = t.back();
    } else if (t[hi] == a || hi == 0) {
      r = t[hi];
    } else {
      const double below = a - t[hi - 1], above = t[hi] - a;
      r = below < above ? t[hi - 1] : above < below ? t[hi] : t[hi % 2 == 0 ? hi : hi - 1];
    }
  }
  return std::signbit(x) ? -r : r;
}

TEST(KvFormat, RoundToFp16KnownValues) {
  // Ties: 65520 goes to even 2^16 = inf; 1 + 2^-11 stays, 1 + 3 * 2^-11 goes up; 2^-25 to 0.
  const std::pair<float, float> cases[] = {
      {1.0f, 1.0f},
      {65504.0f, 65504.0f},
      {65519.0f, 65504.0f},
      {65520.0f, kInf},
      {-65520.0f, -kInf},
      {1e6f, kInf},
      {kInf, kInf},
      {-kInf, -kInf},
      {1.0f / 3.0f, 0.333251953125f} /* 0x3555 */,
      {1.0f + 0x1p-11f, 1.0f},
      {1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-9f},
      {2049.0f, 2048.0f},
      {2051.0f, 2052.0f},
      {0x1p-14f, 0x1p-14f} /* smallest normal */,
      {1023 * 0x1p-24f, 1023 * 0x1p-24f},
      {1023.5f * 0x1p-24f, 0x1p-14f} /* subnormal rounds up into the normals */,
      {0x1p-24f, 0x1p-24f} /* smallest subnormal */,
      {0x1p-25f, 0.0f},
      {0x1.01p-25f, 0x1p-24f},
      {3 * 0x1p-25f, 2 * 0x1p-24f} /* tie between 1 and 2 ulps: 2 */,
      {1e-10f, 0.0f}};
  for (const auto& [x, expected] : cases) EXPECT_EQ(round_to_fp16(x), expected) << x;
  const float neg_zero = round_to_fp16(-0.0f);
  EXPECT_EQ(neg_zero, 0.0f);
  EXPECT_TRUE(std::signbit(neg_zero));
  EXPECT_TRUE(std::signbit(round_to_fp16(-1e-10f)));
  EXPECT_TRUE(std::isnan(round_to_fp16(kNaN)));
  EXPECT_TRUE(std::isnan(round_to_fp16(-kNaN)));
  uint32_t payload_nan = 0x7F800001u;  // a NaN whose payload sits only in the dropped bits
  float tiny_nan;
  std::memcpy(&tiny_nan, &payload_nan, sizeof(tiny_nan));
  EXPECT_TRUE(std::isnan(round_to_fp16(tiny_nan)));
}

TEST(KvFormat, RoundToFp16MatchesTable) {
  const std::vector<double> table = fp16_table();
  // Every fp16 value is a fixed point, and so is its negation.
  for (double v : table) {
    EXPECT_EQ(round_to_fp16(static_cast<float>(v)), static_cast<float>(v)) << v;
    EXPECT_EQ(round_to_fp16(static_cast<float>(-v)), static_cast<float>(-v)) << -v;
  }
  // Exact midpoints between neighbours (floats hold them exactly) and random bit patterns.
  for (size_t i = 0; i + 1 < table.size(); ++i) {
    const double mid = (table[i] + table[i + 1]) / 2.0;
    ASSERT_EQ(round_to_fp16(static_cast<float>(mid)), fp16_reference(table, mid)) << mid;
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t bits = rng();
    float x;
    std::memcpy(&x, &bits, sizeof(x));
    if (std::isnan(x)) continue;
    ASSERT_EQ(round_to_fp16(x), static_cast<float>(fp16_reference(table, x))) << x;
  }
}

TEST(KvFormat, OutliersPerSide) {
  struct Case {
    int64_t n;
    double fraction;
    int64_t k;
  };
  const Case cases[] = {{1, 0.0, 0},    {128, 0.0, 0},  {128, 0.01, 1}, {100, 0.01, 1},
                        {200, 0.01, 1}, {201, 0.01, 2}, {100, 0.14, 7}, {4096, 0.01, 21},
                        {3, 0.5, 1},    {128, 0.05, 4}, {10, 0.1, 1},   {1000, 0.3, 150}};
  for (const Case& c : cases) {
    EXPECT_EQ(outliers_per_side(c.n, c.fraction), c.k) << "n " << c.n << " f " << c.fraction;
  }
  EXPECT_EQ(error_of([] { outliers_per_side(2, 0.5); }),
            "outlier fraction 0.5 of 2 values: expected 2k < n, found k = 1 per side");
  EXPECT_EQ(error_of([] { outliers_per_side(1, 0.01); }),
            "outlier fraction 0.01 of 1 values: expected 2k < n, found k = 1 per side");
  EXPECT_EQ(error_of([] { outliers_per_side(10, 1.0); }),
            "outlier fraction: expected 0 <= f < 1, found 1");
  EXPECT_EQ(error_of([] { outliers_per_side(10, -0.1); }),
            "outlier fraction: expected 0 <= f < 1, found -0.1");
  EXPECT_EQ(error_of([] { outliers_per_side(10, std::nan("")); }),
            "outlier fraction: expected 0 <= f < 1, found nan");
  EXPECT_EQ(error_of([] { outliers_per_side(0, 0.0); }),
            "outliers_per_side: expected n >= 1 values, found 0");
}

TEST(KvFormat, DenseRangeMatchesSorting) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.5f, 2.0f);
  for (int64_t n : {1, 2, 3, 17, 128, 1000, 4097}) {
    for (double fraction : {0.0, 0.01, 0.05, 0.2}) {
      if (!has_dense_part(n, fraction)) continue;
      for (int64_t stride : {1, 3}) {
        std::vector<float> buf(static_cast<size_t>(n * stride));
        for (float& v : buf) v = std::round(normal(rng) * 8.0f) / 8.0f;  // ties on purpose
        std::vector<float> sorted(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) sorted[i] = buf[i * stride];
        std::sort(sorted.begin(), sorted.end());
        const int64_t k = outliers_per_side(n, fraction);
        const DenseRange r = dense_range_ref(buf.data(), n, stride, fraction);
        EXPECT_EQ(r.lo, sorted[k]) << "n " << n << " f " << fraction << " stride " << stride;
        EXPECT_EQ(r.hi, sorted[n - 1 - k]) << "n " << n << " f " << fraction;
      }
    }
  }
}

TEST(KvFormat, DenseRangeErrors) {
  std::vector<float> x = {1, 2, 3, 4, 5, kNaN, 7, 8};
  EXPECT_EQ(error_of([&] { dense_range_ref(x.data(), 8, 1, 0.0); }),
            "dense_range_ref: element 5 of 8: expected a finite value, found nan");
  x[5] = -kInf;
  EXPECT_EQ(error_of([&] { dense_range_ref(x.data(), 8, 1, 0.0); }),
            "dense_range_ref: element 5 of 8: expected a finite value, found -inf");
  EXPECT_EQ(error_of([&] { dense_range_ref(x.data(), 0, 1, 0.0); }),
            "dense_range_ref: expected n >= 1 values, found 0");
  EXPECT_EQ(error_of([&] { dense_range_ref(x.data(), 4, 0, 0.0); }),
            "dense_range_ref: stride: expected >= 1, found 0");
}

TEST(KvFormat, NuqEncodeTiesAndEdges) {
  const float levels[] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f};
  EXPECT_EQ(nuq_encode(-0.75f, levels, 5), 0);  // ties go to the lower level
  EXPECT_EQ(nuq_encode(-0.25f, levels, 5), 1);
  EXPECT_EQ(nuq_encode(0.25f, levels, 5), 2);
  EXPECT_EQ(nuq_encode(0.75f, levels, 5), 3);
  EXPECT_EQ(nuq_encode(0.7500001f, levels, 5), 4);
  for (int j = 0; j < 5; ++j) EXPECT_EQ(nuq_encode(levels[j], levels, 5), j);
  EXPECT_EQ(nuq_encode(-7.0f, levels, 5), 0);
  EXPECT_EQ(nuq_encode(7.0f, levels, 5), 4);
  EXPECT_EQ(nuq_encode(-kInf, levels, 5), 0);
  EXPECT_EQ(nuq_encode(kInf, levels, 5), 4);
  EXPECT_EQ(nuq_encode(kNaN, levels, 5), 0);
  EXPECT_EQ(nuq_encode(123.0f, levels, 1), 0);
  EXPECT_EQ(error_of([&] { nuq_encode(0.0f, levels, 0); }),
            "nuq_encode: n_levels: expected >= 1, found 0");

  // Random levels and points against a brute-force argmin (first index on ties).
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.2f, 1.2f);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> l(16);
    for (float& v : l) v = u(rng);
    std::sort(l.begin(), l.end());
    l.erase(std::unique(l.begin(), l.end()), l.end());
    for (int i = 0; i < 100; ++i) {
      const float x = u(rng);
      int best = 0;
      for (int j = 1; j < static_cast<int>(l.size()); ++j) {
        if (std::fabs(double(x) - l[j]) < std::fabs(double(x) - l[best])) best = j;
      }
      ASSERT_EQ(nuq_encode(x, l.data(), static_cast<int>(l.size())), best) << x;
    }
  }
}

// nuq_threshold: x > nuq_threshold(a, b) is nuq_encode's rule 2x > a + b (in double) for every
// float x; checked at the threshold, its float neighbours, the exact midpoints and random points,
// for level pairs that are close, far apart, of mixed sign and of different magnitudes.
TEST(KvFormat, NuqThresholdIsNuqEncodesComparisonInFloats) {
  auto rule = [](float x, float a, float b) { return 2.0 * double(x) > double(a) + double(b); };
  auto check = [&](float a, float b, float x) {
    ASSERT_EQ(x > nuq_threshold(a, b), rule(x, a, b)) << a << " " << b << " " << x;
  };
  std::vector<std::pair<float, float>> pairs = {{-1.0f, -0.5f},
                                                {0.25f, 0.75f},
                                                {-0.1f, 0.0f},
                                                {0.0f, 0.2f},
                                                {1.0f, std::nextafter(1.0f, 2.0f)},
                                                {-1e-30f, 3e-30f},
                                                {-3.0f, 1e-20f},
                                                {0.1f, 0.3f},
                                                {-0.7f, 0.7f}};
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.5f, 1.5f);
  std::uniform_int_distribution<int> e(-20, 2);
  for (int i = 0; i < 2000; ++i) {
    float a = std::ldexp(u(rng), e(rng)), b = std::ldexp(u(rng), e(rng));
    if (a == b) continue;
    pairs.emplace_back(std::min(a, b), std::max(a, b));
  }
  for (const auto& [a, b] : pairs) {
    const float t = nuq_threshold(a, b);
    EXPECT_LE(double(t), (double(a) + double(b)) * 0.5);
    EXPECT_GT(double(std::nextafter(t, kInf)), (double(a) + double(b)) * 0.5);
    for (float x : {t, std::nextafter(t, kInf), std::nextafter(t, -kInf), (a + b) * 0.5f, a, b,
                    std::nextafter((a + b) * 0.5f, kInf), std::nextafter((a + b) * 0.5f, -kInf)}) {
      check(a, b, x);
    }
    std::uniform_real_distribution<float> around(a, b);
    for (int k = 0; k < 20; ++k) check(a, b, around(rng));
  }
  // Through nuq_encode: the thresholds give its codes on random levels and points.
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<float> l(8);
    for (float& v : l) v = u(rng);
    std::sort(l.begin(), l.end());
    l.erase(std::unique(l.begin(), l.end()), l.end());
    const int n = static_cast<int>(l.size());
    if (n < 2) continue;
    for (int k = 0; k < 200; ++k) {
      const float x = k % 2 ? u(rng) : nuq_threshold(l[k % (n - 1)], l[k % (n - 1) + 1]);
      int hi = 0;
      while (hi < n && l[hi] < x) ++hi;
      const int code = hi == 0   ? 0
                       : hi == n ? n - 1
                                 : (x > nuq_threshold(l[hi - 1], l[hi]) ? hi : hi - 1);
      ASSERT_EQ(code, nuq_encode(x, l.data(), n)) << x;
    }
  }
}

// 8 levels from -1 to 1, unevenly spaced; the largest gap is 0.5.
const std::vector<float> kLevels = {-1.0f, -0.5f, -0.25f, -0.1f, 0.0f, 0.2f, 0.5f, 1.0f};
constexpr float kLargestGap = 0.5f;

TEST(KvFormat, NuqVectorOutliersAndErrorBound) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.3f, 1.0f);
  for (int64_t n : {2, 17, 128, 1000}) {
    for (double fraction : {0.0, 0.01, 0.05}) {
      if (!has_dense_part(n, fraction)) continue;
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = normal(rng);
      x[0] = 40.0f;  // a real outlier
      std::vector<float> out(x.size());
      const int64_t count = nuq_fake_quant_vector_ref(
          x.data(), n, 1, kLevels.data(), static_cast<int>(kLevels.size()), fraction, out.data());
      const int64_t k = outliers_per_side(n, fraction);
      EXPECT_EQ(count, 2 * k) << "n " << n << " f " << fraction;  // continuous: no ties
      const DenseRange r = dense_range_ref(x.data(), n, 1, fraction);
      const float offset = (r.lo + r.hi) / 2.0f, scale = (r.hi - r.lo) / 2.0f;
      const float offset16 = round_to_fp16(offset), scale16 = round_to_fp16(scale);
      // Half a gap of the fp16 scale, plus how far fp16 moved the range's ends.
      const double bound = kLargestGap / 2.0 * scale16 + std::fabs(offset - offset16) +
                           std::fabs(scale - scale16) + 1e-5 * (std::fabs(r.lo) + std::fabs(r.hi)) +
                           1e-6;
      for (int64_t i = 0; i < n; ++i) {
        if (x[i] < r.lo || x[i] > r.hi) {
          EXPECT_EQ(out[i], round_to_fp16(x[i])) << "outlier " << i;
        } else {
          EXPECT_LE(std::fabs(double(out[i]) - x[i]), bound) << "element " << i << " n " << n;
        }
      }
    }
  }
}

TEST(KvFormat, NuqVectorTiesConstantStrideAlias) {
  const int n_levels = static_cast<int>(kLevels.size());
  // n = 10, f = 0.2: k = 1. Ties at both thresholds (lo = 0, hi = 9) leave nothing strictly
  // outside; with hi = 5 the one 9 is the only outlier, though the zeros tie the minimum.
  for (const auto& [last, expected] : {std::pair<float, int64_t>{9.0f, 0}, {1.0f, 1}}) {
    std::vector<float> x = {0, 0, 0, 1, 2, 3, 4, 5, 9, last};
    std::vector<float> out(x.size());
    EXPECT_EQ(nuq_fake_quant_vector_ref(x.data(), 10, 1, kLevels.data(), n_levels, 0.2, out.data()),
              expected);
    EXPECT_EQ(out[8], 9.0f);
    EXPECT_EQ(out[0], 0.0f);  // lo sits on the lowest level exactly
  }
  // A constant vector: scale 0, every element becomes the fp16 offset.
  std::vector<float> c(10, 3.7f);
  std::vector<float> c_out(10);
  EXPECT_EQ(nuq_fake_quant_vector_ref(c.data(), 10, 1, kLevels.data(), n_levels, 0.1, c_out.data()),
            0);
  for (float v : c_out) EXPECT_EQ(v, round_to_fp16(3.7f));
  // Strided and in place: the same numbers as contiguous, the elements between untouched.
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> dense(33), strided(33 * 4);
  for (size_t i = 0; i < strided.size(); ++i) strided[i] = u(rng);
  for (size_t i = 0; i < dense.size(); ++i) dense[i] = strided[i * 4];
  const std::vector<float> before = strided;
  std::vector<float> dense_out(33);
  const int64_t a = nuq_fake_quant_vector_ref(dense.data(), 33, 1, kLevels.data(), n_levels, 0.1,
                                              dense_out.data());
  const int64_t b = nuq_fake_quant_vector_ref(strided.data(), 33, 4, kLevels.data(), n_levels, 0.1,
                                              strided.data());
  EXPECT_EQ(a, b);
  for (size_t i = 0; i < strided.size(); ++i) {
    EXPECT_EQ(strided[i], i % 4 == 0 ? dense_out[i / 4] : before[i]) << i;
  }
}

TEST(KvFormat, NuqVectorErrors) {
  std::vector<float> x = {1, 2, 3, 4};
  std::vector<float> out(4);
  const float bad[] = {-1.0f, 0.5f, 0.5f, 1.0f};
  EXPECT_EQ(error_of([&] { nuq_fake_quant_vector_ref(x.data(), 4, 1, bad, 4, 0.0, out.data()); }),
            "nuq_fake_quant_vector_ref: levels[2]: expected strictly ascending levels (> 0.5), "
            "found 0.5");
  const float levels[] = {-1.0f, 1.0f};
  std::vector<float> wide = {-70000.0f, 70000.0f};
  EXPECT_EQ(
      error_of([&] { nuq_fake_quant_vector_ref(wide.data(), 2, 1, levels, 2, 0.0, out.data()); }),
      "nuq_fake_quant_vector_ref: dense range [-70000, 70000]: expected an fp16 offset and "
      "scale, found offset 0 scale inf");
}

TEST(KvFormat, NuqChannel) {
  const int n_levels = static_cast<int>(kLevels.size());
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> u(-3.0f, 5.0f);
  const float lo = -1.5f, hi = 2.5f;
  const float offset = 0.5f, scale = 2.0f;
  std::vector<float> x(500);
  for (float& v : x) v = u(rng);
  for (bool keep : {true, false}) {
    std::vector<float> out(x.size());
    const int64_t count = nuq_fake_quant_channel_ref(x.data(), 500, 1, lo, hi, keep, kLevels.data(),
                                                     n_levels, out.data());
    int64_t expected_count = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const bool outside = x[i] < lo || x[i] > hi;
      if (outside && keep) {
        ++expected_count;
        EXPECT_EQ(out[i], round_to_fp16(x[i])) << i;
      } else if (outside) {  // clamped to the end levels by the coding
        EXPECT_EQ(out[i],
                  x[i] < lo ? kLevels.front() * scale + offset : kLevels.back() * scale + offset)
            << i;
      } else {
        EXPECT_LE(std::fabs(out[i] - x[i]), kLargestGap / 2.0f * scale * (1 + 1e-6f)) << i;
      }
    }
    EXPECT_EQ(count, expected_count);
  }
  // lo == hi: the dense elements become the offset.
  std::vector<float> c = {1.0f, 1.0f, 3.0f};
  std::vector<float> c_out(3);
  EXPECT_EQ(nuq_fake_quant_channel_ref(c.data(), 3, 1, 1.0f, 1.0f, true, kLevels.data(), n_levels,
                                       c_out.data()),
            1);
  EXPECT_EQ(c_out[0], 1.0f);
  EXPECT_EQ(c_out[2], 3.0f);
  EXPECT_EQ(nuq_fake_quant_channel_ref(c.data(), 0, 1, 1.0f, 1.0f, true, kLevels.data(), n_levels,
                                       c_out.data()),
            0);
  EXPECT_EQ(error_of([&] {
              nuq_fake_quant_channel_ref(c.data(), 3, 1, 2.0f, 1.0f, true, kLevels.data(), n_levels,
                                         c_out.data());
            }),
            "nuq_fake_quant_channel_ref: channel range: expected finite lo <= hi, found [2, 1]");
  c[1] = kNaN;
  c_out = {7.0f, 7.0f, 7.0f};
  EXPECT_EQ(error_of([&] {
              nuq_fake_quant_channel_ref(c.data(), 3, 1, 0.0f, 1.0f, true, kLevels.data(), n_levels,
                                         c_out.data());
            }),
            "nuq_fake_quant_channel_ref: element 1 of 3: expected a finite value, found nan");
  EXPECT_EQ(c_out[0], 7.0f);  // nothing written before the error
}

TEST(KvFormat, UniformRoundTrip) {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(-0.7f, 3.0f);
  for (int bits = 1; bits <= 8; ++bits) {
    std::vector<float> x(257);
    for (float& v : x) v = normal(rng);
    const UniformParams p = uniform_params_ref(x.data(), 257, 1, bits);
    const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
    EXPECT_EQ(p.zero, *lo);
    EXPECT_EQ(p.scale, (*hi - *lo) / static_cast<float>((1 << bits) - 1));
    for (float v : x) {
      const int code = uniform_encode(v, p, bits);
      ASSERT_GE(code, 0);
      ASSERT_LE(code, (1 << bits) - 1);
      EXPECT_LE(std::fabs(uniform_decode(code, p) - v), p.scale / 2 + 1e-5f)
          << "bits " << bits << " x " << v;
    }
    EXPECT_EQ(uniform_encode(*hi, p, bits), (1 << bits) - 1);
    EXPECT_EQ(uniform_decode(uniform_encode(*lo, p, bits), p), *lo);
    EXPECT_EQ(uniform_encode(*hi + 100.0f, p, bits), (1 << bits) - 1);
    EXPECT_EQ(uniform_encode(-kInf, p, bits), 0);
    EXPECT_EQ(uniform_encode(kNaN, p, bits), 0);
  }
  // Half to even, as torch.round: scale 1 from [0, 15] at 4 bits.
  const float ramp[] = {0.0f, 15.0f};
  const UniformParams p = uniform_params_ref(ramp, 2, 1, 4);
  EXPECT_EQ(uniform_encode(2.5f, p, 4), 2);
  EXPECT_EQ(uniform_encode(3.5f, p, 4), 4);
  // Constant: scale 0, everything decodes to the minimum.
  const float flat[] = {2.25f, 2.25f, 2.25f};
  const UniformParams q = uniform_params_ref(flat, 3, 1, 3);
  EXPECT_EQ(q.scale, 0.0f);
  EXPECT_EQ(uniform_decode(uniform_encode(5.0f, q, 3), q), 2.25f);
  EXPECT_EQ(error_of([&] { uniform_params_ref(flat, 3, 1, 9); }), "bits: expected 1..8, found 9");
  EXPECT_EQ(error_of([&] { uniform_encode(1.0f, q, 0); }), "bits: expected 1..8, found 0");
  EXPECT_EQ(error_of([&] { uniform_params_ref(flat, 0, 1, 2); }),
            "uniform_params_ref: expected n >= 1 values, found 0");
  const float with_inf[] = {1.0f, kInf};
  EXPECT_EQ(error_of([&] { uniform_params_ref(with_inf, 2, 1, 2); }),
            "uniform_params_ref: element 1 of 2: expected a finite value, found inf");
}

}  // namespace
}  // namespace kvq::quant
