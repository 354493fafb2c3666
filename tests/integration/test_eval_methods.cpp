// kvq eval with the KV cache quantized: the int-token perplexities against the transformers
// references of ../shared/data/README.md, several methods fitted from one calib.h5 in one run
// with --csv and --plot, and the bad inputs of the methods path.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kvq {
namespace {

using test::data_path;
using test::expect_one_line_error;
using test::kModel18m;
using test::kModel1m;
using test::kTest;
using test::kTrain;
using test::quoted;
using test::run_kvq;

std::string eval_args(const std::string& model, const std::string& extra) {
  return "eval --model " + quoted(data_path(model)) + " --data " + quoted(data_path(kTest)) +
         " --quiet " + extra;
}

const nlohmann::json* row(const nlohmann::json& j, const std::string& method) {
  for (const auto& r : j["methods"]) {
    if (r["method"] == method) return &r;
  }
  return nullptr;
}

// The whole test set, the fp16 baseline and the reference's int2-token row: each row is a pass
// over 397,781 tokens (~50 s of CPU in CI), so int3- and int4-token, the same code at other bit
// widths, are left out; int2 moves the perplexity most (+15.5% in the reference), so the 0.1%
// tolerance checks the quantizer most tightly there.
// Without --quiet and not on a TTY, eval prints plain progress lines with rate and ETA.
TEST(EvalMethods, Llama1mIntTokenMatchesTheTransformersReferences) {
  KVQ_REQUIRE_DATA(kModel1m);
  const auto ref = nlohmann::json::parse(
      test::read_file(data_path(kModel1m + "/reference.json")))["eval"]["wiki.test.tokens"];
  const auto r = run_kvq("eval --model " + quoted(data_path(kModel1m)) + " --data " +
                         quoted(data_path(kTest)) + " --methods int2-token --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"], 397781);
  EXPECT_EQ(j["seq_len"], 512);
  EXPECT_EQ(j["windows"], 776);
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ETA"), std::string::npos) << r.err;
  const nlohmann::json* fp16 = row(j, "fp16");
  ASSERT_NE(fp16, nullptr);
  // The README's tolerance for the fp16 perplexity: 0.05%.
  EXPECT_NEAR((*fp16)["ppl"].get<double>(), ref["ppl"].get<double>(),
              ref["ppl"].get<double>() * 5e-4);
  EXPECT_NEAR((*fp16)["mean_loss"].get<double>(), ref["mean_loss"].get<double>(), 1e-4);
  const nlohmann::json* int2 = row(j, "int2-token");
  ASSERT_NE(int2, nullptr);
  const double want = ref["ppl_kv_int2_token_pre_rope"].get<double>();
  EXPECT_NEAR((*int2)["ppl"].get<double>() / want - 1.0, 0.0, 1e-3)
      << (*int2)["ppl"] << " vs " << want;
  // 2-bit codes plus an fp16 scale and minimum per 32-element head vector: 2 + 32/32 bits.
  EXPECT_DOUBLE_EQ((*int2)["bits_per_element"].get<double>(), 3.0);
}

