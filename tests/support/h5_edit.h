// Edits an HDF5 artifact in place for tests that need a file kvq itself would not write (a value
// out of its documented range): sets one element of a dataset through the HDF5 C API and, unless
// told not to, rewrites the dataset's `xxh64` checksum attribute to match, as a crafted file
// could, so that the reader's range checks (not its checksum) are what the test meets.
#pragma once

#include <hdf5.h>

#include <cstddef>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/common/hash.h"

namespace kvq::test {

// Sets element `index` of a float64, float32 or int64 dataset at `path` of the open file `f`;
// with keep_checksum, leaves the old checksum (a flipped byte, as storage would corrupt it).
template <typename T>
void h5_set_element(hid_t f, const char* path, size_t index, T value, bool keep_checksum = false) {
  static_assert(std::is_same_v<T, double> || std::is_same_v<T, float> ||
                std::is_same_v<T, int64_t>);
  const hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
  ASSERT_GE(d, 0) << path;
  const hid_t space = H5Dget_space(d);
  std::vector<T> v(static_cast<size_t>(H5Sget_simple_extent_npoints(space)));
  const hid_t type = std::is_same_v<T, double>  ? H5T_NATIVE_DOUBLE
                     : std::is_same_v<T, float> ? H5T_NATIVE_FLOAT
                                                : H5T_NATIVE_INT64;
  EXPECT_GE(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), 0);
  v.at(index) = value;
  EXPECT_GE(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), 0);
  if (keep_checksum) {
    H5Sclose(space);
    H5Dclose(d);
    return;
  }
  Checksum64 sum;
  sum.update(v.data(), v.size() * sizeof(T));
  const std::string hex = sum.hex();
  const hid_t a = H5Aopen(d, "xxh64", H5P_DEFAULT);
  ASSERT_GE(a, 0) << path << "@xxh64";
  const hid_t str = H5Tcopy(H5T_C_S1);
  H5Tset_size(str, hex.size());
  EXPECT_GE(H5Awrite(a, str, hex.data()), 0);
  H5Tclose(str);
  H5Aclose(a);
  H5Sclose(space);
  H5Dclose(d);
}

}  // namespace kvq::test
