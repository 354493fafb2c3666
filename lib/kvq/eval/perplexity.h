// Perplexity by the protocol of ../shared/data/README.md: the token stream is cut into
// floor(N / L) non-overlapping windows of L tokens, each run on its own from position 0, the
// L - 1 next-token predictions of each window scored, cross-entropy averaged over all scored
// tokens, ppl = exp(mean). A KVHook, if given, sees (and may replace) every layer's K and V, which
// is how quantized caches are evaluated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/data/text.h"
#include "kvq/model/llama.h"

namespace kvq::eval {

struct PerplexityOptions {
  int64_t seq_len = 0;     // L; 0 means the model's context
  int64_t batch_size = 0;  // windows per forward; 0 picks about 8192 tokens per batch
  bool progress = true;    // progress bar on stderr
  std::string label = "eval";
};

struct PerplexityResult {
  int64_t n_tokens = 0;  // tokens in the stream
  int64_t seq_len = 0;
  int64_t n_windows = 0;
  int64_t n_scored = 0;  // n_windows * (seq_len - 1)
  double mean_loss = 0;  // nats per scored token
  double ppl = 0;
  double seconds = 0;
  double tokens_per_s = 0;
};

// Windows per forward: options.batch_size, or as many as make about 8192 tokens (at least 1).
int64_t windows_per_batch(const PerplexityOptions& options, int64_t seq_len);

// windows[first, first + n) of `tokens` as a [n, seq_len] int64 batch on `device`.
at::Tensor window_batch(const std::vector<int32_t>& tokens,
                        const std::vector<data::Window>& windows, size_t first, int64_t n,
                        int64_t seq_len, at::Device device);

// Throws kvq::Error if seq_len exceeds the model's context or the stream is shorter than one
// window, or if the loss is not finite.
PerplexityResult perplexity(const model::LlamaModel& model, const std::vector<int32_t>& tokens,
                            const PerplexityOptions& options, model::KVHook* hook = nullptr);

}  // namespace kvq::eval
