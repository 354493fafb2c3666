// Fitting a method from calibration statistics (calib.h5, schemas/calib-2.md) into a Quantizer.
//
//   nuqB      per layer, keys (pre-RoPE, or the key_post statistics with -post): per-channel
//             dense range [lo, hi] = calib thresholds at the method's outlier fraction; each
//             channel's histogram bin centres re-expressed as (x - offset_c) / scale_c, those in
//             [-1, 1] pooled over channels onto a grid of key_grid_bins bins with their Fisher
//             weights, then exact weighted k-means (quant/kmeans.h) for 2^B levels. Values: the
//             same on calib's normalized Fisher histogram of the method's value vectors (whole
//             tokens; tokens of one KV head with -vhead) at that fraction. With -qnorm, Q-Norm
//             (quant/qnorm.h) on the count histograms gives the decode levels. A layer whose
//             Fisher histogram is all zero falls back to count weights.
//   skvq      per layer and separately for K and V: channels ordered by calibrated range width
//             (max - min, then centre, then index), so that channels of similar range share a
//             group; the clip ratio from clip_grid minimising the Fisher-weighted squared error
//             of the method on calib's token samples (-post: samples rotated by RoPE at their
//             positions, Fisher averaged over each RoPE pair, which the rotation preserves).
//   fp8       with calib: amax per layer = max |x| of the calibrated per-channel min/max.
//   intB, kivi, fp16 (and fp8 without calib): nothing to fit; per-layer tables (bits only) when
//             the model is known from calib or FitOptions::model.
// Mixed precision (kvq's own): fit_bits_budget chooses per-layer key and value bits in {2, 3, 4}
// minimising the summed Fisher-weighted error estimate under an average code-bit budget, by an
// exact dynamic programme over layers.
#pragma once

#include <cstdint>
#include <vector>

#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/methods/method.h"
#include "kvq/methods/quantizer.h"

namespace kvq::methods {

struct FitOptions {
  // > 0 (nuq only): per-layer bits for this average code bits per element, 2..4.
  double bits_budget = 0.0;
  // For a calibration-free method fit without calib: the model it is for (fingerprint and
  // per-layer tables). Ignored when calib is given.
  const artifact::ModelFingerprint* model = nullptr;
  int64_t key_grid_bins = 65536;  // nuq keys: pooling grid on [-1, 1]
  std::vector<float> clip_grid = {1.0f, 0.95f, 0.9f, 0.85f, 0.8f, 0.75f,
                                  0.7f, 0.65f, 0.6f, 0.55f, 0.5f};  // skvq
};

// calib may be null for calibration-free methods; for nuq and skvq its absence is the error
// "method nuq3 needs --calib calib.h5". Deterministic: the same inputs give the same tables.
Quantizer fit(const MethodSpec& spec, const artifact::CalibData* calib,
              const FitOptions& options = {});

struct LayerBits {
  int key = 0, value = 0;
};

// Error estimates sum F (x - x')^2 of one layer's keys and values at 2, 3 and 4 bits.
struct LayerErrors {
  double key[3] = {0, 0, 0};
  double value[3] = {0, 0, 0};
};
std::vector<LayerErrors> nuq_error_estimates(const MethodSpec& base,
                                             const artifact::CalibData& calib,
                                             const FitOptions& options = {});

// Per-layer bits for `base` (a nuq spec; its own bits are ignored) with the mean of all key and
// value code bits <= avg_bits, minimising the summed error estimate. avg_bits in [2, 4].
std::vector<LayerBits> fit_bits_budget(const MethodSpec& base, const artifact::CalibData& calib,
                                       double avg_bits, const FitOptions& options = {});
// The same choice from given error estimates (exposed for tests).
std::vector<LayerBits> choose_bits(const std::vector<LayerErrors>& errors, double avg_bits);

}  // namespace kvq::methods
