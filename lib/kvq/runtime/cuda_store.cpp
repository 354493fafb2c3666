// CudaKvStore (cuda_store.h).
#include "kvq/runtime/cuda_store.h"

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/quant/rope.h"
#include "kvq/runtime/cache_config.h"
#include "kvq/runtime/kv_cache.h"
#include "kvq/runtime/torch_store.h"

namespace kvq::runtime {
namespace {

const __half* half_ptr(const at::Tensor& x) {
  return reinterpret_cast<const __half*>(x.data_ptr());
}

}  // namespace

CudaKvStore::CudaKvStore(const model::LlamaModel& m, const methods::Quantizer& q,
                         const StoreOptions& options)
    : m_(m), q_(q), max_batch_(options.max_batch) {
  const model::ModelConfig& c = m.config();
  if (!m.device().is_cuda()) fail("runtime: the compressed cache needs the model on a GPU");
  if (m.dtype() != at::kHalf && m.dtype() != at::kBFloat16) {
    fail("runtime: the compressed cache takes fp16 or bf16 models, found {} (use --dtype bf16)",
         c10::toString(m.dtype()));
  }
  std::vector<KvCacheConfig> configs;
  std::vector<quant::KvTables> tables;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    KvCacheConfig cc;
    cc.format = q.kv_format(l);
    cc.head_dim = static_cast<int>(c.head_dim);
    cc.n_kv_heads = static_cast<int>(c.n_kv_heads);
    cc.n_q_heads = static_cast<int>(c.n_heads);
    cc.max_batch = max_batch_;
    cc.max_seq_len = options.max_seq_len;
    cc.n_pages = 1;  // sized below, once the layout is known
    tables.push_back(q.kv_tables(l));
    check_kv_config(&cc, tables.back().k_levels.empty() ? nullptr : &tables.back());
    formats_.push_back(cc.format);
    configs.push_back(cc);
  }
  page_size_ = configs[0].page_size;
  for (const KvCacheConfig& cc : configs) {
    if (cc.page_size != page_size_) {
      fail("runtime: layers with different page sizes ({} and {} tokens) are not served",
           page_size_, cc.page_size);
    }
    const KvLayout layout = cc.layout();
    page_bytes_ += static_cast<double>(layout.page_bytes);
    fp16_bytes_per_seq_ += 2.0 * 2.0 * cc.n_kv_heads * cc.head_dim *
                           static_cast<double>(cc.format.n_sink + cc.ring_size());
  }
  const double fixed = fp16_bytes_per_seq_ * max_batch_;
  n_pages_ =
      static_cast<int64_t>((static_cast<double>(options.kv_mem_bytes) - fixed) / page_bytes_);
  if (n_pages_ < 1) {
    fail(
        "--kv-mem: {:.3f} GiB holds no page: the {} sequences' fp16 tokens take {:.3f} GiB and a "
        "page of {} tokens {:.1f} KiB",
        options.kv_mem_bytes / double(1 << 30), max_batch_, fixed / double(1 << 30), page_size_,
        page_bytes_ / 1024.0);
  }
  for (int64_t l = 0; l < c.n_layers; ++l) {
    configs[l].n_pages = n_pages_;
    layers_.push_back(
        std::make_unique<KvCache>(configs[l], tables[l].k_levels.empty() ? nullptr : &tables[l]));
  }
  const std::vector<float> inv = quant::rope_inv_freq(c.rope_theta, c.head_dim, c.rope_scaling);
  inv_freq_ = at::tensor(at::ArrayRef<float>(inv)).to(m.device());
}

CudaKvStore::~CudaKvStore() = default;

std::string CudaKvStore::name() const {
  return fmt::format("compressed pages on {} (CUDA kernels), {} pages of {} tokens",
                     m_.device().str(), n_pages_, page_size_);
}

void CudaKvStore::add(int64_t capacity) {
  if (size_ >= max_batch_) fail("runtime: all {} sequence slots are in use", max_batch_);
  if (capacity < 1 || capacity > layers_[0]->config().max_seq_len) {
    fail("runtime: a sequence of {} tokens: expected 1..{} (the model's context)", capacity,
         layers_[0]->config().max_seq_len);
  }
  ++size_;  // the caches take the sequence at its prefill
}

void CudaKvStore::remove(int slot) {
  if (slot < 0 || slot >= size_) fail("runtime: no sequence in slot {}", slot);
  for (auto& cache : layers_) {
    if (slot < cache->batch()) cache->remove(slot, nullptr);
  }
  --size_;
}

int64_t CudaKvStore::length(int slot) const {
  const KvCache& last = *layers_.back();
  return slot < last.batch() ? last.length(slot) : 0;
}

