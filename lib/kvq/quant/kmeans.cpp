// Exact 1-D weighted k-means (contract in kmeans.h): a dynamic programme over contiguous
// partitions with the divide-and-conquer optimisation over monotone split points.
#include "kvq/quant/kmeans.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvq/common/error.h"

namespace kvq::quant {
namespace {

struct Points {
  std::vector<double> x;  // distinct, ascending
  std::vector<double> w;  // > 0
};

void check_input(const double* x, const double* w, int64_t n, int k) {
  if (k < 1) fail("kmeans: k: expected >= 1 clusters, found {}", k);
  if (n < 1) fail("kmeans: expected n >= 1 points, found {}", n);
  KVQ_CHECK(x != nullptr, "kmeans: null x for {} points", n);
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) fail("kmeans: x[{}]: expected a finite value, found {}", i, x[i]);
    if (w && !(std::isfinite(w[i]) && w[i] >= 0.0)) {
      fail("kmeans: w[{}]: expected a finite weight >= 0, found {}", i, w[i]);
    }
  }
}

// Drops zero weights and merges equal x, so every point left can own a non-empty cluster.
Points merge_points(const double* x, const double* w, int64_t n) {
  Points p;
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0 && x[i] < x[i - 1]) {
      fail("kmeans: x[{}]: expected points sorted ascending (>= x[{}] = {}), found {}", i, i - 1,
           x[i - 1], x[i]);
    }
    const double wi = w ? w[i] : 1.0;
    if (wi == 0.0) continue;
    if (!p.x.empty() && p.x.back() == x[i]) {
      p.w.back() += wi;
    } else {
      p.x.push_back(x[i]);
      p.w.push_back(wi);
    }
  }
  if (p.x.empty()) fail("kmeans: all {} weights are zero: expected at least one positive", n);
  return p;
}

// Fewer distinct points than levels: the points themselves, then the fill rule of kmeans.h.
std::vector<double> fill_levels(std::vector<double> levels, int k) {
  if (levels.size() == 1 && k > 1) {
    const double c = levels[0];
    const double s = std::max(std::fabs(c), 1.0);
    levels.push_back(c > 0.0 ? c - s : c + s);
    std::sort(levels.begin(), levels.end());
  }
  while (static_cast<int>(levels.size()) < k) {
    size_t widest = 0;
    for (size_t i = 1; i + 1 < levels.size(); ++i) {
      if (levels[i + 1] - levels[i] > levels[widest + 1] - levels[widest]) widest = i;
    }
    const double a = levels[widest];
    const double b = levels[widest + 1];
    const double mid = a / 2.0 + b / 2.0;  // no overflow for huge |a|, |b|
    if (!(a < mid && mid < b)) {
      fail("kmeans: cannot place {} strictly ascending levels: no double between {} and {}", k, a,
           b);
    }
    levels.insert(levels.begin() + static_cast<std::ptrdiff_t>(widest) + 1, mid);
  }
  return levels;
}

// Prefix sums of w, w u, w u^2 with u = x - (weighted mean): centring keeps the
// sum-of-squares difference from cancelling catastrophically when the data sit far from 0.
class SegmentCost {
 public:
  explicit SegmentCost(const Points& p) {
    const size_t m = p.x.size();
    double sw = 0.0, swx = 0.0;
    for (size_t i = 0; i < m; ++i) {
      sw += p.w[i];
      swx += p.w[i] * p.x[i];
    }
    const double mean = swx / sw;
    w_.assign(m + 1, 0.0);
    wu_.assign(m + 1, 0.0);
    wuu_.assign(m + 1, 0.0);
    for (size_t i = 0; i < m; ++i) {
      const double u = p.x[i] - mean;
      w_[i + 1] = w_[i] + p.w[i];
      wu_[i + 1] = wu_[i] + p.w[i] * u;
      wuu_[i + 1] = wuu_[i] + p.w[i] * u * u;
    }
  }

  // Cost of one cluster holding points [i, j), i < j.
  double operator()(int64_t i, int64_t j) const {
    const double w = w_[j] - w_[i];
    const double s = wu_[j] - wu_[i];
    return std::max(0.0, (wuu_[j] - wuu_[i]) - s * s / w);
  }

 private:
  std::vector<double> w_, wu_, wuu_;
};

// One layer of the programme: cur[j] = min over i in [lo_i, j) of prev[i] + cost(i, j), for
// j in [j_first, j_last]; the argmin is non-decreasing in j, so each half searches only the
// split range its midpoint left open.
class Layer {
 public:
  Layer(const SegmentCost& cost, const std::vector<double>& prev, std::vector<double>& cur,
        int32_t* split, int64_t lo_i)
      : cost_(cost), prev_(prev), cur_(cur), split_(split), lo_i_(lo_i) {}

