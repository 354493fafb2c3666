// kvq/methods fit: codebooks equal brute-force weighted k-means on a tiny calibration, Q-Norm's
// decode levels, key ranges from the thresholds, SKVQ's permutation and clip search against
// brute force, fp8 amax, the mixed-precision choice against enumeration, determinism, exact
// error messages (real calibrations: test_methods_real.cpp).
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/methods/fit.h"
#include "kvq/quant/kv_format.h"
#include "kvq/quant/qnorm.h"
#include "support/test_support.h"
#include "unit/methods_fixtures.h"

namespace kvq::methods {
namespace {

using test::error_of;

template <typename T>
artifact::Array<T> array(std::vector<T> v, std::vector<int64_t> shape) {
  return {std::move(v), std::move(shape)};
}

// Channel statistics of x [n, C] with fisher, as calib.h5 defines them (schemas/calib-2.md);
// thresholds are exact order statistics.
artifact::CalibChannels channel_data(const std::vector<float>& x, const std::vector<float>& f,
                                     int64_t n, int64_t C, int64_t bins,
                                     const std::vector<double>& fractions) {
  artifact::CalibChannels d;
  d.n_tokens = n;
  std::vector<double> mn(C), mx(C), mean(C, 0), sd(C, 0), fm(C, 0), hc(C * bins, 0),
      hf(C * bins, 0);
  std::vector<double> th(fractions.size() * 2 * C);
  for (int64_t c = 0; c < C; ++c) {
    std::vector<float> col(n);
    for (int64_t i = 0; i < n; ++i) col[i] = x[i * C + c];
    mn[c] = *std::min_element(col.begin(), col.end());
    mx[c] = *std::max_element(col.begin(), col.end());
    double width = (mx[c] - mn[c]) / static_cast<double>(bins);
    if (!(width > 0)) width = 1;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t b = std::clamp<int64_t>(
          static_cast<int64_t>(std::floor((col[i] - mn[c]) / width)), 0, bins - 1);
      hc[c * bins + b] += 1;
      hf[c * bins + b] += f[i * C + c];
      fm[c] += f[i * C + c] / n;
      mean[c] += col[i] / static_cast<double>(n);
    }
    std::sort(col.begin(), col.end());
    for (size_t fi = 0; fi < fractions.size(); ++fi) {
      const int64_t k = quant::outliers_per_side(n, fractions[fi]);
      th[(fi * 2) * C + c] = col[k];
      th[(fi * 2 + 1) * C + c] = col[n - 1 - k];
    }
  }
  const int64_t nf = static_cast<int64_t>(fractions.size());
  d.min = array(mn, {C});
  d.max = array(mx, {C});
  d.mean = array(mean, {C});
  d.std = array(sd, {C});
  d.fisher_mean = array(fm, {C});
  d.hist_count = array(hc, {C, bins});
  d.hist_fisher = array(hf, {C, bins});
  d.thresholds = array(th, {nf, 2, C});
  return d;
}

// A calibration of synthetic K/V: per channel scales with one outlier channel, Fisher = u^2.
artifact::CalibData make_calib(int64_t n_layers, int64_t h, int64_t d, int64_t n, int64_t key_bins,
                               int64_t value_bins, uint64_t seed) {
  artifact::CalibData c;
  c.path = "synthetic.h5";
  c.model.source = "synthetic";
  c.model.architecture = "llama";
  c.model.n_layers = n_layers;
  c.model.n_heads = c.model.n_kv_heads = h;
  c.model.head_dim = d;
  c.model.dim = h * d;
  c.model.vocab_size = 16;
  c.model.max_seq_len = n;
  c.model.rope_theta = 10000;
  c.model.rope_scaling = "none";
  c.model.weights_checksum = "0123456789abcdef";
  c.data.source = "synthetic";
  c.data.n_sequences = 1;
  c.data.seq_len = n;
  c.fractions = {0.0, 0.01, 0.05};
  c.key_bins = key_bins;
  c.value_bins = value_bins;
  const int64_t C = h * d, nf = 3;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t l = 0; l < n_layers; ++l) {
    std::vector<float> k(n * C), v(n * C), kf(n * C), vf(n * C);
    for (int64_t i = 0; i < n * C; ++i) {
      const int64_t ch = i % C;
      k[i] = normal(rng) * (0.5f + 0.1f * static_cast<float>(ch % 7)) * (ch == 3 ? 6.0f : 1.0f) +
             0.3f * (ch % 3);
      v[i] = normal(rng) * (1.0f + 0.2f * static_cast<float>(ch % 5));
      kf[i] = std::pow(normal(rng), 2.0f) * 1e-3f;
      vf[i] = std::pow(normal(rng), 2.0f) * 1e-3f;
    }
    artifact::CalibLayer ld;
    ld.key = channel_data(k, kf, n, C, key_bins, c.fractions);
    ld.key_post = ld.key;
    ld.value = channel_data(v, vf, n, C, key_bins, c.fractions);
    // Normalized values of vectors of `len` consecutive elements (kv_format.h).
    auto vectors = [&](int64_t len) {
      std::vector<double> nc(nf * value_bins, 0), nfi(nf * value_bins, 0), out(nf, 0),
          vr(nf * 3, 0);
      const int64_t n_vec = n * C / len;
      for (int64_t fi = 0; fi < nf; ++fi) {
        double rmin = 1e300, rmax = 0, rsum = 0;
        const int64_t kk = quant::outliers_per_side(len, c.fractions[fi]);
        for (int64_t vec = 0; vec < n_vec; ++vec) {
          const float* x = v.data() + vec * len;
          std::vector<float> s(x, x + len);
          std::sort(s.begin(), s.end());
          const float lo = s[kk], hi = s[len - 1 - kk];
          const float off = quant::round_to_fp16((lo + hi) / 2.0f),
                      sc = quant::round_to_fp16((hi - lo) / 2.0f);
          for (int64_t j = 0; j < len; ++j) {
            if (x[j] < lo || x[j] > hi) continue;
            const float xn = sc > 0 ? (x[j] - off) / sc : 0.0f;
            const int64_t b = std::clamp<int64_t>(
                static_cast<int64_t>(std::floor((xn + 1.0) * 0.5 * value_bins)), 0, value_bins - 1);
            nc[fi * value_bins + b] += 1;
            nfi[fi * value_bins + b] += vf[vec * len + j];
          }
          rmin = std::min<double>(rmin, hi - lo);
          rmax = std::max<double>(rmax, hi - lo);
          rsum += hi - lo;
        }
        vr[fi * 3] = rmin;
        vr[fi * 3 + 1] = rsum / static_cast<double>(n_vec);
        vr[fi * 3 + 2] = rmax;
      }
      artifact::CalibVectors vd;
      vd.normalized_count = array(nc, {nf, value_bins});
      vd.normalized_fisher = array(nfi, {nf, value_bins});
      vd.outlier_fraction = array(out, {nf});
      vd.vector_range = array(vr, {nf, 3});
      return vd;
    };
    ld.value_token = vectors(C);
    ld.value_head = vectors(d);
    const int64_t s = std::min<int64_t>(n, 64);
    std::vector<int64_t> pos(s);
    for (int64_t i = 0; i < s; ++i) pos[i] = i;
    ld.sample_positions = array(pos, {s});
    ld.sample_key = array(std::vector<float>(k.begin(), k.begin() + s * C), {s, C});
    ld.sample_value = array(std::vector<float>(v.begin(), v.begin() + s * C), {s, C});
    ld.sample_key_fisher = array(std::vector<float>(kf.begin(), kf.begin() + s * C), {s, C});
    ld.sample_value_fisher = array(std::vector<float>(vf.begin(), vf.begin() + s * C), {s, C});
    c.layers.push_back(std::move(ld));
  }
  return c;
}

