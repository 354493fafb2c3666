// LlamaModel: a LLaMA-family decoder (RMSNorm, RoPE with optional Llama-3 scaling, MHA and GQA,
// SwiGLU, tied or separate output embedding) written directly on ATen tensors, so that every
// step the quantization work needs is visible: each layer's pre-RoPE Keys and Values pass
// through a KVHook that may record them, make them require gradients, or replace them.
//
// Numerics follow Hugging Face's LlamaForCausalLM: RMSNorm in fp32 then cast, softmax in fp32,
// cos/sin in fp32 cast to the compute dtype. Weights are held in the compute dtype (fp32, bf16
// or fp16) on one device. Not here: sliding-window attention, biases, tensor parallelism.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>  // c10::NoGradGuard (at::NoGradGuard is gone in LibTorch 2)
#include <c10/core/InferenceMode.h>

#include "kvq/model/io/config.h"

namespace kvq::model {

struct LayerWeights {
  at::Tensor attn_norm;  // [dim]
  at::Tensor wq;         // [n_heads * head_dim, dim], Hugging Face rotate-half row order
  at::Tensor wk;         // [n_kv_heads * head_dim, dim]
  at::Tensor wv;         // [n_kv_heads * head_dim, dim]
  at::Tensor wo;         // [dim, n_heads * head_dim]
  at::Tensor ffn_norm;   // [dim]
  at::Tensor w_gate;     // [ffn_dim, dim]
  at::Tensor w_up;       // [ffn_dim, dim]
  at::Tensor w_down;     // [dim, ffn_dim]
};

struct Weights {
  at::Tensor embed;  // [vocab, dim]
  std::vector<LayerWeights> layers;
  at::Tensor norm;     // [dim]
  at::Tensor lm_head;  // [vocab, dim]; the same tensor as embed when tied
  // Checksum64 (common/hash.h) of every tensor widened to fp32 in the order above (lm_head only
  // when not tied), in rotate-half layout: identifies the model across file formats and load
  // dtypes. Filled by the constructor when empty.
  std::string checksum;
};

// Which version of each cached key and value a query sees, for methods that keep recent tokens in
// full precision until they are quantized (KIVI's residual, SKVQ's window): [t_q, t_k] bool,
// true where query i (at position start + i) sees key/value j quantized. Undefined: every query
// sees what the hook returned. key_valid [b, t_k] bool: false hides key j from every query of
// row b (a batch of sequences of unequal lengths padded to one); undefined: every key is seen.
struct KVView {
  at::Tensor key_quantized;
  at::Tensor value_quantized;
  at::Tensor key_valid;
};

// Sees each layer's Keys before RoPE and Values, both [batch, seq, n_kv_heads, head_dim] in the
// compute dtype, in layer order during forward. Assigning to k or v substitutes what attention
// (and the cache) uses; the hook may also call requires_grad_() on them to take gradients.
class KVHook {
 public:
  virtual ~KVHook() = default;
  virtual void on_kv(int64_t layer, at::Tensor& k, at::Tensor& v) = 0;
  // The keys after RoPE, [batch, n_kv_heads, seq, head_dim]; assigning substitutes them (for
  // quantizing keys after RoPE).
  virtual void on_k_rope(int64_t /*layer*/, at::Tensor& /*k*/) {}
  // Called after on_kv for a forward of t queries from position `start` (no cache allowed when
  // the view is defined); full-precision keys are the ones on_kv received.
  virtual KVView view(int64_t /*layer*/, int64_t /*start*/, int64_t /*t*/) { return {}; }
};

// Decoding state: post-RoPE keys and values per layer, [batch, n_kv_heads, length, head_dim].
struct KVCache {
  std::vector<at::Tensor> k;
  std::vector<at::Tensor> v;
  int64_t length = 0;
};

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
};

class LlamaModel {
 public:
  // Opens a Hugging Face directory or a llama2.c .bin (see io/checkpoint.h), converts the
  // weights to the compute dtype on the device, and undoes llama2.c's interleaved q/k row order
  // so every model runs with the rotate-half RoPE layout (pre-RoPE Keys then come out in
  // Hugging Face channel order whatever the file format).
  static LlamaModel load(const std::string& path, const LoadOptions& options = {});
  LlamaModel(ModelConfig config, Weights weights, std::string source);

