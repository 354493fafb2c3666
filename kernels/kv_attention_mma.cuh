// Decode attention v2, for KIVI pages: tensor cores (mma.sync m16n8k16, fp16 in, fp32
// accumulate) over blocks of 8*C tokens (C = codes per word: 16 or 8) staged into shared memory by
// cp.async, two stages per warp. Included by kv_attention_mma_b{2,4}.cu, one bit width each. The
// fp16 sink/recent split and the reduction are shared with v1 (kv_attention.cu,
// kv_attention_common.cuh); the block shape, pair slots and cp.async/mma wrappers with v3
// (kv_attention_tc.cuh). KVQuant pages have their own kernel, v3 (kv_attention_v3.cuh), which
// replaced this one's KVQuant path on 2026-12-04 (faster at every benchmarked shape).
//
// Per warp (one split of one (sequence, KV head)), lane = 4 * gq + r:
//   Tokens of a block, step s < C/2, half hh, MMA column n: token C*(2*(n/2) + hh) + 2s + n%2.
//   So in P.V (O^T = V^T P^T: A = value codes [16 channels x 16 tokens], B = p * scale
//   [16 tokens x 8 queries]) the A fragment of lane (gq, r) is the token pair (2s, 2s+1) of word
//   2r + hh of channels 16 mt + gq (+8): one 2B-bit field of a value word, looked up whole in a
//   table of 2^(2B) half2 (32 conflict-free copies, 8 for B=4). The score fragment of q.K (A =
//   query [16 rows, query gq] x B = keys [16 k x 8 tokens]) comes out in exactly the B layout
//   P.V needs, so no shuffles move probabilities.
//   q.K runs over "pair slots": lane r owns the key pairs (g, g + D/2) of whole row words
//   r*WL .. r*WL+WL-1; pair m of lane r feeds k = 2r, 2r+1 (m even) or 2r+8, 2r+9 (m odd) of
//   k-step m/2 as (real, imaginary).
//   RoPE: score = sum_g Re(P_g Y_g) with P_g = conj(Q_g) e^{i theta_g (t_blk + C hh + 2s - t_q)}
//   (the query side, shared by a tile's 8 tokens; the warp rotates the 2*D/64 pairs of each lane
//   and passes them through shared memory to the lanes whose A fragment holds them) and
//   Y_g = e^{i theta_g delta(n)} (s o L + z), delta(n) = 2C*(n/2) + n%2 fixed per lane, with the
//   key group's per-channel scale s and zero z folded into three half2 constants per pair each
//   block: two HFMA2 per pair. Values: per token and channel group (scale, zero), the scale
//   folded into p and the zeros summed aside per group.
//
// Shared memory (Plan): block-wide lookup tables; per warp 2 stages of key rows [8C][WK], value
//   words [D][8], value params and key params, then query staging and a page-id window.
//
// Versions: this is v2 of kv_attention.cu (H100, nuq3-1% when it served KVQuant, 32 heads, 128K
//   tokens, batch 1: 0.838 ms; latency-bound at 8 warps per SM, 246 registers, 20 KB shared
//   memory per warp). v4 of this file: q.K runs both tiles (hh) interleaved with two
//   accumulators each (four independent mma chains of kKT/2), the query's A fragments go through
//   two buffers by step parity (one __syncwarp per step instead of two), value words are read
//   from the stage per step instead of held across the block. bench/kernels_notes.md.
#pragma once

#include <cstdint>

#include "kv_attention_mma.h"
#include "kv_attention_tc.cuh"

