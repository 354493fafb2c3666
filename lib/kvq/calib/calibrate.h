// kvq calibrate's engine: runs the model over seeded calibration sequences and accumulates,
// per layer, the statistics fit needs (stats.h) with the Fisher information of every Key and
// Value element (KVQuant section 3.3). Two passes over the same sequences: a forward-only pass
// fixes each channel's range, then forward + backward fills the histograms. Memory is the
// model, one sequence's activations and gradients, and the fixed-size statistics.
// Not here: writing the artifact (calib_writer.h), tokenizing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/calib/stats.h"
#include "kvq/data/text.h"
#include "kvq/model/llama.h"

namespace kvq::calib {

struct CalibOptions {
  int64_t n_samples = 16;
  int64_t seq_len = 0;  // 0: min(2048, the model's context), as the paper
  uint64_t seed = 0;
  int64_t key_bins = 1024;     // per-channel histogram bins (keys pre/post RoPE, values)
  int64_t value_bins = 16384;  // bins on [-1, 1] for per-token-normalized values
  // Outlier fractions fit may ask for; 0 (no outliers) is always included.
  std::vector<double> fractions = {0.0, 0.001, 0.005, 0.01, 0.02, 0.05};
  int64_t sample_tokens = 512;  // reservoir rows per layer, capped at 2^20 / channels
  bool progress = true;
};

struct LayerCalib {
  ChannelStats key, key_post, value;  // per channel; key_post is RoPE'd keys with rotated Fisher
  // Normalized values per fraction: per token over all KV heads (nuq), per token and KV head
  // (nuq -vhead).
  VectorStats value_tokens, value_heads;
  TokenSample sample;
};

struct CalibResult {
  CalibOptions options;  // as used (seq_len resolved, fractions sorted with 0 first)
  std::vector<data::Window> sequences;
  std::vector<LayerCalib> layers;
  double mean_loss = 0.0;  // over the sequences, each the mean over its t - 1 predictions
  double seconds = 0.0, tokens_per_s = 0.0;  // both passes; tokens = n_samples * seq_len
  int64_t peak_rss_bytes = 0;                // process high-water mark (getrusage)
  int64_t peak_device_bytes = -1;            // CUDA allocator high-water mark; -1 on the CPU
};

// Stated maximum of --samples: sequences are drawn and kept up front, one window each.
inline constexpr int64_t kMaxSamples = int64_t{1} << 20;

// Checks the sizes the flags set against their stated maxima before anything is loaded:
// "--key-bins: expected 2..65536, found 2000000000" (artifact::kMaxKeyBins, kMaxValueBins,
// kMaxSamples; --sample-tokens >= 0, its cap is derived from the model).
void check_options(const CalibOptions& options);

// The sequence length a requested seq_len gives (0: min(2048, max_context), as the paper) for
// the model at `model_source`; throws kvq::Error naming `flag` (data::window_length's checks).
int64_t sequence_length(int64_t max_context, int64_t requested, const std::string& model_source,
                        const char* flag = "--seq-len");

// Fisher sums (histograms and per-channel totals) are divided by n_samples: the Fisher
// information averaged over sequences. Throws kvq::Error for n_samples < 1, a window longer
// than the model's context or than the data, and non-finite activations or gradients.
CalibResult calibrate(const model::LlamaModel& model, const std::vector<int32_t>& tokens,
                      const CalibOptions& options);

}  // namespace kvq::calib
