// CPU reference of the compressed KV cache (kv_layout.h) and of decode attention over it: the
// definition of correctness for kernels/kv_append.cu and kernels/kv_attention*.cu. The cache is
// described element by element (KvState), independent of the page layout; the quantization
// calls kv_format.h (nuq_encode, dense_range_ref, round_to_fp16, uniform_*) and checks each
// dequantized element against kv_format's fake-quantizers bit for bit.
// Not here: anything on the GPU (kv_cache.h copies a device cache out as a KvImage).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv_config.h"

namespace kvq::kernels {

struct KvOutlier {
  int64_t token = 0;  // quantized index u = t - n_sink
  int channel = 0;
  uint16_t value = 0;  // fp16 bits
  bool operator==(const KvOutlier& o) const {
    return token == o.token && channel == o.channel && value == o.value;
  }
};

// One (sequence, KV head). fp16 bits throughout; codes by channel (not packed).
struct KvHeadState {
  int64_t n_tokens = 0;
  int64_t n_quant = 0;                      // tokens [n_sink, n_sink + n_quant) are quantized
  std::vector<uint16_t> k16, v16;           // [n_tokens][head_dim]; 0 for quantized tokens
  std::vector<uint8_t> k_codes, v_codes;    // [n_quant][head_dim]
  std::vector<uint16_t> v_scale, v_offset;  // [n_quant] (KVQuant)
  std::vector<KvOutlier> k_out, v_out;      // sorted by (token, channel) (KVQuant)
  std::vector<uint16_t> k_gscale, k_gzero;  // [n_quant / G][head_dim] (KIVI)
  std::vector<uint16_t> v_gscale, v_gzero;  // [n_quant][head_dim / G] (KIVI)
};

struct KvState {
  KvCacheConfig config;
  KvLayout layout;
  int batch = 0;
  std::vector<KvHeadState> heads;  // [batch][n_kv_heads]
  uint64_t k_overflow = 0;         // key outliers clamped because their page was full
  const KvHeadState& head(int b, int h) const { return heads[b * config.n_kv_heads + h]; }
};

// The device cache copied to the host as it is laid out (KvCache::snapshot).
struct KvImage {
  int batch = 0;
  std::vector<uint8_t> pool;        // [n_pages * page_bytes]
  std::vector<int32_t> page_table;  // [max_batch][pages_per_seq]
  int pages_per_seq = 0;
  std::vector<int32_t> seq_len;  // [max_batch]
  std::vector<uint16_t> sink_k, sink_v, ring_k, ring_v;
  uint64_t k_overflow = 0;
};

// Quantizes whole histories the way the cache does, whatever mix of prefill and appends built it.
// Values go through nuq_fake_quant_vector_ref per token over all KV heads (kToken) or per token
// and head (kTokenHead), each element checked against it bit for bit.
// k[b], v[b]: [n_b][n_kv_heads][head_dim] fp16 bits of sequence b. `config` must have passed
// runtime::check_kv_config (page_size etc. filled in); quantizer (the layer's tables) is null
// for KIVI.
KvState kv_quantize_ref(const KvCacheConfig& config, const quant::KvTables* quantizer,
                        const std::vector<std::vector<uint16_t>>& k,
                        const std::vector<std::vector<uint16_t>>& v);

// Reads a device image back into element form. Inconsistencies of the format (an outlier entry
// of another row or out of channel order, a block index that disagrees with the outliers, a page
// id out of range, a head's value outliers not where the row's index says or past the row's room)
// are appended to *problems, one line each.
KvState kv_parse_image(const KvCacheConfig& config, const KvImage& image,
                       std::vector<std::string>* problems);

// "" if equal, else up to max_lines lines naming sequence, head, token, channel and both values.
std::string kv_compare(const KvState& want, const KvState& got, int max_lines = 8);

// Dequantized keys and values of one (sequence, head): [n_tokens][head_dim] floats, pre-RoPE.
void kv_dequantize_ref(const KvState& state, const quant::KvTables* quantizer, int b, int h,
                       std::vector<float>* k, std::vector<float>* v);

// Decode attention for the newest token of every sequence: q [batch][n_q_heads][head_dim]
// (pre-RoPE, at position n_b - 1), RoPE (rotate-half pairs (j, j + head_dim/2), angle
// (t - t_q) * inv_freq[j] in double) on keys and query, softmax(q.k / sqrt(head_dim)) . v in
// double. Returns [batch][n_q_heads][head_dim].
std::vector<double> kv_attention_ref(const KvState& state, const quant::KvTables* quantizer,
                                     const std::vector<float>& q,
                                     const std::vector<float>& inv_freq);

// fp16 <-> float on the host (round to nearest even), as the cache stores values.
uint16_t kv_half_bits(float x);
float kv_half_float(uint16_t bits);
float kv_bf16_float(uint16_t bits);
uint16_t kv_bf16_bits(float x);

}  // namespace kvq::kernels
