// The score probe (kv_score_probe.h): v3's phase 1 and key outliers (kv_attention_v3.cuh) with
// what the budget asks of a score warp, and nothing of the value side:
// - the key constants (3 half2 per pair slot) are loaded into registers once per split, not
//   reread each block (v3 rereads them: phase 2 needs the registers);
// - a block's key rows and header chunks are copied by cp.async into one of two buffers while
//   the block before computes (v3: one buffer, copied during phase 2);
// - no accumulators, so nothing goes through shared memory around the scores;
// - each block's scores end in the running maximum and sum of exp2, as in v3's phase 2 (same
//   order of operations, so the part_ml it writes matches v3's to rounding).
// Everything else (lookups, RoPE constants, the MMAs, the key outliers by sincos and shared
// atomics) is v3's code, so the time measured is that of v3's key side run as a score warp: the
// groups through v3::group_scores itself, the key outliers as a copy of v3's loop (one shared
// function for it changed v3's SASS; bench/kernels_notes.md).
#include "kv_score_probe.h"

#include <algorithm>
#include <cstdint>

#include "kv_attention_v3.cuh"

namespace kvq::kernels {
namespace probe {

using namespace dev;
using tc::a_slot_of;
using tc::bits_h2;
using tc::block_section;
using tc::Cursor;
using tc::pack_h2;
using tc::pair_of;
using tc::query_phases;
using tc::Shape;
using v3::group_scores;
using v3::key_outlier_scores;
using v3::Smem;

// One warp's shared memory: the query's A fragments (v3's rows, two buffers by group parity),
// its phases at the block's start (key outliers), the block's scores, the page-id window, and
// two buffers of key rows and header chunks.
template <int D, int B, int NQ>
struct WarpSmem {
  using S = Shape<D, B>;
  using V3 = v3::WarpSmem<D, B, NQ>;
  static constexpr int kSlotBytes = V3::kSlotBytes;
  static constexpr int kARow = V3::kARow;
  static constexpr int kA = 0;                                   // [2][NQ][4][kARow]
  static constexpr int kPb = kA + V3::kABytes;                   // [NQ][D/2] float2
  static constexpr int kSc = (kPb + NQ * D * 4 + 15) / 16 * 16;  // [NQ][kBT] float
  static constexpr int kPages = kSc + NQ * S::kBT * 4;           // [32] int
  static constexpr int kKeyBytes = S::kBT * S::kWK * 4;          // a block's key rows
  static constexpr int kKeys = kPages + 32 * 4;                  // [2][kKeyBytes]
  static constexpr int kHdr = kKeys + 2 * kKeyBytes;             // [2][3][16] bytes
  static constexpr int kBytes = kHdr + 2 * 48;
  static_assert(kKeys % 16 == 0 && kKeyBytes % 16 == 0 && kHdr % 16 == 0, "16-byte copies");
};

template <int NQ>
constexpr int kWarps = NQ == 4 ? 7 : 8;  // v3's blocks (kWarpsOf at D = 128)

template <int D, int B, int NQ>
__global__ void __launch_bounds__(kWarps<NQ> * 32, 2) kv_score_probe_kernel(KvAttentionParams p) {
  using S = Shape<D, B>;
  using SM = Smem<D, B>;
  using WS = WarpSmem<D, B, NQ>;
  constexpr int kGroups = S::kBT / 8;
  static_assert(kGroups % 2 == 0, "groups run in pairs (two A buffers)");
  extern __shared__ __align__(16) uint8_t smem[];
  const KvCacheView& c = p.cache;
  const KvLayout& L = c.layout;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gq = lane >> 2, r = lane & 3;
  const int b = blockIdx.z, h = blockIdx.y;

  // Block-wide tables at v3's offsets (only the key table and key constants are used).
  const uint32_t w_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const uint32_t pad = SM::pad(w_addr);
  uint32_t dyn_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(dyn_bytes));
  if (SM::kKcBytes + pad + SM::kWarp0 + blockDim.x / 32 * WS::kBytes > dyn_bytes) __trap();
  uint8_t* sa = smem + SM::kKcBytes + pad;
  uint32_t* kc = reinterpret_cast<uint32_t*>(sa - SM::kKcBytes);
  const uint32_t a_addr = w_addr + SM::kKcBytes + pad;
  uint32_t* lut_k = reinterpret_cast<uint32_t*>(sa + SM::kLutK);
  float* lev = reinterpret_cast<float*>(sa + SM::kLev);
  float* kso = reinterpret_cast<float*>(sa + SM::kKso);
  float* thetas = reinterpret_cast<float*>(sa + SM::kThetas);
  for (int i = threadIdx.x; i < S::kLutEntries * S::kLutCopies; i += blockDim.x) {
    const int e = i / S::kLutCopies;
    lut_k[i] = pack_h2(c.k_levels[e & S::kCodeMask], c.k_levels[e >> B]);
  }
  if (threadIdx.x < 16) lev[threadIdx.x] = threadIdx.x < (1u << B) ? c.k_levels[threadIdx.x] : 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    const float lo = c.k_lo[h * D + i], hi = c.k_hi[h * D + i];
    kso[i] = (hi - lo) / 2.0f;
    kso[D + i] = (lo + hi) / 2.0f;
    if (i < D / 2) thetas[i] = p.inv_freq[i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < S::kNP * 32; i += blockDim.x) {  // v3's key constants
    const int l = i & 31, m = i >> 5;
    const int g = pair_of<D, B>(l & 3, m);
    float2 e = make_float2(0.0f, 0.0f), s = e, o = e;
    if (g < D / 2) {
      e = rope_phase(static_cast<double>(l >> 2), p.inv_freq[g]);
      s = make_float2(kso[g], kso[g + D / 2]);
      o = make_float2(kso[D + g], kso[D + g + D / 2]);
    }
    kc[(3 * m + 0) * 32 + l] = pack_h2(s.x * e.x, s.x * e.y);
    kc[(3 * m + 1) * 32 + l] = pack_h2(-s.y * e.y, s.y * e.x);
    kc[(3 * m + 2) * 32 + l] = pack_h2(o.x * e.x - o.y * e.y, o.x * e.y + o.y * e.x);
  }
  __syncthreads();

