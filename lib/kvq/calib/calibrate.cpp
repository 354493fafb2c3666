#include "kvq/calib/calibrate.h"

#include <algorithm>
#include <chrono>
#include <tuple>

#include "kvq/artifact/calib_file.h"
#include "kvq/calib/fisher.h"
#include "kvq/common/error.h"
#include "kvq/common/memory.h"
#include "kvq/common/progress.h"

#ifdef KVQ_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace kvq::calib {
namespace {

void reset_device_peak(const at::Device& device) {
#ifdef KVQ_TORCH_CUDA
  if (device.is_cuda())
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#else
  (void)device;
#endif
}

int64_t device_peak_bytes(const at::Device& device) {
#ifdef KVQ_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats =
        c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.reserved_bytes[0].peak;  // index 0: StatType::AGGREGATE
  }
#else
  (void)device;
#endif
  return -1;
}

// Post-RoPE view of [t, n_kv * hd] rows at positions 0..t-1, through the model's own RoPE.
at::Tensor rope_rows(const model::LlamaModel& m, const at::Tensor& x) {
  const auto& c = m.config();
  const int64_t t = x.size(0);
  at::Tensor heads = x.view({1, t, c.n_kv_heads, c.head_dim}).transpose(1, 2);
  return m.apply_rope(heads, 0).transpose(1, 2).reshape({t, c.n_kv_heads * c.head_dim});
}

// Pass 1: ranges of every layer's keys (pre and post RoPE) and values, without gradients.
class RangeHook : public model::KVHook {
 public:
  RangeHook(const model::LlamaModel& m, std::vector<LayerCalib>& layers) : m_(m), layers_(layers) {}
  void on_kv(int64_t layer, at::Tensor& k, at::Tensor& v) override {
    const int64_t t = k.size(1);
    const at::Tensor kf = k.reshape({t, -1}).to(at::kFloat), vf = v.reshape({t, -1}).to(at::kFloat);
    if (!at::isfinite(kf).all().item<bool>() || !at::isfinite(vf).all().item<bool>()) {
      fail("layer {}: Keys or Values are not finite (overflow in {}? try --dtype fp32 or bf16)",
           layer, c10::toString(m_.dtype()));
    }
    LayerCalib& l = layers_[layer];
    l.key.observe_range(kf);
    l.key_post.observe_range(rope_rows(m_, kf));
    l.value.observe_range(vf);
  }

 private:
  const model::LlamaModel& m_;
  std::vector<LayerCalib>& layers_;
};

at::Tensor sequence_tokens(const std::vector<int32_t>& tokens, const data::Window& w) {
  at::Tensor t = at::empty({w.length}, at::kLong);
  std::copy(tokens.begin() + w.start, tokens.begin() + w.start + w.length, t.data_ptr<int64_t>());
  return t;
}

}  // namespace

void check_options(const CalibOptions& o) {
  const std::tuple<const char*, int64_t, int64_t, int64_t> sizes[] = {
      {"--samples", o.n_samples, 1, kMaxSamples},
      {"--key-bins", o.key_bins, 2, artifact::kMaxKeyBins},
      {"--value-bins", o.value_bins, 2, artifact::kMaxValueBins},
      {"--sample-tokens", o.sample_tokens, 0, INT64_MAX}};
  for (const auto& [flag, v, lo, hi] : sizes) {
    if (v >= lo && v <= hi) continue;
    if (hi == INT64_MAX) fail("{}: expected at least {}, found {}", flag, lo, v);
    fail("{}: expected {}..{}, found {}", flag, lo, hi, v);
  }
}

int64_t sequence_length(int64_t max_context, int64_t requested, const std::string& model_source,
                        const char* flag) {
  return data::window_length(max_context,
                             requested != 0 ? requested : std::min<int64_t>(2048, max_context),
                             model_source, flag);
}

