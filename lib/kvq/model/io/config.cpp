// parse_hf_config and ModelConfig::validate. Defaults follow transformers' LlamaConfig and
// MistralConfig; every setting the runner would compute differently is rejected by name, since a
// silently different model gives plausible but wrong perplexities. Not here: llama2.c headers
// (checkpoint.cpp), weights.
#include "kvq/model/io/config.h"

#include <cmath>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "kvq/common/error.h"
#include "kvq/model/io/json_file.h"

namespace kvq::model {

namespace {

using nlohmann::json;

std::string show(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A present, non-null field; absent and null both mean "use the default" in HF configs.
const json* find(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return (it == obj.end() || it->is_null()) ? nullptr : &*it;
}

int64_t positive_int(const json& v, const std::string& path, const std::string& key,
                     int64_t max = std::numeric_limits<int64_t>::max()) {
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() ? v.get<uint64_t>() == 0 : v.get<int64_t>() <= 0))
    fail("{}: field '{}' must be a positive integer, found {}", path, key, show(v));
  // Compared unsigned: a value above 2^63 - 1 would wrap to a negative int64.
  if (v.get<uint64_t>() > static_cast<uint64_t>(max))
    fail("{}: field '{}' must be at most {}, found {}", path, key, max, show(v));
  return v.get<int64_t>();
}

int64_t required_int(const json& cfg, const std::string& path, const char* key, int64_t max) {
  const json* v = find(cfg, key);
  if (!v) fail("{}: missing field '{}'", path, key);
  return positive_int(*v, path, key, max);
}

double number(const json& v, const std::string& path, const std::string& key) {
  if (!v.is_number()) fail("{}: field '{}' must be a number, found {}", path, key, show(v));
  return v.get<double>();
}

bool boolean(const json& cfg, const std::string& path, const char* key, bool fallback) {
  const json* v = find(cfg, key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail("{}: field '{}' must be true or false, found {}", path, key, show(*v));
  return v->get<bool>();
}

// bos/eos: an id, or a list of ids (Llama 3 lists several EOS tokens; the first is the primary).
int32_t token_id(const json& cfg, const std::string& path, const char* key, int32_t fallback) {
  const json* v = find(cfg, key);
  if (!v) return fallback;
  const json& id = (v->is_array() && !v->empty()) ? v->front() : *v;
  if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
      id.get<int64_t>() > std::numeric_limits<int32_t>::max())
    fail("{}: field '{}' must be a token id or a list of them, found {}", path, key, show(*v));
  return static_cast<int32_t>(id.get<int64_t>());
}

// rope_scaling (transformers 4.x) or rope_parameters (5.x): type "default" or "llama3" only.
RopeScaling parse_rope_scaling(const json& scaling, const std::string& path,
                               const std::string& field) {
  RopeScaling rs;
  if (!scaling.is_object())
    fail("{}: field '{}' must be an object or null, found {}", path, field, show(scaling));
  const json* type = find(scaling, "rope_type");
  if (!type) type = find(scaling, "type");
  if (!type) fail("{}: {} has no 'rope_type' (or 'type')", path, field);
  if (!type->is_string() || (*type != "default" && *type != "llama3"))
    fail("{}: {} type {} is not supported, expected \"default\" or \"llama3\"", path, field,
         show(*type));
  if (const json* prf = find(scaling, "partial_rotary_factor"))
    if (number(*prf, path, field + ".partial_rotary_factor") != 1.0)
      fail("{}: {}.partial_rotary_factor must be 1 (full rotary), found {}", path, field,
           show(*prf));
  if (*type == "default") return rs;
  rs.kind = RopeScaling::Kind::Llama3;
  auto need = [&](const char* key) -> const json& {
    const json* v = find(scaling, key);
    if (!v) fail("{}: {} of type \"llama3\" is missing '{}'", path, field, key);
    return *v;
  };
  rs.factor = number(need("factor"), path, field + ".factor");
  rs.low_freq_factor = number(need("low_freq_factor"), path, field + ".low_freq_factor");
  rs.high_freq_factor = number(need("high_freq_factor"), path, field + ".high_freq_factor");
  rs.original_max_position_embeddings = positive_int(need("original_max_position_embeddings"), path,
                                                     field + ".original_max_position_embeddings");
  return rs;
}

}  // namespace

