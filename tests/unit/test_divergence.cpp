// kvq/eval/divergence: score_next_tokens against a plain double-precision loop on small random
// logits (awkward sizes, fp32 and fp64, a reference that differs a little and a lot), identical
// logits (KL exactly 0, top-1 all), summing over batches, and the shape errors.
#include "kvq/eval/divergence.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq::eval {
namespace {

// The definition, one position at a time in double: log-softmax by max-shifted sums.
TokenAgreement score_ref(const at::Tensor& logits, const at::Tensor& ref,
                         const at::Tensor& tokens) {
  const at::Tensor x = logits.to(at::kDouble).contiguous(), r = ref.to(at::kDouble).contiguous();
  const at::Tensor tok = tokens.to(at::kLong).contiguous();
  const int64_t b = x.size(0), t = x.size(1), v = x.size(2);
  const double* px = x.data_ptr<double>();
  const double* pr = r.data_ptr<double>();
  const int64_t* pt = tok.data_ptr<int64_t>();
  auto log_softmax = [v](const double* z) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < v; ++k) m = std::max(m, z[k]);
    double s = 0;
    for (int64_t k = 0; k < v; ++k) s += std::exp(z[k] - m);
    std::vector<double> out(v);
    for (int64_t k = 0; k < v; ++k) out[k] = z[k] - m - std::log(s);
    return out;
  };
  auto argmax = [v](const double* z) {
    int64_t best = 0;
    for (int64_t k = 1; k < v; ++k)
      if (z[k] > z[best]) best = k;
    return best;
  };
  TokenAgreement out;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j + 1 < t; ++j) {
      const double* zx = px + (i * t + j) * v;
      const double* zr = pr + (i * t + j) * v;
      const std::vector<double> lp = log_softmax(zx), lq = log_softmax(zr);
      out.nll -= lp[pt[i * t + j + 1]];
      for (int64_t k = 0; k < v; ++k) out.kl += std::exp(lq[k]) * (lq[k] - lp[k]);
      out.top1 += argmax(zx) == argmax(zr);
      ++out.n;
    }
  }
  return out;
}

struct Case {
  int64_t b, t, v;
  double noise;  // logits = ref + noise * N(0, 1)
  at::ScalarType dtype;
};

TEST(ScoreNextTokens, MatchesThePlainDoubleLoop) {
  const Case cases[] = {{1, 2, 5, 0.1, at::kFloat},    {2, 17, 97, 0.01, at::kFloat},
                        {3, 33, 257, 1.0, at::kFloat}, {1, 9, 4097, 0.3, at::kFloat},
                        {2, 5, 31, 2.0, at::kDouble},  {4, 70, 1000, 0.05, at::kDouble}};
  at::manual_seed(0);
  for (const Case& c : cases) {
    const auto opt = at::TensorOptions().dtype(c.dtype);
    const at::Tensor ref = 3.0 * at::randn({c.b, c.t, c.v}, opt);
    const at::Tensor logits = ref + c.noise * at::randn({c.b, c.t, c.v}, opt);
    const at::Tensor tokens = at::randint(c.v, {c.b, c.t}, at::TensorOptions().dtype(at::kInt));
    const TokenAgreement got = score_next_tokens(logits, ref, tokens);
    const TokenAgreement want = score_ref(logits, ref, tokens);
    const std::string where = "b " + std::to_string(c.b) + " t " + std::to_string(c.t) + " v " +
                              std::to_string(c.v) + " noise " + std::to_string(c.noise);
    EXPECT_EQ(got.n, c.b * (c.t - 1)) << where;
    EXPECT_EQ(got.n, want.n) << where;
    EXPECT_EQ(got.top1, want.top1) << where;
    EXPECT_NEAR(got.nll, want.nll, 1e-12 * want.n * (1 + std::abs(want.mean_loss()))) << where;
    EXPECT_NEAR(got.kl, want.kl, 1e-12 * want.n + 1e-9 * want.kl) << where;
    EXPECT_GT(got.kl, 0) << where;
    EXPECT_DOUBLE_EQ(got.mean_loss(), got.nll / got.n) << where;
    EXPECT_DOUBLE_EQ(got.mean_kl(), got.kl / got.n) << where;
    EXPECT_GE(got.top1_rate(), 0.0) << where;
    EXPECT_LE(got.top1_rate(), 1.0) << where;
  }
}

