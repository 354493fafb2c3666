// The compressed KV cache's memory format (DESIGN.md section 5), shared by the CUDA kernels, the
// C++ API (kv_cache.h) and the CPU reference (kv_ref.h). Plain structs of sizes, offsets and raw
// device pointers; no allocation, no checks (kv_config.cpp validates before anything is built).
//
// Tokens of one sequence, by position t (0-based):
//   [0, n_sink)                      sink tokens, fp16 K and V          sink_k/sink_v
//   [n_sink, n_sink + n_quant)       quantized, in pages                pool via page_table
//   [n_sink + n_quant, n)            recent window, fp16                ring_k/ring_v
// with n_quant = floor(max(0, n - n_sink - n_recent) / F) * F (quant::KvCacheFormat::n_quantized,
// F = flush): tokens leave the fp16 window F at a time once more than n_recent are there.
// KVQuant: n_recent = 0, F = 1 (every token quantized as it arrives); KIVI: n_recent = 0, F = R,
// the residual (all R tokens quantized at once, in R / G key groups, when the R-th arrives).
// The ring holds n_recent + F tokens; token t sits in slot (t - n_sink) % ring.
// Keys are stored before RoPE everywhere (the attention kernels rotate them in registers).
//
// Quantized token u = t - n_sink lives in page u / page_size of its sequence, row u % page_size.
// A physical page holds page_size tokens of every KV head: [n_kv_heads] head sections of
// head_bytes, then (KVQuant) one token section of token_bytes shared by the heads. Every part
// starts on a 32-byte L2 sector (kKvPartAlign), so that a block's rows of key codes and its 32
// bytes of each value channel row do too; B = bits, C = codes per uint32 (16, 10, 8).
//   KVQuant (nuq), head section:
//     header      int32 k_count; uint16 k_begin[blocks_per_page]   K outliers in the page, and
//                                                                  the first one of each block
//     k_codes     [page_size][k_row_words] uint32   one row per token, pack.h row form over the
//                 pair-interleaved channel order: code 2g is channel g, code 2g+1 channel
//                 g + head_dim/2 (the RoPE pair), g < head_dim/2; rows padded to 80 codes for
//                 B=3, head_dim=64 (so that every lane of the MMA kernel owns whole words)
//     v_codes     [head_dim][page_size / C] uint32  one row per channel along tokens (pack.h
//                 row form): token pairs (2s, 2s+1) of a word are adjacent bit fields
//     v_index     [page_size] uint32   the head's value outliers in the row's entries of the
//                 token section: first entry (bits 0..15), count (bits 16..31)
//     k_out       [k_out_capacity] uint32 outliers sorted by (row, channel)
//   KVQuant, token section:
//     v_scales    [v_vectors][page_size] half2 (scale, offset), fp16 as kv_format.h rounds them;
//                 v_vectors = 1 for values per token over all KV heads (kToken, KVQuant's
//                 default: one dense range per token over its n_kv_heads * head_dim values),
//                 n_kv_heads for values per token and head (-vhead, kTokenHead)
//     v_out       [page_size][v_out_per_row] uint32 the row's value outliers by head, then by
//                 channel; v_out_per_row = v_vectors * 2k, k = outliers_per_side(vector size),
//                 so a row holds a token's whole outlier budget once, not once per head. kToken:
//                 head h's entries start after those of heads < h; kTokenHead: at h * 2k.
//     outlier entry: bits 16..31 = row * head_dim + channel (channel within the head), bits
//     0..15 = the fp16 value (round_to_fp16 of the element)
//   KIVI, head section (no token section):
//     k_codes     as above (codes of the uniform quantizer)
//     k_params    [page_size / G][head_dim / 2] {half2 scale, half2 zero}, each half2 over the
//                 pair (g, g + head_dim/2): the per-channel group quantizer of G tokens
//     v_codes     as above
//     v_params    [page_size][head_dim / G] half2 (scale, zero): per token, G channels
// Pages need page_size a multiple of block_tokens = 8 * C (the unit the attention kernels
// stream), page_size * head_dim < 65536 (outlier index), and for KIVI a multiple of G.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if defined(__CUDACC__)
#define KVQ_HD __host__ __device__ __forceinline__
#else
#define KVQ_HD inline
#endif

