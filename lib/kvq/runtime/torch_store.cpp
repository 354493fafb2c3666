// TorchKvStore and the attention over a cache as kvq eval defines it (torch_store.h).
#include "kvq/runtime/torch_store.h"

#include <algorithm>
#include <atomic>

#include <ATen/TensorIndexing.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <fmt/format.h>
#include <torch/version.h>

#include "kvq/common/error.h"
#include "kvq/methods/bits.h"

namespace kvq::runtime {

void check_runtime_method(const methods::Quantizer& q, int64_t n_layers) {
  const methods::MethodSpec& spec = q.spec();
  const std::string name = q.label();
  if (spec.post_rope) {
    fail(
        "runtime: method '{}': keys quantized after RoPE (-post) are not served (a cached key "
        "would be quantized at each query's position); fit the pre-RoPE method",
        name);
  }
  for (int64_t l = 0; l < std::max<int64_t>(n_layers, 1); ++l) {
    const quant::KvCacheFormat f = q.kv_format(l);
    if (f.key_time_group > 0 && f.flush % f.key_time_group != 0) {
      fail(
          "runtime: method '{}': keys are quantized in groups of {} tokens but tokens leave full "
          "precision {} at a time, so a group would need tokens not generated yet",
          name, f.key_time_group, f.flush);
    }
    if (spec.kind == methods::MethodKind::kFp8 &&
        (q.key_params(l).amax <= 0 || q.value_params(l).amax <= 0)) {
      fail(
          "runtime: method '{}': fp8 without a calibrated scale takes it from all tokens at once; "
          "fit it from calib.h5 (kvq fit)",
          name);
    }
  }
}

at::Tensor cached_attention(const model::LlamaModel& m, const quant::KvCacheFormat& format,
                            const at::Tensor& q, int64_t start, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& k_full,
                            const at::Tensor& v_full) {
  const int64_t t = q.size(1), n = start + t;
  model::KVView view;
  if (k_full.defined() || v_full.defined()) {
    // Query i sees token j quantized from the sink up to what its cache length has quantized.
    std::vector<int64_t> bound(t);
    for (int64_t i = 0; i < t; ++i) bound[i] = format.n_sink + format.n_quantized(start + i + 1);
    const auto opt = at::TensorOptions().dtype(at::kLong);
    const at::Tensor j = at::arange(n, opt).unsqueeze(0);
    const at::Tensor b = at::tensor(bound, opt).unsqueeze(1);
    const at::Tensor quantized = ((j >= format.n_sink) & (j < b)).to(q.device());
    if (k_full.defined()) view.key_quantized = quantized;
    if (v_full.defined()) view.value_quantized = quantized;
  }
  auto batch_of_one = [](const at::Tensor& x) { return x.defined() ? x.unsqueeze(0) : x; };
  return m.attention(m.apply_rope(q.transpose(1, 2), start), k.unsqueeze(0), v.unsqueeze(0), view,
                     batch_of_one(k_full), batch_of_one(v_full));
}

#if TORCH_VERSION_MAJOR >= 2
namespace {

// One call of LibTorch's fused attention for decode rows (q [rows, heads, queries, head_dim], k
// and v [rows, heads, n, head_dim], no mask). SDPA itself picks cuDNN's fused kernel on Hopper,
// and cuDNN builds an execution graph for every key length it has not seen (tens of ms each:
// a decode step's length is always new, so every step of a sequence paid one; `kvq bench
// serve`'s first 1-client request took 10 s for 128 tokens on an H100). FlashAttention-2 reads
// K and V at the same speed (bench/sdpa_strides.py: 0.72-0.75 ms at 128K either way) with no
// per-shape work, so the rows go to it where it applies (fp16 or bf16, head_dim a multiple of 8
// up to 256, an sm80+ GPU), and to SDPA's own choice otherwise or once flash has refused.
at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  static std::atomic<bool> flash_refused{false};
  const bool half = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  const int64_t d = q.size(-1);
  if (half && d % 8 == 0 && d <= 256 && !flash_refused.load(std::memory_order_relaxed)) {
    try {
      return std::get<0>(at::_scaled_dot_product_flash_attention(q, k, v));
    } catch (const c10::OutOfMemoryError&) {
      throw;  // the device is full, not flash's to refuse: the caller reports it
    } catch (const c10::Error&) {
      flash_refused.store(true, std::memory_order_relaxed);  // e.g. a GPU before sm80
    }
  }
  return at::scaled_dot_product_attention(q, k, v);
}

// FlashAttention-2 over rows of different lengths in one call: its varlen form, the pool's rows
// as one token axis (row i's tokens at [i * cap, i * cap + used[i])) and one query per row.
// aten::_flash_attention_forward is a private op whose arguments change between releases, so
// it is called boxed, its arguments filled by name: a release without `seqused_k` (or with an
// argument this code does not know and that has no default) gives an undefined tensor, as does
// a refusal, and the caller attends row by row. q [b, n_heads, head_dim]; k, v [b * cap,
// n_kv_heads, head_dim]; cu_q = 0..b, cu_k = 0, cap, .., b * cap and used int32 on q's device.
at::Tensor flash_varlen(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const RaggedRows& rows) {
  static std::atomic<bool> refused{false};
  static const auto op =
      c10::Dispatcher::singleton().findSchema({"aten::_flash_attention_forward", ""});
  const bool half = q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16;
  const int64_t d = q.size(-1);
  if (!op || !half || d % 8 != 0 || d > 256 || refused.load(std::memory_order_relaxed)) return {};
  torch::jit::Stack stack;
  bool used = false;
  for (const c10::Argument& a : op->schema().arguments()) {
    const std::string& name = a.name();
    if (name == "query") {
      stack.emplace_back(q);
    } else if (name == "key") {
      stack.emplace_back(k);
    } else if (name == "value") {
      stack.emplace_back(v);
    } else if (name == "cum_seq_q") {
      stack.emplace_back(rows.cu_q);
    } else if (name == "cum_seq_k") {
      stack.emplace_back(rows.cu_k);
    } else if (name == "max_q") {
      stack.emplace_back(int64_t{1});
    } else if (name == "max_k") {
      stack.emplace_back(rows.max_k);
    } else if (name == "dropout_p") {
      stack.emplace_back(0.0);
    } else if (name == "is_causal" || name == "return_debug_mask") {
      stack.emplace_back(false);
    } else if (name == "seqused_k") {
      stack.emplace_back(rows.used);
      used = true;
    } else if (a.default_value()) {
      stack.push_back(*a.default_value());
    } else {
      refused.store(true, std::memory_order_relaxed);
      return {};
    }
  }
  if (!used) {
    refused.store(true, std::memory_order_relaxed);
    return {};
  }
  try {
    op->callBoxed(&stack);
  } catch (const c10::OutOfMemoryError&) {
    throw;
  } catch (const c10::Error&) {
    refused.store(true, std::memory_order_relaxed);
    return {};
  }
  return stack.front().toTensor();
}

// One decode step's attention on the GPU (fused_attention: K and V read once, no [heads, n] score
// tensor). q [b, n_heads, 1, head_dim] rotated; k, v the pool's rows [>= b, n_kv_heads,
// capacity, head_dim], views of [rows, capacity, n_kv_heads, head_dim]; row i attends over its
// first start[i] + 1 tokens. A KV head's query heads ride as its query rows ([b, n_kv_heads,
// group, head_dim], the same bytes as q): one query per head and no causal mask make that the
// same attention, and no backend repeats K and V for GQA. Rows of one length go in one call;
// rows of different lengths in one varlen call (`ragged`), or where that is refused each in its
// own call (an attention mask would pick another backend: SDPA's memory-efficient kernel, 5x
// slower for decode).
at::Tensor fused_decode(const model::ModelConfig& c, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& v, const std::vector<int64_t>& start,
                        const RaggedRows* ragged) {
  const int64_t b = q.size(0);
  const at::Tensor qg = q.reshape({b, c.n_kv_heads, c.n_heads / c.n_kv_heads, c.head_dim});
  auto attend = [&](int64_t row, int64_t rows, int64_t n) {
    return fused_attention(qg.narrow(0, row, rows), k.narrow(0, row, rows).narrow(2, 0, n),
                           v.narrow(0, row, rows).narrow(2, 0, n));
  };
  at::Tensor out;
  if (std::all_of(start.begin(), start.end(), [&](int64_t x) { return x == start[0]; })) {
    out = attend(0, b, start[0] + 1);
  } else {
    const at::Tensor kt = k.narrow(0, 0, b).permute({0, 2, 1, 3});  // [b, cap, kv heads, d]
    const at::Tensor vt = v.narrow(0, 0, b).permute({0, 2, 1, 3});
    if (ragged != nullptr && kt.is_contiguous() && vt.is_contiguous()) {
      const int64_t cap = k.size(2);
      out = flash_varlen(q.reshape({b, c.n_heads, c.head_dim}),
                         kt.view({b * cap, c.n_kv_heads, c.head_dim}),
                         vt.view({b * cap, c.n_kv_heads, c.head_dim}), *ragged);
    }
    if (!out.defined()) {
      std::vector<at::Tensor> rows;
      rows.reserve(start.size());
      for (int64_t i = 0; i < b; ++i) rows.push_back(attend(i, 1, start[i] + 1));
      out = at::cat(rows, 0);
    }
  }
  return out.reshape({b, 1, c.q_dim()});
}

}  // namespace
#endif

