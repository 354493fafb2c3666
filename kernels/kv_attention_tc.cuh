// Pieces the tensor-core decode kernels share (include from kv_attention_*.cuh only): the
// per-bit-width shape of a block of 8*C tokens and of a lane's key pair slots, cp.async and
// mma.sync wrappers, half2 bit casts, and where a warp finds its pages. v2 (kv_attention_mma.cuh,
// KIVI) and v3 (kv_attention_v3.cuh, KVQuant) use them; kv_attention_mma.cuh explains the
// fragment layouts.
#pragma once

#include <cstdint>

#include "kv_attention_common.cuh"
#include "kvq/quant/pack.h"

namespace kvq::kernels::tc {

using namespace dev;

template <int D, int B>
struct Shape {
  static constexpr int kC = quant::PackedLayout<B>::kCodesPerWord;
  static constexpr int kPW = kC / 2;     // pairs per word
  static constexpr int kBT = 8 * kC;     // tokens per block
  static constexpr int kSteps = kC / 2;  // k16 steps of P.V per block
  static constexpr int kWK = (B == 3 && D == 64) ? 8 : (D + kC - 1) / kC;  // key row words
  static constexpr int kWL = B == 3 ? (D == 128 ? 3 : 2) : D / (8 * kPW);  // words per lane
  static constexpr int kEX = (B == 3 && D == 128) ? 1 : 0;  // one more pair, word 4 * kWL
  static constexpr int kNP = kWL * kPW + kEX;               // key pairs per lane
  static constexpr int kKT = kNP / 2;                       // k16 steps of q.k
  static constexpr int kMT = D / 16;                        // m16 tiles of P.V
  static constexpr int kQP = D / 64;                        // query pairs each lane rotates
  static constexpr int kLutEntries = 1 << (2 * B);
  static constexpr int kLutCopies = B == 4 ? 8 : 32;
  static constexpr uint32_t kFieldMask = (1u << (2 * B)) - 1u;
  static constexpr uint32_t kCodeMask = (1u << B) - 1u;
  static_assert(kWK == 4 * kWL + kEX, "the lanes' words cover the key row");
  static_assert(kNP % 2 == 0, "pairs per lane fill whole k16 steps");
  static_assert(4 * kNP >= D / 2, "every RoPE pair has a slot");
};

template <int D, int B>
__host__ __device__ __forceinline__ int pair_of(int r, int m) {
  using S = Shape<D, B>;
  return m < S::kWL * S::kPW ? r * S::kWL * S::kPW + m : 4 * S::kWL * S::kPW + r;
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void copy16(uint8_t* dst, const uint8_t* src, int bytes, int lane) {
  for (int i = lane; i < bytes / 16; i += 32) cp_async16(dst + 16 * i, src + 16 * i);
}

__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_h2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }
__device__ __forceinline__ uint32_t pack_h2(float lo, float hi) {
  return h2_bits(__floats2half2_rn(lo, hi));
}

// Everything a warp keeps about where its blocks are.
struct Cursor {
  int64_t u_begin, u_end;  // quantized tokens of the split
  int win_first;           // page index held at pages_sm[0]
};

// The head section holding quantized token u of sequence b (a block's tokens share a page),
// through a window of 32 page ids the warp keeps in shared memory.
__device__ __forceinline__ const uint8_t* block_section(const KvCacheView& c, int b, int h,
                                                        int64_t u, int* pages_sm, Cursor* cur,
                                                        int lane) {
  const int64_t pi = u / c.layout.page_size;
  if (pi < cur->win_first || pi >= cur->win_first + 32) {
    __syncwarp();
    cur->win_first = static_cast<int>(pi);
    pages_sm[lane] =
        pi + lane < c.pages_per_seq ? c.page_table[int64_t{b} * c.pages_per_seq + pi + lane] : 0;
    __syncwarp();
  }
  return c.head_section(pages_sm[pi - cur->win_first], h);
}

// The token section of the page whose head section h is sec, and there the head's value scales.
__device__ __forceinline__ const uint8_t* token_section_of(const KvCacheView& c, const uint8_t* sec,
                                                           int h) {
  return sec + int64_t{c.n_kv_heads - h} * c.layout.head_bytes;
}
template <int D, int B>
__device__ __forceinline__ const uint8_t* v_scales_at(const KvCacheView& c, const uint8_t* sec,
                                                      int h) {
  return token_section_of(c, sec, h) + c.layout.off_v_scales +
         int64_t{c.layout.v_vectors > 1 ? h : 0} * c.layout.page_size * 4;
}

// Where RoPE pair g (< D/2) sits among the query's A fragments ([4 lanes r][kNP pair slots]):
// the slot pair_of gives it.
template <int D, int B>
__device__ __forceinline__ int a_slot_of(int g) {
  using S = Shape<D, B>;
  const int span = S::kWL * S::kPW;
  const int rg = g < 4 * span ? g / span : g - 4 * span;
  const int mg = g < 4 * span ? g % span : S::kNP - 1;
  return rg * S::kNP + mg;
}

// Query qi's RoPE pair g, (q[g], q[g + D/2]), of the group's row h * group + qi; zero past the
// group.
template <int D>
__device__ __forceinline__ float2 query_pair(const KvAttentionParams& p, int b, int h, int group,
                                             int qi, int g) {
  if (qi >= group) return make_float2(0.0f, 0.0f);
  const int64_t base = (int64_t{b} * p.n_q_heads + h * group + qi) * D;
  if (p.q_bf16) {
    const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p.q) + base;
    return make_float2(__bfloat162float(q[g]), __bfloat162float(q[g + D / 2]));
  }
  const __half* q = static_cast<const __half*>(p.q) + base;
  return make_float2(__half2float(q[g]), __half2float(q[g + D / 2]));
}

// A query pair's phase: conj(qv) * log2(e) / sqrt(D) * e0.
template <int D>
__device__ __forceinline__ float2 query_phase(float2 qv, float2 e0) {
  const float qscale = kLog2e / sqrtf(static_cast<float>(D));
  return cmul(make_float2(qv.x * qscale, -qv.y * qscale), e0);
}

// The query side's phase of pair g for the group's queries (rows h * group + qi, zero past the
// group): conj(Q_g) * log2(e) / sqrt(D) * e0, into qs[qi][i].
template <int D, int NQ, int QP>
__device__ __forceinline__ void query_phases(const KvAttentionParams& p, int b, int h, int group,
                                             int g, float2 e0, int i, float2 (&qs)[NQ][QP]) {
#pragma unroll
  for (int qi = 0; qi < NQ; ++qi)
    qs[qi][i] = query_phase<D>(query_pair<D>(p, b, h, group, qi, g), e0);
}

}  // namespace kvq::kernels::tc
