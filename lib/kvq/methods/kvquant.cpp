// KVQuant's fake-quantizers in LibTorch (contract in quantizer.h): keys per channel with the
// offline range, values per token with the online dense range and fp16 offset/scale, nuq codes
// by nearest level (ties to the lower), dense-and-sparse outliers kept as fp16.
#include <vector>

#include "kvq/common/error.h"
#include "kvq/methods/detail.h"
#include "kvq/quant/kv_format.h"

namespace kvq::methods::detail {
namespace {

at::Tensor constant(const at::Tensor& x, float value) { return at::full({}, value, x.options()); }

at::Tensor floats(const std::vector<float>& v, const at::Tensor& like) {
  return at::tensor(at::ArrayRef<float>(v), at::kFloat).to(like.device());
}

// Code of each normalized xn: the number of level midpoints strictly below it, compared as
// 2 xn against L[j] + L[j+1] in double, where both are exact: nuq_encode's rule.
at::Tensor nuq_codes(const at::Tensor& xn, const std::vector<float>& levels) {
  std::vector<double> twice_mid(levels.size() - 1);
  for (size_t j = 0; j + 1 < levels.size(); ++j) {
    twice_mid[j] = static_cast<double>(levels[j]) + static_cast<double>(levels[j + 1]);
  }
  const at::Tensor mids = at::tensor(at::ArrayRef<double>(twice_mid), at::kDouble).to(xn.device());
  return at::searchsorted(mids, xn.to(at::kDouble) * 2.0);
}

// levels_decode[code(xn)] * scale + offset, offset where scale == 0.
at::Tensor nuq_dense(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& scale,
                     const TensorParams& p) {
  const at::Tensor zero_scale = scale == 0;
  at::Tensor xn = (x - offset) / scale;
  xn = at::where(zero_scale, at::zeros_like(xn), xn);
  const at::Tensor codes = nuq_codes(xn, p.levels_encode);
  const at::Tensor decode = floats(p.levels_decode, x);
  const at::Tensor level = decode.index_select(0, codes.reshape({-1})).view(codes.sizes());
  const at::Tensor out = level * scale + offset;
  return at::where(zero_scale, offset.expand_as(out), out);
}

at::Tensor fp16_round(const at::Tensor& x) { return x.to(at::kHalf).to(at::kFloat); }

}  // namespace

at::Tensor nuq_keys(const at::Tensor& x, const TensorParams& p, QuantCounters* c) {
  const int64_t channels = x.size(1);
  KVQ_CHECK(static_cast<int64_t>(p.lo.size()) == channels, "{} ranges for {} channels", p.lo.size(),
            channels);
  // Offset and scale in float exactly as nuq_fake_quant_channel_ref computes them.
  std::vector<float> offset(channels), scale(channels);
  for (int64_t i = 0; i < channels; ++i) {
    offset[i] = (p.lo[i] + p.hi[i]) / 2.0f;
    scale[i] = (p.hi[i] - p.lo[i]) / 2.0f;
  }
  at::Tensor out = nuq_dense(x, floats(offset, x), floats(scale, x), p);
  if (p.outlier_fraction > 0) {
    const at::Tensor outlier = (x < floats(p.lo, x)) | (x > floats(p.hi, x));
    out = at::where(outlier, fp16_round(x), out);
    if (c) c->outliers += outlier.sum().item<int64_t>();
  }
  return out;
}

at::Tensor nuq_values(const at::Tensor& x, const TensorParams& p, QuantCounters* c) {
  const int64_t n = x.size(1);
  const int64_t k = quant::outliers_per_side(n, p.outlier_fraction);
  const at::Tensor sorted = std::get<0>(x.sort(-1));
  const at::Tensor lo = sorted.select(-1, k).unsqueeze(-1);
  const at::Tensor hi = sorted.select(-1, n - 1 - k).unsqueeze(-1);
  const at::Tensor two = constant(x, 2.0f);
  const at::Tensor offset = fp16_round((lo + hi) / two);  // stored as fp16 in the cache
  const at::Tensor scale = fp16_round((hi - lo) / two);
  at::Tensor out = nuq_dense(x, offset, scale, p);
  if (k > 0) {
    const at::Tensor outlier = (x < lo) | (x > hi);
    out = at::where(outlier, fp16_round(x), out);
    if (c) c->outliers += outlier.sum().item<int64_t>();
  }
  return out;
}

}  // namespace kvq::methods::detail
