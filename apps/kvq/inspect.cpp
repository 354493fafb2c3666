// kvq inspect: validates any kvq artifact and prints what it holds, per layer.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "inspect.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/h5.h"
#include "kvq/calib/summary.h"
#include "kvq/common/error.h"
#include "kvq/common/progress.h"
#include "kvq/methods/bits.h"
#include "kvq/methods/quant_file.h"

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
    if (std::abs(fractions[i] - f) < 1e-12 && i * stride + offset < values.size())
      return values[i * stride + offset];
  }
  return std::nan("");
}

nlohmann::json channel_json(const calib::ChannelSummary& s) {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& [c, v] : s.top) top.push_back({{"channel", c}, {"max_abs", v}});
  return {{"max_abs", s.max_abs},
          {"median_channel_max", s.median_channel_max},
          {"top_channels", top},
          {"fisher_mean", s.fisher_mean}};
}

// What kvq inspect reads from a file: one of the two artifacts, or the problems found.
struct Inspected {
  std::string schema;
  bool is_calib = false;  // else a quant.h5 (any other schema is refused)
  artifact::Problems problems;
  artifact::CalibData calib;  // schema kvq.calib/...
  methods::Quantizer quant;   // schema kvq.quant/...
};

void run_inspect(const InspectFlags& f) {
  const Inspected r = artifact::read_isolated(f.file, [&] {
    Inspected in;
    const artifact::File file = artifact::File::open(f.file);
    const artifact::Group root = file.root();
    in.schema = root.has_attr("schema") ? root.string_attr("schema") : "";
    in.is_calib = in.schema.rfind(std::string(artifact::kCalibSchema) + "/", 0) == 0;
    if (in.is_calib) {
      in.calib = artifact::check_calib(file, in.problems);
    } else if (in.schema.rfind(std::string(methods::kQuantSchema) + "/", 0) == 0) {
      in.quant = methods::check_quant(file, in.problems);
    } else {
      fail("{}: schema \"{}\" is not a kvq artifact kvq inspect knows (kvq.calib/2, kvq.quant/2)",
           f.file, in.schema);
    }
    return in;
  });
  const artifact::Problems& problems = r.problems;
  if (problems.empty()) {
    if (r.is_calib)
      print_calib(r.calib, f.json, nullptr);
    else
      print_quant(r.quant, f.json, /*context=*/0, /*seconds=*/-1);
    return;
  }
  if (f.json) {
    fmt::print("{}\n", nlohmann::json{{"file", f.file},
                                      {"schema", r.schema},
                                      {"valid", false},
                                      {"problems", problems.list()},
                                      {"n_problems", problems.size()}}
                           .dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    for (const std::string& p : problems.list()) fmt::print("problem: {}\n", p);
    if (problems.n_omitted() > 0) fmt::print("problem: ... and {} more\n", problems.n_omitted());
  }
  fail("{}: {} problem(s) found; first: {}", f.file, problems.size(), problems.list().front());
}

}  // namespace

