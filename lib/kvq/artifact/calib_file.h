// calib.h5, schema kvq.calib/2 (schemas/calib-2.md): what kvq fit reads from the file kvq
// calibrate writes. The reader checks the schema and version, every dataset's dtype and shape
// against the model fingerprint, finiteness and value ranges, and reports each problem with the
// file and the path inside it. No LibTorch here, so kvq inspect and fit read calib.h5 without
// the runner. Not here: the writer, which takes the calibration's tensors (calib/calib_writer.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/artifact/fingerprint.h"
#include "kvq/artifact/h5.h"
#include "kvq/artifact/validate.h"

namespace kvq::artifact {

inline constexpr const char* kCalibSchema = "kvq.calib";
inline constexpr int64_t kCalibVersion =
    2;  // 2: value histograms per token and per (token, KV head)

// Stated maxima for the histogram resolutions (--key-bins, --value-bins and the attributes
// key_bins, value_bins): keys cost 3 x C x key_bins x 16 B per layer, so 65536 bins of a
// 1024-channel model already take 3 GiB; values cost F x value_bins x 16 B.
inline constexpr int64_t kMaxKeyBins = 65536;
inline constexpr int64_t kMaxValueBins = int64_t{1} << 20;

// The group of layer `layer` of `n_layers`: "layers/07" (three digits past 100 layers).
std::string calib_layer_group(int64_t layer, int64_t n_layers);

// One kind of activation of one layer (/layers/NN/{key,key_post,value}).
struct CalibChannels {
  int64_t n_tokens = 0;
  Array<double> min, max, mean, std, fisher_mean;  // [C]
  Array<double> hist_count, hist_fisher;           // [C, key_bins]
  Array<double> thresholds;                        // [F, 2, C]: lo, hi per fraction
};

// Values normalized per vector (kv_format.h) at each calibrated outlier fraction.
struct CalibVectors {
  Array<double> normalized_count, normalized_fisher;  // [F, value_bins] on [-1, 1]
  Array<double> outlier_fraction;                     // [F], measured
  Array<double> vector_range;                         // [F, 3]: min, mean, max of hi - lo
};

struct CalibLayer {
  CalibChannels key, key_post, value;
  CalibVectors value_token;         // vectors of whole tokens (nuq values)
  CalibVectors value_head;          // vectors of one token of one KV head (nuq -vhead)
  Array<int64_t> sample_positions;  // [S]
  Array<float> sample_key, sample_value, sample_key_fisher, sample_value_fisher;  // [S, C]
};

struct CalibData {
  std::string path;
  ModelFingerprint model;
  DataFingerprint data;
  std::vector<double> fractions;
  int64_t key_bins = 0, value_bins = 0;
  std::vector<CalibLayer> layers;
};

// Reads and validates (in a forked child first: read_isolated, h5.h); throws kvq::Error with the
// first problem ("(and N more)").
CalibData read_calib(const std::string& path);
// Validates an open file, adding every problem found; returns what could be read. Call it inside
// read_isolated (with the File::open) when the file may be hostile.
CalibData check_calib(const File& file, Problems& problems);

}  // namespace kvq::artifact
