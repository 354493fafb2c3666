// kernels/kv_append.cu (prefill + decode appends) against the CPU reference kv_quantize_ref:
// every quantized element, scale, outlier and fp16 token of the cache, read back from the
// device image, for KVQuant (bits 2/3/4, head_dim 64/128, sinks, recent windows, outlier page
// overflow, values per token over all KV heads or per token and head) and KIVI, with ragged batches
// across page and block boundaries. Every buffer is poisoned first. Skips without a GPU.
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kv_test_support.h"

namespace kvq::kernels {
namespace {

using test::History;

struct Case {
  KvMethod method;
  int bits, head_dim, n_kv_heads, n_sink, n_recent, group, page_size;
  double v_fraction;
  int k_capacity;  // 0: default
  double k_tail;   // fraction of keys below lo (and above hi)
  std::vector<int64_t> lengths;
  int appends;
  uint32_t seed;
  int flush = 0;  // KIVI: tokens quantized together; 0: the group (with n_recent a sliding window)
  quant::ValueVector values = quant::ValueVector::kTokenHead;  // KVQuant

  std::string str() const {
    std::ostringstream s;
    s << (method == KvMethod::kNuq ? "nuq" : "kivi") << bits << " head_dim " << head_dim
      << " kv heads " << n_kv_heads << " sink " << n_sink << " recent " << n_recent << " group "
      << group << " flush " << flush << " page " << page_size << " v_fraction " << v_fraction
      << " k_capacity " << k_capacity << " lengths {";
    for (const auto n : lengths) s << n << ",";
    s << "} appends " << appends << " seed " << seed;
    if (method == KvMethod::kNuq) s << " " << test::values_name(values);
    return s.str();
  }

  KvCacheConfig config() const {
    KvCacheConfig c;
    c.format = method == KvMethod::kNuq
                   ? test::nuq_format(bits, n_sink, n_recent, v_fraction, values)
                   : test::kivi_format(bits, group, n_sink, n_recent, flush > 0 ? flush : group);
    c.head_dim = head_dim;
    c.n_kv_heads = n_kv_heads;
    c.n_q_heads = n_kv_heads;
    c.page_size = page_size;
    c.k_outlier_capacity = k_capacity;
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
      {N, 3, 128, 2, 0, 0, 1, 320, 0.01, 0, 0.005, {1, 17, 97, 403}, 1, 11},
      {K, 2, 128, 2, 0, 0, 32, 256, 0, 0, 0, {31, 40, 97}, 9, 12},
      // wt2-llama-18m's shape, nuq3-1%: k = 2 of 256 values, 4 slots per head.
      {N, 3, 128, 2, 0, 0, 1, 320, 0.01, 0, 0.005, {9, 17, 97, 403}, 9, 61, 0, T},
  };
  if (test::sanitizer_run()) return all;
  all[0].lengths = {1, 17, 97, 4097};
  all[0].appends = 1;
  std::vector<Case> more = {
      {N, 2, 64, 3, 4, 8, 1, 256, 0.02, 0, 0.01, {40, 300, 1000}, 40, 13},
      {N, 4, 128, 1, 1, 3, 1, 64, 0.01, 0, 0.005, {200, 700}, 70, 14},
      {N, 3, 64, 2, 2, 0, 1, 80, 0.05, 0, 0.01, {161, 9}, 9, 15},
      {N, 2, 128, 1, 0, 0, 1, 128, 0.0, 0, 0.0, {129, 300}, 3, 16},
      {N, 3, 128, 1, 0, 2, 1, 160, 0.01, 4, 0.05, {700, 333}, 30, 17},  // key pages overflow
      {N, 4, 64, 4, 0, 0, 1, 512, 0.1, 0, 0.01, {1025, 3}, 3, 18},
      {K, 4, 64, 1, 2, 16, 32, 64, 0, 0, 0, {100, 300}, 40, 19},
      {K, 2, 128, 1, 0, 128, 128, 256, 0, 0, 0, {1000}, 130, 20},
      {K, 2, 128, 2, 1, 0, 64, 256, 0, 0, 0, {66, 600}, 66, 21},
      // KIVI's residual (what kiviB-gG-rR means): R tokens in fp16, all quantized at once.
      {K, 2, 128, 2, 0, 0, 32, 256, 0, 0, 0, {300, 150, 141}, 140, 22, 128},
      {K, 4, 64, 1, 3, 0, 32, 64, 0, 0, 0, {200, 64}, 64, 23, 64},
      // Values per token over all KV heads: the token leaving a recent window is read from
      // every head's ring row; 8 x 128 values at 5% is k = 26, 52 slots (more than a warp).
      {N, 2, 64, 4, 4, 8, 1, 256, 0.02, 0, 0.01, {40, 300, 1000}, 40, 62, 0, T},
      {N, 4, 128, 1, 1, 3, 1, 64, 0.01, 0, 0.005, {200, 700}, 70, 63, 0, T},
      {N, 3, 64, 3, 2, 0, 1, 80, 0.05, 0, 0.01, {161, 9}, 9, 64, 0, T},
      {N, 2, 128, 8, 0, 2, 1, 128, 0.05, 0, 0.01, {129, 300}, 5, 65, 0, T},
      {N, 4, 64, 2, 0, 0, 1, 512, 0.0, 0, 0.01, {1025, 3}, 3, 66, 0, T},
      {N, 3, 128, 4, 1, 0, 1, 160, 0.01, 4, 0.05, {700, 333}, 30, 67, 0, T},  // key overflow
      // More heads than one append block holds (kTokenHeads = 8): 12 heads are two blocks that
      // each select the whole token's range, the second with 4 spare warps; at each step some
      // sequences' tokens leave the window and some do not (length 7 < sink + recent at first).
      {N, 3, 64, 12, 2, 4, 1, 80, 0.01, 0, 0.005, {7, 50, 200}, 7, 68, 0, T},
      {N, 4, 128, 17, 0, 0, 1, 128, 0.02, 0, 0.01, {3, 130, 40, 5}, 3, 69, 0, T},
      // 66 x 128 values: past the block's keys (8192), so each head's warp selects alone.
      {N, 3, 128, 66, 1, 2, 1, 80, 0.01, 0, 0.005, {5, 70}, 5, 70, 0, T},
  };
  all.insert(all.end(), more.begin(), more.end());
  return all;
}

TEST(KvAppend, MatchesReference) {
  KVQ_REQUIRE_GPU();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.str());
    const History hist = test::random_history(c.lengths, c.n_kv_heads, c.head_dim, c.seed);
    const quant::KvTables q = test::random_quantizer(hist, c.bits, c.n_kv_heads, c.head_dim,
                                                     c.k_tail > 0 ? c.k_tail : 0.001, c.seed + 1);
    const quant::KvTables* qp = c.method == KvMethod::kNuq ? &q : nullptr;
    KvCache cache(c.config(), qp);
    test::build(&cache, hist, c.appends);
    std::vector<std::string> problems;
    const KvState got = kv_parse_image(cache.config(), cache.snapshot(), &problems);
    std::string all_problems;
    for (const auto& p : problems) all_problems += p + "\n";
    EXPECT_TRUE(problems.empty()) << all_problems;
    const KvState want = kv_quantize_ref(cache.config(), qp, hist.k, hist.v);
    EXPECT_EQ(kv_compare(want, got), "") << c.str();
    if (c.k_capacity > 0) {
      EXPECT_GT(want.k_overflow, 0u) << "the case should overflow its pages";
    }
  }
}

