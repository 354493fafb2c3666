// Per-layer figures `kvq calibrate` and `kvq inspect` print from a calib.h5: how large each
// layer's Keys and Values get, and in which channels (KVQuant section 3.1: a few key channels
// carry most of the magnitude, which is why keys are quantized per channel).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "kvq/artifact/calib_file.h"

namespace kvq::calib {

struct ChannelSummary {
  double max_abs = 0.0;                         // largest |x| over all channels
  double median_channel_max = 0.0;              // median over channels of each channel's max |x|
  std::vector<std::pair<int64_t, double>> top;  // the largest channels (index, max |x|)
  double fisher_mean = 0.0;                     // mean Fisher information per element
};

ChannelSummary summarize_channels(const artifact::CalibChannels& d, int n_top = 3);

}  // namespace kvq::calib
