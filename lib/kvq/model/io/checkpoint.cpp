// Opening checkpoints: a Hugging Face directory (one safetensors file or index + shards) or a
// llama2.c version-0 .bin, both exposed as views under Hugging Face tensor names. Not here:
// dtype conversion and the llama2.c q/k row permutation (the LibTorch loader does both).
#include "kvq/model/io/checkpoint.h"

#include <sys/stat.h>

#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "kvq/common/error.h"
#include "kvq/common/limits.h"
#include "kvq/model/io/json_file.h"

namespace kvq::model {

namespace {

bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

const char* float_name(DType d) {
  return d == DType::F32 ? "float32" : d == DType::F16 ? "float16" : "bfloat16";
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// `where` names the file holding the tensor, so the message points at what to fix.
const TensorView& check_tensor(const std::map<std::string, TensorView>& tensors,
                               const std::string& where, const std::string& name,
                               const std::vector<int64_t>& shape) {
  const auto it = tensors.find(name);
  if (it == tensors.end()) fail("{}: tensor '{}' not found", where, name);
  const TensorView& t = it->second;
  if (!is_float(t.dtype))
    fail("{}: tensor '{}' must have dtype F32, F16 or BF16, found {}", where, name,
         dtype_name(t.dtype));
  if (t.shape != shape)
    fail("{}: tensor '{}' must have shape [{}], found [{}]", where, name, fmt::join(shape, ", "),
         fmt::join(t.shape, ", "));
  return t;
}

// Every tensor the config implies, with its shape (see checkpoint.h).
std::vector<std::pair<std::string, std::vector<int64_t>>> required_tensors(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> r;
  r.push_back({"model.embed_tokens.weight", {c.vocab_size, c.dim}});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    r.push_back({p + "input_layernorm.weight", {c.dim}});
    r.push_back({p + "self_attn.q_proj.weight", {c.q_dim(), c.dim}});
    r.push_back({p + "self_attn.k_proj.weight", {c.kv_dim(), c.dim}});
    r.push_back({p + "self_attn.v_proj.weight", {c.kv_dim(), c.dim}});
    r.push_back({p + "self_attn.o_proj.weight", {c.dim, c.q_dim()}});
    r.push_back({p + "post_attention_layernorm.weight", {c.dim}});
    r.push_back({p + "mlp.gate_proj.weight", {c.ffn_dim, c.dim}});
    r.push_back({p + "mlp.up_proj.weight", {c.ffn_dim, c.dim}});
    r.push_back({p + "mlp.down_proj.weight", {c.dim, c.ffn_dim}});
  }
  r.push_back({"model.norm.weight", {c.dim}});
  if (!c.tie_embeddings) r.push_back({"lm_head.weight", {c.vocab_size, c.dim}});
  return r;
}

// Checks the required tensors (naming the file each should be in) and sets weights_dtype to the
// dtype holding the most elements: checkpoints may keep norms in float32 beside bf16 matrices.
// `config_where` names what set the layer count (config.json, or the llama2.c header). A count
// the checkpoint cannot hold fails before the list of names is built, and tensors the config
// does not use are an error: ignoring them would run a truncated model.
void check_required(Checkpoint& ckpt, const std::string& config_where,
                    const std::function<std::string(const std::string&)>& where) {
  const ModelConfig& c = ckpt.config;
  // Each layer needs nine tensors; a count above the tensors present cannot be satisfied, and
  // stopping here keeps the list of names below as small as the checkpoint.
  if (static_cast<uint64_t>(c.n_layers) > ckpt.tensors.size())
    fail("{}: {} layers exceed the {} tensors of the checkpoint {}", config_where, c.n_layers,
         ckpt.tensors.size(), ckpt.path);
  std::map<DType, int64_t> numel_by_dtype;
  std::set<std::string> required;
  for (const auto& [name, shape] : required_tensors(c)) {
    const TensorView& t = check_tensor(ckpt.tensors, where(name), name, shape);
    numel_by_dtype[t.dtype] += t.numel();
    required.insert(name);
  }
  std::string first_unused;
  std::vector<std::string> unused;
  for (const auto& [name, view] : ckpt.tensors) {
    if (required.count(name)) continue;
    if (unused.empty()) first_unused = name;
    unused.push_back("'" + name + "'");
  }
  if (!unused.empty())
    fail("{}: expected only the tensors of {} layers ({}), found {} unused: {}",
         where(first_unused), c.n_layers, config_where, unused.size(),
         capped_list(unused, kMaxListedProblems));
  DType most = DType::F32;
  int64_t most_numel = -1;
  for (const auto& [dtype, numel] : numel_by_dtype)
    if (numel > most_numel) most = dtype, most_numel = numel;
  ckpt.config.weights_dtype = float_name(most);
}

// Header of a llama2.c version-0 checkpoint: seven int32, in file order.
struct Llama2cHeader {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

std::string describe(const Llama2cHeader& h) {
  return fmt::format(
      "dim={}, hidden_dim={}, n_layers={}, n_heads={}, n_kv_heads={}, vocab={}, "
      "seq_len={}",
      h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size, h.seq_len);
}

// 128-bit so that no header of int32 fields can overflow the byte count (< 2^100).
std::string to_string_u128(unsigned __int128 v) {
  std::string s;
  do {
    s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(v % 10)));
    v /= 10;
  } while (v != 0);
  return s;
}

}  // namespace

