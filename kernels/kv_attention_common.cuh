// Pieces both decode-attention kernels share (include from kv_attention*.cu only): the scalar
// per-token path that v1 runs everywhere and v2 runs on the fp16 sink and recent tokens, and the
// split's partial result. One warp per split; lane l owns RoPE pairs g = l + 32 i (i < D/64),
// i.e. channels g and g + D/2, of every query of the group.
//
// Scores are kept in log2 units: the query is scaled by log2(e) / sqrt(head_dim) when loaded.
// RoPE enters as a complex phase on the query: with Q = q_g + i q_{g+D/2} and the key pair
// Z = k_g + i k_{g+D/2}, q_rot(t_q) . k_rot(t) = sum_g Re(conj(Q) Z e^{i theta_g (t - t_q)}).
#pragma once

#include <cmath>
#include <cstdint>

#include "kv_attention.h"
#include "kv_device.cuh"

namespace kvq::kernels::dev {

constexpr float kLog2e = 1.4426950408889634f;

struct SplitCoords {
  int b, h, split;
  int64_t n;   // tokens of the sequence
  int64_t tq;  // the query's position
};

template <int D, int NQ>
struct ScalarState {
  static constexpr int kPairs = D / 64;  // pairs per lane
  float2 q[NQ][kPairs];                  // (q_g, q_{g+D/2}), scaled
  float2 ph[NQ][kPairs];                 // conj(Q) e^{i theta (t - tq)} for the next token
  float2 step[kPairs];                   // e^{i theta}
  float theta[kPairs];
  float m[NQ], l[NQ];
  float o[NQ][2 * kPairs];  // channel g_i at 2i, g_i + D/2 at 2i + 1

  // Loads the group's queries (rows h * group + qi, qi < group; the rest zero).
  template <typename TQ>
  __device__ void init(const KvAttentionParams& p, const SplitCoords& sc, int group) {
    const int lane = threadIdx.x & 31;
    const float scale = kLog2e / sqrtf(static_cast<float>(D));
    const TQ* qb = static_cast<const TQ*>(p.q) + (int64_t{sc.b} * p.n_q_heads + sc.h * group) * D;
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      const int g = lane + 32 * i;
      theta[i] = p.inv_freq[g];
      step[i] = rope_phase(1.0, theta[i]);
#pragma unroll
      for (int qi = 0; qi < NQ; ++qi) {
        q[qi][i] = qi < group ? make_float2(to_float(qb[qi * D + g]) * scale,
                                            to_float(qb[qi * D + g + D / 2]) * scale)
                              : make_float2(0.0f, 0.0f);
      }
    }
#pragma unroll
    for (int qi = 0; qi < NQ; ++qi) {
      m[qi] = -INFINITY;
      l[qi] = 0.0f;
#pragma unroll
      for (int c = 0; c < 2 * kPairs; ++c) o[qi][c] = 0.0f;
    }
  }

  // The phases for a run of consecutive tokens starting at position t (exact, in double).
  __device__ void seek(int64_t t, int64_t tq) {
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      const float2 e = rope_phase(static_cast<double>(t - tq), theta[i]);
#pragma unroll
      for (int qi = 0; qi < NQ; ++qi) ph[qi][i] = cmul(make_float2(q[qi][i].x, -q[qi][i].y), e);
    }
  }

  // One token: z[i] its key pair g_i (pre-RoPE), v[c] its values at the lane's channels.
  __device__ void token(const float2 (&z)[kPairs], const float (&v)[2 * kPairs]) {
#pragma unroll
    for (int qi = 0; qi < NQ; ++qi) {
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < kPairs; ++i) s += ph[qi][i].x * z[i].x - ph[qi][i].y * z[i].y;
      s = warp_sum(s);
      const float m_new = fmaxf(m[qi], s);
      const float alpha = exp2f(m[qi] - m_new);
      const float pr = exp2f(s - m_new);
      m[qi] = m_new;
      l[qi] = l[qi] * alpha + pr;
#pragma unroll
      for (int c = 0; c < 2 * kPairs; ++c) o[qi][c] = fmaf(o[qi][c], alpha, pr * v[c]);
#pragma unroll
      for (int i = 0; i < kPairs; ++i) ph[qi][i] = cmul(ph[qi][i], step[i]);
    }
  }

  // Writes this split's (m, l, o) for the group's queries.
  __device__ void write(const KvAttentionParams& p, const SplitCoords& sc, int group) const {
    const int lane = threadIdx.x & 31;
    const int parts = p.n_splits + 1;
#pragma unroll
    for (int qi = 0; qi < NQ; ++qi) {
      if (qi >= group) break;
      const int64_t row = (int64_t{sc.b} * p.n_q_heads + sc.h * group + qi) * parts + sc.split;
#pragma unroll
      for (int i = 0; i < kPairs; ++i) {
        p.part_o[row * D + lane + 32 * i] = o[qi][2 * i];
        p.part_o[row * D + lane + 32 * i + D / 2] = o[qi][2 * i + 1];
      }
      if (lane == 0) {
        p.part_ml[2 * row] = m[qi];
        p.part_ml[2 * row + 1] = l[qi];
      }
    }
  }
};

