// UTF-8 validation for text inputs: a binary file given as --data (a checkpoint, a .gz) must be
// refused, not tokenized byte by byte. Strict RFC 3629: no overlong forms, no surrogates
// (U+D800..U+DFFF), nothing past U+10FFFF, no truncated sequence. Not here: normalization.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kvq {

// The offset of the first byte that does not start a well-formed UTF-8 sequence, or of the first
// NUL byte (text files hold none); npos if the whole of `s` is NUL-free UTF-8.
size_t first_non_text_byte(std::string_view s);

// Throws kvq::Error "<where>: not UTF-8 text (<what> at byte <offset>)<hint>" unless `s` is
// NUL-free UTF-8.
void require_utf8_text(std::string_view s, const std::string& where, const std::string& hint = "");

// The hint the text readers give (data files, prompts).
inline constexpr const char* kUtf8Hint = "; kvq reads UTF-8 text (convert it, e.g. with iconv)";

}  // namespace kvq
