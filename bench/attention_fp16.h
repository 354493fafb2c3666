// fp16 decode attention over a plain fp16 cache: the baselines `kvq bench kernels` times the
// compressed cache against in the same run. A flash-decoding kernel of our own, and cuBLAS
// (strided-batched GEMM for q.K^T, a softmax kernel, strided-batched GEMM for P.V). Keys are
// taken as already rotated (what an fp16 cache holds), so no RoPE here. Also the benchmark's
// helper kernels: the read roofline, random fill, a GPU sleep. Not here: the fp64 check of their
// outputs (attention_fp64.h; tests/gpu/test_fp16_flash.cpp tests the flash kernel).
#pragma once

#include <cstdint>

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace kvq::bench {

struct Fp16AttentionParams {
  int batch = 0, n_kv_heads = 0, n_q_heads = 0, head_dim = 128;  // head_dim 64 or 128
  int64_t n_tokens = 0;
  const __half* q = nullptr;  // [batch][n_q_heads][head_dim]
  const __half* k = nullptr;  // [batch][n_kv_heads][n_tokens][head_dim]
  const __half* v = nullptr;  // [batch][n_kv_heads][n_tokens][head_dim]
  __half* out = nullptr;      // [batch][n_q_heads][head_dim]
  // flash: splits of the sequence and their parts [batch][n_q_heads][n_splits][head_dim + 2]
  int n_splits = 1;
  float* part = nullptr;
  // cuBLAS: scores [batch][n_q_heads][n_tokens] fp32 and probabilities fp16
  float* scores = nullptr;
  __half* probs = nullptr;
};

// Splits that fill the device once for this shape (>= 1).
int fp16_flash_splits(int batch, int n_kv_heads, int64_t n_tokens);

// Flash-decoding: one warp per split, 16-byte loads, fp32 math, then a reduction kernel.
cudaError_t launch_fp16_flash_decode(const Fp16AttentionParams& p, cudaStream_t stream);

// q.K^T (GemmStridedBatchedEx, fp32 out), softmax to fp16, P.V (GemmStridedBatchedEx). The
// handle must be bound to `stream`. cuBLAS failures come back as cudaErrorUnknown.
cudaError_t launch_fp16_cublas_attention(const Fp16AttentionParams& p, cublasHandle_t handle,
                                         cudaStream_t stream);

// Fills n halves with uniform values in [-1, 1) (deterministic in seed).
cudaError_t launch_fill_random_half(__half* x, int64_t n, uint32_t seed, cudaStream_t stream);

// The read roofline: reads n_bytes at x (16-byte aligned) once, 16-byte loads (the last
// n_bytes % 16 bytewise) over `blocks` blocks, and writes one word per block to sink[blocks]
// (a reduction of what it read, so that no load is dropped). blocks: read_bytes_blocks().
cudaError_t launch_read_bytes(const void* x, int64_t n_bytes, int blocks, uint32_t* sink,
                              cudaStream_t stream);
// Blocks that fill the current device once with the read kernel (SMs x resident blocks).
int read_bytes_blocks();

// Spins the GPU for about `microseconds` so that the host can queue timed work behind it.
cudaError_t launch_gpu_sleep(int microseconds, cudaStream_t stream);

// One block of one warp that does nothing: timed as a kernel is, the floor of any launch.
cudaError_t launch_empty(cudaStream_t stream);

}  // namespace kvq::bench
