// KvCache (kv_cache.h): device memory, host-side page allocation, checks, and kvq::Error for
// every failure. Pages come from a fixed pool (config.n_pages); a sequence maps page i of its
// quantized tokens through its row of the page table, filled on demand before each launch.
#include "kvq/runtime/kv_cache.h"

#include <algorithm>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "kv_append.h"
#include "kv_dequantize.h"
#include "kvq/common/error.h"
#include "kvq/runtime/device_buffer.h"
#include "kvq/runtime/cache_config.h"

namespace kvq::runtime {
namespace {

using kernels::KvMethod;

// At least one element, so that every pointer of the view is valid; errors say "kv cache".
template <typename T>
DeviceBuffer<T> allocate(size_t n, const std::string& what) {
  try {
    return DeviceBuffer<T>(std::max<size_t>(n, 1), what);
  } catch (const Error& e) {
    fail("kv cache: {}", e.what());
  }
}

template <typename T>
void upload(const DeviceBuffer<T>& dst, const std::vector<T>& src, const char* what) {
  const cudaError_t err =
      cudaMemcpy(dst.data(), src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    fail("kv cache: upload {}: {}: {}", what, cudaGetErrorName(err), cudaGetErrorString(err));
  }
}

void check_cuda(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    fail("kv cache: {}: {}: {}", what, cudaGetErrorName(err), cudaGetErrorString(err));
  }
}

}  // namespace

struct KvCache::Buffers {
  DeviceBuffer<uint8_t> pool;                  // [n_pages] pages (kv_layout.h)
  DeviceBuffer<int32_t> table;                 // [max_batch][pages_per_seq]
  DeviceBuffer<int32_t> seq_len, seq_len_alt;  // [max_batch], swapped by append()
  DeviceBuffer<int32_t> lengths;               // [max_batch] prefill lengths
  DeviceBuffer<__half> sink_k, sink_v, ring_k, ring_v;
  DeviceBuffer<float> k_lo, k_hi, k_levels, v_levels;
  DeviceBuffer<unsigned long long> overflow;
  DeviceBuffer<float> work;  // attention split workspace
};

KvCache::KvCache(const KvCacheConfig& config, const quant::KvTables* tables)
    : config_(config), buf_(std::make_unique<Buffers>()) {
  const KvLayout layout = check_kv_config(&config_, tables);
  const KvCacheConfig& c = config_;
  view_.layout = layout;
  view_.n_kv_heads = c.n_kv_heads;
  view_.n_sink = static_cast<int>(c.format.n_sink);
  view_.n_recent = static_cast<int>(c.format.n_recent);
  view_.flush = static_cast<int>(c.format.flush);
  view_.ring_size = c.ring_size();
  view_.k_outliers = c.format.key_outliers();
  view_.v_token = c.v_token();
  view_.pages_per_seq = static_cast<int>((c.max_seq_len + c.page_size - 1) / c.page_size);
  const size_t batch = static_cast<size_t>(c.max_batch);
  const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;  // halves per token
  Buffers& b = *buf_;
  b.pool = allocate<uint8_t>(
      static_cast<size_t>(c.n_pages) * view_.layout.page_bytes,
      fmt::format("the page pool ({} pages of {} bytes)", c.n_pages, view_.layout.page_bytes));
  b.table = allocate<int32_t>(batch * view_.pages_per_seq, "the page table");
  b.seq_len = allocate<int32_t>(batch, "the sequence lengths");
  b.seq_len_alt = allocate<int32_t>(batch, "the sequence lengths");
  b.lengths = allocate<int32_t>(batch, "the prefill lengths");
  b.ring_k = allocate<__half>(batch * row * c.ring_size(), "the recent window");
  b.ring_v = allocate<__half>(batch * row * c.ring_size(), "the recent window");
  if (c.format.n_sink > 0) {
    b.sink_k = allocate<__half>(batch * row * c.format.n_sink, "the sink tokens");
    b.sink_v = allocate<__half>(batch * row * c.format.n_sink, "the sink tokens");
  }
  b.overflow = allocate<unsigned long long>(1, "the overflow counter");
  view_.pool = b.pool.data();
  view_.page_table = b.table.data();
  view_.seq_len = b.seq_len.data();
  seq_len_next_ = b.seq_len_alt.data();
  view_.ring_k = b.ring_k.data();
  view_.ring_v = b.ring_v.data();
  view_.sink_k = b.sink_k.data();
  view_.sink_v = b.sink_v.data();
  view_.k_overflow = b.overflow.data();
  if (c.method() == KvMethod::kNuq) {
    b.k_lo = allocate<float>(tables->k_lo.size(), "the key ranges");
    b.k_hi = allocate<float>(tables->k_hi.size(), "the key ranges");
    b.k_levels = allocate<float>(tables->k_levels.size(), "the key levels");
    b.v_levels = allocate<float>(tables->v_levels.size(), "the value levels");
    upload(b.k_lo, tables->k_lo, "the key ranges");
    upload(b.k_hi, tables->k_hi, "the key ranges");
    upload(b.k_levels, tables->k_levels, "the key levels");
    upload(b.v_levels, tables->v_levels, "the value levels");
    view_.k_lo = b.k_lo.data();
    view_.k_hi = b.k_hi.data();
    view_.k_levels = b.k_levels.data();
    view_.v_levels = b.v_levels.data();
  }
  check_cuda(cudaMemset(view_.seq_len, 0, b.seq_len.bytes()), "clear");
  check_cuda(cudaMemset(seq_len_next_, 0, b.seq_len_alt.bytes()), "clear");
  check_cuda(cudaMemset(view_.page_table, 0, b.table.bytes()), "clear");
  check_cuda(cudaMemset(view_.k_overflow, 0, b.overflow.bytes()), "clear");
  lengths_.assign(c.max_batch, 0);
  held_.assign(c.max_batch, 0);
  table_.assign(static_cast<size_t>(c.max_batch) * view_.pages_per_seq, 0);
  for (int64_t p = c.n_pages - 1; p >= 0; --p) free_.push_back(static_cast<int32_t>(p));
}