TorchKvStore::TorchKvStore(const model::LlamaModel& m, const methods::Quantizer& q,
                           const StoreOptions& options)
    : m_(m), q_(q), max_batch_(options.max_batch), max_seq_len_(options.max_seq_len) {
  const model::ModelConfig& c = m.config();
  if (max_batch_ < 1) fail("runtime: max batch: expected >= 1, found {}", max_batch_);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    formats_.push_back(q.kv_format(l));
    window_ = window_ || (formats_.back().quantizes() &&
                          (formats_.back().n_recent > 0 || formats_.back().flush > 1));
  }
  const double token_bytes = static_cast<double>(c.n_layers) * c.n_kv_heads * c.head_dim *
                             static_cast<double>(at::elementSize(m.dtype())) * (window_ ? 5 : 2);
  const int64_t full = (max_seq_len_ + kPageSize - 1) / kPageSize;
  n_pages_ = options.kv_mem_bytes > 0
                 ? static_cast<int64_t>(static_cast<double>(options.kv_mem_bytes) /
                                        (token_bytes * kPageSize))
                 : int64_t{max_batch_} * full;
}

std::string TorchKvStore::name() const {
  return fmt::format("LibTorch on {} ({}), the quantizer's dequantized values", m_.device().str(),
                     c10::toString(m_.dtype()));
}

