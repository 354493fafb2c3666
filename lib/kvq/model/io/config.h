// ModelConfig: the architecture of a LLaMA-family decoder, parsed from a Hugging Face
// config.json or a llama2.c checkpoint header. Anything the runner does not implement
// (another activation, biases, an unknown rope_scaling type, ...) is rejected here by name,
// so the runner never silently computes a different model.
#pragma once

#include <cstdint>
#include <string>

#include "kvq/quant/rope.h"

namespace kvq::model {

using RopeScaling = quant::RopeScaling;  // the frequencies' math needs it below the model

// Stated maxima, checked before anything is sized from a config: with them every product of
// sizes (n_heads * head_dim * dim, vocab * dim, a RoPE table) fits in 64 bits, and a config
// cannot ask for more than a real checkpoint of this family holds. The widths are also bounded
// by the tensors themselves (checkpoint.cpp); the context is not, so it has its own.
constexpr int64_t kMaxWidth = int64_t{1} << 20;   // dim, ffn_dim, n_heads, n_kv_heads, head_dim
constexpr int64_t kMaxLayers = int64_t{1} << 16;  // n_layers
constexpr int64_t kMaxVocab = (int64_t{1} << 31) - 1;  // vocab_size (token ids are int32)
constexpr int64_t kMaxContext = int64_t{1} << 24;      // max_seq_len: 16M tokens

struct ModelConfig {
  std::string architecture = "llama";  // model_type
  int64_t dim = 0;                     // hidden_size
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn_dim = 0;  // intermediate_size
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;  // max_position_embeddings
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  RopeScaling rope_scaling;
  bool tie_embeddings = false;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  std::string weights_dtype = "float32";  // as stored: float32, float16, bfloat16

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  // Throws kvq::Error "<where>: <field> ..." if sizes are non-positive, above their maxima
  // (kMaxWidth, ...) or inconsistent (n_heads not a multiple of n_kv_heads, odd head_dim, ...).
  void validate(const std::string& where) const;
};

// Parses a Hugging Face config.json. Throws kvq::Error naming the file and the field that is
// missing, has the wrong type, or holds a value the runner does not support.
ModelConfig parse_hf_config(const std::string& path);

}  // namespace kvq::model
