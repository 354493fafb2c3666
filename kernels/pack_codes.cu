// Packs B-bit codes (B = 2, 3, 4) into uint32 words and back, in the row form of the
// compressed KV cache. CPU twin: pack_codes_ref.cpp (kvq/quant/pack.cpp); tests:
// tests/gpu/test_pack_codes.cpp. Not here: quantization itself (codes come in ready), and
// packing fused into quantize-on-append, which will reuse this layout.
//
// Layout
//   codes  [n_rows, n_cols]                      uint8, each < 2^B (only its low B bits are used)
//   words  [n_rows, words_per_row]               uint32, words_per_row = ceil(n_cols / C)
//   C = codes per word: 16 for B=2, 10 for B=3 (bits 30..31 zero), 8 for B=4.
//   Code c of row r lives in word r*words_per_row + c/C at bits [B*(c%C), B*(c%C)+B): low
//   bits first. Rows never share a word; slots past the end of a row are zero.
//
// Grid
//   pack:   one thread per output word over the flat [n_rows * words_per_row] words, kThreads
//           words per block. A block's words draw on one contiguous run of codes (rows are
//           contiguous and words split each row in order), at most kThreads*C bytes: the block
//           stages it in shared memory with coalesced byte loads, then each thread assembles
//           its word from there and writes it (consecutive threads, consecutive words).
//   unpack: kThreads threads per block over the flat [n_rows * n_cols] codes, each thread
//           writing kUnpackPerThread codes kThreads apart, so that every store instruction of a
//           warp writes 32 consecutive bytes and neighbouring threads read the same or the next
//           word (a broadcast). A thread divides once for its first code's row and column and
//           steps from there.
//   Indices are uint32_t when the codes fit (the division is several times cheaper), else
//   int64_t.
//
// Versions
//   1: one thread per code in unpack, int64_t indices: H100, pack 1.1-1.3 TB/s and unpack
//      0.41-0.49 TB/s (codes + words moved) on [1048576, 128] rows against 2.8 TB/s for a copy;
//      bound by 64-bit division.
//   2: the above: pack 1.3-1.7 TB/s, unpack 0.65-0.77 TB/s on the same H100 and shapes
//      (also [32768, 4097]). Code loads and stores are still 1 byte wide, the likely bound on
//      unpack now; 4- or 16-byte stores are the next step if the cache shows these kernels hot.
#include "pack_codes.h"

#include <climits>
#include <cstdint>

#include "kvq/quant/pack.h"

