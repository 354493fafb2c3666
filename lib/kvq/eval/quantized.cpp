#include "kvq/eval/quantized.h"

#include "kvq/common/error.h"
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
  return {mask, mask};
}

MethodResult evaluate_method(const model::LlamaModel& model, const std::vector<int32_t>& tokens,
                             const methods::Quantizer& q, const PerplexityOptions& options) {
  const auto& c = model.config();
  QuantizedKV hook(q, model.device());
  MethodResult r;
  r.method = q.label();
  PerplexityOptions o = options;
  o.label = "eval " + r.method;
  r.ppl =
      perplexity(model, tokens, o, q.spec().kind == methods::MethodKind::kFp16 ? nullptr : &hook);
  r.keys = hook.keys;
  r.values = hook.values;
  r.bits_per_element = methods::bits_per_element(q, c.n_layers, c.n_kv_heads, c.head_dim,
                                                 r.ppl.seq_len, hook.keys, hook.values);
  return r;
}

}  // namespace kvq::eval
