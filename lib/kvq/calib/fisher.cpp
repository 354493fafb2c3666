// Gradients through the KVHook: the hook marks each layer's K and V as requiring a gradient,
// backward fills them in. Later layers' K/V already depend on earlier ones' and so carry a
// graph; retain_grad() keeps their .grad, where a detach() would cut the path through them.
#include "kvq/calib/fisher.h"

#include <cmath>
#include <utility>

#include <fmt/ranges.h>

#include "kvq/common/error.h"

namespace kvq::calib {
namespace {

class GradCapture : public model::KVHook {
 public:
  explicit GradCapture(int64_t n_layers) : k_(n_layers), v_(n_layers) {}

  void on_kv(int64_t layer, at::Tensor& k, at::Tensor& v) override {
    track(k);
    track(v);
    k_[layer] = k;
    v_[layer] = v;
  }

  std::vector<at::Tensor> k_, v_;

 private:
  static void track(at::Tensor& x) {
    if (x.requires_grad()) {
      x.retain_grad();
    } else {
      x.requires_grad_(true);
    }
  }
};

// [1, t, n_kv, hd] in the compute dtype -> [t, n_kv * hd] fp32, off the graph.
at::Tensor flat(const at::Tensor& x) {
  return x.detach().reshape({x.size(1), x.size(2) * x.size(3)}).to(at::kFloat);
}

}  // namespace

KVGradients kv_gradients(const model::LlamaModel& model, const at::Tensor& tokens) {
  if (tokens.dim() != 1 || tokens.size(0) < 2) {
    fail("kv_gradients: expected tokens [t] with t >= 2, found shape [{}]",
         fmt::join(tokens.sizes(), ", "));
  }
  const int64_t n_layers = model.config().n_layers;
  GradCapture capture(n_layers);
  const at::Tensor batch = tokens.to(model.device(), at::kLong).unsqueeze(0);
  at::Tensor loss = model::next_token_loss(model.forward(batch, &capture), batch);
  loss.backward();

  KVGradients out;
  out.loss = loss.item<double>();
  if (!std::isfinite(out.loss)) {
    fail("the calibration loss is not finite ({}); overflow in {}? try --dtype fp32 or bf16",
         out.loss, c10::toString(model.dtype()));
  }
  for (int64_t i = 0; i < n_layers; ++i) {
    at::Tensor& k = capture.k_[i];
    at::Tensor& v = capture.v_[i];
    if (!k.grad().defined() || !v.grad().defined()) {
      fail("layer {}: the loss has no gradient with respect to its Keys/Values", i);
    }
    out.k.push_back(flat(k));
    out.v.push_back(flat(v));
    out.k_grad.push_back(flat(k.grad()));
    out.v_grad.push_back(flat(v.grad()));
    for (const auto& [name, g] :
         {std::pair{"Keys", &out.k_grad.back()}, std::pair{"Values", &out.v_grad.back()}}) {
      if (!g->isfinite().all().item<bool>()) {
        fail(
            "layer {}: gradient of the loss with respect to the {} is not finite (overflow in "
            "{}? try --dtype fp32 or bf16)",
            i, name, c10::toString(model.dtype()));
      }
    }
  }
  return out;
}

}  // namespace kvq::calib
