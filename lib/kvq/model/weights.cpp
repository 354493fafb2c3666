#include "kvq/model/weights.h"

#include <cstring>

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/common/hash.h"

namespace kvq::model {
namespace {

at::ScalarType scalar_type(DType dtype) {
  switch (dtype) {
    case DType::F64: return at::kDouble;
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::Bool: return at::kBool;
  }
  KVQ_CHECK(false, "unhandled dtype {}", static_cast<int>(dtype));
}

}  // namespace

at::Tensor tensor_from_view(const TensorView& view) {
  at::Tensor t = at::empty(view.shape, at::TensorOptions().dtype(scalar_type(view.dtype)));
  KVQ_CHECK(static_cast<size_t>(t.nbytes()) == view.n_bytes, "{}: {} vs {} bytes", view.name,
            t.nbytes(), view.n_bytes);
  std::memcpy(t.data_ptr(), view.data, view.n_bytes);  // views may be unaligned: copy bytes
  return t;
}

at::Tensor deinterleave_rope_rows(const at::Tensor& w, int64_t n_heads, int64_t head_dim) {
  const int64_t in = w.size(1);
  // llama2.c row h*hd + 2j + half  ->  rotate-half row h*hd + half*(hd/2) + j
  return w.view({n_heads, head_dim / 2, 2, in}).transpose(1, 2).reshape({n_heads * head_dim, in});
}

void add_to_checksum(Checksum64& sum, const at::Tensor& t) {
  const at::Tensor f = t.to(at::kCPU, at::kFloat).contiguous();
  sum.update(f.data_ptr(), static_cast<size_t>(f.nbytes()));
}

std::string weights_checksum(const Weights& w) {
  Checksum64 sum;
  add_to_checksum(sum, w.embed);
  for (const LayerWeights& l : w.layers) {
    for (const at::Tensor* t :
         {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      add_to_checksum(sum, *t);
    }
  }
  add_to_checksum(sum, w.norm);
  if (!w.lm_head.is_same(w.embed)) add_to_checksum(sum, w.lm_head);
  return sum.hex();
}

Weights load_weights(const Checkpoint& ckpt, const LoadOptions& options) {
  const ModelConfig& c = ckpt.config;
  // The checksum covers the weights as the file holds them, widened to fp32 (exact for bf16 and
  // fp16) in the runner's layout: one value per model whatever the file format or load dtype.
  Checksum64 sum;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) {
    return tensor_from_view(ckpt.require(name, shape));
  };
  auto to_device = [&](const at::Tensor& t) {
    add_to_checksum(sum, t);
    return t.to(options.device, options.dtype).contiguous();
  };

  Weights w;
  w.embed = to_device(get("model.embed_tokens.weight", {c.vocab_size, c.dim}));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights l;
    l.attn_norm = to_device(get(p + "input_layernorm.weight", {c.dim}));
    at::Tensor wq = get(p + "self_attn.q_proj.weight", {c.q_dim(), c.dim});
    at::Tensor wk = get(p + "self_attn.k_proj.weight", {c.kv_dim(), c.dim});
    if (ckpt.rope_interleaved) {
      wq = deinterleave_rope_rows(wq, c.n_heads, c.head_dim);
      wk = deinterleave_rope_rows(wk, c.n_kv_heads, c.head_dim);
    }
    l.wq = to_device(wq);
    l.wk = to_device(wk);
    l.wv = to_device(get(p + "self_attn.v_proj.weight", {c.kv_dim(), c.dim}));
    l.wo = to_device(get(p + "self_attn.o_proj.weight", {c.dim, c.q_dim()}));
    l.ffn_norm = to_device(get(p + "post_attention_layernorm.weight", {c.dim}));
    l.w_gate = to_device(get(p + "mlp.gate_proj.weight", {c.ffn_dim, c.dim}));
    l.w_up = to_device(get(p + "mlp.up_proj.weight", {c.ffn_dim, c.dim}));
    l.w_down = to_device(get(p + "mlp.down_proj.weight", {c.dim, c.ffn_dim}));
    w.layers.push_back(std::move(l));
  }
  w.norm = to_device(get("model.norm.weight", {c.dim}));
  w.lm_head = c.tie_embeddings ? w.embed : to_device(get("lm_head.weight", {c.vocab_size, c.dim}));
  w.checksum = sum.hex();
  return w;
}

}  // namespace kvq::model