// Exact weighted k-means by enumerating every split of the sorted points into k runs.
std::vector<double> brute_force_kmeans(std::vector<std::pair<double, double>> pts, int k) {
  std::sort(pts.begin(), pts.end());
  const int n = static_cast<int>(pts.size());
  double best = std::numeric_limits<double>::infinity();
  std::vector<double> best_c;
  std::vector<int> starts(k);
  std::function<void(int, int)> rec = [&](int cluster, int from) {
    if (cluster == k) {
      double cost = 0;
      std::vector<double> cs;
      for (int c = 0; c < k; ++c) {
        const int end = c + 1 < k ? starts[c + 1] : n;
        double sw = 0, swx = 0;
        for (int i = starts[c]; i < end; ++i)
          sw += pts[i].second, swx += pts[i].second * pts[i].first;
        const double m = swx / sw;
        cs.push_back(m);
        for (int i = starts[c]; i < end; ++i)
          cost += pts[i].second * (pts[i].first - m) * (pts[i].first - m);
      }
      if (cost < best) best = cost, best_c = cs;
      return;
    }
    for (int s = from; s <= n - (k - cluster); ++s) {
      starts[cluster] = s;
      rec(cluster + 1, s + 1);
    }
  };
  starts[0] = 0;
  rec(1, 1);
  return best_c;
}

