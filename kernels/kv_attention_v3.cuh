// Decode attention v3 (KVQuant pages): v2's tensor-core arithmetic in two phases per block of
// 8*C tokens, built for occupancy. Included by kv_attention_v3_b{2,3,4}.cu, one bit width each;
// the fp16 sink/recent split and the reduction are shared with v1 and v2.
//
// Why (bench/kernels_notes.md, ncu of v2 at 128K): v2 fuses q.K, the online softmax and P.V per
// 16-token step, so the key constants (3 half2 per key pair), the query fragments, the value
// words and the output accumulators are all live at once (241 registers), and it stages every
// block through shared memory by cp.async (20 KB per warp): 8 warps per SM, 0.41 eligible per
// scheduler, issue slots 30% busy. v3 keeps v2's arithmetic and changes the schedule:
//   phase 1  q.K of the block's tokens, 8 per MMA (column n = token n of the group, so the RoPE
//            offset of lane (gq, r)'s key column is gq in every group and the key constants
//            come from one block-wide table, reloaded per block), over key rows that cp.async
//            copied into shared memory while the block before ran its phase 2; scores to
//            shared memory [query][token], then the key outliers added to them;
//   phase 2  one maximum per block and query (no per-step softmax), the probabilities written
//            back over the scores, P.V over C/2 steps of 16 tokens as in v2, two m16 tiles at a
//            time with the next two tiles' value words in flight, the value outliers
//            (p * (x - dense) from the stored probabilities, summed as int32 fixed point
//            with several queries a KV head) folded in at the block's end.
// The output accumulators wait in shared memory during phase 1, where the key constants hold
// their registers; a block's header chunks, value scales and value-outlier index words are
// copied by cp.async at its start and arrive during phase 1. The lookup tables sit at a shared
// address aligned to their size, so a lookup is shift, LOP3, LDS; the query's A fragments are
// read as one LDS.128 (NQ <= 2: each slot stored twice) or LDS.64 (NQ >= 4) per MMA, in rows
// padded against bank conflicts.
// Occupancy (issue 14; measured below, not yet profiled): each warp's shared memory is one phase
// area, in phase 1 the A fragments, the query's phases at the block's start and the
// accumulators of the columns its queries use (NQ = 2, 4: a quarter or half of the lanes'), in
// phase 2 the value-outlier corrections and the block's value words; then the scores, the key
// rows and the block's small parts. 128 registers for NQ <= 4 (ptxas spills up to 72/184 bytes
// of stores/loads; 56/80 at D = 128, B = 3, NQ = 4) and two blocks per sm_90 SM: of 8 warps for
// NQ <= 2 (D = 128: 102-111 KB a block; NQ = 2 had one block at 120-126 KB) and for NQ = 4 at
// D = 64, of 7 warps for NQ = 4 at D = 128 (106-111 KB; was one block of 8 warps, 219-255
// registers and 154-157 KB): 14 or 16 warps per SM instead of 8. NQ = 8 stays at one block of 8
// warps (178-186 KB at D = 128, 177-254 registers).
// Lane = 4 * gq + r throughout (m16n8k16 fragment coordinates). Pair slots, the query's phase
// fragments and the value/probability fragments are v2's (kv_attention_mma.cuh).
//
// Measured (H200, 2026-12-04, bench/kernels_notes.md): nuq3-1%, 32 heads, 128K tokens, batch 1
// 0.540 ms (the first v3 0.690, v2 0.924, SDPA on fp16 0.479-0.49). An L2 prefetch of the next
// block made it slower (the prefetched lines were evicted before use: DRAM read 1.23 GB for
// 0.49 GB of cache) and was removed. With two blocks per SM for NQ = 4 (2026-12-05): GQA-8
// nuq3-1% at 128K 0.240 ms at batch 1 (was 0.301) and 1.542 ms at batch 8 (was 1.937).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kv_attention_mma.h"
#include "kv_attention_tc.cuh"
#include "kv_fixed_point.h"

