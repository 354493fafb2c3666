// List flags (--contexts 4096,32768): a value given twice is a mistake to report, not to run
// twice under one label (rows that share a key, a cache timed twice).
#pragma once

#include <set>
#include <vector>

#include "kvq/common/error.h"

namespace kvq {

// Throws kvq::Error "<flag>: '<value>' is given twice" for the first value equal to an earlier one.
// O(n log n): a list may be as long as a command line allows.
template <typename T>
void require_distinct(const std::vector<T>& values, const char* flag) {
  std::set<T> seen;
  for (const T& v : values) {
    if (!seen.insert(v).second) fail("{}: '{}' is given twice", flag, v);
  }
}

}  // namespace kvq