TEST(MethodsFit, KeyCodebookIsBruteForceWeightedKMeans) {
  const int64_t C = 4;
  const artifact::CalibData c = make_calib(1, 1, C, 40, /*key_bins=*/4, /*value_bins=*/16, 3);
  const Quantizer q = fit(parse_method("nuq2"), &c);
  const artifact::CalibChannels& kd = c.layers[0].key;
  std::vector<std::pair<double, double>> pts;  // (normalized bin centre, Fisher)
  for (int64_t ch = 0; ch < C; ++ch) {
    const float lo = static_cast<float>(kd.thresholds.values[ch]),
                hi = static_cast<float>(kd.thresholds.values[C + ch]);
    const double off = (lo + hi) / 2.0f, sc = (hi - lo) / 2.0f,
                 w = (kd.max.values[ch] - kd.min.values[ch]) / 4;
    for (int b = 0; b < 4; ++b) {
      if (kd.hist_fisher.values[ch * 4 + b] > 0)
        pts.push_back(
            {(kd.min.values[ch] + (b + 0.5) * w - off) / sc, kd.hist_fisher.values[ch * 4 + b]});
    }
  }
  ASSERT_GT(pts.size(), 4u);
  const std::vector<double> expected = brute_force_kmeans(pts, 4);
  const std::vector<float>& levels = q.key_params(0).levels_encode;
  ASSERT_EQ(levels.size(), 4u);
  for (int j = 0; j < 4; ++j)
    EXPECT_NEAR(levels[j], expected[j], 2.0 / 65536) << j;  // the pooling grid
  EXPECT_EQ(q.key_params(0).levels_decode, levels);
  EXPECT_EQ(q.key_params(0).lo[1],
            static_cast<float>(kd.min.values[1]));  // fraction 0: calibrated min/max
  EXPECT_EQ(q.key_params(0).hi[0], static_cast<float>(kd.max.values[0]));
}

// The fraction-0 histogram of one vector kind: bin centres with their Fisher weights (where
// positive), and every occupied bin's centre and count.
struct ValuePoints {
  std::vector<std::pair<double, double>> fisher;
  std::vector<double> xs, counts;
};

ValuePoints value_points(const artifact::CalibVectors& v, int bins) {
  ValuePoints p;
  for (int b = 0; b < bins; ++b) {
    const double x = -1 + (b + 0.5) * 2.0 / bins;
    if (v.normalized_fisher.values[b] > 0) p.fisher.push_back({x, v.normalized_fisher.values[b]});
    if (v.normalized_count.values[b] > 0 || v.normalized_fisher.values[b] > 0) {
      p.xs.push_back(x);
      p.counts.push_back(v.normalized_count.values[b]);
    }
  }
  return p;
}

TEST(MethodsFit, ValueCodebookIsBruteForceWeightedKMeansAndQNormCorrectsIt) {
  const artifact::CalibData c = make_calib(1, 2, 8, 6, /*key_bins=*/8, /*value_bins=*/16, 5);
  // Whole tokens (nuq) and tokens of one KV head (-vhead) have their own histograms and levels.
  const ValuePoints token = value_points(c.layers[0].value_token, 16),
                    head = value_points(c.layers[0].value_head, 16);
  ASSERT_GT(token.fisher.size(), 4u);
  ASSERT_GT(head.fisher.size(), 4u);
  const Quantizer plain = fit(parse_method("nuq2"), &c);
  const Quantizer per_head = fit(parse_method("nuq2-vhead"), &c);
  const Quantizer qn = fit(parse_method("nuq2-qnorm"), &c);
  for (const auto& [q, points] :
       {std::pair{&plain, &token}, std::pair{&per_head, &head}, std::pair{&qn, &token}}) {
    const std::vector<double> expected = brute_force_kmeans(points->fisher, 4);
    for (int j = 0; j < 4; ++j)
      EXPECT_EQ(q->value_params(0).levels_encode[j], static_cast<float>(expected[j])) << j;
  }
  EXPECT_NE(per_head.value_params(0).levels_encode, plain.value_params(0).levels_encode);
  const std::vector<float>& enc = qn.value_params(0).levels_encode;
  std::vector<double> enc_d(enc.begin(), enc.end());
  const quant::QNormResult r = quant::qnorm_ref(
      enc_d.data(), 4, token.xs.data(), token.counts.data(), static_cast<int64_t>(token.xs.size()));
  for (int j = 0; j < 4; ++j)
    EXPECT_EQ(qn.value_params(0).levels_decode[j], static_cast<float>(r.levels[j])) << j;
  EXPECT_NE(qn.value_params(0).levels_decode, enc);
  EXPECT_EQ(plain.value_params(0).levels_decode, plain.value_params(0).levels_encode);
}