TEST(ScoreNextTokens, IdenticalLogitsHaveNoDivergenceAndFullAgreement) {
  at::manual_seed(1);
  const at::Tensor ref = 4.0 * at::randn({3, 41, 301});
  const at::Tensor tokens = at::randint(301, {3, 41}, at::TensorOptions().dtype(at::kLong));
  // The same tensor, an equal copy, and an fp64 copy of the same values as the reference.
  for (const at::Tensor& logits : {ref, ref.clone(), ref.to(at::kDouble)}) {
    const TokenAgreement got = score_next_tokens(logits, ref, tokens);
    EXPECT_EQ(got.kl, 0.0);
    EXPECT_EQ(got.n, 3 * 40);
    EXPECT_EQ(got.top1, got.n);
    EXPECT_EQ(got.top1_rate(), 1.0);
    EXPECT_NEAR(got.nll, score_ref(ref, ref, tokens).nll, 1e-9);
  }
}

TEST(ScoreNextTokens, BatchesAddUpToTheWhole) {
  at::manual_seed(2);
  const at::Tensor ref = at::randn({4, 12, 50});
  const at::Tensor logits = ref + 0.5 * at::randn({4, 12, 50});
  const at::Tensor tokens = at::randint(50, {4, 12}, at::TensorOptions().dtype(at::kLong));
  const TokenAgreement whole = score_next_tokens(logits, ref, tokens);
  TokenAgreement parts;
  for (int64_t i = 0; i < 4; i += 2) {
    parts.add(
        score_next_tokens(logits.narrow(0, i, 2), ref.narrow(0, i, 2), tokens.narrow(0, i, 2)));
  }
  EXPECT_EQ(parts.n, whole.n);
  EXPECT_EQ(parts.top1, whole.top1);
  EXPECT_NEAR(parts.nll, whole.nll, 1e-10);
  EXPECT_NEAR(parts.kl, whole.kl, 1e-10);
}

TEST(ScoreNextTokens, OneTokenWindowsScoreNothing) {
  const at::Tensor x = at::randn({2, 1, 8});
  const TokenAgreement got = score_next_tokens(x, x, at::zeros({2, 1}, at::kLong));
  EXPECT_EQ(got.n, 0);
  EXPECT_EQ(got.nll, 0.0);
  EXPECT_EQ(got.kl, 0.0);
}

TEST(ScoreNextTokens, ShapeMismatchesNameBothShapes) {
  const at::Tensor x = at::randn({2, 5, 7});
  const at::Tensor tokens = at::zeros({2, 5}, at::kLong);
  EXPECT_EQ(test::error_of([&] {
              score_next_tokens(x, at::randn({2, 5, 8}), tokens);
            }),
            "score_next_tokens: expected logits and ref_logits of one shape [b, t, vocab], found "
            "[2, 5, 7] and [2, 5, 8]");
  EXPECT_EQ(test::error_of([&] { score_next_tokens(x.flatten(0, 1), x.flatten(0, 1), tokens); }),
            "score_next_tokens: expected logits and ref_logits of one shape [b, t, vocab], found "
            "[10, 7] and [10, 7]");
  EXPECT_EQ(test::error_of([&] {
              score_next_tokens(x, x, at::zeros({2, 4}, at::kLong));
            }),
            "score_next_tokens: expected tokens [b, t] of logits [2, 5, 7], found [2, 4]");
}

TEST(ScoreNextTokens, TokensOutsideTheVocabulary) {
  const at::Tensor x = at::randn({1, 3, 7});
  EXPECT_EQ(test::error_of([&] {
              score_next_tokens(x, x, at::full({1, 3}, 7, at::kLong));
            }),
            "score_next_tokens: expected tokens in [0, 7), found 7..7");
  EXPECT_EQ(test::error_of([&] {
              score_next_tokens(x, x, at::full({1, 3}, -1, at::kLong));
            }),
            "score_next_tokens: expected tokens in [0, 7), found -1..-1");
}

TEST(ScoreNextTokens, NonFiniteLogitsAreAnError) {
  const at::Tensor ref = at::randn({1, 4, 6});
  at::Tensor bad = ref.clone();
  bad[0][2][3] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor tokens = at::zeros({1, 4}, at::kLong);
  EXPECT_EQ(
      test::error_of([&] { score_next_tokens(bad, ref, tokens); }).rfind("loss is not finite", 0),
      0u);
}

}  // namespace
}  // namespace kvq::eval
