// Streaming calibration statistics for one layer's Keys or Values, in memory fixed by the
// model's shape and the bin counts, never by the number of calibration tokens
// (schemas/calib-2.md documents each quantity and its error bound).
//
//   ChannelStats   per channel: exact min/max (from a first, forward-only pass), count and
//                  Fisher-weighted histograms on [min, max], sums for mean/std, total Fisher.
//                  fit derives per-channel outlier thresholds and the per-channel-normalized,
//                  Fisher-weighted distribution of keys from them.
//   VectorStats    per-token (per KV head) normalized values for each outlier fraction, as
//                  KVQuant's online value normalization sees them: a count and a Fisher-weighted
//                  histogram on [-1, 1], plus per-vector range statistics.
//   TokenSample    a seeded reservoir of whole tokens (activations and Fisher) for methods that
//                  need joint statistics across channels (SKVQ's clipping search).
// Tensors stay on the model's device in fp64; to_cpu() copies them for writing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include <ATen/ATen.h>

namespace kvq::calib {

class ChannelStats {
 public:
  ChannelStats(int64_t n_channels, int64_t n_bins, at::Device device);

  // Pass 1: x [t, n_channels] (any float dtype) widens the per-channel range.
  void observe_range(const at::Tensor& x);
  // Pass 2: histograms and sums; x and fisher [t, n_channels]. Values outside the range seen in
  // pass 1 (none, when both passes see the same data) land in the end bins.
  void accumulate(const at::Tensor& x, const at::Tensor& fisher);

  int64_t n_channels() const { return n_channels_; }
  int64_t n_bins() const { return n_bins_; }
  int64_t n_tokens() const { return n_tokens_; }
  // Bin b of channel c covers [min_c + b * width_c, min_c + (b + 1) * width_c).
  at::Tensor min, max, width;          // [n_channels] fp64
  at::Tensor count, fisher;            // [n_channels, n_bins] fp64
  at::Tensor sum, sum_sq, fisher_sum;  // [n_channels] fp64

  void finish_ranges();  // after pass 1: fixes width; a constant channel gets width 1
  void to_cpu();

 private:
  int64_t n_channels_, n_bins_, n_tokens_ = 0;
};

// Per-side outlier thresholds of each channel at fraction f, from the count histogram: the
// value of rank k = outliers_per_side(n_tokens, f) from either end, interpolated within its
// bin, so off by at most one bin width. Returns [2, n_channels] fp64 (lo, hi); f = 0 gives the
// exact min and max.
at::Tensor channel_thresholds(const ChannelStats& s, double fraction);

class VectorStats {
 public:
  VectorStats(std::vector<double> fractions, int64_t vector_length, int64_t n_bins,
              at::Device device);

  // x, fisher: [t, n_kv_heads * head_dim]; each vector of `vector_length` consecutive
  // elements (a whole token, or one token of one KV head) is normalized as kv_format.h defines
  // for every fraction.
  void accumulate(const at::Tensor& x, const at::Tensor& fisher);

  const std::vector<double>& fractions() const { return fractions_; }
  int64_t n_bins() const { return n_bins_; }
  at::Tensor count, fisher;                    // [n_fractions, n_bins] fp64 over [-1, 1]
  at::Tensor n_outliers;                       // [n_fractions] fp64
  at::Tensor range_min, range_max, range_sum;  // [n_fractions] fp64: per-vector hi - lo
  int64_t n_vectors = 0;
  void to_cpu();

 private:
  std::vector<double> fractions_;
  int64_t vector_length_, n_bins_;
};

class TokenSample {
 public:
  TokenSample(int64_t capacity, uint64_t seed);
  // Offers every token of one sequence: k, v, k_fisher, v_fisher [t, channels], positions from
  // `start_pos`. Reservoir sampling (Algorithm R) with its own mt19937_64.
  void offer(const at::Tensor& k, const at::Tensor& v, const at::Tensor& k_fisher,
             const at::Tensor& v_fisher, int64_t start_pos);
  int64_t capacity() const { return capacity_; }
  int64_t size() const { return std::min(seen_, capacity_); }
  // [capacity, channels] fp32 on the CPU, of which rows [0, size()) hold tokens.
  at::Tensor k, v, k_fisher, v_fisher;
  std::vector<int64_t> positions;

 private:
  int64_t capacity_, seen_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace kvq::calib
