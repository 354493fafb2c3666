// fp64 reference decode attention (attention_fp64.h) for `kvq bench kernels`.
//
// Layout (one sequence and KV head)
//   q       [group][head_dim] fp16          k, v   [n_tokens][head_dim] fp32 or fp16
//   scores  [group][n_tokens] fp64          out    [group][head_dim] fp64
//   part    [group][n_chunks][head_dim + 2] fp64: sum of exp(s - m) v per channel, then m, then
//           the sum of exp(s - m), over the chunk's kChunk tokens
// Grid
//   scores: ceil(n_tokens / 128) blocks of 128 threads, one token per thread, every query head of
//     the group (the token's RoPE phases computed once for all of them).
//   chunks: (n_chunks, group) blocks of 128 threads: the chunk's max and exp(s - m) in shared
//     memory, then one thread per channel sums over the chunk's tokens (coalesced rows).
//   merge:  group blocks of head_dim threads, one per channel, over the chunks.
#include "attention_fp64.h"

#include <cmath>

namespace kvq::bench {
namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr int kMaxGroup = 8;
constexpr int kMaxHeadDim = 128;
constexpr int kThreads = 128;
constexpr int kChunk = 1024;

__device__ __forceinline__ void load4(const float* p, double* x) {
  const float4 f = *reinterpret_cast<const float4*>(p);
  x[0] = f.x;
  x[1] = f.y;
  x[2] = f.z;
  x[3] = f.w;
}

__device__ __forceinline__ void load4(const __half* p, double* x) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
  x[0] = a.x;
  x[1] = a.y;
  x[2] = b.x;
  x[3] = b.y;
}

__device__ __forceinline__ double to_double(float x) { return x; }
__device__ __forceinline__ double to_double(__half x) { return __half2float(x); }

struct MaxOp {
  __device__ double operator()(double a, double b) const { return fmax(a, b); }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};

// Over the block (kThreads threads); red holds one value per warp.
template <typename Op>
__device__ double block_reduce(double x, double* red, Op op) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x = op(x, __shfl_xor_sync(kFull, x, off));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = x;
  __syncthreads();
  double r = red[0];
  for (int i = 1; i < kThreads / 32; ++i) r = op(r, red[i]);
  __syncthreads();  // red is reused by the next reduction
  return r;
}

template <typename T, bool kRope>
__global__ void __launch_bounds__(kThreads)
    fp64_scores_kernel(Fp64AttentionParams p, const T* __restrict__ k) {
  __shared__ double q[kMaxGroup * kMaxHeadDim];
  const int D = p.head_dim, half = D / 2, G = p.group;
  for (int i = threadIdx.x; i < G * D; i += kThreads) q[i] = __half2float(p.q[i]);
  __syncthreads();
  const int64_t t = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (t >= p.n_tokens) return;
  double acc[kMaxGroup];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) acc[g] = 0.0;
  const T* row = k + t * D;
  if (kRope) {
    // kv_attention_ref: angle (t - tq) * inv_freq[j] in double; the key pair (kj, kh) rotated,
    // dotted with the unrotated query pair (qj, qh).
    const double delta = static_cast<double>(t - (p.n_tokens - 1));
    for (int j = 0; j < half; j += 4) {
      double kj[4], kh[4];
      load4(row + j, kj);
      load4(row + j + half, kh);
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        double sn, cs;
        sincos(delta * static_cast<double>(p.inv_freq[j + c]), &sn, &cs);
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g >= G) break;
          const double qj = q[g * D + j + c], qh = q[g * D + j + c + half];
          acc[g] += (qj * kj[c] + qh * kh[c]) * cs + (qh * kj[c] - qj * kh[c]) * sn;
        }
      }
    }
  } else {
    for (int d = 0; d < D; d += 4) {
      double x[4];
      load4(row + d, x);
#pragma unroll
      for (int c = 0; c < 4; ++c) {
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g >= G) break;
          acc[g] += q[g * D + d + c] * x[c];
        }
      }
    }
  }
  const double root = sqrt(static_cast<double>(D));
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= G) break;
    p.scores[g * p.n_tokens + t] = acc[g] / root;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fp64_chunk_kernel(Fp64AttentionParams p, const T* __restrict__ v, int64_t n_chunks) {
  __shared__ double w[kChunk];
  __shared__ double red[kThreads / 32];
  const int D = p.head_dim, g = blockIdx.y;
  const int64_t t0 = int64_t{blockIdx.x} * kChunk;
  const int n = static_cast<int>(p.n_tokens - t0 < kChunk ? p.n_tokens - t0 : kChunk);
  const double* s = p.scores + g * p.n_tokens + t0;
  double m = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    w[i] = s[i];
    m = fmax(m, w[i]);
  }
  m = block_reduce(m, red, MaxOp());
  double l = 0.0;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    w[i] = exp(w[i] - m);
    l += w[i];
  }
  l = block_reduce(l, red, SumOp());  // its __syncthreads also publishes w
  double* part = p.part + (g * n_chunks + blockIdx.x) * (D + 2);
  for (int d = threadIdx.x; d < D; d += kThreads) {
    double o = 0.0;
    for (int i = 0; i < n; ++i) o += w[i] * to_double(v[(t0 + i) * D + d]);
    part[d] = o;
  }
  if (threadIdx.x == 0) {
    part[D] = m;
    part[D + 1] = l;
  }
}

