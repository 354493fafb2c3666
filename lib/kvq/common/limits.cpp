// Checked size arithmetic and capped lists (see limits.h).
#include "kvq/common/limits.h"

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

}  // namespace kvq
