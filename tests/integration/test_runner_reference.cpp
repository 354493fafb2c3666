// The runner against independent references (../shared/data/README.md): Hugging Face
// transformers logits, pre-RoPE Keys and Values for 64 tokens, greedy tokens, for both shared
// models, and llama2.c's checkpoint of wt2-llama-1m decoded through the llama2.c loader.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kvq/model/io/safetensors.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"
#include "kvq/model/weights.h"
#include "support/test_support.h"

namespace kvq {
namespace {

using model::LlamaModel;

// Records every layer's pre-RoPE K and V as [seq, n_kv_heads * head_dim] (batch 1).
class RecordKV : public model::KVHook {
 public:
  void on_kv(int64_t layer, at::Tensor& k, at::Tensor& v) override {
    k_[layer] = k[0].reshape({k.size(1), -1}).to(at::kFloat).clone();
    v_[layer] = v[0].reshape({v.size(1), -1}).to(at::kFloat).clone();
  }
  std::map<int64_t, at::Tensor> k_, v_;
};

struct Reference {
  explicit Reference(const std::string& dir)
      : file(dir + "/reference.safetensors"),
        json(nlohmann::json::parse(test::read_file(dir + "/reference.json"))) {}
  at::Tensor get(const std::string& name) const { return model::tensor_from_view(file.get(name)); }
  model::SafetensorsFile file;
  nlohmann::json json;
};

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

std::vector<int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

void check_forward(const LlamaModel& m, const Reference& ref, bool keys_in_hf_order) {
  at::Tensor ids = ref.get("input_ids").view({1, -1});
  RecordKV record;
  at::Tensor logits;
  {
    c10::NoGradGuard no_grad;
    logits = m.forward(ids, &record);
  }
  EXPECT_LT(max_abs_diff(logits[0], ref.get("logits")), 1e-4) << m.source();
  const double loss = model::next_token_loss(logits, ids).item<double>();
  EXPECT_NEAR(loss, ref.get("loss").item<double>(), 1e-5);
  for (int64_t i = 0; i < m.config().n_layers; ++i) {
    ASSERT_TRUE(keys_in_hf_order);
    EXPECT_LT(max_abs_diff(record.k_[i], ref.get(fmt::format("layers.{}.k", i))), 1e-4)
        << m.source() << " layer " << i;
    EXPECT_LT(max_abs_diff(record.v_[i], ref.get(fmt::format("layers.{}.v", i))), 1e-4)
        << m.source() << " layer " << i;
  }
}

void check_greedy(const LlamaModel& m, const Reference& ref) {
  for (const char* key : {"bos", "prompt16"}) {
    const auto& g = ref.json["greedy"][key];
    EXPECT_EQ(m.generate_greedy(ids_of(g["prompt_ids"]), 64), ids_of(g["new_ids"]))
        << m.source() << " greedy." << key;
  }
}

TEST(RunnerReference, Llama1mSafetensorsMatchesTransformers) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m");
  const std::string dir = test::data_path("models/wt2-llama-1m");
  const LlamaModel m = LlamaModel::load(dir);
  const Reference ref(dir);
  check_forward(m, ref, true);
  check_greedy(m, ref);
}

TEST(RunnerReference, Llama18mBf16ShardsMatchTransformers) {
  KVQ_REQUIRE_DATA("models/wt2-llama-18m");
  const std::string dir = test::data_path("models/wt2-llama-18m");
  const LlamaModel m = LlamaModel::load(dir);  // bf16 weights, fp32 compute like the reference
  EXPECT_EQ(m.config().head_dim, 128);
  const Reference ref(dir);
  check_forward(m, ref, true);
  check_greedy(m, ref);
}

TEST(RunnerReference, Llama2cCheckpointMatchesTransformers) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m/model.bin");
  const std::string dir = test::data_path("models/wt2-llama-1m");
  const LlamaModel m = LlamaModel::load(dir + "/model.bin");
  // The loader undoes llama2.c's interleaved q/k rows, so Keys come out in Hugging Face order.
  const Reference ref(dir);
  check_forward(m, ref, true);
  check_greedy(m, ref);
  // And llama2.c's own tokenizer.bin decodes the greedy text the reference gives (prompt and
  // continuation, as transformers decoded them).
  const auto tok = model::load_llama2c_tokenizer(dir + "/tokenizer.bin", 4096);
  const auto& g = ref.json["greedy"]["prompt16"];
  std::vector<int32_t> all = ids_of(g["prompt_ids"]);
  for (int32_t id : ids_of(g["new_ids"])) all.push_back(id);
  EXPECT_EQ(tok->decode(all), g["text"].get<std::string>());
}

TEST(RunnerReference, ReducedPrecisionStaysClose) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m");
  const std::string dir = test::data_path("models/wt2-llama-1m");
  const Reference ref(dir);
  at::Tensor ids = ref.get("input_ids").view({1, -1});
  // fp16 matrix products are not implemented on the CPU by every LibTorch; the GPU tests cover it.
  for (at::ScalarType dtype : {at::kBFloat16}) {
    model::LoadOptions options;
    options.dtype = dtype;
    const LlamaModel m = LlamaModel::load(dir, options);
    c10::NoGradGuard no_grad;
    const double loss = model::next_token_loss(m.forward(ids), ids).item<double>();
    // bf16 keeps 8 mantissa bits: the mean loss moves by well under 2%.
    EXPECT_NEAR(loss, ref.get("loss").item<double>(), 0.02 * ref.get("loss").item<double>())
        << at::toString(dtype);
  }
}

}  // namespace
}  // namespace kvq
