// Decode attention over the compressed KV cache: the simple kernel (v1), the split reduction, and
// the dispatch for every version (kv_attention.h). The tensor-core kernels are in
// kv_attention_mma.cuh (v2, KIVI pages) and kv_attention_v3.cuh (v3, KVQuant pages). CPU twin:
// kv_attention_ref (kv_ref.cpp); tests: tests/gpu/test_kv_attention.cpp.
//
// Layout
//   q, out     [batch][n_q_heads][head_dim]                       fp16 or bf16
//   part_o     [batch][n_q_heads][n_splits + 1][head_dim]         fp32, unnormalized
//   part_ml    [batch][n_q_heads][n_splits + 1][2]                fp32 (max in log2 units, sum)
//   Query head qh reads KV head qh / group (GQA); the pages hold what kv_layout.h says.
//
// Grid (v1)
//   (ceil((n_splits + 1) / 4), n_kv_heads, batch) blocks of 4 warps; warp w of block x is split
//   s = 4x + w. Split s < n_splits walks its pages token by token: lanes own RoPE pairs (two
//   channels each per 32 pairs), the key pair is dequantized (one uint32 holds both codes), the
//   score is a warp sum, the softmax is online, and the value channels of the lane accumulate.
//   Value words are loaded once per codes-per-word tokens; key outliers are read through a
//   32-entry window shuffled from lane to lane, value outliers from their fixed slots. The
//   query's RoPE phase advances by e^{i theta} per token and is recomputed exactly per page.
//   Split n_splits does the fp16 tokens the same way (kv_attention_common.cuh).
//   Reduction: (n_q_heads, batch) blocks of 256 or 1,024 threads over the n_splits + 1 parts.
//
// Versions (H100, nuq3-1%, 32 heads, head_dim 128, 128K tokens, batch 1; bench/kernels_notes.md)
//   1: the above: 2.12 ms (fp16 flash-decoding 0.81 ms). Predicted 0.3 ms from ~60 instructions
//      per token per lane; latency-bound instead (a chain of dependent loads per token).
//   2: kv_attention_mma.cuh: 0.84 ms.
//   3: v2 with splits that fill whole waves (kv_attention_splits: 128 blocks instead of 160 on
//      132 SMs) and the launch shape cached per device. Predicted ~0.45 ms (measured 0.887 ms on an
//      H200).
//   4: kv_attention_mma.cuh v4: shorter dependent chains in the kernel body, same occupancy
//      (H200: 0.92 ms; the v2 that is built today).
//   v3 (KvAttentionKernel::kTwoPhase, kv_attention_v3.cuh): q.K of a block into shared memory,
//      then P.V, at 16 warps per SM: 0.690 ms on an H200 (SDPA on fp16 0.489 ms), faster than
//      v2 at every benchmarked shape. It serves KVQuant pages, and v2's KVQuant path was removed;
//      v2 serves KIVI (kv_attention_serves).
//   v3, issue 14 (kv_attention_v3.cuh's header): NQ <= 4 in two blocks per SM (NQ = 4 at D = 128
//      in blocks of 7 warps), the split count from kv_split_plan. GQA-8 nuq3-1% at 128K, batch
//      1: 0.301 -> 0.240 ms (H200, 2026-12-05); 14-20% faster at 32K batch 8 and at 128K, 10%
//      slower at 32K batch 1.
//   v3, splits of whole 80-token blocks instead of whole pages (kv_attention_split_unit): a
//      short context no longer leaves most of the device idle (MHA 4K, batch 1: 224 blocks of
//      8 warps, one 80-token block per warp, instead of 64 walking a page of 4 each; GQA 32K:
//      240 blocks walking 2 instead of 120 walking 4). Predicted from the measured step time
//      (bench/kernels_notes.md, 2026-12-05): MHA 4K 0.068 -> ~0.04 ms, GQA 4K 0.092 -> ~0.05,
//      GQA 32K 0.105 -> ~0.085, MHA 32K 0.172 -> ~0.16; 128K and longer unchanged.
//   reduce: the parts' maxima and sums read once (a part per thread) instead of by every thread
//      in two dependent loops, and each channel's parts eight loads at a time (sass_loads.py:
//      one round trip per 8 parts instead of per part). Predicted ~3 us less per step at ~60
//      parts, which matters at 4K (~7%).
//      Both measured together against the tree before them (H100, 2026-12-05, one call, SDPA
//      within 2% in both runs), nuq3-1%, batch 1: MHA 4K 0.0692 -> 0.0361 ms, GQA 4K 0.0929 ->
//      0.0384, GQA 32K 0.1072 -> 0.0808, MHA 32K 0.1790 -> 0.1676; 128K -2% to -3% (nuq2/4-1%
//      at GQA 128K -13%, -18%); batch 8 -4% to +3%. The 4K launch is now one block per warp and
//      bound by one warp's latency through a block (bench/kernels_notes.md).
//   The fp16 part without a warp (kv_attention_parts, every version): a cache without fp16
//      tokens (KVQuant's default: no sinks, no recent window, flush 1) always has an empty part
//      n_splits, so the launch gives it no warp and the reduction skips it; a unit's splits may
//      then fill whole blocks of warps instead of a block more for an empty part. The plan's
//      predicted cost (H100, 132 SMs): MHA batch 8 32K and 128K -7 to -9% (15 splits in two
//      waves -> 8 in one), GQA batch 8 32K -6%, 128K -3%, nuq4-1% MHA batch 1 4K -33% (32
//      splits of two 64-token blocks -> 64 of one). First landed as a fold, the last quantized
//      split's warp doing the fp16 part where no warp was spare (H100, 2026-12-06, against the
//      plan before it: geometric mean of the 36 compressed rows 0.973, nuq4-1% MHA 4K 0.0540 ->
//      0.0374 ms, nuq2-1% MHA -2 to -13%, GQA batch 8 -1.5 to -3%), but GQA 4K +1.5 to +3.8%:
//      the NQ = 4 instantiations spilled more, the folded path running on into the blocks' loop.
//      Skipping the empty part instead keeps v3's code as it was (the same SASS). Measured
//      (H100, 2026-12-06, against the fold in the same call): GQA 4K nuq2-1% -2.6%, nuq4-1%
//      -1.0%, nuq3-1% +0.5%; every compressed row 0.968-1.017x, geometric mean 0.990.
//   v3, the key outliers' segmented sum (NQ >= 2, kv_attention_v3.cuh key_outlier_scores): the
//      NQ float atomics a key outlier made (CAS loops on sm_90, ~8% of GQA's stall samples at
//      128K) are a sum over the lanes per token and one plain add per run and query. H100,
//      2026-12-06, against the commit before in the same call: every GQA row -2.3 to -6.5%
//      (nuq3-1% GQA 128K 0.2250 -> 0.2186 ms), MHA 0.986-1.014x. At NQ = 1 it measured nuq2-1%
//      -2.4 to +1.3% and nuq3-1% -0.5 to +2.3%, so one query keeps its atomic.
//   v3 and the reduction, three changes landed together (bench/kernels_notes.md, fifteenth
//      session): the reduction launched as v3's programmatic dependent (launch_reduce, sm_90+);
//      v3's prologue issuing every global read before it uses any; the reduction in blocks of
//      256 threads where its first loads cover every part (pick_reduce). H100, 2026-12-07,
//      against the tree before them, medians of four rounds in turn: 36 compressed rows 0.853-
//      1.009x (median 0.946, none more than 1% slower); nuq3-1% batch 1 GQA 4K 0.0323 -> 0.0276
//      ms, GQA 32K 0.0649 -> 0.0589, GQA 128K 0.2013 -> 0.1875, MHA 4K 0.0352 -> 0.0309, MHA
//      128K 0.5197 -> 0.5232.
//   Tried and not landed (sixteenth session, branch append-pdl): v3 launched as the append's
//      programmatic dependent, the append releasing it at its start, to take the launch gap out
//      of a decode step. H100, 2026-12-07, medians of four rounds against the tree before it:
//      kernel rows unchanged (median 0.999), but the append followed by the step 1.5-23 us
//      slower at every 32K row (GQA batch 1 nuq3-1% 73.0 -> 81.5 us). Released at the append's
//      end instead (seventeenth session, branch append-pdl-late, against main in one call): every
//      32K append + step row within 1 us of main's or faster (by up to 4 us), MHA batch 1 4K
//      kernel rows 1.2% slower. The early release's cost was v3 resident during the append; the
//      launch gap it can save is about a microsecond, so it stays a branch.
//   v3, the RoPE angle's period count as a product (kv_rope.h, seventeenth session): H100,
//      2026-12-07, medians of four rounds against main in one call: 36 compressed rows 0.896-
//      1.000x (median 0.974), GQA median 0.972; nuq3-1% batch 1 GQA 4K 0.0276 -> 0.0263 ms,
//      GQA 128K 0.1872 -> 0.1814, MHA 128K 0.5220 -> 0.5131.
//   v3 on pages whose parts start on 32-byte sectors (kv_layout.h kKvPartAlign, eighteenth
//      session): the value-word loads at 8 sectors a warp load instead of 16. H100, 2026-12-08,
//      medians of four rounds against main in one call: 36 compressed rows 0.970-1.006x (median
//      0.994); nuq3-1% MHA 128K batch 1 0.5128 -> 0.5032 ms, batch 8 3.9972 -> 3.8801; DRAM
//      read at MHA batch 1 128K about 890 -> 722 MB (ncu).
#include "kv_attention.h"