int64_t TorchKvStore::bound(int64_t layer, int64_t n) const {
  const quant::KvCacheFormat& f = formats_[layer];
  return f.quantizes() ? f.n_sink + f.n_quantized(n) : 0;
}

bool TorchKvStore::fits(int64_t capacity) const {
  if (!pooled()) return true;
  // An empty store reallocates to exactly one row (as long as the pages allow it).
  const int64_t cap = size_ == 0 ? capacity : std::max(pool_cap_, capacity);
  return pool_holds(size_ + 1, cap);
}

void TorchKvStore::add(int64_t capacity) {
  if (size_ >= max_batch_) fail("runtime: all {} sequence slots are in use", max_batch_);
  if (capacity < 1 || capacity > max_seq_len_) {
    fail("runtime: a sequence of {} tokens: expected 1..{} (the model's context)", capacity,
         max_seq_len_);
  }
  const model::ModelConfig& c = m_.config();
  Slot s;
  s.capacity = capacity;
  s.n.assign(c.n_layers, 0);
  if (pooled()) {
    if (!fits(capacity)) {
      fail("runtime: {} sequences of up to {} tokens exceed the cache's {} pages of {} tokens",
           size_ + 1, std::max(pool_cap_, capacity), n_pages_, kPageSize);
    }
    if (size_ == 0 && (pool_cap_ < capacity || pool_rows_ * pool_cap_ > capacity)) {
      grow_pool(1, capacity);  // the fewest bytes for what runs now
    } else if (size_ >= pool_rows_ || capacity > pool_cap_) {
      const int64_t cap = std::max(pool_cap_, capacity);
      // Room for twice the rows where the budget allows, so that sequences joining one by one
      // do not copy the pool each time.
      int64_t rows = std::min<int64_t>(max_batch_, std::max<int64_t>(size_ + 1, 2 * pool_rows_));
      if (!pool_holds(rows, cap)) rows = std::max<int64_t>(size_ + 1, pool_rows_);
      if (!pool_holds(rows, cap)) rows = size_ + 1;
      grow_pool(rows, cap);
    }
    slots_.push_back(std::move(s));
    point_at_row(size_);
    ++size_;
    return;
  }
  const auto opt = at::TensorOptions().dtype(m_.dtype()).device(m_.device());
  auto make = [&] { return at::zeros({c.n_kv_heads, capacity, c.head_dim}, opt); };
  for (int64_t l = 0; l < c.n_layers; ++l) {
    s.k.push_back(make());
    s.v.push_back(make());
    if (window_) {
      s.k_full.push_back(make());
      s.v_full.push_back(make());
      s.k_pre.push_back(make());
    }
  }
  slots_.push_back(std::move(s));
  ++size_;
}

