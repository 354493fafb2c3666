#include "kvq/eval/divergence.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "kvq/common/error.h"

namespace kvq::eval {
namespace {

// About 2 MiB per fp64 temporary, so they stay in cache and the allocator reuses them: the whole
// batch at once would hold several copies of [b * (t - 1), vocab] in fp64 (2 GiB each for 8192
// positions of a 32000-token vocabulary), and page faults on them cost more than the arithmetic.
constexpr int64_t kChunkElements = int64_t{1} << 18;

std::string shape(const at::Tensor& x) {
  std::string s = "[";
  for (int64_t i = 0; i < x.dim(); ++i) s += (i ? ", " : "") + std::to_string(x.size(i));
  return s + "]";
}

// One position: nll, KL and top-1 of logits x against ref r, both [vocab], in double. One pass
// for the maxima, one with both exponentials: log p_ref - log p = (r - x) + (lse_x - lse_r), and
// r - x is exactly 0 where the logits agree, so equal rows give exactly 0.
template <typename T>
void score_row(const T* x, const T* r, int64_t vocab, int64_t target, bool same, double* nll,
               double* kl, int64_t* top1) {
  int64_t ax = 0, ar = 0;  // first maximum: ties go to the lowest token id, as at::argmax
  for (int64_t k = 1; k < vocab; ++k) {
    if (x[k] > x[ax]) ax = k;
    if (r[k] > r[ar]) ar = k;
  }
  const double mx = x[ax], mr = r[ar];
  double sx = 0, sr = 0, srd = 0;
  if (same) {
    for (int64_t k = 0; k < vocab; ++k) sx += std::exp(static_cast<double>(x[k]) - mx);
  } else {
    for (int64_t k = 0; k < vocab; ++k) {
      const double xk = x[k], rk = r[k];
      const double er = std::exp(rk - mr);
      sx += std::exp(xk - mx);
      sr += er;
      srd += er * (rk - xk);
    }
  }
  const double lse_x = mx + std::log(sx);
  *nll = lse_x - static_cast<double>(x[target]);
  *kl = same ? 0.0 : srd / sr + (lse_x - (mr + std::log(sr)));
  *top1 = same || ax == ar;
}

// The CPU path on logits and ref [b, t, vocab] and tokens [b, t], all contiguous: rows are
// positions (window i, position j < t - 1), scored in parallel and summed in order afterwards, so
// the sums do not depend on the number of threads.
template <typename T>
TokenAgreement score_cpu(const at::Tensor& logits, const at::Tensor& ref, const at::Tensor& tokens,
                         bool same) {
  const int64_t t = logits.size(1), vocab = logits.size(2), rows = logits.size(0) * (t - 1);
  const T* px = logits.data_ptr<T>();
  const T* pr = ref.data_ptr<T>();
  const int64_t* pt = tokens.data_ptr<int64_t>();
  std::vector<double> nll(rows), kl(rows);
  std::vector<int64_t> top1(rows);
  at::parallel_for(0, rows, /*grain_size=*/16, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t at = (q / (t - 1)) * t + q % (t - 1);  // this position; at + 1 is its target
      score_row(px + at * vocab, pr + at * vocab, vocab, pt[at + 1], same, &nll[q], &kl[q],
                &top1[q]);
    }
  });
  TokenAgreement out;
  for (int64_t q = 0; q < rows; ++q) {
    out.nll += nll[q];
    out.kl += kl[q];
    out.top1 += top1[q];
  }
  out.n = rows;
  return out;
}

