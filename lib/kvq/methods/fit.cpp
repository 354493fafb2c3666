// fit(): from a method spec and calibration statistics to a Quantizer (fit.h), and the
// mixed-precision bit allocation under an average code-bit budget.
#include "kvq/methods/fit.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/methods/fit_detail.h"

namespace kvq::methods {
namespace {

// max |x| of a layer's calibrated keys or values: the fp8 per-tensor amax.
float channel_amax(const artifact::CalibChannels& d) {
  double m = 0.0;
  for (double v : d.min.values) m = std::max(m, std::fabs(v));
  for (double v : d.max.values) m = std::max(m, std::fabs(v));
  return static_cast<float>(m);
}

}  // namespace

std::vector<LayerErrors> nuq_error_estimates(const MethodSpec& base,
                                             const artifact::CalibData& calib,
                                             const FitOptions& options) {
  if (base.kind != MethodKind::kNuq)
    fail("--bits-budget: expected a nuq method, found {}", base.name());
  const size_t fi = detail::fraction_index(calib, base);
  std::vector<LayerErrors> errors(calib.layers.size());
  for (size_t i = 0; i < calib.layers.size(); ++i) {
    const artifact::CalibLayer& l = calib.layers[i];
    const artifact::CalibChannels& keys = base.post_rope ? l.key_post : l.key;
    std::vector<float> lo, hi;
    detail::key_range(calib, keys, fi, lo, hi);
    const detail::Pooled pk = detail::pool_keys(calib, keys, lo, hi, options.key_grid_bins);
    const detail::Pooled pv = detail::pool_values(calib, l, base, fi);
    const std::string where =
        calib.path + ":/" +
        artifact::calib_layer_group(static_cast<int64_t>(i), calib.model.n_layers);
    for (int b = 2; b <= 4; ++b) {
      errors[i].key[b - 2] = detail::fit_levels(pk, b, base.qnorm, where + "/key").error;
      errors[i].value[b - 2] = detail::fit_levels(pv, b, base.qnorm, where + "/value").error;
    }
  }
  return errors;
}

std::vector<LayerBits> choose_bits(const std::vector<LayerErrors>& errors, double avg_bits) {
  if (!(avg_bits >= 2.0 && avg_bits <= 4.0)) {
    fail("--bits-budget: expected 2..4 average code bits per element, found {}", avg_bits);
  }
  // Items: layer 0 keys, layer 0 values, layer 1 keys, ...; each takes 0, 1 or 2 bits above 2.
  const size_t n = 2 * errors.size();
  const int64_t budget =
      static_cast<int64_t>(std::floor(static_cast<double>(n) * (avg_bits - 2.0) + 1e-9));
  const double inf = std::numeric_limits<double>::infinity();
  // best[i][e]: least summed error of the first i items using exactly e extra bits.
  std::vector<std::vector<double>> best(n + 1, std::vector<double>(budget + 1, inf));
  std::vector<std::vector<int>> pick(n + 1, std::vector<int>(budget + 1, 0));
  best[0][0] = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double* err = i % 2 == 0 ? errors[i / 2].key : errors[i / 2].value;
    for (int64_t e = 0; e <= budget; ++e) {
      for (int x = 0; x <= 2 && x <= e; ++x) {  // fewer bits first: they win ties
        const double c = best[i][e - x] + err[x];
        if (c < best[i + 1][e]) {
          best[i + 1][e] = c;
          pick[i + 1][e] = x;
        }
      }
    }
  }
  int64_t e = 0;
  for (int64_t j = 1; j <= budget; ++j) {
    if (best[n][j] < best[n][e]) e = j;
  }
  std::vector<LayerBits> bits(errors.size());
  for (size_t i = n; i > 0; --i) {
    const int x = pick[i][e];
    int& into = (i - 1) % 2 == 0 ? bits[(i - 1) / 2].key : bits[(i - 1) / 2].value;
    into = 2 + x;
    e -= x;
  }
  return bits;
}

std::vector<LayerBits> fit_bits_budget(const MethodSpec& base, const artifact::CalibData& calib,
                                       double avg_bits, const FitOptions& options) {
  if (!(avg_bits >= 2.0 && avg_bits <= 4.0)) {
    fail("--bits-budget: expected 2..4 average code bits per element, found {}", avg_bits);
  }
  return choose_bits(nuq_error_estimates(base, calib, options), avg_bits);
}

Quantizer fit(const MethodSpec& spec, const artifact::CalibData* calib, const FitOptions& options) {
  if (spec.needs_calib() && !calib) fail("method {} needs --calib calib.h5", spec.name());
  if (options.bits_budget != 0.0 && spec.kind != MethodKind::kNuq) {
    fail("--bits-budget: only nuq methods take a budget, found {}", spec.name());
  }
  Provenance prov;
  int64_t n_layers = 0, n_kv_heads = 0, head_dim = 0;
  if (calib) {
    prov.has_model = prov.has_data = true;
    prov.model = calib->model;
    prov.data = calib->data;
  } else if (options.model) {
    prov.has_model = true;
    prov.model = *options.model;
  }
  if (prov.has_model) {
    n_layers = prov.model.n_layers;
    n_kv_heads = prov.model.n_kv_heads;
    head_dim = prov.model.head_dim;
  }
  prov.bits_budget = options.bits_budget;

  std::vector<LayerParams> layers(static_cast<size_t>(n_layers));
  if (calib)
    KVQ_CHECK(static_cast<int64_t>(calib->layers.size()) == n_layers, "{} layers",
              calib->layers.size());
  for (LayerParams& l : layers) {
    l.key.bits = spec.key_bits;
    l.value.bits = spec.value_bits;
  }
  switch (spec.kind) {
    case MethodKind::kNuq: {
      std::vector<LayerBits> bits(layers.size(), LayerBits{spec.key_bits, spec.value_bits});
      if (options.bits_budget != 0.0)
        bits = fit_bits_budget(spec, *calib, options.bits_budget, options);
      for (int64_t i = 0; i < n_layers; ++i)
        layers[i] = detail::fit_nuq_layer(spec, *calib, i, bits[i], options);
      break;
    }
    case MethodKind::kSkvq:
      for (int64_t i = 0; i < n_layers; ++i)
        layers[i] = detail::fit_skvq_layer(spec, *calib, i, options);
      break;
    case MethodKind::kFp8:
      if (calib) {
        for (int64_t i = 0; i < n_layers; ++i) {
          const artifact::CalibLayer& l = calib->layers[i];
          layers[i].key.amax = channel_amax(spec.post_rope ? l.key_post : l.key);
          layers[i].value.amax = channel_amax(l.value);
        }
      }
      break;
    case MethodKind::kFp16:
    case MethodKind::kInt:
    case MethodKind::kKivi: break;
  }
  Quantizer q(spec, std::move(layers), n_kv_heads, head_dim);
  q.provenance = prov;
  return q;
}

}  // namespace kvq::methods
