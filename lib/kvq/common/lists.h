// List flags (--contexts 4096,32768): a value given twice is a mistake to report, not to run
// twice under one label (rows that share a key, a cache timed twice).
#pragma once

#include <cstddef>
#include <vector>

#include "kvq/common/error.h"

namespace kvq {

// Throws kvq::Error "<flag>: '<value>' is given twice" for the first value equal to an earlier one.
template <typename T>
void require_distinct(const std::vector<T>& values, const char* flag) {
  for (size_t i = 1; i < values.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (values[i] == values[j]) fail("{}: '{}' is given twice", flag, values[i]);
    }
  }
}

}  // namespace kvq
