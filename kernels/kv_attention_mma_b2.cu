// The 2-bit instantiations of decode attention v2 (kv_attention_mma.cuh, KIVI pages), in a
// file of their own so that the bit widths compile in parallel.
#include "kv_attention_mma.cuh"

namespace kvq::kernels {

bool kv_mma_entry_b2(const KvLayout& layout, int nq, KvMmaEntry* entry) {
  return mma::entry<2>(layout, nq, entry);
}

}  // namespace kvq::kernels
