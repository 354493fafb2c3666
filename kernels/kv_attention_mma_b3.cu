// The 3-bit instantiations of the tensor-core decode attention (kv_attention_mma.cuh), in a
// file of their own so that the three bit widths compile in parallel.
#include "kv_attention_mma.cuh"

namespace kvq::kernels {

bool kv_mma_entry_b3(const KvLayout& layout, int nq, KvMmaEntry* entry) {
  return mma::entry<3>(layout, nq, entry);
}

}  // namespace kvq::kernels