void TorchKvStore::grow_pool(int64_t rows, int64_t cap) {
  const model::ModelConfig& c = m_.config();
  const auto opt = at::TensorOptions().dtype(m_.dtype()).device(m_.device());
  pool_k_.resize(c.n_layers);
  pool_v_.resize(c.n_layers);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    for (auto* pool : {&pool_k_[l], &pool_v_[l]}) {
      // [rows, n_kv_heads, cap, head_dim] over memory laid out [rows, cap, n_kv_heads,
      // head_dim]: the rows are then one token axis for the varlen attention (fused_decode).
      at::Tensor next = at::zeros({rows, cap, c.n_kv_heads, c.head_dim}, opt).permute({0, 2, 1, 3});
      for (int i = 0; i < size_; ++i) {
        const int64_t n = slots_[i].n[l];
        if (n > 0) next[i].narrow(1, 0, n).copy_((*pool)[i].narrow(1, 0, n));
      }
      *pool = next;
    }
    for (int i = 0; i < size_; ++i) {  // the old layer is freed with its last view
      slots_[i].k[l] = pool_k_[l][i].narrow(1, 0, slots_[i].capacity);
      slots_[i].v[l] = pool_v_[l][i].narrow(1, 0, slots_[i].capacity);
    }
  }
  pool_rows_ = rows;
  pool_cap_ = cap;
}

void TorchKvStore::point_at_row(int slot) {
  Slot& s = slots_[slot];
  const int64_t layers = static_cast<int64_t>(s.n.size());
  s.k.resize(layers);
  s.v.resize(layers);
  for (int64_t l = 0; l < layers; ++l) {
    s.k[l] = pool_k_[l][slot].narrow(1, 0, s.capacity);
    s.v[l] = pool_v_[l][slot].narrow(1, 0, s.capacity);
  }
}

void TorchKvStore::remove(int slot) {
  if (slot < 0 || slot >= size_) fail("runtime: no sequence in slot {}", slot);
  const int last = size_ - 1;
  if (slot != last) {
    if (pooled()) {  // the last sequence's tokens move into the freed row
      const Slot& s = slots_[last];
      for (size_t l = 0; l < s.n.size(); ++l) {
        const int64_t n = s.n[l];
        if (n == 0) continue;
        pool_k_[l][slot].narrow(1, 0, n).copy_(pool_k_[l][last].narrow(1, 0, n));
        pool_v_[l][slot].narrow(1, 0, n).copy_(pool_v_[l][last].narrow(1, 0, n));
      }
    }
    std::swap(slots_[slot], slots_.back());
  }
  slots_.pop_back();
  --size_;
  if (pooled() && slot != last) point_at_row(slot);
}

