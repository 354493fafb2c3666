// SKVQ (fit.h, quantizer.h): channels reordered by calibrated range so that similar channels
// share a group, per-token group quantization with a clip ratio searched on calib's token
// samples, and the LibTorch fake-quantizer.
#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/methods/detail.h"
#include "kvq/methods/fit_detail.h"
#include "kvq/quant/rope.h"

namespace kvq::methods::detail {
namespace {

// Channels by ascending range width (max - min), then centre, then index.
std::vector<int64_t> range_order(const artifact::CalibChannels& d) {
  const std::vector<double>& mn = d.min.values;
  const std::vector<double>& mx = d.max.values;
  std::vector<int64_t> perm(mn.size());
  std::iota(perm.begin(), perm.end(), int64_t{0});
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
    const double wa = mx[a] - mn[a], wb = mx[b] - mn[b];
    if (wa != wb) return wa < wb;
    return mx[a] + mn[a] < mx[b] + mn[b];
  });
  return perm;
}

// Samples x [S, C] (pre-RoPE keys) rotated at their positions, rotate-half layout per head.
at::Tensor rope_samples(const at::Tensor& x, const std::vector<int64_t>& positions,
                        const std::vector<float>& inv_freq) {
  const int64_t s = x.size(0), half = static_cast<int64_t>(inv_freq.size()), d = 2 * half;
  const at::Tensor pos = at::tensor(at::ArrayRef<int64_t>(positions), at::kLong).to(at::kFloat);
  const at::Tensor freqs = at::outer(pos, at::tensor(at::ArrayRef<float>(inv_freq)));  // [S, d/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);                     // [S, 1, d]
  const at::Tensor h = x.view({s, -1, d});
  const at::Tensor rotated = at::cat({-h.narrow(-1, half, half), h.narrow(-1, 0, half)}, -1);
  return (h * emb.cos() + rotated * emb.sin()).reshape({s, -1});
}

// Fisher of rotated keys: each RoPE pair's total is preserved, so each gets the pair's mean.
at::Tensor pair_mean(const at::Tensor& f, int64_t head_dim) {
  const int64_t s = f.size(0), half = head_dim / 2;
  const at::Tensor h = f.view({s, -1, head_dim});
  const at::Tensor mean = (h.narrow(-1, 0, half) + h.narrow(-1, half, half)) * 0.5;
  return at::cat({mean, mean}, -1).reshape({s, -1});
}

at::Tensor as_tensor(const artifact::Array<float>& a) {
  return at::tensor(at::ArrayRef<float>(a.values), at::kFloat).view({a.shape[0], a.shape[1]});
}

// The grid's clip ratio with the least Fisher-weighted squared error (the first among equals).
float best_clip(const at::Tensor& x, const at::Tensor& fisher, TensorParams p, int64_t group,
                const std::vector<float>& grid) {
  const at::Tensor w =
      fisher.sum().item<double>() > 0 ? fisher.to(at::kDouble) : at::ones_like(fisher, at::kDouble);
  float best = 1.0f;
  double best_error = 0.0;
  for (size_t i = 0; i < grid.size(); ++i) {
    p.clip = grid[i];
    const at::Tensor d = (skvq_tokens(x, p, group) - x).to(at::kDouble);
    const double error = (w * d * d).sum().item<double>();
    if (i == 0 || error < best_error) {
      best = grid[i];
      best_error = error;
    }
  }
  return best;
}

}  // namespace

at::Tensor skvq_tokens(const at::Tensor& x, const TensorParams& p, int64_t group) {
  const int64_t rows = x.size(0), channels = x.size(1);
  KVQ_CHECK(static_cast<int64_t>(p.perm.size()) == channels, "perm of {} for {} channels",
            p.perm.size(), channels);
  std::vector<int64_t> inverse(p.perm.size());
  for (size_t i = 0; i < p.perm.size(); ++i) inverse[p.perm[i]] = static_cast<int64_t>(i);
  const at::Tensor perm = at::tensor(at::ArrayRef<int64_t>(p.perm), at::kLong).to(x.device());
  const at::Tensor inv = at::tensor(at::ArrayRef<int64_t>(inverse), at::kLong).to(x.device());
  const at::Tensor permuted = x.index_select(1, perm).view({rows, channels, 1});
  const at::Tensor q = uniform_grouped(permuted, group, p.bits, p.clip).view({rows, channels});
  return q.index_select(1, inv);
}

LayerParams fit_skvq_layer(const MethodSpec& spec, const artifact::CalibData& calib, int64_t layer,
                           const FitOptions& options) {
  const artifact::CalibLayer& l = calib.layers.at(static_cast<size_t>(layer));
  const std::string where = fmt::format("{}:/{}/samples", calib.path,
                                        artifact::calib_layer_group(layer, calib.model.n_layers));
  if (l.sample_positions.values.empty()) {
    fail("{}: no token samples: SKVQ's clipping search needs them (kvq calibrate --sample-tokens)",
         where);
  }
  if (options.clip_grid.empty()) fail("skvq: clip grid: expected at least one ratio, found none");
  for (float r : options.clip_grid) {
    if (!(r > 0.0f && r <= 1.0f)) fail("skvq: clip grid: expected ratios in (0, 1], found {}", r);
  }
  LayerParams p;
  p.key.bits = spec.key_bits;
  p.value.bits = spec.value_bits;
  p.key.perm = range_order(spec.post_rope ? l.key_post : l.key);
  p.value.perm = range_order(l.value);
  at::Tensor k = as_tensor(l.sample_key), k_fisher = as_tensor(l.sample_key_fisher);
  if (spec.post_rope) {
    const artifact::ModelFingerprint& m = calib.model;
    k = rope_samples(k, l.sample_positions.values,
                     quant::rope_inv_freq(m.rope_theta, m.head_dim,
                                          artifact::parse_rope_scaling(m, calib.path)));
    k_fisher = pair_mean(k_fisher, calib.model.head_dim);
  }
  p.key.clip = best_clip(k, k_fisher, p.key, spec.group, options.clip_grid);
  p.value.clip = best_clip(as_tensor(l.sample_value), as_tensor(l.sample_value_fisher), p.value,
                           spec.group, options.clip_grid);
  return p;
}

}  // namespace kvq::methods::detail
