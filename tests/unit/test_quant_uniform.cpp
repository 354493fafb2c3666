// kvq/quant/uniform: grouped uniform fake quantization. Bit-exact against a naive per-element
// loop written from the formulas in uniform.h, for both axes, awkward shapes and group sizes
// (short last groups), every bits, symmetric and asymmetric, with and without clipping; the
// error bound scale / 2; constant groups; in-place use; bits per element; messages.
#include "kvq/quant/uniform.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq::quant {
namespace {

using kvq::test::error_of;

// One group's elements, listed explicitly so the naive reference shares no indexing with the
// code under test.
struct Group {
  std::vector<int64_t> index;  // flat indices into the [n_rows, n_cols] matrix
};

std::vector<Group> groups_of(int64_t n_rows, int64_t n_cols, GroupAxis axis, int64_t group) {
  std::vector<Group> groups;
  const int64_t outer = axis == GroupAxis::kRow ? n_rows : n_cols;
  const int64_t inner = axis == GroupAxis::kRow ? n_cols : n_rows;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t start = 0; start < inner; start += group) {
      Group g;
      for (int64_t i = start; i < std::min(inner, start + group); ++i) {
        g.index.push_back(axis == GroupAxis::kRow ? o * n_cols + i : i * n_cols + o);
      }
      groups.push_back(g);
    }
  }
  return groups;
}

// Naive fake quantization, straight from the formulas in uniform.h.
std::vector<float> naive(const std::vector<float>& x, int64_t n_rows, int64_t n_cols,
                         const UniformConfig& cfg) {
  std::vector<float> out(x.size());
  for (const Group& g : groups_of(n_rows, n_cols, cfg.axis, cfg.group)) {
    if (cfg.mode == UniformMode::kAsymmetric) {
      float lo = x[g.index[0]], hi = x[g.index[0]];
      for (int64_t i : g.index) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
      }
      const float max_code = static_cast<float>((1 << cfg.bits) - 1);
      float scale = (hi - lo) / max_code;
      float zero = lo;
      if (cfg.clip != 1.0f) {
        scale *= cfg.clip;
        zero *= cfg.clip;
      }
      for (int64_t i : g.index) {
        float q = scale == 0.0f ? 0.0f : std::nearbyint((x[i] - zero) / scale);
        q = std::min(std::max(q, 0.0f), max_code);
        out[i] = q * scale + zero;
      }
    } else {
      float max_abs = 0.0f;
      for (int64_t i : g.index) max_abs = std::max(max_abs, std::fabs(x[i]));
      const float max_code = static_cast<float>((1 << (cfg.bits - 1)) - 1);
      const float scale = (max_abs * cfg.clip) / max_code;
      for (int64_t i : g.index) {
        float q = scale == 0.0f ? 0.0f : std::nearbyint(x[i] / scale);
        q = std::min(std::max(q, -max_code), max_code);
        out[i] = q * scale;
      }
    }
  }
  return out;
}

std::vector<float> random_matrix(int64_t n_rows, int64_t n_cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.2f, 1.5f);
  std::vector<float> x(static_cast<size_t>(n_rows * n_cols));
  for (float& v : x) v = normal(rng);
  return x;
}

