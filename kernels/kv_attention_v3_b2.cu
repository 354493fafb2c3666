// The 2-bit instantiations of decode attention v3 (kv_attention_v3.cuh), in a file of their
// own so that the three bit widths compile in parallel.
#include "kv_attention_v3.cuh"

namespace kvq::kernels {

bool kv_v3_entry_b2(const KvLayout& layout, int nq, KvMmaEntry* entry) {
  return v3::entry<2>(layout, nq, entry);
}

}  // namespace kvq::kernels