#include <algorithm>
#include <functional>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "kv_attention_common.cuh"
#include "kv_attention_mma.h"
#include "kvq/quant/pack.h"

namespace kvq::kernels {
namespace {

using namespace dev;

constexpr int kSimpleWarps = 4;

template <int D, int B, int NQ, bool kKivi>
__global__ void __launch_bounds__(kSimpleWarps * 32)
    kv_attention_simple_kernel(KvAttentionParams p) {
  constexpr int kC = quant::PackedLayout<B>::kCodesPerWord;
  constexpr uint32_t kMask = quant::PackedLayout<B>::kCodeMask;
  constexpr int kPairs = D / 64;
  __shared__ float kl[16], vl[16];
  const KvCacheView& c = p.cache;
  if (!kKivi && threadIdx.x < 16) {
    kl[threadIdx.x] = threadIdx.x < (1u << B) ? c.k_levels[threadIdx.x] : 0.0f;
    vl[threadIdx.x] = threadIdx.x < (1u << B) ? c.v_levels[threadIdx.x] : 0.0f;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int split = blockIdx.x * kSimpleWarps + threadIdx.x / 32;
  if (split > p.n_splits) return;
  SplitCoords sc;
  sc.b = blockIdx.z;
  sc.h = blockIdx.y;
  sc.split = split;
  sc.n = c.seq_len[sc.b];
  sc.tq = sc.n - 1;
  const int group = p.n_q_heads / c.n_kv_heads;
  ScalarState<D, NQ> st;
  if (p.q_bf16) {
    st.template init<__nv_bfloat16>(p, sc, group);
  } else {
    st.template init<__half>(p, sc, group);
  }
  if (split == p.n_splits) {
    scalar_fp16_tokens<D, NQ>(p, sc, st);
    st.write(p, sc, group);
    return;
  }
  const KvLayout& L = c.layout;
  const int64_t nq = c.n_quant(sc.n);
  const int64_t u_begin = split * p.split_tokens;
  const int64_t u_end = min(nq, u_begin + p.split_tokens);
  float2 ks[kPairs], ko[kPairs];  // KVQuant key scale and offset of the lane's pairs
#pragma unroll
  for (int i = 0; i < kPairs; ++i) {
    ks[i] = ko[i] = make_float2(0.0f, 0.0f);
    if (!kKivi) {
      const int g = c.layout.head_dim * sc.h + lane + 32 * i;
      const float lo0 = c.k_lo[g], hi0 = c.k_hi[g], lo1 = c.k_lo[g + D / 2],
                  hi1 = c.k_hi[g + D / 2];
      ks[i] = make_float2((hi0 - lo0) / 2.0f, (hi1 - lo1) / 2.0f);
      ko[i] = make_float2((lo0 + hi0) / 2.0f, (lo1 + hi1) / 2.0f);
    }
  }
  for (int64_t u0 = u_begin; u0 < u_end; u0 += L.page_size) {
    int unused;
    const int64_t page = quant_page(c, sc.b, u0, &unused);
    const uint8_t* sec = c.head_section(page, sc.h);
    const uint32_t* v_scales = kv_v_scales(c, page, sc.h);
    const int rows = static_cast<int>(min(int64_t{L.page_size}, u_end - u0));
    const uint32_t* kw = reinterpret_cast<const uint32_t*>(sec + L.off_k_codes);
    const uint32_t* vwords = reinterpret_cast<const uint32_t*>(sec + L.off_v_codes);
    const uint32_t* k_out = reinterpret_cast<const uint32_t*>(sec + L.off_k_out);
    const int k_count =
        (!kKivi && c.k_outliers) ? *reinterpret_cast<const int32_t*>(sec + L.off_header) : 0;
    int cursor = 0, win_base = -64;
    uint32_t win = 0;
    st.seek(c.n_sink + u0, sc.tq);
    for (int c0 = 0; c0 < rows; c0 += kC) {
      uint32_t vw[2 * kPairs];
#pragma unroll
      for (int i = 0; i < kPairs; ++i) {
        vw[2 * i] = vwords[int64_t{lane + 32 * i} * L.v_row_words + c0 / kC];
        vw[2 * i + 1] = vwords[int64_t{lane + 32 * i + D / 2} * L.v_row_words + c0 / kC];
      }
      for (int row = c0; row < min(rows, c0 + kC); ++row) {
        float2 z[kPairs];
        float v[2 * kPairs];
        const int shift_v = B * (row % kC);
        float vs = 0.0f, vo = 0.0f;
        if (!kKivi) {
          const uint32_t so = v_scales[row];
          vs = half_bits_float(so & 0xFFFFu);
          vo = half_bits_float(so >> 16);
        }
#pragma unroll
        for (int i = 0; i < kPairs; ++i) {
          const int g = lane + 32 * i;
          const uint32_t w =
              kw[int64_t{row} * L.k_row_words + (2 * g) / kC] >> (B * ((2 * g) % kC));
          const uint32_t c_lo = w & kMask, c_hi = (w >> B) & kMask;
          const uint32_t v_lo = (vw[2 * i] >> shift_v) & kMask,
                         v_hi = (vw[2 * i + 1] >> shift_v) & kMask;
          if (kKivi) {
            const uint2 kp = reinterpret_cast<const uint2*>(
                sec + L.off_k_params)[int64_t{row / L.group} * (D / 2) + g];
            const float2 s = __half22float2(*reinterpret_cast<const __half2*>(&kp.x));
            const float2 zz = __half22float2(*reinterpret_cast<const __half2*>(&kp.y));
            z[i] = make_float2(fmaf(static_cast<float>(c_lo), s.x, zz.x),
                               fmaf(static_cast<float>(c_hi), s.y, zz.y));
            const uint32_t* vp = reinterpret_cast<const uint32_t*>(sec + L.off_v_params) +
                                 int64_t{row} * (D / L.group);
            const uint32_t p0 = vp[g / L.group], p1 = vp[(g + D / 2) / L.group];
            v[2 * i] = fmaf(static_cast<float>(v_lo), half_bits_float(p0 & 0xFFFFu),
                            half_bits_float(p0 >> 16));
            v[2 * i + 1] = fmaf(static_cast<float>(v_hi), half_bits_float(p1 & 0xFFFFu),
                                half_bits_float(p1 >> 16));
          } else {
            z[i] = make_float2(fmaf(kl[c_lo], ks[i].x, ko[i].x), fmaf(kl[c_hi], ks[i].y, ko[i].y));
            v[2 * i] = vs == 0.0f ? vo : fmaf(vl[v_lo], vs, vo);
            v[2 * i + 1] = vs == 0.0f ? vo : fmaf(vl[v_hi], vs, vo);
          }
        }
        if (!kKivi) {
          while (cursor < k_count) {  // key outliers of this row, in (row, channel) order
            if (cursor - win_base >= 32) {
              win_base = cursor;
              win = cursor + lane < k_count ? k_out[cursor + lane] : 0xFFFFFFFFu;
            }
            const uint32_t e = __shfl_sync(kFullMask, win, cursor - win_base);
            const int idx = static_cast<int>(e >> 16);
            if (idx / D != row) break;
            const int ch = idx % D, g = ch % (D / 2);
            const float x = half_bits_float(e & 0xFFFFu);
#pragma unroll
            for (int i = 0; i < kPairs; ++i) {
              if (lane + 32 * i == g) {
                if (ch < D / 2)
                  z[i].x = x;
                else
                  z[i].y = x;
              }
            }
            ++cursor;
          }
          int n_out;
          const uint32_t* slots = kv_v_outliers(c, page, sc.h, row, &n_out);
          for (int j = 0; j < n_out; ++j) {
            const uint32_t e = slots[j];
            const int ch = static_cast<int>(e >> 16) % D, g = ch % (D / 2);
            const float x = half_bits_float(e & 0xFFFFu);
#pragma unroll
            for (int i = 0; i < kPairs; ++i) {
              if (lane + 32 * i == g) v[2 * i + (ch < D / 2 ? 0 : 1)] = x;
            }
          }
        }
        st.token(z, v);
      }
    }
  }
  st.write(p, sc, group);
}

// One block of kThreads threads per (sequence, query head): D channels by kThreads / D groups of
// parts. The parts' maxima and sums are read once, a part per thread, and their weights shared;
// each thread sums its channel over every (kThreads / D)-th part, its first kReducePre loads
// issued before the block's first barrier and any further ones eight at a time, and the groups'
// sums meet in shared memory: 5.7-6.1 us at 53-206 parts with 1,024 threads (ncu, H100). (Each
// thread reading every part's maximum and sum in a loop was a chain of dependent L2 round trips,
// ~4 us at 60 parts. One group of D threads, as until 2026-12-06, summed a channel over all the
// parts itself: 8.7-22.6 us a step at GQA-8, batch 1, where the split plan makes 53-206 parts,
// 26 rounds of eight loads for each of the 32 blocks.)
// The launch takes 1,024 threads (kReduceThreads) where the parts are many, and 256
// (kReduceSmallThreads) where the first round's loads cover them all (parts <= kReducePre *
// 256 / D: 64 at D = 128): at 4K a 1,024-thread block issued 16,100 warp instructions for 53-57
// parts, mostly predicated-off loads, about 4,000 issue cycles per scheduler.
constexpr int kReduceThreads = 1024;      // also the parts weighed per round (a part per thread)
constexpr int kReduceSmallThreads = 256;  // for parts <= kReducePre * 256 / D
constexpr int kReducePre = 32;            // a thread's first loads, issued before any wait

// x reduced over the block (kThreads threads, at most 32 warps); every thread gets the result.
template <int kThreads>
__device__ float block_reduce(float x, bool is_max, float* red) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, one round");
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31;
  x = is_max ? warp_max(x) : warp_sum(x);
  __syncthreads();  // red's last readers are done
  if (lane == 0) red[threadIdx.x / 32] = x;
  __syncthreads();
  x = lane < kWarps ? red[lane] : (is_max ? -INFINITY : 0.0f);
  return is_max ? warp_max(x) : warp_sum(x);
}

template <int D, typename TQ, int kThreads>
__global__ void __launch_bounds__(kThreads) kv_reduce_kernel(KvAttentionParams p) {
  constexpr int kGroups = kThreads / D;  // groups of parts, D threads each
  constexpr int kPre = kReducePre;
  static_assert(D % 32 == 0 && kThreads % D == 0, "whole warps, whole groups");
  __shared__ float w_sm[kThreads], red[32], acc_sm[kGroups][D];
  const int qh = blockIdx.x, b = blockIdx.y, t = threadIdx.x, ch = t % D, g = t / D;
  kv_wait_primary();  // launched as the attention kernel's dependent: its parts are written
  const int parts = kv_attention_parts(p);  // rows of n_splits + 1, the last one unread if empty
  const int64_t row0 = (int64_t{b} * p.n_q_heads + qh) * (p.n_splits + 1);
  const float2* ml = reinterpret_cast<const float2*>(p.part_ml + 2 * row0);
  const float* o = p.part_o + row0 * D + ch;
  // The first round's outputs (up to kPre x kGroups parts) and its part's maximum and sum are
  // all in flight before the block's first barrier, so that their round trips overlap.
  const int n0 = min(kThreads, parts);
  float x[kPre];
#pragma unroll
  for (int k = 0; k < kPre; ++k) {
    const int i = g + k * kGroups;
    x[k] = i < n0 ? __ldg(o + int64_t{i} * D) : 0.0f;
  }
  const float2 e0 = t < n0 ? ml[t] : make_float2(-INFINITY, 0.0f);
  float mx = e0.x;
  for (int i = t + kThreads; i < parts; i += kThreads) mx = fmaxf(mx, ml[i].x);
  mx = block_reduce<kThreads>(mx, true, red);
  float sum = 0.0f, acc = 0.0f;
  for (int i0 = 0; i0 < parts; i0 += kThreads) {
    const int n = min(kThreads, parts - i0);
    const float2 e = i0 == 0 ? e0 : t < n ? ml[i0 + t] : make_float2(-INFINITY, 0.0f);
    const float w = e.x == -INFINITY ? 0.0f : exp2f(e.x - mx);
    sum += w * e.y;
    __syncthreads();  // w_sm's last readers are done
    w_sm[t] = w;
    __syncthreads();
    int i = g;
    if (i0 == 0) {
#pragma unroll
      for (int k = 0; k < kPre; ++k) acc += w_sm[g + k * kGroups] * x[k];  // 0 past n: w_sm, x
      i += kPre * kGroups;
    }
    for (; i + 7 * kGroups < n; i += 8 * kGroups) {  // eight loads issued before the first is used
      float y[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) y[k] = __ldg(o + int64_t{i0 + i + k * kGroups} * D);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc += w_sm[i + k * kGroups] * y[k];
    }
    for (; i < n; i += kGroups) acc += w_sm[i] * __ldg(o + int64_t{i0 + i} * D);
  }
  sum = block_reduce<kThreads>(sum, false, red);
  acc_sm[g][ch] = acc;
  __syncthreads();
  if (g == 0) {
    acc = acc_sm[0][ch];
    for (int k = 1; k < kGroups; ++k) acc += acc_sm[k][ch];
    static_cast<TQ*>(p.out)[(int64_t{b} * p.n_q_heads + qh) * D + ch] = from_float<TQ>(acc / sum);
  }
}

using Kernel = void (*)(KvAttentionParams);

// The reduction's kernel and block size by the parts: 256 threads where their first loads cover
// every part, 1,024 otherwise.
template <int D>
Kernel pick_reduce(const KvAttentionParams& p, int* threads) {
  if (kv_attention_parts(p) <= kReducePre * (kReduceSmallThreads / D)) {
    *threads = kReduceSmallThreads;
    return p.q_bf16 ? kv_reduce_kernel<D, __nv_bfloat16, kReduceSmallThreads>
                    : kv_reduce_kernel<D, __half, kReduceSmallThreads>;
  }
  *threads = kReduceThreads;
  return p.q_bf16 ? kv_reduce_kernel<D, __nv_bfloat16, kReduceThreads>
                  : kv_reduce_kernel<D, __half, kReduceThreads>;
}

template <int D, int B, bool kKivi>
Kernel pick_simple(int nq) {
  switch (nq) {
    case 1: return kv_attention_simple_kernel<D, B, 1, kKivi>;
    case 2: return kv_attention_simple_kernel<D, B, 2, kKivi>;
    case 4: return kv_attention_simple_kernel<D, B, 4, kKivi>;
    default: return kv_attention_simple_kernel<D, B, 8, kKivi>;
  }
}

Kernel simple_kernel(const KvLayout& l, int nq) {
  const bool kivi = l.method == KvMethod::kKivi;
  switch ((kivi ? 100 : 0) + l.bits * 1000 + l.head_dim) {
    case 2064: return pick_simple<64, 2, false>(nq);
    case 2128: return pick_simple<128, 2, false>(nq);
    case 3064: return pick_simple<64, 3, false>(nq);
    case 3128: return pick_simple<128, 3, false>(nq);
    case 4064: return pick_simple<64, 4, false>(nq);
    case 4128: return pick_simple<128, 4, false>(nq);
    case 2164: return pick_simple<64, 2, true>(nq);
    case 2228: return pick_simple<128, 2, true>(nq);
    case 4164: return pick_simple<64, 4, true>(nq);
    case 4228: return pick_simple<128, 4, true>(nq);
    default: return nullptr;  // supported: bits 2, 3, 4 (KIVI 2, 4) x head_dim 64, 128
  }
}

// What a kernel gets on the current device: warps per block, dynamic shared memory, resident
// blocks per multiprocessor and the multiprocessor count. Queried once per (device, kernel,
// shared-memory plan) and cached: the attribute calls and the occupancy calculator cost
// microseconds, and a decode step asks for the splits and launches once per layer.
struct LaunchShape {
  int warps = 0;
  size_t smem = 0;
  int blocks_per_sm = 0;
  int sms = 0;
  bool pdl = false;  // programmatic dependent launch (sm_90+): the reduction's launch
};

using ShapeQuery = std::function<bool(int device, LaunchShape* shape)>;

bool cached_shape(const void* kernel, int smem_base, int smem_per_warp, const ShapeQuery& query,
                  LaunchShape* shape) {
  static std::mutex mu;
  static std::map<std::tuple<int, const void*, int, int>, LaunchShape> cache;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  const auto key = std::make_tuple(device, kernel, smem_base, smem_per_warp);
  std::lock_guard<std::mutex> lock(mu);
  if (const auto it = cache.find(key); it != cache.end()) {
    *shape = it->second;
    return true;
  }
  LaunchShape s;
  if (!query(device, &s)) return false;  // not cached: the next call asks again
  cache.emplace(key, s);
  *shape = s;
  return true;
}

// Raises (never lowers: other plans of the same kernel may need more) a kernel's dynamic
// shared-memory limit on a device. Called under cached_shape's lock.
bool raise_smem_limit(const void* kernel, int device, int bytes) {
  static std::map<std::pair<int, const void*>, int> limit;
  int& have = limit[std::make_pair(device, kernel)];
  if (bytes <= have) return true;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) !=
      cudaSuccess) {
    return false;
  }
  have = bytes;
  return true;
}

