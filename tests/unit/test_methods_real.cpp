// kvq/methods on a real calibration of wt2-llama-1m (calibrate() on the reference prompt): every
// fitted method survives a quant.h5 round trip, matches its model, and quantizes the model's real
// K/V identically through LibTorch and the CPU reference, with a bounded error.
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/artifact/calib_file.h"
#include "kvq/methods/fit.h"
#include "kvq/methods/quant_file.h"
#include "kvq/model/io/safetensors.h"
#include "support/reference_calib.h"
#include "support/test_support.h"

namespace kvq::methods {
namespace {

TEST(MethodsFit, RealCalibrationOfLlama1m) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m/reference.safetensors");
  const std::string dir = test::data_path("models/wt2-llama-1m");
  const model::LlamaModel m = model::LlamaModel::load(dir);
  const model::SafetensorsFile ref(dir + "/reference.safetensors");
  test::TempDir tmp;
  const artifact::CalibData c =
      test::reference_calib(m, dir, test::reference_input_ids(ref), tmp.file("calib.h5"));
  for (const std::string method : {"nuq3-1%", "nuq2-1%-post", "nuq4", "skvq-k2-v2-g16-w8",
                                   "skvq-k3-v2-g16-w8-post", "kivi2", "fp8-e4m3"}) {
    const Quantizer q = fit(parse_method(method), &c);
    write_quant(tmp.file("quant.h5"), q, "now");
    const Quantizer back = read_quant(tmp.file("quant.h5"));
    back.require_model(c.model);
    for (int layer = 0; layer < 4; ++layer) {
      for (const char* kind : {"k", "v"}) {
        const model::TensorView& view = ref.get("layers." + std::to_string(layer) + "." + kind);
        at::Tensor x = at::empty({1, 64, 2, 32}, at::kFloat);
        std::memcpy(x.data_ptr<float>(), view.data, view.n_bytes);
        const bool key = kind[0] == 'k';
        const at::Tensor t = key ? back.quantize_keys(layer, x) : back.quantize_values(layer, x);
        const at::Tensor rf = key ? q.quantize_keys_ref(layer, x) : q.quantize_values_ref(layer, x);
        EXPECT_TRUE(at::equal(t, rf)) << method << " layer " << layer << " " << kind;
        const double nmse = ((t - x).pow(2).sum() / x.pow(2).sum()).item<double>();
        EXPECT_LT(nmse, 0.5) << method << " layer " << layer << " " << kind;
      }
    }
  }
}

}  // namespace
}  // namespace kvq::methods
