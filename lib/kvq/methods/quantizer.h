// A fitted method for one model (all layers): fake-quantizes Keys and Values exactly as the
// compressed cache would hold them, with LibTorch on any device, plus a CPU reference loop over
// lib/kvq/quant (kv_format.h, uniform.h) that the LibTorch path matches bit for bit.
//
// Layout: k and v are [batch, n_tokens, n_kv_heads, head_dim], any float dtype, any device;
// channels c = head * head_dim + j (Hugging Face order, as calib.h5). Every token passed is
// quantized: the caller keeps sink tokens and recent windows in fp16 (MethodSpec::n_sink,
// window_kind(), fp16_tail()) and places post-RoPE keys (spec().post_rope) itself. Keys
// grouped along time (KIVI, intB-channel) form groups of key_time_group() tokens starting at
// the first token passed (t = 0); a short last group is quantized as it is.
//
// Per method (the arithmetic is float32 in the order of the CPU reference):
//   fp16   identity.
//   fp8    v = clamp(x / s, -M, M) rounded to the nearest fp8 value (ties to even), x' = v * s,
//          s = amax / M (M = 448 e4m3, 57344 e5m2; amax calibrated, else max |x| of the call).
//   int    uniform asymmetric min-max (kv_format.h), fp32 scale and minimum as the README's
//          int-token reference: per (token, head) over head_dim; -gG: groups of G channels of
//          a head; -channel: keys per channel over groups of 128 tokens, values per token.
//   kivi   keys per channel over groups of G tokens, values per token in groups of G channels.
//   skvq   per token, channels permuted by `perm` across heads, groups of G consecutive
//          permuted channels, min-max with clip ratio r (uniform.h), then un-permuted.
//   nuq    keys per channel: offline [lo, hi]; outside it, exact fp16 outliers when the
//          outlier fraction > 0, else clamped to the end levels; inside, offset = (lo+hi)/2,
//          scale = (hi-lo)/2 (fp32), code = nearest levels_encode (ties to the lower level),
//          x' = levels_decode[code] * scale + offset. Values per (token, head): dense range
//          and fp16-rounded offset/scale of kv_format.h, the same coding. Without Q-Norm the
//          two level tables are equal and this is nuq_fake_quant_{channel,vector}_ref exactly.
// Inputs must be finite (not checked on the device: no synchronisation); shapes and layer
// indices are checked. Not here: fitting (fit.h), files (quant_file.h), bit accounting (bits.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "kvq/artifact/fingerprint.h"
#include "kvq/methods/method.h"

namespace kvq::methods {

// Accumulated over calls so the caller can count stored bits exactly.
struct QuantCounters {
  int64_t elements = 0;  // elements quantized
  int64_t outliers = 0;  // of which kept exactly in fp16 (nuq dense-and-sparse)
  void add(const QuantCounters& o) {
    elements += o.elements;
    outliers += o.outliers;
  }
};

// One layer's parameters for its keys or its values; which fields are used depends on the method.
struct TensorParams {
  int bits = 16;                     // code bits
  double outlier_fraction = 0.0;     // nuq
  std::vector<float> levels_encode;  // nuq: [2^bits], strictly ascending in [-1, 1]
  std::vector<float> levels_decode;  // nuq: [2^bits], ascending; == levels_encode without Q-Norm
  std::vector<float> lo, hi;         // nuq keys: per-channel dense range [C]
  std::vector<int64_t> perm;         // skvq: [C], position i holds channel perm[i]
  float clip = 1.0f;                 // skvq: clip ratio in (0, 1]
  float amax = 0.0f;                 // fp8: calibrated max |x|; 0: dynamic (per call)
  double fisher_error = -1.0;        // nuq: estimated sum F (x - x')^2 of these levels; -1 unknown
};

struct LayerParams {
  TensorParams key, value;
};

// Where a quantizer came from, as quant.h5 records it.
struct Provenance {
  bool has_model = false, has_data = false;
  artifact::ModelFingerprint model;  // copied from calib.h5 or the model given
  artifact::DataFingerprint data;    // copied from calib.h5
  double bits_budget = 0.0;  // > 0: per-layer bits chosen for this average (fit_bits_budget)
  std::string path, created, tool_version;  // set by read_quant
};

class Quantizer {
 public:
  Quantizer() = default;
  // `layers` empty: the same (calibration-free) quantization for every layer, any shape.
  // Otherwise one entry per layer; n_kv_heads and head_dim are the model's (0 when unknown, for
  // calibration-free methods). Throws kvq::Error on parameters that do not fit the spec
  // (level counts, vector lengths, a perm that is not a permutation, clip, bits).
  Quantizer(MethodSpec spec, std::vector<LayerParams> layers, int64_t n_kv_heads, int64_t head_dim);

  const MethodSpec& spec() const { return spec_; }
  int64_t n_layers() const { return static_cast<int64_t>(layers_.size()); }  // 0: layer-independent
  int64_t n_kv_heads() const { return n_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  const std::vector<LayerParams>& layers() const { return layers_; }
  // The parameters used for `layer` (the spec's defaults for a layer-independent quantizer).
  const TensorParams& key_params(int64_t layer) const;
  const TensorParams& value_params(int64_t layer) const;
  // What a cache of this quantizer holds at `layer`: spec().kv_format() with the layer's fitted
  // bits (any layer index for a layer-independent quantizer).
  quant::KvCacheFormat kv_format(int64_t layer) const;
  // The layer's fitted nuq tables (encode levels, key ranges) for a compressed cache; empty for
  // other methods. Throws on a layer index out of range.
  quant::KvTables kv_tables(int64_t layer) const;
  // "nuq3-1%" or, with per-layer bits from a budget, "nuq3-1% (mixed, 2.50 bits)".
  std::string label() const;

  // k, v: [b, t, n_kv_heads, head_dim] -> the same shape, dtype and device (fp16: k itself).
  at::Tensor quantize_keys(int64_t layer, const at::Tensor& k,
                           QuantCounters* counters = nullptr) const;
  at::Tensor quantize_values(int64_t layer, const at::Tensor& v,
                             QuantCounters* counters = nullptr) const;
  // CPU reference loops over lib/kvq/quant: the same results, fp32 on the CPU, slow.
  at::Tensor quantize_keys_ref(int64_t layer, const at::Tensor& k,
                               QuantCounters* counters = nullptr) const;
  at::Tensor quantize_values_ref(int64_t layer, const at::Tensor& v,
                                 QuantCounters* counters = nullptr) const;

  // Throws "<artifact>: made for a different model than <model>: ..." when this quantizer records
  // a model fingerprint that differs from `model`; for a quantizer without one, checks only that
  // its per-layer tables fit the model's n_layers, n_kv_heads and head_dim.
  void require_model(const artifact::ModelFingerprint& model) const;

  Provenance provenance;

 private:
  const TensorParams& params(bool key, int64_t layer) const;
  void check_input(const char* fn, int64_t layer, const at::Tensor& x) const;
  at::Tensor quantize(bool key, int64_t layer, const at::Tensor& x, QuantCounters* counters) const;
  at::Tensor quantize_ref(bool key, int64_t layer, const at::Tensor& x,
                          QuantCounters* counters) const;

  MethodSpec spec_;
  std::vector<LayerParams> layers_;
  int64_t n_kv_heads_ = 0, head_dim_ = 0;
  LayerParams defaults_;  // for layer-independent quantizers
};

}  // namespace kvq::methods
