// KvStore: the runtime's KV cache for one model (all layers) and the attention computed from it.
// Running sequences sit in slots 0..size()-1, densely: removing one moves the last sequence into
// its slot, which is how the CUDA kernels take a batch (every slot below size() advances in a
// decode step). Two stores, one contract:
//   TorchKvStore (torch_store.h)  the method's quantizer (methods::Quantizer, the one kvq eval
//                                 uses) through LibTorch on any device, holding what the
//                                 compressed cache would dequantize to; the CPU engine and the
//                                 plain fp16 cache (--kv fp16).
//   CudaKvStore (cuda_store.h)    the compressed paged cache of lib/kvq/runtime/kv_cache.h and
//                                 its CUDA kernels.
// Attention is the one kvq eval defines for the method (eval's QuantizedKV and the model's
// forward): every query sees the cached tokens as the cache holds them when it attends (sinks and
// recent windows in full precision, the rest quantized).
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

namespace kvq::runtime {

// What the cache costs per token of context, all layers, keys and values.
struct CacheCost {
  double bytes_per_token = 0;     // the cache format's bytes per quantized token (codes, scales,
                                  // outliers at their expected rate), all layers
  double bits_per_element = 0;    // the same per cached element
  double fp16_bytes_per_seq = 0;  // fp16 sinks and recent windows held per sequence
  // Key outliers that found their page's room full since the store was made, all layers (kept
  // in the dense range instead; the CUDA pages hold twice the calibrated rate, kv_config.h).
  uint64_t key_outliers_dropped = 0;
  std::string detail;  // one line: what the figure is made of
};

// How large a store to make. The page pool takes kv_mem_bytes after the per-sequence buffers.
struct StoreOptions {
  int max_batch = 8;         // sequences at once
  int64_t max_seq_len = 0;   // tokens per sequence (the model's context)
  int64_t kv_mem_bytes = 0;  // the whole cache: pages plus per-sequence buffers
};

class KvStore {
 public:
  virtual ~KvStore() = default;
  int size() const { return size_; }

  // Starts a sequence in slot size() that will hold at most `capacity` tokens.
  virtual void add(int64_t capacity) = 0;
  // Whether add(capacity) fits the store's memory now, where it needs more than the pages the
  // sequence reserves (the engine then waits as for pages). True for an empty store whenever
  // the pages fit.
  virtual bool fits(int64_t /*capacity*/) const { return true; }
  // Ends the sequence in `slot`; the sequence in slot size() - 1 moves into it.
  virtual void remove(int slot) = 0;
  // Tokens the sequence in `slot` holds.
  virtual int64_t length(int slot) const = 0;

  // Appends t tokens to `slot`: q [1, t, n_heads, head_dim], k, v [1, t, n_kv_heads, head_dim]
  // pre-RoPE in the model's dtype, at positions length(slot) ... Returns the attention output
  // [1, t, n_heads * head_dim]. Called for layers 0, 1, ... in order; the length advances at
  // the last layer.
  virtual at::Tensor prefill(int64_t layer, int slot, const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v) = 0;
  // One token for every slot 0..size()-1: q [size, 1, n_heads, head_dim], k, v [size, 1,
  // n_kv_heads, head_dim]. Returns [size, 1, n_heads * head_dim].
  virtual at::Tensor decode(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v) = 0;
  // Puts n tokens of random content into the sequence in `slot`, which holds none yet, without
  // running the model: for benchmarks at long contexts (attention reads the same bytes whatever
  // they hold). The sequence then decodes like a prefilled one.
  virtual void fill_random(int slot, int64_t n) = 0;
  // Whether prefill may continue a sequence that already holds tokens (chunked prefill).
  virtual bool chunked_prefill() const = 0;
  // The pool: n_pages() pages of page_size() tokens; a sequence of n tokens takes
  // ceil(n / page_size()) of them at most.
  virtual int64_t page_size() const = 0;
  virtual int64_t n_pages() const = 0;
  virtual int max_batch() const = 0;
  virtual CacheCost cost() const = 0;
  virtual std::string name() const = 0;  // "cuda (compressed)", "torch cpu", ...

 protected:
  int size_ = 0;
};

}  // namespace kvq::runtime
