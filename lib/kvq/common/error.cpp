// One-line descriptions of exceptions for main()'s catch-all (error.h).
#include "kvq/common/error.h"

#include <new>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace kvq {

std::string one_line(std::string what) {
  for (char& c : what) {
    if (c == '\r' || c == '\t') c = ' ';
  }
  what = what.substr(0, what.find('\n'));
  while (!what.empty() && what.back() == ' ') what.pop_back();
  return what.empty() ? "unknown error" : what;
}

std::string describe_current_exception() {
  try {
    throw;
  } catch (const Error& e) {
    return one_line(e.what());
  } catch (const nlohmann::json::exception& e) {
    // "[json.exception.out_of_range.406] number overflow ..." -> "JSON: number overflow ..."
    std::string what = e.what();
    const size_t end = what.find("] ");
    if (what.rfind("[json.exception.", 0) == 0 && end != std::string::npos)
      what = what.substr(end + 2);
    return one_line("JSON: " + what);
  } catch (const std::bad_alloc&) {
    return "out of memory (an allocation failed; a size in the input or a flag may be too large)";
  } catch (const std::length_error& e) {
    return one_line(std::string("a size is too large (") + e.what() + ")");
  } catch (const std::exception& e) {
    return one_line(e.what());
  } catch (...) {
    return "unknown exception (a kvq bug: please report it with the command line)";
  }
}

}  // namespace kvq
