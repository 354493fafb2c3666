// A measuring probe for issue 14, not a decode kernel: the score side of a KVQuant decode step
// alone (keys and key outliers to scores, then each split's softmax statistics), to check the
// budget of bench/kernels_notes.md ("the budget for the next kernel") before the whole new
// kernel is written. It runs v3's key arithmetic (kv_attention_v3.cuh) with the key constants
// held in registers for the whole split and the key rows double-buffered by cp.async, and writes
// what v3 writes to part_ml for the quantized splits: the maximum (log2 units) and the sum of
// exp2 of each split's scores. So its output is checked against v3's part_ml of the same
// launch parameters (`kvq bench kernels`, gpu_test_kv_attention). part_o and the fp16 split are
// not touched, and no reduction runs.
#pragma once

#include <cuda_runtime_api.h>

#include "kv_attention.h"

namespace kvq::kernels {

// Whether the probe was built for a layout and query group: KVQuant, head_dim 128, 3 bits, 1 or
// 4 query heads per KV head (the shapes of the budget: MHA and GQA-8 of 32 heads).
bool kv_score_probe_serves(const KvLayout& layout, int group);

// Queues the probe over params' splits (params as for kTwoPhase: split_tokens a multiple of
// layout.block_tokens). cudaErrorNotSupported where kv_score_probe_serves is false,
// cudaErrorInvalidValue for bad shapes; else the launch's error.
cudaError_t launch_kv_score_probe(const KvAttentionParams& params, cudaStream_t stream);

}  // namespace kvq::kernels