TEST(Uniform, MatchesNaiveLoop) {
  struct Shape {
    int64_t n_rows, n_cols;
  };
  const Shape shapes[] = {{1, 1}, {5, 7}, {17, 33}, {64, 128}};
  uint32_t seed = 0;
  int n_cases = 0;
  for (const Shape& s : shapes) {
    const std::vector<float> x = random_matrix(s.n_rows, s.n_cols, ++seed);
    for (GroupAxis axis : {GroupAxis::kRow, GroupAxis::kColumn}) {
      const int64_t whole = axis == GroupAxis::kRow ? s.n_cols : s.n_rows;
      for (int64_t group : {int64_t{1}, int64_t{3}, int64_t{8}, whole, whole + 5}) {
        for (UniformMode mode : {UniformMode::kAsymmetric, UniformMode::kSymmetric}) {
          for (int bits = mode == UniformMode::kSymmetric ? 2 : 1; bits <= 8; ++bits) {
            for (float clip : {1.0f, 0.9f, 0.5f}) {
              UniformConfig cfg;
              cfg.bits = bits;
              cfg.mode = mode;
              cfg.axis = axis;
              cfg.group = group;
              cfg.clip = clip;
              std::vector<float> out(x.size(), std::numeric_limits<float>::quiet_NaN());
              uniform_fake_quant_ref(x.data(), s.n_rows, s.n_cols, cfg, out.data());
              const std::vector<float> expected = naive(x, s.n_rows, s.n_cols, cfg);
              for (size_t i = 0; i < x.size(); ++i) {
                ASSERT_EQ(out[i], expected[i])
                    << "shape " << s.n_rows << "x" << s.n_cols << " axis " << int(axis) << " group "
                    << group << " mode " << int(mode) << " bits " << bits << " clip " << clip
                    << " element " << i;
              }
              ++n_cases;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(n_cases, 4 * 2 * 5 * 15 * 3);
}

TEST(Uniform, ErrorAtMostHalfAScaleWithoutClipping) {
  const int64_t n_rows = 33, n_cols = 96;
  const std::vector<float> x = random_matrix(n_rows, n_cols, 77);
  for (int bits = 1; bits <= 8; ++bits) {
    for (GroupAxis axis : {GroupAxis::kRow, GroupAxis::kColumn}) {
      UniformConfig cfg;
      cfg.bits = bits;
      cfg.axis = axis;
      cfg.group = 32;
      std::vector<float> out(x.size());
      uniform_fake_quant_ref(x.data(), n_rows, n_cols, cfg, out.data());
      for (const Group& g : groups_of(n_rows, n_cols, axis, cfg.group)) {
        float lo = x[g.index[0]], hi = lo;
        for (int64_t i : g.index) {
          lo = std::min(lo, x[i]);
          hi = std::max(hi, x[i]);
        }
        const float scale = (hi - lo) / static_cast<float>((1 << bits) - 1);
        for (int64_t i : g.index) {
          ASSERT_LE(std::fabs(out[i] - x[i]), scale / 2 + 1e-5f) << "bits " << bits;
        }
      }
    }
  }
}

TEST(Uniform, ConstantGroupsShortLastGroupInPlace) {
  // Row 0: a constant group (scale 0 -> the minimum itself) and a short last group of two.
  std::vector<float> x = {2.5f, 2.5f, 2.5f, 2.5f, -1.0f, 0.0f, 3.0f, 7.0f, 100.0f, 200.0f};
  UniformConfig cfg;
  cfg.bits = 2;
  cfg.group = 4;
  std::vector<float> out(x.size());
  uniform_fake_quant_ref(x.data(), 1, 10, cfg, out.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], 2.5f);
  EXPECT_EQ(out[4], -1.0f);
  EXPECT_EQ(out[7], 7.0f);
  EXPECT_EQ(out[8], 100.0f);  // the short group's own range, not its neighbours'
  EXPECT_EQ(out[9], 200.0f);
  // Symmetric: an all-zero group has scale 0 and stays zero; a constant one keeps its value.
  cfg.mode = UniformMode::kSymmetric;
  std::vector<float> z = {0.0f, 0.0f, 0.0f, 0.0f, 1.5f, 1.5f, 1.5f, 1.5f};
  std::vector<float> z_out(z.size());
  uniform_fake_quant_ref(z.data(), 1, 8, cfg, z_out.data());
  EXPECT_EQ(z_out, z);
  // In place equals out of place.
  const std::vector<float> m = random_matrix(9, 13, 5);
  for (GroupAxis axis : {GroupAxis::kRow, GroupAxis::kColumn}) {
    cfg.axis = axis;
    cfg.group = 4;
    std::vector<float> separate(m.size()), inplace = m;
    uniform_fake_quant_ref(m.data(), 9, 13, cfg, separate.data());
    uniform_fake_quant_ref(inplace.data(), 9, 13, cfg, inplace.data());
    EXPECT_EQ(inplace, separate);
  }
  // Empty matrices are a no-op.
  uniform_fake_quant_ref(nullptr, 0, 5, cfg, nullptr);
  uniform_fake_quant_ref(nullptr, 5, 0, cfg, nullptr);
}

TEST(Uniform, SymmetricCoding) {
  const float x[] = {-3.0f, 0.4f, 1.0f, 2.0f};
  const float scale = symmetric_scale_ref(x, 4, 1, /*bits=*/3, /*clip=*/1.0f);
  EXPECT_EQ(scale, 1.0f);  // max|x| = 3 over 2^(3-1) - 1 = 3 codes per side
  EXPECT_EQ(symmetric_encode(-3.0f, scale, 3), -3);
  EXPECT_EQ(symmetric_encode(0.5f, scale, 3), 0);  // half to even
  EXPECT_EQ(symmetric_encode(1.5f, scale, 3), 2);
  EXPECT_EQ(symmetric_encode(9.0f, scale, 3), 3);
  EXPECT_EQ(symmetric_encode(-std::numeric_limits<float>::infinity(), scale, 3), -3);
  EXPECT_EQ(symmetric_encode(std::numeric_limits<float>::quiet_NaN(), scale, 3), 0);
  EXPECT_EQ(symmetric_decode(-2, scale), -2.0f);
  EXPECT_EQ(symmetric_scale_ref(x, 4, 1, 3, 0.5f), 0.5f);
}

TEST(Uniform, BitsPerElement) {
  UniformConfig cfg;
  cfg.bits = 4;
  cfg.group = 128;
  EXPECT_DOUBLE_EQ(uniform_bits_per_element(cfg), 4.25);
  cfg.mode = UniformMode::kSymmetric;
  EXPECT_DOUBLE_EQ(uniform_bits_per_element(cfg), 4.125);
  cfg.mode = UniformMode::kAsymmetric;
  cfg.bits = 2;
  cfg.group = 32;
  EXPECT_DOUBLE_EQ(uniform_bits_per_element(cfg), 3.0);
  cfg.group = 1;
  EXPECT_DOUBLE_EQ(uniform_bits_per_element(cfg), 34.0);
}

TEST(Uniform, Errors) {
  std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  std::vector<float> out(6, 9.0f);
  UniformConfig cfg;
  cfg.group = 2;
  auto run = [&](const UniformConfig& c) {
    return error_of([&] { uniform_fake_quant_ref(x.data(), 2, 3, c, out.data()); });
  };
  UniformConfig bad = cfg;
  bad.bits = 0;
  EXPECT_EQ(run(bad), "bits: expected 1..8, found 0");
  bad.bits = 9;
  EXPECT_EQ(run(bad), "bits: expected 1..8, found 9");
  bad.bits = 1;
  bad.mode = UniformMode::kSymmetric;
  EXPECT_EQ(run(bad), "bits: expected 2..8 for symmetric quantization, found 1");
  bad = cfg;
  bad.group = 0;
  EXPECT_EQ(run(bad), "group: expected >= 1 elements, found 0");
  bad = cfg;
  bad.clip = 0.0f;
  EXPECT_EQ(run(bad), "clip ratio: expected 0 < r <= 1, found 0");
  bad.clip = 1.5f;
  EXPECT_EQ(run(bad), "clip ratio: expected 0 < r <= 1, found 1.5");
  EXPECT_EQ(error_of([&] { uniform_fake_quant_ref(x.data(), -1, 3, cfg, out.data()); }),
            "uniform_fake_quant_ref: n_rows: expected >= 0, found -1");
  x[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(run(cfg), "uniform_fake_quant_ref: x[1][2]: expected a finite value, found nan");
  EXPECT_EQ(out, std::vector<float>(6, 9.0f));  // nothing written
  EXPECT_EQ(error_of([&] { symmetric_scale_ref(x.data(), 6, 1, 4, 1.0f); }),
            "symmetric_scale_ref: element 5 of 6: expected a finite value, found nan");
}

}  // namespace
}  // namespace kvq::quant