CalibResult calibrate(const model::LlamaModel& model, const std::vector<int32_t>& tokens,
                      const CalibOptions& options) {
  const auto& c = model.config();
  CalibResult r;
  r.options = options;
  CalibOptions& o = r.options;
  check_options(o);
  o.seq_len = sequence_length(c.max_seq_len, o.seq_len, model.source());
  if (std::find(o.fractions.begin(), o.fractions.end(), 0.0) == o.fractions.end())
    o.fractions.push_back(0.0);
  std::sort(o.fractions.begin(), o.fractions.end());
  o.fractions.erase(std::unique(o.fractions.begin(), o.fractions.end()), o.fractions.end());
  r.sequences = data::sample_sequences(static_cast<int64_t>(tokens.size()), o.seq_len, o.n_samples,
                                       o.seed, "--data");

  const int64_t channels = c.n_kv_heads * c.head_dim;
  const int64_t sample_cap =
      std::min<int64_t>(o.sample_tokens, std::max<int64_t>(1, (int64_t{1} << 20) / channels));
  const at::Device dev = model.device();
  for (int64_t i = 0; i < c.n_layers; ++i) {
    r.layers.push_back(
        LayerCalib{ChannelStats(channels, o.key_bins, dev), ChannelStats(channels, o.key_bins, dev),
                   ChannelStats(channels, o.key_bins, dev),
                   VectorStats(o.fractions, channels, o.value_bins, dev),
                   VectorStats(o.fractions, c.head_dim, o.value_bins, dev),
                   TokenSample(sample_cap, o.seed + 0x9e3779b97f4a7c15ull * (i + 1))});
  }
  reset_device_peak(dev);
  const auto start = std::chrono::steady_clock::now();
  const int64_t n_tokens = o.n_samples * o.seq_len;
  {
    Progress progress("calibrate: ranges", n_tokens, "tok", !o.progress);
    c10::InferenceMode inference;
    RangeHook hook(model, r.layers);
    for (const data::Window& w : r.sequences) {
      model.forward(sequence_tokens(tokens, w).to(dev).unsqueeze(0), &hook);
      progress.advance(w.length);
    }
  }
  for (LayerCalib& l : r.layers) {
    l.key.finish_ranges();
    l.key_post.finish_ranges();
    l.value.finish_ranges();
  }
  double loss_sum = 0.0;
  {
    Progress progress("calibrate: fisher", n_tokens, "tok", !o.progress);
    for (const data::Window& w : r.sequences) {
      const KVGradients g = kv_gradients(model, sequence_tokens(tokens, w));
      loss_sum += g.loss;
      c10::NoGradGuard no_grad;
      for (int64_t i = 0; i < c.n_layers; ++i) {
        LayerCalib& l = r.layers[i];
        const at::Tensor fk = g.k_grad[i].square(), fv = g.v_grad[i].square();
        l.key.accumulate(g.k[i], fk);
        l.key_post.accumulate(rope_rows(model, g.k[i]), rope_rows(model, g.k_grad[i]).square());
        l.value.accumulate(g.v[i], fv);
        l.value_tokens.accumulate(g.v[i], fv);
        l.value_heads.accumulate(g.v[i], fv);
        l.sample.offer(g.k[i], g.v[i], fk, fv, 0);
      }
      progress.advance(w.length);
    }
  }
  const double n = static_cast<double>(o.n_samples);
  for (LayerCalib& l : r.layers) {
    for (ChannelStats* s : {&l.key, &l.key_post, &l.value}) {
      s->fisher.div_(n);
      s->fisher_sum.div_(n);
      s->to_cpu();
    }
    for (VectorStats* v : {&l.value_tokens, &l.value_heads}) {
      v->fisher.div_(n);
      v->to_cpu();
    }
  }
  r.mean_loss = loss_sum / n;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.tokens_per_s = r.seconds > 0 ? static_cast<double>(n_tokens) / r.seconds : 0.0;
  r.peak_rss_bytes = peak_rss_bytes();
  r.peak_device_bytes = device_peak_bytes(dev);
  return r;
}

}  // namespace kvq::calib
