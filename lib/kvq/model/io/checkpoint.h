// A model checkpoint opened for reading: its config and its tensors under Hugging Face names,
// whatever the file format. Supported:
//   - a Hugging Face directory: config.json + model.safetensors, or the shards listed in
//     model.safetensors.index.json (fp32, fp16, bf16);
//   - a llama2.c checkpoint (.bin, version 0: seven int32 header fields, then float32 tensors).
// Tensor names (L = layer index):
//   model.embed_tokens.weight                     [vocab, dim]
//   model.layers.L.input_layernorm.weight         [dim]
//   model.layers.L.self_attn.{q,k,v,o}_proj.weight [out, in]
//   model.layers.L.post_attention_layernorm.weight [dim]
//   model.layers.L.mlp.{gate,up,down}_proj.weight [out, in]
//   model.norm.weight                             [dim]
//   lm_head.weight                                [vocab, dim]   (absent when tie_embeddings)
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvq/model/io/config.h"
#include "kvq/model/io/safetensors.h"

namespace kvq::model {

struct Checkpoint {
  std::string path;    // what the user named: a directory or a .bin file
  std::string format;  // "hf-safetensors" or "llama2c"
  ModelConfig config;
  std::map<std::string, TensorView> tensors;
  // llama2.c stores q_proj/k_proj rows in interleaved RoPE order: within each head, rotation
  // pairs are rows (2j, 2j+1) rather than Hugging Face's (j, j + head_dim/2).
  bool rope_interleaved = false;
  // Keeps the mapped files behind `tensors` alive.
  std::vector<std::shared_ptr<const void>> storage;

  // Throws "<path>: tensor '<name>' not found" if absent; also checks dtype is a float type
  // and the shape equals `shape`, naming both on mismatch.
  const TensorView& require(const std::string& name, const std::vector<int64_t>& shape) const;
};

// Opens a directory (Hugging Face) or a .bin file (llama2.c). Checks that every tensor the
// config implies is present with the right shape. Throws kvq::Error naming the file.
Checkpoint open_checkpoint(const std::string& path);
Checkpoint open_hf_checkpoint(const std::string& dir);
Checkpoint open_llama2c_checkpoint(const std::string& bin_path);

}  // namespace kvq::model
