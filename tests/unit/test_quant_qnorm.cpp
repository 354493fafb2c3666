// kvq/quant/qnorm: Q-Norm's affine level correction. After the mapping the dequantized
// distribution (codes taken under the original levels) has the original mean and standard
// deviation; codes do not change; degenerate cases; the nearest-level rule; messages.
#include "kvq/quant/qnorm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/quant/kmeans.h"
#include "support/test_support.h"

namespace kvq::quant {
namespace {

using kvq::test::error_of;

struct Stats {
  double mean = 0.0;
  double stddev = 0.0;
};

Stats weighted_stats(const std::vector<double>& v, const std::vector<double>& count) {
  double total = 0.0, sum = 0.0;
  for (size_t i = 0; i < v.size(); ++i) {
    total += count[i];
    sum += count[i] * v[i];
  }
  Stats s;
  s.mean = sum / total;
  double squares = 0.0;
  for (size_t i = 0; i < v.size(); ++i) squares += count[i] * (v[i] - s.mean) * (v[i] - s.mean);
  s.stddev = std::sqrt(squares / total);
  return s;
}

TEST(QNorm, PreservesMeanAndStd) {
  std::mt19937 rng(31);
  std::normal_distribution<double> normal(0.1, 0.4);
  std::uniform_int_distribution<int> counts(0, 9);
  std::exponential_distribution<double> fisher(1.0);
  for (int bits = 1; bits <= 4; ++bits) {
    for (int trial = 0; trial < 20; ++trial) {
      const int n = 50 + 97 * trial;
      std::vector<double> x(n), count(n), w(n);
      for (int i = 0; i < n; ++i) {
        x[i] = std::clamp(normal(rng), -1.0, 1.0);
        count[i] = counts(rng);
        w[i] = fisher(rng);
      }
      count[0] = 1.0;
      // Levels fitted with Fisher weights, corrected against the plain counts.
      const std::vector<double> levels = kmeans_1d(x.data(), w.data(), n, 1 << bits).centroids;
      const QNormResult q = qnorm_ref(levels.data(), 1 << bits, x.data(), count.data(), n);
      ASSERT_EQ(q.levels.size(), levels.size());
      EXPECT_GT(q.scale, 0.0);
      std::vector<double> dequant(n);
      for (int i = 0; i < n; ++i) {
        const int code = nearest_level(x[i], levels.data(), 1 << bits);
        dequant[i] = q.levels[code];
        // Codes unchanged: the same affine map applied to the point keeps its code.
        const double mapped = q.scale * x[i] + q.shift;
        const int mapped_code = nearest_level(mapped, q.levels.data(), 1 << bits);
        const bool near_midpoint = [&] {
          for (int j = 0; j + 1 < (1 << bits); ++j) {
            if (std::fabs(x[i] - (levels[j] + levels[j + 1]) / 2) < 1e-12) return true;
          }
          return false;
        }();
        if (!near_midpoint) {
          EXPECT_EQ(mapped_code, code) << "point " << i;
        }
      }
      for (int j = 0; j < (1 << bits); ++j) {
        EXPECT_DOUBLE_EQ(q.levels[j], q.scale * levels[j] + q.shift);
        if (j > 0) {
          EXPECT_LT(q.levels[j - 1], q.levels[j]);
        }
      }
      const Stats original = weighted_stats(x, count);
      const Stats after = weighted_stats(dequant, count);
      if (bits == 1 && after.stddev == 0.0) continue;  // every point on one level
      EXPECT_NEAR(after.mean, original.mean, 1e-9) << "bits " << bits << " trial " << trial;
      EXPECT_NEAR(after.stddev, original.stddev, 1e-9 * std::max(1.0, original.stddev))
          << "bits " << bits << " trial " << trial;
    }
  }
}

TEST(QNorm, KMeansShrinksTheDeviation) {
  // The reason Q-Norm exists: at 2 bits the coded distribution is narrower than the data.
  std::mt19937 rng(4);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> x(4000);
  for (double& v : x) v = normal(rng);
  const std::vector<double> levels = kmeans_1d(x.data(), nullptr, 4000, 4).centroids;
  const QNormResult q = qnorm_ref(levels.data(), 4, x.data(), nullptr, 4000);
  EXPECT_GT(q.scale, 1.0);
  EXPECT_NEAR(q.shift, 0.0, 0.05);
}

TEST(QNorm, CountsWeighTheDistribution) {
  const std::vector<double> levels = {-1.0, 0.0, 1.0};
  const std::vector<double> x = {-0.9, -0.2, 0.3, 0.8, 0.95};
  const std::vector<double> count = {2.0, 0.0, 1.0, 3.0, 0.0};
  const std::vector<double> kept = {-0.9, 0.3, 0.8};
  const std::vector<double> kept_count = {2.0, 1.0, 3.0};
  const QNormResult a = qnorm_ref(levels.data(), 3, x.data(), count.data(), 5);
  const QNormResult b = qnorm_ref(levels.data(), 3, kept.data(), kept_count.data(), 3);
  EXPECT_NEAR(a.scale, b.scale, 1e-15);
  EXPECT_NEAR(a.shift, b.shift, 1e-15);
  // nullptr counts are 1 each.
  const std::vector<double> ones(5, 1.0);
  const QNormResult c = qnorm_ref(levels.data(), 3, x.data(), nullptr, 5);
  const QNormResult d = qnorm_ref(levels.data(), 3, x.data(), ones.data(), 5);
  EXPECT_EQ(c.scale, d.scale);
  EXPECT_EQ(c.shift, d.shift);
}

TEST(QNorm, OneOccupiedLevelCorrectsTheMeanOnly) {
  const std::vector<double> levels = {-1.0, 0.0, 1.0};
  const std::vector<double> x = {0.1, 0.2, 0.3};
  const QNormResult q = qnorm_ref(levels.data(), 3, x.data(), nullptr, 3);
  EXPECT_EQ(q.scale, 1.0);
  EXPECT_NEAR(q.shift, 0.2, 1e-15);
  EXPECT_NEAR(q.levels[1], 0.2, 1e-15);
}

TEST(QNorm, NearestLevel) {
  const std::vector<double> levels = {-1.0, -0.5, 0.5, 1.0};
  EXPECT_EQ(nearest_level(-0.75, levels.data(), 4), 0);  // ties to the lower level
  EXPECT_EQ(nearest_level(0.0, levels.data(), 4), 1);
  EXPECT_EQ(nearest_level(0.01, levels.data(), 4), 2);
  EXPECT_EQ(nearest_level(-5.0, levels.data(), 4), 0);
  EXPECT_EQ(nearest_level(5.0, levels.data(), 4), 3);
  EXPECT_EQ(nearest_level(std::nan(""), levels.data(), 4), 0);
  EXPECT_EQ(error_of([&] { nearest_level(0.0, levels.data(), 0); }),
            "nearest_level: n_levels: expected >= 1, found 0");
}

TEST(QNorm, Errors) {
  const std::vector<double> levels = {-1.0, 1.0, 0.5};
  const std::vector<double> good = {-1.0, 1.0};
  const std::vector<double> x = {0.1, 0.2};
  EXPECT_EQ(error_of([&] { qnorm_ref(levels.data(), 3, x.data(), nullptr, 2); }),
            "qnorm: levels[2]: expected strictly ascending levels (> 1), found 0.5");
  EXPECT_EQ(error_of([&] { qnorm_ref(good.data(), 0, x.data(), nullptr, 2); }),
            "qnorm: n_levels: expected >= 1, found 0");
  EXPECT_EQ(error_of([&] { qnorm_ref(good.data(), 2, x.data(), nullptr, 0); }),
            "qnorm: expected n >= 1 points, found 0");
  const std::vector<double> zero = {0.0, 0.0};
  EXPECT_EQ(error_of([&] { qnorm_ref(good.data(), 2, x.data(), zero.data(), 2); }),
            "qnorm: all 2 counts are zero: expected a positive total");
  const std::vector<double> negative = {1.0, -2.0};
  EXPECT_EQ(error_of([&] { qnorm_ref(good.data(), 2, x.data(), negative.data(), 2); }),
            "qnorm: count[1]: expected a finite count >= 0, found -2");
  const std::vector<double> inf_x = {0.1, std::numeric_limits<double>::infinity()};
  EXPECT_EQ(error_of([&] { qnorm_ref(good.data(), 2, inf_x.data(), nullptr, 2); }),
            "qnorm: x[1]: expected a finite value, found inf");
}

}  // namespace
}  // namespace kvq::quant
