// Which tokens a cache holds in fp16, and the checks of fitted tables (kv_cache_format.h).
#include "kvq/quant/kv_cache_format.h"

#include <algorithm>
#include <cmath>

#include "kvq/common/error.h"

namespace kvq::quant {

int64_t KvCacheFormat::n_quantized(int64_t n_tokens) const {
  if (!quantizes()) return 0;
  const int64_t q = n_tokens - n_sink - n_recent;
  return q > 0 ? q / flush * flush : 0;
}

int64_t KvCacheFormat::fp16_tail(int64_t n_tokens) const {
  const int64_t rest = std::max<int64_t>(0, n_tokens - n_sink);
  return quantizes() ? rest - n_quantized(n_tokens) : rest;
}

int64_t KvCacheFormat::fp16_tokens(int64_t n_tokens) const {
  return std::min(std::max<int64_t>(n_tokens, 0), n_sink) + fp16_tail(n_tokens);
}

bool KvCacheFormat::is_fp16(int64_t t, int64_t n_tokens) const {
  return t < n_sink || t >= n_sink + n_quantized(n_tokens);
}

void check_levels(const std::string& where, const std::vector<float>& levels, int bits,
                  bool in_unit) {
  const size_t n = size_t{1} << bits;
  if (levels.size() != n) {
    fail("{}: expected {} levels for {} bits, found {}", where, n, bits, levels.size());
  }
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(levels[i])) {
      fail("{}: expected finite levels, found {} at index {}", where, levels[i], i);
    }
    if (in_unit && std::fabs(levels[i]) > 1.0f) {
      fail("{}: expected levels in [-1, 1], found {} at index {}", where, levels[i], i);
    }
    if (i > 0 && !(levels[i] > levels[i - 1])) {
      fail("{}: expected strictly ascending levels, found {} after {} at index {}", where,
           levels[i], levels[i - 1], i);
    }
  }
}

void check_key_ranges(const std::string& where, const std::vector<float>& lo,
                      const std::vector<float>& hi, int64_t n_channels) {
  if (static_cast<int64_t>(lo.size()) != n_channels ||
      static_cast<int64_t>(hi.size()) != n_channels) {
    fail("{}: expected {} channel ranges, found lo {} hi {}", where, n_channels, lo.size(),
         hi.size());
  }
  for (int64_t c = 0; c < n_channels; ++c) {
    if (!std::isfinite(lo[c]) || !std::isfinite(hi[c]) || !(lo[c] <= hi[c])) {
      fail("{}: channel {}: expected finite lo <= hi, found [{}, {}]", where, c, lo[c], hi[c]);
    }
  }
}

}  // namespace kvq::quant