namespace kvq::kernels::mma {

using namespace dev;
using namespace tc;

// Byte offsets of the dynamic shared memory, the same on host and device. lev, kso, st_vi,
// st_hdr, delta, xs, corr and mrow are the parts v2 used while it also served KVQuant pages
// (2026-12-04: v3 took those over); the layout is kept as it was measured until a GPU run checks
// a smaller one, and the kernel still zeroes lev and delta as it did.
struct Plan {
  int lut_k = 0, lut_v = 0, lev = 0, kso = 0, warp0 = 0, warp_bytes = 0;
  int st_k = 0, st_v = 0, st_vs = 0, st_vi = 0, st_hdr = 0, st_kp = 0, stage_bytes = 0, stages = 0;
  int a_sm = 0, delta = 0, xs = 0, corr = 0, mrow = 0, pages = 0;
};

template <int D, int B>
__host__ __device__ inline Plan make_plan(const KvLayout& l, int nq) {
  using S = Shape<D, B>;
  const bool kivi = l.method == KvMethod::kKivi;
  const int ng = kivi ? D / l.group : 1;
  Plan p;
  int at = 0;
  auto take = [](int* cursor, int bytes) {
    const int off = *cursor;
    *cursor += (bytes + 15) / 16 * 16;
    return off;
  };
  p.lut_k = take(&at, S::kLutEntries * S::kLutCopies * 4);
  p.lut_v = take(&at, S::kLutEntries * S::kLutCopies * 4);
  p.lev = take(&at, 32 * 4);
  p.kso = take(&at, 2 * D * 4);
  p.warp0 = at;
  int st = 0;
  p.st_k = take(&st, S::kBT * S::kWK * 4);
  p.st_v = take(&st, D * 8 * 4);
  if (kivi) {
    p.st_vs = take(&st, S::kBT * ng * 4);
    p.st_kp = take(&st, (S::kBT >= l.group ? S::kBT / l.group : 1) * (D / 2) * 8);
  } else {
    p.st_vs = take(&st, S::kBT * 4);
    p.st_vi = take(&st, S::kBT * 4);
    p.st_hdr = take(&st, 4 + 2 * l.blocks_per_page);
  }
  p.stage_bytes = st;
  p.stages = 2;
  int w = p.stages * st;
  p.a_sm = take(&w, 2 * 2 * nq * 4 * S::kNP * 4);  // [step parity][hh][nq][4][kNP]
  p.delta = take(&w, nq * S::kBT * 4);
  p.xs = take(&w, nq * S::kBT * 4);
  p.corr = take(&w, nq * D * 4);  // also the block's base phases [nq][D/2] float2
  p.mrow = take(&w, nq * 4);
  p.pages = take(&w, 32 * 4);
  p.warp_bytes = w;
  return p;
}

// Queues the copies of block j (nothing past the split's end) and commits them as one group.
template <int D, int B>
__device__ void issue_block(const KvCacheView& c, const Plan& plan, int b, int h, int j,
                            uint8_t* stage, int* pages_sm, Cursor* cur, int lane) {
  using S = Shape<D, B>;
  const KvLayout& L = c.layout;
  const int64_t u = cur->u_begin + int64_t{j} * S::kBT;
  if (u < cur->u_end) {
    const uint8_t* sec = block_section(c, b, h, u, pages_sm, cur, lane);
    const int row0 = static_cast<int>(u % L.page_size);
    copy16(stage + plan.st_k, sec + L.off_k_codes + int64_t{row0} * S::kWK * 4, S::kBT * S::kWK * 4,
           lane);
    for (int i = lane; i < 2 * D; i += 32) {
      cp_async16(stage + plan.st_v + 16 * i,
                 sec + L.off_v_codes + (int64_t{i >> 1} * L.v_row_words + row0 / S::kC) * 4 +
                     16 * (i & 1));
    }
    const int ng = D / L.group;
    copy16(stage + plan.st_vs, sec + L.off_v_params + int64_t{row0} * ng * 4, S::kBT * ng * 4,
           lane);
    copy16(stage + plan.st_kp, sec + L.off_k_params + int64_t{row0 / L.group} * (D / 2) * 8,
           (S::kBT >= L.group ? S::kBT / L.group : 1) * (D / 2) * 8, lane);
  }
  cp_async_commit();
}

template <int D, int B, int NQ>
__global__ void __launch_bounds__(256, 1) kv_attention_mma_kernel(KvAttentionParams p) {
  using S = Shape<D, B>;
  extern __shared__ __align__(16) uint8_t smem[];
  const KvCacheView& c = p.cache;
  const KvLayout& L = c.layout;
  const Plan plan = make_plan<D, B>(L, NQ);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  const int gq = lane >> 2, r = lane & 3;
  const int b = blockIdx.z, h = blockIdx.y;

  // Block-wide: lookup tables of code pairs (KIVI's codes are the integers 0..2^B-1).
  uint32_t* lut_k = reinterpret_cast<uint32_t*>(smem + plan.lut_k);
  uint32_t* lut_v = reinterpret_cast<uint32_t*>(smem + plan.lut_v);
  float* lev = reinterpret_cast<float*>(smem + plan.lev);  // [16] keys, [16] values
  for (int i = threadIdx.x; i < S::kLutEntries * S::kLutCopies; i += blockDim.x) {
    const int e = i / S::kLutCopies;
    const int lo = e & S::kCodeMask, hi = e >> B;
    lut_k[i] = lut_v[i] = pack_h2(static_cast<float>(lo), static_cast<float>(hi));
  }
  if (threadIdx.x < 16) {
    lev[threadIdx.x] = 0.0f;
    lev[16 + threadIdx.x] = 0.0f;
  }
  __syncthreads();

  const int split = blockIdx.x * n_warps + warp;
  if (split > p.n_splits) return;
  SplitCoords sc;
  sc.b = b;
  sc.h = h;
  sc.split = split;
  sc.n = c.seq_len[b];
  sc.tq = sc.n - 1;
  const int group = p.n_q_heads / c.n_kv_heads;
  if (split == p.n_splits) {
    fp16_split<D, NQ>(p, sc, group);
    return;
  }
  const int parts = p.n_splits + 1;
  Cursor cur;
  cur.u_begin = split * p.split_tokens;
  cur.u_end = min(c.n_quant(sc.n), cur.u_begin + p.split_tokens);
  cur.win_first = -1000000;
  if (cur.u_begin >= cur.u_end) {  // nothing here: an empty part
    write_empty_part<D>(p, b, h, group, parts, split, lane);
    return;
  }

  uint8_t* wsm = smem + plan.warp0 + warp * plan.warp_bytes;
  uint32_t* a_sm = reinterpret_cast<uint32_t*>(wsm + plan.a_sm);  // [2][2][NQ][4][kNP] half2
  float* delta = reinterpret_cast<float*>(wsm + plan.delta);      // [NQ][kBT]
  int* pages_sm = reinterpret_cast<int*>(wsm + plan.pages);       // [32]
  for (int i = lane; i < 2 * 2 * NQ * 4 * S::kNP; i += 32) a_sm[i] = 0u;
  for (int i = lane; i < NQ * S::kBT; i += 32) delta[i] = 0.0f;
  __syncwarp();

  // Issue the first two blocks before the setup arithmetic, so their loads overlap it.
  const int n_blocks = static_cast<int>((cur.u_end - cur.u_begin + S::kBT - 1) / S::kBT);
  constexpr int kStages = 2;  // == plan.stages
#pragma unroll
  for (int j = 0; j < kStages; ++j) {
    issue_block<D, B>(c, plan, b, h, j, wsm + j * plan.stage_bytes, pages_sm, &cur, lane);
  }

  // Key-side constants: lane (gq, r) is MMA column n = gq; its tokens sit delta(n) after the
  // step's base position.
  const int delta_n = 2 * S::kC * (gq >> 1) + (gq & 1);
  __half2 ka1[S::kNP];
#pragma unroll
  for (int m = 0; m < S::kNP; ++m) {
    const int g = pair_of<D, B>(r, m);
    float2 e = make_float2(0.0f, 0.0f);
    if (g < D / 2) e = rope_phase(static_cast<double>(delta_n), p.inv_freq[g]);
    ka1[m] = __floats2half2_rn(e.x, e.y);  // the phase; the constants are per block
  }

  // Query side: lane owns pairs g = lane + 32 i of every query; phase at the first block's start.
  float2 qs[NQ][S::kQP], w_step[S::kQP], w_half[S::kQP], w_block[S::kQP];
  int a_slot[S::kQP];
#pragma unroll
  for (int i = 0; i < S::kQP; ++i) {
    const int g = lane + 32 * i;
    const float th = p.inv_freq[g];
    w_step[i] = rope_phase(2.0, th);
    w_half[i] = rope_phase(static_cast<double>(S::kC), th);
    w_block[i] = rope_phase(static_cast<double>(7 * S::kC + 2), th);
    const float2 e0 = rope_phase(static_cast<double>(c.n_sink + cur.u_begin - sc.tq), th);
    a_slot[i] = a_slot_of<D, B>(g);
    query_phases<D, NQ>(p, b, h, group, g, e0, i, qs);
  }

  float acc[S::kMT][4];
#pragma unroll
  for (int mt = 0; mt < S::kMT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
  constexpr int kNG = 4;  // value offset sums: per channel group (D / G <= 4)
  float m_run = -INFINITY, l_run = 0.0f, ofs[kNG];
#pragma unroll
  for (int cg = 0; cg < kNG; ++cg) ofs[cg] = 0.0f;
  const int ng = D / L.group;

  for (int j = 0; j < n_blocks; ++j) {
    cp_async_wait<kStages - 1>();
    __syncwarp();
    const uint8_t* stage = wsm + (j % kStages) * plan.stage_bytes;
    const int64_t u_blk = cur.u_begin + int64_t{j} * S::kBT;
    const int row0 = static_cast<int>(u_blk % L.page_size);
    const int valid = static_cast<int>(min(int64_t{S::kBT}, cur.u_end - u_blk));
    const uint32_t* sk = reinterpret_cast<const uint32_t*>(stage + plan.st_k);
    const uint32_t* sv = reinterpret_cast<const uint32_t*>(stage + plan.st_v);
    const uint32_t* svs = reinterpret_cast<const uint32_t*>(stage + plan.st_vs);

    __half2 kb1[S::kNP], kb2[S::kNP], kbc[S::kNP];  // this block's key constants
    {
      const int gi = (row0 % L.group + 2 * S::kC * (gq >> 1)) / L.group;
      const uint2* kp = reinterpret_cast<const uint2*>(stage + plan.st_kp) + gi * (D / 2);
#pragma unroll
      for (int m = 0; m < S::kNP; ++m) {
        const uint2 sz = kp[pair_of<D, B>(r, m)];
        const float2 s = __half22float2(bits_h2(sz.x)), z = __half22float2(bits_h2(sz.y));
        const float2 e = __half22float2(ka1[m]);
        kb1[m] = __floats2half2_rn(s.x * e.x, s.x * e.y);
        kb2[m] = __floats2half2_rn(-s.y * e.y, s.y * e.x);
        kbc[m] = __floats2half2_rn(z.x * e.x - z.y * e.y, z.x * e.y + z.y * e.x);
      }
    }

#pragma unroll
    for (int s = 0; s < S::kSteps; ++s) {
      // The query's phases for this step (hh = 0, 1) into the A fragments' slots. v4: two
      // buffers by step parity, so one __syncwarp per step orders both hazards (the reads of
      // step s - 2 came before the previous step's barrier).
      uint32_t* a_par = a_sm + (s & 1) * (2 * NQ * 4 * S::kNP);
#pragma unroll
      for (int qi = 0; qi < NQ; ++qi) {
#pragma unroll
        for (int i = 0; i < S::kQP; ++i) {
          const float2 p0 = qs[qi][i], p1 = cmul(p0, w_half[i]);
          if (lane + 32 * i < D / 2) {
            a_par[(0 * NQ + qi) * 4 * S::kNP + a_slot[i]] = pack_h2(p0.x, -p0.y);
            a_par[(1 * NQ + qi) * 4 * S::kNP + a_slot[i]] = pack_h2(p1.x, -p1.y);
          }
          qs[qi][i] = cmul(p0, s + 1 < S::kSteps ? w_step[i] : w_block[i]);
        }
      }
      __syncwarp();
      // q.K, v4: both tiles (hh) interleaved, two accumulators each (even and odd k-steps),
      // summed at the end: four independent mma chains of kKT / 2 instead of two of kKT.
      float sc_[2][4];
      {
        uint32_t kwd[2][S::kWL + S::kEX];
        const uint2* src[2];
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          src[hh] = reinterpret_cast<const uint2*>(
              a_par + ((hh * NQ + (gq < NQ ? gq : 0)) * 4 + r) * S::kNP);
          const int tok = S::kC * (2 * (gq >> 1) + hh) + 2 * s + (gq & 1);
          const uint32_t* kr = sk + tok * S::kWK;
#pragma unroll
          for (int i = 0; i < S::kWL; ++i) kwd[hh][i] = kr[r * S::kWL + i];
          if constexpr (S::kEX != 0) kwd[hh][S::kWL] = kr[4 * S::kWL] >> (2 * B * r);
        }
        float ca[2][2][4];
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
          for (int a = 0; a < 2; ++a)
            ca[hh][a][0] = ca[hh][a][1] = ca[hh][a][2] = ca[hh][a][3] = 0.0f;
        }
#pragma unroll
        for (int kt = 0; kt < S::kKT; ++kt) {
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            uint2 af = make_uint2(0u, 0u);
            if (gq < NQ) af = src[hh][kt];
            uint32_t bk[2];
#pragma unroll
            for (int t = 0; t < 2; ++t) {
              const int m = 2 * kt + t;
              uint32_t field;
              if constexpr (S::kEX != 0) {
                field = m < S::kWL * S::kPW
                            ? (kwd[hh][m / S::kPW] >> (2 * B * (m % S::kPW))) & S::kFieldMask
                            : kwd[hh][S::kWL] & S::kFieldMask;
              } else {
                field = (kwd[hh][m / S::kPW] >> (2 * B * (m % S::kPW))) & S::kFieldMask;
              }
              const __half2 lv = bits_h2(lut_k[field * S::kLutCopies + (lane % S::kLutCopies)]);
              const __half2 y =
                  __hfma2(__high2half2(lv), kb2[m], __hfma2(__low2half2(lv), kb1[m], kbc[m]));
              bk[t] = h2_bits(y);
            }
            mma16816(ca[hh][kt & 1], af.x, 0u, af.y, 0u, bk[0], bk[1]);
          }
        }
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
          for (int e = 0; e < 4; ++e) sc_[hh][e] = ca[hh][0][e] + ca[hh][1][e];
        }
      }
      // Online softmax over this step's 16 tokens; lane (gq, r) has query gq's tokens
      // C*(2r + hh) + 2s + e, e = 0, 1.
      float x[2][2];
      float mx = -INFINITY;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int tau = S::kC * (2 * r + hh) + 2 * s;
        x[hh][0] = sc_[hh][0];
        x[hh][1] = sc_[hh][1];
        if (tau >= valid) x[hh][0] = -INFINITY;
        if (tau + 1 >= valid) x[hh][1] = -INFINITY;
        mx = fmaxf(mx, fmaxf(x[hh][0], x[hh][1]));
      }
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
      const float m_new = fmaxf(m_run, mx);
      if (__any_sync(kFullMask, m_new > m_run)) {
        const float alpha = m_new == m_run ? 1.0f : exp2f(m_run - m_new);
        l_run *= alpha;
#pragma unroll
        for (int cg = 0; cg < kNG; ++cg) ofs[cg] *= alpha;
        const float a0 = __shfl_sync(kFullMask, alpha, 8 * r);
        const float a1 = __shfl_sync(kFullMask, alpha, 8 * r + 4);
#pragma unroll
        for (int mt = 0; mt < S::kMT; ++mt) {
          acc[mt][0] *= a0;
          acc[mt][1] *= a1;
          acc[mt][2] *= a0;
          acc[mt][3] *= a1;
        }
      }
      m_run = m_new;
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      float pr[2][2];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        pr[hh][0] = exp2f(x[hh][0] - m_use);
        pr[hh][1] = exp2f(x[hh][1] - m_use);
        l_run += pr[hh][0] + pr[hh][1];
      }
      // P.V: B = p * per-token scale (per channel group for KIVI), offsets summed aside.
      uint32_t bv[kNG][2];
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int tau = S::kC * (2 * r + hh) + 2 * s;
        const bool v0 = tau < valid, v1 = tau + 1 < valid;