// The fp16 tokens of one (sequence, head): sinks [0, n_sink) and the window after the pages.
template <int D, int NQ>
__device__ void scalar_fp16_tokens(const KvAttentionParams& p, const SplitCoords& sc,
                                   ScalarState<D, NQ>& st) {
  const KvCacheView& c = p.cache;
  const int lane = threadIdx.x & 31;
  constexpr int kPairs = ScalarState<D, NQ>::kPairs;
  const int64_t n_sink = sc.n < c.n_sink ? sc.n : c.n_sink;
  const int64_t first_recent = c.n_sink + c.n_quant(sc.n);
  for (int seg = 0; seg < 2; ++seg) {
    const int64_t t0 = seg == 0 ? 0 : (first_recent > n_sink ? first_recent : n_sink);
    const int64_t t1 = seg == 0 ? n_sink : sc.n;
    if (t1 <= t0) continue;
    st.seek(t0, sc.tq);
    for (int64_t t = t0; t < t1; ++t) {
      const __half* kr =
          seg == 0 ? c.sink_row(c.sink_k, sc.b, sc.h, t) : c.ring_row(c.ring_k, sc.b, sc.h, t);
      const __half* vr =
          seg == 0 ? c.sink_row(c.sink_v, sc.b, sc.h, t) : c.ring_row(c.ring_v, sc.b, sc.h, t);
      float2 z[kPairs];
      float v[2 * kPairs];
#pragma unroll
      for (int i = 0; i < kPairs; ++i) {
        const int g = lane + 32 * i;
        z[i] = make_float2(__half2float(kr[g]), __half2float(kr[g + D / 2]));
        v[2 * i] = __half2float(vr[g]);
        v[2 * i + 1] = __half2float(vr[g + D / 2]);
      }
      st.token(z, v);
    }
  }
}

// The split of the fp16 tokens (split n_splits of a launch) on the scalar path, queries as the
// launch gives them.
template <int D, int NQ>
__device__ __forceinline__ void fp16_split(const KvAttentionParams& p, const SplitCoords& sc,
                                           int group) {
  ScalarState<D, NQ> st;
  if (p.q_bf16)
    st.template init<__nv_bfloat16>(p, sc, group);
  else
    st.template init<__half>(p, sc, group);
  scalar_fp16_tokens<D, NQ>(p, sc, st);
  st.write(p, sc, group);
}

// The part of a split without quantized tokens (parts = n_splits + 1): no mass (max -inf, sum
// 0, zero output).
template <int D>
__device__ __forceinline__ void write_empty_part(const KvAttentionParams& p, int b, int h,
                                                 int group, int parts, int split, int lane) {
  for (int qi = 0; qi < group; ++qi) {
    const int64_t row = (int64_t{b} * p.n_q_heads + h * group + qi) * parts + split;
    for (int ch = lane; ch < D; ch += 32) p.part_o[row * D + ch] = 0.0f;
    if (lane == 0) {
      p.part_ml[2 * row] = -INFINITY;
      p.part_ml[2 * row + 1] = 0.0f;
    }
  }
}

}  // namespace kvq::kernels::dev