void print_calib(const artifact::CalibData& d, bool json, const RunFigures* run) {
  const double f1 = 0.01;
  if (json) {
    nlohmann::json layers = nlohmann::json::array();
    for (size_t i = 0; i < d.layers.size(); ++i) {
      const artifact::CalibLayer& l = d.layers[i];
      layers.push_back({{"layer", i},
                        {"key", channel_json(calib::summarize_channels(l.key))},
                        {"key_post_rope", channel_json(calib::summarize_channels(l.key_post))},
                        {"value", channel_json(calib::summarize_channels(l.value))},
                        {"value_outlier_fraction", l.value_token.outlier_fraction.values},
                        {"value_token_range_mean",
                         at_fraction(d.fractions, l.value_token.vector_range.values, 0.0, 3, 1)},
                        {"value_head_range_mean",
                         at_fraction(d.fractions, l.value_head.vector_range.values, 0.0, 3, 1)},
                        {"samples", l.sample_positions.values.size()}});
    }
    nlohmann::json j = {
        {"file", d.path},
        {"schema", fmt::format("{}/{}", artifact::kCalibSchema, artifact::kCalibVersion)},
        {"valid", true},
        {"model",
         {{"source", d.model.source},
          {"n_layers", d.model.n_layers},
          {"n_kv_heads", d.model.n_kv_heads},
          {"head_dim", d.model.head_dim},
          {"weights_checksum", d.model.weights_checksum}}},
        {"data",
         {{"source", d.data.source},
          {"sha256", d.data.sha256},
          {"n_tokens", d.data.n_tokens},
          {"n_sequences", d.data.n_sequences},
          {"seq_len", d.data.seq_len},
          {"seed", d.data.seed}}},
        {"fractions", d.fractions},
        {"key_bins", d.key_bins},
        {"value_bins", d.value_bins},
        {"layers", layers}};
    if (run) {
      j["run"] = {{"seconds", run->seconds},
                  {"tokens_per_s", run->tokens_per_s},
                  {"peak_rss_bytes", run->peak_rss_bytes},
                  {"peak_device_bytes", run->peak_device_bytes},
                  {"mean_loss", run->mean_loss}};
    }
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  fmt::print(
      "{}: {}/{}, model {} ({} layers, {} KV heads x {}, weights {}), data {} ({} x {} tokens, "
      "seed {})\n\n",
      d.path, artifact::kCalibSchema, artifact::kCalibVersion, d.model.source, d.model.n_layers,
      d.model.n_kv_heads, d.model.head_dim, d.model.weights_checksum, d.data.source,
      d.data.n_sequences, d.data.seq_len, d.data.seed);
  fmt::print(
      "| layer | K max abs | K median channel max | K top channels | K post-RoPE max | V max abs | "
      "V median channel max | V outliers at 1% | V mean token range | Fisher K | Fisher V |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < d.layers.size(); ++i) {
    const artifact::CalibLayer& l = d.layers[i];
    const auto k = calib::summarize_channels(l.key), kp = calib::summarize_channels(l.key_post);
    const auto v = calib::summarize_channels(l.value);
    fmt::print(
        "| {} | {:.3f} | {:.3f} | {} | {:.3f} | {:.3f} | {:.3f} | {:.2f}% | {:.3f} | {:.3g} | "
        "{:.3g} |\n",
        i, k.max_abs, k.median_channel_max, top_channels(k), kp.max_abs, v.max_abs,
        v.median_channel_max,
        100 * at_fraction(d.fractions, l.value_token.outlier_fraction.values, f1),
        at_fraction(d.fractions, l.value_token.vector_range.values, 0.0, 3, 1), k.fisher_mean,
        v.fisher_mean);
  }
  if (run) {
    fmt::print("\ncalibration: {:.1f} s, {} tok/s, mean loss {:.4f}, peak memory {}B (process)",
               run->seconds, human_count(run->tokens_per_s), run->mean_loss,
               human_count(static_cast<double>(run->peak_rss_bytes)));
    if (run->peak_device_bytes >= 0)
      fmt::print(", {}B (GPU)", human_count(static_cast<double>(run->peak_device_bytes)));
    fmt::print("\n");
  }
}

namespace {

std::string levels_string(const std::vector<float>& v) {
  std::vector<std::string> parts;
  for (float x : v) parts.push_back(fmt::format("{:.3f}", x));
  return fmt::format("[{}]", fmt::join(parts, " "));
}

// Median of hi - lo over channels (nuq keys), 0 without ranges.
double median_range(const methods::TensorParams& p) {
  std::vector<double> r;
  for (size_t c = 0; c < p.lo.size(); ++c) r.push_back(static_cast<double>(p.hi[c]) - p.lo[c]);
  if (r.empty()) return 0.0;
  std::nth_element(r.begin(), r.begin() + r.size() / 2, r.end());
  return r[r.size() / 2];
}

nlohmann::json tensor_json(const methods::MethodSpec& s, const methods::TensorParams& p, bool key) {
  nlohmann::json j = {{"bits", p.bits}, {"granularity", methods::granularity(s, key)}};
  if (key) j["pre_rope"] = !s.post_rope;
  switch (s.kind) {
    case methods::MethodKind::kNuq:
      j["outlier_fraction"] = p.outlier_fraction;
      j["levels_encode"] = p.levels_encode;
      j["levels_decode"] = p.levels_decode;
      if (key) {
        j["lo_min"] = *std::min_element(p.lo.begin(), p.lo.end());
        j["hi_max"] = *std::max_element(p.hi.begin(), p.hi.end());
        j["median_range"] = median_range(p);
      }
      if (p.fisher_error >= 0) j["fisher_error"] = p.fisher_error;
      break;
    case methods::MethodKind::kSkvq:
      j["perm"] = p.perm;
      j["clip"] = p.clip;
      break;
    case methods::MethodKind::kFp8:
      j["amax"] = p.amax > 0 ? nlohmann::json(p.amax) : nlohmann::json("dynamic");
      break;
    default: break;
  }
  return j;
}

}  // namespace

void print_quant(const methods::Quantizer& q, bool json, int64_t context, double seconds) {
  const methods::MethodSpec& s = q.spec();
  const methods::Provenance& prov = q.provenance;
  if (context == 0)
    context = prov.has_model && prov.model.max_seq_len > 0 ? prov.model.max_seq_len : 4096;
  const bool shaped = q.n_kv_heads() > 0 && q.n_layers() > 0;
  methods::BitsBreakdown bits;
  if (shaped)
    bits = methods::cache_bits(q, q.n_layers(), q.n_kv_heads(), q.head_dim(), context, {}, {});
  const char* windows[] = {"none", "sliding", "residual"};
  if (json) {
    nlohmann::json layers = nlohmann::json::array();
    for (int64_t i = 0; i < q.n_layers(); ++i) {
      layers.push_back({{"layer", i},
                        {"key", tensor_json(s, q.layers()[i].key, true)},
                        {"value", tensor_json(s, q.layers()[i].value, false)}});
    }
    nlohmann::json j = {
        {"file", prov.path},
        {"schema", fmt::format("{}/{}", methods::kQuantSchema, methods::kQuantVersion)},
        {"valid", true},
        {"method", s.name()},
        {"label", q.label()},
        {"bits_budget", prov.bits_budget},
        {"n_layers", q.n_layers()},
        {"n_kv_heads", q.n_kv_heads()},
        {"head_dim", q.head_dim()},
        {"cache",
         {{"n_sink", s.n_sink},
          {"window_kind", windows[static_cast<int>(s.window_kind())]},
          {"window", s.window},
          {"key_time_group", s.key_time_group()},
          {"pre_rope", !s.post_rope}}},
        {"model", nullptr},
        {"data", nullptr},
        {"layers", layers}};
    if (prov.has_model) {
      j["model"] = {{"source", prov.model.source},
                    {"n_layers", prov.model.n_layers},
                    {"n_kv_heads", prov.model.n_kv_heads},
                    {"head_dim", prov.model.head_dim},
                    {"weights_checksum", prov.model.weights_checksum}};
    }
    if (prov.has_data) {
      j["data"] = {{"source", prov.data.source},
                   {"sha256", prov.data.sha256},
                   {"n_sequences", prov.data.n_sequences},
                   {"seq_len", prov.data.seq_len},
                   {"seed", prov.data.seed}};
    }
    if (shaped) {
      j["bits_per_element"] = {{"context", context},        {"total", bits.total()},
                               {"codes", bits.codes},       {"params", bits.params},
                               {"outliers", bits.outliers}, {"fp16", bits.fp16}};
    }
    if (seconds >= 0) j["fit_seconds"] = seconds;
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  fmt::print("{}: {}/{}, method {}", prov.path, methods::kQuantSchema, methods::kQuantVersion,
             q.label());
  if (prov.has_model) {
    fmt::print(", model {} ({} layers, {} KV heads x {}, weights {})", prov.model.source,
               prov.model.n_layers, prov.model.n_kv_heads, prov.model.head_dim,
               prov.model.weights_checksum);
  }
  if (prov.has_data)
    fmt::print(", calibrated on {} ({} x {} tokens, seed {})", prov.data.source,
               prov.data.n_sequences, prov.data.seq_len, prov.data.seed);
  fmt::print("\ncache: keys {}-RoPE, {} sink token(s) in fp16, window {} ({} tokens)",
             s.post_rope ? "post" : "pre", s.n_sink, windows[static_cast<int>(s.window_kind())],
             s.window);
  if (s.key_time_group() > 0)
    fmt::print(", key groups of {} tokens from t = 0", s.key_time_group());
  fmt::print("\n");
  if (shaped) {
    fmt::print(
        "bits per element at {} tokens: {:.3f} (codes {:.3f}, scales {:.3f}, outliers {:.3f} "
        "nominal, fp16 tokens {:.3f})\n",
        context, bits.total(), bits.codes, bits.params, bits.outliers, bits.fp16);
  }
  if (q.n_layers() == 0)
    fmt::print("the same quantization for every layer (no per-layer tables)\n");
  if (q.n_layers() > 0) fmt::print("\n");
  const auto& L = q.layers();
  for (int64_t i = 0; i < q.n_layers(); ++i) {
    const methods::TensorParams &k = L[i].key, &v = L[i].value;
    switch (s.kind) {
      case methods::MethodKind::kNuq:
        if (i == 0) {
          fmt::print(
              "| layer | K bits | V bits | outliers | K levels (decode) | V levels (decode) | K "
              "median range | Fisher err K | Fisher err V |\n");
          fmt::print("|---|---|---|---|---|---|---|---|---|\n");
        }
        fmt::print("| {} | {} | {} | {:g}% | {} | {} | {:.3f} | {:.3g} | {:.3g} |\n", i, k.bits,
                   v.bits, 100 * k.outlier_fraction, levels_string(k.levels_decode),
                   levels_string(v.levels_decode), median_range(k), k.fisher_error, v.fisher_error);
        break;
      case methods::MethodKind::kSkvq:
        if (i == 0)
          fmt::print(
              "| layer | K bits | V bits | K clip | V clip | K channel order (first 8) "
              "|\n|---|---|---|---|---|---|\n");
        fmt::print(
            "| {} | {} | {} | {:.2f} | {:.2f} | {} |\n", i, k.bits, v.bits, k.clip, v.clip,
            fmt::join(k.perm.begin(), k.perm.begin() + std::min<size_t>(8, k.perm.size()), " "));
        break;
      case methods::MethodKind::kFp8:
        if (i == 0) fmt::print("| layer | K amax | V amax |\n|---|---|---|\n");
        fmt::print("| {} | {} | {} |\n", i, k.amax > 0 ? fmt::format("{:.4g}", k.amax) : "dynamic",
                   v.amax > 0 ? fmt::format("{:.4g}", v.amax) : "dynamic");
        break;
      default:
        if (i == 0)
          fmt::print(
              "| layer | K bits | V bits | K granularity | V granularity "
              "|\n|---|---|---|---|---|\n");
        fmt::print("| {} | {} | {} | {} | {} |\n", i, k.bits, v.bits, methods::granularity(s, true),
                   methods::granularity(s, false));
        break;
    }
  }
  if (seconds >= 0) fmt::print("\nfit: {:.2f} s\n", seconds);
}

void register_inspect(CLI::App& app) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Validate a kvq artifact (calib.h5, quant.h5) and print what it holds");
  cmd->add_option("file", flags->file, "The artifact")->required();
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->callback([flags] { run_inspect(*flags); });
}

}  // namespace kvq::app
