// kvq.quant/2 writer and validating reader (contract in quant_file.h, layout in
// schemas/quant-2.md).
#include "kvq/methods/quant_file.h"

#include <cmath>

#include <fmt/format.h>

#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/common/error.h"
#include "kvq/common/limits.h"

namespace kvq::methods {
namespace {

using artifact::Group;
using artifact::Problems;

std::string layer_name(int64_t i, int64_t n_layers) {
  return fmt::format("layers/{:0{}d}", i, n_layers > 100 ? 3 : 2);
}

void write_tensor(const Group& g, const MethodSpec& spec, const TensorParams& p, bool key) {
  g.set_int_attr("bits", p.bits);
  g.set_double_attr("outlier_fraction", p.outlier_fraction);
  g.set_string_attr("granularity", granularity(spec, key));
  if (key) g.set_int_attr("pre_rope", spec.post_rope ? 0 : 1);
  const int64_t n_levels = int64_t{1} << p.bits;
  switch (spec.kind) {
    case MethodKind::kNuq:
      g.write<float>("levels_encode", p.levels_encode, {n_levels});
      g.write<float>("levels_decode", p.levels_decode, {n_levels});
      if (key) {
        g.write<float>("lo", p.lo, {static_cast<int64_t>(p.lo.size())});
        g.write<float>("hi", p.hi, {static_cast<int64_t>(p.hi.size())});
      }
      if (p.fisher_error >= 0) g.set_double_attr("fisher_error", p.fisher_error);
      break;
    case MethodKind::kSkvq:
      g.write<int64_t>("perm", p.perm, {static_cast<int64_t>(p.perm.size())});
      g.write<float>("clip", std::vector<float>{p.clip}, {});
      break;
    case MethodKind::kFp8:
      if (p.amax > 0) g.write<float>("amax", std::vector<float>{p.amax}, {});
      break;
    default: break;
  }
}

// Reads a dataset (type and shape checked by the h5 layer), recording a problem on failure.
template <typename T>
bool get(const Group& g, const std::string& name, const std::vector<int64_t>& shape,
         std::vector<T>& out, Problems& problems) {
  try {
    out = g.read<T>(name, shape).values;
  } catch (const Error& e) {
    problems.add("", e.what());
    return false;
  }
  if constexpr (std::is_floating_point_v<T>)
    return artifact::check_finite(problems, g.where(name), out);
  return true;
}

template <typename T, typename Reader>
bool attr(const Group& g, const std::string& name, T& out, Problems& problems, Reader reader) {
  try {
    out = (g.*reader)(name);
    return true;
  } catch (const Error& e) {
    problems.add("", e.what());
    return false;
  }
}

void check_ascending(const Group& g, const std::string& name, const std::vector<float>& v,
                     bool in_unit, Problems& problems) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (in_unit && std::fabs(v[i]) > 1.0f) {
      problems.add(g.where(name),
                   fmt::format("expected levels in [-1, 1], found {} at index {}", v[i], i));
      return;
    }
    if (i > 0 && !(v[i] > v[i - 1])) {
      problems.add(g.where(name),
                   fmt::format("expected strictly ascending values, found {} after {} at index {}",
                               v[i], v[i - 1], i));
      return;
    }
  }
}

