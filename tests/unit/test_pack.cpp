// kvq/quant/pack: B-bit code packing, the CPU reference the GPU pack kernels are checked
// against. Element-by-element round trips for every bits and awkward sizes, the exact bit
// layout on hand-written words, row independence, and the exact error messages.
#include "kvq/quant/pack.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/common/error.h"

namespace kvq::quant {
namespace {

constexpr int kAllBits[] = {2, 3, 4};
constexpr int64_t kSizes[] = {0, 1, 9, 10, 11, 15, 16, 17, 97, 4097};
constexpr uint32_t kPoisonWord = 0xFFFFFFFFu;
constexpr uint8_t kPoisonCode = 0xFF;

std::vector<uint8_t> random_codes(int64_t n, int bits, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(0, (1 << bits) - 1);
  std::vector<uint8_t> codes(static_cast<size_t>(n));
  for (auto& c : codes) c = static_cast<uint8_t>(dist(rng));
  return codes;
}

// Expects fn() to throw kvq::Error whose message is exactly `message`.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& message) {
  try {
    fn();
    ADD_FAILURE() << "no kvq::Error thrown; expected: " << message;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST(Pack, CodesPerWord) {
  EXPECT_EQ(codes_per_word(2), 16);
  EXPECT_EQ(codes_per_word(3), 10);
  EXPECT_EQ(codes_per_word(4), 8);
}

TEST(Pack, PackedWords) {
  struct Case {
    int64_t n_codes;
    int bits;
    int64_t words;
  };
  const Case cases[] = {{0, 2, 0}, {1, 2, 1},  {16, 2, 1},     {17, 2, 2},    {0, 3, 0},
                        {1, 3, 1}, {10, 3, 1}, {11, 3, 2},     {97, 3, 10},   {0, 4, 0},
                        {8, 4, 1}, {9, 4, 2},  {4097, 4, 513}, {4097, 2, 257}};
  for (const Case& c : cases) {
    EXPECT_EQ(packed_words(c.n_codes, c.bits), c.words)
        << "n_codes " << c.n_codes << " bits " << c.bits;
  }
  EXPECT_EQ(packed_words(INT64_MAX, 4), INT64_MAX / 8 + 1);
}

// One hand-written example per bits: a full word and one code spilling into a second word.
TEST(Pack, ExactLayout) {
  struct Case {
    int bits;
    std::vector<uint8_t> codes;
    std::vector<uint32_t> words;
  };
  const Case cases[] = {
      // 2 bits: bytes 0b11'10'01'00, 0b00'01'10'11, 0b01'01'01'01, 0b10'10'10'10.
      {2, {0, 1, 2, 3, 3, 2, 1, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3}, {0xAA551BE4u, 0x00000003u}},
      // 3 bits: octal 76543210 in bits 0..23, then 7 at bit 24 and 5 at bit 27; bits 30..31 zero.
      {3, {0, 1, 2, 3, 4, 5, 6, 7, 7, 5, 6}, {0x2FFAC688u, 0x00000006u}},
      // 4 bits: one hex digit per code, low digit first.
      {4, {1, 2, 3, 4, 5, 6, 7, 8, 15}, {0x87654321u, 0x0000000Fu}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("bits " + std::to_string(c.bits));
    const auto n = static_cast<int64_t>(c.codes.size());
    ASSERT_EQ(packed_words(n, c.bits), static_cast<int64_t>(c.words.size()));
    std::vector<uint32_t> words(c.words.size(), kPoisonWord);
    pack_codes_ref(c.codes.data(), n, c.bits, words.data());
    for (size_t w = 0; w < words.size(); ++w) {
      EXPECT_EQ(words[w], c.words[w])
          << "word " << w << std::hex << ": got 0x" << words[w] << ", expected 0x" << c.words[w];
    }
    std::vector<uint8_t> codes(c.codes.size(), kPoisonCode);
    unpack_codes_ref(c.words.data(), n, c.bits, codes.data());
    EXPECT_EQ(codes, c.codes);
  }
}

TEST(Pack, RoundTripEveryBitsAndSize) {
  for (const int bits : kAllBits) {
    const int per_word = codes_per_word(bits);
    for (const int64_t n : kSizes) {
      SCOPED_TRACE("bits " + std::to_string(bits) + ", n " + std::to_string(n));
      const std::vector<uint8_t> codes = random_codes(n, bits, /*seed=*/1000 * bits + n);
      const int64_t n_words = packed_words(n, bits);
      // One guard element past the end of each output catches writes out of bounds.
      std::vector<uint32_t> words(n_words + 1, kPoisonWord);
      pack_codes_ref(codes.data(), n, bits, words.data());
      ASSERT_EQ(words[n_words], kPoisonWord) << "wrote past the last word";
      for (int64_t w = 0; w < n_words; ++w) {
        const int64_t used = std::min<int64_t>(per_word, n - w * per_word);
        if (used * bits < 32) {
          ASSERT_EQ(words[w] >> (used * bits), 0u) << "word " << w << ": unused bits not zero";
        }
      }
      std::vector<uint8_t> back(n + 1, kPoisonCode);
      unpack_codes_ref(words.data(), n, bits, back.data());
      ASSERT_EQ(back[n], kPoisonCode) << "wrote past the last code";
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(int{back[i]}, int{codes[i]}) << "code " << i;
      }
    }
  }
}

TEST(Pack, UnpackIgnoresUnusedBits) {
  for (const int bits : kAllBits) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    const int64_t n = codes_per_word(bits) + 1;  // the second word has one used slot
    const std::vector<uint32_t> words(2, kPoisonWord);
    std::vector<uint8_t> codes(n, 0);
    unpack_codes_ref(words.data(), n, bits, codes.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(int{codes[i]}, (1 << bits) - 1) << "code " << i;
  }
}

TEST(Pack, RowsNeverShareWords) {
  // 3 rows of 11 3-bit codes, two words a row: only the middle row is non-zero.
  std::vector<uint8_t> codes(3 * 11, 0);
  for (int c = 0; c < 11; ++c) codes[11 + c] = 7;
  std::vector<uint32_t> words(6, kPoisonWord);
  pack_rows_ref(codes.data(), 3, 11, 3, words.data());
  EXPECT_EQ(words, (std::vector<uint32_t>{0, 0, 0x3FFFFFFFu, 0x7u, 0, 0}));

  // Every row packs exactly as it would alone, and the row form round-trips.
  const int64_t n_rows = 3;
  for (const int bits : kAllBits) {
    for (const int64_t n_cols : kSizes) {
      SCOPED_TRACE("bits " + std::to_string(bits) + ", n_cols " + std::to_string(n_cols));
      const std::vector<uint8_t> rows =
          random_codes(n_rows * n_cols, bits, /*seed=*/7 * bits + n_cols);
      const int64_t per_row = packed_words(n_cols, bits);
      std::vector<uint32_t> packed(n_rows * per_row + 1, kPoisonWord);
      pack_rows_ref(rows.data(), n_rows, n_cols, bits, packed.data());
      ASSERT_EQ(packed[n_rows * per_row], kPoisonWord) << "wrote past the last word";
      for (int64_t r = 0; r < n_rows; ++r) {
        std::vector<uint32_t> alone(per_row, kPoisonWord);
        pack_codes_ref(rows.data() + r * n_cols, n_cols, bits, alone.data());
        for (int64_t w = 0; w < per_row; ++w) {
          ASSERT_EQ(packed[r * per_row + w], alone[w]) << "row " << r << " word " << w;
        }
      }
      std::vector<uint8_t> back(n_rows * n_cols + 1, kPoisonCode);
      unpack_rows_ref(packed.data(), n_rows, n_cols, bits, back.data());
      ASSERT_EQ(back[n_rows * n_cols], kPoisonCode) << "wrote past the last code";
      for (int64_t i = 0; i < n_rows * n_cols; ++i) {
        ASSERT_EQ(int{back[i]}, int{rows[i]}) << "row " << i / n_cols << " col " << i % n_cols;
      }
    }
  }
}

TEST(Pack, RejectsCodeOutOfRange) {
  std::vector<uint32_t> words(2);
  const std::vector<uint8_t> two = {0, 1, 2, 7, 4};
  expect_error([&] { pack_codes_ref(two.data(), 5, 2, words.data()); },
               "codes[3]: expected a 2-bit code (0..3), found 7");
  const std::vector<uint8_t> three = {7, 8};
  expect_error([&] { pack_codes_ref(three.data(), 2, 3, words.data()); },
               "codes[1]: expected a 3-bit code (0..7), found 8");
  const std::vector<uint8_t> four = {15, 15, 255};
  expect_error([&] { pack_codes_ref(four.data(), 3, 4, words.data()); },
               "codes[2]: expected a 4-bit code (0..15), found 255");
  // [2, 5] rows: the bad code at row 1, column 2 is named by both.
  const std::vector<uint8_t> rows = {0, 1, 2, 3, 0, 1, 1, 4, 1, 1};
  expect_error([&] { pack_rows_ref(rows.data(), 2, 5, 2, words.data()); },
               "codes[1][2]: expected a 2-bit code (0..3), found 4");
}

TEST(Pack, RejectsUnsupportedBits) {
  uint8_t codes[1] = {0};
  uint32_t words[1] = {0};
  for (const int bits : {-1, 0, 1, 5, 8}) {
    const std::string message = "bits: expected 2, 3 or 4, found " + std::to_string(bits);
    SCOPED_TRACE(message);
    expect_error([&] { codes_per_word(bits); }, message);
    expect_error([&] { packed_words(1, bits); }, message);
    expect_error([&] { pack_codes_ref(codes, 1, bits, words); }, message);
    expect_error([&] { unpack_codes_ref(words, 1, bits, codes); }, message);
    expect_error([&] { pack_rows_ref(codes, 1, 1, bits, words); }, message);
    expect_error([&] { unpack_rows_ref(words, 1, 1, bits, codes); }, message);
  }
}

TEST(Pack, RejectsNegativeCounts) {
  uint8_t codes[1] = {0};
  uint32_t words[1] = {0};
  expect_error([&] { packed_words(-1, 3); }, "n_codes: expected >= 0, found -1");
  expect_error([&] { pack_codes_ref(codes, -2, 3, words); }, "n_codes: expected >= 0, found -2");
  expect_error([&] { unpack_codes_ref(words, -1, 4, codes); }, "n_codes: expected >= 0, found -1");
  expect_error([&] { pack_rows_ref(codes, -1, 1, 2, words); }, "n_rows: expected >= 0, found -1");
  expect_error([&] { unpack_rows_ref(words, 1, -3, 2, codes); }, "n_cols: expected >= 0, found -3");
}

}  // namespace
}  // namespace kvq::quant