KvCache::~KvCache() = default;

void KvCache::cuda_fail(const char* op, cudaError_t err) const {
  (void)cudaGetLastError();
  fail(
      "kv cache {} (batch {}, n_kv_heads {}, n_q_heads {}, head_dim {}, bits {}, page_size {}): "
      "{}: {}",
      op, batch_, config_.n_kv_heads, config_.n_q_heads, config_.head_dim, config_.bits(),
      config_.page_size, cudaGetErrorName(err), cudaGetErrorString(err));
}

int64_t KvCache::pages_needed(int64_t n) const {
  return (view_.n_quant(n) + config_.page_size - 1) / config_.page_size;
}

void KvCache::map_pages(const std::vector<int64_t>& new_lengths, const char* op,
                        cudaStream_t stream, int first_slot) {
  int64_t need = 0;
  for (size_t i = 0; i < new_lengths.size(); ++i) {
    need += std::max<int64_t>(0, pages_needed(new_lengths[i]) - held_[first_slot + i]);
  }
  if (need > static_cast<int64_t>(free_.size())) {
    fail(
        "kv cache {}: out of pages: {} sequences need {} more pages of {} tokens, {} of {} are "
        "free (raise n_pages)",
        op, new_lengths.size(), need, config_.page_size, free_.size(), config_.n_pages);
  }
  for (size_t i = 0; i < new_lengths.size(); ++i) {
    const size_t b = first_slot + i;
    const int64_t first = held_[b], want = pages_needed(new_lengths[i]);
    if (want <= first) continue;
    int32_t* row = &table_[b * view_.pages_per_seq];
    for (int64_t i = first; i < want; ++i) {
      row[i] = free_.back();
      free_.pop_back();
    }
    held_[b] = want;
    // Ordered before the launch that reads it; pageable memory is staged before this returns.
    const cudaError_t err =
        cudaMemcpyAsync(view_.page_table + b * view_.pages_per_seq + first, row + first,
                        (want - first) * 4, cudaMemcpyHostToDevice, stream);
    if (err != cudaSuccess) cuda_fail(op, err);
  }
}

void KvCache::reset(int batch, cudaStream_t stream) {
  if (batch < 0 || batch > config_.max_batch) {
    fail("kv cache reset: batch: expected 0..max_batch = {}, found {}", config_.max_batch, batch);
  }
  for (int b = 0; b < config_.max_batch; ++b) {
    for (int64_t i = held_[b] - 1; i >= 0; --i)
      free_.push_back(table_[b * view_.pages_per_seq + i]);
    held_[b] = 0;
    lengths_[b] = 0;
  }
  for (int32_t* lengths : {view_.seq_len, seq_len_next_}) {
    if (const cudaError_t err = cudaMemsetAsync(lengths, 0, buf_->seq_len.bytes(), stream);
        err != cudaSuccess) {
      cuda_fail("reset", err);
    }
  }
  batch_ = batch;
}

