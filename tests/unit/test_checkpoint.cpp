// Checkpoints: the real models open through both formats with the README's shapes, llama2.c views
// hold the same numbers as the safetensors ones (after undoing the q/k interleave), and every
// malformed directory or .bin is rejected with its exact one-line message.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "kvq/model/io/checkpoint.h"
#include "unit/model_io_fixtures.h"

namespace kvq::model {
namespace {

using nlohmann::json;
using test::error_of;
using test::TempDir;
using test::write_file;

using Shape = std::vector<int64_t>;

// Every tensor of `c` is present with its shape (Checkpoint::require checks dtype too).
void expect_all_tensors(const Checkpoint& ckpt) {
  const ModelConfig& c = ckpt.config;
  ckpt.require("model.embed_tokens.weight", {c.vocab_size, c.dim});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ckpt.require(p + "input_layernorm.weight", {c.dim});
    ckpt.require(p + "self_attn.q_proj.weight", {c.q_dim(), c.dim});
    ckpt.require(p + "self_attn.k_proj.weight", {c.kv_dim(), c.dim});
    ckpt.require(p + "self_attn.v_proj.weight", {c.kv_dim(), c.dim});
    ckpt.require(p + "self_attn.o_proj.weight", {c.dim, c.q_dim()});
    ckpt.require(p + "post_attention_layernorm.weight", {c.dim});
    ckpt.require(p + "mlp.gate_proj.weight", {c.ffn_dim, c.dim});
    ckpt.require(p + "mlp.up_proj.weight", {c.ffn_dim, c.dim});
    ckpt.require(p + "mlp.down_proj.weight", {c.dim, c.ffn_dim});
  }
  ckpt.require("model.norm.weight", {c.dim});
  EXPECT_EQ(ckpt.tensors.count("lm_head.weight"), c.tie_embeddings ? 0u : 1u);
  if (!c.tie_embeddings) ckpt.require("lm_head.weight", {c.vocab_size, c.dim});
}

TEST(CheckpointReal, SingleFileHuggingFace) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m");
  const std::string dir = test::data_path("models/wt2-llama-1m");
  const Checkpoint ckpt = open_checkpoint(dir);
  EXPECT_EQ(ckpt.path, dir);
  EXPECT_EQ(ckpt.format, "hf-safetensors");
  EXPECT_FALSE(ckpt.rope_interleaved);
  EXPECT_EQ(ckpt.config.n_layers, 4);
  EXPECT_EQ(ckpt.config.dim, 128);
  EXPECT_EQ(ckpt.config.head_dim, 32);
  EXPECT_TRUE(ckpt.config.tie_embeddings);
  EXPECT_EQ(ckpt.config.weights_dtype, "float32");
  EXPECT_EQ(ckpt.tensors.size(), 4u * 9 + 2);
  expect_all_tensors(ckpt);
  EXPECT_EQ(ckpt.tensors.at("model.norm.weight").dtype, DType::F32);
}

TEST(CheckpointReal, ShardedBf16HuggingFace) {
  KVQ_REQUIRE_DATA("models/wt2-llama-18m");
  const std::string dir = test::data_path("models/wt2-llama-18m");
  const Checkpoint ckpt = open_checkpoint(dir);
  EXPECT_EQ(ckpt.format, "hf-safetensors");
  EXPECT_EQ(ckpt.storage.size(), 4u);  // four shards, each opened once
  EXPECT_EQ(ckpt.config.n_layers, 6);
  EXPECT_EQ(ckpt.config.dim, 512);
  EXPECT_EQ(ckpt.config.n_heads, 4);
  EXPECT_EQ(ckpt.config.n_kv_heads, 2);
  EXPECT_EQ(ckpt.config.head_dim, 128);
  EXPECT_EQ(ckpt.config.ffn_dim, 1024);
  EXPECT_EQ(ckpt.config.max_seq_len, 1024);
  EXPECT_FALSE(ckpt.config.tie_embeddings);
  EXPECT_EQ(ckpt.config.weights_dtype, "bfloat16");
  EXPECT_EQ(ckpt.tensors.size(), 6u * 9 + 3);
  expect_all_tensors(ckpt);
  for (const auto& [name, view] : ckpt.tensors) EXPECT_EQ(view.dtype, DType::BF16) << name;
  // A view from the index must be the bytes of the shard the index names.
  const SafetensorsFile shard(dir + "/model-00002-of-00004.safetensors");
  const TensorView& want = shard.get("model.layers.1.mlp.up_proj.weight");
  const TensorView& got = ckpt.tensors.at("model.layers.1.mlp.up_proj.weight");
  ASSERT_EQ(got.n_bytes, want.n_bytes);
  EXPECT_EQ(std::memcmp(got.data, want.data, got.n_bytes), 0);
}

