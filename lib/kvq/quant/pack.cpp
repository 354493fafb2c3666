// CPU reference for B-bit code packing (format in pack.h). Written for clarity, not speed: the
// kernels' CPU twins (kernels/kv_ref.cpp) read the cache's pages with it.
#include "kvq/quant/pack.h"

#include "kvq/common/error.h"

namespace kvq::quant {
namespace {

void check_bits(int bits) {
  if (bits != 2 && bits != 3 && bits != 4) fail("bits: expected 2, 3 or 4, found {}", bits);
}

void check_count(const char* name, int64_t n) {
  if (n < 0) fail("{}: expected >= 0, found {}", name, n);
}

// Packs one run of n codes; `row` >= 0 names the row in errors (the row form), -1 for none.
template <int kBits>
void pack_run(const uint8_t* codes, int64_t n, int64_t row, uint32_t* words) {
  using Layout = PackedLayout<kBits>;
  for (int64_t w = 0; w < Layout::words(n); ++w) {
    uint32_t word = 0;
    for (int i = 0; i < Layout::kCodesPerWord; ++i) {
      const int64_t j = w * Layout::kCodesPerWord + i;
      if (j >= n) break;
      const uint32_t code = codes[j];
      if (code > Layout::kCodeMask) {
        if (row < 0) {
          fail("codes[{}]: expected a {}-bit code (0..{}), found {}", j, kBits, Layout::kCodeMask,
               code);
        }
        fail("codes[{}][{}]: expected a {}-bit code (0..{}), found {}", row, j, kBits,
             Layout::kCodeMask, code);
      }
      word |= code << (kBits * i);
    }
    words[w] = word;
  }
}

template <int kBits>
void unpack_run(const uint32_t* words, int64_t n, uint8_t* codes) {
  using Layout = PackedLayout<kBits>;
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t word = words[j / Layout::kCodesPerWord];
    const int slot = static_cast<int>(j % Layout::kCodesPerWord);
    codes[j] = static_cast<uint8_t>((word >> (kBits * slot)) & Layout::kCodeMask);
  }
}

template <int kBits>
void pack_rows(const uint8_t* codes, int64_t n_rows, int64_t n_cols, bool named_rows,
               uint32_t* words) {
  const int64_t words_per_row = PackedLayout<kBits>::words(n_cols);
  for (int64_t r = 0; r < n_rows; ++r) {
    pack_run<kBits>(codes + r * n_cols, n_cols, named_rows ? r : -1, words + r * words_per_row);
  }
}

template <int kBits>
void unpack_rows(const uint32_t* words, int64_t n_rows, int64_t n_cols, uint8_t* codes) {
  const int64_t words_per_row = PackedLayout<kBits>::words(n_cols);
  for (int64_t r = 0; r < n_rows; ++r) {
    unpack_run<kBits>(words + r * words_per_row, n_cols, codes + r * n_cols);
  }
}

void dispatch_pack(const uint8_t* codes, int64_t n_rows, int64_t n_cols, int bits, bool named_rows,
                   uint32_t* words) {
  switch (bits) {
    case 2: return pack_rows<2>(codes, n_rows, n_cols, named_rows, words);
    case 3: return pack_rows<3>(codes, n_rows, n_cols, named_rows, words);
    case 4: return pack_rows<4>(codes, n_rows, n_cols, named_rows, words);
    default: check_bits(bits);
  }
}

void dispatch_unpack(const uint32_t* words, int64_t n_rows, int64_t n_cols, int bits,
                     uint8_t* codes) {
  switch (bits) {
    case 2: return unpack_rows<2>(words, n_rows, n_cols, codes);
    case 3: return unpack_rows<3>(words, n_rows, n_cols, codes);
    case 4: return unpack_rows<4>(words, n_rows, n_cols, codes);
    default: check_bits(bits);
  }
}

}  // namespace

int codes_per_word(int bits) {
  check_bits(bits);
  return kWordBits / bits;
}

int64_t packed_words(int64_t n_codes, int bits) {
  const int per_word = codes_per_word(bits);
  check_count("n_codes", n_codes);
  return n_codes / per_word + (n_codes % per_word != 0 ? 1 : 0);
}

void pack_codes_ref(const uint8_t* codes, int64_t n, int bits, uint32_t* words) {
  check_bits(bits);
  check_count("n_codes", n);
  KVQ_CHECK(n == 0 || (codes && words), "pack_codes_ref: null buffer for {} codes", n);
  dispatch_pack(codes, /*n_rows=*/1, n, bits, /*named_rows=*/false, words);
}

void unpack_codes_ref(const uint32_t* words, int64_t n, int bits, uint8_t* codes) {
  check_bits(bits);
  check_count("n_codes", n);
  KVQ_CHECK(n == 0 || (codes && words), "unpack_codes_ref: null buffer for {} codes", n);
  dispatch_unpack(words, /*n_rows=*/1, n, bits, codes);
}

void pack_rows_ref(const uint8_t* codes, int64_t n_rows, int64_t n_cols, int bits,
                   uint32_t* words) {
  check_bits(bits);
  check_count("n_rows", n_rows);
  check_count("n_cols", n_cols);
  KVQ_CHECK(n_rows == 0 || n_cols == 0 || (codes && words),
            "pack_rows_ref: null buffer for [{}, {}] codes", n_rows, n_cols);
  dispatch_pack(codes, n_rows, n_cols, bits, /*named_rows=*/true, words);
}

void unpack_rows_ref(const uint32_t* words, int64_t n_rows, int64_t n_cols, int bits,
                     uint8_t* codes) {
  check_bits(bits);
  check_count("n_rows", n_rows);
  check_count("n_cols", n_cols);
  KVQ_CHECK(n_rows == 0 || n_cols == 0 || (codes && words),
            "unpack_rows_ref: null buffer for [{}, {}] codes", n_rows, n_cols);
  dispatch_unpack(words, n_rows, n_cols, bits, codes);
}

}  // namespace kvq::quant