#pragma unroll
        for (int cg = 0; cg < kNG; ++cg) {
          if (cg >= ng) break;
          const uint32_t e0 = svs[tau * ng + cg], e1 = svs[(tau + 1) * ng + cg];
          const float2 so0 = __half22float2(bits_h2(e0)), so1 = __half22float2(bits_h2(e1));
          bv[cg][hh] = pack_h2(v0 ? pr[hh][0] * so0.x : 0.0f, v1 ? pr[hh][1] * so1.x : 0.0f);
          ofs[cg] += (v0 ? pr[hh][0] * so0.y : 0.0f) + (v1 ? pr[hh][1] * so1.y : 0.0f);
        }
      }
#pragma unroll
      for (int mt = 0; mt < S::kMT; ++mt) {
        const int cg = (16 * mt) / L.group;
        const int sh = 2 * B * s;
        // This lane's value words (v4: read per step from the stage, not held in registers):
        // channels 16 mt + gq (+8), words 2r (hh 0) and 2r + 1 (hh 1).
        const uint2 vw0 = *reinterpret_cast<const uint2*>(sv + (16 * mt + gq) * 8 + 2 * r);
        const uint2 vw1 = *reinterpret_cast<const uint2*>(sv + (16 * mt + gq + 8) * 8 + 2 * r);
        const uint32_t a0 =
            lut_v[((vw0.x >> sh) & S::kFieldMask) * S::kLutCopies + (lane % S::kLutCopies)];
        const uint32_t a1 =
            lut_v[((vw1.x >> sh) & S::kFieldMask) * S::kLutCopies + (lane % S::kLutCopies)];
        const uint32_t a2 =
            lut_v[((vw0.y >> sh) & S::kFieldMask) * S::kLutCopies + (lane % S::kLutCopies)];
        const uint32_t a3 =
            lut_v[((vw1.y >> sh) & S::kFieldMask) * S::kLutCopies + (lane % S::kLutCopies)];
        uint32_t b0 = bv[0][0], b1 = bv[0][1];
#pragma unroll
        for (int g2 = 1; g2 < kNG; ++g2) {
          if (g2 == cg) {
            b0 = bv[g2][0];
            b1 = bv[g2][1];
          }
        }
        mma16816(acc[mt], a0, a1, a2, a3, b0, b1);
      }
    }

    __syncwarp();
    issue_block<D, B>(c, plan, b, h, j + kStages, wsm + (j % kStages) * plan.stage_bytes, pages_sm,
                      &cur, lane);
  }
  cp_async_wait<0>();

  // Sums over the four lanes of each query row, then the part: O^T[ch][q2] + offsets.
  l_run += __shfl_xor_sync(kFullMask, l_run, 1);
  l_run += __shfl_xor_sync(kFullMask, l_run, 2);