TEST(CheckpointReal, Llama2cMatchesSafetensors) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m");
  const Checkpoint hf = open_checkpoint(test::data_path("models/wt2-llama-1m"));
  const Checkpoint l2c = open_checkpoint(test::data_path("models/wt2-llama-1m/model.bin"));
  EXPECT_EQ(l2c.format, "llama2c");
  EXPECT_TRUE(l2c.rope_interleaved);
  const ModelConfig& a = hf.config;
  const ModelConfig& b = l2c.config;
  EXPECT_EQ(b.dim, a.dim);
  EXPECT_EQ(b.n_layers, a.n_layers);
  EXPECT_EQ(b.n_heads, a.n_heads);
  EXPECT_EQ(b.n_kv_heads, a.n_kv_heads);
  EXPECT_EQ(b.head_dim, a.head_dim);
  EXPECT_EQ(b.ffn_dim, a.ffn_dim);
  EXPECT_EQ(b.vocab_size, a.vocab_size);
  EXPECT_EQ(b.max_seq_len, a.max_seq_len);
  EXPECT_EQ(b.tie_embeddings, a.tie_embeddings);
  EXPECT_DOUBLE_EQ(b.norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(b.rope_theta, 10000.0);
  EXPECT_EQ(b.weights_dtype, "float32");
  ASSERT_EQ(l2c.tensors.size(), hf.tensors.size());
  expect_all_tensors(l2c);

  const int64_t hd = a.head_dim, row_bytes = a.dim * 4;
  for (const auto& [name, want] : hf.tensors) {
    const TensorView& got = l2c.tensors.at(name);
    ASSERT_EQ(got.shape, want.shape) << name;
    ASSERT_EQ(got.dtype, DType::F32) << name;
    ASSERT_EQ(got.n_bytes, want.n_bytes) << name;
    const bool rotated =
        name.find("q_proj") != std::string::npos || name.find("k_proj") != std::string::npos;
    if (!rotated) {
      EXPECT_EQ(std::memcmp(got.data, want.data, got.n_bytes), 0) << name;
      continue;
    }
    // HF row h*hd + half*(hd/2) + j is llama2.c row h*hd + 2j + half.
    EXPECT_NE(std::memcmp(got.data, want.data, got.n_bytes), 0) << name << " is not interleaved";
    int mismatched_rows = 0;
    for (int64_t h = 0; h < want.shape[0] / hd; ++h)
      for (int64_t half = 0; half < 2; ++half)
        for (int64_t j = 0; j < hd / 2; ++j) {
          const int64_t hf_row = h * hd + half * (hd / 2) + j, l2c_row = h * hd + 2 * j + half;
          mismatched_rows += std::memcmp(want.data + hf_row * row_bytes,
                                         got.data + l2c_row * row_bytes, row_bytes) != 0;
        }
    EXPECT_EQ(mismatched_rows, 0) << name;
  }
}

TEST(CheckpointReal, TruncatedRealBin) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m");
  TempDir tmp;
  const std::string bytes = test::read_file(test::data_path("models/wt2-llama-1m/model.bin"));
  write_file(tmp.file("model.bin"), bytes.substr(0, bytes.size() - 4));
  EXPECT_EQ(error_of([&] { open_checkpoint(tmp.file("model.bin")); }),
            tmp.file("model.bin") +
                ": header (dim=128, hidden_dim=384, n_layers=4, n_heads=4, "
                "n_kv_heads=2, vocab=4096, seq_len=512) implies 5313052 "
                "bytes, file has 5313048");
}

// A tiny llama2.c file: dim 8, hidden 16, 2 layers, 2 heads / 1 kv head, vocab 10, seq_len 4.
class Llama2c : public ::testing::Test {
 protected:
  std::string open_error(std::vector<int32_t> header, int64_t extra_bytes = 0) {
    const int64_t n = header.size() == 7 && header[0] > 0 && header[3] > 0 && header[4] > 0
                          ? test::llama2c_floats(8, 16, 2, 2, 1, header[5], 4)
                          : 0;
    write_file(path_, test::make_llama2c(header, n, extra_bytes));
    return error_of([&] { open_llama2c_checkpoint(path_); });
  }
  TempDir tmp_;
  std::string path_ = tmp_.file("model.bin");
  const std::string desc_ =
      "dim=8, hidden_dim=16, n_layers=2, n_heads=2, n_kv_heads=1, vocab=10, "
      "seq_len=4";
};

