#include "kvq/calib/calib_writer.h"

#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/h5.h"

namespace kvq::calib {
namespace {

using artifact::Group;

template <typename T>
void put(const Group& g, const std::string& name, const at::Tensor& t) {
  const at::ScalarType st = std::is_same_v<T, double>  ? at::kDouble
                            : std::is_same_v<T, float> ? at::kFloat
                                                       : at::kLong;
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

void write_vectors(const Group& g, const VectorStats& v, int64_t vector_length) {
  g.set_int_attr("vector_length", vector_length);
  put<double>(g, "normalized_count", v.count);
  put<double>(g, "normalized_fisher", v.fisher);
  const double vectors = static_cast<double>(v.n_vectors);
  put<double>(g, "outlier_fraction", v.n_outliers / (vectors * static_cast<double>(vector_length)));
  put<double>(g, "vector_range", at::stack({v.range_min, v.range_sum / vectors, v.range_max}, 1));
}

}  // namespace

void write_calib(const std::string& path, const CalibResult& r,
                 const artifact::ModelFingerprint& model, const artifact::DataFingerprint& data,
                 const RunInfo& run) {
  artifact::AtomicOutput out(path);
  {
    artifact::File file = artifact::File::create(out.temp_path());
    const Group root = file.root();
    root.set_string_attr("schema",
                         fmt::format("{}/{}", artifact::kCalibSchema, artifact::kCalibVersion));
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
    root.write<double>("fractions", r.options.fractions,
                       {static_cast<int64_t>(r.options.fractions.size())});
    const int64_t n_layers = static_cast<int64_t>(r.layers.size());
    for (int64_t i = 0; i < n_layers; ++i) {
      const LayerCalib& l = r.layers[i];
      const Group layer = root.create_group(artifact::calib_layer_group(i, n_layers));
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
      auto rows = [&](const at::Tensor& t) {
        return s > 0 ? t.narrow(0, 0, s) : at::zeros({0, channels});
      };
      put<float>(samples, "key", rows(l.sample.k));
      put<float>(samples, "value", rows(l.sample.v));
      put<float>(samples, "key_fisher", rows(l.sample.k_fisher));
      put<float>(samples, "value_fisher", rows(l.sample.v_fisher));
    }
    file.close();
  }
  out.commit();
}

}  // namespace kvq::calib