void TorchKvStore::append(int64_t layer, Slot& s, const at::Tensor& k, const at::Tensor& v) {
  const int64_t t = k.size(0), n0 = s.n[layer], n1 = n0 + t;
  if (n1 > s.capacity) {
    fail("runtime: sequence full: {} tokens reserved, {} needed", s.capacity, n1);
  }
  const at::Tensor k_pre = k.transpose(0, 1);  // [heads, t, d]
  const at::Tensor v_h = v.transpose(0, 1);
  const at::Tensor k_rot = m_.apply_rope(k_pre.unsqueeze(0), n0).squeeze(0);
  s.k[layer].narrow(1, n0, t).copy_(k_rot);
  s.v[layer].narrow(1, n0, t).copy_(v_h);
  if (window_) {
    s.k_full[layer].narrow(1, n0, t).copy_(k_rot);
    s.v_full[layer].narrow(1, n0, t).copy_(v_h);
    s.k_pre[layer].narrow(1, n0, t).copy_(k_pre);
  }
  // Tokens [a, e) leave full precision now: quantized from their pre-RoPE originals, as kvq
  // eval's hook quantizes them, then rotated at their positions.
  const int64_t a = bound(layer, n0), e = bound(layer, n1);
  if (e > a) {
    const at::Tensor src_k =
        window_ ? s.k_pre[layer].narrow(1, a, e - a) : k_pre.narrow(1, a - n0, e - a);
    const at::Tensor src_v =
        window_ ? s.v_full[layer].narrow(1, a, e - a) : v_h.narrow(1, a - n0, e - a);
    const at::Tensor kq = q_.quantize_keys(layer, src_k.transpose(0, 1).unsqueeze(0), &keys_);
    const at::Tensor vq = q_.quantize_values(layer, src_v.transpose(0, 1).unsqueeze(0), &values_);
    s.k[layer].narrow(1, a, e - a).copy_(m_.apply_rope(kq.transpose(1, 2), a).squeeze(0));
    s.v[layer].narrow(1, a, e - a).copy_(vq.squeeze(0).transpose(0, 1));
  }
  s.n[layer] = n1;
}

at::Tensor TorchKvStore::prefill(int64_t layer, int slot, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v) {
  if (slot < 0 || slot >= size_) fail("runtime: no sequence in slot {}", slot);
  Slot& s = slots_[slot];
  const int64_t n0 = s.n[layer], n1 = n0 + k.size(1);
  append(layer, s, k[0], v[0]);
  auto upto = [&](const std::vector<at::Tensor>& x) {
    return window_ ? x[layer].narrow(1, 0, n1) : at::Tensor();
  };
  return cached_attention(m_, formats_[layer], q, n0, s.k[layer].narrow(1, 0, n1),
                          s.v[layer].narrow(1, 0, n1), upto(s.k_full), upto(s.v_full));
}

at::Tensor TorchKvStore::decode(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& v) {
  if (q.size(0) != size_) {
    fail("runtime decode: {} tokens for {} running sequences", q.size(0), size_);
  }
  if (pooled()) return decode_pooled(layer, q, k, v);
  std::vector<at::Tensor> out;
  out.reserve(size_);
  for (int i = 0; i < size_; ++i) {
    out.push_back(prefill(layer, i, q.narrow(0, i, 1), k.narrow(0, i, 1), v.narrow(0, i, 1)));
  }
  return at::cat(out, 0);
}

