// The fp16 flash-decoding baseline of `kvq bench kernels` (bench/attention_fp16.cu) against an
// fp64 attention on the host, on fresh random inputs whose attention is far from uniform (the
// queries scaled up), at awkward lengths and with splits of every length mod 8: a split of
// 1 mod 8 tokens once gave wrong output (the token loop's bound differed between the lanes
// that shuffle together), e.g. MHA batch 1 at 128K.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <cuda_fp16.h>

#include "attention_fp16.h"
#include "support/gpu.h"

namespace kvq {
namespace {

struct FlashCase {
  int batch, n_kv, n_q, head_dim;
  int64_t tokens;
  int splits;  // 0: what the benchmark picks
};

// out [batch][n_q][D] = softmax(q.K^T / sqrt(D)) V, in double.
std::vector<double> reference(const FlashCase& c, const std::vector<__half>& q,
                              const std::vector<__half>& k, const std::vector<__half>& v) {
  const int D = c.head_dim, group = c.n_q / c.n_kv;
  std::vector<double> out(static_cast<size_t>(c.batch) * c.n_q * D, 0.0);
  std::vector<double> s(c.tokens);
  for (int b = 0; b < c.batch; ++b) {
    for (int qh = 0; qh < c.n_q; ++qh) {
      const int h = qh / group;
      const __half* qv = &q[(static_cast<size_t>(b) * c.n_q + qh) * D];
      const size_t base = (static_cast<size_t>(b) * c.n_kv + h) * c.tokens * D;
      double mx = -INFINITY;
      for (int64_t t = 0; t < c.tokens; ++t) {
        double dot = 0;
        for (int d = 0; d < D; ++d) {
          dot += static_cast<double>(__half2float(qv[d])) * __half2float(k[base + t * D + d]);
        }
        s[t] = dot / std::sqrt(static_cast<double>(D));
        mx = std::max(mx, s[t]);
      }
      double sum = 0;
      for (int64_t t = 0; t < c.tokens; ++t) sum += (s[t] = std::exp(s[t] - mx));
      double* o = &out[(static_cast<size_t>(b) * c.n_q + qh) * D];
      for (int64_t t = 0; t < c.tokens; ++t) {
        for (int d = 0; d < D; ++d) o[d] += s[t] / sum * __half2float(v[base + t * D + d]);
      }
    }
  }
  return out;
}

TEST(Fp16Flash, MatchesFp64AtAwkwardLengthsAndSplits) {
  KVQ_REQUIRE_GPU();
  const FlashCase cases[] = {
      {1, 4, 4, 128, 1, 0},        {1, 4, 4, 128, 255, 0},  {2, 2, 8, 128, 257, 0},
      {1, 4, 4, 128, 993, 1},      {1, 4, 4, 128, 993, 7},  {1, 2, 4, 64, 2049, 0},
      {1, 8, 32, 128, 100003, 0},  {1, 2, 2, 128, 8001, 9}, {3, 2, 4, 64, 4099, 5},
      {1, 32, 32, 128, 131072, 0},
  };
  std::mt19937 rng(20261204);
  for (const FlashCase& c : cases) {
    SCOPED_TRACE(::testing::Message()
                 << "batch " << c.batch << ", " << c.n_q << "/" << c.n_kv << " heads x "
                 << c.head_dim << ", " << c.tokens << " tokens, splits " << c.splits);
    const int D = c.head_dim;
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    // Queries of norm ~ 4 sqrt(D / 3): scores spread over tens of units, attention peaked.
    std::vector<__half> q(static_cast<size_t>(c.batch) * c.n_q * D);
    std::vector<__half> k(static_cast<size_t>(c.batch) * c.n_kv * c.tokens * D), v(k.size());
    for (auto& x : q) x = __float2half(4.0f * u(rng));
    for (auto& x : k) x = __float2half(u(rng));
    for (auto& x : v) x = __float2half(u(rng));
    const test::DeviceBuffer<__half> dq = test::to_device(q), dk = test::to_device(k),
                                     dv = test::to_device(v);
    test::DeviceBuffer<__half> dout(q.size());
    bench::Fp16AttentionParams p;
    p.batch = c.batch;
    p.n_kv_heads = c.n_kv;
    p.n_q_heads = c.n_q;
    p.head_dim = D;
    p.n_tokens = c.tokens;
    p.q = dq.data();
    p.k = dk.data();
    p.v = dv.data();
    p.out = dout.data();
    p.n_splits = c.splits > 0 ? c.splits : bench::fp16_flash_splits(c.batch, c.n_kv, c.tokens);
    test::DeviceBuffer<float> part(static_cast<size_t>(c.batch) * c.n_q * p.n_splits * (D + 2));
    p.part = part.data();
    KVQ_CUDA_CHECK(bench::launch_fp16_flash_decode(p, nullptr));
    std::vector<__half> got(q.size());
    KVQ_CUDA_CHECK(cudaMemcpy(got.data(), dout.data(), got.size() * 2, cudaMemcpyDeviceToHost));
    const std::vector<double> want = reference(c, q, k, v);
    double err = 0, norm = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      err += std::pow(__half2float(got[i]) - want[i], 2);
      norm += want[i] * want[i];
    }
    EXPECT_LT(std::sqrt(err / norm), 2e-3);
  }
}

}  // namespace
}  // namespace kvq
