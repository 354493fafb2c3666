#include "kvq/model/llama.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/ranges.h>

#include "kvq/common/error.h"
#include "kvq/model/io/checkpoint.h"
#include "kvq/model/weights.h"
#include "kvq/quant/rope.h"

namespace kvq::model {
namespace {

// RoPE rows computed when a model loads (8192 x head_dim x 2 floats: 8 MiB at head_dim 128).
constexpr int64_t kInitialRopeRows = 8192;

}  // namespace

LlamaModel LlamaModel::load(const std::string& path, const LoadOptions& options) {
  if (options.dtype == at::kHalf && options.device.is_cpu()) {
    // LibTorch 1.13 has no fp16 matrix product on the CPU; say so before loading anything.
    try {
      at::linear(at::ones({1, 1}, at::kHalf), at::ones({1, 1}, at::kHalf));
    } catch (const std::exception&) {
      fail(
          "--dtype fp16: this LibTorch cannot run fp16 on the CPU; use bf16, fp32 or --device "
          "cuda");
    }
  }
  Checkpoint ckpt = open_checkpoint(path);
  Weights weights = load_weights(ckpt, options);
  return LlamaModel(ckpt.config, std::move(weights), path);
}

LlamaModel::LlamaModel(ModelConfig config, Weights weights, std::string source)
    : config_(std::move(config)), weights_(std::move(weights)), source_(std::move(source)) {
  if (weights_.checksum.empty()) weights_.checksum = weights_checksum(weights_);
  // The first rows now, so a short context never waits on the table later.
  rope_rows(std::min<int64_t>(config_.max_seq_len, kInitialRopeRows));
}

std::pair<at::Tensor, at::Tensor> LlamaModel::rope_rows(int64_t rows) const {
  rows = std::min(rows, config_.max_seq_len);
  std::lock_guard<std::mutex> lock(rope_->mutex);
  const int64_t have = rope_->cos.defined() ? rope_->cos.size(0) : 0;
  if (have < rows) {
    const int64_t n = std::min(config_.max_seq_len, std::max(rows, 2 * have));
    at::Tensor positions = at::arange(n, at::kFloat);
    const std::vector<float> inv_freq =
        quant::rope_inv_freq(config_.rope_theta, config_.head_dim, config_.rope_scaling);
    at::Tensor freqs =
        at::outer(positions, at::tensor(at::ArrayRef<float>(inv_freq)));  // [n, head_dim / 2]
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    rope_->cos = emb.cos().to(device());
    rope_->sin = emb.sin().to(device());
  }
  return {rope_->cos, rope_->sin};
}

at::Tensor LlamaModel::rms_norm(const at::Tensor& x, const at::Tensor& weight) const {
  at::Tensor h = x.to(accumulate_type(x.scalar_type()));
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + config_.norm_eps);
  return weight * h.to(x.scalar_type());
}