// The tensor-core kernels' launch shape: v2 (kMma) or v3 (kTwoPhase).
bool mma_shape(const KvLayout& l, int nq, KvAttentionKernel version, KvMmaEntry* e,
               LaunchShape* shape) {
  const bool ok =
      version == KvAttentionKernel::kTwoPhase
          ? kv_v3_entry_b2(l, nq, e) || kv_v3_entry_b3(l, nq, e) || kv_v3_entry_b4(l, nq, e)
          : kv_mma_entry_b2(l, nq, e) || kv_mma_entry_b4(l, nq, e);
  if (!ok) return false;
  const void* kernel = reinterpret_cast<const void*>(e->kernel);
  const int base = e->smem_base, per_warp = e->smem_per_warp;
  return cached_shape(
      kernel, base, per_warp,
      [&](int device, LaunchShape* s) {
        int max_smem = 0;
        if (cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
                cudaSuccess ||
            cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, device) !=
                cudaSuccess) {
          return false;
        }
        s->warps = std::min(e->warps, (max_smem - base) / per_warp);
        if (s->warps < 1) return false;
        s->smem = static_cast<size_t>(base) + static_cast<size_t>(s->warps) * per_warp;
        return raise_smem_limit(kernel, device, static_cast<int>(s->smem)) &&
               cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                   &s->blocks_per_sm, e->kernel, s->warps * 32, s->smem) == cudaSuccess &&
               s->blocks_per_sm > 0;
      },
      shape);
}

