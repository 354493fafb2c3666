// kvq/quant/kmeans: exact 1-D weighted k-means. The cost equals brute force over every
// contiguous partition (and, for tiny n, every assignment) on many small random problems with
// duplicates and zero weights; the fill rule for few distinct points; a large problem is fast,
// a Lloyd fixed point and no worse than Lloyd; determinism; the exact error messages.
#include "kvq/quant/kmeans.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq::quant {
namespace {

using kvq::test::error_of;

// Weighted sum of squares of a cluster about its weighted mean (0 when its weight is 0).
double cluster_cost(const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<int>& members) {
  double sw = 0.0, swx = 0.0;
  for (int i : members) {
    sw += w[i];
    swx += w[i] * x[i];
  }
  if (sw == 0.0) return 0.0;
  const double mean = swx / sw;
  double cost = 0.0;
  for (int i : members) cost += w[i] * (x[i] - mean) * (x[i] - mean);
  return cost;
}

// Best cost over every split of the sorted points into at most k contiguous runs.
double brute_contiguous(const std::vector<double>& x, const std::vector<double>& w, int k) {
  const int n = static_cast<int>(x.size());
  double best = HUGE_VAL;
  std::function<void(int, int, double)> go = [&](int start, int left, double acc) {
    if (start == n) {
      best = std::min(best, acc);
      return;
    }
    if (left == 0) return;
    for (int end = start + 1; end <= n; ++end) {
      std::vector<int> run;
      for (int i = start; i < end; ++i) run.push_back(i);
      go(end, left - 1, acc + cluster_cost(x, w, run));
    }
  };
  go(0, k, 0.0);
  return best;
}

// Best cost over all k^n assignments of points to clusters.
double brute_assignments(const std::vector<double>& x, const std::vector<double>& w, int k) {
  const int n = static_cast<int>(x.size());
  std::vector<int> label(n, 0);
  double best = HUGE_VAL;
  while (true) {
    double cost = 0.0;
    for (int c = 0; c < k; ++c) {
      std::vector<int> members;
      for (int i = 0; i < n; ++i)
        if (label[i] == c) members.push_back(i);
      cost += cluster_cost(x, w, members);
    }
    best = std::min(best, cost);
    int i = 0;
    while (i < n && ++label[i] == k) label[i++] = 0;
    if (i == n) break;
  }
  return best;
}

// Cost with each point assigned to its nearest centroid.
double nearest_cost(const std::vector<double>& x, const std::vector<double>& w,
                    const std::vector<double>& centroids) {
  double cost = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    double d = HUGE_VAL;
    for (double c : centroids) d = std::min(d, (x[i] - c) * (x[i] - c));
    cost += w[i] * d;
  }
  return cost;
}

void expect_strictly_ascending(const std::vector<double>& v, int k) {
  ASSERT_EQ(static_cast<int>(v.size()), k);
  for (size_t i = 1; i < v.size(); ++i) EXPECT_LT(v[i - 1], v[i]) << "centroid " << i;
}

bool near(double a, double b) { return std::fabs(a - b) <= 1e-9 * std::max(a, b) + 1e-12; }

TEST(KMeans, EqualsBruteForceOnSmallProblems) {
  std::mt19937 rng(2024);
  std::uniform_real_distribution<double> u(-2.0, 3.0);
  std::uniform_int_distribution<int> coarse(0, 5);
  std::uniform_real_distribution<double> weight(0.0, 4.0);
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = 1 + trial % 12;
    const int k = 1 + (trial / 12) % 4;
    std::vector<double> x(n), w(n);
    for (int i = 0; i < n; ++i) {
      x[i] = trial % 3 == 0 ? coarse(rng) * 0.5 : u(rng);  // every third: many duplicates
      w[i] = trial % 2 == 0 && i % 3 == 1 ? 0.0 : weight(rng);
    }
    w[trial % n] = 1.0 + weight(rng);  // at least one positive weight
    std::sort(x.begin(), x.end());
    const KMeansResult r = kmeans_1d_sorted(x.data(), w.data(), n, k);
    expect_strictly_ascending(r.centroids, k);
    const double brute = brute_contiguous(x, w, k);
    ASSERT_TRUE(near(r.cost, brute)) << "trial " << trial << " n " << n << " k " << k << " cost "
                                     << r.cost << " brute " << brute;
    ASSERT_TRUE(near(nearest_cost(x, w, r.centroids), r.cost)) << "trial " << trial;
    if (n <= 7 && k <= 3) {
      ASSERT_TRUE(near(brute_assignments(x, w, k), brute)) << "trial " << trial;
    }
  }
}

