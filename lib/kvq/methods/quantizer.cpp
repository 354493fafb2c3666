// Quantizer: parameter checks, input checks and the dispatch from a method to its LibTorch
// fake-quantizer (detail.h) or to the CPU reference (reference.cpp).
#include "kvq/methods/quantizer.h"

#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kvq/common/error.h"
#include "kvq/methods/detail.h"
#include "kvq/quant/kv_cache_format.h"

namespace kvq::methods {
namespace {

std::string shape_of(const at::Tensor& x) {
  return fmt::format("[{}]", fmt::join(x.sizes(), ", "));
}

void check_bits(const MethodSpec& spec, const std::string& where, int bits) {
  int lo = 1, hi = 8;
  if (spec.kind == MethodKind::kNuq) lo = 2, hi = 4;
  if (spec.kind == MethodKind::kFp8) lo = hi = 8;
  if (spec.kind == MethodKind::kFp16) lo = hi = 16;
  if (bits < lo || bits > hi)
    fail("{}: bits: expected {}..{} for {}, found {}", where, lo, hi, spec.name(), bits);
}

void check_params(const MethodSpec& spec, const std::string& where, const TensorParams& p, bool key,
                  int64_t channels) {
  check_bits(spec, where, p.bits);
  if (spec.kind == MethodKind::kNuq) {
    quant::check_levels(where + " levels_encode", p.levels_encode, p.bits, /*in_unit=*/true);
    quant::check_levels(where + " levels_decode", p.levels_decode, p.bits, /*in_unit=*/false);
    if (!(p.outlier_fraction >= 0 && p.outlier_fraction < 1)) {
      fail("{}: outlier fraction: expected 0 <= f < 1, found {}", where, p.outlier_fraction);
    }
    if (key) quant::check_key_ranges(where, p.lo, p.hi, channels);
  }
  if (spec.kind == MethodKind::kSkvq) {
    if (static_cast<int64_t>(p.perm.size()) != channels) {
      fail("{}: perm: expected {} channels, found {}", where, channels, p.perm.size());
    }
    std::vector<bool> seen(static_cast<size_t>(channels), false);
    for (int64_t i = 0; i < channels; ++i) {
      const int64_t c = p.perm[i];
      if (c < 0 || c >= channels || seen[c])
        fail("{}: perm: expected a permutation of 0..{}, found {} at index {}", where, channels - 1,
             c, i);
      seen[c] = true;
    }
    if (!(p.clip > 0.0f && p.clip <= 1.0f))
      fail("{}: clip: expected 0 < r <= 1, found {}", where, p.clip);
  }
  if (spec.kind == MethodKind::kFp8 && !(std::isfinite(p.amax) && p.amax >= 0.0f)) {
    fail("{}: amax: expected a finite value >= 0, found {}", where, p.amax);
  }
}

}  // namespace

Quantizer::Quantizer(MethodSpec spec, std::vector<LayerParams> layers, int64_t n_kv_heads,
                     int64_t head_dim)
    : spec_(std::move(spec)),
      layers_(std::move(layers)),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim) {
  defaults_.key.bits = spec_.key_bits;
  defaults_.value.bits = spec_.value_bits;
  defaults_.key.outlier_fraction = defaults_.value.outlier_fraction = spec_.outlier_fraction();
  if (layers_.empty() && spec_.needs_calib()) {
    fail("method {} needs per-layer parameters fitted from calibration (kvq fit --calib calib.h5)",
         spec_.name());
  }
  if (spec_.needs_calib() && (n_kv_heads_ < 1 || head_dim_ < 1)) {
    fail("method {}: expected the model's n_kv_heads and head_dim, found {} and {}", spec_.name(),
         n_kv_heads_, head_dim_);
  }
  const int64_t channels = n_kv_heads_ * head_dim_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    check_params(spec_, fmt::format("layer {} key", i), layers_[i].key, /*key=*/true, channels);
    check_params(spec_, fmt::format("layer {} value", i), layers_[i].value, /*key=*/false,
                 channels);
  }
}

const TensorParams& Quantizer::params(bool key, int64_t layer) const {
  const LayerParams& l = layers_.empty() ? defaults_ : layers_.at(static_cast<size_t>(layer));
  return key ? l.key : l.value;
}

const TensorParams& Quantizer::key_params(int64_t layer) const { return params(true, layer); }
const TensorParams& Quantizer::value_params(int64_t layer) const { return params(false, layer); }

quant::KvCacheFormat Quantizer::kv_format(int64_t layer) const {
  quant::KvCacheFormat f = spec_.kv_format();
  if (!layers_.empty()) {
    if (layer < 0 || layer >= n_layers())
      fail("kv_format: layer: expected 0..{}, found {}", n_layers() - 1, layer);
    f.key_bits = key_params(layer).bits;
    f.value_bits = value_params(layer).bits;
  }
  return f;
}

quant::KvTables Quantizer::kv_tables(int64_t layer) const {
  if (spec_.kind != MethodKind::kNuq) return {};
  if (layer < 0 || layer >= n_layers())
    fail("kv_tables: layer: expected 0..{}, found {}", n_layers() - 1, layer);
  const TensorParams& k = key_params(layer);
  const TensorParams& v = value_params(layer);
  return {k.levels_encode, v.levels_encode, k.lo, k.hi};
}

