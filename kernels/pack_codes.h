// Packing of B-bit codes (B = 2, 3, 4) into uint32 words on the GPU, in the row form of
// kvq/quant/pack.h: each row of n_cols codes gets its own run of packed_words(n_cols, bits)
// words, low bits first, unused slots zero. Layout details and versions: pack_codes.cu.
// No LibTorch here: raw device pointers, work queued on `stream`.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace kvq::kernels {

// Packs codes into words. Codes must be < 2^bits (the kernel keeps only their low `bits`
// bits; the CPU twin throws instead). Every word of `words` is written.
// Returns cudaErrorInvalidValue for bits other than 2, 3 or 4, negative sizes, a null pointer
// with work to do, or more work than one launch covers; cudaSuccess with nothing queued when
// there is no work; else the launch's error.
// words_per_row below is packed_words(n_cols, bits) of kvq/quant/pack.h.
cudaError_t launch_pack_codes(const uint8_t* __restrict__ codes,  // [n_rows, n_cols] uint8
                              int64_t n_rows, int64_t n_cols,
                              int bits,                       // 2, 3 or 4
                              uint32_t* __restrict__ words,   // [n_rows, words_per_row] uint32
                              cudaStream_t stream);

// Unpacks words into codes; bits in unused slots are ignored. Errors as launch_pack_codes.
cudaError_t launch_unpack_codes(const uint32_t* __restrict__ words,  // [n_rows, words_per_row]
                                int64_t n_rows, int64_t n_cols,
                                int bits,                      // 2, 3 or 4
                                uint8_t* __restrict__ codes,   // [n_rows, n_cols] uint8
                                cudaStream_t stream);

// CPU twins (pack_codes_ref.cpp): same arguments on host memory, same output; they throw
// kvq::Error where the launchers return an error, and on a code >= 2^bits.
void pack_codes_ref(const uint8_t* codes, int64_t n_rows, int64_t n_cols, int bits,
                    uint32_t* words);
void unpack_codes_ref(const uint32_t* words, int64_t n_rows, int64_t n_cols, int bits,
                      uint8_t* codes);

}  // namespace kvq::kernels
