// UTF-8 validation (utf8.h): RFC 3629's table of well-formed byte sequences.
#include "kvq/common/utf8.h"

#include <cstdint>

#include "kvq/common/error.h"

namespace kvq {

size_t first_non_text_byte(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // ASCII runs, eight bytes at a time where no byte has its top bit set or is NUL.
    while (i + 8 <= n) {
      uint64_t w = 0;
      for (int k = 0; k < 8; ++k) w |= uint64_t{p[i + k]} << (8 * k);
      const uint64_t has_zero = (w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull;
      if ((w & 0x8080808080808080ull) != 0 || has_zero != 0) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned c = p[i];
    if (c == 0) return i;
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Lead byte: the sequence's length and the range of its second byte (RFC 3629, section 4).
    int len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
      if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // no overlong 4-byte forms
      if (c == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
    } else {
      return i;  // a continuation byte, C0/C1 (overlong) or F5..FF
    }
    if (n - i < static_cast<size_t>(len) || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (int k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += static_cast<size_t>(len);
  }
  return std::string_view::npos;
}

void require_utf8_text(std::string_view s, const std::string& where, const std::string& hint) {
  const size_t at = first_non_text_byte(s);
  if (at == std::string_view::npos) return;
  const auto byte = static_cast<unsigned char>(s[at]);
  if (byte == 0) fail("{}: not UTF-8 text (a NUL byte at byte {}){}", where, at, hint);
  fail("{}: not UTF-8 text (invalid byte 0x{:02x} at byte {}){}", where, byte, at, hint);
}

}  // namespace kvq
