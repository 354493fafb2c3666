// Problems collector and the shape / finiteness checks. Not here: anything HDF5 (h5.cpp).
#include "kvq/artifact/validate.h"

#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kvq/common/error.h"

namespace kvq::artifact {

namespace {

template <typename T>
bool check_finite_impl(Problems& problems, const std::string& where, const T* values, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) {
      problems.add(where,
                   fmt::format("expected finite values, found {} at index {}", values[i], i));
      return false;
    }
  }
  return true;
}

}  // namespace

void Problems::add(const std::string& where, const std::string& message) {
  ++n_;
  if (items_.size() < kKept) items_.push_back(where.empty() ? message : where + ": " + message);
}

void Problems::throw_if_any() const {
  if (n_ == 0) return;
  if (n_ == 1) throw Error(items_.front());
  throw Error(fmt::format("{} (and {} more)", items_.front(), n_ - 1));
}

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool check_shape(Problems& problems, const std::string& where, const std::vector<int64_t>& expected,
                 const std::vector<int64_t>& found) {
  if (expected == found) return true;
  problems.add(where, fmt::format("expected shape {}, found {}", shape_string(expected),
                                  shape_string(found)));
  return false;
}

bool check_finite(Problems& problems, const std::string& where, const float* values, size_t n) {
  return check_finite_impl(problems, where, values, n);
}

bool check_finite(Problems& problems, const std::string& where, const double* values, size_t n) {
  return check_finite_impl(problems, where, values, n);
}

void require_shape(const std::string& where, const std::vector<int64_t>& expected,
                   const std::vector<int64_t>& found) {
  Problems problems;
  check_shape(problems, where, expected, found);
  problems.throw_if_any();
}

}  // namespace kvq::artifact
