// kvq eval --runtime: perplexity, KL divergence and top-1 agreement with the fp16 model through
// the runtime (lib/kvq/runtime): every window of the eval protocol is a sequence whose first
// tokens are prefilled and the rest decoded one step at a time, teacher-forced, as generation
// feeds them; the cache and its kernels are the ones kvq generate uses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/eval/divergence.h"
#include "kvq/eval/perplexity.h"
#include "kvq/eval/table.h"
#include "kvq/methods/quantizer.h"
#include "kvq/model/llama.h"

namespace kvq::app {

struct RuntimeEvalOptions {
  int64_t seq_len = 0;    // L (0: the model's context), windows as kvq eval cuts them
  int64_t prefill = 256;  // tokens of each window prefilled (at most L - 1); the rest decoded
  int max_batch = 0;      // windows decoded together (0: 64 on a GPU, 8 on the CPU)
  double kv_mem_gib = 0;  // the engine's --kv-mem
  bool progress = true;
};

struct RuntimeEvalResult {
  std::string method;          // the quantizer's label
  std::string store;           // what held the cache
  eval::TokenAgreement agree;  // against the fp16 model's logits (forward, no cache)
  int64_t seq_len = 0, n_windows = 0, prefill = 0;
  double bytes_per_token = 0, bits_per_element = 0;
  double seconds = 0;
};

// Throws kvq::Error naming the flag (--runtime-prefill, --runtime-batch, --kv-mem) of a value
// runtime_perplexity cannot take; kvq eval calls it before its other work.
void check_runtime_eval_options(const RuntimeEvalOptions& options);

// Throws kvq::Error for what the engine refuses (the artifact, the method, the memory).
RuntimeEvalResult runtime_perplexity(const model::LlamaModel& m, const std::vector<int32_t>& tokens,
                                     const methods::Quantizer& q,
                                     const RuntimeEvalOptions& options);

// The table row of a runtime result: method "<label> (runtime)", the cache's bits per element
// as the runtime holds it, ppl and Δ against the fp16 baseline, KL and top-1, and a note with
// the fake-quantized perplexity of the same method (row `fake`) and the difference.
eval::ResultRow runtime_row(const RuntimeEvalResult& r, const eval::ResultRow& fake,
                            const eval::PerplexityResult& fp16);

}  // namespace kvq::app
