// Quantize-on-append and prefill for the compressed KV cache (kv_append.h); CPU twin:
// kv_quantize_ref (kv_ref.cpp); tests: tests/gpu/test_kv_append.cpp. Not here: attention
// (kv_attention*.cu) and page allocation (kv_cache.cpp).
//
// Layout (kv_layout.h has the page format)
//   k, v (append)    [batch][n_kv_heads][head_dim]              fp16, keys pre-RoPE
//   k, v (prefill)   [batch][max_tokens][n_kv_heads][head_dim]  fp16
//   A warp owns one token of one KV head at a time; lane l holds channels l + 32 j, j < D/32.
//   Key rows are packed through a per-warp shared row of codes (pair-interleaved order); value
//   codes go into channel rows: the decode step ORs one bit field into a word (the first token
//   of a word writes it whole, clearing the rest), prefill builds whole words in registers.
//   Values per token over all KV heads (kv_layout.h): the warp of each head finds the token's
//   dense range over every head's values (from the input, or from the heads' ring rows when
//   the token leaves a recent window), counts the outliers of the heads before it, and writes
//   its own outliers after theirs in the row of the page's token section (head 0 writes the
//   scale/offset). In a decode step every thread of the append block selects the range and the
//   per-head counts together (select_token_high/low: a radix select on fp16 keys in registers);
//   prefill, and tokens past the block's keys (n_kv_heads * head_dim > 8192) or with too few
//   values that are not NaN, repeat the selection in each head's warp (k + 1 rounds over
//   n_kv_heads * head_dim values read from global).
//
// Grid
//   append:  (batch, n_kv_heads / W) blocks, one KV head per warp for W of their warps: write
//            the new token to the sink or ring, then quantize what leaves the window (KVQuant:
//            one token; KIVI: the full residual of F = flush tokens, F / G groups). W = 1 (blocks
//            of one warp), except for values per token over all KV heads: W = min(n_kv_heads,
//            kTokenHeads = 8) in blocks of 2W warps, and each block first selects the token's
//            range over all heads with all its warps (the same in each of the sequence's
//            blocks), then warp w < W appends head w's values and warp W + w its keys, side by
//            side (the last block's spare warps select and write nothing).
//            The lengths it reads and the ones it writes are two buffers (seq_len_out, head
//            0's block writes n + 1), so no second launch; KvCache swaps them after each step.
//            Loads that do not depend on the length go first, the page's outlier count next:
//            three dependent round trips for the key warps (length; page table and ring rows;
//            the count), two for the value warps, whose codes go into their words by atomicOr
//            (no read of the word). The block's selection hides behind them: with no recent
//            window its keys are the input, loaded with the length, and its halves run during
//            the second and the third; else both halves during the third.
//   prefill: (max_pages + 1, n_kv_heads, batch) blocks of 8 warps. Block x < max_pages
//            quantizes page x of the sequence: KVQuant in three phases (tokens in parallel,
//            counting key outliers per token; a scan; the outliers written in (token, channel)
//            order, so that a full page drops the same ones as the sequential reference); KIVI
//            one group per warp. Block x = max_pages copies the fp16 tokens and sets seq_len.
//
// Versions
//   1: append with a second launch for seq_len and six dependent round trips. Append of one
//      token at 32K, 32 heads (H100): 17.6 us at batch 1 (6% of the nuq3 decode step), 18 us at
//      batch 8 (0.5%) (bench/kernels_notes.md). Prefill is bound by the per-token selection of
//      the value range (k+1 rounds of warp argmin per side), fine for prompts.
//   2: the above: one launch, three round trips. Predicted ~10 us; measured 10.8 us for one
//      token at 32K, batch 1 (H200, 2026-11-26; 3.8% of the nuq3-1% decode step). Version 1's
//      second launch is gone (issue 12). With values per token over all heads (issue 14) a
//      first kernel (kv_value_stats_kernel: one block of 1024 threads per sequence, a radix
//      select of four 8-bit digits on fp32 keys) gave the range and counts: 0.0209 ms for one
//      token at 32K, batch 1, MHA, nuq3-1% (H200; 12.1% of the 0.173 ms decode step).
//   3: values per token over all heads in one launch: each block of up to 8 heads selects the
//      range itself (two 8-bit digits on fp16 keys, the high digit's histogram by warp-
//      aggregated atomics, then one counting pass; 5 __syncthreads) while round trips are in
//      flight; the stats kernel, its launch and its global round trip are gone. Predicted
//      (bench/kernels_notes.md, "Issue 14: the append in one launch"): ~11.5 us (10.5-13.5)
//      for one token at 32K, batch 1, MHA, nuq3-1%, ~7% of the decode step; batch 64 about
//      the same (256 blocks, one wave at 2 per SM). Measured (H200, 2026-12-05, same hour as
//      version 2): 21.8 us at MHA batch 1 (+5%), 22.0 at batch 8 (-1%); GQA-8 14.1 us at batch
//      1 and 14.2 at batch 8 (-24%, -28%). At MHA each of a sequence's 4 blocks selects over
//      all 4,096 values, which costs about the launch it saved.
//   Tried after 3 and dropped (branch tried-append-loads): the length loaded first and every
//      selection key load issued before any key is made, on the reading of the SASS that the
//      17 dependent round trips at MHA (5 at GQA) explained the time. Predicted 14-15.5 us at
//      MHA; measured against version 3 in the same call (H100, 2026-12-05), nuq3-1% at 32K:
//      MHA 20.2 -> 20.8 us, GQA 14.5 -> 15.4 (nuq2-1% MHA 20.7 -> 19.0, nuq4-1% 21.8 -> 22.8).
//      Its Nsight Compute profile (MHA, batch 1, 32K) does not show loads waiting: 10,904 SASS
//      instructions, 119,502 warp instructions executed for one token, 114 registers, 12.6%
//      achieved occupancy, DRAM at 0.2%, and the stall samples of its busiest instructions
//      mostly `no_inst` (instruction fetch; 99 samples in all). 32 warps (4 blocks of 8) run
//      ~3,700 instructions each, once through, at ~14 cycles an instruction: the kernel waits on
//      its own code. The next version needs fewer instructions per warp (fewer unrolled paths,
//      the token's work over more warps), not more loads in flight.
//   4: the above with blocks of twice the warps (2W for W heads) and the selection's loops
//      unrolled for 16 keys a thread instead of 32 (8 at MHA, 32 heads x 128: 4,096 values over
//      512 threads; 2 at GQA-8). ptxas (sm_90, kv_append_kernel<128, 3, false>): 114 -> 84
//      registers, no spills; static SASS 10,003 -> 7,768 instructions. Predicted: MHA batch 1
//      at 32K, nuq3-1%, 20.2 -> 15.5-17.5 us (9-10.5% of the 0.168 ms decode step on the H100);
//      GQA-8 14.5 -> 13-14.5 us (4 keys a thread before, 2 now: little to cut). Measured against
//      version 3 in the same call (H200, 2026-12-05), one token at 32K: MHA batch 1 nuq3-1%
//      20.0 -> 17.5 us (11.0% of the 0.159 ms step), nuq2-1% 19.2 -> 16.5, nuq4-1% 23.3 ->
//      19.1; batch 8 21.1 -> 18.2; GQA-8 batch 1 14.0 -> 13.8 (17.9% of its 0.077 ms step).
//      Nsight Compute at GQA: 23,881 warp instructions executed, 7,768 SASS instructions.
//   Tried after 4 and dropped: blocks of 4W warps and the selection unrolled for 8 keys a
//      thread (4 at MHA: 4,096 values over 1,024 threads), on the reading that version 4's time
//      at MHA followed the keys a thread holds (MHA, 8 keys: 17.5 us; GQA, 2 keys: 13.8).
//      ptxas: 64 registers (the cap at 1,024 threads), 100/88 bytes of spill stores/loads,
//      6,544 SASS instructions. Predicted MHA 17.5 -> 15-16 us; measured against version 4 in
//      the same call (H100, 2026-12-05), one token at 32K, nuq3-1%: MHA batch 1 17.6 -> 19.0
//      us, batch 8 17.9 -> 20.6, GQA-8 batch 1 13.8 -> 15.9 (nuq2-1% and nuq4-1% alike). So
//      the keys a thread holds do not set the time alone; GQA, whose keys a thread barely
//      changed (2 -> 1), lost 2 us too, so blocks of 1,024 threads (their barriers, the spills
//      at 64 registers) cost it. Not profiled.
//   5: version 4 with its path's instructions cut where the profile counted them (Nsight
//      Compute at GQA, executed instructions by source line): positions divided in 32 bits
//      (pos_div, pos_mod in kv_layout.h; ~217 of a warp's 1,493 were 64-bit division calls),
//      nuq_encode as independent compares (a loop of dependent shared loads, ~310 a head
//      warp), halvings as x * 0.5f (~120). Static SASS 7,523 -> 6,276, CALLs 46 -> 8. Measured
//      against version 4 in the same call (H100, 2026-12-05), one token at 32K, nuq3-1%: MHA
//      batch 1 17.5 -> 15.0 us (9.1% of the 0.166 ms step), batch 8 17.9 -> 15.5; GQA-8 batch
//      1 13.7 -> 11.4 (14.5% of its 0.079 ms step), batch 8 13.7 -> 11.5. Predicted 14.5 and ~11.
//   6: version 5 with the work after the selection split between a head's two warps (values on
//      one, keys on the other, where the second warp only selected and returned), and the value
//      codes ORed into their words (RED) instead of the words read with the count and written
//      back. Predicted (bench/kernels_notes.md): MHA batch 1 15.0 -> 13.5-14 us, GQA-8 11.4 ->
//      10-10.5 us (H100). Measured against version 5 in the same call (H100, 2026-12-05), one
//      token at 32K, nuq3-1%: MHA batch 1 15.1 -> 13.6 us (8.2% of the 0.166 ms step), batch 8
//      15.4 -> 14.3; GQA-8 batch 1 11.3 -> 9.7 (12.5% of its 0.078 ms step), batch 8 11.6 -> 9.9;
//      nuq2-1% and nuq4-1% alike (GQA 10.0-10.1 us, MHA 13.8-14.8).
//   Tried after 6 and dropped: for k <= 8 values kept a side (GQA-8 at 1%: k = 5 of 1,024), the
//      token's range by a tournament instead of the radix select: each warp's k + 1 extremes by
//      __reduce_min_sync on (order key << 16 | index) words, then one warp per end over every
//      warp's candidates (three barrier phases instead of five, no shared histograms). 72 ->
//      102 registers. Correct (KvAppend.MatchesReference bit-exact on both paths, sanitizers
//      clean), but against version 6 in the same call (H100, 2026-12-05, one token at 32K):
//      GQA-8 batch 1 10.1 -> 10.9 us for nuq3-1% (nuq2-1% 10.1 -> 10.9, nuq4-1% 10.6 -> 10.9),
//      batch 8 9.9 -> 10.7; predicted 8.5-9.2. Each round is a chain through REDUX and the
//      lane's minimum over its words, k + 1 = 6 rounds twice (each end) in the first phase and
//      again in the second: more latency than the histogram's two barriers it replaced. An
//      empty kernel in the same harness takes 3.1-3.2 us, so version 6's 10.1 us holds ~7 us of
//      the kernel's own path.
#include "kv_append.h"

