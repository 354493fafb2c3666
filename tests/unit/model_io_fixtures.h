// Test helpers for the model-file parsers: build safetensors files, HF model directories and
// llama2.c checkpoints byte by byte, and capture a kvq::Error's message. Header-only so each
// test executable stays one source file.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvq/common/error.h"
#include "kvq/model/io/config.h"
#include "support/test_support.h"

namespace kvq::test {

// 8-byte little-endian header length, the header text, then the data section.
inline std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

struct TensorSpec {
  std::string name;
  std::string dtype;  // safetensors spelling
  std::vector<int64_t> shape;
  size_t elem_size = 4;
};

// A valid file holding `tensors` back to back, every byte of tensor i equal to i + 1.
inline std::string make_safetensors(const std::vector<TensorSpec>& tensors,
                                    const nlohmann::json& metadata = nullptr) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::string data;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorSpec& t = tensors[i];
    size_t n = t.elem_size;
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + n}}};
    data.append(n, static_cast<char>(i + 1));
  }
  return safetensors_bytes(header.dump(), data);
}

// config.json of a tiny llama: dim 8, 2 layers, 2 q heads / 1 kv head, head_dim 4, ffn 16.
inline nlohmann::json tiny_config() {
  return {{"model_type", "llama"},
          {"hidden_size", 8},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 2},
          {"num_key_value_heads", 1},
          {"intermediate_size", 16},
          {"vocab_size", 10},
          {"max_position_embeddings", 4},
          {"hidden_act", "silu"},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", false},
          {"torch_dtype", "float32"}};
}

// Every tensor tiny_config() needs, as F32 specs (lm_head last).
inline std::vector<TensorSpec> tiny_tensors() {
  std::vector<TensorSpec> t = {{"model.embed_tokens.weight", "F32", {10, 8}}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", "F32", {8}});
    t.push_back({p + "self_attn.q_proj.weight", "F32", {8, 8}});
    t.push_back({p + "self_attn.k_proj.weight", "F32", {4, 8}});
    t.push_back({p + "self_attn.v_proj.weight", "F32", {4, 8}});
    t.push_back({p + "self_attn.o_proj.weight", "F32", {8, 8}});
    t.push_back({p + "post_attention_layernorm.weight", "F32", {8}});
    t.push_back({p + "mlp.gate_proj.weight", "F32", {16, 8}});
    t.push_back({p + "mlp.up_proj.weight", "F32", {16, 8}});
    t.push_back({p + "mlp.down_proj.weight", "F32", {8, 16}});
  }
  t.push_back({"model.norm.weight", "F32", {8}});
  t.push_back({"lm_head.weight", "F32", {10, 8}});
  return t;
}

// A llama2.c version-0 checkpoint: header, then float i = i (so each tensor's first float is its
// offset in floats), `extra_bytes` appended or, if negative, removed from the end.
inline std::string make_llama2c(std::vector<int32_t> header, int64_t n_floats,
                                int64_t extra_bytes = 0) {
  std::string out(header.size() * 4, '\0');
  std::memcpy(out.data(), header.data(), out.size());
  for (int64_t i = 0; i < n_floats; ++i) {
    const float f = static_cast<float>(i);
    out.append(reinterpret_cast<const char*>(&f), 4);
  }
  if (extra_bytes >= 0) return out + std::string(static_cast<size_t>(extra_bytes), '\x7f');
  return out.substr(0, out.size() - static_cast<size_t>(-extra_bytes));
}

// Floats a llama2.c file of this header holds after the header (llama2.c's order).
inline int64_t llama2c_floats(int64_t dim, int64_t hidden, int64_t n_layers, int64_t n_heads,
                              int64_t n_kv_heads, int64_t vocab, int64_t seq_len) {
  const int64_t hd = dim / n_heads, kv_dim = n_kv_heads * hd, v = vocab < 0 ? -vocab : vocab;
  return v * dim + n_layers * (2 * dim + 2 * dim * dim + 2 * dim * kv_dim + 3 * hidden * dim) +
         dim + seq_len * hd + (vocab < 0 ? v * dim : 0);
}

}  // namespace kvq::test
