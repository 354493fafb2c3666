// Decode attention v2: tensor cores (mma.sync m16n8k16, fp16 in, fp32 accumulate) over blocks of
// 8*C tokens (C = codes per word: 16, 10, 8) staged into shared memory by cp.async, two stages
// per warp. Included by kv_attention_mma_b{2,3,4}.cu, one bit width each. The fp16 sink/recent
// split and the reduction are shared with v1 (kv_attention.cu, kv_attention_common.cuh).
//
// Per warp (one split of one (sequence, KV head)), lane = 4 * gq + r:
//   Tokens of a block, step s < C/2, half hh, MMA column n: token C*(2*(n/2) + hh) + 2s + n%2.
//   So in P.V (O^T = V^T P^T: A = value levels [16 channels x 16 tokens], B = p * scale
//   [16 tokens x 8 queries]) the A fragment of lane (gq, r) is the token pair (2s, 2s+1) of word
//   2r + hh of channels 16 mt + gq (+8): one 2B-bit field of a value word, looked up whole in a
//   table of 2^(2B) half2 (32 conflict-free copies, 8 for B=4). The score fragment of q.K (A =
//   query [16 rows, query gq] x B = keys [16 k x 8 tokens]) comes out in exactly the B layout
//   P.V needs, so no shuffles move probabilities.
//   q.K runs over "pair slots": lane r owns the key pairs (g, g + D/2) of whole row words
//   r*WL .. r*WL+WL-1 (plus slot r of word 4*WL for B=3, D=128); pair m of lane r feeds k = 2r,
//   2r+1 (m even) or 2r+8, 2r+9 (m odd) of k-step m/2 as (real, imaginary).
//   RoPE: score = sum_g Re(P_g Y_g) with P_g = conj(Q_g) e^{i theta_g (t_blk + C hh + 2s - t_q)}
//   (the query side, shared by a tile's 8 tokens; the warp rotates the 2*D/64 pairs of each lane
//   and passes them through shared memory to the lanes whose A fragment holds them) and
//   Y_g = e^{i theta_g delta(n)} (s o L + o), delta(n) = 2C*(n/2) + n%2 fixed per lane, folded
//   with the channel scale and offset into three half2 constants per pair: two HFMA2 per pair.
//   Key outliers: score deltas per (query, token) in shared memory, added before the softmax.
//   Value outliers: p * (x - dense) per (query, channel) in shared memory, folded into O per block.
//
// Shared memory (Plan): block-wide lookup tables and fp32 levels/scales; per warp 2 stages of
//   key rows [8C][WK], value words [D][8], value scales (from the page's token section) or KIVI
//   params, the head's value-outlier index words, the page header (KIVI: key params), then query
//   staging, outlier scratch and a page-id window. The value-outlier entries themselves (about
//   1% of a token's values, in the token section) are read from L2 by the lane of their token.
//
// Versions: this is v2 of kv_attention.cu. H100, nuq3-1%, 32 heads, 128K tokens, batch 1:
//   0.838 ms = 602 GB/s on the compressed bytes, 20% of the copy (fp16 flash-decoding 0.81 ms).
//   Predicted ~0.2 ms; latency-bound at 8 warps per SM (246 registers, 20 KB shared memory per
//   warp) and two waves of blocks from the split heuristic. Next steps with predictions:
//   bench/kernels_notes.md.
// v4 (this file today; H200 2026-12-04: 0.92 ms, and v3, kv_attention_v3.cuh, is faster for
// KVQuant at every benchmarked shape): shorter chains at the same occupancy. q.K runs both tiles
// (hh)
//   interleaved with two accumulators each (four independent mma chains of kKT/2), the query's
//   A fragments go through two buffers by step parity (one __syncwarp per step instead of two),
//   value words are read from the stage per step instead of held across the block, and the key
//   outliers are loaded at the block's start (their lines asked of L2 one block ahead) instead of
//   held in registers for the next block. A one-stage, 16-warps-per-SM variant is built in
//   (kV4Wide) but off: at 128 registers it spills heavily.
#pragma once