void ModelConfig::validate(const std::string& where) const {
  const std::pair<const char*, int64_t> sizes[] = {{"dim", dim},
                                                   {"n_layers", n_layers},
                                                   {"n_heads", n_heads},
                                                   {"n_kv_heads", n_kv_heads},
                                                   {"head_dim", head_dim},
                                                   {"ffn_dim", ffn_dim},
                                                   {"vocab_size", vocab_size},
                                                   {"max_seq_len", max_seq_len}};
  for (const auto& [name, value] : sizes)
    if (value <= 0) fail("{}: {} must be positive, found {}", where, name, value);
  const std::pair<const char*, std::pair<int64_t, int64_t>> maxima[] = {
      {"dim", {dim, kMaxWidth}},
      {"n_layers", {n_layers, kMaxLayers}},
      {"n_heads", {n_heads, kMaxWidth}},
      {"n_kv_heads", {n_kv_heads, kMaxWidth}},
      {"head_dim", {head_dim, kMaxWidth}},
      {"ffn_dim", {ffn_dim, kMaxWidth}},
      {"vocab_size", {vocab_size, kMaxVocab}},
      {"max_seq_len", {max_seq_len, kMaxContext}}};
  for (const auto& [name, v] : maxima)
    if (v.first > v.second)
      fail("{}: {} must be at most {}, found {}", where, name, v.second, v.first);
  if (n_heads % n_kv_heads != 0)
    fail("{}: n_heads ({}) must be a multiple of n_kv_heads ({})", where, n_heads, n_kv_heads);
  if (head_dim % 2 != 0)
    fail("{}: head_dim must be even (RoPE rotates pairs), found {}", where, head_dim);
  if (!(std::isfinite(rope_theta) && rope_theta > 0))
    fail("{}: rope_theta must be a positive number, found {}", where, rope_theta);
  if (!(std::isfinite(norm_eps) && norm_eps > 0))
    fail("{}: norm_eps must be a positive number, found {}", where, norm_eps);
  if (bos_id >= vocab_size || eos_id >= vocab_size)
    fail("{}: bos/eos ids ({}, {}) must be below vocab_size ({})", where, bos_id, eos_id,
         vocab_size);
  if (rope_scaling.kind == RopeScaling::Kind::Llama3) {
    const RopeScaling& rs = rope_scaling;
    // The llama3 formula divides by high_freq_factor - low_freq_factor (Llama 3.1 rope scaling).
    if (!(rs.factor > 0 && rs.low_freq_factor > 0 && rs.high_freq_factor > rs.low_freq_factor &&
          rs.original_max_position_embeddings > 0))
      fail(
          "{}: llama3 rope scaling needs factor > 0 and 0 < low_freq_factor < high_freq_factor, "
          "found factor {}, low_freq_factor {}, high_freq_factor {}",
          where, rs.factor, rs.low_freq_factor, rs.high_freq_factor);
  }
}

