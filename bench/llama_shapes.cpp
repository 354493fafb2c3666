// Random-weight LLaMA-shaped models (llama_shapes.h).
#include "llama_shapes.h"

#include <utility>
#include <vector>

#include "kvq/common/error.h"

namespace kvq::bench {

model::ModelConfig llama_preset(const std::string& name, const std::string& flag) {
  model::ModelConfig c;
  if (name == "7b") {
    c.dim = 4096, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 32, c.head_dim = 128;
    c.ffn_dim = 11008, c.vocab_size = 32000, c.max_seq_len = 4096;
  } else if (name == "tiny") {
    c.dim = 256, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 64;
    c.ffn_dim = 512, c.vocab_size = 4096, c.max_seq_len = 512;
  } else {
    fail("{}: expected 7b or tiny, found '{}'", flag, name);
  }
  return c;
}

model::LlamaModel random_llama(const model::ModelConfig& c, at::ScalarType dtype, at::Device device,
                               uint64_t seed) {
  at::manual_seed(seed);
  const auto opt = at::TensorOptions().dtype(dtype).device(device);
  auto normal = [&](std::vector<int64_t> shape) { return at::randn(shape, opt).mul_(0.02); };
  model::Weights w;
  w.embed = normal({c.vocab_size, c.dim});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    w.layers.push_back(
        {at::ones({c.dim}, opt), normal({c.q_dim(), c.dim}), normal({c.kv_dim(), c.dim}),
         normal({c.kv_dim(), c.dim}), normal({c.dim, c.q_dim()}), at::ones({c.dim}, opt),
         normal({c.ffn_dim, c.dim}), normal({c.ffn_dim, c.dim}), normal({c.dim, c.ffn_dim})});
  }
  w.norm = at::ones({c.dim}, opt);
  w.lm_head = normal({c.vocab_size, c.dim});
  w.checksum = "random";  // skips hashing billions of parameters
  return model::LlamaModel(c, std::move(w), "random");
}

}  // namespace kvq::bench