namespace kvq::kernels::v3 {

using namespace dev;
using tc::a_slot_of;
using tc::bits_h2;
using tc::block_section;
using tc::Cursor;
using tc::h2_bits;
using tc::mma16816;
using tc::pack_h2;
using tc::pair_of;
using tc::query_pair;
using tc::query_phase;
using tc::Shape;
using tc::token_section_of;
using tc::v_scales_at;

// Block-wide shared memory. The lookup tables start at the first address A >= W + kKcBytes
// (W: the dynamic window's start) aligned to their size, the key constants just before A, so that a
// lookup's whole address is (field << kShift) | (A + lane copy): one LOP3, no add of the window's
// base (bench/kernels_notes.md). Everything after A is at compile-time offsets from A.
template <int D, int B>
struct Smem {
  using S = Shape<D, B>;
  static constexpr int kKcBytes = S::kNP * 3 * 32 * 4;  // at W: [kNP][3][32 lanes] key constants
  static constexpr int kLutBytes = S::kLutEntries * S::kLutCopies * 4;
  static_assert((kLutBytes & (kLutBytes - 1)) == 0, "a table's size is a power of two");
  static constexpr int kLutV = 0;                     // from A: [entry][copy] half2 level pairs
  static constexpr int kLutK = kLutBytes;             // the same for the key levels
  static constexpr int kLev = 2 * kLutBytes;          // [16] key, [16] value levels
  static constexpr int kKso = kLev + 128;             // [D] key scale, [D] key offset
  static constexpr int kThetas = kKso + 2 * D * 4;    // [D/2] RoPE frequencies
  static constexpr int kWarp0 = kThetas + D / 2 * 4;  // then the warps' areas
  // log2 of a LUT entry's bytes over its copies: an entry's first copy is field << kShift.
  static constexpr int kShift = S::kLutCopies == 32 ? 7 : 5;
  static constexpr uint32_t kFieldMask = S::kFieldMask << kShift;
  // Bytes from W to A for a window starting at shared address w.
  static constexpr __host__ __device__ uint32_t pad(uint32_t w) {
    return (kLutBytes - (w + kKcBytes) % kLutBytes) % kLutBytes;
  }
};

// Warps per block: 8, but 7 for D = 128, NQ = 4, whose 8-warp blocks (120-124 KB) miss the two
// blocks per SM that 7-warp ones reach (106-111 KB; sm_90: 228 KB per SM, 1 KB reserved per
// block). NQ = 8 (178-186 KB at 8 warps) stays at one block of 8 warps.
template <int D, int NQ>
constexpr int kWarpsOf = D == 128 && NQ == 4 ? 7 : 8;

// One warp's shared memory. The phase area holds, in phase 1, the query's A fragments by group
// parity, the query's phases at the block's start (pb, for the key outliers) and the
// accumulators; in phase 2, the block's value words [D][8] (for the value outliers' dense codes)
// and the value-outlier corrections [NQ][D] float. Then the block's scores (then probabilities),
// a window of page ids, the block's key rows and its small parts.
template <int D, int B, int NQ>
struct WarpSmem {
  using S = Shape<D, B>;
  // [2][NQ][4 r] rows of kARow bytes. NQ <= 2 (two blocks per SM either way) stores each pair
  // slot twice ({x, x}: a k16 step's A fragment is one LDS.128) in rows padded by 16 bytes, so
  // that the 4 to 8 rows a quarter-warp reads start in different banks. NQ >= 4 stores a slot
  // once and reads a step's two slots as one LDS.64, in rows of an odd number of 8-byte words
  // (the up to 16 rows a half-warp reads start in different bank pairs); the fragment's copies
  // are then register moves.
  static constexpr bool kDupA = NQ <= 2;
  static constexpr int kSlotBytes = kDupA ? 8 : 4;
  static constexpr int kARow = kDupA ? S::kNP * 8 + 16 : 8 * ((S::kNP / 2) | 1);
  // The accumulators of the columns the block's queries use (q2 = 2r + (e & 1) < NQ): lanes
  // r < kAccR, elements e of parity < NQ; the other columns are never written out. NQ = 1 and 8
  // keep them all, [4 kMT][32 lanes] (NQ = 1 fits two blocks anyway, and needs no predicate).
  // kAccTile bytes an m16 tile.
  static constexpr bool kAccAll = NQ == 1 || NQ == 8;
  static constexpr int kAccR = kAccAll ? 4 : NQ / 2;
  static constexpr int kAccE = 4;
  static constexpr int kAccTile = kAccE * 8 * kAccR * 4;
  static constexpr int kABytes = 2 * NQ * 4 * kARow;
  // Phase 2 reads tiles 2p, 2p + 1 back from the stash, then writes their value words (512 bytes
  // a tile) to vw_sm. A whole stash (kAccAll) lies under the value words, tile under tile, with A
  // and pb after it, corr over them in phase 2. Otherwise A and pb come first, corr over them,
  // the value words after corr and the stash at least (kMT - 2) * (512 - kAccTile) bytes after
  // vw_sm, so that a tile pair's words never cover a stash tile not yet read back.
  static constexpr int kVwOther = NQ * D * 4;
  static constexpr int kAccMin = kVwOther + (S::kMT - 2) * (512 - kAccTile);
  static constexpr int kAccOther =
      (kABytes + NQ * D * 4 > kAccMin ? kABytes + NQ * D * 4 : kAccMin + 15) / 16 * 16;
  static constexpr int kAcc = kAccAll ? 0 : kAccOther;
  static constexpr int kVw = kAccAll ? 0 : kVwOther;     // phase 2: [D][8] uint32
  static constexpr int kA = kAccAll ? D * 8 * 4 : 0;     // phase 1
  static constexpr int kPb = kA + kABytes;               // phase 1: [NQ][D/2] float2
  static constexpr int kCorr = kAccAll ? D * 8 * 4 : 0;  // phase 2: [NQ][D] float
  static_assert(kAccAll ? kAccTile == 512 : kAcc >= kAccMin && kAcc >= kPb + NQ * D * 4,
                "the stash clear of A, pb and corr, and of the value words ahead of it");
  static constexpr int kPhaseBytes =
      std::max({kAcc + S::kMT * kAccTile, kPb + NQ* D * 4, kVw + D * 8 * 4, kCorr + NQ* D * 4});
  static constexpr int kSc = (kPhaseBytes + 15) / 16 * 16;  // [NQ][kBT] float
  static constexpr int kPages = kSc + NQ * S::kBT * 4;      // [32] int
  static constexpr int kKeys = kPages + 32 * 4;             // [kBT][kWK] key rows
  // The block's small parts, copied at its start so that they arrive during phase 1: three
  // 16-byte chunks of the page header (k_count; the chunks holding k_begin[bi], k_begin[bi + 1]),
  // the value scales and the value-outlier index words of its tokens.
  static constexpr int kHdr = kKeys + S::kBT * S::kWK * 4;  // [3][16] bytes
  static constexpr int kVsc = kHdr + 48;                    // [kBT] half2 (scale, offset)
  static constexpr int kVix = kVsc + S::kBT * 4;            // [kBT] uint32
  static constexpr int kBytes = kVix + S::kBT * 4;
  // Stash index of accumulator element e of m16 tile mt in lane (gq, r), for q2 < NQ.
  static __device__ __forceinline__ int acc_at(int mt, int e, int gq, int r) {
    return ((kAccE * mt + e) * 8 + gq) * kAccR + r;
  }
  static_assert(kPb % 16 == 0 && kCorr % 16 == 0 && kAcc % 16 == 0 && kHdr % 16 == 0 &&
                    kVsc % 16 == 0 && kVix % 16 == 0 && kKeys % 16 == 0,
                "16-byte aligned parts");
};

// The field of 2B bits at bit sh of w (one LUT entry: two codes) as the shared address of the
// lane's copy of that entry: base = A + the lane's copy (A aligned, so OR adds). sh is a
// constant once the loops are unrolled, so this is a shift and a LOP3.
template <int D, int B>
__device__ __forceinline__ uint32_t lut_address(uint32_t w, int sh, uint32_t base) {
  constexpr int k = Smem<D, B>::kShift;
  const uint32_t x = sh >= k ? (w >> (sh - k)) : (w << (k - sh));
  return (x & Smem<D, B>::kFieldMask) | base;
}
// ld.shared from a 32-bit shared address plus a constant (the table's offset from A).
template <int kOff>
__device__ __forceinline__ uint32_t lds_at(uint32_t addr) {
  uint32_t v;
  asm("ld.shared.u32 %0, [%1+%2];\n" : "=r"(v) : "r"(addr), "n"(kOff));
  return v;
}
// A shared-memory load the compiler must repeat where it stands (the key constants are reread
// each block instead of being held through phase 2).
__device__ __forceinline__ uint32_t lds_volatile(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n"
               : "=r"(v)
               : "r"(static_cast<unsigned>(__cvta_generic_to_shared(p))));
  return v;
}

