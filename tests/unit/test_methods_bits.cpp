// kvq/methods bits accounting (bits.h, schemas/quant-2.md) on hand-computed cases: codes, fp16
// scales per vector or group, offline per-channel ranges amortized over the context, 32 bits per
// outlier, fp16 sink and window tokens; the cache mean over layers with mixed bits.
#include "kvq/methods/bits.h"

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq::methods {
namespace {

using test::error_of;

Quantizer free_quantizer(const std::string& method) {
  return Quantizer(parse_method(method), {}, 0, 0);
}

// nuq with one layer per entry of `bits` (keys and values), nominal fraction f.
Quantizer nuq(const std::string& method, const std::vector<int>& bits, int64_t h, int64_t d) {
  std::vector<LayerParams> layers;
  const MethodSpec spec = parse_method(method);
  for (int b : bits) {
    LayerParams l;
    for (TensorParams* p : {&l.key, &l.value}) {
      p->bits = b;
      p->outlier_fraction = spec.outlier_fraction();
      for (int j = 0; j < (1 << b); ++j)
        p->levels_encode.push_back(-1.0f + 2.0f * j / ((1 << b) - 1));
      p->levels_decode = p->levels_encode;
    }
    l.key.lo.assign(h * d, -1.0f);
    l.key.hi.assign(h * d, 1.0f);
    layers.push_back(l);
  }
  return Quantizer(spec, layers, h, d);
}

TEST(MethodsBits, UniformMethods) {
  // int4-token, 2 heads x 32: 4 bits + (16 + 16) / 32 per element.
  EXPECT_DOUBLE_EQ(tensor_bits(free_quantizer("int4"), true, 0, 2, 32, 100, 0).total(), 5.0);
  // int3-g8: 3 + 32 / 8.
  EXPECT_DOUBLE_EQ(tensor_bits(free_quantizer("int3-g8"), false, 0, 2, 32, 100, 0).total(), 7.0);
  // int2-channel keys over 1000 tokens: 2 + 32 * ceil(1000 / 128) / 1000 = 2 + 32 * 8 / 1000.
  EXPECT_DOUBLE_EQ(tensor_bits(free_quantizer("int2-channel"), true, 0, 2, 32, 1000, 0).total(),
                   2.256);
  EXPECT_DOUBLE_EQ(tensor_bits(free_quantizer("int2-channel"), false, 0, 2, 32, 1000, 0).total(),
                   3.0);
  EXPECT_DOUBLE_EQ(tensor_bits(free_quantizer("fp8-e4m3"), true, 0, 2, 32, 10, 0).total(), 8.0);
  EXPECT_DOUBLE_EQ(tensor_bits(free_quantizer("fp16"), true, 0, 2, 32, 10, 0).total(), 16.0);
}

TEST(MethodsBits, KiviResidualAndGroups) {
  // n = 1000, R = 128: 1000 mod 128 = 104 fp16 tokens, 896 quantized (28 groups of 32).
  const Quantizer q = free_quantizer("kivi2-g32-r128");
  const BitsBreakdown k = tensor_bits(q, true, 0, 2, 32, 1000, 0);
  EXPECT_DOUBLE_EQ(k.fp16, 16 * 0.104);
  EXPECT_DOUBLE_EQ(k.codes, 2 * 0.896);
  EXPECT_DOUBLE_EQ(k.params, 32.0 * 64 * 28 / 64000);  // per channel per group of 32 tokens
  const BitsBreakdown v = tensor_bits(q, false, 0, 2, 32, 1000, 0);
  EXPECT_DOUBLE_EQ(v.params, 32.0 * 896 * 2 / 64000);  // per token per head (G = head_dim)
  EXPECT_DOUBLE_EQ(k.total(), 1.664 + 1.792 + 0.896);
}

Quantizer skvq(const std::string& method, int64_t channels) {
  LayerParams l;
  l.key.bits = l.value.bits = 2;
  for (int64_t c = 0; c < channels; ++c) l.key.perm.push_back(c);
  l.value.perm = l.key.perm;
  return Quantizer(parse_method(method), {l}, 2, channels / 2);
}

TEST(MethodsBits, SkvqSinksAndWindow) {
  // 5 sinks + 128 window = 133 fp16 tokens of 1000; 867 quantized, one group of 64 channels.
  const BitsBreakdown b = tensor_bits(skvq("skvq-k2-v2-g128-w128", 64), true, 0, 2, 32, 1000, 0);
  EXPECT_DOUBLE_EQ(b.fp16, 16 * 0.133);
  EXPECT_DOUBLE_EQ(b.codes, 2 * 0.867);
  EXPECT_DOUBLE_EQ(b.params, 32.0 * 867 / 64000);
  // A context inside the window is all fp16.
  EXPECT_DOUBLE_EQ(tensor_bits(skvq("skvq-k2-v2-g128-w128", 64), true, 0, 2, 32, 100, 0).total(),
                   16.0);
  // Groups of 16 of the 64 channels: 4 groups per token.
  EXPECT_DOUBLE_EQ(tensor_bits(skvq("skvq-k2-v2-g16-w0-s0", 64), false, 0, 2, 32, 10, 0).total(),
                   2 + 32.0 * 4 / 64);
}

TEST(MethodsBits, NuqOutliersOfflineRangesAndSinks) {
  const Quantizer q = nuq("nuq3-1%", {3}, 2, 32);
  // Keys: 3 + 64 * 64 / 64000 (fp32 lo, hi per channel) + 32 * 0.01.
  const BitsBreakdown k = tensor_bits(q, true, 0, 2, 32, 1000, 0.01);
  EXPECT_DOUBLE_EQ(k.params, 0.064);
  EXPECT_DOUBLE_EQ(k.outliers, 0.32);
  EXPECT_DOUBLE_EQ(k.total(), 3.384);
  // Values per token (2 heads x 32 = 64 elements): 3 + 32 / 64 + 32 * 2 / 64 (nominal 1 outlier
  // per side of 64).
  EXPECT_DOUBLE_EQ(nominal_outlier_rate(q, false, 0, 2, 32), 0.03125);
  EXPECT_DOUBLE_EQ(tensor_bits(q, false, 0, 2, 32, 1000, 0.03125).total(), 4.5);
  // -vhead, per token and head: 3 + 32 / 32 + 32 * 2 / 32 (1 outlier per side of 32).
  const Quantizer h = nuq("nuq3-1%-vhead", {3}, 2, 32);
  EXPECT_DOUBLE_EQ(nominal_outlier_rate(h, false, 0, 2, 32), 0.0625);
  EXPECT_DOUBLE_EQ(tensor_bits(h, false, 0, 2, 32, 1000, 0.0625).total(), 6.0);
  // One sink token of 10: 16 / 10 + 9 / 10 * (3 + 0.5) (one offset/scale pair per 64-element
  // token).
  const Quantizer s = nuq("nuq3-sink", {3}, 2, 32);
  EXPECT_DOUBLE_EQ(tensor_bits(s, false, 0, 2, 32, 10, 0).total(), 1.6 + 0.9 * 3.5);
}

TEST(MethodsBits, CacheMeanOverLayersWithMixedBitsAndCounters) {
  const Quantizer q = nuq("nuq2", {2, 4}, 1, 32);
  QuantCounters none;
  // Layer 0: keys 2 + 64/n, values 2 + 1; layer 1: keys 4 + 64/n, values 4 + 1; n = 64.
  EXPECT_DOUBLE_EQ(bits_per_element(q, 2, 1, 32, 64, none, none), (3 + 3 + 5 + 5) / 4.0);
  const Quantizer o = nuq("nuq2-1%", {2, 2}, 1, 32);
  QuantCounters k{1000, 10}, v{1000, 50};
  const BitsBreakdown b = cache_bits(o, 2, 1, 32, 64, k, v);
  EXPECT_DOUBLE_EQ(b.outliers, (32 * 0.01 + 32 * 0.05) / 2);
  EXPECT_EQ(error_of([&] { cache_bits(o, 3, 1, 32, 64, k, v); }),
            "bits per element: the quantizer has 2 layers, found 3");
  EXPECT_EQ(error_of([&] { tensor_bits(o, true, 0, 1, 32, 0, 0); }),
            "bits per element: context: expected >= 1 tokens, found 0");
}

}  // namespace
}  // namespace kvq::methods
