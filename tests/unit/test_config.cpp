// parse_hf_config and ModelConfig::validate: the real configs, HF defaults, Llama 3 rope scaling,
// and every unsupported setting rejected with its exact one-line message.
#include <gtest/gtest.h>

#include <string>

#include "kvq/model/io/config.h"
#include "unit/model_io_fixtures.h"

namespace kvq::model {
namespace {

using nlohmann::json;
using test::error_of;
using test::tiny_config;

class ConfigTest : public ::testing::Test {
 protected:
  ModelConfig parse(const json& cfg) {
    test::write_file(path_, cfg.dump(2));
    return parse_hf_config(path_);
  }
  std::string error(const json& cfg) {
    return error_of([&] { parse(cfg); });
  }
  // tiny_config() with `key` set to `value` (null erases it).
  std::string error_with(const std::string& key, const json& value) {
    json cfg = tiny_config();
    if (value.is_null())
      cfg.erase(key);
    else
      cfg[key] = value;
    return error(cfg);
  }
  test::TempDir tmp_;
  std::string path_ = tmp_.file("config.json");
};

TEST_F(ConfigTest, RealModels) {
  KVQ_REQUIRE_DATA("models/wt2-llama-18m");
  const ModelConfig small = parse_hf_config(test::data_path("models/wt2-llama-1m/config.json"));
  EXPECT_EQ(small.architecture, "llama");
  EXPECT_EQ(small.dim, 128);
  EXPECT_EQ(small.n_layers, 4);
  EXPECT_EQ(small.n_heads, 4);
  EXPECT_EQ(small.n_kv_heads, 2);
  EXPECT_EQ(small.head_dim, 32);
  EXPECT_EQ(small.ffn_dim, 384);
  EXPECT_EQ(small.vocab_size, 4096);
  EXPECT_EQ(small.max_seq_len, 512);
  EXPECT_TRUE(small.tie_embeddings);
  EXPECT_EQ(small.weights_dtype, "float32");
  EXPECT_DOUBLE_EQ(small.norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(small.rope_theta, 10000.0);
  EXPECT_EQ(small.rope_scaling.kind, RopeScaling::Kind::None);
  EXPECT_EQ(small.bos_id, 1);
  EXPECT_EQ(small.eos_id, 2);
  EXPECT_EQ(small.kv_dim(), 64);

  const ModelConfig big = parse_hf_config(test::data_path("models/wt2-llama-18m/config.json"));
  EXPECT_EQ(big.dim, 512);
  EXPECT_EQ(big.n_layers, 6);
  EXPECT_EQ(big.n_heads, 4);
  EXPECT_EQ(big.n_kv_heads, 2);
  EXPECT_EQ(big.head_dim, 128);
  EXPECT_EQ(big.ffn_dim, 1024);
  EXPECT_EQ(big.max_seq_len, 1024);
  EXPECT_FALSE(big.tie_embeddings);
  EXPECT_EQ(big.weights_dtype, "bfloat16");
  EXPECT_EQ(big.q_dim(), 512);
}

TEST_F(ConfigTest, HuggingFaceDefaults) {
  json cfg = tiny_config();
  for (const char* key :
       {"num_key_value_heads", "hidden_act", "rms_norm_eps", "tie_word_embeddings", "torch_dtype"})
    cfg.erase(key);
  cfg["head_dim"] = nullptr;  // null means "derive it", as transformers writes it
  cfg["rope_scaling"] = nullptr;
  const ModelConfig c = parse(cfg);
  EXPECT_EQ(c.n_kv_heads, 2);  // = num_attention_heads
  EXPECT_EQ(c.head_dim, 4);    // = hidden_size / num_attention_heads
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.weights_dtype, "float32");
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::None);
}

TEST_F(ConfigTest, ExplicitValues) {
  json cfg = tiny_config();
  cfg["head_dim"] = 6;  // q_dim 12 != hidden_size 8 is allowed
  cfg["rope_theta"] = 500000.0;
  cfg["bos_token_id"] = 3;
  cfg["eos_token_id"] = json::array({7, 9});  // Llama 3 style: the first is primary
  cfg["dtype"] = "float16";
  cfg["rope_scaling"] = {{"rope_type", "default"}};
  const ModelConfig c = parse(cfg);
  EXPECT_EQ(c.head_dim, 6);
  EXPECT_EQ(c.q_dim(), 12);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.bos_id, 3);
  EXPECT_EQ(c.eos_id, 7);
  EXPECT_EQ(c.weights_dtype, "float16");
}

