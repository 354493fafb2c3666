// KvCache: the compressed KV cache of one layer on the GPU, and the C++ face of the kernels
// (kernels/kv_append.h, kernels/kv_attention.h). It owns the device memory (page pool, page tables,
// fp16 sinks and recent window, the quantizer), allocates pages on the host as sequences grow,
// checks every shape before anything is queued and turns CUDA errors into kvq::Error naming the
// shapes. A failed call leaves the cache as it was (nothing is queued before the checks pass). Not
// thread-safe; work goes on the stream passed, inputs are device pointers.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "kv_attention.h"
#include "kv_config.h"
#include "kv_ref.h"
#include "kvq/quant/kv_cache_format.h"

namespace kvq::runtime {

using kernels::KvAttentionKernel;
using kernels::KvAttentionParams;
using kernels::KvCacheConfig;
using kernels::KvCacheView;
using kernels::KvImage;
using kernels::KvLayout;

class KvCache {
 public:
  // Validates (check_kv_config: the format, the shapes, the layer's tables, which KVQuant needs
  // and KIVI ignores), then allocates everything; throws kvq::Error, e.g.
  // "kv cache: cudaMalloc of 85899345920 bytes for the page pool (...) failed: ...".
  KvCache(const KvCacheConfig& config, const quant::KvTables* tables);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvCacheConfig& config() const { return config_; }
  const KvLayout& layout() const { return view_.layout; }
  // The device view; its seq_len alternates between two buffers, one per append().
  const KvCacheView& view() const { return view_; }
  int batch() const { return batch_; }
  int64_t length(int b) const { return lengths_.at(b); }
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }

  // Starts `batch` empty sequences (returning every page). batch in 0..max_batch.
  void reset(int batch, cudaStream_t stream);

  // Fills empty sequences with prompts: lengths[b] tokens of k, v [batch][max_tokens]
  // [n_kv_heads][head_dim] fp16 (device), batch = lengths.size(). Throws if a sequence is not
  // empty, a length exceeds max_tokens or max_seq_len, or the pool runs out of pages.
  void prefill(const std::vector<int64_t>& lengths, int64_t max_tokens, const __half* k,
               const __half* v, cudaStream_t stream);

  // Starts a sequence in slot batch() (< max_batch) holding n tokens, n in 0..max_seq_len, of
  // k, v [n][n_kv_heads][head_dim] fp16 (device); the other sequences are untouched. Throws if
  // the pool runs out of pages.
  void add(int64_t n, const __half* k, const __half* v, cudaStream_t stream);
  // Ends sequence b: its pages go back to the pool and the last sequence moves into slot b (its
  // pages, sinks, window and length), so that sequences stay in slots 0..batch()-1.
  void remove(int b, cudaStream_t stream);

  // One decode step: token length(b) of every sequence, k, v [batch][n_kv_heads][head_dim].
  void append(const __half* k, const __half* v, cudaStream_t stream);

  // Sequences of the given lengths with random (valid) content, replacing all; for benchmarks
  // and long tests (decode reads the same bytes whatever they hold).
  void fill_random(const std::vector<int64_t>& lengths, double k_outlier_fraction, uint32_t seed,
                   cudaStream_t stream);
  // Starts a sequence in slot batch() holding n (1..max_seq_len) tokens of random content, key
  // outliers at the given fraction; the other sequences are untouched. Throws if the pool runs
  // out of pages.
  void add_random(int64_t n, double k_outlier_fraction, uint32_t seed, cudaStream_t stream);

  // Attention of every sequence's newest token: q, out [batch][n_q_heads][head_dim] fp16 (or
  // bf16), inv_freq [head_dim / 2] fp32, all device memory.
  void attend(const void* q, bool q_bf16, void* out, const float* inv_freq,
              KvAttentionKernel version, cudaStream_t stream);

  // The launch parameters attend() would use (workspace allocated), for timing the kernels.
  KvAttentionParams attention_params(const void* q, bool q_bf16, void* out, const float* inv_freq,
                                     KvAttentionKernel version);

  // Sequence b's KV head h as fp32 rows: k (pre-RoPE), v [length(b)][head_dim] (device), every
  // token dequantized as kv_dequantize_ref does (kernels/kv_dequantize.h).
  void dequantize(int b, int h, float* k, float* v, cudaStream_t stream) const;

  // Bytes an attention pass reads from the cache: codes, scales, value-outlier slots, key
  // outliers at the given fraction of key elements, fp16 tokens.
  int64_t attention_bytes(double k_outlier_fraction) const;

  uint64_t k_overflow() const;  // synchronous
  KvImage snapshot() const;     // synchronous copy of the whole device state

 private:
  struct Buffers;
  int64_t pages_needed(int64_t n) const;
  // Maps the pages sequences first, first + 1, ... need to hold new_lengths tokens.
  void map_pages(const std::vector<int64_t>& new_lengths, const char* op, cudaStream_t stream,
                 int first = 0);
  KvCacheView slot_view(int b) const;  // the view shifted so that sequence b is sequence 0
  [[noreturn]] void cuda_fail(const char* op, cudaError_t err) const;

  KvCacheConfig config_;
  KvCacheView view_;
  std::unique_ptr<Buffers> buf_;
  int batch_ = 0;
  std::vector<int64_t> lengths_;
  std::vector<int32_t> table_;  // host mirror of the page table
  std::vector<int64_t> held_;   // pages mapped per sequence
  std::vector<int32_t> free_;
  int32_t* seq_len_next_ = nullptr;  // the other lengths buffer: append writes it, then swaps
};

}  // namespace kvq::runtime
