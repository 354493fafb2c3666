// kvq/methods/method: every method string of DESIGN.md section 3 parses into the spec it names,
// canonical names round-trip, window parameters, and malformed strings are refused with their
// exact one-line message.
#include "kvq/methods/method.h"

#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq::methods {
namespace {

using test::error_of;

TEST(MethodParse, CanonicalNamesRoundTrip) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"fp16", "fp16"},
      {"fp16-post", "fp16-post"},
      {"fp8-e4m3", "fp8-e4m3"},
      {"fp8-e5m2-post", "fp8-e5m2-post"},
      {"int4", "int4-token"},
      {"int3-token", "int3-token"},
      {"int2-token", "int2-token"},
      {"int4-channel", "int4-channel"},
      {"int4-g64", "int4-g64"},
      {"int8-post", "int8-token-post"},
      {"nuq4", "nuq4"},
      {"nuq3-1%", "nuq3-1%"},
      {"nuq3-0.5%", "nuq3-0.5%"},
      {"nuq3-0.50%", "nuq3-0.5%"},
      {"nuq3-0%", "nuq3"},
      {"nuq2-1%-sink", "nuq2-1%-sink"},
      {"nuq2-1%-sink1", "nuq2-1%-sink"},
      {"nuq2-sink4-1%", "nuq2-1%-sink4"},
      {"nuq3-qnorm-1%", "nuq3-1%-qnorm"},
      {"nuq3-qnorm-vhead-1%-sink", "nuq3-1%-sink-vhead-qnorm"},
      {"nuq3-post-1%", "nuq3-1%-post"},
      {"kivi2", "kivi2-g32-r128"},
      {"kivi4", "kivi4-g32-r128"},
      {"kivi2-g32-r128", "kivi2-g32-r128"},
      {"kivi2-r64-g16", "kivi2-g16-r64"},
      {"skvq-k2-v2-g128-w128", "skvq-k2-v2-g128-w128"},
      {"skvq-k2-v2-g128-w128-s5", "skvq-k2-v2-g128-w128"},
      {"skvq-v3-k4-w32-g64-s0-post", "skvq-k4-v3-g64-w32-s0-post"},
  };
  for (const auto& [text, canonical] : cases) {
    const MethodSpec s = parse_method(text);
    EXPECT_EQ(s.name(), canonical) << text;
    EXPECT_EQ(parse_method(s.name()), s) << text;
    EXPECT_EQ(parse_method(s.name()).name(), canonical) << text;
  }
}

TEST(MethodParse, Fields) {
  const MethodSpec n = parse_method("nuq3-1%-sink-vhead-post");
  EXPECT_EQ(n.kind, MethodKind::kNuq);
  EXPECT_EQ(n.key_bits, 3);
  EXPECT_EQ(n.value_bits, 3);
  EXPECT_DOUBLE_EQ(n.outlier_fraction(), 0.01);
  EXPECT_EQ(n.n_sink, 1);
  EXPECT_FALSE(n.qnorm);
  EXPECT_TRUE(n.value_per_head);
  EXPECT_TRUE(parse_method("nuq2-qnorm").qnorm);
  EXPECT_FALSE(parse_method("nuq2").value_per_head);
  EXPECT_TRUE(n.post_rope);
  EXPECT_TRUE(n.needs_calib());
  EXPECT_EQ(n.window_kind(), WindowKind::kNone);

  const MethodSpec k = parse_method("kivi2");
  EXPECT_EQ(k.kind, MethodKind::kKivi);
  EXPECT_EQ(k.group, 32);
  EXPECT_EQ(k.window, 128);
  EXPECT_EQ(k.key_time_group(), 32);
  EXPECT_EQ(k.window_kind(), WindowKind::kResidual);
  EXPECT_FALSE(k.needs_calib());

  const MethodSpec s = parse_method("skvq-k2-v3-g128-w64");
  EXPECT_EQ(s.key_bits, 2);
  EXPECT_EQ(s.value_bits, 3);
  EXPECT_EQ(s.group, 128);
  EXPECT_EQ(s.window, 64);
  EXPECT_EQ(s.n_sink, 5);
  EXPECT_EQ(s.window_kind(), WindowKind::kSliding);
  EXPECT_EQ(s.key_time_group(), 0);

  EXPECT_EQ(parse_method("int4-channel").key_time_group(), 128);
  EXPECT_EQ(parse_method("int4-g64").group, 64);
  EXPECT_EQ(parse_method("int4").granularity, IntGranularity::kToken);
  EXPECT_EQ(parse_method("fp8-e5m2").fp8, Fp8Format::kE5M2);
  EXPECT_EQ(parse_method("fp8-e4m3").key_bits, 8);
  EXPECT_EQ(parse_method("fp16").key_bits, 16);
}

