// The runtime on the GPU (CudaKvStore: compressed pages, the append/prefill/decode kernels) with
// wt2-llama-18m and quant.h5 files fitted here: greedy tokens as the CPU engine gives them
// (TorchKvStore, the method's quantizer), batching that changes nothing, sequences that leave
// and join, the memory refusals. CPU twin: tests/runtime/test_runtime.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kvq/methods/fit.h"
#include "kvq/methods/quant_file.h"
#include "kvq/model/llama.h"
#include "kvq/runtime/engine.h"
#include "kvq/runtime/generator.h"
#include "support/gpu.h"
#include "support/test_support.h"

namespace kvq {
namespace {

using test::data_path;
using test::kModel18m;
using test::kTrain;
using test::quoted;
using test::run_kvq;

std::vector<std::vector<int32_t>> greedy(runtime::Engine& engine,
                                         const std::vector<std::vector<int32_t>>& prompts,
                                         int64_t n_new) {
  runtime::Generator gen(engine, nullptr);
  std::vector<int64_t> ids;
  for (const auto& p : prompts) ids.push_back(gen.submit({p, n_new, {}, {}, false}));
  for (int guard = 0; !gen.done() && guard < 100000; ++guard) gen.step();
  std::vector<std::vector<int32_t>> out;
  for (int64_t id : ids) out.push_back(gen.completion(id).tokens);
  EXPECT_EQ(engine.free_pages(), engine.total_pages());
  return out;
}

class RuntimeCuda : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_data(kModel18m) || !at::hasCUDA()) return;
    dir_ = new test::TempDir;
    const auto r = run_kvq("calibrate --model " + quoted(data_path(kModel18m)) + " --data " +
                           quoted(data_path(kTrain)) + " --samples 4 --device cuda --quiet --out " +
                           quoted(dir_->file("calib.h5")));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const char* method : {"nuq3-1%", "nuq2-1%-vhead", "kivi2-g32-r128"}) {
      const auto f =
          run_kvq(std::string("fit --method ") + quoted(method) + " --calib " +
                  quoted(dir_->file("calib.h5")) + " --model " + quoted(data_path(kModel18m)) +
                  " --out " + quoted(dir_->file(std::string(method) + ".h5")));
      ASSERT_EQ(f.exit_code, 0) << f.err;
    }
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override {
    KVQ_REQUIRE_GPU();
    if (!at::hasCUDA()) GTEST_SKIP() << "no usable GPU: this LibTorch was built without CUDA";
    KVQ_REQUIRE_DATA(kModel18m);
  }
  static std::string quant(const std::string& method) { return dir_->file(method + ".h5"); }
  static test::TempDir* dir_;
};
test::TempDir* RuntimeCuda::dir_ = nullptr;

// The 16-token reference prompt: the GPU engine (fp16 model, compressed cache) and the CPU
// engine (fp32 model, the quantizer's values) agree on the first 32 greedy tokens at 3 bits and
// with KIVI (64 of 64 on an H200, 2026-12-03). At 2 bits the rounding of the fp16 model flips a
// near-tie sooner (13 of 64 measured): at least 8.
TEST_F(RuntimeCuda, GreedyTokensAgreeWithTheCpuEngine) {
  const auto ref = nlohmann::json::parse(test::read_file(data_path(kModel18m) + "/reference.json"));
  const auto prompt = ref["greedy"]["prompt16"]["prompt_ids"].get<std::vector<int32_t>>();
  model::LoadOptions gpu;
  gpu.device = at::Device("cuda");
  gpu.dtype = at::kHalf;
  const model::LlamaModel mg = model::LlamaModel::load(data_path(kModel18m), gpu);
  const model::LlamaModel mc = model::LlamaModel::load(data_path(kModel18m));
  for (const std::string method : {"nuq3-1%", "nuq2-1%-vhead", "kivi2-g32-r128"}) {
    SCOPED_TRACE(method);
    const int want = method == "nuq2-1%-vhead" ? 8 : 32;
    const methods::Quantizer q = methods::read_quant(quant(method));
    runtime::EngineOptions o;
    o.kv_mem_gib = 1;
    runtime::Engine eg(mg, q, o), ec(mc, q, o);
    ASSERT_NE(eg.store().name().find("CUDA"), std::string::npos) << eg.store().name();
    const auto g = greedy(eg, {prompt}, 64)[0], c = greedy(ec, {prompt}, 64)[0];
    int agree = 0;
    while (agree < 64 && g[agree] == c[agree]) ++agree;
    std::printf("%s: GPU and CPU agree on the first %d of 64 greedy tokens\n", method.c_str(),
                agree);
    EXPECT_GE(agree, want);
  }
}

