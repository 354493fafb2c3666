// Exact weighted k-means in one dimension: how KVQuant's nuqB levels are fitted (DESIGN.md
// section 3; KVQuant section 3.2 weights each sample by its Fisher information).
//
// Minimises sum_i w_i (x_i - c_{cluster(i)})^2 over all assignments of the n points to k
// clusters. In 1-D an optimal clustering is a partition of the sorted points into contiguous
// runs, so a dynamic programme over split points is exact; split points are monotone, which
// the divide-and-conquer optimisation uses (Grønlund et al. 2017, "Fast exact k-means,
// k-medians and Bregman divergence clustering in 1D"): O(k n log n) time, O(k n) memory for
// the split points. No iterations, no random starts: the same input gives the same bits.
// Not here: collecting the weighted samples or histograms (calib/), normalizing them to
// [-1, 1], converting the levels to float or Q-Norm (qnorm.h).
#pragma once

#include <cstdint>
#include <vector>

namespace kvq::quant {

struct KMeansResult {
  std::vector<double> centroids;  // k values, strictly ascending
  double cost = 0.0;              // sum_i w_i (x_i - centroid of i's cluster)^2
};

// x[n] ascending (ties allowed), w[n] finite and >= 0, or w == nullptr for weight 1 each; a
// histogram is its bin centres with their weights. k >= 1.
//   - Zero-weight points are ignored and equal x values are merged (weights summed) first.
//   - Each centroid is the weighted mean of its cluster. Among equally good partitions the one
//     with the leftmost split points wins (deterministic).
//   - With m <= k distinct positive-weight points the centroids are those points (cost 0),
//     then the k - m missing levels are filled deterministically: a single point c first gets
//     the companion c - s if c > 0, else c + s, with s = max(|c|, 1) (a second level towards
//     zero, so levels in [-1, 1] stay there); then the widest gap between adjacent levels (the
//     leftmost among equal ones) is split at its midpoint until there are k levels.
// Throws kvq::Error (naming the index and value) for k < 1, n < 1, a non-finite x, a negative
// or non-finite weight, x not ascending, all weights zero, or k levels that cannot be strictly
// ascending doubles (filling between adjacent doubles).
KMeansResult kmeans_1d_sorted(const double* x, const double* w, int64_t n, int k);

// The same for points in any order: sorts (x, w) pairs by x, then kmeans_1d_sorted.
KMeansResult kmeans_1d(const double* x, const double* w, int64_t n, int k);

}  // namespace kvq::quant