// Phase 1 for token group gi (8 tokens) of a block, shared by v3 and the score probe
// (kv_score_probe.cu): the query's phases for the group's first token into the A fragments
// (buffer kPar of a_sm, in v3's rows), the key words of token gq from the block's key rows, 2 *
// kKT key pairs looked up and rotated by the lane's key constants, kKT MMAs; the scores of query
// gq < NQ into sc[gq][8 gi + 2r, +1], -inf past `valid` tokens. qs advances to the next group.
// Lane = 4 gq + r; qrow: the query whose fragments the lane reads (gq, or 0 past NQ).
template <int D, int B, int NQ, int kPar>
__device__ __forceinline__ void group_scores(
    int gi, uint8_t* a_sm, float2 (&qs)[NQ][Shape<D, B>::kQP], const float2 (&w8)[Shape<D, B>::kQP],
    const int (&a_slot)[Shape<D, B>::kQP], const uint32_t* krows,
    const __half2 (&ka1)[Shape<D, B>::kNP], const __half2 (&ka2)[Shape<D, B>::kNP],
    const __half2 (&kcc)[Shape<D, B>::kNP], uint32_t lut_base, int valid, float* sc, int lane,
    int gq, int r, int qrow) {
  using S = Shape<D, B>;
  using SM = Smem<D, B>;
  using WS = WarpSmem<D, B, NQ>;
  constexpr int kW = S::kWL + S::kEX;  // key words of a lane's pair slots in a row
  // k16 step kt's slots 2kt, 2kt + 1 are the A fragment {a0, a1, a2, a3} = {x0, x0, x1,
  // x1}: rows gq + 8 (a1, a3) are never read.
  uint8_t* a_par = a_sm + kPar * (NQ * 4 * WS::kARow);
#pragma unroll
  for (int qi = 0; qi < NQ; ++qi) {
#pragma unroll
    for (int i = 0; i < S::kQP; ++i) {
      if (lane + 32 * i < D / 2) {
        const uint32_t x = pack_h2(qs[qi][i].x, -qs[qi][i].y);
        uint8_t* at = a_par + qi * 4 * WS::kARow + a_slot[i];
        if constexpr (WS::kDupA) {
          *reinterpret_cast<uint2*>(at) = make_uint2(x, x);
        } else {
          *reinterpret_cast<uint32_t*>(at) = x;
        }
      }
      qs[qi][i] = cmul(qs[qi][i], w8[i]);
    }
  }
  __syncwarp();
  uint32_t kw[kW];
  {
    const uint32_t* kr = krows + (8 * gi + gq) * S::kWK;
#pragma unroll
    for (int i = 0; i < S::kWL; ++i) kw[i] = kr[r * S::kWL + i];
    if constexpr (S::kEX != 0) kw[S::kWL] = kr[4 * S::kWL] >> (2 * B * r);
  }
  // Lanes past the group's queries read query 0's fragments: their rows are not used.
  const uint8_t* src = a_par + (qrow * 4 + r) * WS::kARow;
  float ca[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
  for (int kt = 0; kt < S::kKT; ++kt) {
    uint4 af;
    if constexpr (WS::kDupA) {
      af = reinterpret_cast<const uint4*>(src)[kt];
    } else {
      const uint2 a2 = reinterpret_cast<const uint2*>(src)[kt];
      af = make_uint4(a2.x, a2.x, a2.y, a2.y);
    }
    uint32_t bk[2];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const int m = 2 * kt + t;
      const uint32_t at = m < S::kWL * S::kPW
                              ? lut_address<D, B>(kw[m / S::kPW], 2 * B * (m % S::kPW), lut_base)
                              : lut_address<D, B>(kw[kW - 1], 0, lut_base);
      const __half2 lv = bits_h2(lds_at<SM::kLutK>(at));
      bk[t] = h2_bits(__hfma2(__high2half2(lv), ka2[m], __hfma2(__low2half2(lv), ka1[m], kcc[m])));
    }
    mma16816(ca[kt & 1], af.x, af.y, af.z, af.w, bk[0], bk[1]);
  }
  const int tau = 8 * gi + 2 * r;
  float s0 = ca[0][0] + ca[1][0], s1 = ca[0][1] + ca[1][1];
  if (tau >= valid) s0 = -INFINITY;
  if (tau + 1 >= valid) s1 = -INFINITY;
  if (gq < NQ) *reinterpret_cast<float2*>(sc + gq * S::kBT + tau) = make_float2(s0, s1);
}

// The key outliers of block bi, shared by v3 and the score probe: the score deltas p_g(t) * (x -
// dense) added to sc[query][token]. hdr_sm holds the page header's chunks (k_count at byte 0,
// k_begin[i] at byte 4 + 2i, in the chunk copied to slot 1 + (i - bi)); ko the page's key-outlier
// entries ((row * D + channel) << 16 | fp16 value, sorted by row and channel); krows the block's
// key rows; pb the query's phases at the block's start. A lane's first kKo entries are loaded
// together (one round trip), any further ones one by one.
//
// One query (NQ = 1) adds each entry's delta with a float atomic. For more, the atomics (compare-
// and-swap loops on sm_90, NQ of them per entry one after another) become a segmented sum over
// the lanes: a pass's entries of one token are a run of lanes (the entries are sorted), the run's
// total ends at its last lane, which adds it to sc with a plain read-add-write per query. Runs are
// short (about one outlier per token and head at 1%), so the sum stops after the first offset
// that no run reaches. A run continued in the next pass reads this pass's sums (__syncwarp).
template <int D, int B, int NQ>
__device__ __forceinline__ void key_outlier_scores(const uint8_t* hdr_sm, const uint32_t* ko,
                                                   int bi, int rows_in_page, int row0, int valid,
                                                   const uint32_t* krows, const float* lev,
                                                   const float* kso, const float* thetas,
                                                   const float2* pb, float* sc, int lane) {
  using S = Shape<D, B>;
  constexpr int kKo = 4;
  auto kbegin = [&](int i) {
    const int at = 16 * (1 + i - bi) + (4 + 2 * i) % 16;
    return static_cast<int>(*reinterpret_cast<const uint16_t*>(hdr_sm + at));
  };
  const int k_count = *reinterpret_cast<const int32_t*>(hdr_sm);
  const int kbeg = bi == 0 ? 0 : min(kbegin(bi), k_count);
  const int kend = (bi + 1) * S::kBT < rows_in_page ? min(kbegin(bi + 1), k_count) : k_count;
  uint32_t ke[kKo];
#pragma unroll
  for (int k = 0; k < kKo; ++k) {
    const int idx = kbeg + lane + 32 * k;
    ke[k] = idx < kend ? ko[idx] : 0u;
  }
  // Entry idx, of pass k: the first kKo passes' from ke, later ones loaded; 0 past kend.
  auto entry = [&](int k, int idx) {
    uint32_t e = 0;
#pragma unroll
    for (int kk = 0; kk < kKo; ++kk)
      if (kk == k) e = ke[kk];
    if (k >= kKo && idx < kend) e = ko[idx];
    return e;
  };
  // Entry e's deltas for the NQ queries (tau its token in the block, in range).
  auto deltas = [&](uint32_t e, int tau, float* d) {
    const int ch = static_cast<int>(e >> 16) % D, g = ch % (D / 2), hi = ch / (D / 2);
    const int ci = 2 * g + hi;
    const uint32_t code = (krows[tau * S::kWK + ci / S::kC] >> (B * (ci % S::kC))) & S::kCodeMask;
    const float dense = fmaf(lev[code], kso[ch], kso[D + ch]);
    const float dx = half_bits_float(e & 0xFFFFu) - dense;
    // e^{i theta_g tau}, the angle reduced to [-pi, pi] first (|theta tau| < 2^9): the fast
    // sincos is then accurate to ~1e-6.
    constexpr float kTwoPi = 6.28318530717958647692f;
    float a = thetas[g] * static_cast<float>(tau);
    a = fmaf(-kTwoPi, rintf(a * (1.0f / kTwoPi)), a);
    float sn, cs;
    __sincosf(a, &sn, &cs);
#pragma unroll
    for (int qi = 0; qi < NQ; ++qi) {
      const float2 ph = cmul(pb[qi * (D / 2) + g], make_float2(cs, sn));
      d[qi] = dx * (hi ? -ph.y : ph.x);
    }
  };
  if constexpr (NQ == 1) {
    for (int idx = kbeg + lane, k = 0; idx < kend; idx += 32, ++k) {
      const uint32_t e = entry(k, idx);
      const int tau = static_cast<int>(e >> 16) / D - row0;
      if (tau < 0 || tau >= valid) continue;
      float d[1];
      deltas(e, tau, d);
      atomicAdd(&sc[tau], d[0]);
    }
  } else {
    for (int base = kbeg, k = 0; base < kend; base += 32, ++k) {  // the same passes in every lane
      const int idx = base + lane;
      const uint32_t e = entry(k, idx);
      const int tau = static_cast<int>(e >> 16) / D - row0;
      const bool live = idx < kend && tau >= 0 && tau < valid;
      float d[NQ];
#pragma unroll
      for (int qi = 0; qi < NQ; ++qi) d[qi] = 0.0f;
      if (live) deltas(e, tau, d);
      const int key = live ? tau : -1 - lane;  // a lane without an entry is a run of its own
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
        const bool same = __shfl_up_sync(~0u, key, off) == key && lane >= off;
        if (!__any_sync(~0u, same)) break;  // no run is longer than off
#pragma unroll
        for (int qi = 0; qi < NQ; ++qi) {
          const float v = __shfl_up_sync(~0u, d[qi], off);
          if (same) d[qi] += v;
        }
      }
      const int next = __shfl_down_sync(~0u, key, 1);  // lane 31: its own
      if (live && (lane == 31 || next != key)) {
#pragma unroll
        for (int qi = 0; qi < NQ; ++qi) sc[qi * S::kBT + tau] += d[qi];
      }
      __syncwarp();
    }
  }
  __syncwarp();
}