bool simple_shape(Kernel k, LaunchShape* shape) {
  return cached_shape(
      reinterpret_cast<const void*>(k), 0, 0,
      [&](int device, LaunchShape* s) {
        s->warps = kSimpleWarps;
        s->smem = 0;
        return cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, device) ==
                   cudaSuccess &&
               cudaOccupancyMaxActiveBlocksPerMultiprocessor(&s->blocks_per_sm, k,
                                                             kSimpleWarps * 32, 0) == cudaSuccess &&
               s->blocks_per_sm > 0;
      },
      shape);
}

cudaError_t launch_tensor_core(const KvAttentionParams& p, int nq, KvAttentionKernel version,
                               cudaStream_t stream) {
  KvMmaEntry e;
  LaunchShape s;
  if (!mma_shape(p.cache.layout, nq, version, &e, &s)) {
    (void)cudaGetLastError();
    return cudaErrorNotSupported;
  }
  const dim3 grid((kv_attention_parts(p) + s.warps - 1) / s.warps, p.cache.n_kv_heads, p.batch);
  e.kernel<<<grid, s.warps * 32, s.smem, stream>>>(p);
  return cudaGetLastError();
}

// The reduction after an attention kernel. On sm_90+ it is launched as that kernel's
// programmatic dependent: its blocks are scheduled while the attention kernel's last ones run
// (v3 releases them at its start) and wait in kv_wait_primary for its writes, which saves the
// launch gap between the two (a few microseconds of a 4K-token step). Below sm_90 (or where the
// attribute query fails) it is an ordinary launch; kv_wait_primary is then a no-op.
cudaError_t launch_reduce(Kernel reduce, dim3 grid, int threads, const KvAttentionParams& p,
                          cudaStream_t stream) {
  LaunchShape s;
  const bool pdl = cached_shape(
                       reinterpret_cast<const void*>(reduce), 0, 0,
                       [](int device, LaunchShape* shape) {
                         int major = 0;
                         if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                                                    device) != cudaSuccess) {
                           return false;
                         }
                         shape->pdl = major >= 9;
                         return true;
                       },
                       &s) &&
                   s.pdl;
  (void)cudaGetLastError();
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&config, reduce, p);
}

}  // namespace

