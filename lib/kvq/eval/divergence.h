// How far a quantized cache moves the model's next-token distributions from the fp16 model's, the
// two figures of llama.cpp's `llama-perplexity --kl-divergence`: mean KL(P_fp16 || P_method) per
// scored token and top-1 agreement, alongside the cross-entropy perplexity needs. Sums, not
// means, so batches of any size combine exactly. Not here: running the forwards (quantized.h).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace kvq::eval {

// Next-token statistics of positions 0..t-2 (predicting tokens 1..t-1) of logits [b, t, vocab]
// against the fp16 model's ref_logits of the same shape (fp32 or fp64, any device).
struct TokenAgreement {
  double nll = 0;    // summed cross-entropy of the targets (nats)
  double kl = 0;     // summed KL(softmax(ref) || softmax(logits)) (nats)
  int64_t top1 = 0;  // positions where argmax(logits) == argmax(ref)
  int64_t n = 0;     // positions scored
  void add(const TokenAgreement& o);
  double mean_loss() const;  // nll / n
  double mean_kl() const;    // kl / n
  double top1_rate() const;  // top1 / n, in [0, 1]
};

// Computed in double on the logits' device (on the CPU one pass per position, in parallel; on
// other devices ATen fp64 ops on a bounded number of positions at a time), per position as
// kl_i = sum over vocab of p_ref * (log p_ref - log p), written (ref - x) + (lse_x - lse_ref)
// inside the sum so that equal logits give exactly 0. Per-position KL is summed as computed, not
// clamped at 0: rounding may leave a sum of about -1e-16 per position for distributions equal in
// all but the last bits. Identical logits give kl == 0 and top1 == n. Ties in argmax go to the
// lowest token id on both sides. A t of 1 scores nothing (n = 0; the means are then NaN).
// Throws kvq::Error naming both shapes if logits and ref_logits differ in shape, if either is not
// [b, t, vocab], or if tokens is not [b, t]; if a token is outside [0, vocab); and "loss is not
// finite" or "KL divergence is not finite" (with the sum) if a sum is NaN or infinite.
TokenAgreement score_next_tokens(const at::Tensor& logits, const at::Tensor& ref_logits,
                                 const at::Tensor& tokens);  // tokens [b, t] int

}  // namespace kvq::eval