// Two blocks per SM for NQ <= 4 (128 registers at 7 warps as at 8: ptxas allows no more for
// 14 warps), one for NQ = 8.
template <int D, int B, int NQ>
__global__ void __launch_bounds__(kWarpsOf<D, NQ> * 32, NQ <= 4 ? 2 : 1)
    kv_attention_v3_kernel(KvAttentionParams p) {
  using S = Shape<D, B>;
  using SM = Smem<D, B>;
  using WS = WarpSmem<D, B, NQ>;
  constexpr int kGroups = S::kBT / 8;  // MMA token groups per block (even: 8, 10 or 16)
  static_assert(kGroups % 2 == 0, "groups run in pairs (two buffers)");
  extern __shared__ __align__(16) uint8_t smem[];
  const KvCacheView& c = p.cache;
  const KvLayout& L = c.layout;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gq = lane >> 2, r = lane & 3;
  const int b = blockIdx.z, h = blockIdx.y;

  // The window's layout (Smem); the host sized it for the window's start it expects (pick),
  // and a launch whose window starts elsewhere stops here instead of writing past its end.
  const uint32_t w_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t pad = SM::pad(w_addr);
  uint32_t dyn_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(dyn_bytes));
  if (SM::kKcBytes + pad + SM::kWarp0 + blockDim.x / 32 * WS::kBytes > dyn_bytes) __trap();
  // The reduction (kv_reduce_kernel, launched after this grid as its programmatic dependent)
  // may be scheduled once every block has started: it waits for this grid's writes itself.
  kv_launch_dependents();
  uint8_t* sa = smem + SM::kKcBytes + pad;  // A: everything at constant offsets from it
  uint32_t* kc = reinterpret_cast<uint32_t*>(sa - SM::kKcBytes);
  const uint32_t a_addr = w_addr + SM::kKcBytes + pad;
  uint32_t* lut_k = reinterpret_cast<uint32_t*>(sa + SM::kLutK);
  uint32_t* lut_v = reinterpret_cast<uint32_t*>(sa + SM::kLutV);
  float* lev = reinterpret_cast<float*>(sa + SM::kLev);
  float* kso = reinterpret_cast<float*>(sa + SM::kKso);
  float* thetas = reinterpret_cast<float*>(sa + SM::kThetas);
  // Every global read of the prologue is issued here, before any of them is used: the levels,
  // the key scales and the frequencies of the block's tables, and this warp's sequence length,
  // its split's window of page ids and the query pairs it rotates. At short contexts a step is
  // one warp's chain of round trips (at 4K one block of 80 tokens per warp, after this
  // prologue), and these were five of them in series.
  const int split = blockIdx.x * (blockDim.x / 32) + warp;
  const int group = p.n_q_heads / c.n_kv_heads;
  const bool quant_warp = split < p.n_splits;  // a split of quantized tokens (maybe empty)
  const int seq_n = c.seq_len[b];
  const int64_t u_begin = int64_t{split} * p.split_tokens;
  const int64_t pi0 = u_begin / L.page_size;  // block_section's first window
  int page = 0;
  if (quant_warp && pi0 + lane < c.pages_per_seq) {
    page = c.page_table[int64_t{b} * c.pages_per_seq + pi0 + lane];
  }
  float2 qv[NQ][S::kQP];