// First float of tensor `name`; make_llama2c stores float i at index i.
float first(const Checkpoint& c, const std::string& name) {
  float f;
  std::memcpy(&f, c.tensors.at(name).data, 4);
  return f;
}

TEST_F(Llama2c, LayoutFollowsLlama2cOrder) {
  write_file(path_, test::make_llama2c({8, 16, 2, 2, 1, 10, 4}, 1288));
  const Checkpoint c = open_checkpoint(path_);
  EXPECT_TRUE(c.config.tie_embeddings);
  EXPECT_EQ(c.config.max_seq_len, 4);
  EXPECT_EQ(c.config.bos_id, 1);
  EXPECT_EQ(c.config.eos_id, 2);
  EXPECT_EQ(c.tensors.size(), 2u * 9 + 2);
  expect_all_tensors(c);
  EXPECT_EQ(first(c, "model.embed_tokens.weight"), 0);
  EXPECT_EQ(first(c, "model.layers.0.input_layernorm.weight"), 80);
  EXPECT_EQ(first(c, "model.layers.1.input_layernorm.weight"), 88);
  EXPECT_EQ(first(c, "model.layers.0.self_attn.q_proj.weight"), 96);
  EXPECT_EQ(first(c, "model.layers.1.self_attn.k_proj.weight"), 256);
  EXPECT_EQ(first(c, "model.layers.0.self_attn.v_proj.weight"), 288);
  EXPECT_EQ(first(c, "model.layers.1.self_attn.o_proj.weight"), 416);
  EXPECT_EQ(first(c, "model.layers.0.post_attention_layernorm.weight"), 480);
  EXPECT_EQ(first(c, "model.layers.0.mlp.gate_proj.weight"), 496);  // w1
  EXPECT_EQ(first(c, "model.layers.0.mlp.down_proj.weight"), 752);  // w2
  EXPECT_EQ(first(c, "model.layers.1.mlp.up_proj.weight"), 1136);   // w3
  EXPECT_EQ(first(c, "model.norm.weight"), 1264);
}

TEST_F(Llama2c, NegativeVocabMeansUnsharedClassifier) {
  write_file(path_, test::make_llama2c({8, 16, 2, 2, 1, -10, 4}, 1368));
  const Checkpoint c = open_llama2c_checkpoint(path_);
  EXPECT_FALSE(c.config.tie_embeddings);
  EXPECT_EQ(c.config.vocab_size, 10);
  expect_all_tensors(c);
  EXPECT_EQ(first(c, "lm_head.weight"), 1288);  // after the 16 freq_cis floats
}

TEST_F(Llama2c, FileLengthMustMatchHeader) {
  EXPECT_EQ(open_error({8, 16, 2, 2, 1, 10, 4}, -4),
            path_ + ": header (" + desc_ + ") implies 5180 bytes, file has 5176");
  EXPECT_EQ(open_error({8, 16, 2, 2, 1, 10, 4}, 3),
            path_ + ": header (" + desc_ + ") implies 5180 bytes, file has 5183");
  // Tensors for vocab 10 but a header claiming an unshared classifier.
  write_file(path_, test::make_llama2c({8, 16, 2, 2, 1, -10, 4}, 1288));
  EXPECT_EQ(error_of([&] { open_llama2c_checkpoint(path_); }),
            path_ +
                ": header (dim=8, hidden_dim=16, n_layers=2, n_heads=2, n_kv_heads=1, "
                "vocab=-10, seq_len=4) implies 5500 bytes, file has 5180");
  write_file(path_, test::make_llama2c({8, 16, 3, 2, 1, 10, 4}, 1288));
  EXPECT_EQ(error_of([&] { open_llama2c_checkpoint(path_); }),
            path_ +
                ": header (dim=8, hidden_dim=16, n_layers=3, n_heads=2, n_kv_heads=1, "
                "vocab=10, seq_len=4) implies 7548 bytes, file has 5180");
  // Huge fields must not overflow into a size that happens to match.
  write_file(path_, test::make_llama2c({1 << 30, 1 << 30, 1 << 30, 2, 1, 10, 4}, 0));
  EXPECT_EQ(error_of([&] { open_llama2c_checkpoint(path_); }),
            path_ +
                ": header (dim=1073741824, hidden_dim=1073741824, n_layers=1073741824, "
                "n_heads=2, n_kv_heads=1, vocab=10, seq_len=4) implies "
                "29710560952072498690268332060 bytes, file has 28");
}