#include <algorithm>
#include <cmath>

#include "kv_device.cuh"
#include "kvq/quant/pack.h"

namespace kvq::kernels {
namespace {

using namespace dev;

constexpr int kPrefillWarps = 8;
constexpr int kMaxPageRows = 1024;  // page_size * head_dim < 65536 and head_dim >= 64

template <int D, int B>
struct Tok {
  static constexpr int kNJ = D / 32;  // channels per lane
  static constexpr int kC = quant::PackedLayout<B>::kCodesPerWord;
  static constexpr int kRowCodes = (B == 3 && D == 64) ? 80 : D;
  static constexpr int kRowWords = (kRowCodes + kC - 1) / kC;
  static_assert(kRowWords <= 32, "one lane per key-row word");
};

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }

// Writes one key row from per-lane codes (channel lane + 32 j) through row_sm (padding zero).
template <int D, int B>
__device__ void store_k_row(uint8_t* row_sm, const int (&code)[Tok<D, B>::kNJ], uint32_t* dst) {
  using T = Tok<D, B>;
  const int lane = lane_id();
#pragma unroll
  for (int j = 0; j < T::kNJ; ++j)
    row_sm[kv_k_code_index(lane + 32 * j, D)] = static_cast<uint8_t>(code[j]);
  __syncwarp();
  if (lane < T::kRowWords) {
    uint32_t w = 0;
#pragma unroll
    for (int i = 0; i < T::kC; ++i) {
      const int idx = lane * T::kC + i;
      if (idx < T::kRowCodes) w |= uint32_t{row_sm[idx]} << (B * i);
    }
    dst[lane] = w;
  }
  __syncwarp();
}

// The (k+1)-th smallest (largest) of the warp's D values: k+1 rounds of argmin over (value,
// channel), each removing one element, so ties count as often as they occur (dense_range_ref).
template <int NJ>
__device__ float select_kth(const float (&x)[NJ], int k, bool largest) {
  const int lane = lane_id();
  uint32_t taken = 0;
  float result = 0.0f;
  for (int r = 0; r <= k; ++r) {
    float bv = largest ? -INFINITY : INFINITY;
    int bc = 1 << 30;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      if ((taken >> j) & 1u) continue;
      const bool better = largest ? x[j] > bv : x[j] < bv;
      if (better || bc == (1 << 30)) {
        bv = x[j];
        bc = lane + 32 * j;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(kFullMask, bv, o);
      const int oc = __shfl_xor_sync(kFullMask, bc, o);
      const bool better = largest ? ov > bv : ov < bv;
      if (better || (ov == bv && oc < bc)) {
        bv = ov;
        bc = oc;
      }
    }
    if (bc < (1 << 30) && (bc & 31) == lane) taken |= 1u << (bc >> 5);
    result = bv;
  }
  return result;
}

// The (k+1)-th smallest (largest) of the n values at(0), ..., at(n - 1) (lane l reads l,
// l + 32, ...): each round finds the next distinct value beyond the previous one and how often
// it occurs, until k + 1 are counted, so ties count as often as they occur (dense_range_ref).
// At most k + 1 rounds of two warp reductions; nothing is marked, so n is unbounded. For values
// per token over all KV heads, read from global memory (the token's other heads).
template <typename At>
__device__ float select_kth_token(At at, int n, int k, bool largest) {
  float prev = 0.0f, m = 0.0f;
  int counted = 0;
  for (int r = 0; r <= k; ++r) {
    m = largest ? -INFINITY : INFINITY;
    for (int i = lane_id(); i < n; i += 32) {
      const float x = at(i);
      if (r == 0 || (largest ? x < prev : x > prev)) m = largest ? fmaxf(m, x) : fminf(m, x);
    }
    m = largest ? warp_max(m) : warp_min(m);
    int same = 0;
    for (int i = lane_id(); i < n; i += 32) same += at(i) == m;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) same += __shfl_xor_sync(kFullMask, same, o);
    counted += same;
    if (counted >= k + 1) break;
    prev = m;
  }
  return m;
}

