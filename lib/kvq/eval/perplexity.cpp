#include "kvq/eval/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kvq/common/error.h"
#include "kvq/common/progress.h"
#include "kvq/data/text.h"

namespace kvq::eval {

int64_t windows_per_batch(const PerplexityOptions& options, int64_t seq_len) {
  return options.batch_size > 0 ? options.batch_size : std::max<int64_t>(1, 8192 / seq_len);
}

at::Tensor window_batch(const std::vector<int32_t>& tokens,
                        const std::vector<data::Window>& windows, size_t first, int64_t n,
                        int64_t seq_len, at::Device device) {
  at::Tensor input = at::empty({n, seq_len}, at::kLong);
  int64_t* dst = input.data_ptr<int64_t>();
  for (int64_t j = 0; j < n; ++j) {
    const int32_t* src = tokens.data() + windows[first + j].start;
    std::copy(src, src + seq_len, dst + j * seq_len);
  }
  return input.to(device);
}

PerplexityResult perplexity(const model::LlamaModel& model, const std::vector<int32_t>& tokens,
                            const PerplexityOptions& options, model::KVHook* hook) {
  const int64_t seq_len =
      data::window_length(model.config().max_seq_len, options.seq_len, model.source());
  const std::vector<data::Window> windows =
      data::eval_windows(static_cast<int64_t>(tokens.size()), seq_len, "--data");
  const int64_t batch = windows_per_batch(options, seq_len);

  c10::InferenceMode inference;
  const auto start = std::chrono::steady_clock::now();
  Progress progress(options.label, static_cast<int64_t>(windows.size()) * seq_len, "tok",
                    !options.progress);
  double total_nll = 0;
  for (size_t w = 0; w < windows.size(); w += batch) {
    const int64_t n = std::min<int64_t>(batch, static_cast<int64_t>(windows.size() - w));
    const at::Tensor input = window_batch(tokens, windows, w, n, seq_len, model.device());
    at::Tensor logits = model.forward(input, hook);
    // Sum, not mean, so every scored token weighs the same across batches of any size.
    const double nll = model::next_token_loss(logits, input).item<double>() * n * (seq_len - 1);
    if (!std::isfinite(nll)) {
      fail("eval: loss is not finite in windows {}..{} of {}", w, w + n - 1, options.label);
    }
    total_nll += nll;
    progress.advance(n * seq_len);
  }
  progress.finish();

  PerplexityResult r;
  r.n_tokens = static_cast<int64_t>(tokens.size());
  r.seq_len = seq_len;
  r.n_windows = static_cast<int64_t>(windows.size());
  r.n_scored = r.n_windows * (seq_len - 1);
  r.mean_loss = total_nll / static_cast<double>(r.n_scored);
  r.ppl = std::exp(r.mean_loss);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.tokens_per_s = r.seconds > 0 ? static_cast<double>(r.n_windows * seq_len) / r.seconds : 0;
  return r;
}

}  // namespace kvq::eval
