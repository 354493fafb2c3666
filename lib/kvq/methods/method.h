// Method strings (DESIGN.md section 3): what `kvq fit --method`, `kvq eval --methods` and the
// runtime accept, parsed into a MethodSpec. name() is the canonical spelling; parsing it gives
// the same spec back. Not here: fitting (fit.h), quantizing (quantizer.h).
//
// Forms (B = bits; every form takes a trailing -post: keys quantized after RoPE):
//   fp16                       no quantization (the model's own K/V)
//   fp8-e4m3, fp8-e5m2         per-tensor scale amax / fp8_max (amax calibrated per layer when a
//                              calib.h5 is given, else the max |x| of each call), saturating
//   intB, intB-token           B in 1..8: per token, per KV head, asymmetric min-max over head_dim
//                              (the int-token reference of ../shared/data/README.md)
//   intB-channel               keys per channel over groups of 128 tokens starting at t = 0
//                              (KIVI's key grouping without its residual); values per token
//   intB-gG                    keys and values per token in groups of G channels within a head
//   nuqB[-P%][-sink[N]][-vhead][-qnorm]
//                              KVQuant, B in 2..4: keys per channel with offline ranges, values
//                              per token (over all KV heads, as the paper); P% dense-and-sparse
//                              outliers (a fraction calib.h5 holds); -sink keeps the first N
//                              tokens (default 1) in fp16; -vhead normalizes values per token
//                              and KV head instead (the CUDA runtime's format, kernels/);
//                              -qnorm turns Q-Norm on (off by default: on the shared models it
//                              costs perplexity at every width, README)
//   kiviB[-gG][-rR]            KIVI, B in 1..8, G = 32, R = 128 by default (R a multiple of G)
//   skvq-kB-vB-gG-wW[-sS]      SKVQ: key/value bits, channel group size, fp16 window of the W most
//                              recent tokens, S sink tokens in fp16 (default 5)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/quant/kv_cache_format.h"

namespace kvq::methods {

enum class MethodKind { kFp16, kFp8, kInt, kNuq, kKivi, kSkvq };
enum class IntGranularity { kToken, kChannel, kGroup };
enum class Fp8Format { kE4M3, kE5M2 };
// How the recent full-precision tokens behave: none; a sliding window of the last W tokens
// (SKVQ); a residual of (n - n_sink) mod R tokens that is quantized once R have formed (KIVI).
enum class WindowKind { kNone, kSliding, kResidual };

inline constexpr int64_t kIntChannelTokens = 128;  // intB-channel: tokens per key group
inline constexpr int64_t kSkvqDefaultSink = 5;

struct MethodSpec {
  MethodKind kind = MethodKind::kFp16;
  int key_bits = 16, value_bits = 16;                   // nominal code bits (fp8: 8, fp16: 16)
  IntGranularity granularity = IntGranularity::kToken;  // kInt only
  // kInt kGroup: channels per group; kKivi: G (key tokens per group, value channels per group);
  // kSkvq: channels per group (after the permutation, across KV heads); else 0.
  int64_t group = 0;
  int64_t window = 0;            // kKivi: R; kSkvq: W; else 0
  int64_t n_sink = 0;            // first tokens kept in fp16 (nuq -sink, skvq -s)
  double outlier_percent = 0.0;  // nuq: P of -P%
  bool qnorm = false;            // nuq: Q-Norm decode levels
  bool value_per_head = false;   // nuq: a value vector is one token of one KV head (-vhead)
  Fp8Format fp8 = Fp8Format::kE4M3;
  bool post_rope = false;

  std::string name() const;  // canonical string
  double outlier_fraction() const { return outlier_percent / 100.0; }
  bool needs_calib() const { return kind == MethodKind::kNuq || kind == MethodKind::kSkvq; }

  // What a cache of this method holds (quant/kv_cache_format.h): the one definition of which
  // tokens stay fp16 and how elements are coded, taken by eval, the runtime and the kernels.
  // Bits are the nominal ones; Quantizer::kv_format(layer) gives a layer's fitted bits.
  quant::KvCacheFormat kv_format() const;
  // What the caller (eval, runtime) keeps in fp16 around the quantized tokens.
  WindowKind window_kind() const;
  // kv_format().key_time_group: tokens per key group along time, groups starting at t = 0
  // (KIVI: G; intB-channel: 128); 0 when keys are not grouped along time.
  int64_t key_time_group() const;
  // kv_format().fp16_tail: recent tokens held in fp16 in a cache of n tokens, after the n_sink
  // first ones: sliding: min(W, n - n_sink); residual: (n - n_sink) mod R; none: 0.
  int64_t fp16_tail(int64_t n_tokens) const;
  // All fp16 tokens of a cache of n tokens: min(n, n_sink) + fp16_tail(n).
  int64_t fp16_tokens(int64_t n_tokens) const;

  bool operator==(const MethodSpec& o) const;
  bool operator!=(const MethodSpec& o) const { return !(*this == o); }
};

// The forms above, for error messages and --help.
const char* method_forms();

// Throws kvq::Error, one line: "method 'nuq5': nuq bits: expected 2..4, found 5 (valid: ...)".
MethodSpec parse_method(const std::string& text);

// The items of a list flag, each parsed; two items naming one method are refused: "--methods:
// 'nuq3' is given twice", "--methods: 'int4' and 'int4-token' are the same method (int4)".
std::vector<MethodSpec> parse_methods(const std::vector<std::string>& items, const char* flag);

const char* kind_name(MethodKind kind);  // "fp16", "fp8", "int", "nuq", "kivi", "skvq"

}  // namespace kvq::methods
