// Writes a calibration's statistics as calib.h5, schema kvq.calib/2 (schemas/calib-2.md),
// through a temporary file and a rename. Not here: reading and validating the file
// (artifact/calib_file.h, which kvq fit and kvq inspect use without the runner).
#pragma once

#include <string>

#include "kvq/artifact/fingerprint.h"
#include "kvq/calib/calibrate.h"

namespace kvq::calib {

struct RunInfo {  // how the artifact was made; root attributes, not compared by readers
  std::string device, dtype, created;  // created: UTC ISO 8601
};

void write_calib(const std::string& path, const CalibResult& result,
                 const artifact::ModelFingerprint& model, const artifact::DataFingerprint& data,
                 const RunInfo& run);

}  // namespace kvq::calib
