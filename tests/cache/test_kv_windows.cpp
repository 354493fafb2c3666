// `kvq eval` and the compressed cache agree on which tokens stay fp16, at every cache length
// from 1 to 600, for KIVI's residual, KVQuant's attention sinks and SKVQ's sliding window.
// eval's side is what its KV hook hands the model (the quantized tensors and the per-query
// view), probed by which rows come back unchanged; the cache's side is the kernels' CPU
// reference (kv_quantize_ref) for the methods the CUDA cache serves, and the window arithmetic
// of the view every kernel reads (KvCacheView::n_quant) for all of them. Both take the window
// from one definition (quant::KvCacheFormat); this test is what keeps them from drifting apart,
// as they once did for KIVI (eval kept (n - sink) mod R tokens in fp16, the cache R to R + G - 1).
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kv_ref.h"
#include "kvq/common/error.h"
#include "kvq/eval/quantized.h"
#include "kvq/methods/method.h"
#include "kvq/methods/quantizer.h"
#include "kvq/runtime/cache_config.h"

namespace kvq {
namespace {

constexpr int64_t kMaxLen = 600;
constexpr int kHeads = 1, kDim = 64;  // the windows do not depend on the shapes

// Fitted-looking parameters for the calibrated methods (any valid values will do: what is
// tested is which tokens get quantized, not how).
methods::Quantizer make_quantizer(const methods::MethodSpec& spec) {
  if (!spec.needs_calib()) return methods::Quantizer(spec, {}, kHeads, kDim);
  const int64_t channels = int64_t{kHeads} * kDim;
  methods::LayerParams l;
  for (methods::TensorParams* p : {&l.key, &l.value}) {
    p->bits = p == &l.key ? spec.key_bits : spec.value_bits;
    p->outlier_fraction = spec.outlier_fraction();
    const int n = 1 << p->bits;
    for (int i = 0; i < n; ++i) p->levels_encode.push_back(-1.0f + 2.0f * i / (n - 1));
    p->levels_decode = p->levels_encode;
    p->perm.resize(static_cast<size_t>(channels));
    for (int64_t c = 0; c < channels; ++c)
      p->perm[c] = (c * 7) % channels;  // 7 is odd: a permutation
    p->clip = 0.9f;
  }
  l.key.lo.assign(static_cast<size_t>(channels), -1.0f);
  l.key.hi.assign(static_cast<size_t>(channels), 1.0f);
  return methods::Quantizer(spec, {l}, kHeads, kDim);
}

// fp16[n - 1][j]: whether the query of a cache of n tokens sees token j (j < n) in full
// precision through eval's hook.
std::vector<std::vector<bool>> eval_fp16(const methods::Quantizer& q) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  at::Tensor k = at::empty({1, kMaxLen, kHeads, kDim}), v = at::empty_like(k);
  for (at::Tensor* x : {&k, &v}) {
    float* p = x->data_ptr<float>();
    for (int64_t i = 0; i < x->numel(); ++i) p[i] = normal(rng);
  }
  eval::QuantizedKV hook(q, at::kCPU);
  at::Tensor kq = k.clone(), vq = v.clone();
  hook.on_kv(/*layer=*/0, kq, vq);
  const model::KVView view = hook.view(/*layer=*/0, /*start=*/0, kMaxLen);
  std::vector<bool> unchanged(kMaxLen);
  for (int64_t j = 0; j < kMaxLen; ++j)
    unchanged[j] = at::equal(kq[0][j], k[0][j]) && at::equal(vq[0][j], v[0][j]);
  const bool has_view = view.key_quantized.defined();
  at::Tensor mask =
      has_view ? view.key_quantized.contiguous() : at::ones({kMaxLen, kMaxLen}, at::kBool);
  const auto m = mask.accessor<bool, 2>();
  std::vector<std::vector<bool>> fp16(kMaxLen);
  for (int64_t i = 0; i < kMaxLen; ++i) {
    // The model attends to the quantized rows where the view says so (everywhere when the
    // method has no view), and to the originals elsewhere.
    for (int64_t j = 0; j <= i; ++j) fp16[i].push_back(!m[i][j] || unchanged[j]);
  }
  return fp16;
}

// The same from the format the cache is built with: the window arithmetic of the kernels' view.
std::vector<bool> view_fp16(const quant::KvCacheFormat& f, int64_t n) {
  kernels::KvCacheView view;
  view.n_sink = static_cast<int>(f.n_sink);
  view.n_recent = static_cast<int>(f.n_recent);
  view.flush = static_cast<int>(f.flush);
  std::vector<bool> fp16;
  for (int64_t j = 0; j < n; ++j)
    fp16.push_back(j < view.n_sink || j >= view.n_sink + view.n_quant(n));
  return fp16;
}

// And from the kernels' CPU reference of the cache holding n tokens (methods it serves).
std::vector<bool> ref_fp16(const quant::KvCacheFormat& f, const methods::Quantizer& q, int64_t n) {
  kernels::KvCacheConfig c;
  c.format = f;
  c.head_dim = kDim;
  c.n_kv_heads = kHeads;
  c.n_q_heads = kHeads;
  c.max_seq_len = kMaxLen;
  const quant::KvTables tables = q.kv_tables(0);
  runtime::check_kv_config(&c, &tables);
  std::mt19937 rng(static_cast<uint32_t>(n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> k(static_cast<size_t>(n) * kHeads * kDim), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = kernels::kv_half_bits(normal(rng));
    v[i] = kernels::kv_half_bits(normal(rng));
  }
  const kernels::KvState st = kernels::kv_quantize_ref(c, &tables, {k}, {v});
  const kernels::KvHeadState& hs = st.head(0, 0);
  EXPECT_EQ(hs.n_tokens, n);
  std::vector<bool> fp16;
  for (int64_t j = 0; j < n; ++j) fp16.push_back(j < f.n_sink || j >= f.n_sink + hs.n_quant);
  return fp16;
}

std::string show(const std::vector<bool>& fp16) {
  std::string s;
  for (const bool b : fp16) s += b ? 'f' : 'q';
  return s;
}

void expect_same_windows(const std::string& method, bool cache_serves) {
  SCOPED_TRACE(method);
  const methods::MethodSpec spec = methods::parse_method(method);
  const methods::Quantizer q = make_quantizer(spec);
  const quant::KvCacheFormat f = q.kv_format(0);
  const std::vector<std::vector<bool>> eval = eval_fp16(q);
  int64_t fp16_somewhere = 0;
  for (int64_t n = 1; n <= kMaxLen; ++n) {
    const std::vector<bool>& want = eval[n - 1];
    ASSERT_EQ(show(view_fp16(f, n)), show(want))
        << "cache of " << n << " tokens: the kernels' view vs eval";
    if (cache_serves) {
      ASSERT_EQ(show(ref_fp16(f, q, n)), show(want))
          << "cache of " << n << " tokens: the CPU reference vs eval";
    }
    fp16_somewhere += f.fp16_tokens(n) < n;
  }
  EXPECT_GT(fp16_somewhere, 0) << "the method should quantize something";
}

TEST(KvWindows, KiviResidualAgreesWithEval) {
  expect_same_windows("kivi2-g32-r128", /*cache_serves=*/true);
  expect_same_windows("kivi4-g64-r64", /*cache_serves=*/true);
}

TEST(KvWindows, SinksAgreeWithEval) {
  expect_same_windows("nuq3-1%-sink4-vhead", /*cache_serves=*/true);
  expect_same_windows("nuq2-sink-vhead", /*cache_serves=*/true);
  expect_same_windows("nuq4-1%-vhead", /*cache_serves=*/true);
  expect_same_windows("nuq3-1%-sink4", /*cache_serves=*/true);  // values per token, all heads
}

// SKVQ has no CUDA kernels (the cache refuses it by name); its sliding window is still one
// definition, which the kernels' view computes the same way eval does.
TEST(KvWindows, SkvqSlidingWindowAgreesWithEval) {
  expect_same_windows("skvq-k2-v2-g64-w128-s5", /*cache_serves=*/false);
  kernels::KvCacheConfig c;
  c.format = methods::parse_method("skvq-k2-v2-g64-w128-s5").kv_format();
  c.head_dim = kDim;
  EXPECT_THROW(runtime::check_kv_config(&c, nullptr), Error);
}

// The old cache rule for KIVI (quantize each group of G once more than R tokens are recent)
// differs from eval's at most lengths: the test above would fail on it.
TEST(KvWindows, TheOldKiviRuleWouldFail) {
  const quant::KvCacheFormat f = methods::parse_method("kivi2-g32-r128").kv_format();
  quant::KvCacheFormat old = f;
  old.n_recent = 128;
  old.flush = 32;
  int64_t differ = 0;
  for (int64_t n = 1; n <= kMaxLen; ++n) differ += show(view_fp16(f, n)) != show(view_fp16(old, n));
  EXPECT_GT(differ, 400);
}

// The view's position arithmetic divides in 32 bits (kernels::pos_div, pos_mod: a 64-bit division
// is a subroutine call on the GPU); positions and lengths stay below 2^31 (seq_len is int32), and
// there it must equal the 64-bit division the windows were defined with, up to the largest ones.
TEST(KvWindows, PositionArithmeticEqualsTheSixtyFourBitDivision) {
  std::mt19937_64 rng(11);
  constexpr int64_t kTop = (int64_t{1} << 31) - 1;
  std::vector<int64_t> as = {0, 1, 2, 255, 256, 257, 65535, 65536, kTop - 1, kTop};
  std::vector<int> bs = {1, 2, 3, 10, 32, 80, 129, 256, 1000, 65537, static_cast<int>(kTop)};
  for (int i = 0; i < 2000; ++i) {
    as.push_back(static_cast<int64_t>(rng() % (kTop + 1)));
    bs.push_back(1 + static_cast<int>(rng() % (i % 2 ? 1024 : kTop)));
  }
  for (const int64_t a : as) {
    for (const int b : bs) {
      ASSERT_EQ(kernels::pos_div(a, b), a / b) << a << " / " << b;
      ASSERT_EQ(kernels::pos_mod(a, b), a % b) << a << " % " << b;
    }
  }
  // n_quant and ring_slot through them, against their 64-bit definitions, for windows of every
  // kind (flush and ring of 1 take the shortcut, the others divide).
  for (const int flush : {1, 32, 64}) {
    for (const int n_recent : {0, 1, 128}) {
      kernels::KvCacheView view;
      view.n_sink = 4;
      view.n_recent = n_recent;
      view.flush = flush;
      view.ring_size = n_recent + flush;
      for (const int64_t n : as) {
        const int64_t q = n - view.n_sink - view.n_recent;
        ASSERT_EQ(view.n_quant(n), q > 0 ? q / flush * flush : 0) << n;
        if (n >= view.n_sink) ASSERT_EQ(view.ring_slot(n), (n - view.n_sink) % view.ring_size) << n;
      }
    }
  }
}

}  // namespace
}  // namespace kvq