#pragma unroll
  for (int i = 0; i < S::kQP; ++i) {
#pragma unroll
    for (int qi = 0; qi < NQ; ++qi) {
      qv[qi][i] =
          quant_warp ? query_pair<D>(p, b, h, group, qi, lane + 32 * i) : make_float2(0.0f, 0.0f);
    }
  }
  const int t = threadIdx.x;
  const bool level_lane = t < (1 << B);
  const float k_level = level_lane ? c.k_levels[t] : 0.0f;
  const float v_level = level_lane ? c.v_levels[t] : 0.0f;
  const float k_lo = t < D ? c.k_lo[h * D + t] : 0.0f, k_hi = t < D ? c.k_hi[h * D + t] : 0.0f;
  const float theta = t < D / 2 ? p.inv_freq[t] : 0.0f;
  if (t < 16) {
    lev[t] = k_level;
    lev[16 + t] = v_level;
  }
  for (int i = t; i < D; i += blockDim.x) {  // one round: blocks have 7 or 8 warps, D <= 128
    const float lo = i == t ? k_lo : c.k_lo[h * D + i], hi = i == t ? k_hi : c.k_hi[h * D + i];
    kso[i] = (hi - lo) / 2.0f;
    kso[D + i] = (lo + hi) / 2.0f;
    if (i < D / 2) thetas[i] = i == t ? theta : p.inv_freq[i];
  }
  uint8_t* wsm = sa + SM::kWarp0 + warp * WS::kBytes;
  int* pages_sm = reinterpret_cast<int*>(wsm + WS::kPages);
  if (quant_warp) pages_sm[lane] = page;
  __syncthreads();
  for (int i = t; i < S::kLutEntries * S::kLutCopies; i += blockDim.x) {
    const int e = i / S::kLutCopies;
    const int lo = e & S::kCodeMask, hi = e >> B;
    lut_k[i] = pack_h2(lev[lo], lev[hi]);
    lut_v[i] = pack_h2(lev[16 + lo], lev[16 + hi]);
  }
  // The split's first block of keys, copied while the key constants are formed.
  Cursor cur;
  cur.u_begin = u_begin;
  cur.u_end = min(c.n_quant(seq_n), u_begin + p.split_tokens);
  cur.win_first = static_cast<int>(pi0);
  // The block's key rows, copied by cp.async while the block before runs its phase 2.
  uint8_t* keys_sm = wsm + WS::kKeys;
  auto copy_keys = [&](const uint8_t* section, int64_t u) {
    tc::copy16(keys_sm,
               section + L.off_k_codes + int64_t{static_cast<int>(u % L.page_size)} * S::kWK * 4,
               S::kBT * S::kWK * 4, lane);
    tc::cp_async_commit();
  };
  if (quant_warp && cur.u_begin < cur.u_end) {
    copy_keys(block_section(c, b, h, cur.u_begin, pages_sm, &cur, lane), cur.u_begin);
  }
  // Key constants of lane (gq, r), pair slot m: Y = e^{i theta gq} (s o L + o) as
  // L.lo * kc0 + L.hi * kc1 + kc2 (v2's ka1, ka2, kcc with the RoPE offset gq).
  for (int i = t; i < S::kNP * 32; i += blockDim.x) {
    const int l = i & 31, m = i >> 5;
    const int g = pair_of<D, B>(l & 3, m);
    float2 e = make_float2(0.0f, 0.0f), s = e, o = e;
    if (g < D / 2) {
      e = rope_phase(static_cast<double>(l >> 2), thetas[g]);
      s = make_float2(kso[g], kso[g + D / 2]);
      o = make_float2(kso[D + g], kso[D + g + D / 2]);
    }
    kc[(3 * m + 0) * 32 + l] = pack_h2(s.x * e.x, s.x * e.y);
    kc[(3 * m + 1) * 32 + l] = pack_h2(-s.y * e.y, s.y * e.x);
    kc[(3 * m + 2) * 32 + l] = pack_h2(o.x * e.x - o.y * e.y, o.x * e.y + o.y * e.x);
  }
  __syncthreads();

  if (split > p.n_splits) return;
  SplitCoords sco;
  sco.b = b;
  sco.h = h;
  sco.split = split;
  sco.n = seq_n;
  sco.tq = sco.n - 1;
  if (split == p.n_splits) {
    fp16_split<D, NQ>(p, sco, group);
    return;
  }
  const int parts = p.n_splits + 1;
  if (cur.u_begin >= cur.u_end) {  // nothing here: an empty part
    write_empty_part<D>(p, b, h, group, parts, split, lane);
    return;
  }

  uint32_t* a_sm = reinterpret_cast<uint32_t*>(wsm + WS::kA);
  float* sc = reinterpret_cast<float*>(wsm + WS::kSc);
  int* corr = reinterpret_cast<int*>(wsm + WS::kCorr);       // phase 2: fixed point (NQ = 1: float)
  float2* pb = reinterpret_cast<float2*>(wsm + WS::kPb);     // phase 1
  float* acc_sm = reinterpret_cast<float*>(wsm + WS::kAcc);  // acc while phase 1 runs
  uint32_t* vw_sm = reinterpret_cast<uint32_t*>(wsm + WS::kVw);  // phase 2

  // Query side: lane owns pairs g = lane + 32 i of every query, phase at the split's start;
  // a_slot: where pair g sits among the A fragments (v2's mapping, in rows of kARow bytes).
  float2 qs[NQ][S::kQP], w8[S::kQP];
  int a_slot[S::kQP];
#pragma unroll
  for (int i = 0; i < S::kQP; ++i) {
    const int g = lane + 32 * i;
    const float th = thetas[g];
    w8[i] = rope_phase(8.0, th);
    const float2 e0 = rope_phase(static_cast<double>(c.n_sink + cur.u_begin - sco.tq), th);
    const int slot = a_slot_of<D, B>(g);
    a_slot[i] = slot / S::kNP * WS::kARow + slot % S::kNP * WS::kSlotBytes;
#pragma unroll
    for (int qi = 0; qi < NQ; ++qi) qs[qi][i] = query_phase<D>(qv[qi][i], e0);
  }

  float acc[S::kMT][4];
