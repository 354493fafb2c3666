// Checked size arithmetic and capped lists (see limits.h).
#include "kvq/common/limits.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "kvq/common/error.h"

namespace kvq {

uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& where) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    fail("{}: expected a size below 2^64, found {} * {}", where, a, b);
  return r;
}

uint64_t checked_add(uint64_t a, uint64_t b, const std::string& where) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    fail("{}: expected a size below 2^64, found {} + {}", where, a, b);
  return r;
}

uint64_t checked_product(const std::vector<uint64_t>& factors, uint64_t init,
                         const std::string& where) {
  uint64_t r = init;
  for (uint64_t f : factors) r = checked_mul(r, f, where);
  return r;
}

std::string capped_list(const std::vector<std::string>& items, size_t max) {
  std::string out;
  const size_t shown = items.size() < max ? items.size() : max;
  for (size_t i = 0; i < shown; ++i) {
    if (i > 0) out += ", ";
    out += items[i];
  }
  if (items.size() > shown) out += fmt::format(" ... and {} more", items.size() - shown);
  return out;
}

void require_regular_file(const std::string& path, const std::string& where) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("{}: cannot open ({})", where, std::strerror(errno));
  if (S_ISREG(st.st_mode)) return;
  const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                     : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : "a special file";
  fail("{}: expected a regular file, found {}", where, kind);
}

}  // namespace kvq
