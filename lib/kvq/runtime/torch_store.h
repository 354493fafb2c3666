// TorchKvStore (kv_store.h): the runtime's cache through LibTorch on any device. Each token's
// Key and Value are quantized by the method's quantizer (methods::Quantizer, the one kvq eval
// uses) when the cache format says they leave full precision, and held as the compressed cache
// would dequantize them, keys rotated once at their positions. With the fp16 method it is a
// plain cache of the model's own K/V (--kv fp16). It serves every method whose cache is causal
// (check_runtime_method), and prefill in chunks. Without an fp16 window (the plain fp16 cache
// among them) the sequences' keys and values are rows of one tensor per layer, so that a decode
// step appends and attends for all of them at once; a pool of rows x the longest capacity,
// within the pages' budget (fits). A decode step attends by LibTorch's fused SDPA on CUDA
// (LibTorch >= 2.0; rows of different lengths in one varlen FlashAttention-2 call where the
// LibTorch has it, else one by one), else by the model's attention with the lengths masked. Not
// here: compressed storage (cuda_store.h).
#pragma once

#include <memory>
#include <vector>

#include "kvq/methods/quantizer.h"
#include "kvq/model/llama.h"
#include "kvq/runtime/kv_store.h"

namespace kvq::runtime {

// Throws kvq::Error naming the method unless a runtime cache can hold it token by token as
// kvq eval defines it: keys quantized after RoPE, key groups along time that a flush does not
// complete (intB-channel) and fp8 with a per-call scale (no calibrated amax) depend on tokens
// the cache has not seen yet.
void check_runtime_method(const methods::Quantizer& q, int64_t n_layers);

// Attention of queries q [1, t, n_heads, head_dim] (pre-RoPE, positions start..start+t-1) over
// a cache of n = start + t tokens: k, v [n_kv_heads, n, head_dim], keys post-RoPE, as the cache
// holds them; k_full, v_full the full-precision versions (undefined unless the format has an
// fp16 window), which a query sees for the tokens its cache length still holds in fp16. The
// model's own attention (LlamaModel::attention). Returns [1, t, n_heads * head_dim].
at::Tensor cached_attention(const model::LlamaModel& m, const quant::KvCacheFormat& format,
                            const at::Tensor& q, int64_t start, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& k_full,
                            const at::Tensor& v_full);

// A decode step's rows of different lengths as FlashAttention-2's varlen form takes them: the
// pool's rows as one token axis, row i's tokens at [i * capacity, i * capacity + used[i]).
struct RaggedRows {
  at::Tensor cu_q, cu_k, used;  // int32 on the device: 0..b; 0, capacity, .., b * capacity; [b]
  int64_t max_k = 0;            // the longest row's tokens
};

class TorchKvStore : public KvStore {
 public:
  // `q` and `m` must outlive the store; q was checked against the model (require_model) and by
  // check_runtime_method.
  TorchKvStore(const model::LlamaModel& m, const methods::Quantizer& q,
               const StoreOptions& options);

  void add(int64_t capacity) override;
  bool fits(int64_t capacity) const override;
  void remove(int slot) override;
  int64_t length(int slot) const override { return slots_.at(slot).n.back(); }
  at::Tensor prefill(int64_t layer, int slot, const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v) override;
  at::Tensor decode(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override;
  void fill_random(int slot, int64_t n) override;
  bool chunked_prefill() const override { return true; }
  int64_t page_size() const override { return kPageSize; }
  int64_t n_pages() const override { return n_pages_; }
  int max_batch() const override { return max_batch_; }
  CacheCost cost() const override;
  std::string name() const override;

  // Elements quantized so far (outlier counts for the bits figure).
  const methods::QuantCounters& key_counters() const { return keys_; }
  const methods::QuantCounters& value_counters() const { return values_; }

 private:
  static constexpr int64_t kPageSize = 256;
  struct Slot {
    int64_t capacity = 0;
    std::vector<int64_t> n;  // tokens per layer
    // Per layer, [n_kv_heads, capacity, head_dim] in the model's dtype: keys post-RoPE and
    // values as the cache holds them; with an fp16 window also the full-precision versions and
    // the pre-RoPE keys the window's tokens are quantized from when they leave it.
    std::vector<at::Tensor> k, v, k_full, v_full, k_pre;
  };
  // Without a window: per layer [pool_rows_, n_kv_heads, pool_cap_, head_dim] (over memory laid
  // out [pool_rows_, pool_cap_, n_kv_heads, head_dim]), slot i in row i (Slot::k, v are views of
  // its row).
  bool pooled() const { return !window_; }
  // Whether a pool of rows x cap tokens stays within the pages' budget.
  bool pool_holds(int64_t rows, int64_t cap) const { return rows * cap <= n_pages_ * kPageSize; }
  // Reallocates the pool to rows x cap (>= what the slots hold), keeping every slot's tokens.
  void grow_pool(int64_t rows, int64_t cap);
  void point_at_row(int slot);  // the slot's k, v: views of row `slot`
  // Decode in the pool: one append (or the quantizer's, slot by slot) and the attention.
  at::Tensor decode_pooled(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v);
  // Appends k, v [t, n_kv_heads, head_dim] to the slot's layer and quantizes what leaves fp16.
  void append(int64_t layer, Slot& s, const at::Tensor& k, const at::Tensor& v);
  int64_t bound(int64_t layer, int64_t n) const;  // n_sink + n_quantized(n): quantized below

  const model::LlamaModel& m_;
  const methods::Quantizer& q_;
  std::vector<quant::KvCacheFormat> formats_;  // per layer
  bool window_ = false;
  int max_batch_ = 0;
  int64_t max_seq_len_ = 0, n_pages_ = 0;
  std::vector<Slot> slots_;
  std::vector<at::Tensor> pool_k_, pool_v_;  // per layer, when pooled()
  int64_t pool_rows_ = 0, pool_cap_ = 0;
  std::vector<int64_t> pos_host_;  // a decode step's positions and their copy on the device
  at::Tensor pos_dev_;
  RaggedRows ragged_;       // the same step's rows for the varlen attention,
  int64_t ragged_cap_ = 0;  // in a pool of this capacity
  methods::QuantCounters keys_, values_;
};

}  // namespace kvq::runtime
