// Helpers for the compressed-KV-cache GPU tests (test_kv_*.cpp): seeded random histories and
// quantizers, building a KvCache through prefill + appends with every buffer poisoned first,
// and error metrics against the CPU reference (kernels/kv_ref.h). Header-only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kv_ref.h"
#include "kvq/quant/rope.h"
#include "kvq/runtime/kv_cache.h"
#include "kvq/runtime/cache_config.h"
#include "support/gpu.h"

namespace kvq::kernels {

using quant::rope_inv_freq;
using runtime::KvCache;

namespace test {

using ::kvq::test::DeviceBuffer;
using ::kvq::test::to_device;

// Cache formats by hand, including ones no method string makes (a KVQuant recent window, KIVI
// with a sliding window): the cache's window arithmetic is general, and tested so. KVQuant
// values per token over all KV heads (kToken, the default of kvq fit) or per token and head
// (kTokenHead, -vhead).
inline quant::KvCacheFormat nuq_format(int bits, int n_sink, int n_recent, double fraction,
                                       quant::ValueVector values) {
  quant::KvCacheFormat f;
  f.method = "nuq" + std::to_string(bits) +
             (values == quant::ValueVector::kTokenHead ? "-vhead" : "") + " (test)";
  f.codec = quant::KvCodec::kNuq;
  f.key_bits = f.value_bits = bits;
  f.n_sink = n_sink;
  f.n_recent = n_recent;
  f.value_vector = values;
  f.outlier_fraction = fraction;
  return f;
}

inline const char* values_name(quant::ValueVector values) {
  return values == quant::ValueVector::kToken ? "values per token" : "values per token and head";
}

// KIVI's residual of R tokens is n_recent = 0, flush = R; flush = group with n_recent = W is a
// sliding window of W tokens quantized a group at a time.
inline quant::KvCacheFormat kivi_format(int bits, int group, int n_sink, int n_recent, int flush) {
  quant::KvCacheFormat f;
  f.method = "kivi" + std::to_string(bits) + " (test)";
  f.codec = quant::KvCodec::kKivi;
  f.key_bits = f.value_bits = bits;
  f.key_time_group = f.channel_group = group;
  f.n_sink = n_sink;
  f.n_recent = n_recent;
  f.flush = flush;
  return f;
}

// Under compute-sanitizer (device.sh sets KVQ_SANITIZER) the tests run their small cases only.
inline bool sanitizer_run() { return std::getenv("KVQ_SANITIZER") != nullptr; }

struct History {
  std::vector<std::vector<uint16_t>> k, v;  // [batch] -> [n][n_kv_heads][head_dim] fp16 bits
};

// Keys with a spread of per-channel scales and offsets (as real pre-RoPE keys have), values
// roughly normal with occasional large elements, all fp16.
inline History random_history(const std::vector<int64_t>& lengths, int n_kv_heads, int head_dim,
                              uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> ch_scale(static_cast<size_t>(n_kv_heads) * head_dim), ch_off(ch_scale.size());
  for (size_t i = 0; i < ch_scale.size(); ++i) {
    ch_scale[i] = 0.2f + 2.0f * unit(rng) * unit(rng);
    ch_off[i] = 0.5f * normal(rng);
  }
  History h;
  for (const int64_t n : lengths) {
    std::vector<uint16_t> k(static_cast<size_t>(n) * ch_scale.size()), v(k.size());
    for (size_t i = 0; i < k.size(); ++i) {
      const size_t ch = i % ch_scale.size();
      float x = normal(rng);
      if (unit(rng) < 0.01f) x *= 4.0f;
      k[i] = kv_half_bits(ch_off[ch] + ch_scale[ch] * x);
      float y = normal(rng);
      if (unit(rng) < 0.02f) y *= 5.0f;
      v[i] = kv_half_bits(y);
    }
    h.k.push_back(std::move(k));
    h.v.push_back(std::move(v));
  }
  return h;
}

// Levels: 2^bits sorted distinct values in [-1, 1]; key ranges: per-channel quantiles of the
// history at `tail` and 1 - tail (so about 2 * tail of the keys are outliers).
inline quant::KvTables random_quantizer(const History& hist, int bits, int n_kv_heads, int head_dim,
                                        double tail, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  quant::KvTables q;
  for (auto* levels : {&q.k_levels, &q.v_levels}) {
    const int n = 1 << bits;
    while (static_cast<int>(levels->size()) < n) {
      levels->clear();
      for (int i = 0; i < n; ++i) levels->push_back(i == 0 ? -1.0f : i == n - 1 ? 1.0f : unit(rng));
      std::sort(levels->begin(), levels->end());
      levels->erase(std::unique(levels->begin(), levels->end()), levels->end());
    }
  }
  const size_t n_ch = static_cast<size_t>(n_kv_heads) * head_dim;
  q.k_lo.assign(n_ch, -1.0f);
  q.k_hi.assign(n_ch, 1.0f);
  std::vector<float> xs;
  for (size_t ch = 0; ch < n_ch; ++ch) {
    xs.clear();
    for (const auto& k : hist.k) {
      for (size_t i = ch; i < k.size(); i += n_ch) xs.push_back(kv_half_float(k[i]));
    }
    if (xs.size() < 4) continue;
    std::sort(xs.begin(), xs.end());
    const auto at = [&](double f) { return xs[static_cast<size_t>(f * (xs.size() - 1))]; };
    q.k_lo[ch] = at(tail);
    q.k_hi[ch] = at(1.0 - tail);
  }
  return q;
}

// Uploads [batch][max_len][H][D] (zero-padded) for prefill, or one step [batch][H][D].
inline std::vector<uint16_t> gather(const std::vector<std::vector<uint16_t>>& seqs,
                                    const std::vector<int64_t>& first,
                                    const std::vector<int64_t>& count, int64_t width, size_t row) {
  std::vector<uint16_t> out(seqs.size() * width * row, 0);
  for (size_t b = 0; b < seqs.size(); ++b) {
    for (int64_t t = 0; t < count[b]; ++t) {
      std::copy_n(seqs[b].begin() + (first[b] + t) * row, row, out.begin() + (b * width + t) * row);
    }
  }
  return out;
}

// Poisons every device buffer of the cache (0xFF bytes: fp16 NaN, out-of-range codes).
inline void poison(const KvCache& cache) {
  const KvCacheView& v = cache.view();
  const KvCacheConfig& c = cache.config();
  const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim * 2;
  ASSERT_EQ(cudaMemset(v.pool, 0xFF, static_cast<size_t>(c.n_pages) * v.layout.page_bytes),
            cudaSuccess);
  ASSERT_EQ(cudaMemset(v.ring_k, 0xFF, c.max_batch * row * c.ring_size()), cudaSuccess);
  ASSERT_EQ(cudaMemset(v.ring_v, 0xFF, c.max_batch * row * c.ring_size()), cudaSuccess);
  if (c.format.n_sink > 0) {
    ASSERT_EQ(cudaMemset(v.sink_k, 0xFF, c.max_batch * row * c.format.n_sink), cudaSuccess);
    ASSERT_EQ(cudaMemset(v.sink_v, 0xFF, c.max_batch * row * c.format.n_sink), cudaSuccess);
  }
}

// Fills the cache with hist: prefill of each sequence but its last `appends` tokens, then that
// many decode steps (every sequence must be at least `appends` long).
inline void build(KvCache* cache, const History& hist, int appends) {
  const KvCacheConfig& c = cache->config();
  const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  std::vector<int64_t> pre, zero(hist.k.size(), 0), one(hist.k.size(), 1);
  int64_t width = 1;
  for (const auto& k : hist.k) {
    pre.push_back(static_cast<int64_t>(k.size() / row) - appends);
    width = std::max(width, pre.back());
  }
  poison(*cache);
  {
    const std::vector<uint16_t> k = gather(hist.k, zero, pre, width, row);
    const std::vector<uint16_t> v = gather(hist.v, zero, pre, width, row);
    const DeviceBuffer<uint16_t> dk = to_device(k), dv = to_device(v);
    cache->prefill(pre, width, reinterpret_cast<const __half*>(dk.data()),
                   reinterpret_cast<const __half*>(dv.data()), nullptr);
  }
  for (int step = 0; step < appends; ++step) {
    std::vector<int64_t> at(pre);
    for (auto& a : at) a += step;
    const DeviceBuffer<uint16_t> dk = to_device(gather(hist.k, at, one, 1, row));
    const DeviceBuffer<uint16_t> dv = to_device(gather(hist.v, at, one, 1, row));
    cache->append(reinterpret_cast<const __half*>(dk.data()),
                  reinterpret_cast<const __half*>(dv.data()), nullptr);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

struct ErrorStats {
  double worst_rel = 0.0;  // max over (sequence, query head) of |out - ref| / |ref|
  double max_abs = 0.0;
  int64_t n_bad = 0;  // NaN, Inf or poison left
  std::string worst;
};

// got: fp16 or bf16 bits [batch][n_q_heads][head_dim]; ref: double, same shape.
inline ErrorStats compare_out(const std::vector<uint16_t>& got, bool bf16,
                              const std::vector<double>& ref, int n_q_heads, int head_dim) {
  ErrorStats s;
  const size_t rows = ref.size() / head_dim;
  for (size_t r = 0; r < rows; ++r) {
    double num = 0.0, den = 0.0;
    for (int c = 0; c < head_dim; ++c) {
      const size_t i = r * head_dim + c;
      const double x = bf16 ? kv_bf16_float(got[i]) : kv_half_float(got[i]);
      if (!std::isfinite(x)) {
        ++s.n_bad;
        continue;
      }
      num += (x - ref[i]) * (x - ref[i]);
      den += ref[i] * ref[i];
      s.max_abs = std::max(s.max_abs, std::fabs(x - ref[i]));
    }
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    if (rel > s.worst_rel) {
      s.worst_rel = rel;
      std::ostringstream w;
      w << "sequence " << r / n_q_heads << " query head " << r % n_q_heads;
      s.worst = w.str();
    }
  }
  return s;
}

inline std::vector<float> random_queries(size_t n, uint32_t seed, bool bf16,
                                         std::vector<uint16_t>* bits) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(n);
  bits->resize(n);
  for (size_t i = 0; i < n; ++i) {
    (*bits)[i] = bf16 ? kv_bf16_bits(normal(rng)) : kv_half_bits(normal(rng));
    q[i] = bf16 ? kv_bf16_float((*bits)[i]) : kv_half_float((*bits)[i]);
  }
  return q;
}

}  // namespace test
}  // namespace kvq::kernels