// Rank of flag (j) among the warp's flagged channels in channel order; *total = their count.
template <int NJ>
__device__ void flag_ranks(const bool (&flag)[NJ], int (&rank)[NJ], int* total) {
  const unsigned lt = (1u << lane_id()) - 1u;
  int base = 0;
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    const unsigned ballot = __ballot_sync(kFullMask, flag[j]);
    rank[j] = base + __popc(ballot & lt);
    base += __popc(ballot);
  }
  *total = base;
}

__device__ __forceinline__ uint32_t outlier_entry(int row, int ch, int head_dim, uint32_t bits) {
  return (static_cast<uint32_t>(row * head_dim + ch) << 16) | bits;
}

// KVQuant keys of one token: codes (row written), outlier candidates in kflag; k_lo, k_hi
// from load_k_range.
// The key range of the lane's channels of head h (lo[j], hi[j] for channel lane + 32 j).
template <int D, int B>
__device__ void load_k_range(const KvCacheView& c, int h, float (&lo)[Tok<D, B>::kNJ],
                             float (&hi)[Tok<D, B>::kNJ]) {
#pragma unroll
  for (int j = 0; j < Tok<D, B>::kNJ; ++j) {
    lo[j] = c.k_lo[h * D + lane_id() + 32 * j];
    hi[j] = c.k_hi[h * D + lane_id() + 32 * j];
  }
}

// KVQuant keys of one token of KV head h into the row's code words (through row_sm) and kflag
// (outside the channel's [k_lo, k_hi]); kl: load_levels' key levels and thresholds.
template <int D, int B>
__device__ void nuq_keys(const KvCacheView& c, uint8_t* sec, int row,
                         const float (&x)[Tok<D, B>::kNJ], const float (&k_lo)[Tok<D, B>::kNJ],
                         const float (&k_hi)[Tok<D, B>::kNJ], const float* kl, uint8_t* row_sm,
                         bool (&kflag)[Tok<D, B>::kNJ]) {
  using T = Tok<D, B>;
  int code[T::kNJ];
#pragma unroll
  for (int j = 0; j < T::kNJ; ++j) {
    const float lo = k_lo[j], hi = k_hi[j];
    // x * 0.5 is x / 2 rounded once, as the reference's division (and 1 instruction, not ~15).
    const float offset = __fmul_rn(__fadd_rn(lo, hi), 0.5f);
    const float scale = __fmul_rn(__fsub_rn(hi, lo), 0.5f);
    code[j] = scale == 0.0f
                  ? 0
                  : nuq_encode<1 << B>(__fdiv_rn(__fsub_rn(x[j], offset), scale), kl, kl + 16);
    kflag[j] = c.k_outliers && (x[j] < lo || x[j] > hi);
  }
  store_k_row<D, B>(
      row_sm, code,
      reinterpret_cast<uint32_t*>(sec + c.layout.off_k_codes) + int64_t{row} * T::kRowWords);
}

// Values per token over all KV heads, decode step: the token's dense range (the (k+1)-th smallest
// and largest of its n_kv_heads * head_dim values, ties counted as they occur and NaN left out,
// as select_kth_token finds them) and how many of its values each head has outside it, selected
// by every thread of the append block together. The values are fp16, so the order-preserving
// 16-bit key of each one is enough: a radix select of two 8-bit digits (the high digit in one
// histogram shared by both ends, the low digit in one per end), then one counting pass. The
// block selects it even when it holds only some of the heads (kTokenHeads): redundant across
// the sequence's blocks, but parallel across SMs, with no second launch and no global round trip.
// A block of 2W warps appends W <= kTokenHeads heads (warp w < W head w's values, warp W + w its
// keys); all 2W select, so that each thread holds at most kTokenPerThread keys: the selection's
// loops are unrolled for that many, and their length is most of the append's code (version 4).
constexpr int kTokenHeads = 8;    // heads appended per block, per-token values
constexpr int kWarpsPerHead = 2;  // warps per appended head, per-token values (2W for W heads)
constexpr int kTokenWarps = kWarpsPerHead * kTokenHeads;  // warps per block, per-token values
constexpr int kTokenPerThread = 16;  // keys per thread: n_kv_heads * head_dim <= 8192 here
constexpr int kMaxTokenHeads = kTokenWarps * 32 * kTokenPerThread / 64;  // head_dim >= 64
constexpr uint32_t kNoKey = 0xFFFFu;  // a NaN, or no value: above every other key

// The order-preserving key of an fp16 value: -0 and +0 are one value, as compared; NaN kNoKey.
__device__ __forceinline__ uint32_t half_key(uint32_t u) {
  if ((u & 0x7FFFu) > 0x7C00u) return kNoKey;
  if ((u & 0x7FFFu) == 0) return 0x8000u;
  return (u & 0x8000u) ? (~u & 0xFFFFu) : (u | 0x8000u);
}
__device__ __forceinline__ float key_value(uint32_t key) {
  return half_bits_float((key & 0x8000u) ? (key & 0x7FFFu) : (~key & 0xFFFFu));
}

struct TokenSelect {   // shared memory of select_token_high and select_token_low
  int hist[3][256];    // [0]: high digit of every value; [1 + e]: low digit under end e's high one
  uint32_t prefix[2];  // key of the lower end [0] and the upper end [1], high digit first
  int want[2];         // rank still sought among the values under prefix
  int ok;
  int counts[kMaxTokenHeads];  // per head: values outside [lo, hi]
};

struct TokenRange {
  float lo, hi;
  int begin;  // the head's first outlier entry in the row (after the heads before it); -1: none
};

