// The LibTorch runner on the GPU against the same transformers references as the CPU tests:
// fp32 within the CPU tolerance, bf16 and fp16 compute close in loss, greedy tokens identical.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kvq/model/io/safetensors.h"
#include "kvq/model/llama.h"
#include "kvq/model/weights.h"
#include "support/gpu.h"
#include "support/test_support.h"

namespace kvq {
namespace {

#define KVQ_REQUIRE_TORCH_CUDA()                                                               \
  do {                                                                                         \
    KVQ_REQUIRE_GPU();                                                                         \
    if (!at::hasCUDA()) GTEST_SKIP() << "no usable GPU: this LibTorch was built without CUDA"; \
  } while (0)

class RunnerCuda : public ::testing::TestWithParam<const char*> {};

TEST_P(RunnerCuda, MatchesTransformersReference) {
  KVQ_REQUIRE_TORCH_CUDA();
  const std::string rel = std::string("models/") + GetParam();
  KVQ_REQUIRE_DATA(rel);
  const std::string dir = test::data_path(rel);
  model::SafetensorsFile ref(dir + "/reference.safetensors");
  const auto json = nlohmann::json::parse(test::read_file(dir + "/reference.json"));
  at::Tensor ids = model::tensor_from_view(ref.get("input_ids")).view({1, -1});
  const at::Tensor ref_logits = model::tensor_from_view(ref.get("logits"));
  const double ref_loss = model::tensor_from_view(ref.get("loss")).item<double>();

  model::LoadOptions fp32;
  fp32.device = at::Device("cuda");
  const model::LlamaModel m = model::LlamaModel::load(dir, fp32);
  {
    c10::NoGradGuard no_grad;
    at::Tensor logits = m.forward(ids).cpu();
    EXPECT_LT((logits[0] - ref_logits).abs().max().item<double>(), 1e-4);
  }
  const auto& g = json["greedy"]["prompt16"];
  EXPECT_EQ(m.generate_greedy(g["prompt_ids"].get<std::vector<int32_t>>(), 64),
            g["new_ids"].get<std::vector<int32_t>>());

  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    model::LoadOptions options = fp32;
    options.dtype = dtype;
    const model::LlamaModel low = model::LlamaModel::load(dir, options);
    c10::NoGradGuard no_grad;
    const double loss = model::next_token_loss(low.forward(ids), ids.cuda()).item<double>();
    EXPECT_NEAR(loss, ref_loss, 0.02 * ref_loss) << at::toString(dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(SharedModels, RunnerCuda,
                         ::testing::Values("wt2-llama-1m", "wt2-llama-18m"), [](const auto& info) {
                           std::string name = info.param;
                           for (char& ch : name)
                             if (ch == '-') ch = '_';
                           return name;
                         });

}  // namespace
}  // namespace kvq