// Agreement with fp16 on a 16-window prefix: fp16 against itself is exact, int2-token moves the
// next-token distributions visibly but keeps most argmaxes; every output format carries both.
TEST(EvalMethods, Llama1mKlAndTop1AgainstFp16) {
  KVQ_REQUIRE_DATA(kModel1m);
  test::TempDir tmp;
  const std::string csv = tmp.file("t.csv");
  const auto r = run_kvq(
      eval_args(kModel1m, "--max-tokens 8192 --methods int2-token --json --csv " + quoted(csv)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const nlohmann::json* fp16 = row(j, "fp16");
  const nlohmann::json* int2 = row(j, "int2-token");
  ASSERT_NE(fp16, nullptr);
  ASSERT_NE(int2, nullptr);
  EXPECT_EQ((*fp16)["kl"].get<double>(), 0.0);
  EXPECT_EQ((*fp16)["top1_pct"].get<double>(), 100.0);
  EXPECT_GT((*int2)["kl"].get<double>(), 1e-3);
  EXPECT_LT((*int2)["kl"].get<double>(), 1.0);
  EXPECT_LT((*int2)["top1_pct"].get<double>(), 100.0);
  EXPECT_GT((*int2)["top1_pct"].get<double>(), 50.0);
  EXPECT_EQ(
      test::read_file(csv).rfind(
          "method,bits_per_element,ppl,delta_pct,kl,top1_pct,mean_loss,n_tokens,seconds,note\n"
          "fp16,16,",
          0),
      0u);
  const auto md = run_kvq(eval_args(kModel1m, "--max-tokens 1024 --methods int2-token"));
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_NE(md.out.find("| Δ vs fp16 |"), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("| top-1 % |"), std::string::npos) << md.out;
  const size_t at = md.out.find("\n| fp16 ");
  ASSERT_NE(at, std::string::npos) << md.out;
  const std::string fp16_line = md.out.substr(at + 1, md.out.find('\n', at + 1) - at - 1);
  EXPECT_NE(fp16_line.find(" 0 |  100.00 |"), std::string::npos) << fp16_line;
}

class EvalWithCalib : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_data(kModel1m)) return;
    dir_ = new test::TempDir;
    const auto r =
        run_kvq("calibrate --model " + quoted(data_path(kModel1m)) + " --data " +
                quoted(data_path(test::kValid)) + " --samples 4 --seq-len 512 --quiet --out " +
                quoted(dir_->file("calib.h5")));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  void SetUp() override { KVQ_REQUIRE_DATA(kModel1m); }
  static std::string calib() { return dir_->file("calib.h5"); }
  static test::TempDir* dir_;
};
test::TempDir* EvalWithCalib::dir_ = nullptr;

