// The process's memory, as the commands report it.
#pragma once

#include <cstdint>

namespace kvq {

// The process's peak resident set size in bytes so far (getrusage's high-water mark).
int64_t peak_rss_bytes();

}  // namespace kvq