TEST_F(Llama2c, BadHeaderFields) {
  EXPECT_EQ(open_error({8, 16, 2, 0, 1, 10, 4}),
            path_ +
                ": header field n_heads must be positive, found 0 (header dim=8, "
                "hidden_dim=16, n_layers=2, n_heads=0, n_kv_heads=1, vocab=10, seq_len=4)");
  EXPECT_EQ(open_error({8, 16, -2, 2, 1, 10, 4}),
            path_ +
                ": header field n_layers must be positive, found -2 (header dim=8, "
                "hidden_dim=16, n_layers=-2, n_heads=2, n_kv_heads=1, vocab=10, seq_len=4)");
  EXPECT_EQ(open_error({8, 16, 2, 2, 1, 0, 4}),
            path_ +
                ": header field vocab_size must be positive, found 0 (header dim=8, "
                "hidden_dim=16, n_layers=2, n_heads=2, n_kv_heads=1, vocab=0, seq_len=4)");
  EXPECT_EQ(open_error({8, 16, 2, 3, 1, 10, 4}),
            path_ +
                ": header must have dim a multiple of n_heads, n_heads a multiple of "
                "n_kv_heads and an even head size, found dim=8, hidden_dim=16, n_layers=2, "
                "n_heads=3, n_kv_heads=1, vocab=10, seq_len=4");
  write_file(path_, std::string(20, '\0'));
  EXPECT_EQ(error_of([&] { open_llama2c_checkpoint(path_); }),
            path_ + ": expected a 28-byte llama2.c header, file has 20 bytes");
}

// A Hugging Face directory built from tiny_config() and tiny_tensors().
class HfDir : public ::testing::Test {
 protected:
  void write(const json& cfg, const std::vector<test::TensorSpec>& tensors) {
    write_file(tmp_.file("config.json"), cfg.dump());
    write_file(tmp_.file("model.safetensors"), test::make_safetensors(tensors));
  }
  std::string open_error() {
    return error_of([&] { open_checkpoint(tmp_.path()); });
  }
  // tiny_tensors() with `name` changed by `edit`.
  static std::vector<test::TensorSpec> edited(const std::string& name,
                                              void (*edit)(test::TensorSpec&)) {
    auto t = test::tiny_tensors();
    for (auto& spec : t)
      if (spec.name == name) edit(spec);
    return t;
  }
  TempDir tmp_;
  std::string file_ = tmp_.file("model.safetensors");
};

TEST_F(HfDir, OpensAndTakesDtypeFromTensors) {
  json cfg = test::tiny_config();
  cfg["torch_dtype"] = "bfloat16";  // the tensors say otherwise, and win
  write(cfg, test::tiny_tensors());
  Checkpoint c = open_hf_checkpoint(tmp_.path());
  EXPECT_EQ(c.config.weights_dtype, "float32");
  expect_all_tensors(c);
  // Norms kept in float32 beside bf16 matrices: the matrices decide.
  auto t = test::tiny_tensors();
  for (auto& spec : t)
    if (spec.name.find("norm") == std::string::npos) spec.dtype = "BF16", spec.elem_size = 2;
  write(cfg, t);
  EXPECT_EQ(open_hf_checkpoint(tmp_.path()).config.weights_dtype, "bfloat16");
}

TEST_F(HfDir, TiedEmbeddingsNeedNoLmHead) {
  json cfg = test::tiny_config();
  cfg["tie_word_embeddings"] = true;
  auto t = test::tiny_tensors();
  t.pop_back();  // lm_head
  write(cfg, t);
  EXPECT_EQ(open_checkpoint(tmp_.path()).tensors.count("lm_head.weight"), 0u);
  write(test::tiny_config(), t);
  EXPECT_EQ(open_error(), file_ + ": tensor 'lm_head.weight' not found");
}