  void solve(int64_t j_first, int64_t j_last, int64_t i_first, int64_t i_last) {
    if (j_first > j_last) return;
    const int64_t j = j_first + (j_last - j_first) / 2;
    int64_t best_i = -1;
    double best = 0.0;
    const int64_t i_end = std::min(i_last, j - 1);
    for (int64_t i = std::max(i_first, lo_i_); i <= i_end; ++i) {
      const double c = prev_[i] + cost_(i, j);
      if (best_i < 0 || c < best) {  // strict: the leftmost split wins ties
        best = c;
        best_i = i;
      }
    }
    KVQ_CHECK(best_i >= 0, "kmeans: empty split range for j = {}", j);
    cur_[j] = best;
    split_[j] = static_cast<int32_t>(best_i);
    solve(j_first, j - 1, i_first, best_i);
    solve(j + 1, j_last, best_i, i_last);
  }

 private:
  const SegmentCost& cost_;
  const std::vector<double>& prev_;
  std::vector<double>& cur_;
  int32_t* split_;
  int64_t lo_i_;
};

// m > k distinct points: the first index of each of the k clusters, ascending.
std::vector<int64_t> optimal_starts(const Points& p, int k) {
  const int64_t m = static_cast<int64_t>(p.x.size());
  if (m > INT32_MAX) fail("kmeans: expected at most {} distinct points, found {}", INT32_MAX, m);
  const SegmentCost cost(p);
  // prev[j]: best cost of the first j points in c - 1 clusters (infinite where unreachable).
  std::vector<double> prev(m + 1, HUGE_VAL), cur(m + 1, HUGE_VAL);
  for (int64_t j = 1; j <= m; ++j) prev[j] = cost(0, j);
  std::vector<int32_t> split(static_cast<size_t>(k - 1) * (m + 1), 0);
  for (int c = 2; c <= k; ++c) {
    std::fill(cur.begin(), cur.end(), HUGE_VAL);
    // c clusters need j >= c points, and the k - c clusters after them one point each.
    const int64_t j_first = c;
    const int64_t j_last = m - (k - c);
    Layer layer(cost, prev, cur, split.data() + static_cast<size_t>(c - 2) * (m + 1),
                /*lo_i=*/c - 1);
    layer.solve(j_first, j_last, /*i_first=*/c - 1, /*i_last=*/j_last - 1);
    std::swap(prev, cur);
  }
  std::vector<int64_t> starts(static_cast<size_t>(k), 0);
  int64_t j = m;
  for (int c = k; c >= 2; --c) {
    j = split[static_cast<size_t>(c - 2) * (m + 1) + j];
    starts[c - 1] = j;
  }
  return starts;
}

double assignment_cost(const Points& p, const std::vector<double>& centroids,
                       const std::vector<int64_t>& starts) {
  double total = 0.0;
  for (size_t c = 0; c < starts.size(); ++c) {
    const int64_t end = c + 1 < starts.size() ? starts[c + 1] : static_cast<int64_t>(p.x.size());
    for (int64_t i = starts[c]; i < end; ++i) {
      const double d = p.x[i] - centroids[c];
      total += p.w[i] * d * d;
    }
  }
  return total;
}

}  // namespace

KMeansResult kmeans_1d_sorted(const double* x, const double* w, int64_t n, int k) {
  check_input(x, w, n, k);
  const Points p = merge_points(x, w, n);
  const int64_t m = static_cast<int64_t>(p.x.size());
  KMeansResult result;
  if (m <= k) {
    result.centroids = fill_levels(p.x, k);
    return result;
  }
  const std::vector<int64_t> starts = optimal_starts(p, k);
  result.centroids.resize(static_cast<size_t>(k));
  for (int c = 0; c < k; ++c) {
    const int64_t first = starts[c];
    const int64_t end = c + 1 < k ? starts[c + 1] : m;
    double sw = 0.0, swx = 0.0;
    for (int64_t i = first; i < end; ++i) {
      sw += p.w[i];
      swx += p.w[i] * p.x[i];
    }
    // Rounding could push a mean past its cluster's end points; clamping keeps the centroids
    // strictly ascending, since clusters hold disjoint ranges of distinct points.
    result.centroids[c] = std::clamp(swx / sw, p.x[first], p.x[end - 1]);
  }
  result.cost = assignment_cost(p, result.centroids, starts);
  return result;
}

KMeansResult kmeans_1d(const double* x, const double* w, int64_t n, int k) {
  check_input(x, w, n, k);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [x](int64_t a, int64_t b) { return x[a] < x[b]; });
  std::vector<double> xs(order.size()), ws(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    xs[i] = x[order[i]];
    ws[i] = w ? w[order[i]] : 1.0;
  }
  return kmeans_1d_sorted(xs.data(), ws.data(), n, k);
}

}  // namespace kvq::quant
