// Bad input to the compressed KV cache's API: each rejected with one kvq::Error line naming the
// shape (configuration and quantizer checks run without a GPU), and failures that leave the
// cache exactly as it was (out of pages while growing, a full sequence, a non-empty prefill).
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kv_append.h"
#include "kv_attention.h"
#include "kv_score_probe.h"
#include "kv_test_support.h"
#include "kvq/methods/method.h"
#include "support/test_support.h"

namespace kvq::kernels {
namespace {

using ::kvq::test::error_of;

KvCacheConfig config_of(const std::string& method) {
  KvCacheConfig c;
  c.format = methods::parse_method(method).kv_format();
  c.head_dim = 128;
  c.n_kv_heads = 2;
  c.n_q_heads = 4;
  c.max_batch = 2;
  c.max_seq_len = 1000;
  return c;
}

KvCacheConfig nuq_config() { return config_of("nuq3-1%-vhead"); }

quant::KvTables quantizer(int bits, int n_kv_heads, int head_dim) {
  quant::KvTables q;
  for (int i = 0; i < (1 << bits); ++i) {
    q.k_levels.push_back(-1.0f + 2.0f * i / ((1 << bits) - 1));
    q.v_levels.push_back(q.k_levels.back());
  }
  q.k_lo.assign(static_cast<size_t>(n_kv_heads) * head_dim, -1.0f);
  q.k_hi.assign(q.k_lo.size(), 1.0f);
  return q;
}

std::string check_error(KvCacheConfig c, const quant::KvTables* q) {
  return error_of([&] { runtime::check_kv_config(&c, q); });
}

// Everything no kernel was built for is refused by the method's name, with the forms it serves.
TEST(KvErrors, MethodsTheCacheCannotServeAreNamed) {
  const quant::KvTables q = quantizer(3, 2, 128);
  const std::string forms = std::string(" (the CUDA cache holds ") + runtime::kCacheMethods + ")";
  EXPECT_EQ(check_error(config_of("nuq3-1%"), &q), "<no error>");
  EXPECT_EQ(
      check_error(config_of("skvq-k2-v2-g128-w128"), &q),
      "kv cache: method 'skvq-k2-v2-g128-w128': no CUDA kernels for this kind of method" + forms);
  EXPECT_EQ(check_error(config_of("int4"), &q),
            "kv cache: method 'int4-token': no CUDA kernels for this kind of method" + forms);
  EXPECT_EQ(check_error(config_of("nuq3-1%-vhead-qnorm"), &q),
            "kv cache: method 'nuq3-1%-vhead-qnorm': Q-Norm decode levels are not served" + forms);
  EXPECT_EQ(
      check_error(config_of("nuq3-1%-vhead-post"), &q),
      "kv cache: method 'nuq3-1%-vhead-post': keys quantized after RoPE (-post) are not served" +
          forms);
  EXPECT_EQ(check_error(config_of("kivi2-g32-r0"), nullptr),
            "kv cache: method 'kivi2-g32-r0': the residual must be a positive multiple of the "
            "group 32 (at most 65536), found 1" +
                forms);
  EXPECT_EQ(check_error(config_of("kivi3"), nullptr),
            "kv cache: bits: expected 2 or 4 for KIVI, found 3");
  EXPECT_EQ(check_error(config_of("kivi2-g16-r128"), nullptr),
            "kv cache: kivi group: expected 32, 64 or 128 tokens and channels, at most head_dim = "
            "128, found 16 and 16");
  EXPECT_EQ(check_error(config_of("kivi2-g32-r128"), nullptr), "<no error>");
  const quant::KvTables q2 = quantizer(2, 2, 128);
  EXPECT_EQ(check_error(config_of("nuq2-sink4-vhead"), &q2), "<no error>");
}

TEST(KvErrors, ConfigurationIsChecked) {
  const quant::KvTables q = quantizer(3, 2, 128);
  KvCacheConfig c = nuq_config();
  EXPECT_EQ(check_error(c, &q), "<no error>");
  c.head_dim = 96;
  EXPECT_EQ(check_error(c, &q), "kv cache: head_dim: expected 64 or 128, found 96");
  c = nuq_config();
  c.format.key_bits = c.format.value_bits = 5;
  EXPECT_EQ(check_error(c, &q), "kv cache: bits: expected 2, 3 or 4, found 5");
  c = nuq_config();
  c.n_q_heads = 3;
  EXPECT_EQ(check_error(c, &q),
            "kv cache: n_q_heads: expected a multiple of n_kv_heads = 2 with "
            "at most 8 query heads per KV head, found 3");
  c.n_q_heads = 18;
  EXPECT_NE(check_error(c, &q).find("at most 8 query heads"), std::string::npos);
  c = nuq_config();
  c.page_size = 100;
  EXPECT_EQ(check_error(c, &q),
            "kv cache: page_size: expected a positive multiple of 80 tokens, found 100");
  c.page_size = 560;
  EXPECT_EQ(check_error(c, &q),
            "kv cache: page_size: expected page_size * head_dim < 65536 "
            "(outlier index), found 560 * 128");
}

// Value outlier entries per token: 2k of each value vector, once per token in the page's token
// section (kv_layout.h), indexed by 16-bit fields.
TEST(KvErrors, ValueOutliersPerTokenAreIndexable) {
  // wt2-llama-18m, nuq3-1% (values per token over 2 x 128): k = ceil(1.28) = 2, 4 entries.
  KvCacheConfig c = config_of("nuq3-1%");
  EXPECT_EQ(c.v_outliers_per_row(), 4);
  EXPECT_EQ(config_of("nuq3-1%-vhead").v_outliers_per_row(), 4);  // 2 heads x 2 x ceil(0.64)
  const quant::KvTables q3 = quantizer(3, 2, 128);
  EXPECT_EQ(check_error(c, &q3), "<no error>");
  // LLaMA-7B's shape (32 KV heads x 128): nuq3-1% is k = ceil(20.48) = 21, 42 entries per
  // token in all, not 42 per head.
  c.n_kv_heads = c.n_q_heads = 32;
  EXPECT_EQ(c.v_outliers_per_row(), 42);
  EXPECT_EQ(c.layout().v_out_per_row, 42);
  const quant::KvTables q3_7b = quantizer(3, 32, 128);
  EXPECT_EQ(check_error(c, &q3_7b), "<no error>");
  c = config_of("nuq2-10%");  // 410 of 4096 values: fine
  c.n_kv_heads = c.n_q_heads = 32;
  const quant::KvTables q2_7b = quantizer(2, 32, 128);
  EXPECT_EQ(check_error(c, &q2_7b), "<no error>");
  c = config_of("nuq2-90%-vhead");  // 600 heads x 2 x 58 = 69600 entries per token
  c.n_kv_heads = c.n_q_heads = 600;
  const quant::KvTables q2_600 = quantizer(2, 600, 128);
  EXPECT_EQ(check_error(c, &q2_600),
            "kv cache: method 'nuq2-90%-vhead': 69600 value outliers per token (128 values), at "
            "most 65535; use a smaller outlier fraction");
}

TEST(KvErrors, QuantizerShapeMustMatch) {
  const KvCacheConfig c = nuq_config();
  EXPECT_EQ(check_error(c, nullptr), "kv cache: KVQuant needs the layer's tables (quant.h5)");
  quant::KvTables q = quantizer(4, 2, 128);  // 16 levels for a 3-bit cache
  EXPECT_EQ(check_error(c, &q), "kv cache: k_levels: expected 8 levels for 3 bits, found 16");
  q = quantizer(3, 1, 128);  // one KV head's ranges for two
  EXPECT_EQ(check_error(c, &q),
            "kv cache: key ranges: expected [n_kv_heads = 2, head_dim = 128] "
            "= 256 values each, found 128 and 128");
  q = quantizer(3, 2, 128);
  q.v_levels[3] = q.v_levels[2];
  EXPECT_NE(
      check_error(c, &q).find("kv cache: v_levels: expected strictly ascending levels, found "),
      std::string::npos);
  EXPECT_NE(check_error(c, &q).find(" at index 3"), std::string::npos);
  q = quantizer(3, 2, 128);
  q.k_lo[130] = 2.0f;
  EXPECT_EQ(check_error(c, &q),
            "kv cache: key ranges: channel 130: expected finite lo <= hi, "
            "found [2, 1]");
}

// The launchers check their arguments before touching the GPU.
TEST(KvErrors, LaunchersRejectBadArguments) {
  KvCacheView empty;
  EXPECT_EQ(launch_kv_append(empty, 1, nullptr, nullptr, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launch_kv_prefill(empty, 1, 1, 1, nullptr, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
  KvAttentionParams p;
  p.batch = 1;
  p.n_q_heads = 3;
  p.cache.n_kv_heads = 2;
  EXPECT_EQ(launch_kv_attention(p, KvAttentionKernel::kMma, nullptr), cudaErrorInvalidValue);
  p.n_q_heads = 2;
  EXPECT_EQ(launch_kv_attention(p, KvAttentionKernel::kSimple, nullptr), cudaErrorInvalidValue);
  // Splits are whole units of the version: v3's blocks of 80 tokens (nuq3), v1's and v2's pages
  // of 320. With no sequences a launch that passes the checks queues nothing.
  p.batch = 0;
  p.cache.layout = kv_make_layout(KvMethod::kNuq, 3, 128, 320, 1, 2, 1, 2, 64);
  p.split_tokens = 160;
  EXPECT_EQ(launch_kv_attention(p, KvAttentionKernel::kTwoPhase, nullptr), cudaSuccess);
  EXPECT_EQ(launch_kv_attention(p, KvAttentionKernel::kSimple, nullptr), cudaErrorInvalidValue);
  p.split_tokens = 640;
  EXPECT_EQ(launch_kv_attention(p, KvAttentionKernel::kSimple, nullptr), cudaSuccess);
  p.split_tokens = 100;
  EXPECT_EQ(launch_kv_attention(p, KvAttentionKernel::kTwoPhase, nullptr), cudaErrorInvalidValue);
  p.split_tokens = 0;
  EXPECT_EQ(launch_kv_attention(p, KvAttentionKernel::kTwoPhase, nullptr), cudaErrorInvalidValue);
}

// The score probe (kv_score_probe.h) takes v3's parameters for the layouts it was built for and
// refuses the rest by the same rules, before touching the GPU.
TEST(KvErrors, ScoreProbeRejectsWhatItWasNotBuiltFor) {
  KvAttentionParams p;
  p.batch = 0;
  p.n_q_heads = 2;
  p.cache.n_kv_heads = 2;
  p.cache.layout = kv_make_layout(KvMethod::kNuq, 3, 128, 320, 1, 2, 1, 2, 64);
  p.split_tokens = 160;
  EXPECT_EQ(launch_kv_score_probe(p, nullptr), cudaSuccess);  // nothing to queue
  p.split_tokens = 100;                                       // not whole 80-token blocks
  EXPECT_EQ(launch_kv_score_probe(p, nullptr), cudaErrorInvalidValue);
  p.split_tokens = 160;
  p.n_q_heads = 3;  // not a multiple of the KV heads
  EXPECT_EQ(launch_kv_score_probe(p, nullptr), cudaErrorInvalidValue);
  p.n_q_heads = 4;  // group 2: built for 1 and 4 only
  EXPECT_EQ(launch_kv_score_probe(p, nullptr), cudaErrorNotSupported);
  p.n_q_heads = 8;
  EXPECT_EQ(launch_kv_score_probe(p, nullptr), cudaSuccess);
  EXPECT_TRUE(kv_score_probe_serves(p.cache.layout, 4));
  for (const KvLayout& other : {kv_make_layout(KvMethod::kNuq, 2, 128, 256, 1, 2, 1, 2, 64),
                                kv_make_layout(KvMethod::kNuq, 3, 64, 320, 1, 2, 1, 2, 64),
                                kv_make_layout(KvMethod::kKivi, 2, 128, 256, 32, 2, 0, 0, 0)}) {
    p.cache.layout = other;
    p.split_tokens = other.block_tokens;
    EXPECT_FALSE(kv_score_probe_serves(other, 4));
    EXPECT_EQ(launch_kv_score_probe(p, nullptr), cudaErrorNotSupported);
  }
  p.cache.layout = kv_make_layout(KvMethod::kNuq, 3, 128, 320, 1, 2, 1, 2, 64);
  p.split_tokens = 160;
  p.batch = 1;  // a launch with work and no cache to read
  EXPECT_EQ(launch_kv_score_probe(p, nullptr), cudaErrorInvalidValue);
}

TEST(KvErrors, PoolAllocationFailureNamesTheBytes) {
  KVQ_REQUIRE_GPU();
  // memcheck reports the deliberately failing cudaMalloc as an API error.
  if (test::sanitizer_run())
    GTEST_SKIP() << "the failing allocation is skipped under compute-sanitizer";
  KvCacheConfig c = nuq_config();
  c.n_pages = int64_t{1} << 24;  // ~1.7 TB of pages
  const quant::KvTables q = quantizer(3, 2, 128);
  const std::string e = error_of([&] { KvCache cache(c, &q); });
  EXPECT_NE(e.find("kv cache: cudaMalloc of "), std::string::npos) << e;
  EXPECT_NE(e.find("bytes for the page pool (16777216 pages of "), std::string::npos) << e;
}

TEST(KvErrors, FailuresLeaveTheCacheUnchanged) {
  KVQ_REQUIRE_GPU();
  KvCacheConfig c = nuq_config();
  c.page_size = 80;
  c.n_pages = 2;  // sequence 0 fills both pages
  c.max_seq_len = 400;
  const std::vector<int64_t> lengths = {160, 0};
  const test::History hist = test::random_history({160, 1}, 2, 128, 7);
  const quant::KvTables q = test::random_quantizer(hist, 3, 2, 128, 0.01, 8);
  KvCache cache(c, &q);
  test::poison(cache);
  const test::DeviceBuffer<uint16_t> dk = test::to_device(hist.k[0]),
                                     dv = test::to_device(hist.v[0]);
  const __half* k = reinterpret_cast<const __half*>(dk.data());
  const __half* v = reinterpret_cast<const __half*>(dv.data());
  // prefill takes [batch][max_tokens][heads][dim]; sequence 1 is empty.
  test::DeviceBuffer<uint16_t> k2(2 * hist.k[0].size()), v2(2 * hist.v[0].size());
  ASSERT_EQ(cudaMemcpy(k2.data(), dk.data(), dk.bytes(), cudaMemcpyDeviceToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(v2.data(), dv.data(), dv.bytes(), cudaMemcpyDeviceToDevice), cudaSuccess);
  cache.prefill(lengths, 160, reinterpret_cast<const __half*>(k2.data()),
                reinterpret_cast<const __half*>(v2.data()), nullptr);
  EXPECT_EQ(cache.free_pages(), 0);
  std::vector<std::string> problems;
  const KvState before = kv_parse_image(cache.config(), cache.snapshot(), &problems);
  ASSERT_TRUE(problems.empty());

  // Token 160 of sequence 0 needs a third page, token 0 of sequence 1 its first.
  EXPECT_EQ(error_of([&] { cache.append(k, v, nullptr); }),
            "kv cache append: out of pages: 2 sequences need 2 more pages of 80 tokens, 0 of 2 "
            "are free (raise n_pages)");
  EXPECT_EQ(error_of([&] {
              cache.prefill({5, 5}, 160, k, v, nullptr);
            }),
            "kv cache prefill: sequence 0 already holds 160 tokens (reset first)");
  EXPECT_EQ(error_of([&] { cache.append(nullptr, v, nullptr); }),
            "kv cache append: null keys or values");
  EXPECT_EQ(error_of([&] { cache.reset(3, nullptr); }),
            "kv cache reset: batch: expected 0..max_batch = 2, found 3");
  EXPECT_EQ(error_of([&] {
              cache.attend(nullptr, false, nullptr, nullptr, KvAttentionKernel::kMma, nullptr);
            }),
            "kv cache attend: null q, out or inv_freq");
  EXPECT_EQ(cache.length(0), 160);
  EXPECT_EQ(cache.length(1), 0);
  const KvState after = kv_parse_image(cache.config(), cache.snapshot(), &problems);
  EXPECT_TRUE(problems.empty());
  EXPECT_EQ(kv_compare(before, after), "");

  // An empty sequence cannot be attended; a full one cannot grow.
  test::DeviceBuffer<uint16_t> dq(2 * 4 * 128), dout(2 * 4 * 128);
  test::DeviceBuffer<float> df(64);
  EXPECT_EQ(error_of([&] {
              cache.attend(dq.data(), false, dout.data(), df.data(), KvAttentionKernel::kMma,
                           nullptr);
            }),
            "kv cache attend: sequence 1 is empty (append its token first)");
  KvCacheConfig small = nuq_config();
  small.max_seq_len = 3;
  small.max_batch = 1;
  KvCache tiny(small, &q);
  tiny.reset(1, nullptr);
  for (int i = 0; i < 3; ++i) tiny.append(k, v, nullptr);
  EXPECT_EQ(error_of([&] { tiny.append(k, v, nullptr); }),
            "kv cache append: sequence 0 is full (3 tokens, max_seq_len 3)");
  EXPECT_EQ(tiny.length(0), 3);
}

}  // namespace
}  // namespace kvq::kernels