// Clears s (every thread; a __syncthreads must follow before select_token_high).
__device__ void clear_token_select(TokenSelect& s, int n_heads) {
  for (int i = threadIdx.x; i < 3 * 256; i += blockDim.x) (&s.hist[0][0])[i] = 0;
  for (int i = threadIdx.x; i < n_heads; i += blockDim.x) s.counts[i] = 0;
  if (threadIdx.x == 0) s.prefix[0] = s.prefix[1] = 0;
}

// The digit scan of end e over hist (warp-wide, 8 bins per lane): the bin where the w-th value
// (1-based, ascending) lies joins prefix[e], want[e] becomes its rank within that bin.
__device__ void scan_digit(TokenSelect& s, const int* hist, int e, int w, int shift) {
  const int lane = threadIdx.x & 31;
  int local[8], sum = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) sum += (local[i] = hist[8 * lane + i]);
  int incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(kFullMask, incl, o);
    if (lane >= o) incl += y;
  }
  const int before = incl - sum;
  if (before < w && incl >= w) {  // this lane's bins hold the rank: the first that reaches it
    int acc = before, bin = 8 * lane + 7;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (acc + local[i] >= w) {
        bin = 8 * lane + i;
        break;
      }
      acc += local[i];
    }
    s.want[e] = w - acc;
    s.prefix[e] |= static_cast<uint32_t>(bin) << shift;
  }
}

// The selection's keys (value i = threadIdx.x + blockDim.x * j of the token in key[j], read
// through at(i); kNoKey past n_vals).
template <typename At>
__device__ void load_token_keys(uint32_t (&key)[kTokenPerThread], int n_vals, At at) {
  const int n_j = (n_vals + blockDim.x - 1) / blockDim.x;
#pragma unroll
  for (int j = 0; j < kTokenPerThread; ++j) {
    key[j] = kNoKey;
    const int i = threadIdx.x + blockDim.x * j;
    if (j < n_j && i < n_vals) key[j] = half_key(__half_as_ushort(at(i)));
  }
}

// Block-wide (every thread; s cleared and synchronized), the first half of the dense range of
// the n_vals values whose keys the threads hold (load_token_keys), k values beyond each end: the
// high digit of both ends. False (in every thread) where fewer than 2 (k + 1) values are not NaN
// (the warps then select alone).
__device__ bool select_token_high(const uint32_t (&key)[kTokenPerThread], int n_vals, int k,
                                  TokenSelect& s) {
  const int warp = threadIdx.x / 32, n_warps = blockDim.x / 32, lane = threadIdx.x & 31;
  const int n_j = (n_vals + blockDim.x - 1) / blockDim.x;
  // One histogram for both ends, the lanes of a warp with the same digit adding once (the
  // values of a token fall in a few exponents, so plain atomics would serialize).
#pragma unroll
  for (int j = 0; j < kTokenPerThread; ++j) {
    if (j >= n_j) break;
    const uint32_t d = key[j] == kNoKey ? 256u : key[j] >> 8;
    const unsigned peers = __match_any_sync(kFullMask, d);
    if (d < 256u && lane == __ffs(peers) - 1) atomicAdd(&s.hist[0][d], __popc(peers));
  }
  __syncthreads();
  for (int e = warp; e < 2; e += n_warps) {
    int total = 0;  // the values that are not NaN
    for (int i = lane; i < 256; i += 32) total += s.hist[0][i];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(kFullMask, total, o);
    if (e == 0 && lane == 0) s.ok = total >= 2 * (k + 1);
    if (total >= 2 * (k + 1)) scan_digit(s, s.hist[0], e, e == 0 ? k + 1 : total - k, 8);
  }
  __syncthreads();
  return s.ok != 0;
}

// The second half, after select_token_high returned true (every thread): the low digits, the
// range, and s.counts.
template <int D>
__device__ void select_token_low(const uint32_t (&key)[kTokenPerThread], int n_vals, TokenSelect& s,
                                 float* lo, float* hi) {
  const int warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const int n_j = (n_vals + blockDim.x - 1) / blockDim.x;
  const uint32_t p0 = s.prefix[0] >> 8, p1 = s.prefix[1] >> 8;
#pragma unroll
  for (int j = 0; j < kTokenPerThread; ++j) {
    if (j >= n_j) break;
    if (key[j] == kNoKey) continue;
    const uint32_t d = key[j] >> 8;
    if (d == p0) atomicAdd(&s.hist[1][key[j] & 255u], 1);
    if (d == p1) atomicAdd(&s.hist[2][key[j] & 255u], 1);
  }
  __syncthreads();
  for (int e = warp; e < 2; e += n_warps) {
    const int w = s.want[e];
    __syncwarp();  // every lane has read want[e] before one of them rewrites it
    scan_digit(s, s.hist[1 + e], e, w, 0);
  }
  __syncthreads();
  const uint32_t key_lo = s.prefix[0], key_hi = s.prefix[1];
  // Each head's values outside [lo, hi] (NaN is neither below nor above).
#pragma unroll
  for (int j = 0; j < kTokenPerThread; ++j) {
    if (j >= n_j) break;
    const int i = threadIdx.x + blockDim.x * j;
    if (key[j] != kNoKey && (key[j] < key_lo || key[j] > key_hi)) atomicAdd(&s.counts[i / D], 1);
  }
  __syncthreads();
  *lo = key_value(key_lo);
  *hi = key_value(key_hi);
}

