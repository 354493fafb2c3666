#include "kvq/artifact/calib_file.h"

#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/common/limits.h"

namespace kvq::artifact {
namespace {

constexpr int64_t kAnyLength = -1;

// Reads a dataset of the expected type and shape ({kAnyLength}: any 1-D), recording a problem
// instead of throwing.
template <typename T>
Array<T> get(const Group& g, const std::string& name, const std::vector<int64_t>& shape,
             Problems& problems) {
  try {
    Array<T> a =
        shape == std::vector<int64_t>{kAnyLength} ? g.read<T>(name) : g.read<T>(name, shape);
    if (a.shape.size() != shape.size()) {
      problems.add(g.where(name),
                   fmt::format("expected {} dimension(s), found {}", shape.size(), a.shape.size()));
      return {};
    }
    if constexpr (std::is_floating_point_v<T>) check_finite(problems, g.where(name), a.values);
    return a;
  } catch (const Error& e) {
    problems.add("", e.what());  // the h5 layer names the path
    return {};
  }
}

// Adds a problem for the first value outside [lo, hi] (NaN included); `range` words it.
template <typename T>
void check_range(Problems& problems, const std::string& where, const std::vector<T>& v, T lo, T hi,
                 const char* range) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!(v[i] >= lo && v[i] <= hi)) {
      problems.add(where,
                   fmt::format("expected values in {}, found {} at index {}", range, v[i], i));
      return;
    }
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

CalibChannels read_channels(const Group& g, int64_t channels, int64_t bins, int64_t n_fractions,
                            Problems& problems) {
  CalibChannels d;
  try {
    d.n_tokens = g.int_attr("n_tokens");
    if (d.n_tokens < 0)
      problems.add(g.where() + "@n_tokens",
                   fmt::format("expected a count >= 0, found {}", d.n_tokens));
  } catch (const Error& e) {
    problems.add("", e.what());
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
  // thresholds [F, 2, C]: each channel's (lo, hi) at each fraction.
  const std::vector<double>& t = d.thresholds.values;
  if (d.thresholds.shape == std::vector<int64_t>{n_fractions, 2, channels}) {  // read whole
    for (int64_t f = 0, bad = 0; f < n_fractions && !bad; ++f) {
      for (int64_t c = 0; c < channels; ++c) {
        const double lo = t[(f * 2) * channels + c], hi = t[(f * 2 + 1) * channels + c];
        if (!(lo <= hi)) {
          problems.add(g.where("thresholds"),
                       fmt::format("expected lo <= hi, found {} > {} at fraction {} channel {}", lo,
                                   hi, f, c));
          bad = 1;
          break;
        }
      }
    }
  }
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

CalibVectors read_vectors(const Group& g, int64_t vector_length, int64_t n_fractions, int64_t bins,
                          Problems& problems) {
  CalibVectors d;
  try {
    const int64_t n = g.int_attr("vector_length");
    if (n != vector_length)
      problems.add(g.where(),
                   fmt::format("vector_length: expected {}, found {}", vector_length, n));
  } catch (const Error& e) {
    problems.add("", e.what());
  }
  d.normalized_count = get<double>(g, "normalized_count", {n_fractions, bins}, problems);
  d.normalized_fisher = get<double>(g, "normalized_fisher", {n_fractions, bins}, problems);
  check_nonnegative(problems, g.where("normalized_count"), d.normalized_count.values);
  check_nonnegative(problems, g.where("normalized_fisher"), d.normalized_fisher.values);
  d.outlier_fraction = get<double>(g, "outlier_fraction", {n_fractions}, problems);
  check_range(problems, g.where("outlier_fraction"), d.outlier_fraction.values, 0.0, 1.0, "[0, 1]");
  d.vector_range = get<double>(g, "vector_range", {n_fractions, 3}, problems);
  // [F, 3]: min, mean and max of a width hi - lo, so 0 <= min <= mean <= max (the mean is a
  // sum divided by a count: a few ulps of slack).
  const std::vector<double>& r = d.vector_range.values;
  for (size_t f = 0; f + 2 < r.size(); f += 3) {
    const double slack = 1e-9 * std::fabs(r[f + 2]);
    if (!(r[f] >= 0 && r[f] <= r[f + 1] + slack && r[f + 1] <= r[f + 2] + slack)) {
      problems.add(g.where("vector_range"),
                   fmt::format("expected 0 <= min <= mean <= max, found {}, {}, {} at fraction {}",
                               r[f], r[f + 1], r[f + 2], f / 3));
      break;
    }
  }
  return d;
}

}  // namespace

std::string calib_layer_group(int64_t layer, int64_t n_layers) {
  return fmt::format("layers/{:0{}d}", layer, n_layers > 100 ? 3 : 2);
}

CalibData check_calib(const File& file, Problems& problems) {
  CalibData d;
  d.path = file.path();
  const Group root = file.root();
  require_schema(root, kCalibSchema, kCalibVersion, kCalibVersion);
  d.model = read_model_fingerprint(root, problems);
  d.data = read_data_fingerprint(root, problems);
  try {
    d.key_bins = root.int_attr("key_bins");
    d.value_bins = root.int_attr("value_bins");
    for (const auto& [name, v, max] : {std::tuple{"key_bins", d.key_bins, kMaxKeyBins},
                                       std::tuple{"value_bins", d.value_bins, kMaxValueBins}})
      if (v < 2 || v > max)
        problems.add(root.where() + "@" + name, fmt::format("expected 2..{}, found {}", max, v));
  } catch (const Error& e) {
    problems.add("", e.what());
  }
  // Run figures: absent in hand-made files, but never out of range when present.
  if (root.has_attr("mean_loss")) {
    try {
      const double loss = root.double_attr("mean_loss");
      if (!(std::isfinite(loss) && loss >= 0))
        problems.add(root.where() + "@mean_loss",
                     fmt::format("expected a finite value >= 0, found {}", loss));
    } catch (const Error& e) {
      problems.add("", e.what());
    }
  }
  if (d.data.seq_len < 0 || d.data.n_sequences < 0 || d.data.n_tokens < 0)
    problems.add(root.where(), fmt::format("expected data.seq_len, data.n_sequences and "
                                           "data.n_tokens >= 0, found {}, {}, {}",
                                           d.data.seq_len, d.data.n_sequences, d.data.n_tokens));
  if (!problems.empty()) return d;  // sizes below depend on these
  const Array<double> fractions = get<double>(root, "fractions", {kAnyLength}, problems);
  d.fractions = fractions.values;
  if (d.fractions.empty() || d.fractions[0] != 0.0) {
    problems.add(root.where("fractions"),
                 "expected ascending outlier fractions in [0, 1) starting at 0");
  }
  for (size_t i = 1; i < d.fractions.size(); ++i) {
    if (!(d.fractions[i] > d.fractions[i - 1] && d.fractions[i] < 1.0)) {
      problems.add(root.where("fractions"),
                   fmt::format("expected ascending values in [0, 1), found {} after {}",
                               d.fractions[i], d.fractions[i - 1]));
      break;
    }
  }
  const int64_t n_f = static_cast<int64_t>(d.fractions.size());
  const int64_t channels = static_cast<int64_t>(
      checked_mul(static_cast<uint64_t>(d.model.n_kv_heads),
                  static_cast<uint64_t>(d.model.head_dim), root.where() + "@model.n_kv_heads"));
  // The layer count must be one the file can hold before anything is done per layer: a count of
  // 10^7 would otherwise cost a probe (and a problem line) per missing layer.
  const size_t n_groups = root.exists("layers") ? root.open_group("layers").children().size() : 0;
  if (static_cast<uint64_t>(d.model.n_layers) > n_groups) {
    problems.add(root.where("layers"),
                 fmt::format("expected {} layer groups (model.n_layers), found {}",
                             d.model.n_layers, n_groups));
    return d;
  }
  for (int64_t i = 0; i < d.model.n_layers; ++i) {
    const std::string name = calib_layer_group(i, d.model.n_layers);
    if (!root.exists(name)) {
      problems.add(root.where(name),
                   "missing group (the model has " + std::to_string(d.model.n_layers) + " layers)");
      continue;
    }
    const Group layer = root.open_group(name);
    CalibLayer l;
    for (auto [kind, into] : {std::pair{"key", &l.key}, std::pair{"key_post", &l.key_post},
                              std::pair{"value", &l.value}}) {
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
      // Positions are within a calibration sequence (each starts at 0).
      check_range<int64_t>(problems, s.where("positions"), l.sample_positions.values, 0,
                           d.data.seq_len - 1, fmt::format("[0, {})", d.data.seq_len).c_str());
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
  return read_isolated(path, [&] {
    const File file = File::open(path);
    Problems problems;
    CalibData d = check_calib(file, problems);
    problems.throw_if_any();
    return d;
  });
}

}  // namespace kvq::artifact