cudaError_t launch_kv_attention_mma(const KvAttentionParams& p, int nq, cudaStream_t stream) {
  return launch_tensor_core(p, nq, KvAttentionKernel::kMma, stream);
}
cudaError_t launch_kv_attention_v3(const KvAttentionParams& p, int nq, cudaStream_t stream) {
  return launch_tensor_core(p, nq, KvAttentionKernel::kTwoPhase, stream);
}

unsigned kv_dynamic_smem_start() {
  int device = 0, reserved = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, device) !=
          cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return static_cast<unsigned>(reserved);
}

int kv_query_tile(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

int64_t kv_attention_split_unit(const KvLayout& layout, KvAttentionKernel version) {
  return version == KvAttentionKernel::kTwoPhase ? layout.block_tokens : layout.page_size;
}

void kv_attention_splits(const KvLayout& layout, int batch, int n_kv_heads, int group,
                         int64_t max_quant, bool fp16_tokens, KvAttentionKernel version,
                         int* n_splits, int64_t* split_tokens) {
  const int64_t unit = kv_attention_split_unit(layout, version);
  const int64_t chunks = (max_quant + unit - 1) / unit;
  *n_splits = 1;
  *split_tokens = std::max<int64_t>(1, chunks) * unit;
  LaunchShape s;
  bool ok = false;
  if (version != KvAttentionKernel::kSimple) {
    KvMmaEntry e;
    ok = mma_shape(layout, kv_query_tile(group), version, &e, &s);
  } else if (const Kernel k = simple_kernel(layout, kv_query_tile(group))) {
    ok = simple_shape(k, &s);
  }
  (void)cudaGetLastError();
  if (!ok || chunks == 0) return;
  const KvSplitPlan plan =
      kv_split_plan(chunks, int64_t{batch} * n_kv_heads, s.warps, int64_t{s.sms} * s.blocks_per_sm,
                    static_cast<int>(unit / layout.block_tokens), fp16_tokens);
  *n_splits = plan.n_splits;
  *split_tokens = plan.chunks_per_split * unit;
}

KvSplitPlan kv_split_plan(int64_t chunks, int64_t units, int warps, int64_t slots, int chunk_blocks,
                          bool fp16_warp) {
  // A block's warps all serve one (sequence, KV head): n_splits parts, and after them the fp16
  // tokens' where the cache has any (extra = 1), in ceil((n_splits + extra) / warps) blocks.
  // Blocks run in waves of slots, each as long as its split, so a launch costs waves x (blocks
  // of 8C tokens per split + about one block of setup). Try every blocks-per-unit count with all
  // its warps busy and keep the cheapest: one full wave where the chunks allow, else whole waves of
  // short splits (H200, 132 SMs, 410 pages of 320 tokens: MHA at 2 blocks of 8 warps per SM, 59
  // splits of 7 pages in 256 blocks; GQA, 8 KV heads, at 1 block per SM, 103 splits of 4 pages in
  // 104 blocks).
  constexpr int64_t kMaxSplits = 65535 * 4 - 1;  // launch_kv_attention's limit
  const int64_t cb = std::max(1, chunk_blocks);
  KvSplitPlan plan;
  plan.chunks_per_split = std::max<int64_t>(1, chunks);
  plan.blocks = units;
  int64_t best = -1;
  const int64_t extra = fp16_warp ? 1 : 0;
  for (int64_t per_unit = 1;; ++per_unit) {
    const int64_t want = per_unit * warps - extra;
    if (want > kMaxSplits) break;
    if (want < 1) continue;
    const int64_t splits = std::min(want, chunks);
    const int64_t cps = (chunks + splits - 1) / splits;
    const int64_t used = (chunks + cps - 1) / cps;
    const int64_t blocks = units * ((used + extra + warps - 1) / warps);
    const int64_t waves = (blocks + slots - 1) / slots;
    const int64_t cost = waves * (cps * cb + 1);
    if (best < 0 || cost * 100 < best * 97) {  // more blocks only for a clear (3%) gain
      best = cost;
      plan.chunks_per_split = cps;
      plan.n_splits = static_cast<int>(used);
      plan.blocks = blocks;
    }
    if (splits >= chunks) break;
  }
  return plan;
}

cudaError_t launch_kv_attention(const KvAttentionParams& p, KvAttentionKernel version,
                                cudaStream_t stream) {
  const KvCacheView& c = p.cache;
  const int D = c.layout.head_dim;
  if (p.batch < 0 || c.n_kv_heads < 1 || p.n_q_heads % c.n_kv_heads != 0 ||
      p.n_q_heads / c.n_kv_heads < 1 || p.n_q_heads / c.n_kv_heads > kMaxQueryGroup ||
      p.n_splits < 1 || p.n_splits > 65535 * 4) {
    return cudaErrorInvalidValue;
  }
  if (const int64_t unit = kv_attention_split_unit(c.layout, version);
      unit < 1 || p.split_tokens < 1 || p.split_tokens % unit != 0) {
    return cudaErrorInvalidValue;  // splits of whole pages (v1, v2) or blocks (v3)
  }
  if (p.batch == 0) return cudaSuccess;
  if (!p.q || !p.out || !p.inv_freq || !p.part_o || !p.part_ml || !c.pool || !c.seq_len ||
      !c.page_table || !c.ring_k || !c.ring_v ||
      (c.layout.method == KvMethod::kNuq && (!c.k_levels || !c.v_levels || !c.k_lo || !c.k_hi))) {
    return cudaErrorInvalidValue;
  }
  const int nq = kv_query_tile(p.n_q_heads / c.n_kv_heads);
  if (version == KvAttentionKernel::kMma || version == KvAttentionKernel::kTwoPhase) {
    const cudaError_t err = version == KvAttentionKernel::kMma
                                ? launch_kv_attention_mma(p, nq, stream)
                                : launch_kv_attention_v3(p, nq, stream);
    if (err != cudaSuccess) return err;
  } else if (version == KvAttentionKernel::kSimple) {
    const Kernel k = simple_kernel(c.layout, nq);
    if (!k) return cudaErrorNotSupported;
    const dim3 grid((kv_attention_parts(p) + kSimpleWarps - 1) / kSimpleWarps, c.n_kv_heads,
                    p.batch);
    k<<<grid, kSimpleWarps * 32, 0, stream>>>(p);
    if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  } else {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(p.n_q_heads, p.batch);
  Kernel reduce = nullptr;
  int threads = 0;
  if (D == 64) {
    reduce = pick_reduce<64>(p, &threads);
  } else if (D == 128) {
    reduce = pick_reduce<128>(p, &threads);
  } else {
    return cudaErrorNotSupported;
  }
  return launch_reduce(reduce, grid, threads, p, stream);
}

}  // namespace kvq::kernels
