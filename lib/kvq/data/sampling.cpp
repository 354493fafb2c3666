// Evaluation windows (and their length) and seeded calibration sequences over a token stream.
// Sampling uses mt19937_64 (its output is fixed by the C++ standard) and its own integer mapping,
// because std::uniform_int_distribution differs between standard libraries: the same seed must
// give the same calibration set on every platform, or artifacts' data fingerprints would not
// reproduce.
#include <cstdint>
#include <random>

#include "kvq/common/error.h"
#include "kvq/data/text.h"

namespace kvq::data {
namespace {

// Uniform in [0, range), unbiased: rejects draws below 2^64 mod range so that every residue
// is hit by the same number of accepted values (arc4random_uniform's method).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t range) {
  const uint64_t threshold = (uint64_t{0} - range) % range;  // 2^64 mod range
  for (;;) {
    const uint64_t x = rng();
    if (x >= threshold) return x % range;
  }
}

void check_length(int64_t n_tokens, int64_t seq_len, const std::string& where) {
  if (seq_len <= 0) fail("{}: sequence length must be positive, found {}", where, seq_len);
  if (n_tokens < seq_len)
    fail("{}: {} tokens, fewer than one sequence of {} tokens", where, n_tokens, seq_len);
}

}  // namespace

int64_t window_length(int64_t max_context, int64_t requested, const std::string& model_source,
                      const char* flag) {
  const int64_t seq_len = requested != 0 ? requested : max_context;
  if (seq_len > max_context) {
    fail("{}: {} exceeds the context of {} tokens of the model at {}", flag, seq_len, max_context,
         model_source);
  }
  if (seq_len < 2) fail("{}: expected at least 2 tokens, found {}", flag, seq_len);
  return seq_len;
}

std::vector<Window> eval_windows(int64_t n_tokens, int64_t seq_len, const std::string& where) {
  check_length(n_tokens, seq_len, where);
  std::vector<Window> windows(static_cast<size_t>(n_tokens / seq_len));
  for (size_t w = 0; w < windows.size(); ++w)
    windows[w] = {static_cast<int64_t>(w) * seq_len, seq_len};
  return windows;
}

std::vector<Window> sample_sequences(int64_t n_tokens, int64_t seq_len, int64_t n_samples,
                                     uint64_t seed, const std::string& where) {
  if (n_samples <= 0) fail("{}: number of samples must be positive, found {}", where, n_samples);
  check_length(n_tokens, seq_len, where);
  std::mt19937_64 rng(seed);
  const uint64_t n_starts = static_cast<uint64_t>(n_tokens - seq_len) + 1;
  std::vector<Window> samples(static_cast<size_t>(n_samples));
  for (auto& s : samples) s = {static_cast<int64_t>(uniform_below(rng, n_starts)), seq_len};
  return samples;
}

}  // namespace kvq::data