#pragma unroll
  for (int mt = 0; mt < S::kMT; ++mt) acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f, ofs = 0.0f;
  const uint32_t lut_base = a_addr + static_cast<uint32_t>(lane % S::kLutCopies) * 4u;
  const int n_blocks = static_cast<int>((cur.u_end - cur.u_begin + S::kBT - 1) / S::kBT);
  const bool k_out = c.k_outliers;
  const int qrow = gq < NQ ? gq : 0;  // the query whose scores lane (gq, r) reads
  uint8_t* hdr_sm = wsm + WS::kHdr;
  const uint32_t* vsc_sm = reinterpret_cast<const uint32_t*>(wsm + WS::kVsc);
  const uint32_t* vix_sm = reinterpret_cast<const uint32_t*>(wsm + WS::kVix);
  const bool v_out = L.v_out_per_row > 0;
  float vlev_max = 0.0f;  // the largest |value level|: the value corrections' bound (below)
  for (int i = 0; i < (1 << B); ++i) vlev_max = fmaxf(vlev_max, fabsf(lev[16 + i]));
  // Chunk (16 bytes) of the header that holds k_begin[i], i < blocks_per_page.
  auto kbegin_chunk = [&](int i) { return (4 + 2 * min(i, L.blocks_per_page - 1)) / 16; };

  for (int j = 0; j < n_blocks; ++j) {
    const int64_t u_blk = cur.u_begin + int64_t{j} * S::kBT;
    const int64_t pi = u_blk / L.page_size;
    const int row0 = static_cast<int>(u_blk % L.page_size);
    const int valid = static_cast<int>(min(int64_t{S::kBT}, cur.u_end - u_blk));
    const uint8_t* sec = block_section(c, b, h, u_blk, pages_sm, &cur, lane);
    const uint8_t* tsec = token_section_of(c, sec, h);
    const int64_t u_next = u_blk + S::kBT;
    const uint8_t* nsec =  // the next block's head section, if any
        u_next < cur.u_end ? block_section(c, b, h, u_next, pages_sm, &cur, lane) : nullptr;
    const int bi = row0 / S::kBT;
    tc::cp_async_wait<0>();
    __syncwarp();
    // This block's header chunks, value scales and index words: waited for after phase 1.
    if (k_out && lane < 3) {
      const int chunk = lane == 0 ? 0 : kbegin_chunk(bi + lane - 1);
      tc::cp_async16(hdr_sm + 16 * lane, sec + L.off_header + 16 * chunk);
    }
    tc::copy16(wsm + WS::kVsc, v_scales_at<D, B>(c, sec, h) + int64_t{row0} * 4, S::kBT * 4, lane);
    if (v_out)
      tc::copy16(wsm + WS::kVix, sec + L.off_v_index + int64_t{row0} * 4, S::kBT * 4, lane);
    tc::cp_async_commit();
    const uint32_t* krows = reinterpret_cast<const uint32_t*>(keys_sm);
    const uint32_t* vwords = reinterpret_cast<const uint32_t*>(sec + L.off_v_codes) + row0 / S::kC;

    // ---- Phase 1: scores of the block's tokens into sc[query][token]. The accumulators wait
    // in shared memory meanwhile (the key constants take their registers).
#pragma unroll
    for (int mt = 0; mt < S::kMT; ++mt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (WS::kAccAll || 2 * r < NQ) acc_sm[WS::acc_at(mt, e, gq, r)] = acc[mt][e];
      }
    }
    if (k_out) {  // the query's phases at the block's start, for the key outliers
#pragma unroll
      for (int qi = 0; qi < NQ; ++qi) {
#pragma unroll
        for (int i = 0; i < S::kQP; ++i) pb[qi * (D / 2) + lane + 32 * i] = qs[qi][i];
      }
    }
    // Pair slots that no RoPE pair maps to (D = 64, B = 3) are zeroed in every block: the
    // previous block's phase 2 (corr, value words) wrote over them.
    if constexpr (4 * S::kNP > D / 2) {
      for (int i = lane; i < 2 * NQ * 4 * S::kNP; i += 32) {
        const int row = i / S::kNP, m = i % S::kNP;
        if (pair_of<D, B>(row % 4, m) >= D / 2) {
          uint8_t* at = reinterpret_cast<uint8_t*>(a_sm) + row * WS::kARow + m * WS::kSlotBytes;
          if constexpr (WS::kDupA) {
            *reinterpret_cast<uint2*>(at) = make_uint2(0u, 0u);
          } else {
            *reinterpret_cast<uint32_t*>(at) = 0u;
          }
        }
      }
    }
    {
      __half2 ka1[S::kNP], ka2[S::kNP], kcc[S::kNP];
#pragma unroll
      for (int m = 0; m < S::kNP; ++m) {
        ka1[m] = bits_h2(lds_volatile(kc + (3 * m + 0) * 32 + lane));
        ka2[m] = bits_h2(lds_volatile(kc + (3 * m + 1) * 32 + lane));
        kcc[m] = bits_h2(lds_volatile(kc + (3 * m + 2) * 32 + lane));
      }
#pragma unroll 1
      for (int gi = 0; gi < kGroups; gi += 2) {
        group_scores<D, B, NQ, 0>(gi, reinterpret_cast<uint8_t*>(a_sm), qs, w8, a_slot, krows, ka1,
                                  ka2, kcc, lut_base, valid, sc, lane, gq, r, qrow);
        group_scores<D, B, NQ, 1>(gi + 1, reinterpret_cast<uint8_t*>(a_sm), qs, w8, a_slot, krows,
                                  ka1, ka2, kcc, lut_base, valid, sc, lane, gq, r, qrow);
      }
    }

    tc::cp_async_wait<0>();  // the header chunks, value scales and index words
    __syncwarp();

    // Key outliers of the block: score deltas added to sc.
    if (k_out) {
      const int rows_in_page =
          static_cast<int>(min(int64_t{L.page_size}, c.n_quant(sco.n) - pi * L.page_size));
      key_outlier_scores<D, B, NQ>(hdr_sm, reinterpret_cast<const uint32_t*>(sec + L.off_k_out), bi,
                                   rows_in_page, row0, valid, krows, lev, kso, thetas, pb, sc,
                                   lane);
    }

    // The key rows are used; the next block's are copied while this one finishes.
    __syncwarp();
    if (nsec != nullptr) copy_keys(nsec, u_next);

    // ---- Phase 2: the block's maximum per query, probabilities, P.V.
    // Lane (gq, r) uses query gq's scores of tokens C * 2r + [0, 2C): words 2r and 2r + 1.
    float x[2 * S::kC];
    {
      const float4* s4 = reinterpret_cast<const float4*>(sc + qrow * S::kBT + S::kC * 2 * r);
#pragma unroll
      for (int i = 0; i < S::kC / 2; ++i) {
        const float4 v = s4[i];
        x[4 * i] = v.x;
        x[4 * i + 1] = v.y;
        x[4 * i + 2] = v.z;
        x[4 * i + 3] = v.w;
      }
    }
    __syncwarp();  // every lane has its scores before any writes its probabilities back
    for (int i = lane; i < NQ * D; i += 32) corr[i] = 0;  // pb's last reader was above
    float mx = x[0];
#pragma unroll
    for (int i = 1; i < 2 * S::kC; ++i) mx = fmaxf(mx, x[i]);
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
    const float m_new = fmaxf(m_run, mx);
    const float alpha = m_new == m_run ? 1.0f : exp2f(m_run - m_new);
    l_run *= alpha;
    ofs *= alpha;
    m_run = m_new;
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    // B fragments of every step: p * the token's value scale; the offsets are summed aside. p
    // is 0 past the end (score -inf), where the scales of rows not yet written are not numbers.
    uint32_t bv[S::kSteps][2];