void KvCache::prefill(const std::vector<int64_t>& lengths, int64_t max_tokens, const __half* k,
                      const __half* v, cudaStream_t stream) {
  const int batch = static_cast<int>(lengths.size());
  if (batch < 1 || batch > config_.max_batch) {
    fail("kv cache prefill: batch: expected 1..max_batch = {} sequences, found {}",
         config_.max_batch, lengths.size());
  }
  int64_t longest = 0;
  for (int b = 0; b < batch; ++b) {
    if (lengths_[b] != 0) {
      fail("kv cache prefill: sequence {} already holds {} tokens (reset first)", b, lengths_[b]);
    }
    if (lengths[b] < 0 || lengths[b] > max_tokens || lengths[b] > config_.max_seq_len) {
      fail(
          "kv cache prefill: sequence {}: expected 0..min(max_tokens = {}, max_seq_len = {}) "
          "tokens, found {}",
          b, max_tokens, config_.max_seq_len, lengths[b]);
    }
    longest = std::max(longest, lengths[b]);
  }
  if (longest > 0 && (!k || !v)) fail("kv cache prefill: null keys or values");
  map_pages(lengths, "prefill", stream);
  std::vector<int32_t> len32(lengths.begin(), lengths.end());
  cudaError_t err = cudaMemcpyAsync(buf_->lengths.data(), len32.data(), batch * 4,
                                    cudaMemcpyHostToDevice, stream);
  if (err == cudaSuccess) {
    err = kernels::launch_kv_prefill(view_, batch, max_tokens, pages_needed(longest),
                                     buf_->lengths.data(), k, v, stream);
  }
  if (err != cudaSuccess) cuda_fail("prefill", err);
  if (const cudaError_t e2 = cudaStreamSynchronize(stream); e2 != cudaSuccess)
    cuda_fail("prefill", e2);
  std::copy(lengths.begin(), lengths.end(), lengths_.begin());
  batch_ = batch;
}

KvCacheView KvCache::slot_view(int b) const {
  KvCacheView v = view_;
  const int64_t row = int64_t{config_.n_kv_heads} * config_.head_dim;
  v.page_table += int64_t{b} * view_.pages_per_seq;
  v.seq_len += b;
  if (v.sink_k) {
    v.sink_k += b * row * view_.n_sink;
    v.sink_v += b * row * view_.n_sink;
  }
  v.ring_k += b * row * view_.ring_size;
  v.ring_v += b * row * view_.ring_size;
  return v;
}

void KvCache::add(int64_t n, const __half* k, const __half* v, cudaStream_t stream) {
  const int b = batch_;
  if (b >= config_.max_batch) {
    fail("kv cache add: all {} sequence slots are in use", config_.max_batch);
  }
  if (n < 0 || n > config_.max_seq_len) {
    fail("kv cache add: expected 0..max_seq_len = {} tokens, found {}", config_.max_seq_len, n);
  }
  if (n > 0 && (!k || !v)) fail("kv cache add: null keys or values");
  map_pages({n}, "add", stream, b);
  const int32_t len32 = static_cast<int32_t>(n);
  cudaError_t err =
      cudaMemcpyAsync(buf_->lengths.data(), &len32, 4, cudaMemcpyHostToDevice, stream);
  if (err == cudaSuccess) {
    err = kernels::launch_kv_prefill(slot_view(b), 1, n, pages_needed(n), buf_->lengths.data(), k,
                                     v, stream);
  }
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);  // len32 lives on this stack
  if (err != cudaSuccess) cuda_fail("add", err);
  lengths_[b] = n;
  batch_ = b + 1;
}