namespace kvq::kernels {

enum class KvMethod : int { kNuq = 0, kKivi = 1 };

// a / b and a % b for a token position or count a (0 <= a < 2^31: seq_len is int32) and b >= 1,
// in 32 bits: on the GPU a 64-bit division is a subroutine of ~70 instructions, a 32-bit one ~10
// inline (the append of one token ran five of them on its path).
KVQ_HD int64_t pos_div(int64_t a, int b) {
  return static_cast<uint32_t>(a) / static_cast<uint32_t>(b);
}
KVQ_HD int pos_mod(int64_t a, int b) {
  return static_cast<int>(static_cast<uint32_t>(a) % static_cast<uint32_t>(b));
}

inline constexpr int kMaxQueryGroup = 8;            // query heads per KV head the kernels take
inline constexpr uint32_t kOutlierEmpty = 0xFFFFu;  // index field of an unused outlier slot

KVQ_HD int kv_codes_per_word(int bits) { return bits == 2 ? 16 : (bits == 3 ? 10 : 8); }
KVQ_HD int kv_block_tokens(int bits) { return 8 * kv_codes_per_word(bits); }
// Codes in a key row: head_dim, or 80 for B=3, head_dim=64 (see above).
KVQ_HD int kv_k_row_codes(int bits, int head_dim) {
  return (bits == 3 && head_dim == 64) ? 80 : head_dim;
}
KVQ_HD int kv_k_row_words(int bits, int head_dim) {
  const int c = kv_codes_per_word(bits);
  return (kv_k_row_codes(bits, head_dim) + c - 1) / c;
}
// Position of channel ch's code in a key row (pair-interleaved order).
KVQ_HD int kv_k_code_index(int ch, int head_dim) {
  const int half = head_dim / 2;
  return ch < half ? 2 * ch : 2 * (ch - half) + 1;
}
// Every part of a page starts at a multiple of this many bytes: one L2 sector. At 16 (until
// 2026-12-07) the value codes started 16 bytes into a sector, and each block's 32 bytes of a
// channel row took two sectors (Nsight Compute: 16 sectors per warp load where 8 would do).
inline constexpr int kKvPartAlign = 32;
KVQ_HD int64_t kv_align_part(int64_t bytes) {
  return (bytes + kKvPartAlign - 1) / kKvPartAlign * kKvPartAlign;
}

// Sizes and byte offsets of a page: one head section (offsets from its start) and the token
// section (offsets from its start, after the n_kv_heads head sections). See the file comment.
struct KvLayout {
  KvMethod method = KvMethod::kNuq;
  int bits = 3;
  int head_dim = 128;
  int page_size = 320;
  int group = 1;           // G: 1 for KVQuant, the KIVI group size
  int n_kv_heads = 1;      // head sections per page
  int v_vectors = 0;       // KVQuant value scale/offset pairs per token: 1 or n_kv_heads
  int v_out_per_row = 0;   // value outlier entries per token (KVQuant; see the file comment)
  int k_out_capacity = 0;  // per page and head (KVQuant)
  int codes_per_word = 10;
  int block_tokens = 80;
  int blocks_per_page = 4;
  int k_row_words = 13;
  int v_row_words = 32;  // page_size / codes_per_word
  int64_t off_header = 0, off_k_codes = 0, off_v_codes = 0, off_v_index = 0, off_k_out = 0,
          off_k_params = 0, off_v_params = 0;
  int64_t head_bytes = 0;
  int64_t off_v_scales = 0, off_v_out = 0;  // in the token section
  int64_t token_bytes = 0;
  int64_t page_bytes = 0;  // n_kv_heads * head_bytes + token_bytes
};

// Fills the derived fields from method, bits, head_dim, page_size, group, n_kv_heads, v_vectors,
// v_out_per_row and k_out_capacity (the last three KVQuant only).
inline KvLayout kv_make_layout(KvMethod method, int bits, int head_dim, int page_size, int group,
                               int n_kv_heads, int v_vectors, int v_out_per_row,
                               int k_out_capacity) {
  KvLayout l;
  const bool nuq = method == KvMethod::kNuq;
  l.method = method;
  l.bits = bits;
  l.head_dim = head_dim;
  l.page_size = page_size;
  l.group = nuq ? 1 : group;
  l.n_kv_heads = n_kv_heads;
  l.v_vectors = nuq ? v_vectors : 0;
  l.v_out_per_row = nuq ? v_out_per_row : 0;
  l.k_out_capacity = nuq ? k_out_capacity : 0;
  l.codes_per_word = kv_codes_per_word(bits);
  l.block_tokens = kv_block_tokens(bits);
  l.blocks_per_page = page_size / l.block_tokens;
  l.k_row_words = kv_k_row_words(bits, head_dim);
  l.v_row_words = page_size / l.codes_per_word;
  int64_t at = 0;
  auto take = [&at](int64_t bytes) {
    const int64_t off = at;
    at += kv_align_part(bytes);
    return off;
  };
  if (nuq) {
    l.off_header = take(4 + 2 * int64_t{l.blocks_per_page});
    l.off_k_codes = take(int64_t{page_size} * l.k_row_words * 4);
    l.off_v_codes = take(int64_t{head_dim} * l.v_row_words * 4);
    l.off_v_index = take(int64_t{page_size} * 4);
    l.off_k_out = take(int64_t{l.k_out_capacity} * 4);
    l.head_bytes = at;
    at = 0;
    l.off_v_scales = take(int64_t{l.v_vectors} * page_size * 4);
    l.off_v_out = take(int64_t{page_size} * l.v_out_per_row * 4);
    l.token_bytes = at;
  } else {
    l.off_k_codes = take(int64_t{page_size} * l.k_row_words * 4);
    l.off_k_params = take(int64_t{page_size / l.group} * (head_dim / 2) * 8);
    l.off_v_codes = take(int64_t{head_dim} * l.v_row_words * 4);
    l.off_v_params = take(int64_t{page_size} * (head_dim / l.group) * 4);
    l.head_bytes = at;
  }
  l.page_bytes = int64_t{n_kv_heads} * l.head_bytes + l.token_bytes;
  return l;
}

// KVQuant: where head h's value outliers start in a row's entries and how many it may hold, for
// the token section's fixed form (kTokenHead: h * 2k, 2k each); kToken heads share the row.
KVQ_HD int kv_v_head_slots(const KvLayout& l) {
  return l.v_vectors > 1 ? l.v_out_per_row / l.v_vectors : l.v_out_per_row;
}

// Everything a kernel needs to find a sequence's tokens. Device pointers; sizes are per layer.
struct KvCacheView {
  KvLayout layout;
  int n_kv_heads = 1;
  int n_sink = 0;
  int n_recent = 0;
  int flush = 1;                  // F: tokens quantized together (a multiple of layout.group)
  int ring_size = 1;              // n_recent + F
  bool k_outliers = false;        // KVQuant keys: keep elements outside [lo, hi] in fp16
  bool v_token = false;           // KVQuant values per token over all KV heads (kToken)
  uint8_t* pool = nullptr;        // [n_pages] pages of layout.page_bytes
  int32_t* page_table = nullptr;  // [batch][pages_per_seq] physical page ids
  int pages_per_seq = 0;
  int32_t* seq_len = nullptr;  // [batch] tokens held
  __half* sink_k = nullptr;    // [batch][n_kv_heads][n_sink][head_dim]
  __half* sink_v = nullptr;
  __half* ring_k = nullptr;  // [batch][n_kv_heads][ring_size][head_dim]
  __half* ring_v = nullptr;
  const float* k_lo = nullptr;  // [n_kv_heads][head_dim] KVQuant key dense range
  const float* k_hi = nullptr;
  const float* k_levels = nullptr;  // [2^bits] KVQuant codebooks (per layer)
  const float* v_levels = nullptr;
  unsigned long long* k_overflow = nullptr;  // K outliers clamped for lack of page room