at::Tensor TorchKvStore::decode_pooled(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v) {
  const int64_t b = size_;
  std::vector<int64_t> start(b);
  for (int i = 0; i < size_; ++i) {
    const Slot& s = slots_[i];
    start[i] = s.n[layer];
    if (start[i] + 1 > s.capacity) {
      fail("runtime: sequence full: {} tokens reserved, {} needed", s.capacity, start[i] + 1);
    }
  }
  const int64_t first = start[0], n = *std::max_element(start.begin(), start.end()) + 1;
  // Equal lengths (kvq bench e2e, or one sequence): RoPE at one offset, no mask and no host to
  // device copy. Otherwise the positions go to the device once per step (a pageable copy
  // would wait for the queued work at every layer).
  const bool equal = std::all_of(start.begin(), start.end(), [&](int64_t x) { return x == first; });
  at::Tensor pos;
  if (!equal) {
    if (start != pos_host_ || !pos_dev_.defined() || ragged_cap_ != pool_cap_) {
      at::Tensor host = at::tensor(start, at::TensorOptions().dtype(at::kLong));
      if (q.is_cuda()) host = host.pin_memory();
      pos_dev_ = host.to(q.device(), /*non_blocking=*/true);
      pos_host_ = start;
      if (q.is_cuda()) {  // the rows for the varlen attention: lengths, where each row starts
        const auto i32 = pos_dev_.options().dtype(at::kInt);
        ragged_.used = (pos_dev_ + 1).to(at::kInt);
        ragged_.cu_q = at::arange(b + 1, i32);
        ragged_.cu_k = at::arange(0, (b + 1) * pool_cap_, pool_cap_, i32);
      }
      ragged_cap_ = pool_cap_;
    }
    pos = pos_dev_.view({b, 1});
  }
  auto rotate = [&](const at::Tensor& x) {  // x [b, heads, 1, head_dim]
    return equal ? m_.apply_rope(x, first) : m_.apply_rope_at(x, pos, n);
  };
  if (formats_[layer].quantizes()) {
    for (int i = 0; i < size_; ++i) append(layer, slots_[i], k[i], v[i]);
  } else {  // the plain cache: every slot's token in one rotation and one write
    const at::Tensor k_rot = rotate(k.transpose(1, 2)).squeeze(2);
    if (equal) {
      pool_k_[layer].narrow(0, 0, b).select(2, first).copy_(k_rot);
      pool_v_[layer].narrow(0, 0, b).select(2, first).copy_(v.squeeze(1));
    } else {
      using at::indexing::Slice;
      const at::Tensor rows = at::arange(b, pos.options());
      pool_k_[layer].index_put_({rows, Slice(), pos.view({b})}, k_rot);
      pool_v_[layer].index_put_({rows, Slice(), pos.view({b})}, v.squeeze(1));
    }
    for (Slot& s : slots_) ++s.n[layer];
  }
  const at::Tensor q_rot = rotate(q.transpose(1, 2));
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    ragged_.max_k = n;
    return fused_decode(m_.config(), q_rot, pool_k_[layer], pool_v_[layer], start,
                        equal ? nullptr : &ragged_);
  }
#endif
  model::KVView view;  // each row sees its own tokens
  if (!equal) view.key_valid = at::arange(n, pos.options()).unsqueeze(0).lt(pos + 1);
  return m_.attention(q_rot, pool_k_[layer].narrow(0, 0, b).narrow(2, 0, n),
                      pool_v_[layer].narrow(0, 0, b).narrow(2, 0, n), view);
}

void TorchKvStore::fill_random(int slot, int64_t n) {
  if (slot < 0 || slot >= size_) fail("runtime: no sequence in slot {}", slot);
  Slot& s = slots_[slot];
  if (s.n.back() != 0) fail("runtime: fill: the sequence in slot {} is not empty", slot);
  if (n < 1 || n > s.capacity) {
    fail("runtime: fill: expected 1..{} tokens (the sequence's capacity), found {}", s.capacity, n);
  }
  for (size_t l = 0; l < s.n.size(); ++l) {
    for (auto* x : {&s.k, &s.v, &s.k_full, &s.v_full, &s.k_pre}) {
      if (!x->empty()) (*x)[l].narrow(1, 0, n).uniform_(-1.0, 1.0);
    }
    s.n[l] = n;
  }
}

CacheCost TorchKvStore::cost() const {
  const model::ModelConfig& c = m_.config();
  const methods::BitsBreakdown b =
      methods::cache_bits(q_, c.n_layers, c.n_kv_heads, c.head_dim, max_seq_len_, keys_, values_);
  CacheCost r;
  r.bits_per_element = b.total();
  r.bytes_per_token = b.total() / 8.0 * 2.0 * c.n_layers * c.n_kv_heads * c.head_dim;
  r.detail = fmt::format(
      "codes {:.3f} + scales {:.3f} + outliers {:.3f} + fp16 tokens {:.3f} bits per element at "
      "{} tokens (the format; this store holds the dequantized tensors)",
      b.codes, b.params, b.outliers, b.fp16, max_seq_len_);
  return r;
}

}  // namespace kvq::runtime
