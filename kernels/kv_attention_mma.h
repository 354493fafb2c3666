// Internal to the kernels library: the entry points of the tensor-core decode attention that
// kv_attention.cu dispatches to: v2 (kv_attention_mma.cuh, KIVI, instantiated per bit width in
// kv_attention_mma_b{2,4}.cu) and v3 (kv_attention_v3.cuh, KVQuant, kv_attention_v3_b{2,3,4}.cu).
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "kv_attention.h"

namespace kvq::kernels {

inline constexpr int kKvMmaWarps = 8;  // warps (splits) per block, fewer if shared memory is short

// Query rows the kernels are built for: 1, 2, 4 or 8 (the group rounded up).
int kv_query_tile(int group);

struct KvMmaEntry {
  void (*kernel)(KvAttentionParams) = nullptr;
  int smem_base = 0;  // dynamic shared memory of a block: base + warps * per_warp
  int smem_per_warp = 0;
  int warps = kKvMmaWarps;  // warps per block the kernel is built for (its launch bounds)
};

// The shared-memory address at which a block's dynamic shared memory starts on the current
// device (the memory reserved per block: these kernels declare no static shared memory); v3
// lays its tables out from it.
unsigned kv_dynamic_smem_start();

// The instantiation for a layout and query tile; false if none was built.
bool kv_mma_entry_b2(const KvLayout& layout, int nq, KvMmaEntry* entry);
bool kv_mma_entry_b4(const KvLayout& layout, int nq, KvMmaEntry* entry);

// v3 (kv_attention_v3.cuh, KVQuant layouts only), the same way.
bool kv_v3_entry_b2(const KvLayout& layout, int nq, KvMmaEntry* entry);
bool kv_v3_entry_b3(const KvLayout& layout, int nq, KvMmaEntry* entry);
bool kv_v3_entry_b4(const KvLayout& layout, int nq, KvMmaEntry* entry);

// The attention kernel alone (the caller queues the reduction).
cudaError_t launch_kv_attention_mma(const KvAttentionParams& params, int nq, cudaStream_t stream);
cudaError_t launch_kv_attention_v3(const KvAttentionParams& params, int nq, cudaStream_t stream);

}  // namespace kvq::kernels
