// Guards that keep a count or size read from a file or a flag from turning into unbounded work:
// checked size arithmetic (one helper, used wherever such sizes are multiplied or added) and
// capped problem lists. Not here: the maxima themselves; each reader states its own beside the
// field it bounds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvq {

// a * b and a + b on sizes. On overflow of 64 bits throws kvq::Error
// "<where>: expected a size below 2^64, found A * B" (or A + B); never wraps.
uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& where);
uint64_t checked_add(uint64_t a, uint64_t b, const std::string& where);

// The product of `factors`, starting from `init` (e.g. an element size); same error as checked_mul.
uint64_t checked_product(const std::vector<uint64_t>& factors, uint64_t init,
                         const std::string& where);

// "a, b, c" with at most `max` items, then "... and N more": a problem list stays readable and
// bounded however many problems a corrupt file yields.
std::string capped_list(const std::vector<std::string>& items, size_t max = 10);

// Inputs read whole must be regular files: a FIFO or a device (/dev/zero, a pipe nobody writes)
// has no end, or blocks the open itself. Throws kvq::Error "<where>: expected a regular file,
// found a FIFO" (a directory, a character device, ...), or "<where>: cannot open (...)".
void require_regular_file(const std::string& path, const std::string& where);

// Default cap for problem lists printed by readers and `kvq inspect`.
constexpr size_t kMaxListedProblems = 10;

}  // namespace kvq
