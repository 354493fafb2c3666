// KVQuant's offline fit (fit.h): per-channel key ranges from calib thresholds, Fisher-weighted
// k-means codebooks on the normalized histograms, Q-Norm decode levels, and the per-layer error
// estimates the mixed-precision budget compares.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kvq/common/error.h"
#include "kvq/methods/fit_detail.h"
#include "kvq/quant/kmeans.h"
#include "kvq/quant/qnorm.h"

namespace kvq::methods::detail {
namespace {

std::string layer_where(const artifact::CalibData& calib, int64_t layer, const char* kind) {
  return fmt::format("{}:/{}/{}", calib.path,
                     artifact::calib_layer_group(layer, calib.model.n_layers), kind);
}

double sum(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s;
}

// The bins of a grid of n equal bins on [-1, 1] that hold a count or a Fisher weight, at their
// centres.
Pooled pooled_grid(const double* fisher, const double* count, const double* error, int64_t n) {
  Pooled p;
  for (int64_t b = 0; b < n; ++b) {
    if (count[b] == 0.0 && fisher[b] == 0.0) continue;
    p.x.push_back(-1.0 + (static_cast<double>(b) + 0.5) * 2.0 / static_cast<double>(n));
    p.fisher.push_back(fisher[b]);
    p.count.push_back(count[b]);
    p.error_weight.push_back(error[b]);
  }
  return p;
}

}  // namespace

size_t fraction_index(const artifact::CalibData& calib, const MethodSpec& spec) {
  const double f = spec.outlier_fraction();
  for (size_t i = 0; i < calib.fractions.size(); ++i) {
    if (std::fabs(calib.fractions[i] - f) <= 1e-12) return i;
  }
  fail(
      "{}: method {}: outlier fraction {} is not among the calibrated fractions ({}); use one of "
      "them",
      calib.path, spec.name(), f, fmt::join(calib.fractions, ", "));
}

void key_range(const artifact::CalibData& calib, const artifact::CalibChannels& keys, size_t fi,
               std::vector<float>& lo, std::vector<float>& hi) {
  const int64_t channels = calib.model.n_kv_heads * calib.model.head_dim;
  KVQ_CHECK(static_cast<int64_t>(keys.thresholds.values.size()) ==
                static_cast<int64_t>(calib.fractions.size()) * 2 * channels,
            "thresholds of {} values", keys.thresholds.values.size());
  lo.resize(channels);
  hi.resize(channels);
  const double* th = keys.thresholds.values.data() + fi * 2 * channels;  // [2, C] at fraction fi
  for (int64_t c = 0; c < channels; ++c) {
    lo[c] = static_cast<float>(th[c]);
    hi[c] = static_cast<float>(th[channels + c]);
  }
}

Pooled pool_keys(const artifact::CalibData& calib, const artifact::CalibChannels& keys,
                 const std::vector<float>& lo, const std::vector<float>& hi, int64_t grid_bins) {
  KVQ_CHECK(grid_bins >= 2, "grid of {} bins", grid_bins);
  const int64_t channels = static_cast<int64_t>(lo.size()), bins = calib.key_bins;
  std::vector<double> fisher(grid_bins, 0.0), count(grid_bins, 0.0), error(grid_bins, 0.0);
  for (int64_t c = 0; c < channels; ++c) {
    // The runtime's normalization of this channel (float, nuq_fake_quant_channel_ref).
    const float offset = (lo[c] + hi[c]) / 2.0f;
    const float scale = (hi[c] - lo[c]) / 2.0f;
    if (scale == 0.0f) continue;  // a constant channel decodes to its offset: nothing to fit
    const double mn = keys.min.values[c],
                 width = (keys.max.values[c] - mn) / static_cast<double>(bins);
    const double* hc = keys.hist_count.values.data() + c * bins;
    const double* hf = keys.hist_fisher.values.data() + c * bins;
    for (int64_t b = 0; b < bins; ++b) {
      if (hc[b] == 0.0 && hf[b] == 0.0) continue;
      const double centre = width > 0.0 ? mn + (static_cast<double>(b) + 0.5) * width : mn;
      const double xn = (centre - offset) / scale;
      if (!(xn >= -1.0 && xn <= 1.0)) continue;  // outside the dense range: outliers or clamped
      const int64_t g = std::min<int64_t>(
          grid_bins - 1, static_cast<int64_t>(std::floor((xn + 1.0) / 2.0 * grid_bins)));
      fisher[g] += hf[b];
      count[g] += hc[b];
      error[g] += hf[b] * static_cast<double>(scale) * static_cast<double>(scale);
    }
  }
  return pooled_grid(fisher.data(), count.data(), error.data(), grid_bins);
}

Pooled pool_values(const artifact::CalibData& calib, const artifact::CalibLayer& layer,
                   const MethodSpec& spec, size_t fi) {
  const artifact::CalibVectors& v = spec.value_per_head ? layer.value_head : layer.value_token;
  const int64_t bins = calib.value_bins;
  const double* nf = v.normalized_fisher.values.data() + fi * bins;
  const double* nc = v.normalized_count.values.data() + fi * bins;
  const double scale = v.vector_range.values[fi * 3 + 1] / 2.0;  // mean per-vector (hi - lo) / 2
  std::vector<double> error(bins);
  for (int64_t b = 0; b < bins; ++b) error[b] = nf[b] * scale * scale;
  return pooled_grid(nf, nc, error.data(), bins);
}

Levels fit_levels(const Pooled& points, int bits, bool qnorm, const std::string& where) {
  const int k = 1 << bits;
  const int64_t n = static_cast<int64_t>(points.x.size());
  const bool have_counts = sum(points.count) > 0.0;
  const bool have_fisher = sum(points.fisher) > 0.0;
  if (n == 0 || (!have_counts && !have_fisher))
    fail("{}: no calibration values in the dense range to fit {} levels", where, k);
  // All-zero Fisher information (a layer the loss does not see) falls back to counts.
  const std::vector<double>& weights = have_fisher ? points.fisher : points.count;
  const quant::KMeansResult km = quant::kmeans_1d_sorted(points.x.data(), weights.data(), n, k);
  Levels l;
  std::vector<double> encode(k);
  for (int j = 0; j < k; ++j) {
    l.encode.push_back(static_cast<float>(km.centroids[j]));
    encode[j] = l.encode[j];
    if (j > 0 && !(l.encode[j] > l.encode[j - 1]))
      fail("{}: levels {} and {} coincide in float", where, j - 1, j);
  }
  l.decode = l.encode;
  if (qnorm && have_counts) {
    const quant::QNormResult q =
        quant::qnorm_ref(encode.data(), k, points.x.data(), points.count.data(), n);
    for (int j = 0; j < k; ++j) {
      l.decode[j] = static_cast<float>(q.levels[j]);
      if (j > 0 && !(l.decode[j] > l.decode[j - 1]))
        fail("{}: Q-Norm levels {} and {} coincide in float", where, j - 1, j);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const double d =
        points.x[i] -
        static_cast<double>(l.decode[quant::nearest_level(points.x[i], encode.data(), k)]);
    l.error += points.error_weight[i] * d * d;
  }
  return l;
}

LayerParams fit_nuq_layer(const MethodSpec& spec, const artifact::CalibData& calib, int64_t layer,
                          LayerBits bits, const FitOptions& options) {
  const artifact::CalibLayer& l = calib.layers.at(static_cast<size_t>(layer));
  const size_t fi = fraction_index(calib, spec);
  const artifact::CalibChannels& keys = spec.post_rope ? l.key_post : l.key;
  LayerParams p;
  p.key.bits = bits.key;
  p.key.outlier_fraction = calib.fractions[fi];
  key_range(calib, keys, fi, p.key.lo, p.key.hi);
  const Levels lk =
      fit_levels(pool_keys(calib, keys, p.key.lo, p.key.hi, options.key_grid_bins), bits.key,
                 spec.qnorm, layer_where(calib, layer, spec.post_rope ? "key_post" : "key"));
  p.key.levels_encode = lk.encode;
  p.key.levels_decode = lk.decode;
  p.key.fisher_error = lk.error;
  p.value.bits = bits.value;
  p.value.outlier_fraction = calib.fractions[fi];
  const Levels lv = fit_levels(pool_values(calib, l, spec, fi), bits.value, spec.qnorm,
                               layer_where(calib, layer, "value"));
  p.value.levels_encode = lv.encode;
  p.value.levels_decode = lv.decode;
  p.value.fisher_error = lv.error;
  return p;
}

}  // namespace kvq::methods::detail