TEST(KMeans, OneClusterIsTheWeightedMean) {
  const std::vector<double> x = {-1.0, 0.0, 2.0, 5.0};
  const std::vector<double> w = {1.0, 2.0, 3.0, 4.0};
  const KMeansResult r = kmeans_1d_sorted(x.data(), w.data(), 4, 1);
  const double mean = (-1.0 + 0.0 + 6.0 + 20.0) / 10.0;
  ASSERT_EQ(r.centroids.size(), 1u);
  EXPECT_DOUBLE_EQ(r.centroids[0], mean);
  double cost = 0.0;
  for (int i = 0; i < 4; ++i) cost += w[i] * (x[i] - mean) * (x[i] - mean);
  EXPECT_NEAR(r.cost, cost, 1e-12);
  // Unit weights by default.
  const KMeansResult unweighted = kmeans_1d_sorted(x.data(), nullptr, 4, 1);
  EXPECT_DOUBLE_EQ(unweighted.centroids[0], 1.5);
}

TEST(KMeans, FewerDistinctPointsThanLevels) {
  // Distinct positive-weight points {1, 2, 5} (the zero-weight 2 and the duplicate merge),
  // then the widest gaps are split, leftmost first among equal ones.
  const std::vector<double> x = {1.0, 2.0, 2.0, 5.0, 9.0};
  const std::vector<double> w = {1.0, 1.0, 3.0, 1.0, 0.0};
  KMeansResult r = kmeans_1d_sorted(x.data(), w.data(), 5, 5);
  EXPECT_EQ(r.centroids, (std::vector<double>{1.0, 2.0, 2.75, 3.5, 5.0}));
  EXPECT_EQ(r.cost, 0.0);
  r = kmeans_1d_sorted(x.data(), w.data(), 5, 3);
  EXPECT_EQ(r.centroids, (std::vector<double>{1.0, 2.0, 5.0}));
  EXPECT_EQ(r.cost, 0.0);
  // One point: a companion towards zero at distance max(|c|, 1), then midpoints.
  const double half = 0.5, zero = 0.0, minus3 = -3.0, three = 3.0;
  EXPECT_EQ(kmeans_1d_sorted(&half, nullptr, 1, 4).centroids,
            (std::vector<double>{-0.5, -0.25, 0.0, 0.5}));
  EXPECT_EQ(kmeans_1d_sorted(&zero, nullptr, 1, 2).centroids, (std::vector<double>{0.0, 1.0}));
  EXPECT_EQ(kmeans_1d_sorted(&minus3, nullptr, 1, 2).centroids, (std::vector<double>{-3.0, 0.0}));
  EXPECT_EQ(kmeans_1d_sorted(&three, nullptr, 1, 3).centroids,
            (std::vector<double>{0.0, 1.5, 3.0}));
  EXPECT_EQ(kmeans_1d_sorted(&three, nullptr, 1, 1).centroids, (std::vector<double>{3.0}));
}

TEST(KMeans, ZeroWeightsMakeNoEmptyClusters) {
  const std::vector<double> x = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<double> w = {1, 0, 0, 0, 0, 0, 0, 0, 2, 1};
  const KMeansResult r = kmeans_1d_sorted(x.data(), w.data(), 10, 2);
  EXPECT_EQ(r.centroids[0], 0.0);
  EXPECT_NEAR(r.centroids[1], 25.0 / 3.0, 1e-12);
  EXPECT_NEAR(r.cost, 2.0 * (1.0 / 3) * (1.0 / 3) + (2.0 / 3) * (2.0 / 3), 1e-12);
  for (double c : r.centroids) EXPECT_TRUE(std::isfinite(c));
}

TEST(KMeans, UnsortedAndHistogramForms) {
  std::mt19937 rng(8);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> weight(0.0, 1.0);
  std::vector<double> x(500), w(500);
  for (int i = 0; i < 500; ++i) {
    x[i] = normal(rng);
    w[i] = weight(rng);
  }
  const KMeansResult unsorted = kmeans_1d(x.data(), w.data(), 500, 8);
  std::vector<int> order(500);
  for (int i = 0; i < 500; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return x[a] < x[b]; });
  std::vector<double> xs, ws;
  for (int i : order) {
    xs.push_back(x[i]);
    ws.push_back(w[i]);
  }
  const KMeansResult sorted = kmeans_1d_sorted(xs.data(), ws.data(), 500, 8);
  EXPECT_EQ(unsorted.centroids, sorted.centroids);
  EXPECT_EQ(unsorted.cost, sorted.cost);
  // A histogram (bin centres + counts) is the same as the sample it counts.
  const std::vector<double> sample = {0.0, 0.0, 0.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0, 6.0};
  const std::vector<double> centres = {0.0, 1.0, 4.0, 6.0}, counts = {3.0, 2.0, 4.0, 1.0};
  const KMeansResult a = kmeans_1d_sorted(sample.data(), nullptr, 10, 2);
  const KMeansResult b = kmeans_1d_sorted(centres.data(), counts.data(), 4, 2);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_NEAR(a.cost, b.cost, 1e-12);
}

