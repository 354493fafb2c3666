// kvq/quant/rope: RoPE inverse frequencies against Hugging Face's fp32 computation restated in
// ATen (equal up to torch's powf, which is not correctly rounded), Llama 3 scaling's three
// bands, the fingerprint string's round trip back to the scaling, and the messages.
#include "kvq/quant/rope.h"

#include <cmath>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "kvq/artifact/fingerprint.h"
#include "kvq/model/io/config.h"
#include "support/test_support.h"

namespace kvq::quant {
namespace {

using kvq::test::error_of;

// transformers' _compute_default_rope_parameters and _compute_llama3_parameters, in fp32.
at::Tensor hf_inv_freq(double theta, int64_t head_dim, const RopeScaling& s) {
  const at::Tensor exponent =
      at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / static_cast<float>(head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(static_cast<float>(theta), exponent);
  if (s.kind == RopeScaling::Kind::None) return inv_freq;
  const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_ctx / s.low_freq_factor;
  const double high_freq_wavelen = old_ctx / s.high_freq_factor;
  const at::Tensor wavelen = 2 * M_PI / inv_freq;
  const at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  const at::Tensor smooth =
      (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  const at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  const at::Tensor is_medium =
      (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return at::where(is_medium, smoothed, scaled);
}

void expect_matches_hf(double theta, int64_t head_dim, const RopeScaling& s) {
  const std::vector<float> got = rope_inv_freq(theta, head_dim, s);
  const at::Tensor want = hf_inv_freq(theta, head_dim, s).contiguous();
  ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_FLOAT_EQ(got[i], want.data_ptr<float>()[i])
        << "theta " << theta << " head_dim " << head_dim << " i " << i;
  }
}

RopeScaling llama31() {  // Llama 3.1 8B's config.json
  RopeScaling s;
  s.kind = RopeScaling::Kind::Llama3;
  s.factor = 8.0;
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 8192;
  return s;
}

TEST(Rope, InverseFrequenciesMatchHuggingFace) {
  for (int64_t head_dim : {2, 8, 48, 64, 128}) {
    expect_matches_hf(10000.0, head_dim, {});
    expect_matches_hf(500000.0, head_dim, llama31());
  }
  const std::vector<float> f = rope_inv_freq(10000.0, 4);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_FLOAT_EQ(f[1], 0.01f);  // 10000^(-1/2)
}

TEST(Rope, Llama3ScalesOnlyLongWavelengths) {
  const std::vector<float> plain = rope_inv_freq(500000.0, 128);
  const std::vector<float> scaled = rope_inv_freq(500000.0, 128, llama31());
  int n_kept = 0, n_divided = 0, n_blended = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * M_PI / plain[i];
    if (wavelen < 8192.0 / 4) {
      EXPECT_EQ(scaled[i], plain[i]) << i;
      ++n_kept;
    } else if (wavelen > 8192.0) {
      EXPECT_EQ(scaled[i], plain[i] / 8.0f) << i;
      ++n_divided;
    } else {
      EXPECT_LT(scaled[i], plain[i]) << i;
      EXPECT_GT(scaled[i], plain[i] / 8.0f) << i;
      ++n_blended;
    }
  }
  EXPECT_GT(n_kept, 0);
  EXPECT_GT(n_divided, 0);
  EXPECT_GT(n_blended, 0);
}

TEST(Rope, FingerprintStringParsesBack) {
  model::ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 500000.0;
  c.rope_scaling = llama31();
  c.rope_scaling.low_freq_factor = 1.5;
  const artifact::ModelFingerprint m = artifact::model_fingerprint(c, "", "m");
  const RopeScaling s = artifact::parse_rope_scaling(m, "calib.h5");
  EXPECT_EQ(s.kind, RopeScaling::Kind::Llama3);
  EXPECT_EQ(s.factor, 8.0);
  EXPECT_EQ(s.low_freq_factor, 1.5);
  EXPECT_EQ(s.high_freq_factor, 4.0);
  EXPECT_EQ(s.original_max_position_embeddings, 8192);
  c.rope_scaling = {};
  EXPECT_EQ(artifact::parse_rope_scaling(artifact::model_fingerprint(c, "", "m"), "calib.h5").kind,
            RopeScaling::Kind::None);
}

TEST(Rope, Errors) {
  EXPECT_EQ(error_of([] { rope_inv_freq(10000.0, 7); }),
            "rope: expected theta > 0 and an even head_dim, found theta 10000 head_dim 7");
  EXPECT_EQ(error_of([] { rope_inv_freq(0.0, 8); }),
            "rope: expected theta > 0 and an even head_dim, found theta 0 head_dim 8");
  artifact::ModelFingerprint m;
  m.rope_scaling = "yarn(factor=4)";
  EXPECT_EQ(error_of([&] { artifact::parse_rope_scaling(m, "calib.h5"); }),
            "calib.h5@model.rope_scaling: expected none or llama3(...), found \"yarn(factor=4)\"");
}

}  // namespace
}  // namespace kvq::quant