TensorParams read_tensor(const Group& g, const MethodSpec& spec, bool key, bool mixed,
                         int64_t channels, Problems& problems) {
  TensorParams p;
  int64_t bits = 0;
  const size_t before = problems.size();
  if (attr(g, "bits", bits, problems, &Group::int_attr)) {
    const int nominal = key ? spec.key_bits : spec.value_bits;
    if (mixed && spec.kind == MethodKind::kNuq) {
      if (bits < 2 || bits > 4)
        problems.add(g.where() + "@bits", fmt::format("expected 2..4 (nuq), found {}", bits));
    } else if (bits != nominal) {
      problems.add(g.where() + "@bits",
                   fmt::format("expected {} ({}), found {}", nominal, spec.name(), bits));
    }
  }
  p.bits = static_cast<int>(bits);
  double fraction = 0;
  if (attr(g, "outlier_fraction", fraction, problems, &Group::double_attr)) {
    if (!(std::fabs(fraction - spec.outlier_fraction()) <= 1e-12)) {  // NaN included
      problems.add(g.where() + "@outlier_fraction",
                   fmt::format("expected {} ({}), found {}", spec.outlier_fraction(), spec.name(),
                               fraction));
    }
    p.outlier_fraction = fraction;
  }
  std::string gran;
  if (attr(g, "granularity", gran, problems, &Group::string_attr) &&
      gran != granularity(spec, key)) {
    problems.add(g.where() + "@granularity",
                 fmt::format("expected \"{}\" ({}), found \"{}\"", granularity(spec, key),
                             spec.name(), gran));
  }
  int64_t pre_rope = 0;
  if (key && attr(g, "pre_rope", pre_rope, problems, &Group::int_attr) &&
      pre_rope != (spec.post_rope ? 0 : 1)) {
    problems.add(
        g.where() + "@pre_rope",
        fmt::format("expected {} ({}), found {}", spec.post_rope ? 0 : 1, spec.name(), pre_rope));
  }
  if (problems.size() != before) return p;  // the shapes below depend on bits
  const int64_t n_levels = int64_t{1} << bits;
  switch (spec.kind) {
    case MethodKind::kNuq:
      if (get(g, "levels_encode", {n_levels}, p.levels_encode, problems)) {
        check_ascending(g, "levels_encode", p.levels_encode, /*in_unit=*/true, problems);
      }
      if (get(g, "levels_decode", {n_levels}, p.levels_decode, problems)) {
        check_ascending(g, "levels_decode", p.levels_decode, /*in_unit=*/false, problems);
      }
      if (key && get(g, "lo", {channels}, p.lo, problems) &&
          get(g, "hi", {channels}, p.hi, problems)) {
        for (int64_t c = 0; c < channels; ++c) {
          if (!(p.lo[c] <= p.hi[c])) {
            problems.add(
                g.where("lo"),
                fmt::format("expected lo <= hi, found {} > {} in channel {}", p.lo[c], p.hi[c], c));
            break;
          }
          // The offset (lo + hi) / 2 and scale (hi - lo) / 2 are computed in fp32: finite ends
          // can still overflow them.
          if (!std::isfinite(p.hi[c] - p.lo[c]) || !std::isfinite(p.hi[c] + p.lo[c])) {
            problems.add(g.where("hi"),
                         fmt::format("expected lo + hi and hi - lo finite in fp32, found lo {} "
                                     "and hi {} in channel {}",
                                     p.lo[c], p.hi[c], c));
            break;
          }
        }
      }
      if (g.has_attr("fisher_error") &&
          attr(g, "fisher_error", p.fisher_error, problems, &Group::double_attr) &&
          !(std::isfinite(p.fisher_error) && p.fisher_error >= 0))
        problems.add(g.where() + "@fisher_error",
                     fmt::format("expected a finite value >= 0, found {}", p.fisher_error));
      break;
    case MethodKind::kSkvq: {
      if (get(g, "perm", {channels}, p.perm, problems)) {
        std::vector<bool> seen(static_cast<size_t>(channels), false);
        for (int64_t i = 0; i < channels; ++i) {
          const int64_t c = p.perm[i];
          if (c < 0 || c >= channels || seen[c]) {
            problems.add(g.where("perm"),
                         fmt::format("expected a permutation of 0..{}, found {} at index {}",
                                     channels - 1, c, i));
            break;
          }
          seen[c] = true;
        }
      }
      std::vector<float> clip;
      if (get(g, "clip", {}, clip, problems)) {
        p.clip = clip[0];
        if (!(p.clip > 0.0f && p.clip <= 1.0f))
          problems.add(g.where("clip"), fmt::format("expected 0 < r <= 1, found {}", p.clip));
      }
      break;
    }
    case MethodKind::kFp8:
      if (g.exists("amax")) {
        std::vector<float> amax;
        if (get(g, "amax", {}, amax, problems)) {
          p.amax = amax[0];
          if (!(p.amax >= 0.0f))
            problems.add(g.where("amax"), fmt::format("expected a value >= 0, found {}", p.amax));
        }
      }
      break;
    default: break;
  }
  return p;
}

}  // namespace