TEST_F(ConfigTest, Llama3RopeScaling) {
  json cfg = tiny_config();
  cfg["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  ModelConfig c = parse(cfg);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);

  // transformers 5 spelling: rope_parameters carries the type and theta.
  cfg.erase("rope_scaling");
  cfg["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                            {"factor", 32.0},          {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  c = parse(cfg);
  EXPECT_EQ(c.rope_scaling.kind, RopeScaling::Kind::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);

  cfg["rope_parameters"].erase("high_freq_factor");
  EXPECT_EQ(error(cfg),
            path_ + ": rope_parameters of type \"llama3\" is missing 'high_freq_factor'");
  cfg["rope_parameters"]["high_freq_factor"] = 0.5;
  EXPECT_EQ(error(cfg), path_ +
                            ": llama3 rope scaling needs factor > 0 and 0 < low_freq_factor "
                            "< high_freq_factor, found factor 32, low_freq_factor 1, "
                            "high_freq_factor 0.5");
}

TEST_F(ConfigTest, MissingRequiredField) {
  for (const char* key : {"hidden_size", "num_hidden_layers", "num_attention_heads",
                          "intermediate_size", "vocab_size", "max_position_embeddings"})
    EXPECT_EQ(error_with(key, nullptr), path_ + ": missing field '" + key + "'");
  EXPECT_EQ(error_with("model_type", nullptr), path_ + ": missing field 'model_type'");
}

TEST_F(ConfigTest, BadFieldValues) {
  EXPECT_EQ(error_with("hidden_size", -8),
            path_ + ": field 'hidden_size' must be a positive integer, found -8");
  EXPECT_EQ(error_with("num_hidden_layers", "2"),
            path_ + ": field 'num_hidden_layers' must be a positive integer, found \"2\"");
  EXPECT_EQ(error_with("num_key_value_heads", 0),
            path_ + ": field 'num_key_value_heads' must be a positive integer, found 0");
  EXPECT_EQ(error_with("num_attention_heads", 3),
            path_ +
                ": hidden_size (8) must be a multiple of num_attention_heads (3) when "
                "head_dim is not given");
  json cfg = tiny_config();
  cfg["num_attention_heads"] = 4;
  cfg["num_key_value_heads"] = 3;
  EXPECT_EQ(error(cfg), path_ + ": n_heads (4) must be a multiple of n_kv_heads (3)");
  EXPECT_EQ(error_with("head_dim", 5),
            path_ + ": head_dim must be even (RoPE rotates pairs), found 5");
  EXPECT_EQ(error_with("tie_word_embeddings", 1),
            path_ + ": field 'tie_word_embeddings' must be true or false, found 1");
  EXPECT_EQ(error_with("rms_norm_eps", "small"),
            path_ + ": field 'rms_norm_eps' must be a number, found \"small\"");
  EXPECT_EQ(error_with("torch_dtype", "int8"),
            path_ +
                ": field 'torch_dtype' must be \"float32\", \"float16\" or \"bfloat16\", "
                "found \"int8\"");
  EXPECT_EQ(error_with("eos_token_id", 10), path_ +
                                                ": bos/eos ids (1, 10) must be below "
                                                "vocab_size (10)");
}

// Stated maxima come before anything is sized from the config: a 2^40 context would otherwise
// be a RoPE table of terabytes, and 2^40 heads of 2^40 dims a product that wraps.
TEST_F(ConfigTest, SizesAboveTheirStatedMaxima) {
  EXPECT_EQ(error_with("max_position_embeddings", json(uint64_t{1} << 40)),
            path_ + ": field 'max_position_embeddings' must be at most 16777216, found " +
                std::to_string(uint64_t{1} << 40));
  EXPECT_EQ(error_with("max_position_embeddings", json(~uint64_t{0})),
            path_ +
                ": field 'max_position_embeddings' must be at most 16777216, found "
                "18446744073709551615");
  EXPECT_EQ(error_with("num_attention_heads", json(uint64_t{1} << 40)),
            path_ + ": field 'num_attention_heads' must be at most 1048576, found 1099511627776");
  EXPECT_EQ(error_with("head_dim", json(int64_t{1} << 21)),
            path_ + ": field 'head_dim' must be at most 1048576, found 2097152");
  EXPECT_EQ(error_with("vocab_size", json(int64_t{1} << 31)),
            path_ + ": field 'vocab_size' must be at most 2147483647, found 2147483648");
  EXPECT_EQ(error_with("num_hidden_layers", 65537),
            path_ + ": field 'num_hidden_layers' must be at most 65536, found 65537");
  EXPECT_EQ(error_with("intermediate_size", json(uint64_t{1} << 63)),
            path_ + ": field 'intermediate_size' must be at most 1048576, found " +
                std::to_string(uint64_t{1} << 63));
  EXPECT_EQ(error_with("hidden_size", json(uint64_t{0})),
            path_ + ": field 'hidden_size' must be a positive integer, found 0");
}

TEST_F(ConfigTest, UnsupportedArchitecture) {
  EXPECT_EQ(error_with("model_type", "qwen2"),
            path_ + ": model_type \"qwen2\" is not supported, expected \"llama\" or \"mistral\"");
  EXPECT_EQ(error_with("hidden_act", "gelu"),
            path_ + ": hidden_act \"gelu\" is not supported, expected \"silu\"");
  EXPECT_EQ(error_with("attention_bias", true),
            path_ + ": attention_bias must be false (no q/k/v/o biases), found true");
  EXPECT_EQ(error_with("mlp_bias", true),
            path_ + ": mlp_bias must be false (no MLP biases), found true");
  EXPECT_EQ(error_with("partial_rotary_factor", 0.5),
            path_ + ": partial_rotary_factor must be 1 (full rotary), found 0.5");
  EXPECT_EQ(error_with("quantization_config", json{{"quant_method", "gptq"}}),
            path_ + ": expected unquantized weights, found a quantization_config");
  EXPECT_EQ(error_with("hidden_act", "swish"), "<no error>");  // transformers: same as silu
}

TEST_F(ConfigTest, UnsupportedRopeScaling) {
  EXPECT_EQ(error_with("rope_scaling", json{{"type", "linear"}, {"factor", 2.0}}),
            path_ +
                ": rope_scaling type \"linear\" is not supported, expected \"default\" or "
                "\"llama3\"");
  EXPECT_EQ(error_with("rope_scaling", json{{"rope_type", "yarn"}, {"factor", 4.0}}),
            path_ +
                ": rope_scaling type \"yarn\" is not supported, expected \"default\" or "
                "\"llama3\"");
  EXPECT_EQ(error_with("rope_scaling", json{{"factor", 2.0}}),
            path_ + ": rope_scaling has no 'rope_type' (or 'type')");
  EXPECT_EQ(error_with("rope_scaling", "llama3"),
            path_ + ": field 'rope_scaling' must be an object or null, found \"llama3\"");
}

TEST_F(ConfigTest, MistralNeedsFullAttention) {
  json cfg = tiny_config();
  cfg["model_type"] = "mistral";
  EXPECT_EQ(error(cfg),
            path_ + ": sliding_window must be null (full attention), found none (default 4096)");
  cfg["sliding_window"] = 4096;
  EXPECT_EQ(error(cfg), path_ + ": sliding_window must be null (full attention), found 4096");
  cfg["sliding_window"] = nullptr;
  cfg.erase("num_key_value_heads");
  cfg["num_attention_heads"] = 8;
  cfg["hidden_size"] = 64;
  const ModelConfig c = parse(cfg);
  EXPECT_EQ(c.architecture, "mistral");
  EXPECT_EQ(c.n_kv_heads, 8);  // MistralConfig's default
}

TEST_F(ConfigTest, UnreadableFile) {
  EXPECT_EQ(error_of([&] { parse_hf_config(tmp_.file("absent.json")); }),
            tmp_.file("absent.json") + ": cannot open (No such file or directory)");
  test::write_file(path_, "{\"hidden_size\": 8,\n oops}");
  EXPECT_EQ(error_of([&] { parse_hf_config(path_); }),
            path_ + ": expected JSON, found invalid JSON at byte 21");
  test::write_file(path_, "[]");
  EXPECT_EQ(error_of([&] { parse_hf_config(path_); }),
            path_ + ": expected a JSON object, found array");
}

TEST(ModelConfigValidate, RejectsNonPositiveSizes) {
  ModelConfig c;
  c.dim = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.ffn_dim = 16;
  c.vocab_size = 10;
  c.max_seq_len = 4;
  EXPECT_EQ(error_of([&] { c.validate("m"); }), "<no error>");
  c.ffn_dim = 0;
  EXPECT_EQ(error_of([&] { c.validate("m"); }), "m: ffn_dim must be positive, found 0");
  c.ffn_dim = 16;
  c.norm_eps = 0;
  EXPECT_EQ(error_of([&] { c.validate("m"); }), "m: norm_eps must be a positive number, found 0");
  c.norm_eps = 1e-5;
  c.max_seq_len = kMaxContext + 1;  // a llama2.c header goes through validate alone
  EXPECT_EQ(error_of([&] { c.validate("m"); }),
            "m: max_seq_len must be at most 16777216, found 16777217");
}

}  // namespace
}  // namespace kvq::model
