#include "kvq/calib/summary.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace kvq::calib {

ChannelSummary summarize_channels(const artifact::CalibChannels& d, int n_top) {
  ChannelSummary s;
  const size_t n = std::min(d.min.values.size(), d.max.values.size());
  if (n == 0) return s;
  std::vector<double> channel_max(n);
  for (size_t c = 0; c < n; ++c)
    channel_max[c] = std::max(std::abs(d.min.values[c]), std::abs(d.max.values[c]));
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return channel_max[a] > channel_max[b]; });
  s.max_abs = channel_max[order[0]];
  for (int i = 0; i < n_top && i < static_cast<int>(n); ++i)
    s.top.emplace_back(order[i], channel_max[order[i]]);
  std::vector<double> sorted = channel_max;
  std::sort(sorted.begin(), sorted.end());
  s.median_channel_max = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  const auto& f = d.fisher_mean.values;
  if (!f.empty())
    s.fisher_mean = std::accumulate(f.begin(), f.end(), 0.0) / static_cast<double>(f.size());
  return s;
}

}  // namespace kvq::calib