  // Whether any token may be held in fp16 (sinks, the recent window, or tokens waiting for a
  // flush of F > 1). Without (KVQuant's default) the attention's fp16 part is always empty.
  KVQ_HD bool has_fp16_tokens() const { return n_sink > 0 || n_recent > 0 || flush > 1; }
  KVQ_HD int64_t n_quant(int64_t n) const {
    const int64_t q = n - n_sink - n_recent;
    return q > 0 ? (flush == 1 ? q : pos_div(q, flush) * flush) : 0;
  }
  KVQ_HD uint8_t* head_section(int64_t page, int head) const {
    return pool + page * layout.page_bytes + int64_t{head} * layout.head_bytes;
  }
  KVQ_HD uint8_t* token_section(int64_t page) const {
    return pool + page * layout.page_bytes + int64_t{n_kv_heads} * layout.head_bytes;
  }
  KVQ_HD int64_t ring_slot(int64_t t) const {  // t >= n_sink
    return ring_size == 1 ? 0 : pos_mod(t - n_sink, ring_size);
  }
  KVQ_HD __half* sink_row(__half* base, int64_t b, int h, int64_t t) const {
    return base + ((b * n_kv_heads + h) * n_sink + t) * layout.head_dim;
  }
  KVQ_HD __half* ring_row(__half* base, int64_t b, int h, int64_t t) const {
    return base + ((b * n_kv_heads + h) * ring_size + ring_slot(t)) * layout.head_dim;
  }
};

}  // namespace kvq::kernels