std::string Quantizer::label() const {
  if (!(provenance.bits_budget > 0) || layers_.empty()) return spec_.name();
  double sum = 0;
  for (const LayerParams& l : layers_) sum += l.key.bits + l.value.bits;
  return fmt::format("{} (mixed, {:.2f} bits)", spec_.name(),
                     sum / (2.0 * static_cast<double>(layers_.size())));
}

void Quantizer::check_input(const char* fn, int64_t layer, const at::Tensor& x) const {
  if (layers_.empty() && layer < 0) fail("{}: layer: expected >= 0, found {}", fn, layer);
  if (!layers_.empty() && (layer < 0 || layer >= n_layers()))
    fail("{}: layer: expected 0..{}, found {}", fn, n_layers() - 1, layer);
  if (!x.defined() || x.dim() != 4) {
    fail("{}: expected [batch, n_tokens, n_kv_heads, head_dim], found {}", fn,
         x.defined() ? shape_of(x) : "no tensor");
  }
  if (!at::isFloatingType(x.scalar_type()))
    fail("{}: expected a floating-point tensor, found {}", fn, c10::toString(x.scalar_type()));
  if (n_kv_heads_ > 0 && (x.size(2) != n_kv_heads_ || x.size(3) != head_dim_)) {
    fail("{}: expected [batch, n_tokens, {}, {}], found {}", fn, n_kv_heads_, head_dim_,
         shape_of(x));
  }
}

at::Tensor Quantizer::quantize(bool key, int64_t layer, const at::Tensor& x,
                               QuantCounters* counters) const {
  check_input(key ? "quantize_keys" : "quantize_values", layer, x);
  const TensorParams& p = params(key, layer);
  QuantCounters local;
  local.elements = x.numel();
  if (spec_.kind == MethodKind::kFp16 || x.numel() == 0) {
    if (counters) counters->add(local);
    return x;
  }
  const int64_t b = x.size(0), t = x.size(1), h = x.size(2), d = x.size(3);
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  at::Tensor out;
  switch (spec_.kind) {
    case MethodKind::kFp16: break;
    case MethodKind::kFp8: out = detail::fp8_fake_quant(xf, p.amax, spec_.fp8); break;
    case MethodKind::kInt:
      if (key && spec_.granularity == IntGranularity::kChannel) {
        out = detail::uniform_grouped(xf.view({b, t, h * d}), kIntChannelTokens, p.bits, 1.0f);
      } else {
        const int64_t group = spec_.granularity == IntGranularity::kGroup ? spec_.group : d;
        out = detail::uniform_grouped(xf.view({b * t * h, d, 1}), group, p.bits, 1.0f);
      }
      break;
    case MethodKind::kKivi:
      out = key ? detail::uniform_grouped(xf.view({b, t, h * d}), spec_.group, p.bits, 1.0f)
                : detail::uniform_grouped(xf.view({b * t * h, d, 1}), spec_.group, p.bits, 1.0f);
      break;
    case MethodKind::kSkvq:
      out = detail::skvq_tokens(xf.view({b * t, h * d}), p, spec_.group);
      break;
    case MethodKind::kNuq:
      out = key ? detail::nuq_keys(xf.view({b * t, h * d}), p, &local)
                : detail::nuq_values(
                      spec_.value_per_head ? xf.view({b * t * h, d}) : xf.view({b * t, h * d}), p,
                      &local);
      break;
  }
  if (counters) counters->add(local);
  return out.reshape(x.sizes()).to(x.scalar_type());
}

at::Tensor Quantizer::quantize_ref(bool key, int64_t layer, const at::Tensor& x,
                                   QuantCounters* counters) const {
  check_input(key ? "quantize_keys_ref" : "quantize_values_ref", layer, x);
  if (spec_.kind == MethodKind::kFp16 || x.numel() == 0) {
    if (counters) counters->elements += x.numel();
    return x;
  }
  const at::Tensor xf = x.to(at::kCPU, at::kFloat).contiguous();
  return detail::quantize_ref(spec_, params(key, layer), key, xf, counters)
      .to(x.device(), x.scalar_type());
}

at::Tensor Quantizer::quantize_keys(int64_t layer, const at::Tensor& k, QuantCounters* c) const {
  return quantize(true, layer, k, c);
}
at::Tensor Quantizer::quantize_values(int64_t layer, const at::Tensor& v, QuantCounters* c) const {
  return quantize(false, layer, v, c);
}
at::Tensor Quantizer::quantize_keys_ref(int64_t layer, const at::Tensor& k,
                                        QuantCounters* c) const {
  return quantize_ref(true, layer, k, c);
}
at::Tensor Quantizer::quantize_values_ref(int64_t layer, const at::Tensor& v,
                                          QuantCounters* c) const {
  return quantize_ref(false, layer, v, c);
}

void Quantizer::require_model(const artifact::ModelFingerprint& model) const {
  const std::string name = provenance.path.empty() ? spec_.name() : provenance.path;
  if (provenance.has_model) {
    artifact::require_same_model(name, provenance.model, model);
    return;
  }
  if (!layers_.empty() && n_layers() != model.n_layers) {
    fail("{}: made for {} layers, the model {} has {}", name, n_layers(), model.source,
         model.n_layers);
  }
  if (n_kv_heads_ > 0 && (n_kv_heads_ != model.n_kv_heads || head_dim_ != model.head_dim)) {
    fail("{}: made for {} KV heads x {}, the model {} has {} x {}", name, n_kv_heads_, head_dim_,
         model.source, model.n_kv_heads, model.head_dim);
  }
}

}  // namespace kvq::methods
