// Which cached tokens a query sees quantized: KIVI's residual (quantized R at a time once R have
// formed), SKVQ's sliding window with sink tokens, and none for methods without a window.
#include <gtest/gtest.h>

#include "kvq/eval/quantized.h"
#include "kvq/methods/method.h"

namespace kvq {
namespace {

// Row i of the mask as a string: 'q' quantized, 'f' full precision.
std::vector<std::string> rows(const at::Tensor& mask) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < mask.size(0); ++i) {
    std::string s;
    for (int64_t j = 0; j < mask.size(1); ++j) s += mask[i][j].item<bool>() ? 'q' : 'f';
    out.push_back(s);
  }
  return out;
}

TEST(QuantizedMask, KiviQuantizesTheResidualOnceItIsFull) {
  const auto spec = methods::parse_method("kivi2-g2-r4");
  const auto m = eval::quantized_mask(spec.kv_format(), 0, 9, at::kCPU);
  // Keys j > i are masked by causality anyway; what matters is j <= i.
  const std::vector<std::string> want = {"fffffffff", "fffffffff", "fffffffff",
                                         "qqqqfffff", "qqqqfffff", "qqqqfffff",
                                         "qqqqfffff", "qqqqqqqqf", "qqqqqqqqf"};
  EXPECT_EQ(rows(m), want);
}

TEST(QuantizedMask, SkvqSlidingWindowAndSinks) {
  const auto spec = methods::parse_method("skvq-k2-v2-g128-w3-s1");
  const auto m = eval::quantized_mask(spec.kv_format(), 0, 7, at::kCPU);
  const std::vector<std::string> want = {"fffffff", "fffffff", "fffffff", "fffffff",
                                         "fqfffff", "fqqffff", "fqqqfff"};
  EXPECT_EQ(rows(m), want);
  // A forward continuing from position 5 sees the same rows as queries 5 and 6 above.
  const auto tail = eval::quantized_mask(spec.kv_format(), 5, 2, at::kCPU);
  EXPECT_EQ(rows(tail), (std::vector<std::string>{"fqqffff", "fqqqfff"}));
}

TEST(QuantizedMask, NoneForMethodsWithoutAWindow) {
  EXPECT_FALSE(
      eval::quantized_mask(methods::parse_method("nuq3-1%-sink").kv_format(), 0, 4, at::kCPU)
          .defined());
  EXPECT_FALSE(
      eval::quantized_mask(methods::parse_method("int4").kv_format(), 0, 4, at::kCPU).defined());
}

}  // namespace
}  // namespace kvq