at::Tensor CudaKvStore::prefill(int64_t layer, int slot, const at::Tensor& q, const at::Tensor& k,
                                const at::Tensor& v) {
  KvCache& cache = *layers_[layer];
  if (slot != cache.batch() || slot >= size_) {
    fail("runtime: the compressed cache prefills a new sequence in one chunk (slot {}, {} held)",
         slot, cache.batch());
  }
  const int64_t t = k.size(1);
  const at::Tensor k16 = k[0].to(at::kHalf).contiguous();  // [t, heads, d]
  const at::Tensor v16 = v[0].to(at::kHalf).contiguous();
  cache.add(t, half_ptr(k16), half_ptr(v16), nullptr);
  // The prompt attends as kvq eval defines it: the method's quantizer on the same fp16 K/V.
  const quant::KvCacheFormat& f = formats_[layer];
  const bool window = f.n_recent > 0 || f.flush > 1;
  at::Tensor kq = k16.clone(), vq = v16.clone();
  const int64_t a = std::min(f.n_sink, t), e = std::max(a, f.n_sink + f.n_quantized(t));
  if (e > a) {
    kq.narrow(0, a, e - a).copy_(q_.quantize_keys(layer, k16.narrow(0, a, e - a).unsqueeze(0))[0]);
    vq.narrow(0, a, e - a)
        .copy_(q_.quantize_values(layer, v16.narrow(0, a, e - a).unsqueeze(0))[0]);
  }
  const at::ScalarType dt = m_.dtype();
  auto rotated = [&](const at::Tensor& x) {
    return m_.apply_rope(x.to(dt).transpose(0, 1).unsqueeze(0), 0).squeeze(0);
  };
  return cached_attention(m_, f, q, 0, rotated(kq), vq.to(dt).transpose(0, 1),
                          window ? rotated(k16) : at::Tensor(),
                          window ? v16.to(dt).transpose(0, 1) : at::Tensor());
}

at::Tensor CudaKvStore::decode(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v) {
  KvCache& cache = *layers_[layer];
  const int64_t n = q.size(0);
  if (n != size_ || cache.batch() != size_) {
    fail("runtime decode: {} tokens for {} running sequences ({} prefilled)", n, size_,
         cache.batch());
  }
  const model::ModelConfig& c = m_.config();
  const at::Tensor k16 = k.reshape({n, c.n_kv_heads, c.head_dim}).to(at::kHalf).contiguous();
  const at::Tensor v16 = v.reshape({n, c.n_kv_heads, c.head_dim}).to(at::kHalf).contiguous();
  cache.append(half_ptr(k16), half_ptr(v16), nullptr);
  const at::Tensor qc = q.reshape({n, c.n_heads, c.head_dim}).contiguous();
  at::Tensor out = at::empty_like(qc);
  cache.attend(qc.data_ptr(), qc.scalar_type() == at::kBFloat16, out.data_ptr(),
               inv_freq_.data_ptr<float>(), kernels::kv_attention_best(cache.config().layout()),
               nullptr);
  return out.view({n, 1, c.q_dim()});
}

void CudaKvStore::fill_random(int slot, int64_t n) {
  if (slot < 0 || slot >= size_ || slot != layers_[0]->batch()) {
    fail("runtime: fill: slot {} does not hold a new sequence ({} of {} slots filled)", slot,
         layers_[0]->batch(), size_);
  }
  size_t done = 0;
  try {
    for (; done < layers_.size(); ++done) {
      const quant::KvCacheFormat& f = formats_[done];
      layers_[done]->add_random(n, f.key_outliers() ? f.outlier_fraction : 0.0,
                                static_cast<uint32_t>(1000 * slot + done), nullptr);
    }
  } catch (...) {
    for (size_t l = 0; l < done; ++l) layers_[l]->remove(slot, nullptr);
    throw;
  }
}

CacheCost CudaKvStore::cost() const {
  const model::ModelConfig& c = m_.config();
  CacheCost r;
  r.bytes_per_token = page_bytes_ / static_cast<double>(page_size_);
  r.bits_per_element = r.bytes_per_token * 8.0 / (2.0 * c.n_layers * c.n_kv_heads * c.head_dim);
  r.fp16_bytes_per_seq = fp16_bytes_per_seq_;
  for (const auto& layer : layers_) r.key_outliers_dropped += layer->k_overflow();
  r.detail = fmt::format(
      "pages: codes, scales, value-outlier entries and key-outlier room as allocated ({} B per "
      "page of {} tokens, all layers); fp16 sinks and window {:.0f} B per sequence",
      page_bytes_, page_size_, fp16_bytes_per_seq_);
  return r;
}

}  // namespace kvq::runtime
