// kvq inspect: validates any kvq artifact and prints what it holds, per layer.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "kvq/artifact/h5.h"
#include "kvq/calib/summary.h"
#include "kvq/common/error.h"
#include "kvq/common/progress.h"

namespace kvq::app {
namespace {

struct InspectFlags {
  std::string file;
  bool json = false;
};

std::string top_channels(const calib::ChannelSummary& s) {
  std::vector<std::string> parts;
  for (const auto& [c, v] : s.top) parts.push_back(fmt::format("{}:{:.2f}", c, v));
  return fmt::format("{}", fmt::join(parts, " "));
}

double at_fraction(const std::vector<double>& fractions, const std::vector<double>& values,
                   double f, int64_t stride = 1, int64_t offset = 0) {
  for (size_t i = 0; i < fractions.size(); ++i) {
    if (std::abs(fractions[i] - f) < 1e-12 && i * stride + offset < values.size()) return values[i * stride + offset];
  }
  return std::nan("");
}

nlohmann::json channel_json(const calib::ChannelSummary& s) {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& [c, v] : s.top) top.push_back({{"channel", c}, {"max_abs", v}});
  return {{"max_abs", s.max_abs}, {"median_channel_max", s.median_channel_max},
          {"top_channels", top}, {"fisher_mean", s.fisher_mean}};
}

void run_inspect(const InspectFlags& f) {
  const artifact::File file = artifact::File::open(f.file);
  const artifact::Group root = file.root();
  const std::string schema = root.has_attr("schema") ? root.string_attr("schema") : "";
  artifact::Problems problems;
  if (schema.rfind(std::string(calib::kCalibSchema) + "/", 0) == 0) {
    const calib::CalibData d = calib::check_calib(file, problems);
    if (problems.empty()) print_calib(d, f.json, nullptr);
  } else {
    fail("{}: schema \"{}\" is not a kvq artifact kvq inspect knows (kvq.calib/1)", f.file, schema);
  }
  if (!problems.empty()) {
    if (f.json) {
      fmt::print("{}\n", nlohmann::json{{"file", f.file}, {"schema", schema}, {"valid", false},
                                        {"problems", problems.list()}}.dump(2));
    } else {
      for (const std::string& p : problems.list()) fmt::print("problem: {}\n", p);
    }
    fail("{}: {} problem(s) found; first: {}", f.file, problems.size(), problems.list().front());
  }
}

}  // namespace

void print_calib(const calib::CalibData& d, bool json, const RunFigures* run) {
  const double f1 = 0.01;
  if (json) {
    nlohmann::json layers = nlohmann::json::array();
    for (size_t i = 0; i < d.layers.size(); ++i) {
      const calib::LayerData& l = d.layers[i];
      layers.push_back({{"layer", i},
                        {"key", channel_json(calib::summarize_channels(l.key))},
                        {"key_post_rope", channel_json(calib::summarize_channels(l.key_post))},
                        {"value", channel_json(calib::summarize_channels(l.value))},
                        {"value_outlier_fraction", l.outlier_fraction.values},
                        {"value_vector_range_mean", at_fraction(d.fractions, l.vector_range.values, 0.0, 3, 1)},
                        {"samples", l.sample_positions.values.size()}});
    }
    nlohmann::json j = {{"file", d.path},
                        {"schema", fmt::format("{}/{}", calib::kCalibSchema, calib::kCalibVersion)},
                        {"valid", true},
                        {"model", {{"source", d.model.source}, {"n_layers", d.model.n_layers},
                                   {"n_kv_heads", d.model.n_kv_heads}, {"head_dim", d.model.head_dim},
                                   {"weights_checksum", d.model.weights_checksum}}},
                        {"data", {{"source", d.data.source}, {"sha256", d.data.sha256},
                                  {"n_tokens", d.data.n_tokens}, {"n_sequences", d.data.n_sequences},
                                  {"seq_len", d.data.seq_len}, {"seed", d.data.seed}}},
                        {"fractions", d.fractions},
                        {"key_bins", d.key_bins},
                        {"value_bins", d.value_bins},
                        {"layers", layers}};
    if (run) {
      j["run"] = {{"seconds", run->seconds}, {"tokens_per_s", run->tokens_per_s},
                  {"peak_rss_bytes", run->peak_rss_bytes}, {"peak_device_bytes", run->peak_device_bytes},
                  {"mean_loss", run->mean_loss}};
    }
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("{}: {}/{}, model {} ({} layers, {} KV heads x {}, weights {}), data {} ({} x {} tokens, seed {})\n\n",
             d.path, calib::kCalibSchema, calib::kCalibVersion, d.model.source, d.model.n_layers,
             d.model.n_kv_heads, d.model.head_dim, d.model.weights_checksum, d.data.source,
             d.data.n_sequences, d.data.seq_len, d.data.seed);
  fmt::print("| layer | K max abs | K median channel max | K top channels | K post-RoPE max | V max abs | V median channel max | V outliers at 1% | V mean token range | Fisher K | Fisher V |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < d.layers.size(); ++i) {
    const calib::LayerData& l = d.layers[i];
    const auto k = calib::summarize_channels(l.key), kp = calib::summarize_channels(l.key_post);
    const auto v = calib::summarize_channels(l.value);
    fmt::print("| {} | {:.3f} | {:.3f} | {} | {:.3f} | {:.3f} | {:.3f} | {:.2f}% | {:.3f} | {:.3g} | {:.3g} |\n", i,
               k.max_abs, k.median_channel_max, top_channels(k), kp.max_abs, v.max_abs,
               v.median_channel_max, 100 * at_fraction(d.fractions, l.outlier_fraction.values, f1),
               at_fraction(d.fractions, l.vector_range.values, 0.0, 3, 1), k.fisher_mean, v.fisher_mean);
  }
  if (run) {
    fmt::print("\ncalibration: {:.1f} s, {} tok/s, mean loss {:.4f}, peak memory {}B (process)", run->seconds,
               human_count(run->tokens_per_s), run->mean_loss, human_count(static_cast<double>(run->peak_rss_bytes)));
    if (run->peak_device_bytes >= 0) fmt::print(", {}B (GPU)", human_count(static_cast<double>(run->peak_device_bytes)));
    fmt::print("\n");
  }
}

void register_inspect(CLI::App& app) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* cmd = app.add_subcommand("inspect", "Validate a kvq artifact (calib.h5) and print what it holds");
  cmd->add_option("file", flags->file, "The artifact")->required();
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->callback([flags] { run_inspect(*flags); });
}

}  // namespace kvq::app