const TensorView& Checkpoint::require(const std::string& name,
                                      const std::vector<int64_t>& shape) const {
  return check_tensor(tensors, path, name, shape);
}

Checkpoint open_checkpoint(const std::string& path) {
  if (!exists(path))
    fail("{}: expected a model directory or a llama2.c .bin file, found nothing", path);
  if (is_dir(path)) return open_hf_checkpoint(path);
  if (ends_with(path, ".bin")) return open_llama2c_checkpoint(path);
  fail(
      "{}: expected a model directory (config.json + safetensors) or a llama2.c .bin file, "
      "found another file",
      path);
}

Checkpoint open_hf_checkpoint(const std::string& dir) {
  if (!is_dir(dir))
    fail("{}: expected a model directory, found {}", dir, exists(dir) ? "a file" : "nothing");
  Checkpoint ckpt;
  ckpt.path = dir;
  ckpt.format = "hf-safetensors";
  const std::string config_path = dir + "/config.json";
  if (!exists(config_path))
    fail("{}: expected config.json in the model directory, found none", dir);
  ckpt.config = parse_hf_config(config_path);

  const std::string single_path = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  std::map<std::string, std::string> source;  // tensor name -> file that should hold it
  std::string fallback = index_path;          // where a tensor missing from `source` belongs
  if (exists(single_path)) {
    auto file = std::make_shared<SafetensorsFile>(single_path);
    ckpt.tensors = file->tensors();
    ckpt.storage.push_back(file);
    fallback = single_path;
  } else if (exists(index_path)) {
    const nlohmann::json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: expected an object with a 'weight_map' object, found none", index_path);
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;  // each opened once
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string())
        fail("{}: weight_map entry '{}' must be a file name, found {}", index_path, name,
             shard.type_name());
      const std::string shard_name = shard.get<std::string>();
      // A shard is a plain file name beside the index; anything else could point outside `dir`.
      if (shard_name.empty() || shard_name.find('/') != std::string::npos || shard_name == ".." ||
          shard_name == ".")
        fail("{}: weight_map entry '{}' must be a file name in the same directory, found '{}'",
             index_path, name, shard_name);
      const std::string shard_path = dir + "/" + shard_name;
      auto& file = shards[shard_path];
      if (!file) {
        if (!exists(shard_path))
          fail("{}: shard '{}' listed in {} not found", shard_path, shard_name, index_path);
        file = std::make_shared<SafetensorsFile>(shard_path);
        ckpt.storage.push_back(file);
      }
      if (!file->contains(name))
        fail("{}: tensor '{}' listed in {} not found in this shard", shard_path, name, index_path);
      ckpt.tensors.emplace(name, file->get(name));
      source[name] = shard_path;
    }
  } else {
    fail("{}: expected model.safetensors or model.safetensors.index.json, found neither", dir);
  }
  check_required(ckpt, config_path, [&](const std::string& name) {
    const auto it = source.find(name);
    if (it != source.end()) return it->second;
    return fallback;  // sharded: the index lacks it
  });
  return ckpt;
}

