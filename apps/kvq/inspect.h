// Printing an artifact's contents, as kvq inspect does and kvq calibrate and kvq fit do after
// writing one (inspect.cpp).
#pragma once

#include <cstdint>

#include "kvq/artifact/calib_file.h"
#include "kvq/methods/quantizer.h"

namespace kvq::app {

// Figures of the run that made an artifact, printed beside its contents.
struct RunFigures {
  double seconds = 0, tokens_per_s = 0;
  int64_t peak_rss_bytes = 0, peak_device_bytes = -1;
  double mean_loss = 0;
};

// A calib.h5's per-layer summary as a markdown table or one JSON document.
void print_calib(const artifact::CalibData& calib, bool json, const RunFigures* run);

// A quant.h5's summary: bits per element at `context` tokens (0: the model's context, else
// 4096), and the fit time when seconds >= 0.
void print_quant(const methods::Quantizer& q, bool json, int64_t context, double seconds);

}  // namespace kvq::app