#include <cstdint>

#include "kv_attention_common.cuh"
#include "kv_attention_mma.h"
#include "kvq/quant/pack.h"

namespace kvq::kernels::mma {

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

// v4: the instantiations that can run 16 warps per SM (one query row, KVQuant: <= 128
// registers and ~11.5 KB of shared memory per warp) keep one stage of blocks in shared memory
// and prefetch the next block into L2 instead; the others keep two stages at 8 warps per SM.
// Off for now: at 128 registers the NQ=1 instantiations spill heavily (ptxas, D=128 B=3: 704 B
// stores, 1184 B loads; bench/kernels_notes.md v4), so every instantiation runs 8 warps per SM.
constexpr bool kV4Wide = false;
__host__ __device__ constexpr bool v4_wide(int nq, bool kivi) {
  return kV4Wide && nq == 1 && !kivi;
}
__host__ __device__ constexpr int v4_stages(int nq, bool kivi) { return v4_wide(nq, kivi) ? 1 : 2; }

template <int D, int B>
__host__ __device__ __forceinline__ int pair_of(int r, int m) {
  using S = Shape<D, B>;
  return m < S::kWL * S::kPW ? r * S::kWL * S::kPW + m : 4 * S::kWL * S::kPW + r;
}

// Byte offsets of the dynamic shared memory, the same on host and device.
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
  p.stages = v4_stages(nq, kivi);
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

template <int D, int B, bool kKivi>
__device__ const uint8_t* block_section(const KvCacheView& c, int b, int h, int64_t u,
                                        int* pages_sm, Cursor* cur, int lane) {
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

// Queues the copies of block j (nothing past the split's end) and commits them as one group.
template <int D, int B, bool kKivi>
__device__ void issue_block(const KvCacheView& c, const Plan& plan, int b, int h, int j,
                            uint8_t* stage, int* pages_sm, Cursor* cur, int lane) {
  using S = Shape<D, B>;
  const KvLayout& L = c.layout;
  const int64_t u = cur->u_begin + int64_t{j} * S::kBT;
  if (u < cur->u_end) {
    const uint8_t* sec = block_section<D, B, kKivi>(c, b, h, u, pages_sm, cur, lane);
    const int row0 = static_cast<int>(u % L.page_size);
    copy16(stage + plan.st_k, sec + L.off_k_codes + int64_t{row0} * S::kWK * 4, S::kBT * S::kWK * 4,
           lane);
    for (int i = lane; i < 2 * D; i += 32) {
      cp_async16(stage + plan.st_v + 16 * i,
                 sec + L.off_v_codes + (int64_t{i >> 1} * L.v_row_words + row0 / S::kC) * 4 +
                     16 * (i & 1));
    }
    if (kKivi) {
      const int ng = D / L.group;
      copy16(stage + plan.st_vs, sec + L.off_v_params + int64_t{row0} * ng * 4, S::kBT * ng * 4,
             lane);
      copy16(stage + plan.st_kp, sec + L.off_k_params + int64_t{row0 / L.group} * (D / 2) * 8,
             (S::kBT >= L.group ? S::kBT / L.group : 1) * (D / 2) * 8, lane);
    } else {
      copy16(stage + plan.st_vs, v_scales_at<D, B>(c, sec, h) + int64_t{row0} * 4, S::kBT * 4,
             lane);
      copy16(stage + plan.st_vi, sec + L.off_v_index + int64_t{row0} * 4, S::kBT * 4, lane);
      copy16(stage + plan.st_hdr, sec + L.off_header, (4 + 2 * L.blocks_per_page + 15) / 16 * 16,
             lane);
    }
  }
  cp_async_commit();
}

__device__ __forceinline__ void prefetch_l2(const void* gmem) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(gmem));
}
// Every 128-byte line of [p, p + bytes), addresses clamped inside the range.
__device__ __forceinline__ void prefetch_range(const uint8_t* p, int bytes, int lane) {
  if (bytes <= 0) return;
  for (int i = lane; i < (bytes + 127) / 128 + 1; i += 32) prefetch_l2(p + min(128 * i, bytes - 1));
}

