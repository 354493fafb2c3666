// fp64 decode attention on the GPU, one (sequence, KV head) per launch: the reference `kvq bench
// kernels` checks every timed output against (kernels_bench.cpp), over the very cache the kernels
// read. Two definitions, each mirroring what its kernels compute:
// - RoPE given (inv_freq): kv_attention_ref (kernels/kv_ref.h) over a compressed cache's
//   dequantized rows (KvCache::dequantize): pre-RoPE keys rotated by (t - tq) * inv_freq[j] in
//   double on pairs (j, j + head_dim / 2), the query unrotated at tq = n_tokens - 1;
// - no RoPE (inv_freq null): the fp16 baselines (attention_fp16.h), keys taken as stored.
// Both: softmax(q . k / sqrt(head_dim)) . v in double. On the GPU because the CPU would take
// minutes at 1M tokens x 32 heads; plain code over speed (a double sincos per token and pair).
// Not here: GQA's head mapping (the caller passes the group's query rows), comparisons.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace kvq::bench {

struct Fp64AttentionParams {
  int head_dim = 128;  // 64 or 128
  int group = 1;       // query heads of this KV head, 1..8
  int64_t n_tokens = 0;
  const __half* q = nullptr;  // [group][head_dim]: query heads h * group .. h * group + group - 1
  // The keys and values, [n_tokens][head_dim]: fp32 (k32, v32) or fp16 (k16, v16), one pair set.
  const float* k32 = nullptr;
  const float* v32 = nullptr;
  const __half* k16 = nullptr;
  const __half* v16 = nullptr;
  const float* inv_freq = nullptr;  // [head_dim / 2] or null (no RoPE)
  double* scores = nullptr;         // workspace [group][n_tokens]
  double* part = nullptr;  // workspace [group][fp64_attention_chunks(n_tokens)][head_dim + 2]
  double* out = nullptr;   // [group][head_dim]
};

// Token chunks of the weighted sum (the workspace's middle dimension).
int64_t fp64_attention_chunks(int64_t n_tokens);

// Queues scores, per-chunk softmax sums and the merge. cudaErrorInvalidValue for bad shapes or
// pointers (both or neither key/value pair set), else the launches'.
cudaError_t launch_fp64_attention(const Fp64AttentionParams& p, cudaStream_t stream);

}  // namespace kvq::bench