// KVQuant values of one token of KV head h in a page (head section `sec`): codes returned, the
// head's outliers written to the row's entries in the token section and indexed in the head's
// v_index, the scale/offset written (by head 0 alone for values per token over all heads). x: the
// head's values (channel lane + 32 j); token_v(i): value i = head * D + channel of the token over
// all KV heads, read only for values per token over all heads (c.v_token), where the dense range
// covers the whole token, every head computes the same one, and head h's entries start after the
// outliers of heads 0 .. h-1 (counted from token_v; taken from `range` where the append block
// selected them already). vl: load_levels' value levels and thresholds.
template <int D, int B, typename TokenV>
__device__ void nuq_values(const KvCacheView& c, int64_t page, int h, uint8_t* sec, int row,
                           const float (&x)[Tok<D, B>::kNJ], const uint16_t (&bits)[Tok<D, B>::kNJ],
                           const float* vl, TokenV token_v, int (&code)[Tok<D, B>::kNJ],
                           TokenRange range = {0.0f, 0.0f, -1}) {
  using T = Tok<D, B>;
  const KvLayout& L = c.layout;
  const int lane = lane_id();
  const int slots = kv_v_head_slots(L);  // 2k of the value vector
  float lo, hi;
  int begin;
  if (c.v_token && range.begin >= 0) {  // the block's selection (select_token_high, _low)
    lo = range.lo;
    hi = range.hi;
    begin = range.begin;
  } else if (c.v_token) {
    lo = select_kth_token(token_v, c.n_kv_heads * D, slots / 2, false);
    hi = select_kth_token(token_v, c.n_kv_heads * D, slots / 2, true);
    int before = 0;
    for (int i = lane; i < h * D; i += 32) {
      const float y = token_v(i);
      before += (y < lo || y > hi) ? 1 : 0;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(kFullMask, before, o);
    begin = before;
  } else {
    lo = select_kth(x, slots / 2, false);
    hi = select_kth(x, slots / 2, true);
    begin = h * slots;
  }
  const __half offset16 = __float2half_rn(__fmul_rn(__fadd_rn(lo, hi), 0.5f));
  const __half scale16 = __float2half_rn(__fmul_rn(__fsub_rn(hi, lo), 0.5f));
  const float offset = __half2float(offset16), scale = __half2float(scale16);
  bool flag[T::kNJ];
#pragma unroll
  for (int j = 0; j < T::kNJ; ++j) {
    code[j] = scale == 0.0f
                  ? 0
                  : nuq_encode<1 << B>(__fdiv_rn(__fsub_rn(x[j], offset), scale), vl, vl + 16);
    flag[j] = x[j] < lo || x[j] > hi;
  }
  int rank[T::kNJ], total;
  flag_ranks(flag, rank, &total);
  // At most k values lie strictly beyond each side of the token's dense range, so the row
  // holds them all; the bound only guards the layout.
  const int room = c.v_token ? L.v_out_per_row - begin : slots;
  uint8_t* tok = c.token_section(page);
  uint32_t* entries =
      reinterpret_cast<uint32_t*>(tok + L.off_v_out) + int64_t{row} * L.v_out_per_row + begin;
#pragma unroll
  for (int j = 0; j < T::kNJ; ++j) {
    if (flag[j] && rank[j] < room) entries[rank[j]] = outlier_entry(row, lane + 32 * j, D, bits[j]);
  }
  if (lane == 0) {
    reinterpret_cast<uint32_t*>(sec + L.off_v_index)[row] =
        static_cast<uint32_t>(begin) | (static_cast<uint32_t>(min(total, room)) << 16);
    if (!c.v_token || h == 0) {
      reinterpret_cast<uint32_t*>(tok +
                                  L.off_v_scales)[int64_t{c.v_token ? 0 : h} * L.page_size + row] =
          uint32_t{__half_as_ushort(scale16)} | (uint32_t{__half_as_ushort(offset16)} << 16);
    }
  }
}

// KIVI: quantizes G tokens (group rows row0 .. row0 + G - 1 of the page) read through row(i).
template <int D, int B, typename RowK, typename RowV>
__device__ void kivi_group(const KvCacheView& c, uint8_t* sec, int row0, RowK krow, RowV vrow,
                           uint8_t* row_sm) {
  using T = Tok<D, B>;
  const int lane = lane_id();
  const int G = c.layout.group;
  const float max_code = static_cast<float>((1 << B) - 1);
  float sf[T::kNJ], zf[T::kNJ];
  __half s16[T::kNJ], z16[T::kNJ];
#pragma unroll
  for (int j = 0; j < T::kNJ; ++j) {  // keys: min-max per channel over the group
    float mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < G; ++i) {
      const float x = __half2float(krow(i)[lane + 32 * j]);
      mn = fminf(mn, x);
      mx = fmaxf(mx, x);
    }
    s16[j] = __float2half_rn(__fdiv_rn(__fsub_rn(mx, mn), max_code));
    z16[j] = __float2half_rn(mn);
    sf[j] = __half2float(s16[j]);
    zf[j] = __half2float(z16[j]);
  }
  uint32_t* kp =
      reinterpret_cast<uint32_t*>(sec + c.layout.off_k_params) + int64_t{row0 / G} * (D / 2) * 2;
#pragma unroll
  for (int j = 0; j < T::kNJ / 2; ++j) {  // pair g = lane + 32 j with channel g + D/2
    const int g = lane + 32 * j;
    kp[2 * g] = uint32_t{__half_as_ushort(s16[j])} |
                (uint32_t{__half_as_ushort(s16[j + T::kNJ / 2])} << 16);
    kp[2 * g + 1] = uint32_t{__half_as_ushort(z16[j])} |
                    (uint32_t{__half_as_ushort(z16[j + T::kNJ / 2])} << 16);
  }
  for (int i = 0; i < G; ++i) {
    int code[T::kNJ];
#pragma unroll
    for (int j = 0; j < T::kNJ; ++j) {
      code[j] = uniform_encode(__half2float(krow(i)[lane + 32 * j]), sf[j], zf[j], B);
    }
    store_k_row<D, B>(
        row_sm, code,
        reinterpret_cast<uint32_t*>(sec + c.layout.off_k_codes) + int64_t{row0 + i} * T::kRowWords);
  }
  // Values: per token, groups of G channels (slots j of G / 32 consecutive j).
  const int jg = G / 32;
  uint32_t vw[T::kNJ] = {};
  uint32_t* vp = reinterpret_cast<uint32_t*>(sec + c.layout.off_v_params);
  for (int i = 0; i < G; ++i) {
    float x[T::kNJ];
#pragma unroll
    for (int j = 0; j < T::kNJ; ++j) x[j] = __half2float(vrow(i)[lane + 32 * j]);
    const int row = row0 + i;
    for (int cg = 0; cg < D / G; ++cg) {
      float mn = INFINITY, mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        if (j / jg != cg) continue;
        mn = fminf(mn, x[j]);
        mx = fmaxf(mx, x[j]);
      }
      mn = warp_min(mn);
      mx = warp_max(mx);
      const __half vs = __float2half_rn(__fdiv_rn(__fsub_rn(mx, mn), max_code));
      const __half vz = __float2half_rn(mn);
      if (lane == 0) {
        vp[int64_t{row} * (D / G) + cg] =
            uint32_t{__half_as_ushort(vs)} | (uint32_t{__half_as_ushort(vz)} << 16);
      }
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        if (j / jg != cg) continue;
        const int code = uniform_encode(x[j], __half2float(vs), __half2float(vz), B);
        vw[j] |= static_cast<uint32_t>(code) << (B * (row % T::kC));
      }
    }
    if (row % T::kC == T::kC - 1) {
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        reinterpret_cast<uint32_t*>(
            sec +
            c.layout.off_v_codes)[int64_t{lane + 32 * j} * c.layout.v_row_words + row / T::kC] =
            vw[j];
        vw[j] = 0;
      }
    }
  }
}

// The key and value levels into kl[0, 16) and vl[0, 16), and nuq_encode's thresholds between
// levels i - 1 and i into kl[16 + i] and vl[16 + i].
template <int D>
__device__ void load_levels(const KvCacheView& c, bool kivi, float* kl, float* vl) {
  const unsigned i = threadIdx.x, n = 1u << c.layout.bits;
  if (!kivi && i < 16) {
    kl[i] = i < n ? c.k_levels[i] : 0.0f;
    vl[i] = i < n ? c.v_levels[i] : 0.0f;
    const bool between = i >= 1 && i < n;
    kl[16 + i] = between ? nuq_threshold(c.k_levels[i - 1], c.k_levels[i]) : 0.0f;
    vl[16 + i] = between ? nuq_threshold(c.v_levels[i - 1], c.v_levels[i]) : 0.0f;
  }
}

