#include "kvq/calib/calib_file.h"

#include <cmath>
#include <tuple>

#include <fmt/format.h>

#include "kvq/artifact/atomic_file.h"
#include "kvq/common/error.h"

namespace kvq::calib {
namespace {

using artifact::Array;
using artifact::Group;
using artifact::Problems;

std::string layer_name(int64_t i, int64_t n_layers) {
  return fmt::format("layers/{:0{}d}", i, n_layers > 100 ? 3 : 2);
}

template <typename T>
void put(const Group& g, const std::string& name, const at::Tensor& t) {
  const at::ScalarType st = std::is_same_v<T, double> ? at::kDouble
                            : std::is_same_v<T, float> ? at::kFloat : at::kLong;
  const at::Tensor c = t.to(at::kCPU, st).contiguous();
  g.write<T>(name, c.data_ptr<T>(), std::vector<int64_t>(c.sizes().begin(), c.sizes().end()));
}

void write_channels(const Group& g, const ChannelStats& s, const std::vector<double>& fractions) {
  const double n = static_cast<double>(s.n_tokens());
  g.set_int_attr("n_tokens", s.n_tokens());
  put<double>(g, "min", s.min);
  put<double>(g, "max", s.max);
  const at::Tensor mean = s.sum / n;
  put<double>(g, "mean", mean);
  put<double>(g, "std", (s.sum_sq / n - mean.square()).clamp_min(0).sqrt());
  put<double>(g, "fisher_mean", s.fisher_sum / n);
  put<double>(g, "hist_count", s.count);
  put<double>(g, "hist_fisher", s.fisher);
  std::vector<at::Tensor> th;
  for (double f : fractions) th.push_back(channel_thresholds(s, f));
  put<double>(g, "thresholds", at::stack(th));
}

constexpr int64_t kAnyLength = -1;

// Reads a dataset of the expected type and shape ({kAnyLength}: any 1-D), recording a problem
// instead of throwing.
template <typename T>
Array<T> get(const Group& g, const std::string& name, const std::vector<int64_t>& shape,
             Problems& problems) {
  try {
    Array<T> a = shape == std::vector<int64_t>{kAnyLength} ? g.read<T>(name) : g.read<T>(name, shape);
    if (a.shape.size() != shape.size()) {
      problems.add(g.where(name), fmt::format("expected {} dimension(s), found {}", shape.size(), a.shape.size()));
      return {};
    }
    if constexpr (std::is_floating_point_v<T>) artifact::check_finite(problems, g.where(name), a.values);
    return a;
  } catch (const Error& e) {
    problems.add(g.where(name), e.what());
    return {};
  }
}

void check_nonnegative(Problems& problems, const std::string& where, const std::vector<double>& v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < 0) {
      problems.add(where, fmt::format("expected values >= 0, found {} at index {}", v[i], i));
      return;
    }
  }
}

ChannelData read_channels(const Group& g, int64_t channels, int64_t bins, int64_t n_fractions,
                          Problems& problems) {
  ChannelData d;
  try {
    d.n_tokens = g.int_attr("n_tokens");
  } catch (const Error& e) {
    problems.add(g.where(), e.what());
  }
  d.min = get<double>(g, "min", {channels}, problems);
  d.max = get<double>(g, "max", {channels}, problems);
  d.mean = get<double>(g, "mean", {channels}, problems);
  d.std = get<double>(g, "std", {channels}, problems);
  d.fisher_mean = get<double>(g, "fisher_mean", {channels}, problems);
  d.hist_count = get<double>(g, "hist_count", {channels, bins}, problems);
  d.hist_fisher = get<double>(g, "hist_fisher", {channels, bins}, problems);
  d.thresholds = get<double>(g, "thresholds", {n_fractions, 2, channels}, problems);
  check_nonnegative(problems, g.where("hist_count"), d.hist_count.values);
  check_nonnegative(problems, g.where("hist_fisher"), d.hist_fisher.values);
  check_nonnegative(problems, g.where("fisher_mean"), d.fisher_mean.values);
  if (d.min.values.size() == d.max.values.size()) {
    for (size_t c = 0; c < d.min.values.size(); ++c) {
      if (d.min.values[c] > d.max.values[c]) {
        problems.add(g.where("min"), fmt::format("expected min <= max, found {} > {} in channel {}",
                                                 d.min.values[c], d.max.values[c], c));
        break;
      }
    }
  }
  return d;
}