std::string granularity(const MethodSpec& s, bool key) {
  switch (s.kind) {
    case MethodKind::kFp16: return "none";
    case MethodKind::kFp8: return "tensor";
    case MethodKind::kNuq: return key ? "channel" : "token";
    case MethodKind::kSkvq: return fmt::format("token/perm-group{}", s.group);
    case MethodKind::kKivi:
      return key ? fmt::format("channel/time-group{}", s.group)
                 : fmt::format("token/group{}", s.group);
    case MethodKind::kInt:
      if (s.granularity == IntGranularity::kGroup) return fmt::format("token/group{}", s.group);
      if (s.granularity == IntGranularity::kChannel && key)
        return fmt::format("channel/time-group{}", kIntChannelTokens);
      return "token";
  }
  return "?";
}

void write_quant(const std::string& path, const Quantizer& q, const std::string& created) {
  artifact::AtomicOutput out(path);
  {
    artifact::File file = artifact::File::create(out.temp_path());
    const Group root = file.root();
    const Provenance& prov = q.provenance;
    root.set_string_attr("schema", fmt::format("{}/{}", kQuantSchema, kQuantVersion));
    root.set_string_attr("tool_version", KVQ_VERSION);
    root.set_string_attr("created", created);
    root.set_string_attr("method", q.spec().name());
    root.set_double_attr("bits_budget", prov.bits_budget);
    root.set_int_attr("n_layers", q.n_layers());
    root.set_int_attr("n_kv_heads", q.n_kv_heads());
    root.set_int_attr("head_dim", q.head_dim());
    root.set_string_attr("fingerprint", prov.has_data    ? "calib"
                                        : prov.has_model ? "model"
                                                         : "none");
    if (prov.has_model)
      write_fingerprints(root, prov.model, prov.has_data ? prov.data : artifact::DataFingerprint{});
    for (int64_t i = 0; i < q.n_layers(); ++i) {
      const Group layer = root.create_group(layer_name(i, q.n_layers()));
      write_tensor(layer.create_group("key"), q.spec(), q.layers()[i].key, /*key=*/true);
      write_tensor(layer.create_group("value"), q.spec(), q.layers()[i].value, /*key=*/false);
    }
    file.close();
  }
  out.commit();
}