void KvCache::remove(int b, cudaStream_t stream) {
  if (b < 0 || b >= batch_) fail("kv cache remove: no sequence {} (batch {})", b, batch_);
  const int last = batch_ - 1;
  const int64_t pps = view_.pages_per_seq;
  for (int64_t i = held_[b] - 1; i >= 0; --i) free_.push_back(table_[b * pps + i]);
  if (b != last) {
    std::copy(table_.begin() + last * pps, table_.begin() + last * pps + held_[last],
              table_.begin() + b * pps);
    held_[b] = held_[last];
    lengths_[b] = lengths_[last];
    const KvCacheView to = slot_view(b), from = slot_view(last);
    const size_t row = static_cast<size_t>(config_.n_kv_heads) * config_.head_dim * 2;
    auto copy = [&](void* dst, const void* src, size_t bytes) {
      if (bytes == 0) return;
      if (const cudaError_t err =
              cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
          err != cudaSuccess) {
        cuda_fail("remove", err);
      }
    };
    copy(to.page_table, from.page_table, held_[b] * 4);
    copy(to.seq_len, from.seq_len, 4);
    if (view_.n_sink > 0) {
      copy(to.sink_k, from.sink_k, row * view_.n_sink);
      copy(to.sink_v, from.sink_v, row * view_.n_sink);
    }
    copy(to.ring_k, from.ring_k, row * view_.ring_size);
    copy(to.ring_v, from.ring_v, row * view_.ring_size);
  }
  held_[last] = 0;
  lengths_[last] = 0;
  batch_ = last;
}

void KvCache::append(const __half* k, const __half* v, cudaStream_t stream) {
  if (batch_ == 0) fail("kv cache append: no sequences (prefill or reset first)");
  if (!k || !v) fail("kv cache append: null keys or values");
  std::vector<int64_t> next(lengths_.begin(), lengths_.begin() + batch_);
  for (int b = 0; b < batch_; ++b) {
    if (++next[b] > config_.max_seq_len) {
      fail("kv cache append: sequence {} is full ({} tokens, max_seq_len {})", b, lengths_[b],
           config_.max_seq_len);
    }
  }
  map_pages(next, "append", stream);
  // One launch: it reads the lengths in view_.seq_len and writes the next ones to the other
  // buffer, which then becomes view_.seq_len.
  if (const cudaError_t err = kernels::launch_kv_append(view_, batch_, k, v, seq_len_next_, stream);
      err != cudaSuccess) {
    cuda_fail("append", err);
  }
  std::swap(view_.seq_len, seq_len_next_);
  std::copy(next.begin(), next.end(), lengths_.begin());
}

void KvCache::fill_random(const std::vector<int64_t>& lengths, double k_outlier_fraction,
                          uint32_t seed, cudaStream_t stream) {
  reset(0, stream);
  for (size_t b = 0; b < lengths.size(); ++b) {
    add_random(lengths[b], k_outlier_fraction, seed + static_cast<uint32_t>(b), stream);
  }
}

void KvCache::add_random(int64_t n, double k_outlier_fraction, uint32_t seed, cudaStream_t stream) {
  const int b = batch_;
  if (b >= config_.max_batch) {
    fail("kv cache fill: all {} sequence slots are in use", config_.max_batch);
  }
  if (n < 1 || n > config_.max_seq_len) {
    fail("kv cache fill: expected 1..max_seq_len = {} tokens, found {}", config_.max_seq_len, n);
  }
  map_pages({n}, "fill", stream, b);
  const int32_t len32 = static_cast<int32_t>(n);
  const KvCacheView view = slot_view(b);
  cudaError_t err = cudaMemcpyAsync(view.seq_len, &len32, 4, cudaMemcpyHostToDevice, stream);
  if (err == cudaSuccess) {
    err =
        kernels::launch_kv_fill_random(view, 1, pages_needed(n), k_outlier_fraction, seed, stream);
  }
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);  // len32 lives on this stack
  if (err != cudaSuccess) cuda_fail("fill", err);
  lengths_[b] = n;
  batch_ = b + 1;
}

KvAttentionParams KvCache::attention_params(const void* q, bool q_bf16, void* out,
                                            const float* inv_freq, KvAttentionKernel version) {
  if (batch_ == 0) fail("kv cache attend: no sequences (prefill or reset first)");
  if (!q || !out || !inv_freq) fail("kv cache attend: null q, out or inv_freq");
  int64_t max_quant = 0;
  for (int b = 0; b < batch_; ++b) {
    if (lengths_[b] == 0) fail("kv cache attend: sequence {} is empty (append its token first)", b);
    max_quant = std::max(max_quant, view_.n_quant(lengths_[b]));
  }
  KvAttentionParams p;
  p.cache = view_;
  p.batch = batch_;
  p.n_q_heads = config_.n_q_heads;
  p.q = q;
  p.q_bf16 = q_bf16;
  p.out = out;
  p.inv_freq = inv_freq;
  kernels::kv_attention_splits(view_.layout, batch_, config_.n_kv_heads, config_.q_per_kv(),
                               max_quant, view_.has_fp16_tokens(), version, &p.n_splits,
                               &p.split_tokens);
  const size_t floats = kernels::kv_attention_workspace_floats(batch_, config_.n_q_heads,
                                                               p.n_splits, config_.head_dim);
  if (buf_->work.size() < floats) buf_->work = allocate<float>(floats, "the attention workspace");
  kernels::kv_attention_set_workspace(&p, buf_->work.data());
  return p;
}

