// calib.h5, schema kvq.calib/2 (schemas/calib-2.md): what kvq calibrate writes and kvq fit reads.
// The writer goes through a temporary file and a rename; the reader checks the schema and
// version, every dataset's dtype and shape against the model fingerprint, finiteness and value
// ranges, and reports each problem with the file and the path inside it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/artifact/fingerprint.h"
#include "kvq/artifact/h5.h"
#include "kvq/artifact/validate.h"
#include "kvq/calib/calibrate.h"

namespace kvq::calib {

inline constexpr const char* kCalibSchema = "kvq.calib";
inline constexpr int64_t kCalibVersion = 2;  // 2: value histograms per token and per (token, KV head)

struct RunInfo {  // how the artifact was made; root attributes, not compared by readers
  std::string device, dtype, created;  // created: UTC ISO 8601
};

void write_calib(const std::string& path, const CalibResult& result,
                 const artifact::ModelFingerprint& model, const artifact::DataFingerprint& data,
                 const RunInfo& run);

// One kind of activation of one layer (/layers/NN/{key,key_post,value}).
struct ChannelData {
  int64_t n_tokens = 0;
  artifact::Array<double> min, max, mean, std, fisher_mean;  // [C]
  artifact::Array<double> hist_count, hist_fisher;           // [C, key_bins]
  artifact::Array<double> thresholds;                        // [F, 2, C]: lo, hi per fraction
};

// Values normalized per vector (kv_format.h) at each calibrated outlier fraction.
struct VectorData {
  artifact::Array<double> normalized_count, normalized_fisher;  // [F, value_bins] on [-1, 1]
  artifact::Array<double> outlier_fraction;                     // [F], measured
  artifact::Array<double> vector_range;                         // [F, 3]: min, mean, max of hi - lo
};

struct LayerData {
  ChannelData key, key_post, value;
  VectorData value_token;  // vectors of whole tokens (nuq values)
  VectorData value_head;   // vectors of one token of one KV head (nuq -vhead)
  artifact::Array<int64_t> sample_positions;                    // [S]
  artifact::Array<float> sample_key, sample_value, sample_key_fisher, sample_value_fisher;  // [S, C]
};

struct CalibData {
  std::string path;
  artifact::ModelFingerprint model;
  artifact::DataFingerprint data;
  std::vector<double> fractions;
  int64_t key_bins = 0, value_bins = 0;
  std::vector<LayerData> layers;
};

// Reads and validates; throws kvq::Error with the first problem ("(and N more)").
CalibData read_calib(const std::string& path);
// Validates an open file, adding every problem found; returns what could be read.
CalibData check_calib(const artifact::File& file, artifact::Problems& problems);

}  // namespace kvq::calib