// NaN and infinite values (which kv_quantize_ref refuses): the decode step's selection, by the
// append block or by each head's warp, must leave NaN out and count ties as prefill does, so a
// cache built by appends equals one built by prefill, bit for bit. One token is all NaN (fewer
// values than the range needs: the warps' own path), others hold NaN, +-inf and +-0.
TEST(KvAppend, NonFiniteValuesMatchPrefill) {
  KVQ_REQUIRE_GPU();
  const KvMethod N = KvMethod::kNuq;
  const quant::ValueVector T = quant::ValueVector::kToken;
  const std::vector<Case> all = {
      {N, 3, 64, 4, 0, 0, 1, 80, 0.05, 0, 0.005, {40, 90}, 30, 81, 0, T},
      {N, 2, 128, 10, 2, 3, 1, 128, 0.02, 0, 0.005, {36, 70}, 30, 82, 0, T},
      {N, 4, 128, 66, 0, 1, 1, 64, 0.01, 0, 0.005, {12}, 8, 83, 0, T},  // past the block's keys
  };
  for (const Case& c : all) {
    SCOPED_TRACE(c.str());
    History hist = test::random_history(c.lengths, c.n_kv_heads, c.head_dim, c.seed);
    const quant::KvTables q =
        test::random_quantizer(hist, c.bits, c.n_kv_heads, c.head_dim, c.k_tail, c.seed + 1);
    const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    std::mt19937 rng(c.seed + 2);
    const uint16_t special[] = {0x7E00, 0xFE00, 0x7C00, 0xFC00, 0x0000, 0x8000, 0x7C01};
    for (auto& v : hist.v) {
      const size_t n = v.size() / row;
      for (size_t t = n - c.appends; t < n; ++t) {
        for (size_t i = 0; i < row; ++i) {
          if (t == n - 3 || rng() % 8 == 0)
            v[t * row + i] = t == n - 3 ? 0x7E00 : special[rng() % 7];
        }
      }
    }
    KvCache appended(c.config(), &q), prefilled(c.config(), &q);
    test::build(&appended, hist, c.appends);
    test::build(&prefilled, hist, 0);
    std::vector<std::string> problems;
    const KvState got = kv_parse_image(appended.config(), appended.snapshot(), &problems);
    const KvState want = kv_parse_image(prefilled.config(), prefilled.snapshot(), &problems);
    std::string all_problems;
    for (const auto& p : problems) all_problems += p + "\n";
    EXPECT_TRUE(problems.empty()) << all_problems;
    EXPECT_EQ(kv_compare(want, got), "") << c.str();
  }
}

// The benchmark's random fill must be a well-formed cache (attention tests read it too).
TEST(KvAppend, RandomFillIsWellFormed) {
  KVQ_REQUIRE_GPU();
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.str());
    const History hist = test::random_history({1}, c.n_kv_heads, c.head_dim, c.seed);
    const quant::KvTables q =
        test::random_quantizer(hist, c.bits, c.n_kv_heads, c.head_dim, 0.01, c.seed);
    KvCache cache(c.config(), c.method == KvMethod::kNuq ? &q : nullptr);
    test::poison(cache);
    cache.fill_random(c.lengths, 0.01, c.seed, nullptr);
    std::vector<std::string> problems;
    const KvState got = kv_parse_image(cache.config(), cache.snapshot(), &problems);
    std::string all_problems;
    for (const auto& p : problems) all_problems += p + "\n";
    EXPECT_TRUE(problems.empty()) << all_problems;
    for (size_t b = 0; b < c.lengths.size(); ++b) EXPECT_EQ(got.head(b, 0).n_tokens, c.lengths[b]);
  }
}

}  // namespace
}  // namespace kvq::kernels