TEST_F(HfDir, MissingWrongShapeOrNonFloatTensor) {
  auto t = test::tiny_tensors();
  t.erase(t.begin() + 8);  // model.layers.0.mlp.up_proj.weight
  write(test::tiny_config(), t);
  EXPECT_EQ(open_error(), file_ + ": tensor 'model.layers.0.mlp.up_proj.weight' not found");
  write(test::tiny_config(),
        edited("model.layers.1.self_attn.k_proj.weight", [](test::TensorSpec& s) {
          s.shape = {8, 8};
        }));
  EXPECT_EQ(open_error(), file_ +
                              ": tensor 'model.layers.1.self_attn.k_proj.weight' must have "
                              "shape [4, 8], found [8, 8]");
  write(test::tiny_config(),
        edited("model.norm.weight", [](test::TensorSpec& s) { s.dtype = "I32"; }));
  EXPECT_EQ(open_error(),
            file_ + ": tensor 'model.norm.weight' must have dtype F32, F16 or BF16, found I32");
  const Checkpoint c = [&] {
    write(test::tiny_config(), test::tiny_tensors());
    return open_checkpoint(tmp_.path());
  }();
  EXPECT_EQ(error_of([&] { c.require("nope", {1}); }), tmp_.path() + ": tensor 'nope' not found");
}

TEST_F(HfDir, MissingFilesAndDirectories) {
  write_file(file_, test::make_safetensors(test::tiny_tensors()));
  EXPECT_EQ(open_error(),
            tmp_.path() + ": expected config.json in the model directory, found none");
  write_file(tmp_.file("config.json"), json({{"model_type", "llama"}}).dump());
  EXPECT_EQ(open_error(), tmp_.file("config.json") + ": missing field 'hidden_size'");
  json cfg = test::tiny_config();
  cfg["hidden_act"] = "relu";
  write_file(tmp_.file("config.json"), cfg.dump());
  EXPECT_EQ(open_error(),
            tmp_.file("config.json") + ": hidden_act \"relu\" is not supported, expected \"silu\"");
  std::remove(file_.c_str());
  write_file(tmp_.file("config.json"), test::tiny_config().dump());
  EXPECT_EQ(open_error(), tmp_.path() +
                              ": expected model.safetensors or "
                              "model.safetensors.index.json, found neither");
  const std::string gone = tmp_.file("gone");
  EXPECT_EQ(error_of([&] { open_checkpoint(gone); }),
            gone + ": expected a model directory or a llama2.c .bin file, found nothing");
  EXPECT_EQ(error_of([&] { open_hf_checkpoint(gone); }),
            gone + ": expected a model directory, found nothing");
  EXPECT_EQ(error_of([&] { open_checkpoint(tmp_.file("config.json")); }),
            tmp_.file("config.json") +
                ": expected a model directory (config.json + "
                "safetensors) or a llama2.c .bin file, found another file");
}

TEST_F(HfDir, ShardedIndex) {
  write_file(tmp_.file("config.json"), test::tiny_config().dump());
  auto t = test::tiny_tensors();
  const std::vector<test::TensorSpec> a(t.begin(), t.begin() + 10), b(t.begin() + 10, t.end());
  write_file(tmp_.file("a.safetensors"), test::make_safetensors(a));
  write_file(tmp_.file("b.safetensors"), test::make_safetensors(b));
  json map = json::object();
  for (const auto& s : a) map[s.name] = "a.safetensors";
  for (const auto& s : b) map[s.name] = "b.safetensors";
  const std::string index = tmp_.file("model.safetensors.index.json");
  auto write_index = [&](const json& m) {
    write_file(index, json({{"metadata", {{"total_size", 1}}}, {"weight_map", m}}).dump());
  };
  write_index(map);
  const Checkpoint c = open_checkpoint(tmp_.path());
  EXPECT_EQ(c.storage.size(), 2u);
  EXPECT_EQ(c.tensors.size(), t.size());
  expect_all_tensors(c);

  json bad = map;
  bad["model.norm.weight"] = "a.safetensors";  // the index points at the wrong shard
  write_index(bad);
  EXPECT_EQ(open_error(), tmp_.file("a.safetensors") + ": tensor 'model.norm.weight' listed in " +
                              index + " not found in this shard");
  bad = map;
  bad.erase("model.norm.weight");
  write_index(bad);
  EXPECT_EQ(open_error(), index + ": tensor 'model.norm.weight' not found");
  bad["model.norm.weight"] = "c.safetensors";
  write_index(bad);
  EXPECT_EQ(open_error(), tmp_.file("c.safetensors") + ": shard 'c.safetensors' listed in " +
                              index + " not found");
  bad["model.norm.weight"] = "../b.safetensors";
  write_index(bad);
  EXPECT_EQ(open_error(), index +
                              ": weight_map entry 'model.norm.weight' must be a file name in "
                              "the same directory, found '../b.safetensors'");
  write_file(index, "{\"weight_map\": [1]}");
  EXPECT_EQ(open_error(), index + ": expected an object with a 'weight_map' object, found none");
}

}  // namespace
}  // namespace kvq::model