// v4, one stage: asks L2 for block j's lines (KVQuant only) while the warp computes the block
// before it, so that its cp.async at the end of that block finds them there. A hint only; the
// same addresses issue_block copies from, nothing past the split's end.
template <int D, int B>
__device__ void prefetch_block(const KvCacheView& c, int b, int h, int j, int* pages_sm,
                               Cursor* cur, int lane) {
  using S = Shape<D, B>;
  const KvLayout& L = c.layout;
  const int64_t u = cur->u_begin + int64_t{j} * S::kBT;
  if (u >= cur->u_end) return;
  const uint8_t* sec = block_section<D, B, false>(c, b, h, u, pages_sm, cur, lane);
  const int row0 = static_cast<int>(u % L.page_size);
  prefetch_range(sec + L.off_k_codes + int64_t{row0} * S::kWK * 4, S::kBT * S::kWK * 4, lane);
  for (int i = lane; i < 2 * D; i += 32) {  // 32 bytes per channel: its first and last byte
    prefetch_l2(sec + L.off_v_codes + (int64_t{i >> 1} * L.v_row_words + row0 / S::kC) * 4 +
                31 * (i & 1));
  }
  prefetch_range(v_scales_at<D, B>(c, sec, h) + int64_t{row0} * 4, S::kBT * 4, lane);
  prefetch_range(sec + L.off_v_index + int64_t{row0} * 4, S::kBT * 4, lane);
}

