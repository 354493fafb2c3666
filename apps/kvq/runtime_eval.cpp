// kvq eval --runtime (runtime_eval.h).
#include "runtime_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/common/progress.h"
#include "kvq/data/text.h"
#include "kvq/runtime/engine.h"

namespace kvq::app {

void check_runtime_eval_options(const RuntimeEvalOptions& options) {
  if (options.prefill < 1)
    fail("--runtime-prefill: expected >= 1 token, found {}", options.prefill);
  if (options.max_batch < 0 || options.max_batch > 4096) {
    fail("--runtime-batch: expected 0..4096 windows (0: the default), found {}", options.max_batch);
  }
  runtime::EngineOptions eo;  // the engine's own check of --kv-mem
  eo.kv_mem_gib = options.kv_mem_gib;
  runtime::check_engine_options(eo);
}

RuntimeEvalResult runtime_perplexity(const model::LlamaModel& m, const std::vector<int32_t>& tokens,
                                     const methods::Quantizer& q,
                                     const RuntimeEvalOptions& options) {
  check_runtime_eval_options(options);
  const int64_t L = data::window_length(m.config().max_seq_len, options.seq_len, m.source());
  const std::vector<data::Window> windows =
      data::eval_windows(static_cast<int64_t>(tokens.size()), L, "--data");
  const int64_t n_win = static_cast<int64_t>(windows.size());
  const int64_t P = std::min(options.prefill, L - 1);
  const int batch = static_cast<int>(std::min<int64_t>(
      n_win, options.max_batch > 0 ? options.max_batch : (m.device().is_cuda() ? 64 : 8)));
  runtime::EngineOptions eo;
  eo.max_batch = batch;
  eo.kv_mem_gib = options.kv_mem_gib;
  runtime::Engine engine(m, q, eo);

  RuntimeEvalResult r;
  r.method = q.label();
  r.store = engine.store().name();
  r.seq_len = L;
  r.n_windows = n_win;
  r.prefill = P;
  c10::InferenceMode inference;
  const auto start = std::chrono::steady_clock::now();
  Progress progress("runtime " + r.method, n_win * L, "tok", !options.progress);
  for (int64_t w = 0; w < n_win; w += batch) {
    const int64_t n = std::min<int64_t>(batch, n_win - w);
    const at::Tensor input = eval::window_batch(tokens, windows, w, n, L, at::kCPU);
    const at::Tensor ref = m.forward(input.to(m.device()));  // [n, L, vocab]
    // The runtime's logits at every position but the last (which predicts past the window).
    at::Tensor out = ref.clone();
    std::vector<int64_t> ids;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t id = engine.open(L - 1);
      if (id < 0) fail("--runtime: the cache holds fewer than {} windows of {} tokens", n, L);
      ids.push_back(id);
      const int64_t* row = input.data_ptr<int64_t>() + j * L;
      const std::vector<int32_t> prompt(row, row + P);
      out[j].narrow(0, 0, P).copy_(engine.prefill(id, prompt));
    }
    progress.advance(n * P);
    for (int64_t pos = P; pos < L - 1; ++pos) {
      std::vector<int32_t> next(n);
      for (int64_t j = 0; j < n; ++j) {
        next[j] = static_cast<int32_t>(input.data_ptr<int64_t>()[j * L + pos]);
      }
      out.select(1, pos).copy_(engine.decode(ids, next));
      progress.advance(n);
    }
    for (int64_t id : ids) engine.close(id);
    progress.advance(n);  // the last token of each window is only a target
    r.agree.add(eval::score_next_tokens(out, ref, input.to(m.device())));
  }
  progress.finish();
  const runtime::CacheCost cost = engine.store().cost();
  r.bytes_per_token = cost.bytes_per_token;
  r.bits_per_element = cost.bits_per_element;
  if (cost.key_outliers_dropped > 0) {
    fmt::print(stderr,
               "eval --runtime: {}: {} key outliers found their page full and were clamped to the "
               "dense range (the pages hold twice the calibrated rate)\n",
               r.method, cost.key_outliers_dropped);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

eval::ResultRow runtime_row(const RuntimeEvalResult& r, const eval::ResultRow& fake,
                            const eval::PerplexityResult& fp16) {
  eval::ResultRow row;
  row.method = r.method + " (runtime)";
  row.bits_per_element = r.bits_per_element;
  row.mean_loss = r.agree.mean_loss();
  row.ppl = std::exp(row.mean_loss);
  row.delta_pct = 100.0 * (row.ppl / fp16.ppl - 1.0);
  row.n_tokens = r.agree.n;
  row.seconds = r.seconds;
  row.kl = r.agree.mean_kl();
  row.top1 = 100.0 * r.agree.top1_rate();
  row.note = fmt::format("fake-quantized {:.4f} ({:+.3f}%); prefill {} then decode; {}", fake.ppl,
                         100.0 * (row.ppl / fake.ppl - 1.0), r.prefill, r.store);
  return row;
}

}  // namespace kvq::app
