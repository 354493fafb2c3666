// CPU twins of kernels/pack_codes.cu: the row form of kvq/quant/pack.h, which is the source of
// truth for the layout.
#include "pack_codes.h"

#include "kvq/quant/pack.h"

namespace kvq::kernels {

void pack_codes_ref(const uint8_t* codes, int64_t n_rows, int64_t n_cols, int bits,
                    uint32_t* words) {
  quant::pack_rows_ref(codes, n_rows, n_cols, bits, words);
}

void unpack_codes_ref(const uint32_t* words, int64_t n_rows, int64_t n_cols, int bits,
                      uint8_t* codes) {
  quant::unpack_rows_ref(words, n_rows, n_cols, bits, codes);
}

}  // namespace kvq::kernels
