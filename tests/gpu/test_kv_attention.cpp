// kernels/kv_attention*.cu (v1 simple, v2 tensor cores) and kv_dequantize.cu against the CPU
// references kv_attention_ref and kv_dequantize_ref on fresh seeded inputs: KVQuant bits 2/3/4
// (values per token over all KV heads or per token and head) and KIVI, head_dim 64/128, query
// groups 1..8 (GQA), fp16 and bf16 queries, sinks and recent windows, ragged batches (1, 17, 97,
// 4097 tokens ...) through prefill and appends, and long random caches over many pages and
// splits. Outputs are poisoned first; NaN/Inf/poison left count as failures. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kv_score_probe.h"
#include "kv_test_support.h"

namespace kvq::kernels {
namespace {

using test::DeviceBuffer;
using test::History;

struct Case {
  KvMethod method;
  int bits, head_dim, n_kv_heads, group, n_sink, n_recent, kivi_group, page_size;
  double v_fraction;
  std::vector<int64_t> lengths;
  int appends;
  bool bf16;
  uint32_t seed;
  int flush = 0;  // KIVI: tokens quantized together; 0: kivi_group (n_recent a sliding window)
  quant::ValueVector values = quant::ValueVector::kTokenHead;  // KVQuant

  std::string str() const {
    std::ostringstream s;
    s << (method == KvMethod::kNuq ? "nuq" : "kivi") << bits << " head_dim " << head_dim
      << " kv heads " << n_kv_heads << " group " << group << " sink " << n_sink << " recent "
      << n_recent << " kivi_group " << kivi_group << " page " << page_size << " lengths {";
    for (const auto n : lengths) s << n << ",";
    s << "} appends " << appends << (bf16 ? " bf16" : " fp16") << " seed " << seed;
    if (method == KvMethod::kNuq) s << " " << test::values_name(values);
    return s.str();
  }

