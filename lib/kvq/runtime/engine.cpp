// Engine (engine.h).
#include "kvq/runtime/engine.h"

#include <algorithm>

#include <fmt/format.h>

#include "kvq/artifact/fingerprint.h"
#include "kvq/common/error.h"
#include "kvq/runtime/torch_store.h"
#ifdef KVQ_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#ifdef KVQ_HAVE_CUDA_CACHE
#include <cuda_runtime_api.h>

#include "kvq/runtime/cuda_store.h"
#endif

namespace kvq::runtime {

std::pair<int64_t, int64_t> device_memory(const at::Device& device) {
#ifdef KVQ_HAVE_CUDA_CACHE
  if (device.is_cuda()) {
    int current = 0;
    size_t free = 0, total = 0;
    if (cudaGetDevice(&current) == cudaSuccess &&
        cudaSetDevice(device.index() < 0 ? 0 : device.index()) == cudaSuccess &&
        cudaMemGetInfo(&free, &total) == cudaSuccess) {
      cudaSetDevice(current);
      return {static_cast<int64_t>(total - free), static_cast<int64_t>(total)};
    }
    (void)cudaGetLastError();
  }
#else
  (void)device;
#endif
  return {-1, -1};
}

std::string device_name(const at::Device& device) {
#ifdef KVQ_HAVE_CUDA_CACHE
  cudaDeviceProp prop{};
  if (device.is_cuda() &&
      cudaGetDeviceProperties(&prop, device.index() < 0 ? 0 : device.index()) == cudaSuccess) {
    return fmt::format("{} ({} SMs)", prop.name, prop.multiProcessorCount);
  }
  (void)cudaGetLastError();
#endif
  return device.str();
}

void release_cached_memory(const at::Device& device) {
#ifdef KVQ_TORCH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

void check_engine_options(const EngineOptions& options) {
  if (options.max_batch < 1 || options.max_batch > 4096) {
    fail("--max-batch: expected 1..4096 sequences, found {}", options.max_batch);
  }
  if (options.prefill_chunk < 1) {
    fail("--prefill-chunk: expected >= 1 token, found {}", options.prefill_chunk);
  }
  if (!(options.kv_mem_gib >= 0) || options.kv_mem_gib > 1e6) {
    fail("--kv-mem: expected a size in GiB >= 0 (0: the default), found {}", options.kv_mem_gib);
  }
}

Engine::Engine(const model::LlamaModel& m, const methods::Quantizer& q,
               const EngineOptions& options)
    : m_(m), q_(q), options_(options) {
  const model::ModelConfig& c = m.config();
  check_engine_options(options);
  q.require_model(artifact::model_fingerprint(c, m.weights().checksum, m.source()));
  check_runtime_method(q, c.n_layers);
  StoreOptions so;
  so.max_batch = options.max_batch;
  so.max_seq_len = c.max_seq_len;
  so.kv_mem_bytes = static_cast<int64_t>(options.kv_mem_gib * double(int64_t{1} << 30));
  const bool compressed = q.spec().kind != methods::MethodKind::kFp16;
  if (m.device().is_cuda()) {
    release_cached_memory(m.device());
    const auto [used, total] = device_memory(m.device());
    if (total > 0) {
      const int64_t free = total - used;
      if (so.kv_mem_bytes > free) {
        fail("--kv-mem: {:.2f} GiB asked for, but the GPU has {:.2f} GiB free of {:.2f} GiB",
             options.kv_mem_gib, free / double(1 << 30), total / double(1 << 30));
      }
      if (so.kv_mem_bytes == 0) so.kv_mem_bytes = static_cast<int64_t>(0.9 * free);
    }
  }
#ifdef KVQ_HAVE_CUDA_CACHE
  if (compressed && m.device().is_cuda()) {
    store_ = std::make_unique<CudaKvStore>(m, q, so);
  }
#endif
  if (!store_) {
    if (compressed && m.device().is_cuda()) {
      fail(
          "runtime: this kvq was built without the CUDA kernels; run the compressed cache on the "
          "CPU (--device cpu)");
    }
    store_ = std::make_unique<TorchKvStore>(m, q, so);
  }
  free_pages_ = store_->n_pages();
  if (pages_for(1) > free_pages_) {
    fail("--kv-mem: {:.3f} GiB holds {} pages, not one sequence", options.kv_mem_gib, free_pages_);
  }
}

Engine::~Engine() = default;

std::vector<std::string> Engine::describe() const {
  const model::ModelConfig& c = m_.config();
  const CacheCost cost = store_->cost();
  const int64_t pool_tokens = store_->n_pages() * store_->page_size();
  const int64_t per_seq = pages_for(c.max_seq_len);
  std::vector<std::string> lines;
  lines.push_back(fmt::format("kv cache: {} ({})", q_.label(), store_->name()));
  lines.push_back(fmt::format("kv cache: {:.1f} bytes per token ({:.3f} bits per element): {}",
                              cost.bytes_per_token, cost.bits_per_element, cost.detail));
  lines.push_back(fmt::format(
      "kv cache: pool of {} pages x {} tokens = {} tokens; {} sequences of the full context "
      "({} tokens) at once, {} slots",
      store_->n_pages(), store_->page_size(), pool_tokens,
      std::min<int64_t>(store_->max_batch(), store_->n_pages() / std::max<int64_t>(per_seq, 1)),
      c.max_seq_len, store_->max_batch()));
  return lines;
}

int64_t Engine::pages_for(int64_t tokens) const {
  return (tokens + store_->page_size() - 1) / store_->page_size();
}

int Engine::slot_of(int64_t id) const {
  const auto it = std::find(ids_.begin(), ids_.end(), id);
  if (it == ids_.end()) fail("runtime: no open sequence {}", id);
  return static_cast<int>(it - ids_.begin());
}

int64_t Engine::open(int64_t capacity) {
  const int64_t ctx = m_.config().max_seq_len;
  if (capacity < 1 || capacity > ctx) {
    fail("runtime: a sequence of {} tokens: expected 1..{} (the model's context)", capacity, ctx);
  }
  const int64_t pages = pages_for(capacity);
  if (pages > store_->n_pages()) {
    fail("runtime: a sequence of {} tokens needs {} pages of {} tokens, the whole pool holds {}",
         capacity, pages, store_->page_size(), store_->n_pages());
  }
  if (store_->size() >= store_->max_batch() || pages > free_pages_ || !store_->fits(capacity)) {
    return -1;
  }
  store_->add(capacity);
  const int64_t id = next_id_++;
  ids_.push_back(id);
  reserved_[id] = pages;
  capacity_[id] = capacity;
  free_pages_ -= pages;
  return id;
}

void Engine::close(int64_t id) {
  const int slot = slot_of(id);
  store_->remove(slot);
  ids_[slot] = ids_.back();
  ids_.pop_back();
  free_pages_ += reserved_.at(id);
  reserved_.erase(id);
  capacity_.erase(id);
}

int64_t Engine::length(int64_t id) const { return store_->length(slot_of(id)); }

at::Tensor Engine::prefill(int64_t id, const std::vector<int32_t>& tokens) {
  const int slot = slot_of(id);
  if (tokens.empty()) fail("runtime: prefill of sequence {} with no tokens", id);
  const int64_t n0 = store_->length(slot);
  if (n0 > 0 && !store_->chunked_prefill()) {
    fail("runtime: sequence {} already holds {} tokens; this cache prefills a prompt at once", id,
         n0);
  }
  const int64_t cap = capacity_.at(id);
  if (n0 + static_cast<int64_t>(tokens.size()) > cap) {
    fail("runtime: sequence {}: {} + {} tokens exceed the {} it was opened for", id, n0,
         tokens.size(), cap);
  }
  c10::InferenceMode inference;
  const int64_t chunk =
      store_->chunked_prefill() ? options_.prefill_chunk : static_cast<int64_t>(tokens.size());
  std::vector<at::Tensor> logits;
  for (size_t i = 0; i < tokens.size(); i += chunk) {
    const size_t e = std::min(tokens.size(), i + static_cast<size_t>(chunk));
    const std::vector<int64_t> ids(tokens.begin() + i, tokens.begin() + e);
    const at::Tensor input = at::tensor(ids, at::kLong).view({1, -1});
    logits.push_back(m_.forward_with(
        input, [&](int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
          return store_->prefill(layer, slot, q, k, v);
        })[0]);
  }
  return logits.size() == 1 ? logits[0] : at::cat(logits, 0);
}

void Engine::fill_random(int64_t id, int64_t n) {
  const int slot = slot_of(id);
  if (store_->length(slot) != 0) {
    fail("runtime: fill: sequence {} already holds {} tokens", id, store_->length(slot));
  }
  if (n < 1 || n > capacity_.at(id)) {
    fail("runtime: fill: expected 1..{} tokens (what sequence {} was opened for), found {}",
         capacity_.at(id), id, n);
  }
  c10::InferenceMode inference;
  store_->fill_random(slot, n);
}

at::Tensor Engine::decode(const std::vector<int64_t>& ids, const std::vector<int32_t>& tokens) {
  const int n = store_->size();
  if (static_cast<int>(ids.size()) != n || tokens.size() != ids.size()) {
    fail("runtime decode: {} ids and {} tokens for {} open sequences", ids.size(), tokens.size(),
         n);
  }
  std::vector<int64_t> by_slot(n, -1);
  std::vector<int64_t> row_of_slot(n, -1);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int slot = slot_of(ids[i]);
    if (row_of_slot[slot] >= 0) fail("runtime decode: sequence {} given twice", ids[i]);
    if (store_->length(slot) == 0) fail("runtime decode: sequence {} has no prompt yet", ids[i]);
    if (store_->length(slot) >= capacity_.at(ids[i])) {
      fail("runtime decode: sequence {} is full: {} tokens, the most it was opened for", ids[i],
           capacity_.at(ids[i]));
    }
    row_of_slot[slot] = static_cast<int64_t>(i);
    by_slot[slot] = tokens[i];
  }
  c10::InferenceMode inference;
  const at::Tensor input = at::tensor(by_slot, at::kLong).view({n, 1});
  const at::Tensor logits =
      m_.forward_with(input, [&](int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v) { return store_->decode(layer, q, k, v); });
  // Back from slot order to the caller's.
  std::vector<int64_t> slot_of_row(n);
  for (int s = 0; s < n; ++s) slot_of_row[row_of_slot[s]] = s;
  return logits.select(1, 0).index_select(0,
                                          at::tensor(slot_of_row, at::kLong).to(logits.device()));
}

}  // namespace kvq::runtime
