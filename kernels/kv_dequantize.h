// Dequantizes one (sequence, KV head) of the compressed cache (kv_layout.h) into plain fp32 rows:
// keys before RoPE and values, every token the cache holds (fp16 sinks and window included), as
// kv_dequantize_ref (kv_ref.h) computes them from the same bytes. The simplest reader of the
// format, one thread per element and no shared state: what the benchmark's fp64 check of every
// kernel output attends over (bench/kernels_bench.cpp), and a GPU test of the layout.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "kv_layout.h"

namespace kvq::kernels {

// k, v: [n][head_dim] fp32 (device), n = the sequence's length (seq_len[b], which the caller
// knows); tokens at or past the device's seq_len[b] are written as NaN. Returns
// cudaErrorInvalidValue for b, h, n or pointers out of range, else the launch's error.
cudaError_t launch_kv_dequantize(const KvCacheView& cache, int b, int h, int64_t n, float* k,
                                 float* v, cudaStream_t stream);

}  // namespace kvq::kernels
