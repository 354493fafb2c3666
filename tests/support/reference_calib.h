// A real calibration for tests that fit methods: a shared model calibrated on its own reference
// tokens (reference.safetensors, input_ids), written as calib.h5 and read back as kvq fit reads
// it. Header-only: only the tests that include it link the calibration code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/calib/calib_writer.h"
#include "kvq/calib/calibrate.h"
#include "kvq/model/io/safetensors.h"
#include "kvq/model/llama.h"

namespace kvq::test {

// The token ids of a reference.safetensors (int64 input_ids), as the model takes them.
inline std::vector<int32_t> reference_input_ids(const model::SafetensorsFile& ref) {
  const model::TensorView& ids = ref.get("input_ids");
  std::vector<int32_t> tokens(ids.numel());
  for (int64_t i = 0; i < ids.numel(); ++i)
    tokens[i] = static_cast<int32_t>(reinterpret_cast<const int64_t*>(ids.data)[i]);
  return tokens;
}

// Calibrates m (loaded from model_dir) on n_samples x seq_len of tokens, writes calib.h5 to
// path and returns what read_calib makes of it.
inline artifact::CalibData reference_calib(const model::LlamaModel& m, const std::string& model_dir,
                                           const std::vector<int32_t>& tokens,
                                           const std::string& path, int n_samples = 2,
                                           int seq_len = 32) {
  calib::CalibOptions options;
  options.n_samples = n_samples;
  options.seq_len = seq_len;
  options.progress = false;
  const calib::CalibResult r = calib::calibrate(m, tokens, options);
  artifact::DataFingerprint data;
  data.source = "reference.safetensors";
  data.n_sequences = n_samples;
  data.seq_len = seq_len;
  calib::write_calib(path, r,
                     artifact::model_fingerprint(m.config(), m.weights().checksum, model_dir), data,
                     {"cpu", "fp32", "now"});
  return artifact::read_calib(path);
}

}  // namespace kvq::test
