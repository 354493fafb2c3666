// main()'s one-line description of whatever exception ends a command (common/error.h): kvq's
// own errors unchanged, library exceptions (nlohmann::json, std::bad_alloc, std::length_error,
// anything else) named by kind on one line. LibTorch's c10::Error is main()'s own case.
#include <gtest/gtest.h>

#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvq/common/error.h"

namespace kvq {
namespace {

std::string describe(const std::function<void()>& f) {
  try {
    f();
  } catch (...) {
    return describe_current_exception();
  }
  return "<no exception>";
}

TEST(ErrorForm, LibraryExceptionsBecomeOneLine) {
  EXPECT_EQ(describe([] { fail("a.h5:/x: expected 1, found 2"); }), "a.h5:/x: expected 1, found 2");
  EXPECT_EQ(describe([] { (void)nlohmann::json::parse("{\"a\": 1}").at("b"); }),
            "JSON: key 'b' not found");
  EXPECT_EQ(describe([] { throw std::bad_alloc(); }),
            "out of memory (an allocation failed; a size in the input or a flag may be too large)");
  EXPECT_EQ(describe([] { std::vector<int>(std::vector<int>().max_size() + 1); }),
            "a size is too large (cannot create std::vector larger than max_size())");
  EXPECT_EQ(describe([] { throw std::runtime_error("first\nsecond\tline"); }), "first");
  EXPECT_EQ(describe([] { throw 7; }),
            "unknown exception (a kvq bug: please report it with the command line)");
}

}  // namespace
}  // namespace kvq