void write_vectors(const Group& g, const VectorStats& v, int64_t vector_length) {
  g.set_int_attr("vector_length", vector_length);
  put<double>(g, "normalized_count", v.count);
  put<double>(g, "normalized_fisher", v.fisher);
  const double vectors = static_cast<double>(v.n_vectors);
  put<double>(g, "outlier_fraction", v.n_outliers / (vectors * static_cast<double>(vector_length)));
  put<double>(g, "vector_range", at::stack({v.range_min, v.range_sum / vectors, v.range_max}, 1));
}

VectorData read_vectors(const Group& g, int64_t vector_length, int64_t n_fractions, int64_t bins, Problems& problems) {
  VectorData d;
  try {
    const int64_t n = g.int_attr("vector_length");
    if (n != vector_length) problems.add(g.where(), fmt::format("vector_length: expected {}, found {}", vector_length, n));
  } catch (const Error& e) {
    problems.add(g.where(), e.what());
  }
  d.normalized_count = get<double>(g, "normalized_count", {n_fractions, bins}, problems);
  d.normalized_fisher = get<double>(g, "normalized_fisher", {n_fractions, bins}, problems);
  check_nonnegative(problems, g.where("normalized_count"), d.normalized_count.values);
  check_nonnegative(problems, g.where("normalized_fisher"), d.normalized_fisher.values);
  d.outlier_fraction = get<double>(g, "outlier_fraction", {n_fractions}, problems);
  d.vector_range = get<double>(g, "vector_range", {n_fractions, 3}, problems);
  return d;
}

}  // namespace

void write_calib(const std::string& path, const CalibResult& r,
                 const artifact::ModelFingerprint& model, const artifact::DataFingerprint& data,
                 const RunInfo& run) {
  artifact::AtomicOutput out(path);
  {
    artifact::File file = artifact::File::create(out.temp_path());
    const Group root = file.root();
    root.set_string_attr("schema", fmt::format("{}/{}", kCalibSchema, kCalibVersion));
    root.set_string_attr("tool_version", KVQ_VERSION);
    root.set_string_attr("created", run.created);
    root.set_string_attr("device", run.device);
    root.set_string_attr("dtype", run.dtype);
    artifact::write_fingerprints(root, model, data);
    root.set_int_attr("key_bins", r.options.key_bins);
    root.set_int_attr("value_bins", r.options.value_bins);
    root.set_double_attr("mean_loss", r.mean_loss);
    root.set_double_attr("seconds", r.seconds);
    root.set_double_attr("tokens_per_s", r.tokens_per_s);
    root.set_int_attr("peak_rss_bytes", r.peak_rss_bytes);
    root.set_int_attr("peak_device_bytes", r.peak_device_bytes);
    root.write<double>("fractions", r.options.fractions, {static_cast<int64_t>(r.options.fractions.size())});
    const int64_t n_layers = static_cast<int64_t>(r.layers.size());
    for (int64_t i = 0; i < n_layers; ++i) {
      const LayerCalib& l = r.layers[i];
      const Group layer = root.create_group(layer_name(i, n_layers));
      write_channels(layer.create_group("key"), l.key, r.options.fractions);
      write_channels(layer.create_group("key_post"), l.key_post, r.options.fractions);
      const Group value = layer.create_group("value");
      write_channels(value, l.value, r.options.fractions);
      write_vectors(value.create_group("token"), l.value_tokens, model.n_kv_heads * model.head_dim);
      write_vectors(value.create_group("head"), l.value_heads, model.head_dim);
      const Group samples = layer.create_group("samples");
      const int64_t s = l.sample.size();
      std::vector<int64_t> positions(l.sample.positions.begin(), l.sample.positions.begin() + s);
      samples.write<int64_t>("positions", positions, {s});
      const int64_t channels = model.n_kv_heads * model.head_dim;
      auto rows = [&](const at::Tensor& t) { return s > 0 ? t.narrow(0, 0, s) : at::zeros({0, channels}); };
      put<float>(samples, "key", rows(l.sample.k));
      put<float>(samples, "value", rows(l.sample.v));
      put<float>(samples, "key_fisher", rows(l.sample.k_fisher));
      put<float>(samples, "value_fisher", rows(l.sample.v_fisher));
    }
    file.close();
  }
  out.commit();
}