TEST(MethodsFit, KeyRangesAreTheThresholdsAtTheFraction) {
  const artifact::CalibData c = make_calib(2, 2, 8, 300, 64, 512, 7);
  const Quantizer q = fit(parse_method("nuq3-5%"), &c);
  const artifact::CalibChannels& kd = c.layers[1].key;
  for (int64_t ch = 0; ch < 16; ++ch) {
    EXPECT_EQ(q.key_params(1).lo[ch], static_cast<float>(kd.thresholds.values[(2 * 2) * 16 + ch]));
    EXPECT_EQ(q.key_params(1).hi[ch],
              static_cast<float>(kd.thresholds.values[(2 * 2 + 1) * 16 + ch]));
  }
  EXPECT_EQ(q.key_params(1).outlier_fraction, 0.05);
  EXPECT_GT(q.key_params(1).fisher_error, 0.0);
  EXPECT_EQ(q.n_layers(), 2);
  EXPECT_TRUE(q.provenance.has_model && q.provenance.has_data);
}

TEST(MethodsFit, DeterministicAndMessages) {
  const artifact::CalibData c = make_calib(2, 2, 8, 200, 64, 512, 9);
  for (const std::string m : {"nuq3-1%", "nuq2-5%-sink", "skvq-k2-v3-g4-w8", "fp8-e5m2"}) {
    const Quantizer a = fit(parse_method(m), &c), b = fit(parse_method(m), &c);
    test::expect_same_params(a, b, 2, m);
  }
  EXPECT_EQ(error_of([] { fit(parse_method("nuq3"), nullptr); }),
            "method nuq3 needs --calib calib.h5");
  EXPECT_EQ(error_of([] { fit(parse_method("skvq-k2-v2-g128-w128"), nullptr); }),
            "method skvq-k2-v2-g128-w128 needs --calib calib.h5");
  EXPECT_EQ(error_of([&] { fit(parse_method("nuq3-3%"), &c); }),
            "synthetic.h5: method nuq3-3%: outlier fraction 0.03 is not among the calibrated "
            "fractions (0, 0.01, 0.05); "
            "use one of them");
  FitOptions budget;
  budget.bits_budget = 3;
  EXPECT_EQ(error_of([&] { fit(parse_method("kivi2"), &c, budget); }),
            "--bits-budget: only nuq methods take a budget, found kivi2-g32-r128");
  budget.bits_budget = 5;
  EXPECT_EQ(error_of([&] { fit(parse_method("nuq3"), &c, budget); }),
            "--bits-budget: expected 2..4 average code bits per element, found 5");
}

TEST(MethodsFit, SkvqPermutationOrdersRangesAndClipIsTheBruteForceBest) {
  const artifact::CalibData c = make_calib(1, 2, 8, 200, 64, 512, 11);
  const MethodSpec spec = parse_method("skvq-k2-v2-g4-w8");
  const Quantizer q = fit(spec, &c);
  for (const bool key : {true, false}) {
    const TensorParams& p = key ? q.key_params(0) : q.value_params(0);
    const artifact::CalibChannels& d = key ? c.layers[0].key : c.layers[0].value;
    std::vector<int64_t> sorted = p.perm;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 16; ++i) ASSERT_EQ(sorted[i], i);  // a permutation
    for (int64_t i = 1; i < 16; ++i) {
      EXPECT_LE(d.max.values[p.perm[i - 1]] - d.min.values[p.perm[i - 1]],
                d.max.values[p.perm[i]] - d.min.values[p.perm[i]]);
    }
    // The clip ratio minimising the Fisher-weighted error on the samples, through the reference.
    const artifact::CalibLayer& l = c.layers[0];
    const at::Tensor x =
        at::tensor(key ? l.sample_key.values : l.sample_value.values).view({1, 64, 2, 8});
    const at::Tensor f = at::tensor(key ? l.sample_key_fisher.values : l.sample_value_fisher.values)
                             .view({1, 64, 2, 8})
                             .to(at::kDouble);
    float best = 0;
    double best_err = std::numeric_limits<double>::infinity();
    for (float r : FitOptions().clip_grid) {
      LayerParams lp;
      lp.key = lp.value = p;
      lp.key.clip = lp.value.clip = r;
      const Quantizer qr(spec, {lp}, 2, 8);
      const at::Tensor d2 = (qr.quantize_keys_ref(0, x) - x).to(at::kDouble).pow(2);
      const double err = (f * d2).sum().item<double>();
      if (err < best_err) best_err = err, best = r;
    }
    EXPECT_EQ(p.clip, best) << (key ? "keys" : "values");
  }
}

