// kvq/methods Quantizer: the LibTorch path of every method equals the CPU reference loop over
// lib/kvq/quant bit for bit (random inputs with constant vectors and ties, awkward sizes, real
// K/V of wt2-llama-1m); int-token is the README's formula literally; nuq without Q-Norm is
// kv_format's reference; outliers are restored exactly; KIVI groups along t and channels; SKVQ's
// permutation is undone; fp8 rounding against a table of every fp8 value; dtypes, strides,
// empty inputs and bad inputs.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/methods/detail.h"
#include "kvq/methods/quantizer.h"
#include "kvq/model/io/safetensors.h"
#include "kvq/quant/kv_format.h"
#include "support/test_support.h"

namespace kvq::methods {
namespace {

using test::error_of;

// Random normal K/V [b, t, h, d] with a constant vector, a constant channel run, repeated values
// (ties) and a few large outliers.
at::Tensor awkward_input(int64_t b, int64_t t, int64_t h, int64_t d, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn({b, t, h, d}, at::kFloat);
  if (t > 3) x[0][3][h - 1].fill_(0.7f);  // a constant (token, head) vector
  if (t > 5)
    x[b - 1].narrow(0, 0, 5).select(2, 1).fill_(-1.25f);  // channel 1 constant over 5 tokens
  x[0][0][0][0] = 9.5f;                                   // outliers
  x[b - 1][t - 1][0][d - 1] = -7.25f;
  if (d > 4) x[0][t / 2][0].narrow(0, 0, 4).fill_(0.5f);  // ties inside one vector
  return x;
}

std::vector<float> ascending_levels(int bits, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(size_t{1} << bits);
  for (float& x : v) x = u(rng);
  std::sort(v.begin(), v.end());
  v.front() = -0.95f;
  v.back() = 0.9f;
  for (size_t i = 1; i < v.size(); ++i) v[i] = std::max(v[i], v[i - 1] + 0.01f);
  return v;
}

// One layer of hand-made parameters for the methods that need them.
Quantizer make_quantizer(const std::string& method, int64_t h, int64_t d, uint64_t seed = 1) {
  const MethodSpec spec = parse_method(method);
  const int64_t channels = h * d;
  if (!spec.needs_calib() && spec.kind != MethodKind::kFp8) return Quantizer(spec, {}, 0, 0);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  LayerParams l;
  for (TensorParams* p : {&l.key, &l.value}) {
    p->bits = p == &l.key ? spec.key_bits : spec.value_bits;
    p->outlier_fraction = spec.outlier_fraction();
    if (spec.kind == MethodKind::kNuq) {
      p->levels_encode = ascending_levels(p->bits, seed + (p == &l.key));
      p->levels_decode = p->levels_encode;
      if (spec.qnorm) {
        for (float& v : p->levels_decode) v = v * 1.1f + 0.01f;
      }
    }
    if (spec.kind == MethodKind::kSkvq) {
      p->perm.resize(channels);
      std::iota(p->perm.begin(), p->perm.end(), int64_t{0});
      std::shuffle(p->perm.begin(), p->perm.end(), rng);
      p->clip = p == &l.key ? 0.85f : 1.0f;
    }
  }
  if (spec.kind == MethodKind::kNuq) {
    for (int64_t c = 0; c < channels; ++c) {
      l.key.lo.push_back(-1.5f - u(rng));
      l.key.hi.push_back(1.2f + u(rng));
    }
    l.key.lo[1] = l.key.hi[1] = 0.25f;  // a constant channel: scale 0
  }
  if (spec.kind == MethodKind::kFp8) l.key.amax = 2.0f;  // calibrated (saturates), values dynamic
  return Quantizer(spec, {l}, h, d);
}

void expect_same(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
  const at::Tensor fa = a.to(at::kFloat).contiguous(), fb = b.to(at::kFloat).contiguous();
  const at::Tensor diff = (fa != fb);
  if (diff.any().item<bool>()) {
    const int64_t i = diff.reshape({-1}).nonzero()[0].item<int64_t>();
    FAIL() << what << ": " << diff.sum().item<int64_t>() << " of " << fa.numel()
           << " elements differ; first at flat " << i << ": " << fa.reshape({-1})[i].item<float>()
           << " vs reference " << fb.reshape({-1})[i].item<float>();
  }
}

void expect_torch_matches_reference(const Quantizer& q, const at::Tensor& x,
                                    const std::string& what) {
  for (const bool key : {true, false}) {
    QuantCounters ct, cr;
    const at::Tensor t = key ? q.quantize_keys(0, x, &ct) : q.quantize_values(0, x, &ct);
    const at::Tensor r = key ? q.quantize_keys_ref(0, x, &cr) : q.quantize_values_ref(0, x, &cr);
    expect_same(t, r, what + (key ? " keys" : " values"));
    EXPECT_EQ(ct.elements, x.numel()) << what;
    EXPECT_EQ(cr.elements, x.numel()) << what;
    EXPECT_EQ(ct.outliers, cr.outliers) << what << (key ? " keys" : " values");
  }
}

const std::vector<std::string> kMethods = {"fp16",
                                           "fp8-e4m3",
                                           "fp8-e5m2",
                                           "int1",
                                           "int2",
                                           "int3-token",
                                           "int4",
                                           "int8",
                                           "int4-channel",
                                           "int3-g8",
                                           "int3-g5",
                                           "int2-g64",
                                           "kivi2-g8-r16",
                                           "kivi4",
                                           "kivi2-g5-r10",
                                           "skvq-k2-v3-g8-w4",
                                           "skvq-k4-v2-g5-w4-s0",
                                           "skvq-k3-v3-g128-w128",
                                           "nuq2",
                                           "nuq3-1%",
                                           "nuq4-5%",
                                           "nuq2-1%-vhead",
                                           "nuq3-qnorm",
                                           "nuq4-1%-vhead-qnorm",
                                           "nuq3-0.5%-sink-post"};

TEST(MethodsQuantize, TorchEqualsReferenceOnRandomInputs) {
  for (const std::string& method : kMethods) {
    for (const auto& shape :
         std::vector<std::vector<int64_t>>{{2, 37, 3, 16}, {1, 1, 1, 8}, {1, 130, 2, 32}}) {
      const Quantizer q = make_quantizer(method, shape[2], shape[3]);
      const at::Tensor x = awkward_input(shape[0], shape[1], shape[2], shape[3], 7);
      expect_torch_matches_reference(q, x,
                                     method + " [" + std::to_string(shape[0]) + "," +
                                         std::to_string(shape[1]) + "," + std::to_string(shape[2]) +
                                         "," + std::to_string(shape[3]) + "]");
    }
  }
}

// The same on a GPU, where LibTorch's kernels differ from the CPU's (skips without one).
TEST(MethodsQuantize, CudaEqualsReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (const std::string& method : kMethods) {
    for (const auto& shape :
         std::vector<std::vector<int64_t>>{{2, 37, 3, 16}, {1, 1, 1, 8}, {3, 517, 2, 128}}) {
      const Quantizer q = make_quantizer(method, shape[2], shape[3]);
      const at::Tensor x = awkward_input(shape[0], shape[1], shape[2], shape[3], 21);
      for (const bool key : {true, false}) {
        QuantCounters ct, cr;
        const at::Tensor t = key ? q.quantize_keys(0, x.to(at::kCUDA), &ct)
                                 : q.quantize_values(0, x.to(at::kCUDA), &ct);
        ASSERT_TRUE(t.is_cuda()) << method;
        const at::Tensor r =
            key ? q.quantize_keys_ref(0, x, &cr) : q.quantize_values_ref(0, x, &cr);
        expect_same(t.cpu(), r, method + (key ? " keys on cuda" : " values on cuda"));
        EXPECT_EQ(ct.outliers, cr.outliers) << method;
      }
    }
  }
}

TEST(MethodsQuantize, TorchEqualsReferenceOnRealKV) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m/reference.safetensors");
  const model::SafetensorsFile file(test::data_path("models/wt2-llama-1m/reference.safetensors"));
  for (int layer = 0; layer < 4; ++layer) {
    for (const char* kind : {"k", "v"}) {
      const model::TensorView& view = file.get("layers." + std::to_string(layer) + "." + kind);
      ASSERT_EQ(view.shape, (std::vector<int64_t>{64, 64}));
      at::Tensor x = at::empty({1, 64, 2, 32}, at::kFloat);
      std::memcpy(x.data_ptr<float>(), view.data, view.n_bytes);
      for (const std::string& method : kMethods) {
        expect_torch_matches_reference(make_quantizer(method, 2, 32), x,
                                       method + " layers." + std::to_string(layer) + "." + kind);
      }
    }
  }
}

TEST(MethodsQuantize, IntTokenIsTheReadmeFormulaLiterally) {
  const at::Tensor x = awkward_input(2, 19, 2, 32, 3);
  for (int bits : {2, 3, 4}) {
    const Quantizer q = make_quantizer("int" + std::to_string(bits) + "-token", 2, 32);
    at::Tensor expected = x.clone();
    float* e = expected.data_ptr<float>();
    const int64_t n_vectors = x.numel() / 32;
    for (int64_t v = 0; v < n_vectors; ++v) {
      float* p = e + v * 32;
      const float mn = *std::min_element(p, p + 32), mx = *std::max_element(p, p + 32);
      const float scale = (mx - mn) / static_cast<float>((1 << bits) - 1);
      for (int j = 0; j < 32; ++j) {
        const float q_code = scale == 0.0f ? 0.0f
                                           : std::clamp(std::nearbyint((p[j] - mn) / scale), 0.0f,
                                                        static_cast<float>((1 << bits) - 1));
        p[j] = q_code * scale + mn;
      }
    }
    expect_same(q.quantize_keys(0, x), expected, "int-token keys");
    expect_same(q.quantize_values(3, x), expected, "int-token values");
  }
}

TEST(MethodsQuantize, NuqWithoutQNormIsKvFormatsReference) {
  const int64_t h = 2, d = 16, C = h * d;
  const at::Tensor x = awkward_input(2, 23, h, d, 11);
  for (const std::string method : {"nuq3", "nuq2-1%", "nuq4-5%", "nuq3-vhead", "nuq2-1%-vhead"}) {
    const Quantizer q = make_quantizer(method, h, d);
    const int64_t len = q.spec().value_per_head ? d : C;  // elements per value vector
    const TensorParams& kp = q.key_params(0);
    const TensorParams& vp = q.value_params(0);
    at::Tensor keys = at::empty_like(x), values = at::empty_like(x);
    const int64_t rows = x.numel() / C;
    for (int64_t c = 0; c < C; ++c) {
      quant::nuq_fake_quant_channel_ref(x.data_ptr<float>() + c, rows, C, kp.lo[c], kp.hi[c],
                                        kp.outlier_fraction > 0, kp.levels_encode.data(),
                                        static_cast<int>(kp.levels_encode.size()),
                                        keys.data_ptr<float>() + c);
    }
    for (int64_t v = 0; v < rows * C / len; ++v) {
      quant::nuq_fake_quant_vector_ref(x.data_ptr<float>() + v * len, len, 1,
                                       vp.levels_encode.data(),
                                       static_cast<int>(vp.levels_encode.size()),
                                       vp.outlier_fraction, values.data_ptr<float>() + v * len);
    }
    expect_same(q.quantize_keys(0, x), keys, method + " keys");
    expect_same(q.quantize_values(0, x), values, method + " values");
  }
}

TEST(MethodsQuantize, OutliersAreRestoredExactly) {
  const int64_t h = 2, d = 16;
  at::manual_seed(5);
  const at::Tensor x =
      at::randn({1, 40, h, d}) * 3;  // distinct values: 1 outlier per side per vector
  const Quantizer q = make_quantizer("nuq2-1%", h, d);
  // Values per token (32 elements) and, with -vhead, per token and head (16): k = 1 per side.
  for (const std::string method : {"nuq2-1%", "nuq2-1%-vhead"}) {
    const Quantizer qv = make_quantizer(method, h, d);
    const int64_t len = qv.spec().value_per_head ? d : h * d;
    QuantCounters cv;
    const at::Tensor v = qv.quantize_values(0, x, &cv);
    EXPECT_EQ(cv.outliers, 2 * 40 * h * d / len) << method;
    const at::Tensor flat = x.reshape({-1, len}), out = v.reshape({-1, len});
    const at::Tensor hi_idx = flat.argmax(1), lo_idx = flat.argmin(1);
    for (int64_t i = 0; i < flat.size(0); ++i) {
      for (const at::Tensor* idx : {&hi_idx, &lo_idx}) {
        const float original = flat[i][(*idx)[i].item<int64_t>()].item<float>();
        EXPECT_EQ(out[i][(*idx)[i].item<int64_t>()].item<float>(), quant::round_to_fp16(original))
            << method;
      }
    }
  }
  QuantCounters ck;
  const at::Tensor k = q.quantize_keys(0, x, &ck);
  const TensorParams& p = q.key_params(0);
  const at::Tensor lo = at::tensor(p.lo).view({h, d}), hi = at::tensor(p.hi).view({h, d});
  const at::Tensor outside = (x < lo) | (x > hi);
  EXPECT_EQ(ck.outliers, outside.sum().item<int64_t>());
  EXPECT_GT(ck.outliers, 0);
  EXPECT_TRUE(
      at::equal(k.masked_select(outside), x.masked_select(outside).to(at::kHalf).to(at::kFloat)));
}

TEST(MethodsQuantize, KiviGroupsKeysAlongTimeFromZeroAndValuesAlongChannels) {
  const Quantizer q = make_quantizer("kivi2-g32-r128", 0, 0);
  at::Tensor x = awkward_input(1, 70, 2, 16, 9);
  const at::Tensor k = q.quantize_keys(0, x);
  // Groups [0, 32), [32, 64), [64, 70): each quantizes alone.
  for (const auto& [start, len] :
       std::vector<std::pair<int64_t, int64_t>>{{0, 32}, {32, 32}, {64, 6}, {0, 64}}) {
    expect_same(k.narrow(1, start, len), q.quantize_keys(0, x.narrow(1, start, len).contiguous()),
                "time group");
  }
  // Per channel: a group of a channel has at most 4 distinct values (2 bits).
  const at::Tensor g = k.narrow(1, 0, 32).select(2, 1).select(2, 5);
  EXPECT_LE(std::get<0>(at::unique_consecutive(std::get<0>(g.reshape({-1}).sort()))).numel(), 4);
  at::Tensor y = x.clone();
  y[0][40][1][5] = 50.0f;  // changes only group 1 of channel (1, 5)
  const at::Tensor ky = q.quantize_keys(0, y);
  expect_same(ky.narrow(1, 0, 32), k.narrow(1, 0, 32), "group 0 untouched");
  expect_same(ky.narrow(1, 64, 6), k.narrow(1, 64, 6), "group 2 untouched");
  EXPECT_FALSE(at::equal(ky.narrow(1, 32, 32).select(2, 1).select(2, 5),
                         k.narrow(1, 32, 32).select(2, 1).select(2, 5)));
  // Values: groups of G = 8 channels within a head.
  const Quantizer q8 = make_quantizer("kivi2-g8-r16", 0, 0);
  const at::Tensor v = q8.quantize_values(0, x);
  at::Tensor z = x.clone();
  z[0][10][0][3] = 50.0f;
  const at::Tensor vz = q8.quantize_values(0, z);
  expect_same(vz[0][10][0].narrow(0, 8, 8), v[0][10][0].narrow(0, 8, 8), "other channel group");
  expect_same(vz[0][10][1], v[0][10][1], "other head");
  expect_same(vz[0][11], v[0][11], "other token");
}

TEST(MethodsQuantize, SkvqPermutationIsUndone) {
  const int64_t h = 2, d = 16;
  const at::Tensor x = awkward_input(2, 9, h, d, 4);
  // One group spanning every channel: the order of channels cannot matter.
  Quantizer a = make_quantizer("skvq-k3-v3-g32-w0", h, d, /*seed=*/1);
  Quantizer b = make_quantizer("skvq-k3-v3-g32-w0", h, d, /*seed=*/2);
  EXPECT_NE(a.key_params(0).perm, b.key_params(0).perm);
  expect_same(a.quantize_keys(0, x), b.quantize_keys(0, x), "single group");
  // Small groups at 8 bits: every element stays near itself, so nothing moved channels.
  const Quantizer fine = make_quantizer("skvq-k8-v8-g4-w0", h, d, 3);
  const at::Tensor v = fine.quantize_values(0, x);
  EXPECT_LT((v - x).abs().max().item<float>(), 0.05f);
}

TEST(MethodsQuantize, DtypesStridesAndEmptyInputs) {
  const at::Tensor x = awkward_input(1, 21, 2, 16, 8);
  for (const std::string method :
       {"int4", "nuq3-1%", "kivi2-g8-r16", "skvq-k2-v2-g8-w4", "fp8-e4m3"}) {
    const Quantizer q = make_quantizer(method, 2, 16);
    for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kDouble}) {
      const at::Tensor xd = x.to(dtype);
      const at::Tensor out = q.quantize_keys(0, xd);
      EXPECT_EQ(out.scalar_type(), dtype) << method;
      expect_same(out, q.quantize_keys_ref(0, xd.to(at::kFloat)).to(dtype),
                  method + " " + c10::toString(dtype));
    }
    const at::Tensor strided =
        x.transpose(1, 2).contiguous().transpose(1, 2);  // [b, t, h, d] view, not contiguous
    ASSERT_FALSE(strided.is_contiguous());
    expect_same(q.quantize_values(0, strided), q.quantize_values(0, x), method + " strided");
    const at::Tensor empty = at::empty({1, 0, 2, 16});
    EXPECT_EQ(q.quantize_keys(0, empty).sizes(), empty.sizes());
  }
}

