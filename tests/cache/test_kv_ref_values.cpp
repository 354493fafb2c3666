// The kernels' CPU reference (kv_quantize_ref, kv_dequantize_ref) holds what `kvq eval` measures:
// on wt2-llama-18m's real pre-RoPE K/V with a quantizer fitted on its own calibration, every
// dequantized element equals methods::Quantizer::quantize_keys / quantize_values bit for bit,
// for KVQuant's values per token over all KV heads (nuq3-1%, kvq fit's default) and per token and
// head (-vhead). And on random tokens built to be awkward (ties at the dense range's ends, every
// outlier in one head, no outliers), values per token over all heads equal
// quant::nuq_fake_quant_vector_ref over the whole token, with one scale/offset in every head and
// the token's outliers spread over the heads' slots; kv_parse_image reports images that break
// that. CPU only (no GPU needed).
#include <cstdint>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kv_ref.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/methods/fit.h"
#include "kvq/model/io/safetensors.h"
#include "kvq/model/llama.h"
#include "kvq/quant/kv_format.h"
#include "kvq/runtime/cache_config.h"
#include "support/reference_calib.h"
#include "support/test_support.h"

namespace kvq::kernels {
namespace {

constexpr const char* kModel = "models/wt2-llama-18m";
constexpr int kTokens = 64, kHeads = 2, kDim = 128;  // reference.safetensors layers.{i}.k/v

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// A checked cache configuration of one sequence of n tokens for `format`.
KvCacheConfig config_for(const quant::KvCacheFormat& format, int n_kv_heads, int head_dim,
                         int64_t n, const quant::KvTables& tables) {
  KvCacheConfig c;
  c.format = format;
  c.head_dim = head_dim;
  c.n_kv_heads = c.n_q_heads = n_kv_heads;
  c.max_seq_len = n;
  runtime::check_kv_config(&c, &tables);
  return c;
}

TEST(KvRefValues, MatchesEvalOnWt2Llama18m) {
  KVQ_REQUIRE_DATA(std::string(kModel) + "/reference.safetensors");
  const std::string dir = ::kvq::test::data_path(kModel);
  const model::LlamaModel m = model::LlamaModel::load(dir);
  const model::SafetensorsFile ref(dir + "/reference.safetensors");
  ::kvq::test::TempDir tmp;
  const artifact::CalibData calib = ::kvq::test::reference_calib(
      m, dir, ::kvq::test::reference_input_ids(ref), tmp.file("calib.h5"));
  for (const std::string method : {"nuq3-1%", "nuq3-1%-vhead", "nuq2-1%", "nuq4"}) {
    const methods::Quantizer qz = methods::fit(methods::parse_method(method), &calib);
    for (int layer = 0; layer < m.config().n_layers; ++layer) {
      SCOPED_TRACE(method + " layer " + std::to_string(layer));
      const model::TensorView& tk = ref.get("layers." + std::to_string(layer) + ".k");
      const model::TensorView& tv = ref.get("layers." + std::to_string(layer) + ".v");
      ASSERT_EQ(tk.shape, (std::vector<int64_t>{kTokens, kHeads * kDim}));
      // fp16 inputs, as the cache stores them: [1, tokens, heads, dim] floats of fp16 values.
      std::vector<std::vector<uint16_t>> k16(1), v16(1);
      at::Tensor k = at::empty({1, kTokens, kHeads, kDim}, at::kFloat), v = at::empty_like(k);
      for (int64_t i = 0; i < k.numel(); ++i) {
        k16[0].push_back(kv_half_bits(reinterpret_cast<const float*>(tk.data)[i]));
        v16[0].push_back(kv_half_bits(reinterpret_cast<const float*>(tv.data)[i]));
        k.data_ptr<float>()[i] = kv_half_float(k16[0].back());
        v.data_ptr<float>()[i] = kv_half_float(v16[0].back());
      }
      const at::Tensor k_eval = qz.quantize_keys(layer, k).contiguous();
      const at::Tensor v_eval = qz.quantize_values(layer, v).contiguous();
      const quant::KvTables tables = qz.kv_tables(layer);
      const KvCacheConfig c = config_for(qz.kv_format(layer), kHeads, kDim, kTokens, tables);
      ASSERT_EQ(c.format.n_sink, 0);  // eval quantizes every token passed, the cache too
      EXPECT_EQ(c.v_token(), method.find("-vhead") == std::string::npos);
      const KvState st = kv_quantize_ref(c, &tables, k16, v16);
      EXPECT_EQ(st.k_overflow, 0u);
      size_t v_outliers = 0;
      for (const KvHeadState& hs : st.heads) v_outliers += hs.v_out.size();
      EXPECT_EQ(v_outliers > 0, c.format.outlier_fraction > 0.0);
      std::vector<float> kd, vd;
      int64_t k_diff = 0, v_diff = 0;
      std::string first;
      for (int h = 0; h < kHeads; ++h) {
        kv_dequantize_ref(st, &tables, 0, h, &kd, &vd);
        for (int t = 0; t < kTokens; ++t) {
          for (int ch = 0; ch < kDim; ++ch) {
            const int64_t e = (int64_t{t} * kHeads + h) * kDim + ch;
            const float ke = k_eval.data_ptr<float>()[e], ve = v_eval.data_ptr<float>()[e];
            const float kc = kd[t * kDim + ch], vc = vd[t * kDim + ch];
            k_diff += !same_bits(ke, kc);
            v_diff += !same_bits(ve, vc);
            if (first.empty() && (!same_bits(ke, kc) || !same_bits(ve, vc))) {
              std::ostringstream s;
              s << "token " << t << " head " << h << " channel " << ch << ": eval k/v " << ke << "/"
                << ve << ", cache " << kc << "/" << vc;
              first = s.str();
            }
          }
        }
      }
      EXPECT_EQ(k_diff, 0) << first;
      EXPECT_EQ(v_diff, 0) << first;
    }
  }
}

enum class Content { kNormal, kTies, kOneHead };

// One token's [n_kv_heads][head_dim] fp16 values. kTies: five distinct values, so the dense
// range's ends are tied many times over; kOneHead: k + 1 large values of each sign, all in
// head 0, so that head holds every outlier of the token.
std::vector<uint16_t> make_token(Content content, int n_kv_heads, int head_dim, int64_t k,
                                 std::mt19937* rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(-2, 2);
  std::vector<uint16_t> x(static_cast<size_t>(n_kv_heads) * head_dim);
  for (auto& e : x) e = kv_half_bits(content == Content::kTies ? 0.5f * pick(*rng) : normal(*rng));
  if (content == Content::kOneHead) {
    for (int64_t i = 0; i <= k && 2 * i + 1 < head_dim; ++i) {
      x[2 * i] = kv_half_bits(8.0f + static_cast<float>(i));
      x[2 * i + 1] = kv_half_bits(-8.0f - static_cast<float>(i));
    }
  }
  return x;
}

struct RandomCase {
  int bits, n_kv_heads, head_dim;
  double fraction;
  Content content;
};

TEST(KvRefValues, PerTokenOverAllHeadsMatchesVectorRef) {
  const RandomCase cases[] = {
      {3, 2, 128, 0.01, Content::kNormal},   {2, 2, 128, 0.01, Content::kTies},
      {4, 4, 64, 0.05, Content::kTies},      {3, 8, 128, 0.05, Content::kOneHead},
      {2, 4, 64, 0.02, Content::kOneHead},   {4, 1, 128, 0.01, Content::kNormal},
      {3, 3, 64, 0.0, Content::kTies},       {2, 8, 64, 0.1, Content::kNormal},
      {3, 32, 128, 0.01, Content::kOneHead},
  };
  constexpr int64_t kN = 37;
  for (const RandomCase& rc : cases) {
    std::ostringstream name;
    name << "nuq" << rc.bits << " " << rc.n_kv_heads << " x " << rc.head_dim << " fraction "
         << rc.fraction << " content " << static_cast<int>(rc.content);
    SCOPED_TRACE(name.str());
    std::mt19937 rng(rc.bits * 1000 + rc.n_kv_heads);
    quant::KvTables tables;
    const int n_levels = 1 << rc.bits;
    for (int i = 0; i < n_levels; ++i) {
      const float level = -1.0f + 2.0f * i / (n_levels - 1);
      tables.k_levels.push_back(level);
      tables.v_levels.push_back(level * std::abs(level));  // denser near 0, as fitted levels
    }
    tables.k_lo.assign(static_cast<size_t>(rc.n_kv_heads) * rc.head_dim, -1.0f);
    tables.k_hi.assign(tables.k_lo.size(), 1.0f);
    quant::KvCacheFormat f;
    f.method = name.str();
    f.codec = quant::KvCodec::kNuq;
    f.key_bits = f.value_bits = rc.bits;
    f.value_vector = quant::ValueVector::kToken;
    f.outlier_fraction = rc.fraction;
    const KvCacheConfig c = config_for(f, rc.n_kv_heads, rc.head_dim, kN, tables);
    const int64_t n = int64_t{rc.n_kv_heads} * rc.head_dim;
    const int64_t k = quant::outliers_per_side(n, rc.fraction);
    ASSERT_EQ(c.v_outliers_per_row(), 2 * k);
    std::vector<std::vector<uint16_t>> keys(1), values(1);
    for (int64_t t = 0; t < kN; ++t) {
      const std::vector<uint16_t> x = make_token(rc.content, rc.n_kv_heads, rc.head_dim, k, &rng);
      values[0].insert(values[0].end(), x.begin(), x.end());
      keys[0].insert(keys[0].end(), x.begin(), x.end());
    }
    const KvState st = kv_quantize_ref(c, &tables, keys, values);
    std::vector<std::vector<float>> deq(rc.n_kv_heads);
    std::vector<float> unused;
    for (int h = 0; h < rc.n_kv_heads; ++h) kv_dequantize_ref(st, &tables, 0, h, &unused, &deq[h]);
    std::vector<float> x(n), want(n);
    for (int64_t t = 0; t < kN; ++t) {
      for (int64_t i = 0; i < n; ++i) x[i] = kv_half_float(values[0][t * n + i]);
      const int64_t n_out = quant::nuq_fake_quant_vector_ref(x.data(), n, 1, tables.v_levels.data(),
                                                             n_levels, rc.fraction, want.data());
      int64_t held = 0;
      for (int h = 0; h < rc.n_kv_heads; ++h) {
        const KvHeadState& hs = st.head(0, h);
        EXPECT_EQ(hs.v_scale[t], st.head(0, 0).v_scale[t]) << "token " << t << " head " << h;
        EXPECT_EQ(hs.v_offset[t], st.head(0, 0).v_offset[t]) << "token " << t << " head " << h;
        for (const KvOutlier& o : hs.v_out) held += o.token == t;
        for (int ch = 0; ch < rc.head_dim; ++ch) {
          const float got = deq[h][t * rc.head_dim + ch], ref = want[h * rc.head_dim + ch];
          EXPECT_TRUE(same_bits(got, ref)) << "token " << t << " head " << h << " channel " << ch
                                           << ": " << got << " vs " << ref;
        }
      }
      EXPECT_EQ(held, n_out) << "token " << t;
      EXPECT_LE(held, 2 * k) << "token " << t;
      if (rc.content == Content::kOneHead && k > 0) {
        int64_t in_head0 = 0;
        for (const KvOutlier& o : st.head(0, 0).v_out) in_head0 += o.token == t;
        EXPECT_EQ(in_head0, 2 * k) << "token " << t;
      }
    }
  }
}

// A device image whose value outliers are not where the rows' indexes say (values per token over
// all KV heads: head h's entries start after those of heads 0 .. h-1, all within the row's 2k),
// or are out of channel order, is reported (kv_parse_image), one line per problem.
TEST(KvRefValues, ParseReportsMisplacedValueOutliers) {
  quant::KvTables tables;
  for (int i = 0; i < 8; ++i) tables.k_levels.push_back(-1.0f + 2.0f * i / 7);
  tables.v_levels = tables.k_levels;
  tables.k_lo.assign(2 * 64, -1.0f);
  tables.k_hi.assign(2 * 64, 1.0f);
  quant::KvCacheFormat f;
  f.method = "nuq3-1%";
  f.codec = quant::KvCodec::kNuq;
  f.key_bits = f.value_bits = 3;
  f.value_vector = quant::ValueVector::kToken;
  f.outlier_fraction = 0.01;
  const KvCacheConfig c = config_for(f, /*n_kv_heads=*/2, /*head_dim=*/64, /*n=*/80, tables);
  const KvLayout L = c.layout();
  ASSERT_EQ(L.v_out_per_row, 2);  // k = ceil(0.01 * 128 / 2) = 1, once per token
  ASSERT_EQ(L.v_vectors, 1);
  KvImage im;
  im.batch = 1;
  im.pool.assign(static_cast<size_t>(L.page_bytes), 0);
  im.page_table = {0};
  im.pages_per_seq = 1;
  im.seq_len = {3};
  im.ring_k.assign(static_cast<size_t>(2 * c.ring_size() * 64), 0);
  im.ring_v = im.ring_k;
  auto put = [&](int h, int64_t off, uint32_t x) {  // head section h; h = 2: the token section
    std::memcpy(im.pool.data() + h * L.head_bytes + off, &x, 4);
  };
  auto index = [&](int h, int r, uint32_t begin, uint32_t count) {
    put(h, L.off_v_index + 4 * r, begin | (count << 16));
  };
  auto entry = [&](int r, int j, uint32_t ch) {
    put(2, L.off_v_out + 4 * (r * L.v_out_per_row + j), (r * 64u + ch) << 16);
  };
  for (int r = 0; r < 3; ++r) put(2, L.off_v_scales + 4 * r, 0x3C00u);  // scale 1, offset 0
  std::vector<std::string> problems;
  kv_parse_image(c, im, &problems);  // no outliers anywhere
  EXPECT_TRUE(problems.empty()) << problems.front();
  index(0, 1, 0, 1);  // token 1: channel 1 of head 0, then channel 2 of head 1 at 0 (wrong)
  entry(1, 0, 1);
  index(1, 1, 0, 1);
  index(0, 2, 0, 3);  // token 2: three in head 0, two fit
  index(0, 0, 0, 2);  // token 0: channels 5, 3 of head 0 (out of order), head 1 after them
  entry(0, 0, 5);
  entry(0, 1, 3);
  index(1, 0, 2, 0);
  problems.clear();
  kv_parse_image(c, im, &problems);
  EXPECT_EQ(problems,
            (std::vector<std::string>{
                "seq 0 head 0 u 0: value outlier 1 holds index 3 (row 0, previous channel 5)",
                "seq 0 head 0 u 2: value outliers at 0 count 3, expected at 0 count <= 2",
                "seq 0 head 1 u 1: value outliers at 0 count 1, expected at 1 count <= 1"}));
}

}  // namespace
}  // namespace kvq::kernels