Quantizer check_quant(const artifact::File& file, Problems& problems) {
  const Group root = file.root();
  artifact::require_schema(root, kQuantSchema, kQuantVersion, kQuantVersion);
  std::string method;
  if (!attr(root, "method", method, problems, &Group::string_attr)) return {};
  MethodSpec spec;
  try {
    spec = parse_method(method);
  } catch (const Error& e) {
    problems.add(root.where() + "@method", e.what());
    return {};
  }
  Provenance prov;
  int64_t n_layers = 0, n_kv_heads = 0, head_dim = 0;
  std::string fingerprint;
  attr(root, "bits_budget", prov.bits_budget, problems, &Group::double_attr);
  attr(root, "n_layers", n_layers, problems, &Group::int_attr);
  attr(root, "n_kv_heads", n_kv_heads, problems, &Group::int_attr);
  attr(root, "head_dim", head_dim, problems, &Group::int_attr);
  attr(root, "created", prov.created, problems, &Group::string_attr);
  attr(root, "tool_version", prov.tool_version, problems, &Group::string_attr);
  if (attr(root, "fingerprint", fingerprint, problems, &Group::string_attr)) {
    if (fingerprint == "calib" || fingerprint == "model") {
      prov.has_model = true;
      prov.model = artifact::read_model_fingerprint(root, problems);
      if (fingerprint == "calib") {
        prov.has_data = true;
        prov.data = artifact::read_data_fingerprint(root, problems);
      }
    } else if (fingerprint != "none") {
      problems.add(root.where() + "@fingerprint",
                   fmt::format("expected calib, model or none, found \"{}\"", fingerprint));
    }
  }
  if (!problems.empty()) return {};
  const bool mixed = prov.bits_budget != 0.0;
  if (mixed &&
      (spec.kind != MethodKind::kNuq || !(prov.bits_budget >= 2.0 && prov.bits_budget <= 4.0))) {
    problems.add(root.where() + "@bits_budget",
                 fmt::format("expected 0, or 2..4 for a nuq method, found {} ({})",
                             prov.bits_budget, method));
  }
  if (n_layers < 0 || n_kv_heads < 0 || head_dim < 0) {
    problems.add(root.where(),
                 fmt::format("expected sizes >= 0, found n_layers {} n_kv_heads {} head_dim {}",
                             n_layers, n_kv_heads, head_dim));
    return {};
  }
  if (prov.has_model && (n_layers != prov.model.n_layers || n_kv_heads != prov.model.n_kv_heads ||
                         head_dim != prov.model.head_dim)) {
    problems.add(
        root.where(),
        fmt::format("expected the model's sizes {} layers, {} x {}, found {} layers, {} x {}",
                    prov.model.n_layers, prov.model.n_kv_heads, prov.model.head_dim, n_layers,
                    n_kv_heads, head_dim));
  }
  if (spec.needs_calib() && (n_layers < 1 || n_kv_heads < 1 || head_dim < 1)) {
    problems.add(
        root.where(),
        fmt::format("expected per-layer tables for {}, found n_layers {} n_kv_heads {} head_dim {}",
                    method, n_layers, n_kv_heads, head_dim));
  }
  // A layer count the file cannot hold fails before anything is allocated or probed per layer.
  const size_t n_groups = root.exists("layers") ? root.open_group("layers").children().size() : 0;
  if (n_layers > 0 && static_cast<uint64_t>(n_layers) > n_groups)
    problems.add(root.where("layers"),
                 fmt::format("expected {} layer groups (n_layers), found {}", n_layers, n_groups));
  if (!problems.empty()) return {};
  const int64_t channels = static_cast<int64_t>(checked_mul(static_cast<uint64_t>(n_kv_heads),
                                                            static_cast<uint64_t>(head_dim),
                                                            root.where() + "@n_kv_heads"));
  std::vector<LayerParams> layers(static_cast<size_t>(n_layers));
  for (int64_t i = 0; i < n_layers; ++i) {
    const std::string name = layer_name(i, n_layers);
    for (const bool key : {true, false}) {
      const std::string path = name + (key ? "/key" : "/value");
      if (!root.exists(path)) {
        problems.add(root.where(path),
                     fmt::format("missing group (the file has {} layers)", n_layers));
        continue;
      }
      TensorParams& p = key ? layers[i].key : layers[i].value;
      p = read_tensor(root.open_group(path), spec, key, mixed, channels, problems);
    }
  }
  if (!problems.empty()) return {};
  try {
    Quantizer q(spec, std::move(layers), n_kv_heads, head_dim);
    prov.path = file.path();
    q.provenance = prov;
    return q;
  } catch (const Error& e) {
    problems.add(file.path(), e.what());
    return {};
  }
}

Quantizer read_quant(const std::string& path) {
  return artifact::read_isolated(path, [&] {
    const artifact::File file = artifact::File::open(path);
    Problems problems;
    Quantizer q = check_quant(file, problems);
    problems.throw_if_any();
    return q;
  });
}

}  // namespace kvq::methods