TEST(MethodsFit, Fp8AndCalibrationFreeMethods) {
  const artifact::CalibData c = make_calib(2, 2, 8, 100, 64, 512, 13);
  const Quantizer q = fit(parse_method("fp8-e4m3"), &c);
  double amax = 0;
  for (double v : c.layers[1].value.min.values) amax = std::max(amax, std::fabs(v));
  for (double v : c.layers[1].value.max.values) amax = std::max(amax, std::fabs(v));
  EXPECT_EQ(q.value_params(1).amax, static_cast<float>(amax));
  const Quantizer dynamic = fit(parse_method("fp8-e4m3"), nullptr);
  EXPECT_EQ(dynamic.n_layers(), 0);
  EXPECT_EQ(dynamic.key_params(7).amax, 0.0f);
  EXPECT_FALSE(dynamic.provenance.has_model);
  FitOptions with_model;
  with_model.model = &c.model;
  const Quantizer kivi = fit(parse_method("kivi2"), nullptr, with_model);
  EXPECT_EQ(kivi.n_layers(), 2);
  EXPECT_TRUE(kivi.provenance.has_model);
  EXPECT_FALSE(kivi.provenance.has_data);
  EXPECT_EQ(kivi.key_params(1).bits, 2);
}

TEST(MethodsFit, BitsBudgetIsTheBestAllocation) {
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> u(0.1, 10.0);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<LayerErrors> errors(3);
    for (LayerErrors& e : errors) {
      for (double* t : {e.key, e.value}) {
        t[0] = u(rng) * 4, t[1] = t[0] / (1 + u(rng)), t[2] = t[1] / (1 + u(rng));
      }
    }
    for (double budget : {2.0, 2.5, 3.0, 3.17, 4.0}) {
      const std::vector<LayerBits> bits = choose_bits(errors, budget);
      double total = 0, err = 0;
      for (size_t i = 0; i < 3; ++i) {
        total += bits[i].key + bits[i].value;
        err += errors[i].key[bits[i].key - 2] + errors[i].value[bits[i].value - 2];
      }
      EXPECT_LE(total / 6, budget + 1e-12);
      double best = std::numeric_limits<double>::infinity();
      for (int code = 0; code < 729; ++code) {  // every choice of 6 items x 3 widths
        int c = code, sum = 0;
        double e = 0;
        for (int item = 0; item < 6; ++item, c /= 3) {
          sum += 2 + c % 3;
          e += (item % 2 == 0 ? errors[item / 2].key : errors[item / 2].value)[c % 3];
        }
        if (sum <= budget * 6 + 1e-9) best = std::min(best, e);
      }
      EXPECT_NEAR(err, best, 1e-9 * best) << budget;
    }
  }
  EXPECT_EQ(error_of([] { choose_bits({}, 1.5); }),
            "--bits-budget: expected 2..4 average code bits per element, found 1.5");
  const artifact::CalibData c = make_calib(3, 2, 8, 200, 64, 512, 19);
  FitOptions options;
  options.bits_budget = 2.5;
  const Quantizer q = fit(parse_method("nuq3-1%"), &c, options);
  double sum = 0;
  for (int64_t i = 0; i < 3; ++i) {
    sum += q.key_params(i).bits + q.value_params(i).bits;
    EXPECT_EQ(q.key_params(i).levels_encode.size(), size_t{1} << q.key_params(i).bits);
  }
  EXPECT_LE(sum / 6, 2.5);
  EXPECT_EQ(q.label(), fmt::format("nuq3-1% (mixed, {:.2f} bits)", sum / 6));
  // At 3 bits on average the allocation is never worse than 3 bits everywhere (a feasible choice).
  options.bits_budget = 3.0;
  const Quantizer mixed = fit(parse_method("nuq3-1%"), &c, options);
  const Quantizer uniform = fit(parse_method("nuq3-1%"), &c);
  double e_mixed = 0, e_uniform = 0;
  for (int64_t i = 0; i < 3; ++i) {
    e_mixed += mixed.key_params(i).fisher_error + mixed.value_params(i).fisher_error;
    e_uniform += uniform.key_params(i).fisher_error + uniform.value_params(i).fisher_error;
  }
  EXPECT_LE(e_mixed, e_uniform * (1 + 1e-12));
}

}  // namespace
}  // namespace kvq::methods