CalibData check_calib(const artifact::File& file, Problems& problems) {
  CalibData d;
  d.path = file.path();
  const Group root = file.root();
  artifact::require_schema(root, kCalibSchema, kCalibVersion, kCalibVersion);
  d.model = artifact::read_model_fingerprint(root, problems);
  d.data = artifact::read_data_fingerprint(root, problems);
  try {
    d.key_bins = root.int_attr("key_bins");
    d.value_bins = root.int_attr("value_bins");
  } catch (const Error& e) {
    problems.add(root.where(), e.what());
  }
  if (!problems.empty()) return d;  // sizes below depend on these
  const Array<double> fractions = get<double>(root, "fractions", {kAnyLength}, problems);
  d.fractions = fractions.values;
  if (d.fractions.empty() || d.fractions[0] != 0.0) {
    problems.add(root.where("fractions"), "expected ascending outlier fractions in [0, 1) starting at 0");
  }
  for (size_t i = 1; i < d.fractions.size(); ++i) {
    if (!(d.fractions[i] > d.fractions[i - 1] && d.fractions[i] < 1.0)) {
      problems.add(root.where("fractions"), fmt::format("expected ascending values in [0, 1), found {} after {}",
                                                        d.fractions[i], d.fractions[i - 1]));
      break;
    }
  }
  const int64_t n_f = static_cast<int64_t>(d.fractions.size());
  const int64_t channels = d.model.n_kv_heads * d.model.head_dim;
  for (int64_t i = 0; i < d.model.n_layers; ++i) {
    const std::string name = layer_name(i, d.model.n_layers);
    if (!root.exists(name)) {
      problems.add(root.where(name), "missing group (the model has " + std::to_string(d.model.n_layers) + " layers)");
      continue;
    }
    const Group layer = root.open_group(name);
    LayerData l;
    for (auto [kind, into] : {std::pair{"key", &l.key}, std::pair{"key_post", &l.key_post}, std::pair{"value", &l.value}}) {
      if (!layer.exists(kind)) {
        problems.add(layer.where(kind), "missing group");
        continue;
      }
      *into = read_channels(layer.open_group(kind), channels, d.key_bins, n_f, problems);
    }
    if (layer.exists("value")) {
      const Group value = layer.open_group("value");
      for (auto [kind, into, length] : {std::tuple{"token", &l.value_token, channels},
                                        std::tuple{"head", &l.value_head, d.model.head_dim}}) {
        if (!value.exists(kind)) {
          problems.add(value.where(kind), "missing group");
          continue;
        }
        *into = read_vectors(value.open_group(kind), length, n_f, d.value_bins, problems);
      }
    }
    if (!layer.exists("samples")) {
      problems.add(layer.where("samples"), "missing group");
    } else {
      const Group s = layer.open_group("samples");
      l.sample_positions = get<int64_t>(s, "positions", {kAnyLength}, problems);
      const int64_t n = static_cast<int64_t>(l.sample_positions.values.size());
      l.sample_key = get<float>(s, "key", {n, channels}, problems);
      l.sample_value = get<float>(s, "value", {n, channels}, problems);
      l.sample_key_fisher = get<float>(s, "key_fisher", {n, channels}, problems);
      l.sample_value_fisher = get<float>(s, "value_fisher", {n, channels}, problems);
    }
    d.layers.push_back(std::move(l));
  }
  return d;
}

CalibData read_calib(const std::string& path) {
  const artifact::File file = artifact::File::open(path);
  Problems problems;
  CalibData d = check_calib(file, problems);
  problems.throw_if_any();
  return d;
}

}  // namespace kvq::calib