TEST(MethodParse, Fp16TokensAtAContextLength) {
  const MethodSpec s = parse_method("skvq-k2-v2-g128-w128");
  EXPECT_EQ(s.fp16_tail(1000), 128);
  EXPECT_EQ(s.fp16_tokens(1000), 133);
  EXPECT_EQ(s.fp16_tokens(100), 100);  // 5 sinks + the other 95 in the window
  EXPECT_EQ(s.fp16_tokens(3), 3);
  const MethodSpec k = parse_method("kivi2-g32-r128");
  EXPECT_EQ(k.fp16_tail(300), 300 % 128);
  EXPECT_EQ(k.fp16_tail(256), 0);
  EXPECT_EQ(k.fp16_tokens(100), 100);
  const MethodSpec n = parse_method("nuq3-1%-sink4");
  EXPECT_EQ(n.fp16_tokens(1000), 4);
  EXPECT_EQ(n.fp16_tokens(2), 2);
  EXPECT_EQ(parse_method("nuq3").fp16_tokens(1000), 0);
}

TEST(MethodParse, BadStringsExactMessages) {
  const std::string forms = std::string(" (valid: ") + method_forms() + ")";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "method '': empty method string"},
      {"foo", "method 'foo': unknown method family 'foo'"},
      {"nuq5", "method 'nuq5': nuq bits: expected 2..4, found 5"},
      {"nuq1", "method 'nuq1': nuq bits: expected 2..4, found 1"},
      {"int9", "method 'int9': int bits: expected 1..8, found 9"},
      {"int0", "method 'int0': int bits: expected 1..8, found 0"},
      {"int04", "method 'int04': unknown method family 'int04'"},
      {"int4-g0", "method 'int4-g0': group: expected >= 1 channels, found 0"},
      {"int4-token-channel",
       "method 'int4-token-channel': 'channel' repeats the granularity option"},
      {"int4-bogus", "method 'int4-bogus': unknown option 'bogus' for int4"},
      {"nuq3-1%-2%", "method 'nuq3-1%-2%': '2%' repeats the outlier option"},
      {"nuq3--1%", "method 'nuq3--1%': empty part between '-'"},
      {"nuq3-100%", "method 'nuq3-100%': outliers: expected 0 <= P < 100 percent, found 100%"},
      {"nuq3-x%", "method 'nuq3-x%': unknown option 'x%' for nuq3"},
      {"nuq3-post-post", "method 'nuq3-post-post': 'post' given twice"},
      {"nuq3-vhead-vhead", "method 'nuq3-vhead-vhead': 'vhead' repeats the vhead option"},
      {"nuq3-noqnorm", "method 'nuq3-noqnorm': unknown option 'noqnorm' for nuq3"},
      {"kivi2-g32-r100",
       "method 'kivi2-g32-r100': residual: expected a multiple of the group size 32, found 100"},
      {"kivi9", "method 'kivi9': kivi bits: expected 1..8, found 9"},
      {"skvq-k2-v2-g128", "method 'skvq-k2-v2-g128': skvq needs -wN"},
      {"skvq-k9-v2-g128-w128", "method 'skvq-k9-v2-g128-w128': key bits: expected 1..8, found 9"},
      {"skvq-k2-v2-g0-w128", "method 'skvq-k2-v2-g0-w128': group: expected >= 1 channels, found 0"},
      {"fp8", "method 'fp8': fp8 needs a format: e4m3 or e5m2"},
      {"fp8-e3m4", "method 'fp8-e3m4': fp8 format: expected e4m3 or e5m2, found 'e3m4'"},
      {"fp16-x", "method 'fp16-x': unknown option 'x' for fp16"},
  };
  for (const auto& [text, message] : cases) {
    const std::string& t = text;  // clang 14 cannot capture a structured binding
    EXPECT_EQ(error_of([&] { parse_method(t); }), message + forms) << text;
  }
}

// A list flag's items: each parsed in order, a repeat refused whether spelled alike or not, a bad
// item refused by parse_method's own message.
TEST(MethodParse, Lists) {
  const std::vector<MethodSpec> specs = parse_methods({"nuq3-1%", "int4", "fp16"}, "--methods");
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].name(), "nuq3-1%");
  EXPECT_EQ(specs[1].name(), parse_method("int4").name());
  EXPECT_EQ(specs[2].kind, MethodKind::kFp16);
  EXPECT_TRUE(parse_methods({}, "--methods").empty());
  EXPECT_EQ(error_of([] {
              parse_methods({"nuq3", "int4", "nuq3"}, "--methods");
            }),
            "--methods: 'nuq3' is given twice");
  EXPECT_EQ(
      error_of([] {
        parse_methods({"int4", "int4-token"}, "--kv");
      }),
      "--kv: 'int4' and 'int4-token' are the same method (" + parse_method("int4").name() + ")");
  EXPECT_EQ(error_of([] {
              parse_methods({"nuq3", "nuq9"}, "--methods");
            }),
            std::string("method 'nuq9': nuq bits: expected 2..4, found 9 (valid: ") +
                method_forms() + ")");
}

}  // namespace
}  // namespace kvq::methods