TEST(MethodsQuantize, BadInputsExactMessages) {
  const Quantizer q = make_quantizer("nuq3-1%", 3, 16);
  EXPECT_EQ(error_of([&] {
              q.quantize_keys(0, at::zeros({2, 3, 16}));
            }),
            "quantize_keys: expected [batch, n_tokens, n_kv_heads, head_dim], found [2, 3, 16]");
  EXPECT_EQ(error_of([&] {
              q.quantize_keys(1, at::zeros({1, 2, 3, 16}));
            }),
            "quantize_keys: layer: expected 0..0, found 1");
  EXPECT_EQ(error_of([&] {
              q.quantize_values(0, at::zeros({1, 2, 2, 16}));
            }),
            "quantize_values: expected [batch, n_tokens, 3, 16], found [1, 2, 2, 16]");
  EXPECT_EQ(error_of([&] {
              q.quantize_values(0, at::zeros({1, 2, 3, 16}, at::kInt));
            }),
            "quantize_values: expected a floating-point tensor, found Int");
  const Quantizer free = make_quantizer("int4", 0, 0);
  EXPECT_EQ(error_of([&] {
              free.quantize_keys(-1, at::zeros({1, 2, 3, 16}));
            }),
            "quantize_keys: layer: expected >= 0, found -1");
  EXPECT_EQ(
      error_of([&] { Quantizer(parse_method("nuq3"), {}, 2, 16); }),
      "method nuq3 needs per-layer parameters fitted from calibration (kvq fit --calib calib.h5)");
  LayerParams bad;
  bad.key.bits = bad.value.bits = 9;
  EXPECT_EQ(error_of([&] { Quantizer(parse_method("kivi2"), {bad}, 0, 0); }),
            "layer 0 key: bits: expected 1..8 for kivi2-g32-r128, found 9");
}