  const int split = blockIdx.x * (blockDim.x / 32) + warp;
  if (split >= p.n_splits) return;
  const int64_t n = c.seq_len[b], tq = n - 1;
  const int group = p.n_q_heads / c.n_kv_heads;
  const int parts = p.n_splits + 1;
  Cursor cur;
  cur.u_begin = split * p.split_tokens;
  cur.u_end = min(c.n_quant(n), cur.u_begin + p.split_tokens);
  cur.win_first = -1000000;
  auto write_ml = [&](float m, float l) {
    if (r == 0 && gq < group) {
      const int64_t row = (int64_t{b} * p.n_q_heads + h * group + gq) * parts + split;
      p.part_ml[2 * row] = m;
      p.part_ml[2 * row + 1] = l;
    }
  };
  if (cur.u_begin >= cur.u_end) {
    write_ml(-INFINITY, 0.0f);
    return;
  }

  uint8_t* wsm = sa + SM::kWarp0 + warp * WS::kBytes;
  uint8_t* a_sm = wsm + WS::kA;
  float2* pb = reinterpret_cast<float2*>(wsm + WS::kPb);
  float* sc = reinterpret_cast<float*>(wsm + WS::kSc);
  int* pages_sm = reinterpret_cast<int*>(wsm + WS::kPages);

  // The key constants of the lane's pair slots, for the whole split.
  __half2 ka1[S::kNP], ka2[S::kNP], kcc[S::kNP];
#pragma unroll
  for (int m = 0; m < S::kNP; ++m) {
    ka1[m] = bits_h2(kc[(3 * m + 0) * 32 + lane]);
    ka2[m] = bits_h2(kc[(3 * m + 1) * 32 + lane]);
    kcc[m] = bits_h2(kc[(3 * m + 2) * 32 + lane]);
  }
  // Pair slots no RoPE pair maps to stay zero (D = 64, B = 3); nothing else writes them.
  for (int i = lane; i < 2 * NQ * 4 * WS::kARow / 4; i += 32)
    reinterpret_cast<uint32_t*>(a_sm)[i] = 0u;