  const ModelConfig& config() const { return config_; }
  const std::string& source() const { return source_; }
  at::ScalarType dtype() const { return weights_.embed.scalar_type(); }
  at::Device device() const { return weights_.embed.device(); }
  const Weights& weights() const { return weights_; }

  // tokens: [batch, seq] int64 on any device. Positions start at cache->length (0 without a
  // cache). Returns logits [batch, seq, vocab] in fp32 (fp64 for an fp64 model). With a cache,
  // appends this step's keys and values to it. Throws kvq::Error if the positions would pass the
  // model's context.
  at::Tensor forward(const at::Tensor& tokens, KVHook* hook = nullptr,
                     KVCache* cache = nullptr) const;

  // Greedy decoding: `n_new` tokens after `prompt` (which must not be empty), stopping early at
  // EOS only if stop_at_eos.
  std::vector<int32_t> generate_greedy(const std::vector<int32_t>& prompt, int64_t n_new,
                                       bool stop_at_eos = false) const;

  // RoPE as the attention applies it: x [b, h, t, head_dim] at positions start_pos.., in x's
  // dtype. Also rotates gradients: RoPE is orthogonal, so dL/dk_post = R dL/dk_pre.
  at::Tensor apply_rope(const at::Tensor& x, int64_t start_pos) const;
  // The same at per-row positions: x [b, h, t, head_dim], positions [b, t] int64 (any device),
  // all below `end` (the table's rows it needs; -1: found from positions, which waits for the
  // device when they are on one).
  at::Tensor apply_rope_at(const at::Tensor& x, const at::Tensor& positions,
                           int64_t end = -1) const;

  // The decoder with attention supplied by the caller (the runtime's KV caches): for each layer
  // in order, attend(layer, q, k, v) receives this step's pre-RoPE queries [b, t, n_heads,
  // head_dim] and Keys, Values [b, t, n_kv_heads, head_dim] in the compute dtype and returns the
  // attention output [b, t, n_heads * head_dim] (before the output projection). Positions and
  // caching are the callback's. Returns logits [b, t, vocab] as forward() does.
  using AttentionFn = std::function<at::Tensor(int64_t layer, const at::Tensor& q,
                                               const at::Tensor& k, const at::Tensor& v)>;
  at::Tensor forward_with(const at::Tensor& tokens, const AttentionFn& attend) const;

  // Attention as every layer computes it (forward() and the runtime's stores): queries q
  // [b, n_heads, t, head_dim] and keys k [b, n_kv_heads, n, head_dim] rotated, values v
  // [b, n_kv_heads, n, head_dim]; query i is at position n - t + i and sees tokens 0 ..
  // n - t + i. Where view.key_quantized (view.value_quantized) is defined, [t, n] bool, query i
  // sees token j's key (value) from k (v) where it is true and from k_full (v_full) where it
  // is false. Returns [b, t, n_heads * head_dim] in q's dtype.
  at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const KVView& view = {}, const at::Tensor& k_full = {},
                       const at::Tensor& v_full = {}) const;

  // RMSNorm as every layer applies it (fp32 accumulation, then the input's dtype).
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight) const;

 private:
  ModelConfig config_;
  Weights weights_;
  std::string source_;
  // RoPE's cos and sin for positions [0, rows), fp32 on the device, grown (doubling, at most to
  // max_seq_len) when a position first needs it: a config's context costs memory only once a
  // sequence reaches it, not when the model loads. Shared by copies of the model.
  struct RopeTable {
    std::mutex mutex;
    at::Tensor cos, sin;  // [rows, head_dim]
  };
  std::shared_ptr<RopeTable> rope_ = std::make_shared<RopeTable>();
  // cos and sin with at least min(rows, max_seq_len) rows.
  std::pair<at::Tensor, at::Tensor> rope_rows(int64_t rows) const;
};

// Where norms, softmax, logits and the loss are computed: fp32, or fp64 for an fp64 model (which
// the finite-difference tests use).
inline at::ScalarType accumulate_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Mean next-token cross-entropy of logits [b, t, v] against tokens [b, t] over positions
// 0..t-2 predicting 1..t-1 (fp32 scalar, fp64 for fp64 logits); differentiable.
at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& tokens);

at::ScalarType parse_dtype(const std::string& name, const std::string& where);  // fp32|bf16|fp16
at::Device parse_device(const std::string& name, const std::string& where);     // cpu|cuda[:N]

}  // namespace kvq::model
