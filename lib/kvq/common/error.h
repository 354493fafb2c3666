// kvq::Error: the one exception type library code throws.
//
// A message is one line: where (input file, path inside it, or flag), what was expected, what
// was found, e.g. "quant.h5:/layers/07/key/codebook: expected 8 levels, found 16". main() catches
// it, prints "kvq <cmd>: error: <what>" and exits 1. KVQ_CHECK guards internal invariants and
// adds the source location, since a failed invariant is a kvq bug rather than bad input.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace kvq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throws kvq::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// `what` as one line: the text before its first line break, tabs and carriage returns as spaces.
std::string one_line(std::string what);

// For a catch (...) block: the exception being handled as one line. kvq::Error is already
// "<where>: <what>"; a library's own exception that got through (a bug to fix where the input
// is known) is named by its kind: "JSON: ...", "out of memory ...", "a size is too large ...".
// LibTorch's c10::Error is main()'s to describe (this layer does not see LibTorch).
std::string describe_current_exception();

}  // namespace kvq

#define KVQ_CHECK(cond, ...)                                                                \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      throw ::kvq::Error(::fmt::format("internal check failed at {}:{}: {} ({})", __FILE__, \
                                       __LINE__, #cond, ::fmt::format(__VA_ARGS__)));       \
    }                                                                                       \
  } while (0)
