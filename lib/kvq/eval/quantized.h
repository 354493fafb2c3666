// Perplexity with the KV cache quantized the way decoding would see it: each token's Key
// (pre-RoPE unless the method says -post) and Value is quantized as it enters the cache, queries
// are not, and tokens a method keeps in fp16 (sinks; KIVI's residual, SKVQ's window of recent
// tokens) are seen in full precision by exactly the queries that would see them so during
// decoding. Not here: fitting (methods/fit.h), printing (table.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kvq/eval/divergence.h"
#include "kvq/eval/perplexity.h"
#include "kvq/methods/quantizer.h"
#include "kvq/model/llama.h"

namespace kvq::eval {

// [t, start + t] bool: true where the query at position start + i sees token j quantized, i.e.
// where the cache of its length (start + i + 1 tokens) holds token j quantized
// (quant::KvCacheFormat::is_fp16, the definition the compressed cache uses too). Undefined when
// the format has no fp16 window (every token is quantized as it arrives; sinks alone are
// restored in the quantized tensor instead).
bool has_window(const quant::KvCacheFormat& format);
at::Tensor quantized_mask(const quant::KvCacheFormat& format, int64_t start, int64_t t,
                          at::Device device);

// The KVHook that applies a quantizer to every layer and counts what it quantized.
class QuantizedKV : public model::KVHook {
 public:
  QuantizedKV(const methods::Quantizer& q, at::Device device) : q_(q), device_(device) {}
  void on_kv(int64_t layer, at::Tensor& k, at::Tensor& v) override;
  void on_k_rope(int64_t layer, at::Tensor& k) override;
  model::KVView view(int64_t layer, int64_t start, int64_t t) override;

  methods::QuantCounters keys, values;

 private:
  const methods::Quantizer& q_;
  at::Device device_;
  std::map<std::pair<int64_t, int64_t>, at::Tensor> masks_;  // by (start, t)
};

struct MethodResult {
  std::string method;        // the quantizer's label
  PerplexityResult ppl;      // seconds and tokens_per_s: this method's forwards and scoring alone
  TokenAgreement agreement;  // against the model's own cache on the same windows
  double bits_per_element = 16.0;  // at the window length, outliers as counted
  methods::QuantCounters keys, values;
};

// Perplexity of `tokens` with the cache quantized by each of `qs` (fp16: the model's own K/V),
// and each one's KL divergence and top-1 agreement against the model's own cache. Window-major:
// for each batch of windows the model runs once with its own K/V (the reference) and once per
// quantizer that is not fp16, so fp16 rows cost no forward of their own and have KL 0, top-1
// 100%. The reference logits of one batch ([windows, L, vocab] fp32) are held while the
// quantizers run on it. An fp16 row's seconds are the reference's (its forward and scoring); the
// perplexity is exp of the fp64 mean (eval/divergence.h), not of perplexity()'s fp32 mean, so the
// two agree to about 1e-7. One progress bar for the whole run. Results in the order of qs. Throws
// kvq::Error as perplexity() does; a non-finite loss names the windows and the method. The caller
// checks that every quantizer was made for this model (Quantizer::require_model).
std::vector<MethodResult> evaluate_methods(const model::LlamaModel& model,
                                           const std::vector<int32_t>& tokens,
                                           const std::vector<methods::Quantizer>& qs,
                                           const PerplexityOptions& options);

}  // namespace kvq::eval