template <int D, int B, int NQ, bool kKivi>
__global__ void __launch_bounds__(256, v4_wide(NQ, kKivi) ? 2 : 1)
    kv_attention_mma_kernel(KvAttentionParams p) {
  using S = Shape<D, B>;
  extern __shared__ __align__(16) uint8_t smem[];
  const KvCacheView& c = p.cache;
  const KvLayout& L = c.layout;
  const Plan plan = make_plan<D, B>(L, NQ);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  const int gq = lane >> 2, r = lane & 3;
  const int b = blockIdx.z, h = blockIdx.y;

  // Block-wide: lookup tables of code pairs, fp32 levels, the head's key scales and offsets.
  uint32_t* lut_k = reinterpret_cast<uint32_t*>(smem + plan.lut_k);
  uint32_t* lut_v = reinterpret_cast<uint32_t*>(smem + plan.lut_v);
  float* lev = reinterpret_cast<float*>(smem + plan.lev);  // [16] keys, [16] values
  float* kso = reinterpret_cast<float*>(smem + plan.kso);  // [D] scale, [D] offset
  for (int i = threadIdx.x; i < S::kLutEntries * S::kLutCopies; i += blockDim.x) {
    const int e = i / S::kLutCopies;
    const int lo = e & S::kCodeMask, hi = e >> B;
    if (kKivi) {
      lut_k[i] = lut_v[i] = pack_h2(static_cast<float>(lo), static_cast<float>(hi));
    } else {
      lut_k[i] = pack_h2(c.k_levels[lo], c.k_levels[hi]);
      lut_v[i] = pack_h2(c.v_levels[lo], c.v_levels[hi]);
    }
  }
  if (threadIdx.x < 16) {
    const bool in = !kKivi && threadIdx.x < (1u << B);
    lev[threadIdx.x] = in ? c.k_levels[threadIdx.x] : 0.0f;
    lev[16 + threadIdx.x] = in ? c.v_levels[threadIdx.x] : 0.0f;
  }
  if (!kKivi) {
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
      const float lo = c.k_lo[h * D + i], hi = c.k_hi[h * D + i];
      kso[i] = (hi - lo) / 2.0f;
      kso[D + i] = (lo + hi) / 2.0f;
    }
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
    ScalarState<D, NQ> st;
    if (p.q_bf16)
      st.template init<__nv_bfloat16>(p, sc, group);
    else
      st.template init<__half>(p, sc, group);
    scalar_fp16_tokens<D, NQ>(p, sc, st);
    st.write(p, sc, group);
    return;
  }
  const int parts = p.n_splits + 1;
  Cursor cur;
  cur.u_begin = int64_t{split} * p.pages_per_split * L.page_size;
  cur.u_end = min(c.n_quant(sc.n), cur.u_begin + int64_t{p.pages_per_split} * L.page_size);
  cur.win_first = -1000000;
  if (cur.u_begin >= cur.u_end) {  // nothing here: an empty part
    for (int qi = 0; qi < group; ++qi) {
      const int64_t row = (int64_t{b} * p.n_q_heads + h * group + qi) * parts + split;
      for (int ch = lane; ch < D; ch += 32) p.part_o[row * D + ch] = 0.0f;
      if (lane == 0) {
        p.part_ml[2 * row] = -INFINITY;
        p.part_ml[2 * row + 1] = 0.0f;
      }
    }
    return;
  }

  uint8_t* wsm = smem + plan.warp0 + warp * plan.warp_bytes;
  uint32_t* a_sm = reinterpret_cast<uint32_t*>(wsm + plan.a_sm);  // [2][2][NQ][4][kNP] half2
  float* delta = reinterpret_cast<float*>(wsm + plan.delta);      // [NQ][kBT]
  float* xs = reinterpret_cast<float*>(wsm + plan.xs);            // [NQ][kBT]
  float* corr = reinterpret_cast<float*>(wsm + plan.corr);        // [NQ][D]
  float2* pb = reinterpret_cast<float2*>(wsm + plan.corr);        // [NQ][D/2], aliases corr
  float* mrow = reinterpret_cast<float*>(wsm + plan.mrow);        // [NQ]
  int* pages_sm = reinterpret_cast<int*>(wsm + plan.pages);       // [32]
  for (int i = lane; i < 2 * 2 * NQ * 4 * S::kNP; i += 32) a_sm[i] = 0u;
  for (int i = lane; i < NQ * S::kBT; i += 32) delta[i] = 0.0f;
  __syncwarp();

  // Issue the first two blocks before the setup arithmetic, so their loads overlap it.
  const int n_blocks = static_cast<int>((cur.u_end - cur.u_begin + S::kBT - 1) / S::kBT);
  constexpr int kStages = v4_stages(NQ, kKivi);  // == plan.stages
#pragma unroll
  for (int j = 0; j < kStages; ++j) {
    issue_block<D, B, kKivi>(c, plan, b, h, j, wsm + j * plan.stage_bytes, pages_sm, &cur, lane);
  }

  // Key-side constants: lane (gq, r) is MMA column n = gq; its tokens sit delta(n) after the
  // step's base position.
  const int delta_n = 2 * S::kC * (gq >> 1) + (gq & 1);
  __half2 ka1[S::kNP], ka2[S::kNP], kcc[S::kNP];