at::Tensor LlamaModel::apply_rope(const at::Tensor& x, int64_t start_pos) const {
  const int64_t t = x.size(2), half = config_.head_dim / 2;
  const auto [cos_rows, sin_rows] = rope_rows(start_pos + t);
  at::Tensor cos = cos_rows.narrow(0, start_pos, t).to(x.scalar_type());
  at::Tensor sin = sin_rows.narrow(0, start_pos, t).to(x.scalar_type());
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

at::Tensor LlamaModel::apply_rope_at(const at::Tensor& x, const at::Tensor& positions,
                                     int64_t end) const {
  const int64_t half = config_.head_dim / 2;
  const int64_t rows = end >= 0                 ? end
                       : positions.numel() == 0 ? 0
                                                : positions.max().item<int64_t>() + 1;
  const auto [cos_rows, sin_rows] = rope_rows(rows);
  const at::Tensor pos = positions.to(cos_rows.device(), at::kLong);
  // [b, t, d] -> [b, 1, t, d], broadcast over the heads.
  at::Tensor cos =
      cos_rows.index_select(0, pos.reshape({-1})).view({pos.size(0), 1, pos.size(1), -1});
  at::Tensor sin =
      sin_rows.index_select(0, pos.reshape({-1})).view({pos.size(0), 1, pos.size(1), -1});
  cos = cos.to(x.device(), x.scalar_type());
  sin = sin.to(x.device(), x.scalar_type());
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

at::Tensor LlamaModel::forward_with(const at::Tensor& tokens, const AttentionFn& attend) const {
  const ModelConfig& c = config_;
  if (tokens.dim() != 2 || tokens.size(1) == 0) {
    fail("forward: tokens must be a non-empty [batch, seq], found {}",
         fmt::join(tokens.sizes(), "x"));
  }
  const int64_t b = tokens.size(0), t = tokens.size(1);
  at::Tensor x = weights_.embed.index_select(0, tokens.to(device(), at::kLong).reshape({-1}))
                     .view({b, t, c.dim});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const LayerWeights& l = weights_.layers[i];
    at::Tensor h = rms_norm(x, l.attn_norm);
    const at::Tensor q = at::linear(h, l.wq).view({b, t, c.n_heads, c.head_dim});
    const at::Tensor k = at::linear(h, l.wk).view({b, t, c.n_kv_heads, c.head_dim});
    const at::Tensor v = at::linear(h, l.wv).view({b, t, c.n_kv_heads, c.head_dim});
    const at::Tensor attn = attend(i, q, k, v);
    if (attn.dim() != 3 || attn.size(0) != b || attn.size(1) != t || attn.size(2) != c.q_dim()) {
      fail("attention at layer {}: returned {}, expected [{}, {}, {}]", i,
           fmt::join(attn.sizes(), "x"), b, t, c.q_dim());
    }
    x = x + at::linear(attn.to(x.scalar_type()), l.wo);
    h = rms_norm(x, l.ffn_norm);
    x = x + at::linear(at::silu(at::linear(h, l.w_gate)) * at::linear(h, l.w_up), l.w_down);
  }
  return at::linear(rms_norm(x, weights_.norm), weights_.lm_head).to(accumulate_type(dtype()));
}

at::Tensor LlamaModel::attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const KVView& view, const at::Tensor& k_full,
                                 const at::Tensor& v_full) const {
  const ModelConfig& c = config_;
  const int64_t b = q.size(0), t = q.size(2), n = k.size(2);
  const int64_t group = c.n_heads / c.n_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  // GQA: query head j reads KV head j / group; grouping the queries avoids copying K and V.
  const at::Tensor qg = q.reshape({b, c.n_kv_heads, group * t, c.head_dim});
  auto scores_of = [&](const at::Tensor& keys) {
    return at::matmul(qg, keys.transpose(-1, -2)).mul(scale).view({b, c.n_kv_heads, group, t, n});
  };
  at::Tensor scores = scores_of(k);
  // Queries see the keys still in their full-precision window unquantized.
  if (view.key_quantized.defined())
    scores = at::where(view.key_quantized, scores, scores_of(k_full));
  if (view.key_valid.defined()) {
    scores = scores.masked_fill(view.key_valid.logical_not().view({b, 1, 1, 1, n}),
                                -std::numeric_limits<float>::infinity());
  }
  if (t > 1) {  // causal: query i sees keys 0 .. n - t + i
    const at::Tensor hidden =
        at::ones({t, n}, at::TensorOptions().dtype(at::kBool).device(q.device())).triu(n - t + 1);
    scores = scores.masked_fill(hidden, -std::numeric_limits<float>::infinity());
  }
  const at::Tensor probs =
      at::softmax(scores, -1, accumulate_type(q.scalar_type())).to(q.scalar_type());
  auto weighted = [&](const at::Tensor& p, const at::Tensor& values) {
    return at::matmul(p.view({b, c.n_kv_heads, group * t, n}), values);
  };
  at::Tensor attn;
  if (view.value_quantized.defined()) {
    const at::Tensor zero = at::zeros({}, probs.options());
    attn = weighted(at::where(view.value_quantized, probs, zero), v) +
           weighted(at::where(view.value_quantized, zero, probs), v_full);
  } else {
    attn = weighted(probs, v);
  }
  return attn.view({b, c.n_heads, t, c.head_dim}).transpose(1, 2).reshape({b, t, c.q_dim()});
}

