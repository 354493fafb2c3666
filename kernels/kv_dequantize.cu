// One thread per (token, channel) of one (sequence, KV head); see kv_dequantize.h. The element
// formulas are kv_dequantize_ref's (kv_ref.cpp), in round-to-nearest fp32 without contraction,
// so that both give the same bits.
#include "kv_dequantize.h"

#include <cmath>

#include "kv_device.cuh"

namespace kvq::kernels {
namespace {

using namespace dev;

__device__ __forceinline__ uint32_t code_at(const uint32_t* words, int index, int bits) {
  const int c = kv_codes_per_word(bits);
  return (words[index / c] >> (bits * (index % c))) & ((1u << bits) - 1u);
}

__global__ void kv_dequantize_kernel(KvCacheView c, int b, int h, int64_t n, float* k, float* v) {
  const KvLayout& L = c.layout;
  const int D = L.head_dim;
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= n * D) return;
  const int64_t t = i / D;
  const int ch = static_cast<int>(i % D);
  const int64_t len = c.seq_len[b];
  if (t >= len) {
    k[i] = v[i] = NAN;
    return;
  }
  const int64_t nq = c.n_quant(len);
  if (t < c.n_sink || t >= c.n_sink + nq) {
    const __half* kr = t < c.n_sink ? c.sink_row(c.sink_k, b, h, t) : c.ring_row(c.ring_k, b, h, t);
    const __half* vr = t < c.n_sink ? c.sink_row(c.sink_v, b, h, t) : c.ring_row(c.ring_v, b, h, t);
    k[i] = __half2float(kr[ch]);
    v[i] = __half2float(vr[ch]);
    return;
  }
  int row;
  const int64_t u = t - c.n_sink;
  const int64_t page = quant_page(c, b, u, &row);
  const uint8_t* sec = c.head_section(page, h);
  const uint32_t kc =
      code_at(reinterpret_cast<const uint32_t*>(sec + L.off_k_codes) + int64_t{row} * L.k_row_words,
              kv_k_code_index(ch, D), L.bits);
  const uint32_t vc =
      code_at(reinterpret_cast<const uint32_t*>(sec + L.off_v_codes) + int64_t{ch} * L.v_row_words,
              row, L.bits);
  float kx, vx;
  if (L.method == KvMethod::kKivi) {
    const uint8_t* kp =
        sec + L.off_k_params + (int64_t{row / L.group} * (D / 2) + ch % (D / 2)) * 8;
    const int hi = ch < D / 2 ? 0 : 2;  // the pair's half2: scale at +0/+2, zero at +4/+6
    const float ks = half_bits_float(*reinterpret_cast<const uint16_t*>(kp + hi));
    const float kz = half_bits_float(*reinterpret_cast<const uint16_t*>(kp + 4 + hi));
    const uint32_t vp = reinterpret_cast<const uint32_t*>(
        sec + L.off_v_params)[int64_t{row} * (D / L.group) + ch / L.group];
    kx = __fadd_rn(__fmul_rn(static_cast<float>(kc), ks), kz);
    vx = __fadd_rn(__fmul_rn(static_cast<float>(vc), half_bits_float(vp & 0xFFFFu)),
                   half_bits_float(vp >> 16));
  } else {
    const float lo = c.k_lo[h * D + ch], hi = c.k_hi[h * D + ch];
    const float offset = __fdiv_rn(__fadd_rn(lo, hi), 2.0f);
    const float scale = __fdiv_rn(__fsub_rn(hi, lo), 2.0f);
    kx = scale == 0.0f ? offset : __fadd_rn(__fmul_rn(c.k_levels[kc], scale), offset);
    const uint32_t so = kv_v_scales(c, page, h)[row];
    const float vs = half_bits_float(so & 0xFFFFu), vo = half_bits_float(so >> 16);
    vx = vs == 0.0f ? vo : __fadd_rn(__fmul_rn(c.v_levels[vc], vs), vo);
    // Key outliers of the page, sorted by (row, channel), from the row's block on.
    const int32_t count = *reinterpret_cast<const int32_t*>(sec + L.off_header);
    const uint32_t* ko = reinterpret_cast<const uint32_t*>(sec + L.off_k_out);
    const uint32_t want = static_cast<uint32_t>(row * D + ch);
    int j = reinterpret_cast<const uint16_t*>(sec + L.off_header + 4)[row / L.block_tokens];
    for (; j < count && (ko[j] >> 16) <= want; ++j) {
      if ((ko[j] >> 16) == want) kx = half_bits_float(ko[j] & 0xFFFFu);
    }
    int n_out;
    const uint32_t* vo_row = kv_v_outliers(c, page, h, row, &n_out);
    for (int e = 0; e < n_out; ++e) {
      if ((vo_row[e] >> 16) == want) vx = half_bits_float(vo_row[e] & 0xFFFFu);
    }
  }
  k[i] = kx;
  v[i] = vx;
}

}  // namespace

cudaError_t launch_kv_dequantize(const KvCacheView& cache, int b, int h, int64_t n, float* k,
                                 float* v, cudaStream_t stream) {
  if (b < 0 || h < 0 || h >= cache.n_kv_heads || n < 0 || (n > 0 && (!k || !v)) ||
      n > (int64_t{1} << 40) / cache.layout.head_dim) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) return cudaSuccess;
  const int64_t total = n * cache.layout.head_dim;
  const int threads = 256;
  kv_dequantize_kernel<<<static_cast<unsigned>((total + threads - 1) / threads), threads, 0,
                         stream>>>(cache, b, h, n, k, v);
  return cudaGetLastError();
}

}  // namespace kvq::kernels