#pragma unroll
  for (int m = 0; m < S::kNP; ++m) {
    const int g = pair_of<D, B>(r, m);
    float2 e = make_float2(0.0f, 0.0f), s = e, o = e;
    if (g < D / 2) {
      e = rope_phase(static_cast<double>(delta_n), p.inv_freq[g]);
      if (!kKivi) {
        s = make_float2(kso[g], kso[g + D / 2]);
        o = make_float2(kso[D + g], kso[D + g + D / 2]);
      }
    }
    if (kKivi) {
      ka1[m] = __floats2half2_rn(e.x, e.y);  // KIVI: the phase; constants are per block
      ka2[m] = kcc[m] = __floats2half2_rn(0.0f, 0.0f);
    } else {
      ka1[m] = __floats2half2_rn(s.x * e.x, s.x * e.y);
      ka2[m] = __floats2half2_rn(-s.y * e.y, s.y * e.x);
      kcc[m] = __floats2half2_rn(o.x * e.x - o.y * e.y, o.x * e.y + o.y * e.x);
    }
  }

  // Query side: lane owns pairs g = lane + 32 i of every query; phase at the first block's start.
  const float qscale = kLog2e / sqrtf(static_cast<float>(D));
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
    const int span = S::kWL * S::kPW;
    const int rg = g < 4 * span ? g / span : g - 4 * span;
    const int mg = g < 4 * span ? g % span : S::kNP - 1;
    a_slot[i] = rg * S::kNP + mg;
#pragma unroll
    for (int qi = 0; qi < NQ; ++qi) {
      float2 qv = make_float2(0.0f, 0.0f);
      if (qi < group) {
        const int64_t base = (int64_t{b} * p.n_q_heads + h * group + qi) * D;
        if (p.q_bf16) {
          const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p.q) + base;
          qv = make_float2(__bfloat162float(q[g]), __bfloat162float(q[g + D / 2]));
        } else {
          const __half* q = static_cast<const __half*>(p.q) + base;
          qv = make_float2(__half2float(q[g]), __half2float(q[g + D / 2]));
        }
      }
      qs[qi][i] = cmul(make_float2(qv.x * qscale, -qv.y * qscale), e0);
    }
  }

  float acc[S::kMT][4];