template <int D, int B, bool kKivi>
__global__ void __launch_bounds__(kTokenWarps * 32, 1)
    kv_append_kernel(KvCacheView c, const __half* __restrict__ k, const __half* __restrict__ v,
                     int32_t* __restrict__ seq_len_out) {
  using T = Tok<D, B>;
  __shared__ float kl[32], vl[32];  // load_levels
  __shared__ uint8_t row_sm[kTokenWarps][128];
  __shared__ TokenSelect sel;
  const int lane = lane_id(), warp = threadIdx.x / 32;
  const int b = blockIdx.x, H = c.n_kv_heads;
  // One warp a head, or (per-token values) 2W warps for W heads: warp w < W appends head w's
  // values and warp W + w its keys, after all of them select the token's range together.
  const bool split = blockDim.x != 32;
  const int heads_per_block = split ? static_cast<int>(blockDim.x / (32 * kWarpsPerHead)) : 1;
  const int h = blockIdx.y * heads_per_block + warp % heads_per_block;  // this warp's head
  // False for the last block's spare warps (the launch gives every warp a role: blocks of 32 or
  // of 32 * kWarpsPerHead * heads_per_block threads).
  const bool has_head = h < H;
  const bool do_values = has_head && (!split || warp < heads_per_block);
  const bool do_keys = has_head && (!split || warp >= heads_per_block);
  const int hw = has_head ? h : 0;  // spare warps write nothing; their pointers stay in bounds
  // Per-token values: every thread of the block takes part in the selection, whichever heads
  // its warp appends; past the keys' room the warps select alone (select_kth_token).
  const int n_vals = H * D;
  const bool block_select = !kKivi && c.v_token && n_vals <= blockDim.x * kTokenPerThread;
  // Everything that does not depend on the length is loaded first, so that the round trips
  // overlap: the new token, the key range, the levels.
  const __half* ks = k + (int64_t{b} * H + hw) * D;
  const __half* vs = v + (int64_t{b} * H + hw) * D;
  uint16_t k_in[T::kNJ] = {}, v_in[T::kNJ] = {};
  float k_lo[T::kNJ] = {}, k_hi[T::kNJ] = {};
  if (do_keys) {
#pragma unroll
    for (int j = 0; j < T::kNJ; ++j) k_in[j] = __half_as_ushort(ks[lane + 32 * j]);
    if (!kKivi) load_k_range<D, B>(c, h, k_lo, k_hi);
  }
  if (do_values) {
#pragma unroll
    for (int j = 0; j < T::kNJ; ++j) v_in[j] = __half_as_ushort(vs[lane + 32 * j]);
  }
  load_levels<D>(c, kKivi, kl, vl);
  for (int i = lane; i < 128; i += 32) row_sm[warp][i] = 0;
  if (block_select) clear_token_select(sel, H);
  // With no recent window the token that leaves is the new one (t = n below), so the
  // selection's keys load with the length, and its first half runs while the page table loads.
  const bool keys_first = block_select && c.n_recent == 0;
  const __half* v_all = v + int64_t{b} * H * D;
  uint32_t key[kTokenPerThread];
  if (keys_first) load_token_keys(key, n_vals, [&](int i) { return v_all[i]; });
  const int64_t n = c.seq_len[b];
  // seq_len_out is another buffer than c.seq_len, so no block of this launch reads it.
  if (seq_len_out != nullptr && blockIdx.y == 0 && threadIdx.x == 0) {
    seq_len_out[b] = static_cast<int32_t>(n + 1);
  }
  __syncthreads();  // the levels (warp 0 loads them), row_sm, sel
  const int64_t u0 = c.n_quant(n);
  const bool quantize = c.n_quant(n + 1) != u0;  // the same for the whole block
  __half* kd = n < c.n_sink ? c.sink_row(c.sink_k, b, hw, n) : c.ring_row(c.ring_k, b, hw, n);
  __half* vd = n < c.n_sink ? c.sink_row(c.sink_v, b, hw, n) : c.ring_row(c.ring_v, b, hw, n);
  // The new token's fp16 row: each role writes its own.
  auto write_rows = [&] {
#pragma unroll
    for (int j = 0; j < T::kNJ; ++j) {
      if (do_keys) kd[lane + 32 * j] = __ushort_as_half(k_in[j]);
      if (do_values) vd[lane + 32 * j] = __ushort_as_half(v_in[j]);
    }
  };
  if (kKivi || !quantize) {
    write_rows();
    __syncwarp();
    if (!quantize) return;
  }
  if constexpr (kKivi) {
    // The window's oldest flush tokens (the new one last) are all in the ring: quantize them in
    // groups of G; a group never straddles a page (page_size and u0 are multiples of G).
    if (!has_head) return;
    for (int g0 = 0; g0 < c.flush; g0 += c.layout.group) {
      int row;
      uint8_t* sec = quant_section(c, b, h, u0 + g0, &row);
      const int64_t t0 = c.n_sink + u0 + g0;
      kivi_group<D, B>(
          c, sec, row, [&](int i) { return c.ring_row(c.ring_k, b, h, t0 + i); },
          [&](int i) { return c.ring_row(c.ring_v, b, h, t0 + i); }, row_sm[warp]);
      __syncwarp();
    }
  } else {
    int row;
    const int64_t page = quant_page(c, b, u0, &row);
    // Token t leaves the window (G = 1, so n >= n_sink and t = n - n_recent). It is the new
    // token itself when n_recent = 0; else it sits in another ring slot than the new token
    // (ring_size = n_recent + 1 > n - t), read before the new token is written.
    const int64_t t = c.n_sink + u0;
    // The token's values of KV head hh: the input or its ring rows (values per token over all
    // heads read every head's).
    auto token_v = [&](int i) {
      const int hh = i / D;
      return __half2float(t == n ? v_all[i] : c.ring_row(c.ring_v, b, hh, t)[i % D]);
    };
    if (block_select && !keys_first) {  // the keys load with the page table and ring rows
      const __half* ring_t = c.ring_v + (int64_t{b} * H * c.ring_size + c.ring_slot(t)) * D;
      load_token_keys(key, n_vals, [&](int i) {  // head i / D, channel i % D
        return t == n ? v_all[i] : ring_t[int64_t{i / D} * c.ring_size * D + i % D];
      });
    }
    uint16_t kb[T::kNJ] = {}, vb[T::kNJ] = {};
    if (t == n) {
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        kb[j] = k_in[j];
        vb[j] = v_in[j];
      }
    } else {
      const __half* kr = c.ring_row(c.ring_k, b, hw, t);
      const __half* vr = c.ring_row(c.ring_v, b, hw, t);
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        if (do_keys) kb[j] = __half_as_ushort(kr[lane + 32 * j]);
        if (do_values) vb[j] = __half_as_ushort(vr[lane + 32 * j]);
      }
    }
    write_rows();
    const int k_sel = kv_v_head_slots(c.layout) / 2;
    bool have_range = keys_first && select_token_high(key, n_vals, k_sel, sel);
    // The head's key-outlier count, read now (another part of the section than what nuq_keys
    // writes), so that its round trip overlaps the selection.
    uint8_t* sec = c.head_section(page, hw);
    int32_t* count_p = reinterpret_cast<int32_t*>(sec + c.layout.off_header);
    uint16_t* begin_p = reinterpret_cast<uint16_t*>(sec + c.layout.off_header + 4);
    const int count = do_keys && row != 0 ? *count_p : 0;
    if (block_select && !keys_first) have_range = select_token_high(key, n_vals, k_sel, sel);
    TokenRange range = {0.0f, 0.0f, -1};
    if (have_range) {  // the same in every thread of the block
      select_token_low<D>(key, n_vals, sel, &range.lo, &range.hi);
      if (do_values) {
        int before = 0;
        for (int i = lane; i < h; i += 32) before += sel.counts[i];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) before += __shfl_xor_sync(kFullMask, before, o);
        range.begin = before;
      }
    }
    if (do_values) {  // after the block's last __syncthreads
      float xv[T::kNJ];
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) xv[j] = half_bits_float(vb[j]);
      int code[T::kNJ];
      nuq_values<D, B>(c, page, h, sec, row, xv, vb, vl, token_v, code, range);
      // The first token of a word writes it whole (clearing what a page's earlier use left);
      // the others OR their field in without reading the word back (RED: no round trip).
      uint32_t* vwords = reinterpret_cast<uint32_t*>(sec + c.layout.off_v_codes) + row / T::kC;
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        uint32_t* w = vwords + int64_t{lane + 32 * j} * c.layout.v_row_words;
        const uint32_t field = static_cast<uint32_t>(code[j]) << (B * (row % T::kC));
        if (row % T::kC == 0) {
          *w = field;
        } else {
          atomicOr(w, field);
        }
      }
    }
    if (do_keys) {
      float xk[T::kNJ];
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) xk[j] = half_bits_float(kb[j]);
      bool kflag[T::kNJ];
      nuq_keys<D, B>(c, sec, row, xk, k_lo, k_hi, kl, row_sm[warp], kflag);
      // Key outliers go after the page's earlier ones; a full page clamps the rest.
      int rank[T::kNJ], total;
      flag_ranks(kflag, rank, &total);
      const int cap = c.layout.k_out_capacity;
      uint32_t* out = reinterpret_cast<uint32_t*>(sec + c.layout.off_k_out);
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        if (kflag[j] && count + rank[j] < cap)
          out[count + rank[j]] = outlier_entry(row, lane + 32 * j, D, kb[j]);
      }
      const int kept = min(total, cap - count);
      __syncwarp();
      if (lane == 0) {
        if (row % c.layout.block_tokens == 0)
          begin_p[row / c.layout.block_tokens] = static_cast<uint16_t>(count);
        *count_p = count + kept;
        if (total > kept) atomicAdd(c.k_overflow, static_cast<unsigned long long>(total - kept));
      }
    }
  }
}