at::Tensor LlamaModel::forward(const at::Tensor& tokens, KVHook* hook, KVCache* cache) const {
  const ModelConfig& c = config_;
  if (tokens.dim() != 2) fail("forward: tokens must be [batch, seq], found {} dims", tokens.dim());
  const int64_t b = tokens.size(0), t = tokens.size(1);
  const int64_t start = cache ? cache->length : 0;
  if (t == 0) fail("forward: empty token sequence");
  if (start + t > c.max_seq_len) {
    fail("{}: positions {}..{} exceed the model's context of {} tokens", source_, start,
         start + t - 1, c.max_seq_len);
  }
  if (cache && cache->k.empty()) {
    cache->k.resize(c.n_layers);
    cache->v.resize(c.n_layers);
  }
  at::Tensor x = weights_.embed.index_select(0, tokens.to(device(), at::kLong).reshape({-1}))
                     .view({b, t, c.dim});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const LayerWeights& l = weights_.layers[i];
    at::Tensor h = rms_norm(x, l.attn_norm);
    at::Tensor q = at::linear(h, l.wq).view({b, t, c.n_heads, c.head_dim});
    at::Tensor k = at::linear(h, l.wk).view({b, t, c.n_kv_heads, c.head_dim});
    at::Tensor v = at::linear(h, l.wv).view({b, t, c.n_kv_heads, c.head_dim});
    const at::Tensor k_in = k, v_in = v;
    KVView view;
    if (hook) {
      hook->on_kv(i, k, v);
      if (k.sizes() != v.sizes() || k.size(0) != b || k.size(1) != t || k.size(2) != c.n_kv_heads ||
          k.size(3) != c.head_dim) {
        fail("KV hook at layer {}: returned K/V of shape {} / {}, expected [{}, {}, {}, {}]", i,
             fmt::join(k.sizes(), "x"), fmt::join(v.sizes(), "x"), b, t, c.n_kv_heads, c.head_dim);
      }
      view = hook->view(i, start, t);
      if ((view.key_quantized.defined() || view.value_quantized.defined()) && cache) {
        fail("KV hook at layer {}: per-query full-precision windows need a forward without a cache",
             i);
      }
    }
    q = apply_rope(q.transpose(1, 2), start);  // [b, n_heads, t, d]
    k = apply_rope(k.transpose(1, 2), start);  // [b, n_kv_heads, t, d]
    v = v.transpose(1, 2);
    if (hook) hook->on_k_rope(i, k);
    if (cache) {
      if (start > 0) {
        k = at::cat({cache->k[i], k}, 2);
        v = at::cat({cache->v[i], v}, 2);
      }
      cache->k[i] = k;
      cache->v[i] = v;
    }
    const at::Tensor attn = attention(
        q, k, v, view,
        view.key_quantized.defined() ? apply_rope(k_in.transpose(1, 2), start) : at::Tensor(),
        view.value_quantized.defined() ? v_in.transpose(1, 2) : at::Tensor());
    x = x + at::linear(attn, l.wo);
    h = rms_norm(x, l.ffn_norm);
    x = x + at::linear(at::silu(at::linear(h, l.w_gate)) * at::linear(h, l.w_up), l.w_down);
  }
  if (cache) cache->length = start + t;
  return at::linear(rms_norm(x, weights_.norm), weights_.lm_head).to(accumulate_type(dtype()));
}

std::vector<int32_t> LlamaModel::generate_greedy(const std::vector<int32_t>& prompt, int64_t n_new,
                                                 bool stop_at_eos) const {
  if (prompt.empty()) fail("generate: the prompt has no tokens");
  if (static_cast<int64_t>(prompt.size()) + n_new > config_.max_seq_len) {
    fail("generate: prompt ({} tokens) + {} new tokens exceed the model's context of {} tokens",
         prompt.size(), n_new, config_.max_seq_len);
  }
  c10::NoGradGuard no_grad;
  KVCache cache;
  std::vector<int64_t> ids(prompt.begin(), prompt.end());
  at::Tensor input = at::tensor(ids, at::kLong).view({1, -1});
  std::vector<int32_t> out;
  for (int64_t i = 0; i < n_new; ++i) {
    at::Tensor logits = forward(input, nullptr, &cache);
    const int32_t next = static_cast<int32_t>(logits[0][-1].argmax().item<int64_t>());
    out.push_back(next);
    if (stop_at_eos && next == config_.eos_id) break;
    input = at::full({1, 1}, next, at::kLong);
  }
  return out;
}

at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& tokens) {
  const int64_t t = logits.size(1);
  at::Tensor pred = logits.narrow(1, 0, t - 1).reshape({-1, logits.size(2)});
  pred = pred.to(accumulate_type(pred.scalar_type()));
  at::Tensor target = tokens.to(logits.device(), at::kLong).narrow(1, 1, t - 1).reshape({-1});
  return at::cross_entropy_loss(pred, target);
}

at::ScalarType parse_dtype(const std::string& name, const std::string& where) {
  if (name == "fp32" || name == "float32") return at::kFloat;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "fp16" || name == "float16") return at::kHalf;
  fail("{}: expected fp32, bf16 or fp16, found '{}'", where, name);
}

at::Device parse_device(const std::string& name, const std::string& where) {
  if (name == "cpu") return at::kCPU;
  if (name.rfind("cuda", 0) == 0) {
    if (!at::hasCUDA()) {
      fail(
          "{}: '{}' asked for, but this kvq was built against a LibTorch without CUDA or no GPU "
          "is visible",
          where, name);
    }
    try {
      return at::Device(name);
    } catch (const std::exception&) {
      fail("{}: expected cpu, cuda or cuda:N, found '{}'", where, name);
    }
  }
  fail("{}: expected cpu, cuda or cuda:N, found '{}'", where, name);
}

}  // namespace kvq::model
