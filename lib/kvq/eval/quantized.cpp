#include "kvq/eval/quantized.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "kvq/common/error.h"
#include "kvq/common/progress.h"
#include "kvq/data/text.h"
#include "kvq/methods/bits.h"

namespace kvq::eval {
namespace {

// x [b, t, heads, d] quantized: the first n_sink tokens go back to their fp16 originals.
at::Tensor restore_sinks(const at::Tensor& quantized, const at::Tensor& original, int64_t n_sink) {
  const int64_t s = std::min(n_sink, original.size(1));
  if (s <= 0) return quantized;
  at::Tensor out = quantized.clone();
  out.narrow(1, 0, s).copy_(original.narrow(1, 0, s));
  return out;
}

}  // namespace

bool has_window(const quant::KvCacheFormat& format) {
  return format.quantizes() && (format.n_recent > 0 || format.flush > 1);
}

at::Tensor quantized_mask(const quant::KvCacheFormat& format, int64_t start, int64_t t,
                          at::Device device) {
  if (!has_window(format)) return {};
  std::vector<int64_t> bound(t);
  for (int64_t i = 0; i < t; ++i) {
    const int64_t n = start + i + 1;  // cache length when query i attends
    bound[i] = format.n_sink + format.n_quantized(n);
  }
  const auto opt = at::TensorOptions().dtype(at::kLong);
  const at::Tensor j = at::arange(start + t, opt).unsqueeze(0);
  const at::Tensor b = at::tensor(bound, opt).unsqueeze(1);
  return ((j >= format.n_sink) & (j < b)).to(device);
}

void QuantizedKV::on_kv(int64_t layer, at::Tensor& k, at::Tensor& v) {
  const methods::MethodSpec& spec = q_.spec();
  if (spec.kind == methods::MethodKind::kFp16) return;
  if (!spec.post_rope) k = restore_sinks(q_.quantize_keys(layer, k, &keys), k, spec.n_sink);
  v = restore_sinks(q_.quantize_values(layer, v, &values), v, spec.n_sink);
}

void QuantizedKV::on_k_rope(int64_t layer, at::Tensor& k) {
  const methods::MethodSpec& spec = q_.spec();
  if (spec.kind == methods::MethodKind::kFp16 || !spec.post_rope) return;
  const at::Tensor tokens_major = k.transpose(1, 2);  // [b, t, heads, d]
  k = restore_sinks(q_.quantize_keys(layer, tokens_major, &keys), tokens_major, spec.n_sink)
          .transpose(1, 2);
}

model::KVView QuantizedKV::view(int64_t layer, int64_t start, int64_t t) {
  const quant::KvCacheFormat format = q_.kv_format(layer);
  if (!has_window(format)) return {};
  at::Tensor& mask = masks_[{start, t}];  // the window does not depend on the layer
  if (!mask.defined()) mask = quantized_mask(format, start, t, device_);
  model::KVView view;
  view.key_quantized = mask;
  view.value_quantized = mask;
  return view;
}

std::vector<MethodResult> evaluate_methods(const model::LlamaModel& model,
                                           const std::vector<int32_t>& tokens,
                                           const std::vector<methods::Quantizer>& qs,
                                           const PerplexityOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto& c = model.config();
  const int64_t seq_len = data::window_length(c.max_seq_len, options.seq_len, model.source());
  const std::vector<data::Window> windows =
      data::eval_windows(static_cast<int64_t>(tokens.size()), seq_len, "--data");
  const int64_t batch = windows_per_batch(options, seq_len);
  const auto is_fp16 = [](const methods::Quantizer& q) {
    return q.spec().kind == methods::MethodKind::kFp16;
  };
  // Hooks live for the whole run: they count what they quantized over all windows.
  std::vector<std::unique_ptr<QuantizedKV>> hooks;
  for (const methods::Quantizer& q : qs)
    hooks.push_back(std::make_unique<QuantizedKV>(q, model.device()));
  const int64_t n_forwards =
      1 + static_cast<int64_t>(
              std::count_if(qs.begin(), qs.end(), [&](const auto& q) { return !is_fp16(q); }));
  std::vector<TokenAgreement> agreement(qs.size());
  std::vector<double> seconds(qs.size(), 0.0);

  c10::InferenceMode inference;
  Progress progress(options.label, static_cast<int64_t>(windows.size()) * seq_len * n_forwards,
                    "tok", !options.progress);
  for (size_t w = 0; w < windows.size(); w += batch) {
    const int64_t n = std::min<int64_t>(batch, static_cast<int64_t>(windows.size() - w));
    const at::Tensor input = window_batch(tokens, windows, w, n, seq_len, model.device());
    // Scoring ends in a host transfer, so on a GPU each time includes the work it waited for.
    const auto scored = [&](const at::Tensor& logits, const at::Tensor& ref,
                            const std::string& method) {
      try {
        return score_next_tokens(logits, ref, input);
      } catch (const Error& e) {
        fail("eval: {} in windows {}..{} of {} {}", e.what(), w, w + n - 1, options.label, method);
      }
    };
    auto start = Clock::now();
    const at::Tensor ref = model.forward(input, nullptr);
    const TokenAgreement ref_agreement = scored(ref, ref, "fp16");
    const double ref_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    progress.advance(n * seq_len);
    for (size_t i = 0; i < qs.size(); ++i) {
      if (is_fp16(qs[i])) {
        agreement[i].add(ref_agreement);
        seconds[i] += ref_seconds;
        continue;
      }
      start = Clock::now();
      const at::Tensor logits = model.forward(input, hooks[i].get());
      agreement[i].add(scored(logits, ref, qs[i].label()));
      seconds[i] += std::chrono::duration<double>(Clock::now() - start).count();
      progress.advance(n * seq_len);
    }
  }
  progress.finish();

  std::vector<MethodResult> out;
  for (size_t i = 0; i < qs.size(); ++i) {
    MethodResult r;
    r.method = qs[i].label();
    r.agreement = agreement[i];
    PerplexityResult& p = r.ppl;
    p.n_tokens = static_cast<int64_t>(tokens.size());
    p.seq_len = seq_len;
    p.n_windows = static_cast<int64_t>(windows.size());
    p.n_scored = agreement[i].n;
    p.mean_loss = agreement[i].mean_loss();
    p.ppl = std::exp(p.mean_loss);
    p.seconds = seconds[i];
    p.tokens_per_s = seconds[i] > 0 ? static_cast<double>(p.n_windows * seq_len) / seconds[i] : 0;
    r.keys = hooks[i]->keys;
    r.values = hooks[i]->values;
    r.bits_per_element = methods::bits_per_element(qs[i], c.n_layers, c.n_kv_heads, c.head_dim,
                                                   seq_len, r.keys, r.values);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace kvq::eval
