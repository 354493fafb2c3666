// What a KV cache holds for one method, in one definition shared by every consumer: the
// fake-quantizing evaluator (lib/kvq/eval), the compressed CUDA cache (lib/kvq/runtime) and the
// kernels' CPU reference (kernels/kv_ref.h). It says which tokens stay fp16, how elements are
// coded (bits, groups, what a value vector is, outliers) and, with KvTables, the fitted numbers
// of one layer. methods::MethodSpec::kv_format() and methods::Quantizer::kv_format(layer) make
// it from a method string and a fitted quantizer; nothing below lib/kvq/methods parses a method
// string. Not here: the element arithmetic (kv_format.h), the page layout (kernels/kv_layout.h),
// what the CUDA cache can serve (runtime/cache_config.h refuses the rest by name).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvq::quant {

// How cached elements are coded (DESIGN.md section 3).
enum class KvCodec {
  kNone,  // fp16: the model's own K/V
  kFp8,   // per-tensor scale
  kInt,   // uniform min-max per token / channel / group
  kNuq,   // KVQuant: non-uniform levels, offline key ranges, dense-and-sparse outliers
  kKivi,  // keys per channel over groups of tokens, values per token over groups of channels
  kSkvq,  // permuted channel groups with a clip ratio
};

// What one value scale/offset pair covers (nuq).
enum class ValueVector {
  kToken,      // one token over all KV heads (KVQuant)
  kTokenHead,  // one token of one KV head (-vhead)
};

// A cache of n tokens holds, by position t:
//   [0, min(n, n_sink))                       fp16 sinks
//   [n_sink, n_sink + n_quantized(n))         quantized
//   [n_sink + n_quantized(n), n)              fp16 tail (fp16_tail(n) tokens)
// with n_quantized(n) = floor(max(0, n - n_sink - n_recent) / flush) * flush: tokens leave the
// fp16 tail `flush` at a time once more than n_recent are there. A sliding window of W tokens
// (SKVQ) is n_recent = W, flush = 1; KIVI's residual of R tokens, quantized all at once when it
// is full, is n_recent = 0, flush = R (so the tail holds (n - n_sink) mod R tokens); KVQuant
// quantizes every token as it arrives (n_recent = 0, flush = 1).
struct KvCacheFormat {
  std::string method;  // canonical method string, for messages only (never parsed)
  KvCodec codec = KvCodec::kNone;
  int key_bits = 16, value_bits = 16;
  bool pre_rope = true;  // keys are quantized before RoPE
  int64_t n_sink = 0;
  int64_t n_recent = 0;
  int64_t flush = 1;  // >= 1
  // Keys per channel over groups of this many tokens, counted from the first token (KIVI's G,
  // intB-channel's 128); 0: keys are not grouped along time.
  int64_t key_time_group = 0;
  // Channels per group: KIVI values, intB-gG, SKVQ (after its permutation); 0: none.
  int64_t channel_group = 0;
  ValueVector value_vector = ValueVector::kToken;  // nuq
  double outlier_fraction = 0.0;  // nuq: dense-and-sparse share per value vector; keys keep the
                                  // elements outside their offline range when > 0
  bool qnorm = false;             // nuq: decode levels differ from the encode levels

  bool quantizes() const { return codec != KvCodec::kNone; }
  bool key_outliers() const { return codec == KvCodec::kNuq && outlier_fraction > 0.0; }
  int64_t n_quantized(int64_t n_tokens) const;
  int64_t fp16_tail(int64_t n_tokens) const;    // n - min(n, n_sink) - n_quantized(n)
  int64_t fp16_tokens(int64_t n_tokens) const;  // min(n, n_sink) + fp16_tail(n)
  // Whether token t of a cache of n tokens (t < n) is held in fp16.
  bool is_fp16(int64_t t, int64_t n_tokens) const;
};

// The fitted numbers of one layer that a compressed cache needs (nuq): code levels and the
// per-channel key dense ranges, pre-RoPE.
struct KvTables {
  std::vector<float> k_levels;  // [2^key_bits] strictly ascending in [-1, 1]
  std::vector<float> v_levels;  // [2^value_bits]
  std::vector<float> k_lo;      // [n_kv_heads * head_dim], channel c = head * head_dim + j
  std::vector<float> k_hi;
};

// Throws kvq::Error "<where>: expected N levels for B bits, found M" unless `levels` holds
// 2^bits finite, strictly ascending values (in [-1, 1] when in_unit), naming the first bad index.
void check_levels(const std::string& where, const std::vector<float>& levels, int bits,
                  bool in_unit);

// Throws kvq::Error "<where>: channel c: expected finite lo <= hi, found [lo, hi]" unless lo and
// hi hold n_channels finite ranges.
void check_key_ranges(const std::string& where, const std::vector<float>& lo,
                      const std::vector<float>& hi, int64_t n_channels);

}  // namespace kvq::quant
