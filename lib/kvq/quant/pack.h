// Bit packing of B-bit quantization codes (B = 2, 3, 4) into 32-bit words: the CPU reference
// for the compressed KV cache's storage format (DESIGN.md section 5, kernels/kv_layout.h).
//
// Format: a word holds 16 codes for B=2, 10 for B=3 (top 2 bits zero), 8 for B=4; low bits
// first, so code i of a word sits at bits [B*i, B*i+B). Slots past the last code are zero.
// The row form packs each row into its own run of packed_words(n_cols, bits) words, so rows
// (tokens or channels of a cache page) never share a word and can be written independently.
// Not here: quantization (codes come in ready) and any GPU code. The header needs only
// <cstdint>, so .cu files include it for PackedLayout; pack.cpp adds fmt for its errors.
#pragma once

#include <cstdint>

namespace kvq::quant {

inline constexpr int kWordBits = 32;  // codes are packed into uint32_t

// The layout for one supported bit width, for code that fixes `bits` at compile time.
template <int kBits>
struct PackedLayout {
  static_assert(kBits == 2 || kBits == 3 || kBits == 4, "bits: expected 2, 3 or 4");
  static constexpr int kCodesPerWord = kWordBits / kBits;
  static constexpr int kUsedBits = kCodesPerWord * kBits;  // the bits above stay zero
  static constexpr uint32_t kCodeMask = (uint32_t{1} << kBits) - 1;

  // ceil(n_codes / kCodesPerWord) without overflowing for n_codes near INT64_MAX.
  static constexpr int64_t words(int64_t n_codes) {
    return n_codes / kCodesPerWord + (n_codes % kCodesPerWord != 0 ? 1 : 0);
  }
};

static_assert(PackedLayout<2>::kCodesPerWord == 16 && PackedLayout<2>::kUsedBits == 32);
static_assert(PackedLayout<3>::kCodesPerWord == 10 && PackedLayout<3>::kUsedBits == 30);
static_assert(PackedLayout<4>::kCodesPerWord == 8 && PackedLayout<4>::kUsedBits == 32);
static_assert(PackedLayout<3>::kCodeMask == 0x7u);
static_assert(PackedLayout<3>::words(0) == 0 && PackedLayout<3>::words(10) == 1 &&
              PackedLayout<3>::words(11) == 2);
static_assert(PackedLayout<2>::words(INT64_MAX) == INT64_MAX / 16 + 1);

// Codes per uint32 word: 16, 10 or 8. Throws kvq::Error "bits: expected 2, 3 or 4, found 5"
// for any other `bits` (as does every function below).
int codes_per_word(int bits);

// Words that hold n_codes codes: ceil(n_codes / codes_per_word(bits)). Throws on n_codes < 0.
int64_t packed_words(int64_t n_codes, int bits);

// Packs codes[n] into words[packed_words(n, bits)], overwriting every word (unused slots 0).
// Throws kvq::Error naming the index and value of the first code >= 2^bits; `words` may then
// be partly written.
void pack_codes_ref(const uint8_t* codes, int64_t n, int bits, uint32_t* words);

// Inverse of pack_codes_ref: reads words[packed_words(n, bits)], writes codes[n]. Bits in
// unused slots and above kUsedBits are ignored.
void unpack_codes_ref(const uint32_t* words, int64_t n, int bits, uint8_t* codes);

// Row form, as the cache stores it:
//   codes  [n_rows, n_cols]                          uint8, each < 2^bits
//   words  [n_rows, packed_words(n_cols, bits)]      uint32, row r from word r * packed_words(...)
// A bad code's error names its row and column.
void pack_rows_ref(const uint8_t* codes, int64_t n_rows, int64_t n_cols, int bits, uint32_t* words);
void unpack_rows_ref(const uint32_t* words, int64_t n_rows, int64_t n_cols, int bits,
                     uint8_t* codes);

}  // namespace kvq::quant