template <int D, int B, bool kKivi>
__global__ void __launch_bounds__(kPrefillWarps * 32)
    kv_prefill_kernel(KvCacheView c, int64_t max_tokens, int64_t max_pages,
                      const int32_t* __restrict__ lengths, const __half* __restrict__ k,
                      const __half* __restrict__ v) {
  using T = Tok<D, B>;
  __shared__ float kl[32], vl[32];  // load_levels
  __shared__ uint8_t row_sm[kPrefillWarps][128];
  __shared__ int count_sm[kMaxPageRows + 1];
  const int lane = lane_id(), warp = threadIdx.x / 32;
  const int b = blockIdx.z, h = blockIdx.y;
  const int64_t n = lengths[b];
  const int64_t nq = c.n_quant(n);
  const int H = c.n_kv_heads;
  auto in_k = [&](int64_t t) { return k + ((b * max_tokens + t) * H + h) * D; };
  auto in_v = [&](int64_t t) { return v + ((b * max_tokens + t) * H + h) * D; };
  if (blockIdx.x == max_pages) {  // fp16 tokens: sinks and the recent window
    const int64_t n_sink = n < c.n_sink ? n : c.n_sink;
    const int64_t n_fp16 = n_sink + (n - c.n_sink - nq > 0 ? n - c.n_sink - nq : 0);
    for (int64_t i = threadIdx.x; i < n_fp16 * D; i += blockDim.x) {
      const int64_t r = i / D, ch = i % D;
      const int64_t t = r < n_sink ? r : c.n_sink + nq + (r - n_sink);
      __half* kd = t < c.n_sink ? c.sink_row(c.sink_k, b, h, t) : c.ring_row(c.ring_k, b, h, t);
      __half* vd = t < c.n_sink ? c.sink_row(c.sink_v, b, h, t) : c.ring_row(c.ring_v, b, h, t);
      kd[ch] = in_k(t)[ch];
      vd[ch] = in_v(t)[ch];
    }
    if (h == 0 && threadIdx.x == 0) c.seq_len[b] = static_cast<int32_t>(n);
    return;
  }
  const int64_t p0 = int64_t{blockIdx.x} * c.layout.page_size;
  const int rows = static_cast<int>(min(int64_t{c.layout.page_size}, nq - p0));
  if (rows <= 0) return;
  load_levels<D>(c, kKivi, kl, vl);
  for (int i = threadIdx.x; i < kPrefillWarps * 128; i += blockDim.x) (&row_sm[0][0])[i] = 0;
  __syncthreads();
  int row_any;
  const int64_t page = quant_page(c, b, p0, &row_any);
  uint8_t* sec = c.head_section(page, h);
  const int64_t t_base = c.n_sink + p0;
  if constexpr (kKivi) {
    const int G = c.layout.group;
    for (int g = warp; g * G < rows; g += kPrefillWarps) {
      kivi_group<D, B>(
          c, sec, g * G, [&](int i) { return in_k(t_base + g * G + i); },
          [&](int i) { return in_v(t_base + g * G + i); }, row_sm[warp]);
    }
    return;
  } else {
    // Phase 1: warp w takes the tokens of value words w, w + 8, ...
    float k_lo[T::kNJ], k_hi[T::kNJ];
    load_k_range<D, B>(c, h, k_lo, k_hi);
    for (int wi = warp; wi * T::kC < rows; wi += kPrefillWarps) {
      uint32_t vw[T::kNJ] = {};
      for (int row = wi * T::kC; row < min(rows, (wi + 1) * T::kC); ++row) {
        float xk[T::kNJ], xv[T::kNJ];
        uint16_t vb[T::kNJ];
#pragma unroll
        for (int j = 0; j < T::kNJ; ++j) {
          xk[j] = __half2float(in_k(t_base + row)[lane + 32 * j]);
          vb[j] = __half_as_ushort(in_v(t_base + row)[lane + 32 * j]);
          xv[j] = half_bits_float(vb[j]);
        }
        bool kflag[T::kNJ];
        nuq_keys<D, B>(c, sec, row, xk, k_lo, k_hi, kl, row_sm[warp], kflag);
        const __half* v_all = v + (b * max_tokens + t_base + row) * H * D;
        int code[T::kNJ];
        nuq_values<D, B>(
            c, page, h, sec, row, xv, vb, vl, [&](int i) { return __half2float(v_all[i]); }, code);
#pragma unroll
        for (int j = 0; j < T::kNJ; ++j)
          vw[j] |= static_cast<uint32_t>(code[j]) << (B * (row % T::kC));
        int rank[T::kNJ], total;
        flag_ranks(kflag, rank, &total);
        if (lane == 0) count_sm[row] = total;
      }
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        reinterpret_cast<uint32_t*>(
            sec + c.layout.off_v_codes)[int64_t{lane + 32 * j} * c.layout.v_row_words + wi] = vw[j];
      }
    }
    __syncthreads();
    // Phase 2: exclusive scan of the per-token counts (warp 0), the header.
    const int cap = c.layout.k_out_capacity;
    if (warp == 0) {
      const int per = (rows + 31) / 32;
      int local = 0;
      for (int i = 0; i < per; ++i) local += lane * per + i < rows ? count_sm[lane * per + i] : 0;
      int incl = local;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(kFullMask, incl, o);
        if (lane >= o) incl += y;
      }
      int run = incl - local;
      for (int i = 0; i < per; ++i) {
        const int r = lane * per + i;
        if (r < rows) {
          const int cnt = count_sm[r];
          count_sm[r] = run;
          run += cnt;
        }
      }
      const int total = __shfl_sync(kFullMask, incl, 31);
      __syncwarp();
      if (lane == 0) {
        *reinterpret_cast<int32_t*>(sec + c.layout.off_header) = min(total, cap);
        if (total > cap) atomicAdd(c.k_overflow, static_cast<unsigned long long>(total - cap));
      }
      uint16_t* begin_p = reinterpret_cast<uint16_t*>(sec + c.layout.off_header + 4);
      for (int bi = lane; bi * c.layout.block_tokens < rows; bi += 32) {
        begin_p[bi] = static_cast<uint16_t>(min(count_sm[bi * c.layout.block_tokens], cap));
      }
    }
    __syncthreads();
    // Phase 3: the key outliers, each token's at its scanned offset.
    uint32_t* out = reinterpret_cast<uint32_t*>(sec + c.layout.off_k_out);
    for (int row = warp; row < rows; row += kPrefillWarps) {
      bool kflag[T::kNJ];
      uint16_t kb[T::kNJ];
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        const int ch = lane + 32 * j;
        kb[j] = __half_as_ushort(in_k(t_base + row)[ch]);
        const float x = half_bits_float(kb[j]);
        kflag[j] = c.k_outliers && (x < c.k_lo[h * D + ch] || x > c.k_hi[h * D + ch]);
      }
      int rank[T::kNJ], total;
      flag_ranks(kflag, rank, &total);
      const int base = count_sm[row];