Checkpoint open_llama2c_checkpoint(const std::string& bin_path) {
  auto file = std::make_shared<MappedFile>(bin_path);
  Llama2cHeader h{};
  if (file->size() < sizeof(h))
    fail("{}: expected a {}-byte llama2.c header, file has {} bytes", bin_path, sizeof(h),
         file->size());
  std::memcpy(&h, file->data(), sizeof(h));  // llama2.c writes native (little-endian) int32
  const std::pair<const char*, int32_t> fields[] = {
      {"dim", h.dim},         {"hidden_dim", h.hidden_dim}, {"n_layers", h.n_layers},
      {"n_heads", h.n_heads}, {"n_kv_heads", h.n_kv_heads}, {"vocab_size", h.vocab_size},
      {"seq_len", h.seq_len}};
  for (const auto& [name, value] : fields)
    if (value <= 0 && !(value < 0 && std::strcmp(name, "vocab_size") == 0))
      fail("{}: header field {} must be positive, found {} (header {})", bin_path, name, value,
           describe(h));
  if (h.dim % h.n_heads != 0 || h.n_heads % h.n_kv_heads != 0 || (h.dim / h.n_heads) % 2 != 0)
    fail(
        "{}: header must have dim a multiple of n_heads, n_heads a multiple of n_kv_heads and "
        "an even head size, found {}",
        bin_path, describe(h));

  // A negative vocab_size marks an unshared classifier (wcls after the freq_cis tables).
  const bool shared = h.vocab_size > 0;
  const int64_t dim = h.dim, hidden = h.hidden_dim, n_layers = h.n_layers;
  const int64_t vocab = shared ? h.vocab_size : -static_cast<int64_t>(h.vocab_size);
  const int64_t head_dim = dim / h.n_heads, kv_dim = h.n_kv_heads * head_dim;

  using U128 = unsigned __int128;
  const U128 n_floats = U128(vocab) * dim + U128(n_layers) * dim * (2 + 2 * dim + 2 * kv_dim) +
                        U128(n_layers) * hidden * dim * 3 + dim + U128(h.seq_len) * head_dim +
                        (shared ? 0 : U128(vocab) * dim);
  const U128 expected = sizeof(h) + n_floats * 4;
  if (expected != file->size())
    fail("{}: header ({}) implies {} bytes, file has {}", bin_path, describe(h),
         to_string_u128(expected), file->size());

  Checkpoint ckpt;
  ckpt.path = bin_path;
  ckpt.format = "llama2c";
  ckpt.rope_interleaved = true;
  ModelConfig& c = ckpt.config;
  c.architecture = "llama";
  c.dim = dim;
  c.n_layers = n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.head_dim = head_dim;
  c.ffn_dim = hidden;
  c.vocab_size = vocab;
  c.max_seq_len = h.seq_len;
  c.rope_theta = 10000.0;
  c.norm_eps = 1e-5;  // llama2.c's rmsnorm
  c.tie_embeddings = shared;
  c.bos_id = 1;
  c.eos_id = 2;
  c.weights_dtype = "float32";
  c.validate(bin_path);

  // Walks the float32 tensors in llama2.c's order; each block holds all layers back to back.
  const uint8_t* cursor = file->data() + sizeof(h);
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    TensorView v;
    v.name = name;
    v.dtype = DType::F32;
    v.shape = std::move(shape);
    v.n_bytes = static_cast<size_t>(v.numel()) * 4;
    v.data = cursor;
    cursor += v.n_bytes;
    ckpt.tensors.emplace(name, std::move(v));
  };
  auto per_layer = [&](const char* suffix, const std::vector<int64_t>& shape) {
    for (int64_t l = 0; l < n_layers; ++l) add(fmt::format("model.layers.{}.{}", l, suffix), shape);
  };
  add("model.embed_tokens.weight", {vocab, dim});
  per_layer("input_layernorm.weight", {dim});
  per_layer("self_attn.q_proj.weight", {dim, dim});  // rows interleaved per head (see header)
  per_layer("self_attn.k_proj.weight", {kv_dim, dim});
  per_layer("self_attn.v_proj.weight", {kv_dim, dim});
  per_layer("self_attn.o_proj.weight", {dim, dim});
  per_layer("post_attention_layernorm.weight", {dim});
  per_layer("mlp.gate_proj.weight", {hidden, dim});  // w1
  per_layer("mlp.down_proj.weight", {dim, hidden});  // w2
  per_layer("mlp.up_proj.weight", {hidden, dim});    // w3
  add("model.norm.weight", {dim});
  cursor += static_cast<size_t>(h.seq_len) * head_dim * 4;  // legacy freq_cis_real/imag, unused
  if (!shared) add("lm_head.weight", {vocab, dim});
  KVQ_CHECK(cursor == file->data() + file->size(), "llama2.c walk ended {} bytes from the end",
            file->data() + file->size() - cursor);

  ckpt.storage.push_back(file);
  check_required(ckpt, bin_path, [&](const std::string&) { return bin_path; });
  return ckpt;
}

}  // namespace kvq::model