void KvCache::attend(const void* q, bool q_bf16, void* out, const float* inv_freq,
                     KvAttentionKernel version, cudaStream_t stream) {
  const KvAttentionParams p = attention_params(q, q_bf16, out, inv_freq, version);
  if (const cudaError_t err = kernels::launch_kv_attention(p, version, stream);
      err != cudaSuccess) {
    cuda_fail("attend", err);
  }
}

void KvCache::dequantize(int b, int h, float* k, float* v, cudaStream_t stream) const {
  if (b < 0 || b >= batch_ || h < 0 || h >= config_.n_kv_heads) {
    fail("kv cache: dequantize: sequence {} head {} outside the {} sequences of {} KV heads", b, h,
         batch_, config_.n_kv_heads);
  }
  if (const cudaError_t err = kernels::launch_kv_dequantize(view_, b, h, lengths_[b], k, v, stream);
      err != cudaSuccess) {
    cuda_fail("dequantize", err);
  }
}

int64_t KvCache::attention_bytes(double k_outlier_fraction) const {
  const KvLayout& L = view_.layout;
  const int D = L.head_dim;
  // Per quantized token and KV head: codes, and KVQuant's v_index word and key outliers, or
  // KIVI's parameters; per token (KVQuant's token section): the value scales and the row of value
  // outlier entries (a head reads its own, the heads together read the row).
  double per_token = L.k_row_words * 4.0 + D * 4.0 / L.codes_per_word;
  double per_row = 0.0;
  if (L.method == KvMethod::kNuq) {
    per_token += 4.0 + k_outlier_fraction * D * 4.0;
    per_row = L.v_vectors * 4.0 + L.v_out_per_row * 4.0;
  } else {
    per_token += (D / L.group) * 4.0 + (D / 2) * 8.0 / L.group;
  }
  double bytes = 0.0;
  for (int b = 0; b < batch_; ++b) {
    const int64_t nq = view_.n_quant(lengths_[b]);
    bytes += nq * (config_.n_kv_heads * per_token + per_row) +
             config_.n_kv_heads * (lengths_[b] - nq) * D * 4.0;
  }
  return static_cast<int64_t>(bytes);
}

uint64_t KvCache::k_overflow() const {
  unsigned long long n = 0;
  check_cuda(cudaMemcpy(&n, view_.k_overflow, 8, cudaMemcpyDeviceToHost),
             "read the overflow counter");
  return n;
}

KvImage KvCache::snapshot() const {
  check_cuda(cudaDeviceSynchronize(), "synchronize");
  KvImage im;
  im.batch = batch_;
  im.pages_per_seq = view_.pages_per_seq;
  auto get = [](auto* dst, const auto& src, const char* what) {
    dst->resize(src.bytes() / sizeof((*dst)[0]));
    if (!dst->empty()) {
      check_cuda(cudaMemcpy(dst->data(), src.data(), src.bytes(), cudaMemcpyDeviceToHost), what);
    }
  };
  get(&im.pool, buf_->pool, "copy the pool");
  get(&im.page_table, buf_->table, "copy the page table");
  im.seq_len.resize(buf_->seq_len.bytes() / sizeof(im.seq_len[0]));  // the current buffer
  check_cuda(
      cudaMemcpy(im.seq_len.data(), view_.seq_len, buf_->seq_len.bytes(), cudaMemcpyDeviceToHost),
      "copy the lengths");
  get(&im.ring_k, buf_->ring_k, "copy the window");
  get(&im.ring_v, buf_->ring_v, "copy the window");
  if (config_.format.n_sink > 0) {
    get(&im.sink_k, buf_->sink_k, "copy the sinks");
    get(&im.sink_v, buf_->sink_v, "copy the sinks");
  }
  im.k_overflow = k_overflow();
  return im;
}

}  // namespace kvq::runtime
