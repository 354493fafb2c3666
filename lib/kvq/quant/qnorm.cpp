// Q-Norm's affine level correction (definition in qnorm.h). Moments are taken in two passes
// (mean, then squared deviations) so that data far from zero keep their digits.
#include "kvq/quant/qnorm.h"

#include <algorithm>
#include <cmath>

#include "kvq/common/error.h"

namespace kvq::quant {
namespace {

struct Moments {
  double mean = 0.0;
  double stddev = 0.0;
};

// Weighted mean and population standard deviation of value(i) over i < n.
template <typename Value>
Moments moments(const double* count, int64_t n, double total, Value value) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += (count ? count[i] : 1.0) * value(i);
  Moments m;
  m.mean = sum / total;
  double squares = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = value(i) - m.mean;
    squares += (count ? count[i] : 1.0) * d * d;
  }
  m.stddev = std::sqrt(squares / total);
  return m;
}

}  // namespace

int nearest_level(double x, const double* levels, int n_levels) {
  if (n_levels < 1) fail("nearest_level: n_levels: expected >= 1, found {}", n_levels);
  if (std::isnan(x)) return 0;
  const double* upper = std::lower_bound(levels, levels + n_levels, x);
  if (upper == levels) return 0;
  if (upper == levels + n_levels) return n_levels - 1;
  const int hi = static_cast<int>(upper - levels);
  return (levels[hi] - x) < (x - levels[hi - 1]) ? hi : hi - 1;
}

QNormResult qnorm_ref(const double* levels, int n_levels, const double* x, const double* count,
                      int64_t n) {
  if (n_levels < 1) fail("qnorm: n_levels: expected >= 1, found {}", n_levels);
  for (int j = 0; j < n_levels; ++j) {
    if (!std::isfinite(levels[j])) {
      fail("qnorm: levels[{}]: expected a finite value, found {}", j, levels[j]);
    }
    if (j > 0 && !(levels[j] > levels[j - 1])) {
      fail("qnorm: levels[{}]: expected strictly ascending levels (> {}), found {}", j,
           levels[j - 1], levels[j]);
    }
  }
  if (n < 1) fail("qnorm: expected n >= 1 points, found {}", n);
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) fail("qnorm: x[{}]: expected a finite value, found {}", i, x[i]);
    if (count && !(std::isfinite(count[i]) && count[i] >= 0.0)) {
      fail("qnorm: count[{}]: expected a finite count >= 0, found {}", i, count[i]);
    }
    total += count ? count[i] : 1.0;
  }
  if (!(total > 0.0)) fail("qnorm: all {} counts are zero: expected a positive total", n);

  std::vector<int> codes(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) codes[i] = nearest_level(x[i], levels, n_levels);
  const Moments original = moments(count, n, total, [x](int64_t i) { return x[i]; });
  const Moments coded = moments(count, n, total, [&](int64_t i) { return levels[codes[i]]; });

  QNormResult result;
  result.scale = coded.stddev > 0.0 ? original.stddev / coded.stddev : 1.0;
  result.shift = original.mean - result.scale * coded.mean;
  result.levels.resize(static_cast<size_t>(n_levels));
  for (int j = 0; j < n_levels; ++j) result.levels[j] = result.scale * levels[j] + result.shift;
  return result;
}

}  // namespace kvq::quant