// Every finite non-negative fp8 value, ascending, from the format's definition.
std::vector<double> fp8_table(Fp8Format f) {
  const int m_bits = f == Fp8Format::kE4M3 ? 3 : 2, e_min = f == Fp8Format::kE4M3 ? -6 : -14;
  const double max = f == Fp8Format::kE4M3 ? 448 : 57344;
  std::vector<double> t;
  for (int m = 0; m < (1 << m_bits); ++m) t.push_back(std::ldexp(m, e_min - m_bits));
  for (int e = e_min; std::ldexp(1.0, e) <= max; ++e) {
    for (int m = 0; m < (1 << m_bits); ++m) {
      const double v = std::ldexp((1 << m_bits) + m, e - m_bits);
      if (v <= max) t.push_back(v);
    }
  }
  return t;
}

TEST(MethodsQuantize, Fp8RoundingMatchesATableOfEveryValue) {
  for (const Fp8Format f : {Fp8Format::kE4M3, Fp8Format::kE5M2}) {
    const std::vector<double> table = fp8_table(f);
    EXPECT_EQ(table.size(),
              f == Fp8Format::kE4M3 ? 127u : 124u);  // e4m3fn: 0x00..0x7E; e5m2: 0x00..0x7B
    for (double v : table) EXPECT_EQ(detail::fp8_round_ref(static_cast<float>(v), f), v);
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<float> probes;
    for (size_t i = 0; i + 1 < table.size(); ++i) {
      probes.push_back(
          static_cast<float>((table[i] + table[i + 1]) / 2));  // ties: to the even index
      probes.push_back(static_cast<float>(table[i] + u(rng) * (table[i + 1] - table[i])));
    }
    for (float p : probes) {
      const size_t hi =
          std::lower_bound(table.begin(), table.end(), static_cast<double>(p)) - table.begin();
      const double below = p - table[hi - 1], above = table[hi] - p;
      const double expected = below < above   ? table[hi - 1]
                              : above < below ? table[hi]
                                              : table[hi % 2 == 0 ? hi : hi - 1];
      EXPECT_EQ(detail::fp8_round_ref(p, f), expected) << p;
      EXPECT_EQ(detail::fp8_round_ref(-p, f), -expected) << p;
    }
    // The LibTorch path on the same probes (scale 1: amax = fp8 max).
    const at::Tensor x = at::tensor(probes);
    const at::Tensor y = detail::fp8_fake_quant(x, detail::fp8_max(f), f);
    for (size_t i = 0; i < probes.size(); ++i)
      EXPECT_EQ(y[i].item<float>(), detail::fp8_round_ref(probes[i], f)) << probes[i];
  }
}

}  // namespace
}  // namespace kvq::methods