#pragma unroll
      for (int j = 0; j < T::kNJ; ++j) {
        if (kflag[j] && base + rank[j] < cap)
          out[base + rank[j]] = outlier_entry(row, lane + 32 * j, D, kb[j]);
      }
    }
  }
}

using AppendFn = void (*)(KvCacheView, const __half*, const __half*, int32_t*);
using PrefillFn = void (*)(KvCacheView, int64_t, int64_t, const int32_t*, const __half*,
                           const __half*);

template <int D, int B, bool kKivi>
void pick(AppendFn* a, PrefillFn* p) {
  *a = kv_append_kernel<D, B, kKivi>;
  *p = kv_prefill_kernel<D, B, kKivi>;
}

// The instantiation for the cache's method, bits and head_dim; false if none was built.
bool dispatch(const KvLayout& l, AppendFn* a, PrefillFn* p) {
  const bool kivi = l.method == KvMethod::kKivi;
  const int key = (kivi ? 100 : 0) + l.bits * 1000 + l.head_dim;
  switch (key) {
    case 2064: pick<64, 2, false>(a, p); return true;
    case 2128: pick<128, 2, false>(a, p); return true;
    case 3064: pick<64, 3, false>(a, p); return true;
    case 3128: pick<128, 3, false>(a, p); return true;
    case 4064: pick<64, 4, false>(a, p); return true;
    case 4128: pick<128, 4, false>(a, p); return true;
    case 2164: pick<64, 2, true>(a, p); return true;
    case 2228: pick<128, 2, true>(a, p); return true;
    case 4164: pick<64, 4, true>(a, p); return true;
    case 4228: pick<128, 4, true>(a, p); return true;
    default: return false;  // supported: bits 2, 3, 4 (KIVI 2, 4) x head_dim 64, 128
  }
}

bool view_ok(const KvCacheView& c) {
  return c.pool && c.page_table && c.seq_len && c.ring_k && c.ring_v &&
         (c.n_sink == 0 || (c.sink_k && c.sink_v)) &&
         (c.layout.method == KvMethod::kKivi || (c.k_levels && c.v_levels && c.k_lo && c.k_hi)) &&
         c.k_overflow;
}

}  // namespace

cudaError_t launch_kv_append(const KvCacheView& cache, int batch, const __half* __restrict__ k,
                             const __half* __restrict__ v, int32_t* __restrict__ seq_len_out,
                             cudaStream_t stream) {
  if (batch < 0 || !view_ok(cache)) return cudaErrorInvalidValue;
  if (batch == 0) return cudaSuccess;
  if (!k || !v || !seq_len_out || seq_len_out == cache.seq_len) return cudaErrorInvalidValue;
  AppendFn append;
  PrefillFn prefill;
  if (!dispatch(cache.layout, &append, &prefill)) return cudaErrorNotSupported;
  // Per-token values: kTokenHeads heads per block of twice as many warps, which selects the
  // token's range itself.
  const bool token = cache.layout.method == KvMethod::kNuq && cache.v_token;
  const int heads = token ? std::min(cache.n_kv_heads, kTokenHeads) : 1;
  append<<<dim3(batch, (cache.n_kv_heads + heads - 1) / heads),
           (token ? 32 * kWarpsPerHead : 32) * heads, 0, stream>>>(cache, k, v, seq_len_out);
  return cudaGetLastError();
}

cudaError_t launch_kv_prefill(const KvCacheView& cache, int batch, int64_t max_tokens,
                              int64_t max_pages, const int32_t* __restrict__ lengths,
                              const __half* __restrict__ k, const __half* __restrict__ v,
                              cudaStream_t stream) {
  if (batch < 0 || max_tokens < 0 || max_pages < 0 || max_pages > 65534 || !view_ok(cache)) {
    return cudaErrorInvalidValue;
  }
  if (batch == 0) return cudaSuccess;
  if (!lengths || (max_tokens > 0 && (!k || !v))) return cudaErrorInvalidValue;
  AppendFn append;
  PrefillFn prefill;
  if (!dispatch(cache.layout, &append, &prefill)) return cudaErrorNotSupported;
  prefill<<<dim3(static_cast<unsigned>(max_pages + 1), cache.n_kv_heads, batch), kPrefillWarps * 32,
            0, stream>>>(cache, max_tokens, max_pages, lengths, k, v);
  return cudaGetLastError();
}

}  // namespace kvq::kernels
