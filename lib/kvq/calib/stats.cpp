// Histograms are accumulated with bincount over flattened (channel, bin) indices: one pass over
// the activations per statistic, on the model's device, and deterministic on the CPU.
#include "kvq/calib/stats.h"

#include <algorithm>
#include <limits>

#include <fmt/ranges.h>

#include "kvq/common/error.h"
#include "kvq/quant/kv_format.h"

namespace kvq::calib {
namespace {

at::TensorOptions f64(at::Device device) {
  return at::TensorOptions().dtype(at::kDouble).device(device);
}

// Adds bincount(index, weights) to `into` (flat view), weights optional.
void add_bincount(at::Tensor& into, const at::Tensor& index, const at::Tensor& weights) {
  at::Tensor counts = at::bincount(index, weights, into.numel());
  into.view({-1}).add_(counts.to(at::kDouble));
}

}  // namespace

ChannelStats::ChannelStats(int64_t n_channels, int64_t n_bins, at::Device device)
    : n_channels_(n_channels), n_bins_(n_bins) {
  KVQ_CHECK(n_channels > 0 && n_bins > 0, "{} channels, {} bins", n_channels, n_bins);
  const double inf = std::numeric_limits<double>::infinity();
  min = at::full({n_channels}, inf, f64(device));
  max = at::full({n_channels}, -inf, f64(device));
  count = at::zeros({n_channels, n_bins}, f64(device));
  fisher = at::zeros({n_channels, n_bins}, f64(device));
  sum = at::zeros({n_channels}, f64(device));
  sum_sq = at::zeros({n_channels}, f64(device));
  fisher_sum = at::zeros({n_channels}, f64(device));
}

void ChannelStats::observe_range(const at::Tensor& x) {
  const at::Tensor xd = x.to(at::kDouble);
  min = at::minimum(min, std::get<0>(xd.min(0)));
  max = at::maximum(max, std::get<0>(xd.max(0)));
}

void ChannelStats::finish_ranges() {
  if (!at::isfinite(min).all().item<bool>() || !at::isfinite(max).all().item<bool>()) {
    fail("calibration: a channel's range is not finite (no tokens, or NaN/Inf activations)");
  }
  width = (max - min) / static_cast<double>(n_bins_);
  width = at::where(width > 0, width, at::ones_like(width));
}

void ChannelStats::accumulate(const at::Tensor& x, const at::Tensor& fisher_in) {
  KVQ_CHECK(width.defined(), "finish_ranges() before accumulate()");
  KVQ_CHECK(x.dim() == 2 && x.size(1) == n_channels_ && fisher_in.sizes() == x.sizes(),
            "x [{}] fisher [{}]", fmt::join(x.sizes(), ", "), fmt::join(fisher_in.sizes(), ", "));
  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor fd = fisher_in.to(at::kDouble);
  at::Tensor bin =
      ((xd - min) / width).floor().clamp(0, static_cast<double>(n_bins_ - 1)).to(at::kLong);
  bin = bin + at::arange(n_channels_, bin.options()).mul(n_bins_);
  const at::Tensor flat = bin.reshape({-1});
  add_bincount(count, flat, at::Tensor());
  add_bincount(fisher, flat, fd.reshape({-1}));
  sum.add_(xd.sum(0));
  sum_sq.add_(xd.pow(2).sum(0));
  fisher_sum.add_(fd.sum(0));
  n_tokens_ += x.size(0);
}

void ChannelStats::to_cpu() {
  for (at::Tensor* t : {&min, &max, &width, &count, &fisher, &sum, &sum_sq, &fisher_sum}) {
    *t = t->to(at::kCPU).contiguous();
  }
}

at::Tensor channel_thresholds(const ChannelStats& s, double fraction) {
  at::Tensor out = at::empty({2, s.n_channels()}, at::kDouble);
  const at::Tensor mins = s.min.to(at::kCPU).contiguous(), maxs = s.max.to(at::kCPU).contiguous();
  const at::Tensor widths = s.width.to(at::kCPU).contiguous();
  const at::Tensor counts = s.count.to(at::kCPU).contiguous();
  const double* min_of = mins.data_ptr<double>();
  const double* max_of = maxs.data_ptr<double>();
  const double* width_of = widths.data_ptr<double>();
  double* lo_out = out.data_ptr<double>();
  double* hi_out = lo_out + s.n_channels();
  const int64_t k = quant::outliers_per_side(s.n_tokens(), fraction);
  const double* c_all = counts.data_ptr<double>();
  for (int64_t c = 0; c < s.n_channels(); ++c) {
    const double lo_edge = min_of[c], hi_edge = max_of[c];
    const double w = width_of[c];
    const double* hist = c_all + c * s.n_bins();
    double lo = lo_edge, hi = hi_edge;
    if (k > 0) {
      // The (k+1)-th value from each end, assuming values spread evenly within a bin.
      double below = 0.0;
      for (int64_t b = 0; b < s.n_bins(); ++b) {
        if (below + hist[b] > static_cast<double>(k)) {
          lo = lo_edge + w * (static_cast<double>(b) + (k - below + 0.5) / hist[b]);
          break;
        }
        below += hist[b];
      }
      double above = 0.0;
      for (int64_t b = s.n_bins() - 1; b >= 0; --b) {
        if (above + hist[b] > static_cast<double>(k)) {
          hi = lo_edge + w * (static_cast<double>(b + 1) - (k - above + 0.5) / hist[b]);
          break;
        }
        above += hist[b];
      }
      lo = std::clamp(lo, lo_edge, hi_edge);
      hi = std::clamp(hi, lo, hi_edge);
    }
    lo_out[c] = lo;
    hi_out[c] = hi;
  }
  return out;
}

VectorStats::VectorStats(std::vector<double> fractions, int64_t vector_length, int64_t n_bins,
                         at::Device device)
    : fractions_(std::move(fractions)), vector_length_(vector_length), n_bins_(n_bins) {
  const int64_t n_f = static_cast<int64_t>(fractions_.size());
  for (double f : fractions_) quant::outliers_per_side(vector_length_, f);  // validates f early
  count = at::zeros({n_f, n_bins}, f64(device));
  fisher = at::zeros({n_f, n_bins}, f64(device));
  n_outliers = at::zeros({n_f}, f64(device));
  range_min = at::full({n_f}, std::numeric_limits<double>::infinity(), f64(device));
  range_max = at::zeros({n_f}, f64(device));
  range_sum = at::zeros({n_f}, f64(device));
}

void VectorStats::accumulate(const at::Tensor& x, const at::Tensor& fisher_in) {
  KVQ_CHECK(x.dim() == 2 && x.size(1) % vector_length_ == 0 && fisher_in.sizes() == x.sizes(),
            "x [{}]", fmt::join(x.sizes(), ", "));
  // Float, as kv_format.h's reference computes the per-vector offset and scale.
  const at::Tensor xv = x.to(at::kFloat).reshape({-1, vector_length_});
  const at::Tensor fv = fisher_in.to(at::kDouble).reshape({-1, vector_length_});
  const at::Tensor sorted = std::get<0>(xv.sort(-1));
  for (size_t i = 0; i < fractions_.size(); ++i) {
    const int64_t k = quant::outliers_per_side(vector_length_, fractions_[i]);
    const at::Tensor lo = sorted.select(-1, k).unsqueeze(-1);
    const at::Tensor hi = sorted.select(-1, vector_length_ - 1 - k).unsqueeze(-1);
    const at::Tensor offset = ((lo + hi) * 0.5f).to(at::kHalf).to(at::kFloat);
    const at::Tensor scale = ((hi - lo) * 0.5f).to(at::kHalf).to(at::kFloat);
    const at::Tensor dense = (xv >= lo) & (xv <= hi);
    at::Tensor xn = at::where(scale > 0, (xv - offset) / scale, at::zeros_like(xv));
    const at::Tensor bin = ((xn.to(at::kDouble) + 1.0) * (0.5 * n_bins_))
                               .floor()
                               .clamp(0, static_cast<double>(n_bins_ - 1))
                               .to(at::kLong);
    const at::Tensor idx = bin.masked_select(dense);
    at::Tensor row_c = count[i], row_f = fisher[i];
    add_bincount(row_c, idx, at::Tensor());
    add_bincount(row_f, idx, fv.masked_select(dense));
    n_outliers[i] += (xv.numel() - idx.numel());
    const at::Tensor range = (hi - lo).to(at::kDouble);
    range_min[i] = at::minimum(range_min[i], range.min());
    range_max[i] = at::maximum(range_max[i], range.max());
    range_sum[i] += range.sum();
  }
  n_vectors += xv.size(0);
}

void VectorStats::to_cpu() {
  for (at::Tensor* t : {&count, &fisher, &n_outliers, &range_min, &range_max, &range_sum}) {
    *t = t->to(at::kCPU).contiguous();
  }
}

TokenSample::TokenSample(int64_t capacity, uint64_t seed) : capacity_(capacity), rng_(seed) {
  KVQ_CHECK(capacity >= 0, "capacity {}", capacity);
}

void TokenSample::offer(const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& kf_in,
                        const at::Tensor& vf_in, int64_t start_pos) {
  if (capacity_ == 0) return;
  // Draw the slots first, then move only the chosen rows off the device: a whole sequence's
  // activations of a 7B model are 128 MB per layer, of which a handful of rows are kept.
  std::vector<int64_t> row_of_slot(capacity_, -1);  // the last row drawn into each slot
  for (int64_t t = 0; t < k_in.size(0); ++t) {
    int64_t slot = -1;
    if (seen_ < capacity_) {
      slot = seen_;
      positions.push_back(start_pos + t);
    } else {
      const int64_t r = static_cast<int64_t>(rng_() % static_cast<uint64_t>(seen_ + 1));
      if (r < capacity_) {
        slot = r;
        positions[r] = start_pos + t;
      }
    }
    ++seen_;
    if (slot >= 0) row_of_slot[slot] = t;
  }
  std::vector<int64_t> rows, slots;
  for (int64_t slot = 0; slot < capacity_; ++slot) {
    if (row_of_slot[slot] >= 0) {
      rows.push_back(row_of_slot[slot]);
      slots.push_back(slot);
    }
  }
  at::Tensor* dst[4] = {&k, &v, &k_fisher, &v_fisher};
  const at::Tensor* src[4] = {&k_in, &v_in, &kf_in, &vf_in};
  if (!k.defined()) {
    for (int i = 0; i < 4; ++i) *dst[i] = at::zeros({capacity_, src[i]->size(1)}, at::kFloat);
  }
  if (rows.empty()) return;
  const at::Tensor row_index = at::tensor(rows, at::kLong).to(k_in.device());
  const at::Tensor slot_index = at::tensor(slots, at::kLong);
  for (int i = 0; i < 4; ++i) {
    dst[i]->index_copy_(0, slot_index, src[i]->index_select(0, row_index).to(at::kCPU, at::kFloat));
  }
}

}  // namespace kvq::calib
