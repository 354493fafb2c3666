// Next-token sampling: greedy, or temperature with top-k and top-p (nucleus) filtering, from a
// seeded generator, so a request's tokens are reproducible.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace kvq::runtime {

struct SamplingParams {
  double temperature = 0.0;  // 0: greedy (the first largest logit)
  int64_t top_k = 0;         // keep the k most likely tokens; 0: all
  double top_p = 1.0;        // keep the smallest set of most likely tokens with mass >= p
  uint64_t seed = 0;
};

// Throws kvq::Error naming the field unless temperature >= 0 (finite), top_k >= 0 and
// 0 < top_p <= 1.
void check_sampling(const SamplingParams& p);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}
  // logits: one row of n_vocab values. Non-finite logits are an error naming the position.
  int32_t sample(const float* logits, int64_t n_vocab);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

}  // namespace kvq::runtime