  float2 qs[NQ][S::kQP], w8[S::kQP];
  int a_slot[S::kQP];
#pragma unroll
  for (int i = 0; i < S::kQP; ++i) {
    const int g = lane + 32 * i;
    const float th = p.inv_freq[g];
    w8[i] = rope_phase(8.0, th);
    const float2 e0 = rope_phase(static_cast<double>(c.n_sink + cur.u_begin - tq), th);
    const int slot = a_slot_of<D, B>(g);
    a_slot[i] = slot / S::kNP * WS::kARow + slot % S::kNP * WS::kSlotBytes;
    query_phases<D, NQ>(p, b, h, group, g, e0, i, qs);
  }
  __syncwarp();

  float m_run = -INFINITY, l_run = 0.0f;
  const uint32_t lut_base = a_addr + static_cast<uint32_t>(lane % S::kLutCopies) * 4u;
  const int n_blocks = static_cast<int>((cur.u_end - cur.u_begin + S::kBT - 1) / S::kBT);
  const bool k_out = c.k_outliers;
  const int qrow = gq < NQ ? gq : 0;
  auto kbegin_chunk = [&](int i) { return (4 + 2 * min(i, L.blocks_per_page - 1)) / 16; };
  // Block j's key rows and header chunks into buffer j & 1, one commit group.
  auto copy_block = [&](int j) {
    const int64_t u = cur.u_begin + int64_t{j} * S::kBT;
    const uint8_t* sec = block_section(c, b, h, u, pages_sm, &cur, lane);
    const int row0 = static_cast<int>(u % L.page_size);
    tc::copy16(wsm + WS::kKeys + (j & 1) * WS::kKeyBytes,
               sec + L.off_k_codes + int64_t{row0} * S::kWK * 4, WS::kKeyBytes, lane);
    if (k_out && lane < 3) {
      const int bi = row0 / S::kBT;
      const int chunk = lane == 0 ? 0 : kbegin_chunk(bi + lane - 1);
      tc::cp_async16(wsm + WS::kHdr + (j & 1) * 48 + 16 * lane, sec + L.off_header + 16 * chunk);
    }
    tc::cp_async_commit();
  };
  copy_block(0);