TEST(KMeans, LargeProblemIsFastAndOptimal) {
  std::mt19937 rng(99);
  std::student_t_distribution<double> heavy(4.0);
  std::exponential_distribution<double> fisher(1.0);
  const int64_t n = 100000;
  const int k = 16;
  std::vector<double> x(n), w(n);
  for (int64_t i = 0; i < n; ++i) x[i] = heavy(rng);
  std::sort(x.begin(), x.end());
  for (int64_t i = 0; i < n; ++i) w[i] = fisher(rng);
  const auto start = std::chrono::steady_clock::now();
  const KMeansResult r = kmeans_1d_sorted(x.data(), w.data(), n, k);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("kmeans n=%lld k=%d: %.3f s\n", static_cast<long long>(n), k, seconds);
  EXPECT_LT(seconds, 5.0);  // well under a second when the machine is not shared
  expect_strictly_ascending(r.centroids, k);
  EXPECT_NEAR(nearest_cost(x, w, r.centroids), r.cost, 1e-9 * r.cost);
  // A Lloyd fixed point: each centroid is the weighted mean of the points nearest to it.
  std::vector<double> sw(k, 0.0), swx(k, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const int c =
        static_cast<int>(std::min_element(r.centroids.begin(), r.centroids.end(),
                                          [&](double a, double b) {
                                            return std::fabs(x[i] - a) < std::fabs(x[i] - b);
                                          }) -
                         r.centroids.begin());
    sw[c] += w[i];
    swx[c] += w[i] * x[i];
  }
  for (int c = 0; c < k; ++c) EXPECT_NEAR(r.centroids[c], swx[c] / sw[c], 1e-9) << c;
  // Lloyd from evenly spaced quantiles converges to a local optimum, never a better one.
  std::vector<double> lloyd(k);
  for (int c = 0; c < k; ++c) lloyd[c] = x[(2 * c + 1) * n / (2 * k)];
  for (int iter = 0; iter < 100; ++iter) {
    std::vector<double> a(k, 0.0), b(k, 0.0);
    int64_t i = 0;
    for (int c = 0; c < k; ++c) {
      const double edge = c + 1 < k ? (lloyd[c] + lloyd[c + 1]) / 2 : HUGE_VAL;
      for (; i < n && x[i] <= edge; ++i) {
        a[c] += w[i];
        b[c] += w[i] * x[i];
      }
    }
    for (int c = 0; c < k; ++c)
      if (a[c] > 0) lloyd[c] = b[c] / a[c];
  }
  EXPECT_LE(r.cost, nearest_cost(x, w, lloyd) * (1 + 1e-12));
}

TEST(KMeans, Deterministic) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> coarse(0, 40);  // ties between partitions are likely
  std::vector<double> x(2000);
  for (double& v : x) v = coarse(rng) / 8.0;
  std::sort(x.begin(), x.end());
  const KMeansResult a = kmeans_1d_sorted(x.data(), nullptr, 2000, 8);
  const KMeansResult b = kmeans_1d_sorted(x.data(), nullptr, 2000, 8);
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_EQ(a.cost, b.cost);
}

TEST(KMeans, Errors) {
  const std::vector<double> x = {1.0, 3.0, 2.0};
  const std::vector<double> sorted = {1.0, 2.0, 3.0};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(error_of([&] { kmeans_1d_sorted(sorted.data(), nullptr, 3, 0); }),
            "kmeans: k: expected >= 1 clusters, found 0");
  EXPECT_EQ(error_of([&] { kmeans_1d_sorted(sorted.data(), nullptr, 0, 2); }),
            "kmeans: expected n >= 1 points, found 0");
  EXPECT_EQ(error_of([&] { kmeans_1d_sorted(x.data(), nullptr, 3, 2); }),
            "kmeans: x[2]: expected points sorted ascending (>= x[1] = 3), found 2");
  const std::vector<double> negative = {1.0, 1.0, -1.0};
  EXPECT_EQ(error_of([&] { kmeans_1d_sorted(sorted.data(), negative.data(), 3, 2); }),
            "kmeans: w[2]: expected a finite weight >= 0, found -1");
  const std::vector<double> nan_weight = {1.0, nan, 1.0};
  EXPECT_EQ(error_of([&] { kmeans_1d(x.data(), nan_weight.data(), 3, 2); }),
            "kmeans: w[1]: expected a finite weight >= 0, found nan");
  const std::vector<double> nan_x = {1.0, nan, 3.0};
  EXPECT_EQ(error_of([&] { kmeans_1d_sorted(nan_x.data(), nullptr, 3, 2); }),
            "kmeans: x[1]: expected a finite value, found nan");
  const std::vector<double> zeros = {0.0, 0.0, 0.0};
  EXPECT_EQ(error_of([&] { kmeans_1d_sorted(sorted.data(), zeros.data(), 3, 2); }),
            "kmeans: all 3 weights are zero: expected at least one positive");
  const std::vector<double> adjacent = {1.0, std::nextafter(1.0, 2.0)};
  EXPECT_EQ(error_of([&] { kmeans_1d_sorted(adjacent.data(), nullptr, 2, 3); }),
            "kmeans: cannot place 3 strictly ascending levels: no double between 1 and "
            "1.0000000000000002");
}

}  // namespace
}  // namespace kvq::quant