#pragma unroll
  for (int cg = 0; cg < kNG; ++cg) {
    ofs[cg] += __shfl_xor_sync(kFullMask, ofs[cg], 1);
    ofs[cg] += __shfl_xor_sync(kFullMask, ofs[cg], 2);
  }
  float ofs_col[2][kNG];
#pragma unroll
  for (int cg = 0; cg < kNG; ++cg) {
    ofs_col[0][cg] = __shfl_sync(kFullMask, ofs[cg], 8 * r);
    ofs_col[1][cg] = __shfl_sync(kFullMask, ofs[cg], 8 * r + 4);
  }
#pragma unroll
  for (int mt = 0; mt < S::kMT; ++mt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int q2 = 2 * r + (e & 1), ch = 16 * mt + gq + 8 * (e >> 1);
      const int cg = ch / L.group;
      float o = 0.0f;
#pragma unroll
      for (int g2 = 0; g2 < kNG; ++g2)
        if (g2 == cg) o = ofs_col[e & 1][g2];
      if (q2 < group) {
        const int64_t row = (int64_t{b} * p.n_q_heads + h * group + q2) * parts + split;
        p.part_o[row * D + ch] = acc[mt][e] + o;
      }
    }
  }
  if (r == 0 && gq < group) {
    const int64_t row = (int64_t{b} * p.n_q_heads + h * group + gq) * parts + split;
    p.part_ml[2 * row] = m_run;
    p.part_ml[2 * row + 1] = l_run;
  }
}

// The instantiation for a KIVI layout and query tile of this bit width (B = 2 or 4).
template <int D, int B>
bool pick(const KvLayout& l, int nq, KvMmaEntry* e) {
  switch (nq) {
    case 1: e->kernel = kv_attention_mma_kernel<D, B, 1>; break;
    case 2: e->kernel = kv_attention_mma_kernel<D, B, 2>; break;
    case 4: e->kernel = kv_attention_mma_kernel<D, B, 4>; break;
    case 8: e->kernel = kv_attention_mma_kernel<D, B, 8>; break;
    default: return false;
  }
  const Plan plan = make_plan<D, B>(l, nq);
  e->smem_base = plan.warp0;
  e->smem_per_warp = plan.warp_bytes;
  return true;
}

template <int B>
bool entry(const KvLayout& l, int nq, KvMmaEntry* e) {
  static_assert(B == 2 || B == 4, "KIVI's bit widths");
  if (l.bits != B || l.method != KvMethod::kKivi) return false;
  if (l.head_dim == 64) return pick<64, B>(l, nq, e);
  if (l.head_dim == 128) return pick<128, B>(l, nq, e);
  return false;
}

}  // namespace kvq::kernels::mma
