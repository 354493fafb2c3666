// Sampler (sampler.h). Probabilities in double; ties in the sort keep the lower token id first.
#include "kvq/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kvq/common/error.h"

namespace kvq::runtime {

void check_sampling(const SamplingParams& p) {
  if (!(p.temperature >= 0.0) || !std::isfinite(p.temperature)) {
    fail("temperature: expected a finite number >= 0, found {}", p.temperature);
  }
  if (p.top_k < 0) fail("top_k: expected >= 0 (0: all tokens), found {}", p.top_k);
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) fail("top_p: expected 0 < p <= 1, found {}", p.top_p);
}

int32_t Sampler::sample(const float* logits, int64_t n_vocab) {
  int64_t best = 0;
  for (int64_t i = 0; i < n_vocab; ++i) {
    if (!std::isfinite(logits[i])) fail("sampling: logit {} is {}", i, logits[i]);
    if (logits[i] > logits[best]) best = i;
  }
  if (p_.temperature == 0.0) return static_cast<int32_t>(best);
  std::vector<int64_t> order(n_vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  int64_t keep = p_.top_k > 0 ? std::min(p_.top_k, n_vocab) : n_vocab;
  std::vector<double> prob(keep);
  const double top = logits[order[0]];
  double sum = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    prob[i] = std::exp((logits[order[i]] - top) / p_.temperature);
    sum += prob[i];
  }
  if (p_.top_p < 1.0) {
    double mass = 0.0;
    int64_t i = 0;
    while (i < keep && mass < p_.top_p * sum) mass += prob[i++];
    keep = std::max<int64_t>(i, 1);
    sum = mass > 0 ? mass : prob[0];
  }
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  for (int64_t i = 0; i < keep; ++i) {
    if (u < prob[i]) return static_cast<int32_t>(order[i]);
    u -= prob[i];
  }
  return static_cast<int32_t>(order[keep - 1]);
}

}  // namespace kvq::runtime
