// quant::KvCacheFormat: which tokens a cache holds in fp16, against a plain simulation of tokens
// arriving one at a time; and what each method string makes of it (MethodSpec::kv_format).
#include <algorithm>
#include <cstdint>
#include <deque>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/common/error.h"
#include "kvq/methods/method.h"
#include "kvq/quant/kv_cache_format.h"

namespace kvq {
namespace {

using quant::KvCacheFormat;
using quant::KvCodec;

// Tokens arrive one at a time; the first n_sink stay fp16; the rest wait in an fp16 window and,
// whenever more than n_recent wait and at least `flush` of them are beyond the n_recent newest,
// the oldest `flush` are quantized together. Returns the quantized count after each arrival.
std::vector<int64_t> simulate(const KvCacheFormat& f, int64_t n_max) {
  std::vector<int64_t> quantized;
  std::deque<int64_t> window;
  int64_t nq = 0;
  for (int64_t t = 0; t < n_max; ++t) {
    if (t >= f.n_sink) window.push_back(t);
    while (static_cast<int64_t>(window.size()) - f.n_recent >= f.flush) {
      for (int64_t i = 0; i < f.flush; ++i) window.pop_front();
      nq += f.flush;
    }
    quantized.push_back(nq);
  }
  return quantized;
}

TEST(KvCacheFormat, WindowMatchesATokenByTokenSimulation) {
  for (const int64_t sink : {0, 1, 5}) {
    for (const int64_t recent : {0, 3, 128}) {
      for (const int64_t flush : {1, 32, 128}) {
        KvCacheFormat f;
        f.codec = KvCodec::kKivi;
        f.n_sink = sink;
        f.n_recent = recent;
        f.flush = flush;
        const std::vector<int64_t> want = simulate(f, 700);
        for (int64_t n = 1; n <= 700; ++n) {
          SCOPED_TRACE(testing::Message() << "sink " << sink << " recent " << recent << " flush "
                                          << flush << " n " << n);
          ASSERT_EQ(f.n_quantized(n), want[n - 1]);
          ASSERT_EQ(f.fp16_tokens(n), n - want[n - 1]);
          ASSERT_EQ(f.fp16_tail(n), std::max<int64_t>(0, n - sink) - want[n - 1]);
          for (const int64_t t :
               {int64_t{0}, sink, sink + want[n - 1] - 1, sink + want[n - 1], n - 1}) {
            if (t < 0 || t >= n) continue;
            ASSERT_EQ(f.is_fp16(t, n), t < sink || t >= sink + want[n - 1]) << "token " << t;
          }
        }
      }
    }
  }
}

TEST(KvCacheFormat, Fp16KeepsEverything) {
  const KvCacheFormat f = methods::parse_method("fp16").kv_format();
  EXPECT_FALSE(f.quantizes());
  EXPECT_EQ(f.n_quantized(1000), 0);
  EXPECT_EQ(f.fp16_tokens(1000), 1000);
}

TEST(KvCacheFormat, EachMethodFamily) {
  const KvCacheFormat kivi = methods::parse_method("kivi2-g32-r128").kv_format();
  EXPECT_EQ(kivi.codec, KvCodec::kKivi);
  EXPECT_EQ(kivi.method, "kivi2-g32-r128");
  EXPECT_EQ(kivi.n_recent, 0);
  EXPECT_EQ(kivi.flush, 128);
  EXPECT_EQ(kivi.key_time_group, 32);
  EXPECT_EQ(kivi.channel_group, 32);
  EXPECT_EQ(kivi.fp16_tail(300), 300 % 128);
  EXPECT_EQ(methods::parse_method("kivi2-g32-r0").kv_format().flush, 1);

  const KvCacheFormat nuq = methods::parse_method("nuq3-1%-sink4").kv_format();
  EXPECT_EQ(nuq.codec, KvCodec::kNuq);
  EXPECT_EQ(nuq.key_bits, 3);
  EXPECT_EQ(nuq.n_sink, 4);
  EXPECT_EQ(nuq.value_vector, quant::ValueVector::kToken);
  EXPECT_DOUBLE_EQ(nuq.outlier_fraction, 0.01);
  EXPECT_TRUE(nuq.key_outliers());
  EXPECT_EQ(nuq.fp16_tokens(1000), 4);
  EXPECT_EQ(methods::parse_method("nuq3-vhead").kv_format().value_vector,
            quant::ValueVector::kTokenHead);
  EXPECT_FALSE(methods::parse_method("nuq3").kv_format().key_outliers());
  EXPECT_TRUE(methods::parse_method("nuq3-qnorm").kv_format().qnorm);
  EXPECT_FALSE(methods::parse_method("nuq3-post").kv_format().pre_rope);

  const KvCacheFormat skvq = methods::parse_method("skvq-k2-v3-g64-w100-s2").kv_format();
  EXPECT_EQ(skvq.codec, KvCodec::kSkvq);
  EXPECT_EQ(skvq.key_bits, 2);
  EXPECT_EQ(skvq.value_bits, 3);
  EXPECT_EQ(skvq.n_recent, 100);
  EXPECT_EQ(skvq.flush, 1);
  EXPECT_EQ(skvq.channel_group, 64);
  EXPECT_EQ(skvq.fp16_tokens(1000), 102);

  EXPECT_EQ(methods::parse_method("int4-channel").kv_format().key_time_group, 128);
  EXPECT_EQ(methods::parse_method("int4-g32").kv_format().channel_group, 32);
  EXPECT_EQ(methods::parse_method("fp8-e4m3").kv_format().codec, KvCodec::kFp8);
}

TEST(KvCacheFormat, LevelAndRangeChecksNameTheProblem) {
  EXPECT_THROW(quant::check_levels("t", {-1.0f, 0.0f, 1.0f}, 2, true), Error);
  try {
    quant::check_levels("t", {-1.0f, 0.5f, 0.5f, 1.0f}, 2, true);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "t: expected strictly ascending levels, found 0.5 after 0.5 at index 2");
  }
  try {
    quant::check_levels("t", {-2.0f, -0.5f, 0.5f, 1.0f}, 2, true);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "t: expected levels in [-1, 1], found -2 at index 0");
  }
  quant::check_levels("t", {-2.0f, -0.5f, 0.5f, 1.0f}, 2, false);
  try {
    quant::check_key_ranges("r", {0.0f, 2.0f}, {1.0f, 1.0f}, 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "r: channel 1: expected finite lo <= hi, found [2, 1]");
  }
  EXPECT_THROW(quant::check_key_ranges("r", {0.0f}, {1.0f, 1.0f}, 2), Error);
}

}  // namespace
}  // namespace kvq