__global__ void fp64_merge_kernel(Fp64AttentionParams p, int64_t n_chunks) {
  const int D = p.head_dim, g = blockIdx.x, d = threadIdx.x;
  const double* part = p.part + g * n_chunks * (D + 2);
  double m = -INFINITY;
  for (int64_t c = 0; c < n_chunks; ++c) m = fmax(m, part[c * (D + 2) + D]);
  double l = 0.0, o = 0.0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    const double w = exp(part[c * (D + 2) + D] - m);
    l += w * part[c * (D + 2) + D + 1];
    o += w * part[c * (D + 2) + d];
  }
  p.out[g * D + d] = o / l;
}

template <typename T>
cudaError_t launch_typed(const Fp64AttentionParams& p, const T* k, const T* v,
                         cudaStream_t stream) {
  const int64_t n_chunks = fp64_attention_chunks(p.n_tokens);
  const auto score_blocks = static_cast<unsigned>((p.n_tokens + kThreads - 1) / kThreads);
  if (p.inv_freq) {
    fp64_scores_kernel<T, true><<<score_blocks, kThreads, 0, stream>>>(p, k);
  } else {
    fp64_scores_kernel<T, false><<<score_blocks, kThreads, 0, stream>>>(p, k);
  }
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  fp64_chunk_kernel<T>
      <<<dim3(static_cast<unsigned>(n_chunks), p.group), kThreads, 0, stream>>>(p, v, n_chunks);
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  fp64_merge_kernel<<<p.group, p.head_dim, 0, stream>>>(p, n_chunks);
  return cudaGetLastError();
}

}  // namespace

int64_t fp64_attention_chunks(int64_t n_tokens) { return (n_tokens + kChunk - 1) / kChunk; }

cudaError_t launch_fp64_attention(const Fp64AttentionParams& p, cudaStream_t stream) {
  const bool f32 = p.k32 && p.v32, f16 = p.k16 && p.v16;
  const bool any32 = p.k32 || p.v32, any16 = p.k16 || p.v16;
  if ((p.head_dim != 64 && p.head_dim != 128) || p.group < 1 || p.group > kMaxGroup ||
      p.n_tokens < 1 || p.n_tokens > int64_t{0x7FFFFFFF} * kThreads || !p.q || !p.scores ||
      !p.part || !p.out || f32 == f16 || (f32 && any16) || (f16 && any32)) {
    return cudaErrorInvalidValue;
  }
  return f32 ? launch_typed(p, p.k32, p.v32, stream) : launch_typed(p, p.k16, p.v16, stream);
}

}  // namespace kvq::bench
