// Engine: runs a model over a KV store (kv_store.h) for many sequences at once, the layer under
// generation (generator.h) and kvq eval --runtime. It loads nothing itself: the caller gives the
// model and the quantizer (a quant.h5, or fp16 for the plain cache), which the engine checks
// against each other before anything is allocated, refusing by name what it cannot serve.
//
// Sequences are opened with the most tokens they will hold; the engine reserves their pages
// then, so a running sequence never runs out (a request that does not fit waits or is refused;
// generator.h). Each decode() advances every open sequence by one token in one batched forward
// (continuous batching at step granularity); prefill() feeds a prompt in chunks where the store
// allows (the CPU store), else in one forward.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvq/methods/quantizer.h"
#include "kvq/model/llama.h"
#include "kvq/runtime/kv_store.h"

namespace kvq::runtime {

struct EngineOptions {
  int max_batch = 8;            // sequences at once
  double kv_mem_gib = 0;        // the cache's memory; 0: GPU: 90% of the free memory after
                                // the model, CPU: max_batch sequences of the model's context
  int64_t prefill_chunk = 512;  // tokens per prefill forward where the store takes chunks
};

// Throws kvq::Error naming the flag (--max-batch, --prefill-chunk, --kv-mem) of a value the
// engine cannot take; the Engine constructor calls it, commands may call it before their work.
void check_engine_options(const EngineOptions& options);

class Engine {
 public:
  // `m` and `q` must outlive the engine. Checks that q was made for m (fingerprint, layers, KV
  // heads, head_dim) and that a cache can hold it (check_runtime_method; on a GPU also the
  // compressed cache's own checks); the fp16 quantizer gives a plain cache (LibTorch).
  Engine(const model::LlamaModel& m, const methods::Quantizer& q, const EngineOptions& options);
  ~Engine();

  const model::LlamaModel& model() const { return m_; }
  const KvStore& store() const { return *store_; }
  // Lines for the user at start: the store, bytes per token, the pool and concurrency.
  std::vector<std::string> describe() const;

  // Pages a sequence of `tokens` tokens reserves.
  int64_t pages_for(int64_t tokens) const;
  int64_t free_pages() const { return free_pages_; }
  int64_t total_pages() const { return store_->n_pages(); }
  // Whether the store's memory takes a sequence of `capacity` tokens now (KvStore::fits).
  bool fits(int64_t capacity) const { return store_->fits(capacity); }
  int open_count() const { return store_->size(); }
  int max_batch() const { return store_->max_batch(); }

  // Opens a sequence that will hold at most `capacity` tokens: its id, or -1 with nothing
  // changed when no slot or not enough free pages are left now. Throws kvq::Error when it can
  // never fit: capacity beyond the model's context or the whole pool.
  int64_t open(int64_t capacity);
  void close(int64_t id);
  int64_t length(int64_t id) const;
  const std::vector<int64_t>& open_ids() const { return ids_; }  // in slot order

  // Appends tokens to a sequence and returns the logits after each, [t, vocab] fp32 on the
  // model's device. The first prefill of a sequence may be followed by more only when
  // store().chunked_prefill().
  at::Tensor prefill(int64_t id, const std::vector<int32_t>& tokens);
  // Puts n random tokens into an open, empty sequence without running the model (kvq bench e2e:
  // decode at long contexts without their prefill); it then decodes like a prefilled one.
  void fill_random(int64_t id, int64_t n);
  // One token for every open sequence (ids: each open sequence once, any order; each already
  // prefilled). Returns logits [ids.size(), vocab] in the order of ids.
  at::Tensor decode(const std::vector<int64_t>& ids, const std::vector<int32_t>& tokens);

 private:
  int slot_of(int64_t id) const;

  const model::LlamaModel& m_;
  const methods::Quantizer& q_;
  EngineOptions options_;
  std::unique_ptr<KvStore> store_;
  std::vector<int64_t> ids_;             // by slot
  std::map<int64_t, int64_t> reserved_;  // pages by id
  std::map<int64_t, int64_t> capacity_;  // tokens by id
  int64_t free_pages_ = 0;
  int64_t next_id_ = 0;
};

// "NVIDIA H200 (132 SMs)" for a GPU (what CUDA reports), "cpu" on the CPU.
std::string device_name(const at::Device& device);

// Hands the blocks LibTorch's caching allocator holds unused back to the device (so that the
// compressed cache, which allocates with CUDA directly, can take them); no-op on the CPU.
void release_cached_memory(const at::Device& device);

// Bytes of device memory in use (the whole device, all processes) and its total; {-1, -1} on
// the CPU or without CUDA.
std::pair<int64_t, int64_t> device_memory(const at::Device& device);

}  // namespace kvq::runtime