#pragma unroll
  for (int mt = 0; mt < S::kMT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
  constexpr int kNG = kKivi ? 4 : 1;  // value offset sums: per channel group (KIVI, <= 4)
  float m_run = -INFINITY, l_run = 0.0f, ofs[kNG];
#pragma unroll
  for (int cg = 0; cg < kNG; ++cg) ofs[cg] = 0.0f;
  const int ng = kKivi ? D / L.group : 1;

  // Key outliers: the block's first 32 * kPre entries are loaded together at its start (the
  // next block's lines are asked of L2 one block ahead); any further ones one by one.
  constexpr int kPre = 8;
  int kbeg = 0;  // the block's first entry (splits start on a page)
  const bool k_out = !kKivi && c.k_outliers;

  for (int j = 0; j < n_blocks; ++j) {
    cp_async_wait<kStages - 1>();
    __syncwarp();
    const uint8_t* stage = wsm + (j % kStages) * plan.stage_bytes;
    if constexpr (kStages == 1) prefetch_block<D, B>(c, b, h, j + 1, pages_sm, &cur, lane);
    const int64_t u_blk = cur.u_begin + int64_t{j} * S::kBT;
    const int64_t pi = u_blk / L.page_size;
    const int row0 = static_cast<int>(u_blk % L.page_size);
    const int valid = static_cast<int>(min(int64_t{S::kBT}, cur.u_end - u_blk));
    const uint32_t* sk = reinterpret_cast<const uint32_t*>(stage + plan.st_k);
    const uint32_t* sv = reinterpret_cast<const uint32_t*>(stage + plan.st_v);
    const uint32_t* svs = reinterpret_cast<const uint32_t*>(stage + plan.st_vs);

    // Key outliers: score deltas for (query, token) of this block.
    bool has_kout = false;
    if (k_out) {
      const uint32_t* ko_cur = reinterpret_cast<const uint32_t*>(
          block_section<D, B, kKivi>(c, b, h, u_blk, pages_sm, &cur, lane) + L.off_k_out);
      const int count = *reinterpret_cast<const int32_t*>(stage + plan.st_hdr);
      const int rows_in_page =
          static_cast<int>(min(int64_t{L.page_size}, c.n_quant(sc.n) - pi * L.page_size));
      const int bi = row0 / S::kBT;
      const int kend = (bi + 1) * S::kBT < rows_in_page
                           ? reinterpret_cast<const uint16_t*>(stage + plan.st_hdr + 4)[bi + 1]
                           : count;
      const int64_t u_next = u_blk + S::kBT;
      const bool next_same_page = u_next / L.page_size == pi;
      const int kbeg_next = next_same_page ? kend : 0;
      if (u_next < cur.u_end) {
        const uint32_t* ko = reinterpret_cast<const uint32_t*>(
            block_section<D, B, kKivi>(c, b, h, u_next, pages_sm, &cur, lane) + L.off_k_out);
        prefetch_range(reinterpret_cast<const uint8_t*>(ko + kbeg_next),
                       4 * min(32 * kPre, L.k_out_capacity - kbeg_next), lane);
      }
      has_kout = kend > kbeg;
      if (has_kout) {
        uint32_t kpre[kPre];
#pragma unroll
        for (int k = 0; k < kPre; ++k) {
          const int idx = kbeg + lane + 32 * k;
          kpre[k] = idx < kend ? ko_cur[idx] : 0xFFFFFFFFu;
        }
#pragma unroll
        for (int qi = 0; qi < NQ; ++qi) {
#pragma unroll
          for (int i = 0; i < S::kQP; ++i) pb[qi * (D / 2) + lane + 32 * i] = qs[qi][i];
        }
        __syncwarp();
        for (int k = 0; kbeg + 32 * k < kend; ++k) {
          const int idx = kbeg + 32 * k + lane;
          if (idx >= kend) break;
          uint32_t e = 0;
          if (k < kPre) {
#pragma unroll
            for (int kk = 0; kk < kPre; ++kk)
              if (kk == k) e = kpre[kk];
          } else {
            e = ko_cur[idx];
          }
          const int pos = static_cast<int>(e >> 16);
          const int tau = pos / D - row0, ch = pos % D, g = ch % (D / 2), hi = ch / (D / 2);
          const int ci = 2 * g + hi;
          const uint32_t code =
              (sk[tau * S::kWK + ci / S::kC] >> (B * (ci % S::kC))) & S::kCodeMask;
          const float dense = fmaf(lev[code], kso[ch], kso[D + ch]);
          const float dx = half_bits_float(e & 0xFFFFu) - dense;
          float sn, cs;
          sincosf(p.inv_freq[g] * static_cast<float>(tau), &sn, &cs);
#pragma unroll
          for (int qi = 0; qi < NQ; ++qi) {
            const float2 ph = cmul(pb[qi * (D / 2) + g], make_float2(cs, sn));
            atomicAdd(&delta[qi * S::kBT + tau], dx * (hi ? -ph.y : ph.x));
          }
        }
        __syncwarp();
      }
      kbeg = kbeg_next;
    }

    __half2 kb1[S::kNP], kb2[S::kNP], kbc[S::kNP];  // KIVI: this block's key constants
    if (kKivi) {
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
                  kKivi
                      ? __hfma2(__high2half2(lv), kb2[m], __hfma2(__low2half2(lv), kb1[m], kbc[m]))
                      : __hfma2(__high2half2(lv), ka2[m], __hfma2(__low2half2(lv), ka1[m], kcc[m]));
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
        if (has_kout && gq < NQ) {
          float2* d = reinterpret_cast<float2*>(delta + gq * S::kBT + tau);
          const float2 dv = *d;
          x[hh][0] += dv.x;
          x[hh][1] += dv.y;
          *d = make_float2(0.0f, 0.0f);
        }
        if (tau >= valid) x[hh][0] = -INFINITY;
        if (tau + 1 >= valid) x[hh][1] = -INFINITY;
        if (!kKivi && gq < NQ)
          *reinterpret_cast<float2*>(xs + gq * S::kBT + tau) = make_float2(x[hh][0], x[hh][1]);
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
        const int cg = kKivi ? (16 * mt) / L.group : 0;
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

    // Value outliers: p * (x - dense) into corr[query][channel], then into the accumulators.
    if (!kKivi && L.v_out_per_row > 0) {
      if (r == 0 && gq < NQ) mrow[gq] = m_run;
      for (int i = lane; i < NQ * D; i += 32) corr[i] = 0.0f;
      __syncwarp();
      // The head's entries of each row (v_index staged), read from the token section (L2).
      const uint32_t* svi = reinterpret_cast<const uint32_t*>(stage + plan.st_vi);
      const uint32_t* tok_out = reinterpret_cast<const uint32_t*>(
          token_section_of(c, block_section<D, B, kKivi>(c, b, h, u_blk, pages_sm, &cur, lane), h) +
          L.off_v_out);
      for (int tau = lane; tau < valid; tau += 32) {
        const uint32_t index = svi[tau];
        const uint32_t* row_out =
            tok_out + int64_t{row0 + tau} * L.v_out_per_row + (index & 0xFFFFu);
        const int n_out = static_cast<int>(index >> 16);
        if (n_out == 0) continue;
        const float2 so = __half22float2(bits_h2(svs[tau]));
        for (int i = 0; i < n_out; ++i) {
          const uint32_t e = row_out[i];
          const int ch = static_cast<int>(e >> 16) % D;
          const uint32_t code = (sv[ch * 8 + tau / S::kC] >> (B * (tau % S::kC))) & S::kCodeMask;
          const float dx = half_bits_float(e & 0xFFFFu) -
                           (so.x == 0.0f ? so.y : fmaf(lev[16 + code], so.x, so.y));
#pragma unroll
          for (int qi = 0; qi < NQ; ++qi) {
            const float xv = xs[qi * S::kBT + tau];
            if (xv != -INFINITY) atomicAdd(&corr[qi * D + ch], exp2f(xv - mrow[qi]) * dx);
          }
        }
      }
      __syncwarp();
#pragma unroll
      for (int mt = 0; mt < S::kMT; ++mt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int q2 = 2 * r + (e & 1), ch = 16 * mt + gq + 8 * (e >> 1);
          if (q2 < NQ) acc[mt][e] += corr[q2 * D + ch];
        }
      }
    }
    __syncwarp();
    issue_block<D, B, kKivi>(c, plan, b, h, j + kStages, wsm + (j % kStages) * plan.stage_bytes,
                             pages_sm, &cur, lane);
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
      const int cg = kKivi ? ch / L.group : 0;
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

// The instantiation for a layout and query tile of this bit width.
template <int D, int B, bool kKivi>
bool pick(const KvLayout& l, int nq, KvMmaEntry* e) {
  if constexpr (kKivi && B == 3) {
    return false;
  } else {
    switch (nq) {
      case 1: e->kernel = kv_attention_mma_kernel<D, B, 1, kKivi>; break;
      case 2: e->kernel = kv_attention_mma_kernel<D, B, 2, kKivi>; break;
      case 4: e->kernel = kv_attention_mma_kernel<D, B, 4, kKivi>; break;
      case 8: e->kernel = kv_attention_mma_kernel<D, B, 8, kKivi>; break;
      default: return false;
    }
    const Plan plan = make_plan<D, B>(l, nq);
    e->smem_base = plan.warp0;
    e->smem_per_warp = plan.warp_bytes;
    return true;
  }
}

template <int B>
bool entry(const KvLayout& l, int nq, KvMmaEntry* e) {
  if (l.bits != B) return false;
  const bool kivi = l.method == KvMethod::kKivi;
  if (l.head_dim == 64) return kivi ? pick<64, B, true>(l, nq, e) : pick<64, B, false>(l, nq, e);
  if (l.head_dim == 128) return kivi ? pick<128, B, true>(l, nq, e) : pick<128, B, false>(l, nq, e);
  return false;
}

}  // namespace kvq::kernels::mma
