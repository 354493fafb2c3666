// Internal to lib/kvq/methods: the pieces fit.cpp assembles (contracts in fit.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/artifact/calib_file.h"
#include "kvq/methods/fit.h"

namespace kvq::methods::detail {

// Weighted points in normalized coordinates [-1, 1], ascending, for one layer's K or V.
struct Pooled {
  std::vector<double> x;
  std::vector<double> fisher;        // k-means weights
  std::vector<double> count;         // Q-Norm weights
  std::vector<double> error_weight;  // fisher * scale^2: squared error back in original units
};

// Index of `fraction` in calib.fractions (within 1e-12); throws naming the file and the method.
size_t fraction_index(const artifact::CalibData& calib, const MethodSpec& spec);

// Keys of one layer normalized by per-channel [lo, hi] (float, as the runtime uses them).
Pooled pool_keys(const artifact::CalibData& calib, const artifact::CalibChannels& keys,
                 const std::vector<float>& lo, const std::vector<float>& hi, int64_t grid_bins);
// Values of one layer from the normalized histograms of the method's value vectors (whole
// tokens, or tokens of one KV head with -vhead) at fraction index fi; the error weight uses the
// mean per-vector scale (vector_range mean / 2).
Pooled pool_values(const artifact::CalibData& calib, const artifact::CalibLayer& layer,
                   const MethodSpec& spec, size_t fi);

struct Levels {
  std::vector<float> encode, decode;
  double error = 0.0;  // sum error_weight (x - decode[nearest encode level])^2
};
// `where` names the layer in errors.
Levels fit_levels(const Pooled& points, int bits, bool qnorm, const std::string& where);

// The per-channel dense range of a layer's keys at fraction index fi, as floats.
void key_range(const artifact::CalibData& calib, const artifact::CalibChannels& keys, size_t fi,
               std::vector<float>& lo, std::vector<float>& hi);

LayerParams fit_nuq_layer(const MethodSpec& spec, const artifact::CalibData& calib, int64_t layer,
                          LayerBits bits, const FitOptions& options);
LayerParams fit_skvq_layer(const MethodSpec& spec, const artifact::CalibData& calib, int64_t layer,
                           const FitOptions& options);

}  // namespace kvq::methods::detail
