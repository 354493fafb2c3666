// LlamaModel's RoPE table is sized by need, not by the config's context: a model whose config
// claims 2^24 positions loads without a table of that size, and positions past the first rows
// (where the table grows) rotate exactly as the formula says.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "kvq/model/llama.h"
#include "kvq/quant/rope.h"
#include "support/test_support.h"

namespace kvq::model {
namespace {

using test::data_path;
using test::kModel1m;

// wt2-llama-1m with max_position_embeddings set to `context`; the weights are a link.
std::string model_with_context(const test::TempDir& tmp, int64_t context) {
  nlohmann::json cfg = nlohmann::json::parse(test::read_file(data_path(kModel1m) + "/config.json"));
  cfg["max_position_embeddings"] = context;
  test::write_file(tmp.file("config.json"), cfg.dump());
  std::filesystem::create_symlink(data_path(kModel1m) + "/model.safetensors",
                                  tmp.file("model.safetensors"));
  return tmp.path();
}

TEST(RopeTable, PositionsPastTheInitialRowsMatchTheFormula) {
  KVQ_REQUIRE_DATA(kModel1m);
  test::TempDir tmp;
  const LlamaModel m = LlamaModel::load(model_with_context(tmp, int64_t{1} << 24));
  const ModelConfig& c = m.config();
  const int64_t t = 3, half = c.head_dim / 2;
  const at::Tensor x = at::randn({1, 1, t, c.head_dim}, at::TensorOptions().dtype(at::kFloat));
  const std::vector<float> inv_freq = quant::rope_inv_freq(c.rope_theta, c.head_dim);
  for (const int64_t start : {int64_t{0}, int64_t{8190}, int64_t{40000}}) {
    const at::Tensor y = m.apply_rope(x, start);
    const auto xa = x.accessor<float, 4>();
    const auto ya = y.accessor<float, 4>();
    for (int64_t i = 0; i < t; ++i) {
      for (int64_t d = 0; d < c.head_dim; ++d) {
        const float angle = static_cast<float>(start + i) * inv_freq[d % half];
        const double rotated = d < half ? -xa[0][0][i][d + half] : xa[0][0][i][d - half];
        const double want = xa[0][0][i][d] * std::cos(angle) + rotated * std::sin(angle);
        ASSERT_NEAR(ya[0][0][i][d], want, 1e-5) << "position " << start + i << " dim " << d;
      }
    }
  }
}

}  // namespace
}  // namespace kvq::model
