// What an artifact is (its schema) and which model and which data it was made from (DESIGN.md
// section 4), stored as root attributes "model.*" and "data.*" and checked before an artifact is
// used with a model. Not here: computing the weights checksum (model/weights.h) or a file's sha256
// (common/hash.h).
#pragma once

#include <cstdint>
#include <string>

#include "kvq/artifact/h5.h"
#include "kvq/artifact/validate.h"
#include "kvq/model/io/config.h"
#include "kvq/quant/rope.h"

namespace kvq::artifact {

// Checks the root attribute "schema" is "<kind>/<version>" with this kind and a version this
// build reads (min_version..max_version); a newer version gets a hint to upgrade kvq, an older
// one to make the file again, another kind names what the file is. Returns the version.
int64_t require_schema(const Group& root, const std::string& kind, int64_t min_version,
                       int64_t max_version);

struct ModelFingerprint {
  std::string source;  // the path it was loaded from, for messages only (not compared)
  std::string architecture;
  int64_t n_layers = 0, dim = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, vocab_size = 0;
  int64_t max_seq_len = 0;
  double rope_theta = 0.0;
  std::string rope_scaling;      // "none" or "llama3(factor=8,low=1,high=4,original=8192)"
  std::string weights_checksum;  // Weights::checksum
};

ModelFingerprint model_fingerprint(const model::ModelConfig& config, const std::string& checksum,
                                   const std::string& source);

// The RoPE scaling a fingerprint records ("none" or
// "llama3(factor=..,low=..,high=..,original=..)"), parsed back. Throws kvq::Error
// "<where>@model.rope_scaling: expected ..." if malformed.
quant::RopeScaling parse_rope_scaling(const ModelFingerprint& m, const std::string& where);

struct DataFingerprint {
  std::string source;    // path as given
  std::string sha256;    // of the data file; "" for a directory (Brown) or in-memory data
  int64_t n_tokens = 0;  // tokens of the whole encoded source
  int64_t n_sequences = 0;
  int64_t seq_len = 0;
  int64_t seed = 0;
};

void write_fingerprints(const Group& root, const ModelFingerprint& m, const DataFingerprint& d);
// Read with type checks; missing attributes are reported to `problems` (for kvq inspect).
ModelFingerprint read_model_fingerprint(const Group& root, Problems& problems);
DataFingerprint read_data_fingerprint(const Group& root, Problems& problems);

// Throws "<artifact>: made for a different model than <model source>: n_layers 6 vs 4" on the
// first difference (sizes first, checksum last) with a hint to recalibrate.
void require_same_model(const std::string& artifact_path, const ModelFingerprint& artifact,
                        const ModelFingerprint& model);

}  // namespace kvq::artifact