// 8 prompts of different lengths, 5 slots: they join as others finish, and each gets the tokens
// it gets alone (KIVI flushes its residual at 128).
TEST_F(RuntimeCuda, BatchedGreedyEqualsAlone) {
  const auto ref = nlohmann::json::parse(test::read_file(data_path(kModel18m) + "/reference.json"));
  const auto text = ref["greedy"]["prompt16"]["prompt_ids"].get<std::vector<int32_t>>();
  std::vector<std::vector<int32_t>> prompts;
  for (size_t n : {1, 3, 16, 7, 12, 2, 9, 5}) {
    prompts.emplace_back(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(n));
  }
  model::LoadOptions gpu;
  gpu.device = at::Device("cuda");
  gpu.dtype = at::kHalf;
  const model::LlamaModel m = model::LlamaModel::load(data_path(kModel18m), gpu);
  // fp16: LibTorch's pooled rows; rows of one length in one flash call, of different lengths in
  // one varlen call.
  for (const std::string method : {"fp16", "nuq3-1%", "nuq2-1%-vhead", "kivi2-g32-r128"}) {
    SCOPED_TRACE(method);
    const methods::Quantizer q = method == "fp16"
                                     ? methods::fit(methods::parse_method("fp16"), nullptr)
                                     : methods::read_quant(quant(method));
    runtime::EngineOptions o;
    o.kv_mem_gib = 1;
    o.max_batch = 5;
    runtime::Engine many(m, q, o);
    const auto together = greedy(many, prompts, 150);
    o.max_batch = 1;
    runtime::Engine one(m, q, o);
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(together[i], greedy(one, {prompts[i]}, 150)[0]) << "prompt " << i;
    }
  }
}

// The compressed store filled with random content (kvq bench e2e) across page boundaries: a
// prefilled sequence decoding beside filled ones gets the logits it gets alone (to fp16
// rounding: the batch changes the kernels' split), also after a filled sequence leaves. The
// fp16 cache too: rows of different lengths attend in one varlen call where a sequence alone
// takes the ordinary flash call.
TEST_F(RuntimeCuda, FillRandomDecodesBesideAPrefilledSequence) {
  model::LoadOptions gpu;
  gpu.device = at::Device("cuda");
  gpu.dtype = at::kHalf;
  const model::LlamaModel m = model::LlamaModel::load(data_path(kModel18m), gpu);
  const std::vector<int32_t> prompt = {1, 299, 13, 40, 7};
  for (const std::string method : {"nuq3-1%", "kivi2-g32-r128", "fp16"}) {
    SCOPED_TRACE(method);
    const methods::Quantizer q = method == "fp16"
                                     ? methods::fit(methods::parse_method("fp16"), nullptr)
                                     : methods::read_quant(quant(method));
    runtime::EngineOptions o;
    o.kv_mem_gib = 1;
    runtime::Engine alone(m, q, o);
    const int64_t a0 = alone.open(64);
    alone.prefill(a0, prompt);
    const at::Tensor want = alone.decode({a0}, {11});
    const at::Tensor want2 = alone.decode({a0}, {12});

    runtime::Engine engine(m, q, o);
    const int64_t f1 = engine.open(1000), f2 = engine.open(1000);
    engine.fill_random(f1, 700);
    engine.fill_random(f2, 333);
    const int64_t a = engine.open(64);
    engine.prefill(a, prompt);
    const at::Tensor got = engine.decode({f1, f2, a}, {3, 4, 11});
    EXPECT_TRUE(got.isfinite().all().item<bool>());
    EXPECT_TRUE(at::allclose(got[2].to(at::kFloat), want[0].to(at::kFloat), 2e-2, 2e-2));
    engine.close(f1);
    const at::Tensor got2 = engine.decode({a, f2}, {12, 5});
    EXPECT_TRUE(at::allclose(got2[0].to(at::kFloat), want2[0].to(at::kFloat), 2e-2, 2e-2));
    EXPECT_EQ(engine.length(f2), 335);
  }
}

TEST_F(RuntimeCuda, MemoryRefusals) {
  const std::string m = " --model " + quoted(data_path(kModel18m)) + " --device cuda --dtype fp16";
  test::expect_one_line_error(run_kvq("generate" + m + " --quant " + quoted(quant("nuq3-1%")) +
                                      " --prompt hi --kv-mem 100000"),
                              "generate", "--kv-mem: 100000.00 GiB asked for, but the GPU has");
  test::expect_one_line_error(run_kvq("generate" + m + " --quant " + quoted(quant("nuq3-1%")) +
                                      " --prompt hi --kv-mem 0.0000001"),
                              "generate", "--kv-mem");
  test::expect_one_line_error(
      run_kvq("generate --model " + quoted(data_path(kModel18m)) + " --device cuda --quant " +
              quoted(quant("nuq3-1%")) + " --prompt hi"),
      "generate", "fp16 or bf16 models");
  const auto ok = run_kvq("generate" + m + " --quant " + quoted(quant("nuq3-1%")) +
                          " --prompt 'The game' -n 16 --json");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(nlohmann::json::parse(ok.out)["new_ids"].size(), 16u);
}

}  // namespace
}  // namespace kvq