#pragma unroll
    for (int s = 0; s < S::kSteps; ++s) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int tau = S::kC * (2 * r + hh) + 2 * s;
        const uint2 e = *reinterpret_cast<const uint2*>(vsc_sm + tau);
        const float2 so0 = __half22float2(bits_h2(e.x)), so1 = __half22float2(bits_h2(e.y));
        float& p0 = x[S::kC * hh + 2 * s];
        float& p1 = x[S::kC * hh + 2 * s + 1];
        p0 = exp2f(p0 - m_use);
        p1 = exp2f(p1 - m_use);
        l_run += p0 + p1;
        bv[s][hh] = pack_h2(p0 == 0.0f ? 0.0f : p0 * so0.x, p1 == 0.0f ? 0.0f : p1 * so1.x);
        ofs += (p0 == 0.0f ? 0.0f : p0 * so0.y) + (p1 == 0.0f ? 0.0f : p1 * so1.y);
      }
    }
    // The probabilities back into sc for the value outliers (p * (x - dense) per entry).
    if (gq < NQ) {
      float4* s4 = reinterpret_cast<float4*>(sc + gq * S::kBT + S::kC * 2 * r);
#pragma unroll
      for (int i = 0; i < S::kC / 2; ++i)
        s4[i] = make_float4(x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]);
    }
    // The value-outlier index of tokens lane + 32 k and their first entries, asked for now so
    // that P.V covers the two round trips.
    constexpr int kTk = (S::kBT + 31) / 32;
    constexpr int kSumBits = kv_fixed_sum_bits(S::kBT);  // the value corrections' fixed point
    const uint32_t* tok_out = reinterpret_cast<const uint32_t*>(tsec + L.off_v_out);
    uint32_t vix[kTk], ve0[kTk];
#pragma unroll
    for (int k = 0; k < kTk; ++k) {
      const int tau = lane + 32 * k;
      vix[k] = v_out && tau < valid ? vix_sm[tau] : 0u;
    }
#pragma unroll
    for (int k = 0; k < kTk; ++k) {
      const int tau = lane + 32 * k;
      ve0[k] = (vix[k] >> 16) != 0
                   ? tok_out[int64_t{row0 + tau} * L.v_out_per_row + (vix[k] & 0xFFFFu)]
                   : 0u;
    }
    // This lane's value words (channels 16 mt + gq (+8), words 2r, 2r + 1), and the accumulators
    // back, rescaled to the new maximum (query 2r's factor is lane 8r's, 2r + 1's lane 8r + 4's).
    auto load_vw = [&](int mt, uint2(&w)[2]) {
      w[0] = *reinterpret_cast<const uint2*>(vwords + (16 * mt + gq) * L.v_row_words + 2 * r);
      w[1] = *reinterpret_cast<const uint2*>(vwords + (16 * mt + gq + 8) * L.v_row_words + 2 * r);
    };
    uint2 vw[2][2];
    load_vw(0, vw[0]);
    load_vw(1, vw[1]);

    const float a0 = __shfl_sync(kFullMask, alpha, 8 * r);
    const float a1 = __shfl_sync(kFullMask, alpha, 8 * r + 4);
    // The block's value words go to vw_sm tile by tile, over stash tiles already read back (and
    // for NQ = 2, 4 the A fragments and pb): the value outliers read their dense codes there.
    static_assert(S::kBT / S::kC == 8, "a channel's value words of a block: 8");
    // Two m16 tiles at a time through all steps: a tile's value words die after its steps
    // (fewer live registers than step-major order, which spilled twice as much) and the two
    // tiles' MMA chains interleave.
#pragma unroll
    for (int m2 = 0; m2 < S::kMT; m2 += 2) {
      uint2 cw[2][2] = {{vw[0][0], vw[0][1]}, {vw[1][0], vw[1][1]}};
      // Columns q2 >= NQ are never written out: 0, or at D = 128, NQ = 4 another lane's column
      // read without a predicate (ptxas -v, B = 3: 56/80 bytes of spills against 64/100; the
      // select spills less everywhere else).
#pragma unroll
      for (int mt = m2; mt < m2 + 2; ++mt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if constexpr (D == 128 && NQ == 4) {
            acc[mt][e] = acc_sm[WS::acc_at(mt, e, gq, r < WS::kAccR ? r : 0)] * (e & 1 ? a1 : a0);
          } else {
            acc[mt][e] = WS::kAccAll || 2 * r < NQ
                             ? acc_sm[WS::acc_at(mt, e, gq, r)] * (e & 1 ? a1 : a0)
                             : 0.0f;
          }
        }
      }
      __syncwarp();  // every lane has these two tiles' accumulators back
#pragma unroll
      for (int t = 0; t < 2; ++t) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int ch = 16 * (m2 + t) + gq + 8 * hh;
          *reinterpret_cast<uint2*>(vw_sm + ch * 8 + 2 * r) = cw[t][hh];
        }
      }
      if (m2 + 2 < S::kMT) {
        load_vw(m2 + 2, vw[0]);
        load_vw(m2 + 3, vw[1]);
      }
