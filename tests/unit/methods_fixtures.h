// Test helpers for kvq/methods: field-by-field comparison of fitted parameters, so a failure
// names the field. Header-only so each test executable stays one source file.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include "kvq/methods/quantizer.h"

namespace kvq::test {

// Every field of two quantizers' parameters for layers [0, n_layers), keys and values.
inline void expect_same_params(const methods::Quantizer& a, const methods::Quantizer& b,
                               int64_t n_layers, const std::string& label) {
  for (int64_t i = 0; i < n_layers; ++i) {
    for (const bool key : {true, false}) {
      const methods::TensorParams& pa = key ? a.key_params(i) : a.value_params(i);
      const methods::TensorParams& pb = key ? b.key_params(i) : b.value_params(i);
      const std::string where = label + (key ? " keys" : " values") + " layer " + std::to_string(i);
      EXPECT_EQ(pa.bits, pb.bits) << where;
      EXPECT_EQ(pa.outlier_fraction, pb.outlier_fraction) << where;
      EXPECT_EQ(pa.levels_encode, pb.levels_encode) << where;
      EXPECT_EQ(pa.levels_decode, pb.levels_decode) << where;
      EXPECT_EQ(pa.lo, pb.lo) << where;
      EXPECT_EQ(pa.hi, pb.hi) << where;
      EXPECT_EQ(pa.perm, pb.perm) << where;
      EXPECT_EQ(pa.clip, pb.clip) << where;
      EXPECT_EQ(pa.amax, pb.amax) << where;
      EXPECT_EQ(pa.fisher_error, pb.fisher_error) << where;
    }
  }
}

}  // namespace kvq::test