ModelConfig parse_hf_config(const std::string& path) {
  const json cfg = read_json_file(path);
  if (!cfg.is_object()) fail("{}: expected a JSON object, found {}", path, cfg.type_name());
  ModelConfig c;

  const json* model_type = find(cfg, "model_type");
  if (!model_type) fail("{}: missing field 'model_type'", path);
  if (!model_type->is_string() || (*model_type != "llama" && *model_type != "mistral"))
    fail("{}: model_type {} is not supported, expected \"llama\" or \"mistral\"", path,
         show(*model_type));
  c.architecture = model_type->get<std::string>();
  const bool mistral = c.architecture == "mistral";

  c.dim = required_int(cfg, path, "hidden_size", kMaxWidth);
  c.n_layers = required_int(cfg, path, "num_hidden_layers", kMaxLayers);
  c.n_heads = required_int(cfg, path, "num_attention_heads", kMaxWidth);
  c.ffn_dim = required_int(cfg, path, "intermediate_size", kMaxWidth);
  c.vocab_size = required_int(cfg, path, "vocab_size", kMaxVocab);
  c.max_seq_len = required_int(cfg, path, "max_position_embeddings", kMaxContext);

  // MistralConfig defaults num_key_value_heads to 8, LlamaConfig to num_attention_heads.
  const json* kv = find(cfg, "num_key_value_heads");
  c.n_kv_heads =
      kv ? positive_int(*kv, path, "num_key_value_heads", kMaxWidth) : (mistral ? 8 : c.n_heads);
  if (const json* hd = find(cfg, "head_dim")) {
    c.head_dim = positive_int(*hd, path, "head_dim", kMaxWidth);
  } else {
    if (c.dim % c.n_heads != 0)
      fail(
          "{}: hidden_size ({}) must be a multiple of num_attention_heads ({}) when head_dim "
          "is not given",
          path, c.dim, c.n_heads);
    c.head_dim = c.dim / c.n_heads;
  }

  if (const json* act = find(cfg, "hidden_act"))
    if (*act != "silu" && *act != "swish")  // transformers maps both to SiLU
      fail("{}: hidden_act {} is not supported, expected \"silu\"", path, show(*act));
  if (boolean(cfg, path, "attention_bias", false))
    fail("{}: attention_bias must be false (no q/k/v/o biases), found true", path);
  if (boolean(cfg, path, "mlp_bias", false))
    fail("{}: mlp_bias must be false (no MLP biases), found true", path);
  // MistralConfig's sliding_window defaults to 4096; only an explicit null means full attention.
  if (mistral && (!cfg.contains("sliding_window") || !cfg["sliding_window"].is_null()))
    fail("{}: sliding_window must be null (full attention), found {}", path,
         cfg.contains("sliding_window") ? show(cfg["sliding_window"]) : "none (default 4096)");
  if (find(cfg, "quantization_config"))
    fail("{}: expected unquantized weights, found a quantization_config", path);
  if (const json* prf = find(cfg, "partial_rotary_factor"))
    if (number(*prf, path, "partial_rotary_factor") != 1.0)
      fail("{}: partial_rotary_factor must be 1 (full rotary), found {}", path, show(*prf));

  c.rope_theta = 10000.0;
  const json* rope_params = find(cfg, "rope_parameters");
  if (rope_params && rope_params->is_object())
    if (const json* theta = find(*rope_params, "rope_theta"))
      c.rope_theta = number(*theta, path, "rope_parameters.rope_theta");
  if (const json* theta = find(cfg, "rope_theta"))
    c.rope_theta = number(*theta, path, "rope_theta");
  if (rope_params) c.rope_scaling = parse_rope_scaling(*rope_params, path, "rope_parameters");
  if (const json* scaling = find(cfg, "rope_scaling"))
    c.rope_scaling = parse_rope_scaling(*scaling, path, "rope_scaling");

  c.norm_eps = 1e-6;  // LlamaConfig and MistralConfig default
  if (const json* eps = find(cfg, "rms_norm_eps")) c.norm_eps = number(*eps, path, "rms_norm_eps");
  c.tie_embeddings = boolean(cfg, path, "tie_word_embeddings", false);
  c.bos_id = token_id(cfg, path, "bos_token_id", 1);
  c.eos_id = token_id(cfg, path, "eos_token_id", 2);

  // "dtype" (transformers 5) or "torch_dtype" (4.x); the checkpoint replaces it with what the
  // tensors actually hold.
  const char* dtype_key = find(cfg, "dtype") ? "dtype" : "torch_dtype";
  if (const json* dtype = find(cfg, dtype_key)) {
    if (*dtype != "float32" && *dtype != "float16" && *dtype != "bfloat16")
      fail("{}: field '{}' must be \"float32\", \"float16\" or \"bfloat16\", found {}", path,
           dtype_key, show(*dtype));
    c.weights_dtype = dtype->get<std::string>();
  }

  c.validate(path);
  return c;
}

}  // namespace kvq::model
