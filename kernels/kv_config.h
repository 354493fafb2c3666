// What a compressed KV cache is configured with (one layer): the method's parameters, the shapes,
// the quantizer fitted offline (KVQuant) and the limits of the page pool. Host code only; the
// checks here throw kvq::Error naming the field, the expected and the found value, so that the
// API (kv_cache.h) and the reference (kv_ref.h) agree on what is accepted.
#pragma once

#include <cstdint>
#include <vector>

#include "kv_layout.h"

namespace kvq::kernels {

struct KvCacheConfig {
  KvMethod method = KvMethod::kNuq;
  int bits = 3;                      // 2, 3, 4 (KIVI: 2, 4)
  int head_dim = 128;                // 64 or 128
  int n_kv_heads = 1;
  int n_q_heads = 1;                 // a multiple of n_kv_heads, at most 8 per KV head
  int page_size = 0;                 // tokens per page; 0: kv_default_page_size(bits)
  int n_sink = 0;                    // first tokens kept in fp16
  int n_recent = 0;                  // latest tokens kept in fp16 (KIVI's residual R)
  int kivi_group = 32;               // KIVI: G tokens per key group, G channels per value group
  double v_outlier_fraction = 0.01;  // KVQuant values: fraction kept in fp16 per token
  bool k_outliers = true;            // KVQuant keys: keep elements outside [lo, hi] in fp16
  int k_outlier_capacity = 0;        // per page and KV head; 0: page_size * head_dim / 16
  int max_batch = 1;
  int64_t max_seq_len = 4096;        // tokens per sequence
  int64_t n_pages = 0;               // page pool; 0: max_batch full-length sequences

  int quant_group() const { return method == KvMethod::kNuq ? 1 : kivi_group; }
  int ring_size() const { return n_recent + quant_group(); }
  int q_per_kv() const { return n_q_heads / n_kv_heads; }
};

// The KVQuant quantizer of one layer (quant.h5), host memory.
struct NuqQuantizer {
  std::vector<float> k_levels;  // [2^bits] ascending in [-1, 1]
  std::vector<float> v_levels;  // [2^bits]
  std::vector<float> k_lo;      // [n_kv_heads, head_dim] per-channel dense range, pre-RoPE
  std::vector<float> k_hi;
};

// 256 tokens for B = 2, 4 and 320 for B = 3 (multiples of the 8 * codes-per-word block).
int kv_default_page_size(int bits);

// Checks the configuration (and the quantizer for KVQuant, which must then be non-null), fills
// the defaults (page_size, k_outlier_capacity, n_pages) and returns the page layout. Throws
// kvq::Error, e.g. "kv cache: head_dim: expected 64 or 128, found 96".
KvLayout kv_check_config(KvCacheConfig* config, const NuqQuantizer* quantizer);

// Values of a KVQuant token kept as outliers: 2 * outliers_per_side(head_dim, fraction).
int kv_v_outliers_per_token(int head_dim, double fraction);

// Sinusoid frequencies theta^(-2j / head_dim), j < head_dim / 2 (computed in double). Llama-3
// style scaling passes its own array to the kernels instead.
std::vector<float> rope_inv_freq(double theta, int head_dim);

}  // namespace kvq::kernels