TEST_F(EvalWithCalib, ManyMethodsInOneRunWithCsvAndPlot) {
  const std::string csv = dir_->file("t.csv"), svg = dir_->file("t.svg");
  const auto r = run_kvq(eval_args(
      kModel1m,
      "--max-tokens 20480 --calib " + quoted(calib()) +
          " --methods "
          "nuq4,nuq3-1%,nuq2-1%-sink,kivi2-g32-r128,skvq-k2-v2-g32-w64,fp8-e4m3,int3-token-post" +
          " --csv " + quoted(csv) + " --plot " + quoted(svg) + " --json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["methods"].size(), 8u);
  const double fp16 = (*row(j, "fp16"))["ppl"].get<double>();
  for (const auto& m : j["methods"]) {
    const double ppl = m["ppl"].get<double>(), bits = m["bits_per_element"].get<double>();
    EXPECT_GE(ppl, fp16 * 0.99) << m["method"];
    EXPECT_LT(ppl, fp16 * 2.0) << m["method"];
    if (m["method"] != "fp16") {
      EXPECT_LT(bits, 16.0) << m["method"];
    }
  }
  // nuq3 with 1% outliers stays close to fp16; 2-bit KIVI does not come for free.
  EXPECT_LT((*row(j, "nuq3-1%"))["delta_pct"].get<double>(), 3.0);
  EXPECT_GT((*row(j, "nuq3-1%"))["bits_per_element"].get<double>(), 3.0);
  EXPECT_NE(test::read_file(csv).find("nuq2-1%-sink"), std::string::npos);
  const std::string plot = test::read_file(svg);
  EXPECT_EQ(plot.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(plot.find("wt2-llama-1m on wiki.test.tokens, L = 512"),
            std::string::npos);  // base names only
  EXPECT_NE(plot.find("nuq2-1%-sink"), std::string::npos);
  EXPECT_NE(plot.find("Pareto front"), std::string::npos);
}

TEST_F(EvalWithCalib, MethodNeedingCalibrationWithoutIt) {
  expect_one_line_error(run_kvq(eval_args(kModel1m, "--methods nuq3")), "eval", "--calib calib.h5");
}

TEST_F(EvalWithCalib, UnknownMethodString) {
  expect_one_line_error(run_kvq(eval_args(kModel1m, "--methods nuq3,int17")), "eval", "int17");
}

TEST_F(EvalWithCalib, CalibrationOfAnotherModel) {
  KVQ_REQUIRE_DATA(kModel18m);
  expect_one_line_error(run_kvq(eval_args(kModel18m, "--methods nuq3 --calib " + quoted(calib()))),
                        "eval", "made for a different model");
}

// The quality bar at CI size: wt2-llama-18m, 4 x 1024 calibration tokens of
// wiki.train (seed 0), the first 16 windows of wiki.test. The full-size figures are in the
// README; this keeps the orderings they rest on: outliers help at 3 bits, values normalized per
// token (KVQuant) beat per (token, KV head) once outliers are taken out, nuq beats int at 3 and
// 4 bits. (On 16 windows the 4-bit deltas, ~0.1-0.2%, are within noise of each other.)
TEST(QualityBar, Llama18mNuqOrderingsOnAReducedBudget) {
  KVQ_REQUIRE_DATA(kModel18m);
  test::TempDir tmp;
  const std::string calib = tmp.file("calib.h5");
  const auto c = run_kvq("calibrate --model " + quoted(data_path(kModel18m)) + " --data " +
                         quoted(data_path(kTrain)) +
                         " --samples 4 --seq-len 1024 --seed 0 --quiet --out " + quoted(calib));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const auto r = run_kvq(eval_args(
      kModel18m, "--max-tokens 16384 --json --calib " + quoted(calib) +
                     " --methods int3-token,int4-token,nuq3,nuq3-1%,nuq3-1%-vhead,nuq4-1%"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  auto delta = [&](const char* m) {
    const nlohmann::json* x = row(j, m);
    return x ? (*x)["delta_pct"].get<double>() : 1e9;
  };
  EXPECT_LT(delta("nuq3-1%"), delta("nuq3"));
  EXPECT_LT(delta("nuq3-1%"), delta("nuq3-1%-vhead"));
  EXPECT_LT(delta("nuq3"), delta("int3-token"));
  EXPECT_LT(delta("nuq4-1%"), delta("int4-token"));
  EXPECT_LT(delta("nuq3-1%"), 0.5);
}

// The README's main job on a reduced budget: every artifact written, every method of the paper's
// list in the table, the calibration readable by kvq inspect. Calibrated on wiki.valid (wiki.train
// is 10 times larger and costs ~30 s of CPU to tokenize) and evaluated on two windows (each
// window is 25 rows of 1,024 tokens): 60 s in CI, 130 s with wiki.train and four windows.
TEST(Reproduce, Llama18mReducedBudgetWritesTheTableAndArtifacts) {
  KVQ_REQUIRE_DATA(kModel18m);
  test::TempDir tmp;
  const std::string dir = tmp.file("out");
  const auto r = run_kvq("reproduce --model " + quoted(data_path(kModel18m)) + " --train " +
                         quoted(data_path(test::kValid)) + " --data " + quoted(data_path(kTest)) +
                         " --samples 2 --calib-seq-len 256 --max-tokens 2048" + " --out-dir " +
                         quoted(dir) + " --quiet --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["seq_len"], 1024);
  EXPECT_EQ(j["windows"], 2);
  for (const char* m :
       {"fp16", "int4-token", "int2-token", "nuq4", "nuq3-1%", "nuq2-1%", "kivi2-g32-r128",
        "skvq-k2-v2-g128-w128", "fp8-e4m3", "nuq3-1%-post", "nuq3-1%-vhead", "nuq2-1%-qnorm"}) {
    EXPECT_NE(row(j, m), nullptr) << m;
  }
  for (const char* f : {"calib.h5", "table.md", "results.csv", "results.json", "plot.svg"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  }
  EXPECT_EQ(run_kvq("inspect " + quoted(dir + "/calib.h5")).exit_code, 0);
  EXPECT_NE(test::read_file(dir + "/table.md").find("(mixed, 3.00 bits)"), std::string::npos);
  EXPECT_EQ((*row(j, "fp16"))["kl"].get<double>(), 0.0);
  EXPECT_GT((*row(j, "int2-token"))["kl"].get<double>(), 0.0);
  EXPECT_LT((*row(j, "int2-token"))["top1_pct"].get<double>(), 100.0);
}

}  // namespace
}  // namespace kvq