namespace kvq::kernels {
namespace {

constexpr int kThreads = 256;          // threads per block
constexpr int kUnpackPerThread = 4;    // codes per thread in unpack: one division for four codes
constexpr int64_t kUnpackPerBlock = int64_t{kThreads} * kUnpackPerThread;
// Most codes one launch covers, so that the grid fits gridDim.x and n_rows * n_cols int64_t.
constexpr int64_t kMaxCodes = int64_t{INT_MAX} * kThreads;
// Up to here indices fit uint32_t with room for a block's overshoot past the end: 32-bit
// division is several times cheaper than 64-bit, which otherwise bounds these kernels.
constexpr int64_t kMaxCodes32 = int64_t{UINT32_MAX} - 2 * kUnpackPerBlock;

// Codes [*begin, *end) of the flat codes array that word g (flat over rows) packs.
template <int kBits, typename Index>
__device__ __forceinline__ void word_codes(Index g, Index n_cols, Index words_per_row,
                                           Index* begin, Index* end) {
  constexpr Index kCodesPerWord = quant::PackedLayout<kBits>::kCodesPerWord;
  const Index row = g / words_per_row;
  const Index col = (g - row * words_per_row) * kCodesPerWord;
  *begin = row * n_cols + col;
  *end = row * n_cols + (col + kCodesPerWord < n_cols ? col + kCodesPerWord : n_cols);
}

template <int kBits, typename Index>  // Index: uint32_t or int64_t, holds every index below
__global__ void __launch_bounds__(kThreads)
pack_codes_kernel(const uint8_t* __restrict__ codes,  // [n_rows, n_cols]
                  Index n_words,                      // n_rows * words_per_row
                  Index n_cols, Index words_per_row,
                  uint32_t* __restrict__ words) {     // [n_rows, words_per_row]
  using Layout = quant::PackedLayout<kBits>;
  __shared__ uint8_t tile[kThreads * Layout::kCodesPerWord];

  const Index first_word = Index{blockIdx.x} * kThreads;
  const Index last_word = (first_word + kThreads < n_words ? first_word + kThreads : n_words) - 1;
  Index tile_begin, tile_end, unused;
  word_codes<kBits>(first_word, n_cols, words_per_row, &tile_begin, &unused);
  word_codes<kBits>(last_word, n_cols, words_per_row, &unused, &tile_end);
  const int tile_size = static_cast<int>(tile_end - tile_begin);
  for (int i = threadIdx.x; i < tile_size; i += kThreads) tile[i] = codes[tile_begin + i];
  __syncthreads();

  const Index g = first_word + threadIdx.x;
  if (g >= n_words) return;
  Index begin, end;
  word_codes<kBits>(g, n_cols, words_per_row, &begin, &end);
  const uint8_t* mine = tile + (begin - tile_begin);
  const int n_mine = static_cast<int>(end - begin);
  uint32_t word = 0;
#pragma unroll
  for (int i = 0; i < Layout::kCodesPerWord; ++i) {
    if (i < n_mine) word |= (uint32_t{mine[i]} & Layout::kCodeMask) << (kBits * i);
  }
  words[g] = word;
}

template <int kBits, typename Index>  // Index: uint32_t or int64_t, holds every index below
__global__ void __launch_bounds__(kThreads)
unpack_codes_kernel(const uint32_t* __restrict__ words,  // [n_rows, words_per_row]
                    Index n_codes,                       // n_rows * n_cols
                    Index n_cols, Index words_per_row,
                    Index step_rows, Index step_cols,    // kThreads codes on: rows, then columns
                    uint8_t* __restrict__ codes) {       // [n_rows, n_cols]
  using Layout = quant::PackedLayout<kBits>;
  Index j = Index{blockIdx.x} * static_cast<Index>(kUnpackPerBlock) + threadIdx.x;
  Index row = j / n_cols;
  Index col = j - row * n_cols;
#pragma unroll
  for (int k = 0; k < kUnpackPerThread; ++k) {
    if (j >= n_codes) return;
    const uint32_t word = words[row * words_per_row + col / Layout::kCodesPerWord];
    const int slot = static_cast<int>(col % Layout::kCodesPerWord);
    codes[j] = static_cast<uint8_t>((word >> (kBits * slot)) & Layout::kCodeMask);
    j += kThreads;
    row += step_rows;
    col += step_cols;
    if (col >= n_cols) {
      col -= n_cols;
      ++row;
    }
  }
}

// The checks both launchers share; *launch is false when there is nothing to do.
cudaError_t check_shape(const void* in, int64_t n_rows, int64_t n_cols, const void* out,
                        bool* launch) {
  *launch = false;
  if (n_rows < 0 || n_cols < 0) return cudaErrorInvalidValue;
  if (n_rows == 0 || n_cols == 0) return cudaSuccess;
  if (!in || !out || n_rows > kMaxCodes / n_cols) return cudaErrorInvalidValue;
  *launch = true;
  return cudaSuccess;
}

template <int kBits, typename Index>
cudaError_t pack_rows(const uint8_t* codes, int64_t n_rows, int64_t n_cols, uint32_t* words,
                      cudaStream_t stream) {
  const int64_t words_per_row = quant::PackedLayout<kBits>::words(n_cols);
  const int64_t n_words = n_rows * words_per_row;
  const auto blocks = static_cast<unsigned>((n_words + kThreads - 1) / kThreads);
  pack_codes_kernel<kBits, Index><<<blocks, kThreads, 0, stream>>>(
      codes, static_cast<Index>(n_words), static_cast<Index>(n_cols),
      static_cast<Index>(words_per_row), words);
  return cudaGetLastError();
}

template <int kBits>
cudaError_t pack_rows(const uint8_t* codes, int64_t n_rows, int64_t n_cols, uint32_t* words,
                      cudaStream_t stream) {
  bool launch;
  if (const cudaError_t err = check_shape(codes, n_rows, n_cols, words, &launch); !launch) {
    return err;
  }
  return n_rows * n_cols <= kMaxCodes32
             ? pack_rows<kBits, uint32_t>(codes, n_rows, n_cols, words, stream)
             : pack_rows<kBits, int64_t>(codes, n_rows, n_cols, words, stream);
}

template <int kBits, typename Index>
cudaError_t unpack_rows(const uint32_t* words, int64_t n_rows, int64_t n_cols, uint8_t* codes,
                        cudaStream_t stream) {
  const int64_t words_per_row = quant::PackedLayout<kBits>::words(n_cols);
  const int64_t n_codes = n_rows * n_cols;
  const auto blocks = static_cast<unsigned>((n_codes + kUnpackPerBlock - 1) / kUnpackPerBlock);
  unpack_codes_kernel<kBits, Index><<<blocks, kThreads, 0, stream>>>(
      words, static_cast<Index>(n_codes), static_cast<Index>(n_cols),
      static_cast<Index>(words_per_row), static_cast<Index>(kThreads / n_cols),
      static_cast<Index>(kThreads % n_cols), codes);
  return cudaGetLastError();
}

template <int kBits>
cudaError_t unpack_rows(const uint32_t* words, int64_t n_rows, int64_t n_cols, uint8_t* codes,
                        cudaStream_t stream) {
  bool launch;
  if (const cudaError_t err = check_shape(words, n_rows, n_cols, codes, &launch); !launch) {
    return err;
  }
  return n_rows * n_cols <= kMaxCodes32
             ? unpack_rows<kBits, uint32_t>(words, n_rows, n_cols, codes, stream)
             : unpack_rows<kBits, int64_t>(words, n_rows, n_cols, codes, stream);
}

}  // namespace

cudaError_t launch_pack_codes(const uint8_t* __restrict__ codes, int64_t n_rows, int64_t n_cols,
                              int bits, uint32_t* __restrict__ words, cudaStream_t stream) {
  switch (bits) {
    case 2: return pack_rows<2>(codes, n_rows, n_cols, words, stream);
    case 3: return pack_rows<3>(codes, n_rows, n_cols, words, stream);
    case 4: return pack_rows<4>(codes, n_rows, n_cols, words, stream);
    default: return cudaErrorInvalidValue;  // supported bits: 2, 3, 4
  }
}

cudaError_t launch_unpack_codes(const uint32_t* __restrict__ words, int64_t n_rows,
                                int64_t n_cols, int bits, uint8_t* __restrict__ codes,
                                cudaStream_t stream) {
  switch (bits) {
    case 2: return unpack_rows<2>(words, n_rows, n_cols, codes, stream);
    case 3: return unpack_rows<3>(words, n_rows, n_cols, codes, stream);
    case 4: return unpack_rows<4>(words, n_rows, n_cols, codes, stream);
    default: return cudaErrorInvalidValue;  // supported bits: 2, 3, 4
  }
}

}  // namespace kvq::kernels
