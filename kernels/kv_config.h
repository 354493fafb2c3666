// What one layer's compressed KV cache is made of: the method's format (one definition,
// quant/kv_cache_format.h, made by methods::Quantizer::kv_format), the shapes and the page
// pool. A plain struct: runtime::check_kv_config (lib/kvq/runtime/cache_config.h) validates it,
// refuses by name the formats the kernels cannot serve and fills the defaults; the kernels' CPU
// reference (kv_ref.h) and the cache (runtime/kv_cache.h) take only checked configurations.
#pragma once

#include <cstdint>

#include "kv_layout.h"
#include "kvq/quant/kv_cache_format.h"
#include "kvq/quant/kv_format.h"

namespace kvq::kernels {

struct KvCacheConfig {
  quant::KvCacheFormat format;  // codec kNuq or kKivi
  int head_dim = 128;           // 64 or 128
  int n_kv_heads = 1;
  int n_q_heads = 1;           // a multiple of n_kv_heads, at most kMaxQueryGroup per KV head
  int page_size = 0;           // tokens per page; 0: kv_default_page_size(bits)
  int k_outlier_capacity = 0;  // key outliers per page and KV head; 0: page_size * head_dim / 16
  int max_batch = 1;
  int64_t max_seq_len = 4096;  // tokens per sequence
  int64_t n_pages = 0;         // page pool; 0: max_batch full-length sequences

  KvMethod method() const {
    return format.codec == quant::KvCodec::kKivi ? KvMethod::kKivi : KvMethod::kNuq;
  }
  int bits() const { return format.key_bits; }
  // Tokens of a key group along time: KIVI's G; 1 for KVQuant (keys per channel, offline).
  int quant_group() const {
    return method() == KvMethod::kKivi ? static_cast<int>(format.key_time_group) : 1;
  }
  // The fp16 ring of recent tokens: the sliding window plus the tokens quantized together.
  int ring_size() const { return static_cast<int>(format.n_recent + format.flush); }
  int q_per_kv() const { return n_q_heads / n_kv_heads; }
  // Whether a value scale/offset covers a token over all KV heads (KVQuant's kToken).
  bool v_token() const {
    return method() == KvMethod::kNuq && format.value_vector == quant::ValueVector::kToken;
  }
  // Elements of one value vector: n_kv_heads * head_dim (kToken) or head_dim (kTokenHead).
  int64_t v_vector_size() const { return v_token() ? int64_t{n_kv_heads} * head_dim : head_dim; }
  // Value outlier entries per token (the token section's row, kv_layout.h): 2 *
  // outliers_per_side(v_vector_size(), fraction) per value vector, times n_kv_heads vectors
  // for kTokenHead; 0 for KIVI.
  int v_outliers_per_row() const {
    if (method() != KvMethod::kNuq) return 0;
    const int64_t per_vector =
        2 * quant::outliers_per_side(v_vector_size(), format.outlier_fraction);
    return static_cast<int>(per_vector * (v_token() ? 1 : n_kv_heads));
  }
  // The page layout of a checked configuration.
  KvLayout layout() const {
    return kv_make_layout(method(), bits(), head_dim, page_size, quant_group(), n_kv_heads,
                          method() == KvMethod::kNuq ? (v_token() ? 1 : n_kv_heads) : 0,
                          v_outliers_per_row(), k_outlier_capacity);
  }
};

// 256 tokens for B = 2, 4 and 320 for B = 3 (multiples of the 8 * codes-per-word block).
inline int kv_default_page_size(int bits) { return bits == 3 ? 320 : 256; }

// Key outliers a page holds per KV head by default: twice the calibrated rate (KVQuant's
// per-channel thresholds leave outlier_fraction of the calibration's elements outside) plus 64,
// at most every element. A page that gets more keeps the first ones in (row, channel) order and
// counts the rest (KvCache::k_overflow, reported by kvq generate and eval --runtime).
inline int64_t kv_default_k_outlier_capacity(int page_size, int head_dim, double outlier_fraction) {
  const int64_t cells = int64_t{page_size} * head_dim;
  const auto room =
      static_cast<int64_t>(2.0 * outlier_fraction * static_cast<double>(cells) + 0.999999) + 64;
  return room < cells ? room : cells;
}

}  // namespace kvq::kernels
