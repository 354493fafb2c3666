// Decode attention straight from the compressed KV cache (kv_layout.h): for the newest token of
// every sequence, softmax(q . RoPE(K)^T / sqrt(head_dim)) . V with lookup dequantization, RoPE
// on the dequantized keys in registers, the sparse outliers and the fp16 sink/recent tokens;
// split along the sequence (flash-decoding) with a final reduction. KVQuant and KIVI, head_dim
// 64 and 128, 1..8 query heads per KV head, fp16 or bf16 queries. CPU twin: kv_attention_ref
// (kv_ref.h). Layout details and versions: kv_attention.cu, kv_attention_mma.cuh.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kv_layout.h"

namespace kvq::kernels {

enum class KvAttentionKernel : int {
  kSimple = 1,    // v1 (every layout, the reference): one warp per split, lanes over channel
                  // pairs, fp32 math
  kMma = 2,       // v2 (KIVI): tensor-core m16n8k16 over 8*C-token blocks staged by cp.async
  kTwoPhase = 3,  // v3 (KVQuant): v2's arithmetic, q.K then P.V per block, 2x the warps
};

// Whether a version serves a layout (others return cudaErrorNotSupported).
inline bool kv_attention_serves(const KvLayout& layout, KvAttentionKernel version) {
  switch (version) {
    case KvAttentionKernel::kSimple: return true;
    case KvAttentionKernel::kMma: return layout.method == KvMethod::kKivi;
    case KvAttentionKernel::kTwoPhase: return layout.method == KvMethod::kNuq;
  }
  return false;
}

// The fastest version for a layout: v3 for KVQuant, v2 for KIVI.
inline KvAttentionKernel kv_attention_best(const KvLayout& layout) {
  return layout.method == KvMethod::kNuq ? KvAttentionKernel::kTwoPhase : KvAttentionKernel::kMma;
}

struct KvAttentionParams {
  KvCacheView cache;
  int batch = 0;
  int n_q_heads = 0;        // n_kv_heads * group, group <= kMaxQueryGroup
  const void* q = nullptr;  // [batch][n_q_heads][head_dim] fp16 or bf16, pre-RoPE, at
                            // position seq_len[b] - 1 (the newest token, already appended)
  bool q_bf16 = false;
  void* out = nullptr;              // [batch][n_q_heads][head_dim], q's dtype
  const float* inv_freq = nullptr;  // [head_dim / 2] RoPE frequencies (Llama-3 scaling allowed)
  // Split-K: split s < n_splits takes the quantized tokens [s, s + 1) * split_tokens; split
  // n_splits takes the fp16 sink and recent tokens (only where the cache has any:
  // kv_attention_parts). split_tokens is a multiple of the page size for v1 and v2, of
  // layout.block_tokens for v3 (kv_attention_split_unit).
  int n_splits = 1;
  int64_t split_tokens = 0;
  float* part_o = nullptr;   // [batch][n_q_heads][n_splits + 1][head_dim] workspace
  float* part_ml = nullptr;  // [batch][n_q_heads][n_splits + 1][2] (max in log2 units, sum)
};

// The parts of a launch per query head that hold tokens and that the reduction reads: the
// n_splits quantized splits, and part n_splits (the fp16 tokens) only where the cache has fp16
// tokens. A cache without them (KVQuant's default: no sinks, no recent window, flush 1) gives
// that part no warp of its own, so a unit's splits may fill whole blocks of warps; its row in
// the workspace stays (stride n_splits + 1) and is left unwritten or empty.
KVQ_HD int kv_attention_parts(const KvAttentionParams& p) {
  return p.n_splits + (p.cache.has_fp16_tokens() ? 1 : 0);
}

// Rows of part_o (head_dim floats each) and of part_ml (2 floats each) for a launch: n_splits + 1
// parts per (sequence, query head), whether or not the launch writes part n_splits.
inline size_t kv_attention_part_rows(int batch, int n_q_heads, int n_splits) {
  return static_cast<size_t>(batch) * n_q_heads * (n_splits + 1);
}

// Floats of part_o plus part_ml for a launch.
inline size_t kv_attention_workspace_floats(int batch, int n_q_heads, int n_splits, int head_dim) {
  return kv_attention_part_rows(batch, n_q_heads, n_splits) * (head_dim + 2);
}

// Points p's part_o and then part_ml into work, kv_attention_workspace_floats floats for p's
// batch, n_q_heads, n_splits and head_dim.
inline void kv_attention_set_workspace(KvAttentionParams* p, float* work) {
  p->part_o = work;
  p->part_ml =
      work + kv_attention_part_rows(p->batch, p->n_q_heads, p->n_splits) * p->cache.layout.head_dim;
}

// The tokens a split's length is a multiple of: v3 (kTwoPhase) walks blocks of
// layout.block_tokens and may start one anywhere in a page; v1 and v2 split at pages.
int64_t kv_attention_split_unit(const KvLayout& layout, KvAttentionKernel version);

// Splits for sequences of at most max_quant quantized tokens, each of whole units
// (kv_attention_split_unit; the last one ragged): the count whose blocks fill whole waves of the
// device (SMs x resident blocks) at the least predicted time, every warp of a block busy where
// the units allow; fp16_tokens: the cache's has_fp16_tokens() (whether the fp16 part needs a
// warp: kv_attention_parts). The device's shape is queried once and cached. Needs a current CUDA
// device; on error returns 1 split with every token.
void kv_attention_splits(const KvLayout& layout, int batch, int n_kv_heads, int group,
                         int64_t max_quant, bool fp16_tokens, KvAttentionKernel version,
                         int* n_splits, int64_t* split_tokens);

// kv_attention_splits' choice for a device shape, on the host alone (no CUDA calls): splits of
// whole chunks (the last one ragged) for `chunks` chunks of quantized tokens (pages, or v3's
// blocks) and `units` (sequence, KV head) pairs, with `warps` splits per block (and after a
// unit's splits a warp for its fp16 tokens where fp16_warp), `slots` resident blocks per wave
// (SMs x blocks per SM) and chunk_blocks 8C-token blocks a chunk. A launch is predicted to cost
// waves x (blocks a split walks + one of setup); the cheapest count wins, the fewest blocks
// unless more gain 3%. chunks >= 1, warps >= 1, slots >= 1.
struct KvSplitPlan {
  int n_splits = 1;
  int64_t chunks_per_split = 1;
  int64_t blocks = 0;  // of the launch: units x ceil((n_splits + (fp16_warp ? 1 : 0)) / warps)
};
KvSplitPlan kv_split_plan(int64_t chunks, int64_t units, int warps, int64_t slots, int chunk_blocks,
                          bool fp16_warp);

// Queues the attention and the reduction. Returns cudaErrorInvalidValue for bad shapes or null
// pointers, cudaErrorNotSupported for a layout the kernels were not built for; else the launch's.
cudaError_t launch_kv_attention(const KvAttentionParams& params, KvAttentionKernel version,
                                cudaStream_t stream);

}  // namespace kvq::kernels
