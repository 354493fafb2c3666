#include "kvq/artifact/fingerprint.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include <fmt/format.h>

#include "kvq/common/error.h"

namespace kvq::artifact {
namespace {

std::string rope_scaling_string(const model::RopeScaling& s) {
  if (s.kind == model::RopeScaling::Kind::None) return "none";
  return fmt::format("llama3(factor={},low={},high={},original={})", s.factor, s.low_freq_factor,
                     s.high_freq_factor, s.original_max_position_embeddings);
}

// Reads one attribute into `out`, reporting a missing or mistyped one instead of throwing.
template <typename T>
void read_into(const Group& root, const std::string& name, T& out, Problems& problems,
               T (Group::*reader)(const std::string&) const) {
  try {
    out = (root.*reader)(name);
  } catch (const Error& e) {
    problems.add("", e.what());
  }
}

}  // namespace

int64_t require_schema(const Group& root, const std::string& kind, int64_t min_version,
                       int64_t max_version) {
  if (!root.has_attr("schema")) {
    fail("{}: no schema attribute: not a kvq artifact (expected {}/{})", root.where(), kind,
         max_version);
  }
  const std::string schema = root.string_attr("schema");
  const size_t slash = schema.rfind('/');
  int64_t version = 0;
  try {
    size_t used = 0;
    if (slash != std::string::npos) version = std::stoll(schema.substr(slash + 1), &used);
    if (slash == std::string::npos || used != schema.size() - slash - 1) version = 0;
  } catch (const std::exception&) {
    version = 0;
  }
  if (version <= 0)
    fail("{}@schema: expected \"{}/<version>\", found \"{}\"", root.where(), kind, schema);
  const std::string found_kind = schema.substr(0, slash);
  if (found_kind != kind) {
    fail("{}: expected a {} artifact, found {} (schema \"{}\")", root.where(), kind, found_kind,
         schema);
  }
  if (version > max_version) {
    fail("{}: schema {} is newer than this kvq reads ({}/{}); upgrade kvq", root.where(), schema,
         kind, max_version);
  }
  if (version < min_version) {
    fail("{}: schema {} is older than this kvq reads ({}/{}); make it again with this kvq",
         root.where(), schema, kind, min_version);
  }
  return version;
}

ModelFingerprint model_fingerprint(const model::ModelConfig& c, const std::string& checksum,
                                   const std::string& source) {
  ModelFingerprint m;
  m.source = source;
  m.architecture = c.architecture;
  m.n_layers = c.n_layers;
  m.dim = c.dim;
  m.n_heads = c.n_heads;
  m.n_kv_heads = c.n_kv_heads;
  m.head_dim = c.head_dim;
  m.vocab_size = c.vocab_size;
  m.max_seq_len = c.max_seq_len;
  m.rope_theta = c.rope_theta;
  m.rope_scaling = rope_scaling_string(c.rope_scaling);
  m.weights_checksum = checksum;
  return m;
}

quant::RopeScaling parse_rope_scaling(const ModelFingerprint& m, const std::string& where) {
  quant::RopeScaling s;
  if (m.rope_scaling == "none") return s;
  long original = 0;
  if (std::sscanf(m.rope_scaling.c_str(), "llama3(factor=%lf,low=%lf,high=%lf,original=%ld)",
                  &s.factor, &s.low_freq_factor, &s.high_freq_factor, &original) != 4) {
    fail("{}@model.rope_scaling: expected none or llama3(...), found \"{}\"", where,
         m.rope_scaling);
  }
  s.kind = quant::RopeScaling::Kind::Llama3;
  s.original_max_position_embeddings = original;
  return s;
}

void write_fingerprints(const Group& root, const ModelFingerprint& m, const DataFingerprint& d) {
  root.set_string_attr("model.source", m.source);
  root.set_string_attr("model.architecture", m.architecture);
  root.set_int_attr("model.n_layers", m.n_layers);
  root.set_int_attr("model.dim", m.dim);
  root.set_int_attr("model.n_heads", m.n_heads);
  root.set_int_attr("model.n_kv_heads", m.n_kv_heads);
  root.set_int_attr("model.head_dim", m.head_dim);
  root.set_int_attr("model.vocab_size", m.vocab_size);
  root.set_int_attr("model.max_seq_len", m.max_seq_len);
  root.set_double_attr("model.rope_theta", m.rope_theta);
  root.set_string_attr("model.rope_scaling", m.rope_scaling);
  root.set_string_attr("model.weights_checksum", m.weights_checksum);
  root.set_string_attr("data.source", d.source);
  root.set_string_attr("data.sha256", d.sha256);
  root.set_int_attr("data.n_tokens", d.n_tokens);
  root.set_int_attr("data.n_sequences", d.n_sequences);
  root.set_int_attr("data.seq_len", d.seq_len);
  root.set_int_attr("data.seed", d.seed);
}

ModelFingerprint read_model_fingerprint(const Group& root, Problems& problems) {
  ModelFingerprint m;
  const auto str = &Group::string_attr;
  const auto num = &Group::int_attr;
  read_into(root, "model.source", m.source, problems, str);
  read_into(root, "model.architecture", m.architecture, problems, str);
  read_into(root, "model.n_layers", m.n_layers, problems, num);
  read_into(root, "model.dim", m.dim, problems, num);
  read_into(root, "model.n_heads", m.n_heads, problems, num);
  read_into(root, "model.n_kv_heads", m.n_kv_heads, problems, num);
  read_into(root, "model.head_dim", m.head_dim, problems, num);
  read_into(root, "model.vocab_size", m.vocab_size, problems, num);
  read_into(root, "model.max_seq_len", m.max_seq_len, problems, num);
  read_into(root, "model.rope_theta", m.rope_theta, problems, &Group::double_attr);
  read_into(root, "model.rope_scaling", m.rope_scaling, problems, str);
  read_into(root, "model.weights_checksum", m.weights_checksum, problems, str);
  // The sizes a config.json may state (model/io/config.h): products of them (channels, rows)
  // then fit in int64 wherever the readers form them.
  using model::kMaxContext, model::kMaxLayers, model::kMaxVocab, model::kMaxWidth;
  for (const auto& [name, v, max] :
       {std::tuple{"n_layers", m.n_layers, kMaxLayers}, std::tuple{"dim", m.dim, kMaxWidth},
        std::tuple{"n_heads", m.n_heads, kMaxWidth},
        std::tuple{"n_kv_heads", m.n_kv_heads, kMaxWidth},
        std::tuple{"head_dim", m.head_dim, kMaxWidth},
        std::tuple{"vocab_size", m.vocab_size, kMaxVocab},
        std::tuple{"max_seq_len", m.max_seq_len, kMaxContext}}) {
    if ((v <= 0 || v > max) && root.has_attr(std::string("model.") + name)) {
      problems.add(root.where() + "@model." + name,
                   fmt::format("expected a size in 1..{}, found {}", max, v));
    }
  }
  // The fitters rotate samples with it (skvq -post); 0 or NaN would fail there without a file.
  if (root.has_attr("model.rope_theta") && !(std::isfinite(m.rope_theta) && m.rope_theta > 0))
    problems.add(root.where() + "@model.rope_theta",
                 fmt::format("expected a finite value > 0, found {}", m.rope_theta));
  return m;
}

DataFingerprint read_data_fingerprint(const Group& root, Problems& problems) {
  DataFingerprint d;
  const auto str = &Group::string_attr;
  const auto num = &Group::int_attr;
  read_into(root, "data.source", d.source, problems, str);
  read_into(root, "data.sha256", d.sha256, problems, str);
  read_into(root, "data.n_tokens", d.n_tokens, problems, num);
  read_into(root, "data.n_sequences", d.n_sequences, problems, num);
  read_into(root, "data.seq_len", d.seq_len, problems, num);
  read_into(root, "data.seed", d.seed, problems, num);
  return d;
}

void require_same_model(const std::string& artifact_path, const ModelFingerprint& a,
                        const ModelFingerprint& m) {
  auto differ = [&](const std::string& what, const std::string& ours, const std::string& theirs) {
    fail(
        "{}: made for a different model than {}: {} {} in the artifact, {} in the model (run "
        "kvq calibrate with this model)",
        artifact_path, m.source, what, ours, theirs);
  };
  if (a.architecture != m.architecture) differ("architecture", a.architecture, m.architecture);
  const std::pair<const char*, std::pair<int64_t, int64_t>> sizes[] = {
      {"n_layers", {a.n_layers, m.n_layers}},
      {"dim", {a.dim, m.dim}},
      {"n_heads", {a.n_heads, m.n_heads}},
      {"n_kv_heads", {a.n_kv_heads, m.n_kv_heads}},
      {"head_dim", {a.head_dim, m.head_dim}},
      {"vocab_size", {a.vocab_size, m.vocab_size}},
      {"max_seq_len", {a.max_seq_len, m.max_seq_len}}};
  for (const auto& [name, v] : sizes) {
    if (v.first != v.second) differ(name, std::to_string(v.first), std::to_string(v.second));
  }
  if (a.rope_theta != m.rope_theta)
    differ("rope_theta", fmt::format("{}", a.rope_theta), fmt::format("{}", m.rope_theta));
  if (a.rope_scaling != m.rope_scaling) differ("rope_scaling", a.rope_scaling, m.rope_scaling);
  if (a.weights_checksum != m.weights_checksum)
    differ("weights checksum", a.weights_checksum, m.weights_checksum);
}

}  // namespace kvq::artifact