#pragma unroll
      for (int s = 0; s < S::kSteps; ++s) {
#pragma unroll
        for (int mt = m2; mt < m2 + 2; ++mt) {
          uint32_t a[4];
          const uint2* w = cw[mt - m2];
          const uint32_t w4[4] = {w[0].x, w[1].x, w[0].y, w[1].y};
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            a[k] = lds_at<SM::kLutV>(lut_address<D, B>(w4[k], 2 * B * s, lut_base));
          }
          mma16816(acc[mt], a[0], a[1], a[2], a[3], bv[s][0], bv[s][1]);
        }
      }
    }

    // g(k, tau, n_out, row_out, offset and scale) for each of the lane's tokens tau = lane + 32 k
    // with value-outlier entries, and f(tau, ch, x - dense) for each of their entries.
    auto each_outlier_token = [&](auto&& g) {
#pragma unroll
      for (int k = 0; k < kTk; ++k) {
        const int tau = lane + 32 * k;
        const int n_out = static_cast<int>(vix[k] >> 16);
        if (n_out == 0) continue;
        const uint32_t* row_out =
            tok_out + int64_t{row0 + tau} * L.v_out_per_row + (vix[k] & 0xFFFFu);
        g(k, tau, n_out, row_out, __half22float2(bits_h2(vsc_sm[tau])));
      }
    };
    auto each_value_outlier = [&](auto&& f) {
      each_outlier_token([&](int k, int tau, int n_out, const uint32_t* row_out, float2 so) {
        for (int i = 0; i < n_out; ++i) {
          const uint32_t e = i == 0 ? ve0[k] : row_out[i];
          const int ch = static_cast<int>(e >> 16) % D;
          const uint32_t code = (vw_sm[ch * 8 + tau / S::kC] >> (B * (tau % S::kC))) & S::kCodeMask;
          f(tau, ch,
            half_bits_float(e & 0xFFFFu) -
                (so.x == 0.0f ? so.y : fmaf(lev[16 + code], so.x, so.y)));
        }
      });
    };
    // Once the lanes' adds are done: acc += correction(i) for corr[i] of each fragment element.
    auto add_corrections = [&](auto&& correction) {
      __syncwarp();
#pragma unroll
      for (int mt = 0; mt < S::kMT; ++mt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int q2 = 2 * r + (e & 1), ch = 16 * mt + gq + 8 * (e >> 1);
          if (q2 < NQ) acc[mt][e] += correction(q2 * D + ch);
        }
      }
    };
    // Value outliers: p * (x - dense) summed into corr[query][channel], then into the
    // accumulators. With one query (MHA) as float, by atomicAdd. With several (GQA) as int32
    // fixed point (kv_fixed_point.h) at a scale set per block and warp: sm_90 adds int32 in
    // shared memory natively (ATOMS.ADD, nothing returned), where a float atomicAdd is a
    // compare-and-swap loop, NQ of them an entry one after another. A first pass bounds every
    // term p |x - dense| of the block by its token's largest p times (max |x| + |offset| +
    // |scale| max |level|); with at most kBT terms a sum, the scale fits every sum in an int32
    // and rounds each term to within 2^-kSumBits (2^-23 at 80 tokens a block) of the block's
    // largest term. A bound that is not finite (an inf or NaN in the cache) makes the block's
    // corrections NaN. At NQ = 1 that first pass cost more than the one loop an entry it saves
    // (H100: GQA-8 3-13% faster, MHA nuq3-1% up to 3% slower; bench/kernels_notes.md).
    if (v_out) {
      __syncwarp();  // the probabilities in sc, corr zeroed
      if constexpr (NQ == 1) {
        float* corr_f = reinterpret_cast<float*>(corr);  // zeroed as int: 0.0f
        each_value_outlier([&](int tau, int ch, float dx) {
          const float pq = sc[tau];
          if (pq != 0.0f) atomicAdd(&corr_f[ch], pq * dx);
        });
        add_corrections([&](int i) { return corr_f[i]; });
      } else {
        uint32_t bmax = 0u;  // the lane's largest term bound, as float bits (>= 0, NaN above inf)
        each_outlier_token([&](int k, int tau, int n_out, const uint32_t* row_out, float2 so) {
          uint32_t xmax = ve0[k] & 0x7FFFu;  // the largest |x| of the token's entries (fp16 bits)
          for (int i = 1; i < n_out; ++i) xmax = max(xmax, row_out[i] & 0x7FFFu);
          float pmax = sc[tau];  // over the group's queries (padding queries' p are not used)
#pragma unroll
          for (int qi = 1; qi < NQ; ++qi)
            if (qi < group) pmax = fmaxf(pmax, sc[qi * S::kBT + tau]);
          const float t = pmax * (half_bits_float(xmax) + fmaf(fabsf(so.x), vlev_max, fabsf(so.y)));
          bmax = max(bmax, __float_as_uint(t));
        });
        const float bound = __uint_as_float(__reduce_max_sync(kFullMask, bmax));
        if (bound != 0.0f) {  // warp-uniform; 0: no entries in the block
          const KvFixedScale fx = kv_fixed_scale(bound, kSumBits);
          each_value_outlier([&](int tau, int ch, float dx) {
            const float dxs = dx * fx.scale;
#pragma unroll
            for (int qi = 0; qi < NQ; ++qi)
              atomicAdd(&corr[qi * D + ch], kv_fixed_round(sc[qi * S::kBT + tau] * dxs));
          });
          // corr times a power of two: exact, as fmaf would give it.
          add_corrections([&](int i) { return static_cast<float>(corr[i]) * fx.unit; });
        }
      }
    }
    __syncwarp();  // sc, pb and corr are rewritten by the next block
  }

  // Sums over the four lanes of each query row, then the part: O^T[ch][q2] + offsets.
  l_run += __shfl_xor_sync(kFullMask, l_run, 1);
  l_run += __shfl_xor_sync(kFullMask, l_run, 2);
  ofs += __shfl_xor_sync(kFullMask, ofs, 1);
  ofs += __shfl_xor_sync(kFullMask, ofs, 2);
  const float ofs_col[2] = {__shfl_sync(kFullMask, ofs, 8 * r),
                            __shfl_sync(kFullMask, ofs, 8 * r + 4)};
#pragma unroll
  for (int mt = 0; mt < S::kMT; ++mt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int q2 = 2 * r + (e & 1), ch = 16 * mt + gq + 8 * (e >> 1);
      if (q2 < group) {
        const int64_t row = (int64_t{b} * p.n_q_heads + h * group + q2) * parts + split;
        p.part_o[row * D + ch] = acc[mt][e] + ofs_col[e & 1];
      }
    }
  }
  if (r == 0 && gq < group) {
    const int64_t row = (int64_t{b} * p.n_q_heads + h * group + gq) * parts + split;
    p.part_ml[2 * row] = m_run;
    p.part_ml[2 * row + 1] = l_run;
  }
}

// Dynamic shared memory of a block of the instantiation whose window starts at w.
template <int D, int B, int NQ>
constexpr int block_smem(uint32_t w) {
  return Smem<D, B>::kKcBytes + static_cast<int>(Smem<D, B>::pad(w)) + Smem<D, B>::kWarp0 +
         kWarpsOf<D, NQ> * WarpSmem<D, B, NQ>::kBytes;
}
// sm_90: 228 KB per SM, 1 KB reserved per block (where the window starts), so two blocks per SM
// need at most 113 KB each.
constexpr int kTwoBlocksSm90 = 228 * 1024 / 2 - 1024;
static_assert(block_smem<128, 2, 4>(1024) <= kTwoBlocksSm90 &&
                  block_smem<128, 3, 4>(1024) <= kTwoBlocksSm90 &&
                  block_smem<128, 4, 4>(1024) <= kTwoBlocksSm90 &&
                  block_smem<128, 3, 2>(1024) <= kTwoBlocksSm90 &&
                  block_smem<128, 3, 1>(1024) <= kTwoBlocksSm90,
              "NQ <= 4 fits two blocks per sm_90 SM");

template <int D, int B, int NQ>
void set_entry(KvMmaEntry* e) {
  e->kernel = kv_attention_v3_kernel<D, B, NQ>;
  e->smem_base =
      Smem<D, B>::kKcBytes + Smem<D, B>::pad(kv_dynamic_smem_start()) + Smem<D, B>::kWarp0;
  e->smem_per_warp = WarpSmem<D, B, NQ>::kBytes;
  e->warps = kWarpsOf<D, NQ>;
}

// The instantiation for a KVQuant layout and query tile of this bit width.
template <int D, int B>
bool pick(int nq, KvMmaEntry* e) {
  switch (nq) {
    case 1: set_entry<D, B, 1>(e); return true;
    case 2: set_entry<D, B, 2>(e); return true;
    case 4: set_entry<D, B, 4>(e); return true;
    case 8: set_entry<D, B, 8>(e); return true;
    default: return false;
  }
}

template <int B>
bool entry(const KvLayout& l, int nq, KvMmaEntry* e) {
  if (l.bits != B || l.method != KvMethod::kNuq) return false;
  if (l.head_dim == 64) return pick<64, B>(nq, e);
  if (l.head_dim == 128) return pick<128, B>(nq, e);
  return false;
}

}  // namespace kvq::kernels::v3