  KvCacheConfig config() const {
    KvCacheConfig c;
    c.format =
        method == KvMethod::kNuq
            ? test::nuq_format(bits, n_sink, n_recent, v_fraction, values)
            : test::kivi_format(bits, kivi_group, n_sink, n_recent, flush > 0 ? flush : kivi_group);
    c.head_dim = head_dim;
    c.n_kv_heads = n_kv_heads;
    c.n_q_heads = n_kv_heads * group;
    c.page_size = page_size;
    c.max_batch = static_cast<int>(lengths.size());
    c.max_seq_len = 1;
    for (const auto n : lengths) c.max_seq_len = std::max(c.max_seq_len, n);
    return c;
  }
};

std::vector<Case> cases() {
  const KvMethod N = KvMethod::kNuq, K = KvMethod::kKivi;
  const quant::ValueVector T = quant::ValueVector::kToken;  // values over all KV heads
  std::vector<Case> all = {
      {N, 3, 128, 2, 1, 0, 0, 32, 320, 0.01, {1, 17, 97, 200}, 1, false, 31},
      {N, 2, 64, 1, 4, 1, 3, 32, 128, 0.02, {150, 40}, 4, true, 32},
      {K, 2, 128, 1, 2, 0, 8, 32, 256, 0, {300, 45}, 3, false, 33},
      {N, 3, 128, 2, 2, 0, 0, 32, 320, 0.01, {3, 17, 97, 200}, 3, false, 71, 0, T},
  };
  if (test::sanitizer_run()) return all;
  all[0].lengths = {1, 17, 97, 4097};
  all[0].appends = 1;
  std::vector<Case> more = {
      {N, 3, 128, 2, 2, 1, 4, 32, 320, 0.01, {1000, 97, 17}, 5, false, 34},
      {N, 4, 128, 1, 8, 0, 0, 32, 256, 0.01, {999, 256}, 2, true, 35},
      {N, 3, 64, 3, 3, 2, 5, 32, 160, 0.03, {600, 81}, 7, false, 36},
      {N, 2, 128, 2, 1, 4, 0, 32, 256, 0.01, {2000, 129}, 1, true, 37},
      {N, 4, 64, 1, 1, 0, 16, 32, 64, 0.0, {700, 65}, 3, false, 38},
      {N, 3, 128, 8, 4, 0, 0, 32, 480, 0.01, {1500}, 2, false, 39},
      {K, 4, 64, 2, 4, 2, 16, 32, 64, 0, {500, 70}, 40, true, 40},
      {K, 2, 128, 1, 1, 0, 128, 128, 256, 0, {1200, 300}, 2, false, 41},
      {K, 4, 128, 1, 8, 0, 0, 64, 128, 0, {640, 129}, 2, false, 42},
      {K, 2, 128, 2, 4, 0, 0, 32, 256, 0, {700, 200, 131}, 130, false, 43, 128},  // residual
      // Values per token over all KV heads (8 x 128 values at 5%: 52 slots per head).
      {N, 2, 64, 4, 2, 1, 3, 32, 128, 0.02, {150, 40}, 4, true, 72, 0, T},
      {N, 4, 128, 1, 8, 4, 0, 32, 256, 0.01, {999, 256}, 2, false, 73, 0, T},
      {N, 2, 128, 8, 1, 0, 0, 32, 256, 0.05, {600, 129}, 2, false, 74, 0, T},
      {N, 3, 64, 2, 4, 2, 0, 32, 160, 0.0, {700, 65}, 3, true, 75, 0, T},
      {N, 4, 64, 4, 2, 0, 2, 32, 64, 0.01, {500, 33}, 3, false, 76, 0, T},
      {N, 2, 128, 2, 4, 0, 0, 32, 256, 0.0, {300, 2}, 2, false, 77, 0, T},
      // Issue 14's GQA layouts (v3: NQ = 4 in 7-warp blocks, compact accumulator stash; NQ = 8;
      // D = 64, B = 3 with the unused pair slots): groups 4 and 8 at every bit width and both
      // head sizes, B = 3 at D = 64 for every query tile; several blocks per split.
      {N, 4, 128, 2, 4, 0, 0, 32, 256, 0.01, {1000, 97, 17}, 3, false, 78},
      {N, 4, 64, 2, 4, 1, 2, 32, 128, 0.02, {600, 33}, 2, true, 79, 0, T},
      {N, 2, 128, 1, 8, 0, 0, 32, 256, 0.01, {900, 129}, 2, false, 80},
      {N, 3, 128, 1, 8, 2, 0, 32, 320, 0.01, {1000, 81}, 2, true, 81, 0, T},
      {N, 3, 64, 2, 8, 0, 0, 32, 160, 0.01, {700, 65}, 3, false, 82},
      {N, 2, 64, 1, 8, 0, 4, 32, 128, 0.01, {513, 7}, 2, false, 83, 0, T},
      {N, 3, 128, 2, 4, 0, 0, 32, 320, 0.02, {1601, 400, 2}, 2, false, 84},
      {N, 3, 64, 2, 1, 0, 0, 32, 160, 0.01, {700, 65}, 2, false, 85},
      {N, 3, 64, 1, 2, 1, 0, 32, 160, 0.01, {800, 161}, 2, true, 86, 0, T},
      {N, 4, 64, 1, 5, 0, 0, 32, 64, 0.01, {450, 64}, 2, false, 87},
  };
  all.insert(all.end(), more.begin(), more.end());
  return all;
}

struct Run {
  test::ErrorStats stats;
  std::vector<uint16_t> out;
};

// Random queries of every sequence's newest token, the RoPE frequencies and the reference
// attention over ref_state.
struct Queries {
  std::vector<uint16_t> bits;
  std::vector<float> inv_freq;
  std::vector<double> ref;
};

Queries random_queries(const KvCache& cache, const KvState& ref_state, const quant::KvTables* qp,
                       bool bf16, uint32_t seed) {
  const KvCacheConfig& cfg = cache.config();
  Queries q;
  const std::vector<float> values = test::random_queries(
      static_cast<size_t>(cache.batch()) * cfg.n_q_heads * cfg.head_dim, seed, bf16, &q.bits);
  q.inv_freq = rope_inv_freq(10000.0, cfg.head_dim);
  q.ref = kv_attention_ref(ref_state, qp, values, q.inv_freq);
  return q;
}

// The attention through the cache (splits as it plans them), or with `splits` splits of one
// block of tokens each set here (splits > 0; v3, whose splits are whole blocks), in a workspace
// poisoned first.
Run attend(KvCache& cache, const Queries& q, bool bf16, KvAttentionKernel version, int splits = 0) {
  Run run;
  const DeviceBuffer<uint16_t> dq = test::to_device(q.bits);
  const DeviceBuffer<float> df = test::to_device(q.inv_freq);
  DeviceBuffer<uint16_t> dout(q.bits.size());
  EXPECT_EQ(cudaMemset(dout.data(), 0xFF, dout.bytes()), cudaSuccess);
  DeviceBuffer<float> work;  // the forced splits' workspace, alive until the kernels are done
  if (splits > 0) {
    KvAttentionParams p = cache.attention_params(dq.data(), bf16, dout.data(), df.data(), version);
    const int D = cache.config().head_dim;
    p.n_splits = splits;
    p.split_tokens = cache.config().layout().block_tokens;
    work = DeviceBuffer<float>(kv_attention_workspace_floats(p.batch, p.n_q_heads, splits, D));
    kv_attention_set_workspace(&p, work.data());
    EXPECT_EQ(cudaMemset(work.data(), 0xFF, work.bytes()), cudaSuccess);
    EXPECT_EQ(launch_kv_attention(p, version, nullptr), cudaSuccess);
  } else {
    cache.attend(dq.data(), bf16, dout.data(), df.data(), version, nullptr);
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  run.out.resize(q.bits.size());
  EXPECT_EQ(cudaMemcpy(run.out.data(), dout.data(), dout.bytes(), cudaMemcpyDeviceToHost),
            cudaSuccess);
  run.stats =
      test::compare_out(run.out, bf16, q.ref, cache.config().n_q_heads, cache.config().head_dim);
  return run;
}

// fp16 output rounding is 2^-11, bf16 2^-8; the kernels add fp16 dequantization and queries.
double bound(bool bf16) { return bf16 ? 2.5e-2 : 1e-2; }

// kernels/kv_dequantize.cu (the benchmark's fp64 check reads the cache through it) against
// kv_dequantize_ref, bit for bit, for every (sequence, KV head).
void check_dequantize(const KvCache& cache, const KvState& ref_state, const quant::KvTables* qp,
                      const std::string& name) {
  const KvCacheConfig& cfg = cache.config();
  std::vector<float> want_k, want_v;
  for (int b = 0; b < cache.batch(); ++b) {
    for (int h = 0; h < cfg.n_kv_heads; ++h) {
      kv_dequantize_ref(ref_state, qp, b, h, &want_k, &want_v);
      DeviceBuffer<float> dk(want_k.size()), dv(want_v.size());
      cache.dequantize(b, h, dk.data(), dv.data(), nullptr);
      std::vector<float> got_k(want_k.size()), got_v(want_v.size());
      ASSERT_EQ(cudaMemcpy(got_k.data(), dk.data(), dk.bytes(), cudaMemcpyDeviceToHost),
                cudaSuccess);
      ASSERT_EQ(cudaMemcpy(got_v.data(), dv.data(), dv.bytes(), cudaMemcpyDeviceToHost),
                cudaSuccess);
      int64_t bad = 0;
      for (size_t i = 0; i < want_k.size(); ++i) {
        const bool k_ok = std::memcmp(&got_k[i], &want_k[i], 4) == 0;
        const bool v_ok = std::memcmp(&got_v[i], &want_v[i], 4) == 0;
        if ((!k_ok || !v_ok) && bad++ == 0) {
          ADD_FAILURE() << "dequantize: seq " << b << " head " << h << " token " << i / cfg.head_dim
                        << " channel " << i % cfg.head_dim << ": k " << got_k[i] << " want "
                        << want_k[i] << ", v " << got_v[i] << " want " << want_v[i] << "; " << name;
        }
      }
      EXPECT_EQ(bad, 0) << "elements differ, seq " << b << " head " << h << "; " << name;
    }
  }
}

void check(KvCache& cache, const KvState& ref_state, const quant::KvTables* qp, bool bf16,
           uint32_t seed, const std::string& name) {
  const KvCacheConfig& cfg = cache.config();
  check_dequantize(cache, ref_state, qp, name);
  const Queries q = random_queries(cache, ref_state, qp, bf16, seed);
  for (const auto version :
       {KvAttentionKernel::kSimple, KvAttentionKernel::kMma, KvAttentionKernel::kTwoPhase}) {
    if (!kv_attention_serves(cfg.layout(), version)) continue;
    const char* vname = version == KvAttentionKernel::kSimple ? "v1"
                        : version == KvAttentionKernel::kMma  ? "v2"
                                                              : "v3";
    const Run run = attend(cache, q, bf16, version);
    std::printf("[ kv attention ] %s %s: worst rel %.2e (%s), max abs %.2e, bad %lld\n", vname,
                name.c_str(), run.stats.worst_rel, run.stats.worst.c_str(), run.stats.max_abs,
                static_cast<long long>(run.stats.n_bad));
    EXPECT_EQ(run.stats.n_bad, 0) << vname << " left NaN/Inf/poison; " << name;
    EXPECT_LE(run.stats.worst_rel, bound(bf16))
        << vname << " at " << run.stats.worst << "; " << name;
  }
}

TEST(KvAttention, MatchesReference) {
  KVQ_REQUIRE_GPU();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.str());
    const History hist = test::random_history(c.lengths, c.n_kv_heads, c.head_dim, c.seed);
    const quant::KvTables q =
        test::random_quantizer(hist, c.bits, c.n_kv_heads, c.head_dim, 0.005, c.seed + 1);
    const quant::KvTables* qp = c.method == KvMethod::kNuq ? &q : nullptr;
    KvCache cache(c.config(), qp);
    test::build(&cache, hist, c.appends);
    const KvState ref_state = kv_quantize_ref(cache.config(), qp, hist.k, hist.v);
    check(cache, ref_state, qp, c.bf16, c.seed + 2, c.str());
  }
}

// The fp16 part (split n_splits, the sink and recent tokens) has a warp after the quantized
// splits' where the cache has fp16 tokens, and none where it has none (kv_attention_parts): the
// reduction must then skip that part's row, left unwritten and poisoned where the splits fill
// every warp. Split counts set here rather than planned: 56 (a multiple of blocks of 7 and of 8
// warps, the last split holding tokens), 57 (a spare warp) and 112 (the last split empty);
// 4,452 tokens are 56 blocks of 80 with or without the sinks and the recent window. (Every
// version's planned splits, with and without fp16 tokens: MatchesReference.)
TEST(KvAttention, Fp16PartWithAndWithoutAWarp) {
  KVQ_REQUIRE_GPU();
  const KvMethod N = KvMethod::kNuq;
  const quant::ValueVector T = quant::ValueVector::kToken;
  const std::vector<Case> part_cases = {
      {N, 3, 128, 2, 1, 2, 3, 32, 320, 0.01, {4452, 900}, 1, false, 91},
      {N, 3, 128, 2, 4, 1, 4, 32, 320, 0.01, {4452, 17}, 1, true, 92, 0, T},
      {N, 3, 128, 2, 1, 0, 0, 32, 320, 0.01, {4452, 900}, 1, false, 93},
      {N, 3, 128, 2, 4, 0, 0, 32, 320, 0.01, {4452, 17}, 1, true, 94, 0, T},
  };
  for (const Case& c : part_cases) {
    SCOPED_TRACE(c.str());
    const History hist = test::random_history(c.lengths, c.n_kv_heads, c.head_dim, c.seed);
    const quant::KvTables q =
        test::random_quantizer(hist, c.bits, c.n_kv_heads, c.head_dim, 0.005, c.seed + 1);
    KvCache cache(c.config(), &q);
    test::build(&cache, hist, c.appends);
    const KvState ref_state = kv_quantize_ref(cache.config(), &q, hist.k, hist.v);
    const Queries queries = random_queries(cache, ref_state, &q, c.bf16, c.seed + 2);
    for (const int splits : {56, 57, 112}) {
      SCOPED_TRACE(::testing::Message() << splits << " splits");
      const test::ErrorStats st =
          attend(cache, queries, c.bf16, KvAttentionKernel::kTwoPhase, splits).stats;
      std::printf("[ kv attention ] v3 %d splits %s: worst rel %.2e (%s), bad %lld\n", splits,
                  c.str().c_str(), st.worst_rel, st.worst.c_str(),
                  static_cast<long long>(st.n_bad));
      EXPECT_EQ(st.n_bad, 0);
      EXPECT_LE(st.worst_rel, bound(c.bf16)) << "at " << st.worst;
    }
  }
}

// Long caches of random codes (the benchmark's fill) over many pages and splits; the reference
// reads the same pages back from the device.
TEST(KvAttention, LongRandomCaches) {
  KVQ_REQUIRE_GPU();
  if (test::sanitizer_run()) GTEST_SKIP() << "long caches are skipped under compute-sanitizer";
  const KvMethod N = KvMethod::kNuq, K = KvMethod::kKivi;
  using QV = quant::ValueVector;
  const std::vector<Case> long_cases = {
      {N, 3, 128, 2, 1, 0, 0, 32, 320, 0.01, {40000, 7000}, 0, false, 51},
      {N, 2, 128, 1, 4, 1, 7, 32, 256, 0.01, {30001}, 0, true, 52},
      {N, 4, 64, 2, 2, 0, 5, 32, 512, 0.02, {20000, 3}, 0, false, 53},
      {K, 2, 128, 2, 4, 0, 128, 32, 256, 0, {33333}, 0, false, 54},
      {K, 2, 128, 2, 4, 0, 0, 32, 256, 0, {33333}, 0, false, 55, 128},
      {N, 3, 128, 4, 2, 0, 0, 32, 320, 0.01, {40000, 5000}, 0, false, 56, 0, QV::kToken},
      {N, 2, 64, 8, 1, 0, 3, 32, 256, 0.05, {20001}, 0, true, 57, 0, QV::kToken},
      // Awkward lengths: one token, a page and one token either side, a prime-ish 100003, and
      // 128K (the benchmark's headline length), per-token values as kvq fit writes them.
      {N,
       3,
       128,
       2,
       2,
       0,
       0,
       32,
       320,
       0.01,
       {1, 319, 320, 321, 100003},
       0,
       false,
       58,
       0,
       QV::kToken},
      {N, 3, 128, 1, 4, 0, 0, 32, 320, 0.01, {131072}, 0, false, 59, 0, QV::kToken},
      {N, 2, 128, 1, 1, 0, 0, 32, 256, 0.01, {255, 257, 131072}, 0, true, 60, 0, QV::kToken},
      {N, 4, 128, 1, 1, 0, 0, 32, 256, 0.01, {1, 256, 131071}, 0, false, 61, 0, QV::kToken},
      {K, 2, 128, 1, 4, 0, 128, 32, 256, 0, {1, 255, 257, 131072}, 0, false, 62},
      // GQA over many splits (issue 14: v3's 7-warp blocks and split plan at NQ = 4, NQ = 8).
      {N, 3, 128, 8, 4, 0, 0, 32, 320, 0.01, {131072}, 0, false, 63, 0, QV::kToken},
      {N, 4, 128, 2, 4, 0, 0, 32, 256, 0.01, {40000, 3001}, 0, true, 64},
      {N, 2, 128, 2, 4, 0, 0, 32, 256, 0.01, {33333, 1}, 0, false, 65},
      {N, 3, 128, 1, 8, 0, 0, 32, 320, 0.01, {50001}, 0, false, 66},
      {N, 3, 64, 2, 4, 0, 0, 32, 160, 0.01, {20001, 161}, 0, false, 67},
  };
  for (const Case& c : long_cases) {
    SCOPED_TRACE(c.str());
    const History one = test::random_history({1}, c.n_kv_heads, c.head_dim, c.seed);
    quant::KvTables q =
        test::random_quantizer(one, c.bits, c.n_kv_heads, c.head_dim, 0.01, c.seed + 1);
    for (size_t i = 0; i < q.k_lo.size(); ++i) {
      q.k_lo[i] = -1.0f - 0.001f * (i % 7);
      q.k_hi[i] = 1.5f + 0.002f * (i % 5);
    }
    const quant::KvTables* qp = c.method == KvMethod::kNuq ? &q : nullptr;
    KvCache cache(c.config(), qp);
    test::poison(cache);
    cache.fill_random(c.lengths, 0.01, c.seed, nullptr);
    std::vector<std::string> problems;
    const KvState state = kv_parse_image(cache.config(), cache.snapshot(), &problems);
    ASSERT_TRUE(problems.empty()) << problems.front();
    check(cache, state, qp, c.bf16, c.seed + 2, c.str());
  }
}

// v3 sums the value outliers' corrections as int32 fixed point at a scale set per block of
// tokens where a KV head has several queries, as float where it has one (the group-1 case;
// kernels/kv_attention_v3.cuh). Values at the edge of fp16 beside ordinary ones:
// sequence 0 has 60,000 in channel 5 of every head of every token (one sign, so that a block's
// sum for that channel has every token's term near the bound: the int32 range's worst case);
// sequence 1 has -20,000 in every 50th token at a channel that moves and 8 there in the others
// (terms 2,500 times apart in one block: the rounding is relative to the block's largest).
TEST(KvAttention, ValueOutliersOfWideRange) {
  KVQ_REQUIRE_GPU();
  const KvMethod N = KvMethod::kNuq;
  const quant::ValueVector T = quant::ValueVector::kToken;
  const std::vector<Case> wide_cases = {
      {N, 3, 128, 2, 4, 0, 0, 32, 320, 0.01, {700, 500}, 2, false, 101, 0, T},
      {N, 3, 128, 2, 1, 0, 0, 32, 320, 0.01, {700, 500}, 2, false, 102},
      {N, 2, 64, 1, 8, 0, 2, 32, 256, 0.02, {600, 300}, 2, true, 103, 0, T},
  };
  for (const Case& c : wide_cases) {
    SCOPED_TRACE(c.str());
    History hist = test::random_history(c.lengths, c.n_kv_heads, c.head_dim, c.seed);
    const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    for (size_t t = 0; t < hist.v[0].size() / row; ++t) {
      for (int h = 0; h < c.n_kv_heads; ++h)
        hist.v[0][t * row + h * c.head_dim + 5] = kv_half_bits(60000.0f);
    }
    for (size_t t = 0; t < hist.v[1].size() / row; ++t) {
      const size_t ch = t * 13 % c.head_dim;
      for (int h = 0; h < c.n_kv_heads; ++h)
        hist.v[1][t * row + h * c.head_dim + ch] = kv_half_bits(t % 50 == 0 ? -20000.0f : 8.0f);
    }
    const quant::KvTables q =
        test::random_quantizer(hist, c.bits, c.n_kv_heads, c.head_dim, 0.005, c.seed + 1);
    KvCache cache(c.config(), &q);
    test::build(&cache, hist, c.appends);
    const KvState ref_state = kv_quantize_ref(cache.config(), &q, hist.k, hist.v);
    check(cache, ref_state, &q, c.bf16, c.seed + 2, c.str());
  }
}

// The score probe (kv_score_probe.h) writes what v3 writes to part_ml for the quantized splits
// (each split's maximum and sum of exp2), by v3's arithmetic in v3's order: it must match v3's on
// the same launch parameters to float rounding, every split written (part_ml is poisoned first).
TEST(KvScoreProbe, MatchesV3sSoftmaxStatistics) {
  KVQ_REQUIRE_GPU();
  using QV = quant::ValueVector;
  const KvMethod N = KvMethod::kNuq;
  std::vector<Case> probe_cases = {
      {N, 3, 128, 2, 1, 0, 0, 32, 320, 0.01, {1, 79, 80, 81, 5000}, 0, false, 91, 0, QV::kToken},
      {N, 3, 128, 2, 4, 1, 3, 32, 320, 0.02, {321, 3000}, 0, true, 92},
  };
  if (!test::sanitizer_run()) {
    probe_cases.push_back(
        {N, 3, 128, 1, 1, 0, 0, 32, 320, 0.01, {131072}, 0, false, 93, 0, QV::kToken});
    probe_cases.push_back(
        {N, 3, 128, 8, 4, 0, 0, 32, 320, 0.01, {40000, 7}, 0, false, 94, 0, QV::kToken});
  }
  for (const Case& c : probe_cases) {
    SCOPED_TRACE(c.str());
    ASSERT_TRUE(kv_score_probe_serves(c.config().layout(), c.group));
    const History one = test::random_history({1}, c.n_kv_heads, c.head_dim, c.seed);
    const quant::KvTables q =
        test::random_quantizer(one, c.bits, c.n_kv_heads, c.head_dim, 0.01, c.seed + 1);
    KvCache cache(c.config(), &q);
    test::poison(cache);
    cache.fill_random(c.lengths, c.v_fraction, c.seed, nullptr);
    std::vector<uint16_t> q_bits;
    const KvCacheConfig& cfg = cache.config();
    test::random_queries(static_cast<size_t>(cache.batch()) * cfg.n_q_heads * cfg.head_dim,
                         c.seed + 2, c.bf16, &q_bits);
    const std::vector<float> inv_freq = rope_inv_freq(10000.0, cfg.head_dim);
    const DeviceBuffer<uint16_t> dq = test::to_device(q_bits);
    const DeviceBuffer<float> df = test::to_device(inv_freq);
    DeviceBuffer<uint16_t> dout(q_bits.size());
    const KvAttentionParams p = cache.attention_params(dq.data(), c.bf16, dout.data(), df.data(),
                                                       KvAttentionKernel::kTwoPhase);
    const size_t n_ml = kv_attention_part_rows(p.batch, p.n_q_heads, p.n_splits) * 2;
    auto read_ml = [&] {
      std::vector<float> ml(n_ml);
      EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_EQ(cudaMemcpy(ml.data(), p.part_ml, n_ml * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      return ml;
    };
    ASSERT_EQ(launch_kv_attention(p, KvAttentionKernel::kTwoPhase, nullptr), cudaSuccess);
    const std::vector<float> want = read_ml();
    ASSERT_EQ(cudaMemset(p.part_ml, 0xFF, n_ml * 4), cudaSuccess);
    ASSERT_EQ(launch_kv_score_probe(p, nullptr), cudaSuccess);
    const std::vector<float> got = read_ml();
    int64_t bad = 0, splits = 0;
    for (size_t i = 0; i < n_ml / 2; ++i) {
      if (static_cast<int>(i % static_cast<size_t>(p.n_splits + 1)) == p.n_splits) continue;
      ++splits;
      const float m = got[2 * i], l = got[2 * i + 1], mw = want[2 * i], lw = want[2 * i + 1];
      const bool ok = (m == mw || std::abs(m - mw) <= 1e-5f * std::max(1.0f, std::abs(mw))) &&
                      std::abs(l - lw) <= 1e-5f * std::max(1e-30f, lw) && l == l;
      if (!ok && bad++ < 3) {
        ADD_FAILURE() << "split row " << i << ": probe (m " << m << ", l " << l << "), v3 (m " << mw
                      << ", l " << lw << ")";
      }
    }
    std::printf("[ score probe ] %s: %lld splits, %d per (sequence, head), %lld differ\n",
                c.str().c_str(), static_cast<long long>(splits), p.n_splits,
                static_cast<long long>(bad));
    EXPECT_EQ(bad, 0);
  }
}

}  // namespace
}  // namespace kvq::kernels
