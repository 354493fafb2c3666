// Device helpers shared by kv_append.cu and the kv_attention*.cu kernels: coding exactly as
// kv_format.h defines it, warp reductions, section lookups. Include from .cu files only.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kv_layout.h"
#include "kv_rope.h"

namespace kvq::kernels::dev {

constexpr unsigned kFullMask = 0xFFFFFFFFu;

// Programmatic dependent launch (sm_90+; no-ops below, and in a grid launched without the
// attribute). kv_launch_dependents: this block no longer holds back the next grid on the stream
// (launched with cudaLaunchAttributeProgrammaticStreamSerialization) from being scheduled;
// kv_wait_primary: wait until the grid before it has finished and its writes are visible.
__device__ __forceinline__ void kv_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void kv_wait_primary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// kv_format.h nuq_threshold: the largest float <= (a + b) / 2, the sum taken in double.
__device__ __forceinline__ float nuq_threshold(float a, float b) {
  return __double2float_rd((static_cast<double>(a) + static_cast<double>(b)) * 0.5);
}

// kv_format.h nuq_encode: the first level >= xn or the one below, a tie going to the lower level;
// NaN codes as 0. thr[i] = nuq_threshold(levels[i - 1], levels[i]) for 1 <= i < N, so that
// xn > thr[hi] is nuq_encode's comparison in double, exactly, in one float compare. The levels
// are strictly ascending (checked where they are loaded), so the first level >= xn is at the
// count of levels below xn: N independent compares instead of a loop whose every step waits for
// a load.
template <int N>
__device__ __forceinline__ int nuq_encode(float xn, const float* levels, const float* thr) {
  if (isnan(xn)) return 0;
  int hi = 0;
#pragma unroll
  for (int i = 0; i < N; ++i) hi += levels[i] < xn ? 1 : 0;
  if (hi == 0) return 0;
  if (hi == N) return N - 1;
  return xn > thr[hi] ? hi : hi - 1;
}

// kv_format.h uniform_encode.
__device__ __forceinline__ int uniform_encode(float x, float scale, float zero, int bits) {
  if (scale == 0.0f) return 0;
  const float q = nearbyintf(__fdiv_rn(__fsub_rn(x, zero), scale));
  if (isnan(q)) return 0;
  return static_cast<int>(fminf(fmaxf(q, 0.0f), static_cast<float>((1 << bits) - 1)));
}

__device__ __forceinline__ float half_bits_float(uint32_t bits16) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits16)));
}
__device__ __forceinline__ uint32_t half_float_bits(float x) {
  return __half_as_ushort(__float2half_rn(x));
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}
__device__ __forceinline__ float warp_min(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fminf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}

// The physical page holding quantized token u of sequence b, and its row in the page.
__device__ __forceinline__ int64_t quant_page(const KvCacheView& c, int64_t b, int64_t u,
                                              int* row) {
  *row = pos_mod(u, c.layout.page_size);
  return c.page_table[b * c.pages_per_seq + pos_div(u, c.layout.page_size)];
}
// The head section holding quantized token u of sequence b, and its row in the page.
__device__ __forceinline__ uint8_t* quant_section(const KvCacheView& c, int64_t b, int h, int64_t u,
                                                  int* row) {
  return c.head_section(quant_page(c, b, u, row), h);
}

// KVQuant value scales of head h in a page: [page_size] (fp16 scale | fp16 offset << 16).
__device__ __forceinline__ const uint32_t* kv_v_scales(const KvCacheView& c, int64_t page, int h) {
  return reinterpret_cast<const uint32_t*>(c.token_section(page) + c.layout.off_v_scales) +
         int64_t{c.layout.v_vectors > 1 ? h : 0} * c.layout.page_size;
}
// KVQuant value outliers of head h in a page row: *count entries (kv_layout.h's entry form).
__device__ __forceinline__ const uint32_t* kv_v_outliers(const KvCacheView& c, int64_t page, int h,
                                                         int row, int* count) {
  const uint32_t index =
      reinterpret_cast<const uint32_t*>(c.head_section(page, h) + c.layout.off_v_index)[row];
  *count = static_cast<int>(index >> 16);
  return reinterpret_cast<const uint32_t*>(c.token_section(page) + c.layout.off_v_out) +
         int64_t{row} * c.layout.v_out_per_row + (index & 0xFFFFu);
}

// e^{i * delta * inv_freq}, the angle formed and reduced in double (kv_rope_angle). RoPE pairs
// (j, j + head_dim/2) as complex k_j + i k_{j+d/2}.
__device__ __forceinline__ float2 rope_phase(double delta, float inv_freq) {
  float s, c;
  sincosf(static_cast<float>(kv_rope_angle(delta, inv_freq)), &s, &c);
  return make_float2(c, s);
}

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
  return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<__half>(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

}  // namespace kvq::kernels::dev
