// Q-Norm (KVQuant section 3.5 and its appendix): an affine correction of fitted nuq levels so
// that the dequantized distribution keeps the mean and standard deviation of the original one,
// which k-means alone shrinks (it matters most at 2 bits).
//
// Definition. Points x_i with count weights c_i (the plain count distribution the levels
// quantize, not the Fisher weights the levels were fitted with) are coded under the ORIGINAL
// levels L (nearest level, ties to the lower, as nuq_encode); code(i) never changes. The codes
// are then given new values L'[j] = a * L[j] + b with
//   a = sigma / sigma_q,   b = mu - a * mu_q,
// where mu, sigma are the weighted mean and (population) standard deviation of the x_i and
// mu_q, sigma_q those of L[code(i)]. Then L'[code(i)] has mean mu and deviation sigma exactly
// (up to rounding). a > 0, so L' is ascending like L. When every point falls on one level
// (sigma_q == 0) the deviation cannot be matched: a = 1 and only the mean is corrected.
// So the runtime encodes with L (or its midpoints) and decodes with L'. As in KVQuant's code,
// the points are the normalized calibration values without the outliers.
// Not here: fitting L (kmeans.h), the outlier split, storing a and b (artifact/).
#pragma once

#include <cstdint>
#include <vector>

namespace kvq::quant {

struct QNormResult {
  double scale = 1.0;          // a
  double shift = 0.0;          // b
  std::vector<double> levels;  // a * level + b, ascending
};

// levels[n_levels] finite and strictly ascending; x[n] finite, in any order; count[n] finite
// and >= 0 with a positive sum, or count == nullptr for 1 each. Throws kvq::Error naming the
// bad index and value otherwise.
QNormResult qnorm_ref(const double* levels, int n_levels, const double* x, const double* count,
                      int64_t n);

// Nearest of n_levels ascending levels, ties to the lower index: nuq_encode's rule in double.
int nearest_level(double x, const double* levels, int n_levels);

}  // namespace kvq::quant