  for (int j = 0; j < n_blocks; ++j) {
    const int64_t u_blk = cur.u_begin + int64_t{j} * S::kBT;
    const int64_t pi = u_blk / L.page_size;
    const int row0 = static_cast<int>(u_blk % L.page_size);
    const int valid = static_cast<int>(min(int64_t{S::kBT}, cur.u_end - u_blk));
    const uint8_t* sec = block_section(c, b, h, u_blk, pages_sm, &cur, lane);
    const int bi = row0 / S::kBT;
    if (j + 1 < n_blocks) {  // the next block's copy, into the buffer the block before used
      copy_block(j + 1);
      tc::cp_async_wait<1>();
    } else {
      tc::cp_async_wait<0>();
    }
    __syncwarp();
    const uint32_t* krows =
        reinterpret_cast<const uint32_t*>(wsm + WS::kKeys + (j & 1) * WS::kKeyBytes);
    const uint8_t* hdr_sm = wsm + WS::kHdr + (j & 1) * 48;
    if (k_out) {
#pragma unroll
      for (int qi = 0; qi < NQ; ++qi) {
#pragma unroll
        for (int i = 0; i < S::kQP; ++i) pb[qi * (D / 2) + lane + 32 * i] = qs[qi][i];
      }
    }

    // Scores of the block's tokens into sc[query][token] (v3's phase 1, v3::group_scores).
#pragma unroll 1
    for (int gi = 0; gi < kGroups; gi += 2) {
      group_scores<D, B, NQ, 0>(gi, a_sm, qs, w8, a_slot, krows, ka1, ka2, kcc, lut_base, valid, sc,
                                lane, gq, r, qrow);
      group_scores<D, B, NQ, 1>(gi + 1, a_sm, qs, w8, a_slot, krows, ka1, ka2, kcc, lut_base, valid,
                                sc, lane, gq, r, qrow);
    }
    __syncwarp();

    // Key outliers (v3::key_outlier_scores): p_g(t) * (x - dense) added to the scores.
    if (k_out) {
      const int rows_in_page =
          static_cast<int>(min(int64_t{L.page_size}, c.n_quant(n) - pi * L.page_size));
      key_outlier_scores<D, B, NQ>(hdr_sm, reinterpret_cast<const uint32_t*>(sec + L.off_k_out), bi,
                                   rows_in_page, row0, valid, krows, lev, kso, thetas, pb, sc,
                                   lane);
    }

    // The block's maximum and sum of exp2 per query (v3's phase 2 up to the probabilities).
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
    __syncwarp();  // sc is rewritten by the next block
    float mx = x[0];
#pragma unroll
    for (int i = 1; i < 2 * S::kC; ++i) mx = fmaxf(mx, x[i]);
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
    const float m_new = fmaxf(m_run, mx);
    const float alpha = m_new == m_run ? 1.0f : exp2f(m_run - m_new);
    l_run *= alpha;
    m_run = m_new;
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
#pragma unroll
    for (int s = 0; s < S::kSteps; ++s) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        l_run += exp2f(x[S::kC * hh + 2 * s] - m_use) + exp2f(x[S::kC * hh + 2 * s + 1] - m_use);
      }
    }
  }
  l_run += __shfl_xor_sync(kFullMask, l_run, 1);
  l_run += __shfl_xor_sync(kFullMask, l_run, 2);
  write_ml(m_run, l_run);
}

template <int NQ>
cudaError_t launch(const KvAttentionParams& p, cudaStream_t stream) {
  constexpr int D = 128, B = 3;
  const auto kernel = kv_score_probe_kernel<D, B, NQ>;
  const int smem = Smem<D, B>::kKcBytes +
                   static_cast<int>(Smem<D, B>::pad(kv_dynamic_smem_start())) + Smem<D, B>::kWarp0 +
                   kWarps<NQ> * WarpSmem<D, B, NQ>::kBytes;
  if (const cudaError_t err =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
      err != cudaSuccess) {
    return err;
  }
  const dim3 grid((p.n_splits + kWarps<NQ> - 1) / kWarps<NQ>, p.cache.n_kv_heads, p.batch);
  kernel<<<grid, kWarps<NQ> * 32, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace probe

bool kv_score_probe_serves(const KvLayout& layout, int group) {
  return layout.method == KvMethod::kNuq && layout.head_dim == 128 && layout.bits == 3 &&
         (group == 1 || group == 4);
}

cudaError_t launch_kv_score_probe(const KvAttentionParams& p, cudaStream_t stream) {
  const KvCacheView& c = p.cache;
  if (p.batch < 0 || c.n_kv_heads < 1 || p.n_q_heads % c.n_kv_heads != 0 || p.n_splits < 1 ||
      p.n_splits > 65535 * 4 || p.split_tokens < 1 || p.split_tokens % c.layout.block_tokens != 0) {
    return cudaErrorInvalidValue;
  }
  const int group = p.n_q_heads / c.n_kv_heads;
  if (!kv_score_probe_serves(c.layout, group)) return cudaErrorNotSupported;
  if (p.batch == 0) return cudaSuccess;
  if (!p.q || !p.inv_freq || !p.part_ml || !c.pool || !c.seq_len || !c.page_table || !c.k_levels ||
      !c.k_lo || !c.k_hi) {
    return cudaErrorInvalidValue;
  }
  return group == 1 ? probe::launch<1>(p, stream) : probe::launch<4>(p, stream);
}

}  // namespace kvq::kernels