// Any other device: the same sums with ATen ops in fp64, a chunk of rows at a time.
TokenAgreement score_aten(const at::Tensor& x, const at::Tensor& r, const at::Tensor& target,
                          bool same) {
  const int64_t rows = x.size(0), vocab = x.size(1);
  const int64_t chunk = std::max<int64_t>(1, kChunkElements / vocab);
  // Per-chunk sums stay on the device; one transfer at the end.
  at::Tensor nll = at::zeros({}, x.options().dtype(at::kDouble));
  at::Tensor kl = at::zeros_like(nll);
  at::Tensor top1 = at::zeros({}, x.options().dtype(at::kLong));
  for (int64_t s = 0; s < rows; s += chunk) {
    const int64_t c = std::min(chunk, rows - s);
    const at::Tensor xs = x.narrow(0, s, c).to(at::kDouble);
    const at::Tensor lse = at::logsumexp(xs, {1});
    nll += (lse - xs.gather(1, target.narrow(0, s, c)).squeeze(1)).sum();
    if (same) continue;
    const at::Tensor rs = r.narrow(0, s, c).to(at::kDouble);
    const at::Tensor lse_ref = at::logsumexp(rs, {1});
    const at::Tensor p_ref = at::exp(rs - lse_ref.unsqueeze(1));
    kl += ((p_ref * (rs - xs)).sum(1) + (lse - lse_ref)).sum();
    top1 += xs.argmax(1).eq(rs.argmax(1)).sum();
  }
  TokenAgreement out;
  out.nll = nll.item<double>();
  out.kl = kl.item<double>();
  out.top1 = same ? rows : top1.item<int64_t>();
  out.n = rows;
  return out;
}

}  // namespace

void TokenAgreement::add(const TokenAgreement& o) {
  nll += o.nll;
  kl += o.kl;
  top1 += o.top1;
  n += o.n;
}

double TokenAgreement::mean_loss() const { return nll / static_cast<double>(n); }
double TokenAgreement::mean_kl() const { return kl / static_cast<double>(n); }
double TokenAgreement::top1_rate() const { return static_cast<double>(top1) / n; }

TokenAgreement score_next_tokens(const at::Tensor& logits, const at::Tensor& ref_logits,
                                 const at::Tensor& tokens) {
  if (logits.dim() != 3 || !logits.sizes().equals(ref_logits.sizes())) {
    fail(
        "score_next_tokens: expected logits and ref_logits of one shape [b, t, vocab], found {} "
        "and {}",
        shape(logits), shape(ref_logits));
  }
  if (tokens.dim() != 2 || tokens.size(0) != logits.size(0) || tokens.size(1) != logits.size(1)) {
    fail("score_next_tokens: expected tokens [b, t] of logits {}, found {}", shape(logits),
         shape(tokens));
  }
  const int64_t t = logits.size(1), vocab = logits.size(2);
  if (t < 2 || logits.size(0) == 0 || vocab == 0) return {};

  c10::InferenceMode inference;
  const at::Device device = logits.device();
  const bool same = logits.is_same(ref_logits);  // the reference scored against itself
  const at::Tensor target = tokens.to(device, at::kLong);
  if (target.lt(0).any().item<bool>() || target.ge(vocab).any().item<bool>()) {
    fail("score_next_tokens: expected tokens in [0, {}), found {}..{}", vocab,
         target.min().item<int64_t>(), target.max().item<int64_t>());
  }
  TokenAgreement out;
  if (device.is_cpu()) {
    // fp32 unless either side is fp64 (then both): the arithmetic is in double either way.
    const bool f64 = logits.scalar_type() == at::kDouble || ref_logits.scalar_type() == at::kDouble;
    const at::ScalarType type = f64 ? at::kDouble : at::kFloat;
    const at::Tensor x = logits.to(type).contiguous();
    const at::Tensor r = same ? x : ref_logits.to(device, type).contiguous();
    const at::Tensor tc = target.contiguous();
    out = f64 ? score_cpu<double>(x, r, tc, same) : score_cpu<float>(x, r, tc, same);
  } else {
    // Position i of window b predicts token i + 1: rows [b * (t - 1), vocab].
    const at::Tensor x = logits.narrow(1, 0, t - 1).reshape({-1, vocab});
    const at::Tensor r = ref_logits.narrow(1, 0, t - 1).to(device).reshape({-1, vocab});
    out = score_aten(x, r, target.narrow(1, 1, t - 1).reshape({-1, 1}), same);
  }
  if (!std::isfinite(out.nll)) fail("loss is not finite (summed cross-entropy {})", out.nll);
  if (!std::isfinite(out.kl)) fail("KL divergence is not finite (summed KL {})", out.kl);
  return out;
}

}  // namespace kvq::eval
