// CudaKvStore (kv_store.h): the compressed paged KV cache on the GPU (kv_cache.h, one KvCache
// per layer, sequences in the same slots in every layer) and its kernels. A prompt is quantized
// into the pages by the prefill kernel and attends as kvq eval defines it (the method's
// quantizer on the same fp16 K/V); each decode step appends every running sequence's token
// with the append kernel and attends with the decode kernel, straight from the pages.
// Serves what runtime::check_kv_config accepts (KVQuant nuq and KIVI, head_dim 64 and 128) with
// fp16 or bf16 models. Not here: chunked prefill (a prompt is one chunk: the kernels attend
// from the cache for one query per sequence only).
#pragma once

#include <memory>
#include <vector>

#include "kvq/methods/quantizer.h"
#include "kvq/model/llama.h"
#include "kvq/runtime/kv_store.h"

namespace kvq::runtime {

class KvCache;

class CudaKvStore : public KvStore {
 public:
  // Throws kvq::Error naming the problem: a model on the CPU or in fp32, a method or shape the
  // cache refuses (check_kv_config), a kv_mem too small for one page per layer.
  CudaKvStore(const model::LlamaModel& m, const methods::Quantizer& q, const StoreOptions& options);
  ~CudaKvStore() override;

  void add(int64_t capacity) override;
  void remove(int slot) override;
  int64_t length(int slot) const override;
  at::Tensor prefill(int64_t layer, int slot, const at::Tensor& q, const at::Tensor& k,
                     const at::Tensor& v) override;
  at::Tensor decode(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) override;
  void fill_random(int slot, int64_t n) override;
  bool chunked_prefill() const override { return false; }
  int64_t page_size() const override { return page_size_; }
  int64_t n_pages() const override { return n_pages_; }
  int max_batch() const override { return max_batch_; }
  CacheCost cost() const override;
  std::string name() const override;

 private:
  const model::LlamaModel& m_;
  const methods::Quantizer& q_;
  std::vector<quant::KvCacheFormat> formats_;
  std::vector<std::unique_ptr<KvCache>> layers_;
  at::Tensor inv_freq_;  // [head_dim / 2] fp32 on the GPU
  int max_batch_ = 0;
  int64_t page_size_ = 0, n_pages_ = 0;
  double page_bytes_ = 0, fp16_bytes_per_seq_ = 0;  // all layers
};

}  // namespace kvq::runtime
