// Fisher information's raw material: the gradient of the loss with respect to every layer's
// pre-RoPE Keys and Values, against transformers' autograd (reference.safetensors) for both
// shared models and against central finite differences of the loss.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "kvq/calib/fisher.h"
#include "kvq/model/io/safetensors.h"
#include "kvq/model/weights.h"
#include "support/test_support.h"

namespace kvq {
namespace {

at::Tensor reference(const model::SafetensorsFile& file, const std::string& name) {
  return model::tensor_from_view(file.get(name)).to(at::kDouble);
}

// The README's tolerances: K and V within 1e-4; gradients within 1e-3 of each tensor's largest
// magnitude.
void check_gradients_match(const std::string& model_dir) {
  const model::LlamaModel m = model::LlamaModel::load(model_dir);
  const model::SafetensorsFile ref(model_dir + "/reference.safetensors");
  const calib::KVGradients g = calib::kv_gradients(m, reference(ref, "input_ids").to(at::kLong));
  EXPECT_NEAR(g.loss, reference(ref, "loss").item<double>(), 1e-5);
  ASSERT_EQ(static_cast<int64_t>(g.k_grad.size()), m.config().n_layers);
  for (int64_t i = 0; i < m.config().n_layers; ++i) {
    auto check = [&](const char* name, const at::Tensor& ours, bool is_grad) {
      const at::Tensor want = reference(ref, fmt::format("layers.{}.{}", i, name));
      ASSERT_EQ(ours.sizes(), want.sizes()) << name;
      const double largest = want.abs().max().item<double>();
      ASSERT_GT(largest, 0.0) << "a vacuous reference: layers." << i << "." << name;
      const double err = (ours.to(at::kDouble) - want).abs().max().item<double>();
      EXPECT_LT(err, is_grad ? 1e-3 * largest : 1e-4)
          << model_dir << " layers." << i << "." << name;
    };
    check("k", g.k[i], false);
    check("v", g.v[i], false);
    check("k.grad", g.k_grad[i], true);
    check("v.grad", g.v_grad[i], true);
  }
}

TEST(CalibGradients, Llama1mMatchesTransformers) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m");
  check_gradients_match(test::data_path("models/wt2-llama-1m"));
}

TEST(CalibGradients, Llama18mMatchesTransformers) {
  KVQ_REQUIRE_DATA("models/wt2-llama-18m");
  check_gradients_match(test::data_path("models/wt2-llama-18m"));
}

// Adds `delta` to one pre-RoPE element of one layer's Keys or Values.
class Perturb : public model::KVHook {
 public:
  Perturb(int64_t layer, bool keys, int64_t t, int64_t channel, double delta)
      : layer_(layer), keys_(keys), t_(t), channel_(channel), delta_(delta) {}
  void on_kv(int64_t layer, at::Tensor& k, at::Tensor& v) override {
    if (layer != layer_) return;
    at::Tensor& x = keys_ ? k : v;
    x = x.clone();
    const int64_t hd = x.size(3);
    x[0][t_][channel_ / hd][channel_ % hd] += delta_;
  }

 private:
  int64_t layer_;
  bool keys_;
  int64_t t_, channel_;
  double delta_;
};

// d loss / d x for the element with the largest gradient magnitude in one layer, by central
// differences in float64 so that the step can be small.
TEST(CalibGradients, MatchFiniteDifferencesOfTheLoss) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m");
  const std::string dir = test::data_path("models/wt2-llama-1m");
  const model::LlamaModel m = model::LlamaModel::load(dir, {at::kDouble, at::kCPU});
  const model::SafetensorsFile ref(dir + "/reference.safetensors");
  const at::Tensor tokens = reference(ref, "input_ids").to(at::kLong);
  const calib::KVGradients g = calib::kv_gradients(m, tokens);
  const at::Tensor batch = tokens.unsqueeze(0);
  for (const bool keys : {true, false}) {
    const int64_t layer = 1;
    const at::Tensor grad = keys ? g.k_grad[layer] : g.v_grad[layer];
    const int64_t flat = grad.abs().argmax().item<int64_t>();
    const int64_t t = flat / grad.size(1), c = flat % grad.size(1);
    const double h = 1e-4;
    auto loss_at = [&](double delta) {
      c10::NoGradGuard no_grad;
      Perturb hook(layer, keys, t, c, delta);
      return model::next_token_loss(m.forward(batch, &hook), batch).item<double>();
    };
    const double numeric = (loss_at(h) - loss_at(-h)) / (2 * h);
    const double analytic = grad[t][c].item<double>();
    EXPECT_NEAR(analytic, numeric, 1e-4 * std::abs(numeric))
        << (keys ? "key" : "value") << " layer " << layer << " token " << t << " channel " << c;
    EXPECT_GT(std::abs(numeric), 1e-6) << "the chosen element should matter";
  }
}

}  // namespace
}  // namespace kvq
