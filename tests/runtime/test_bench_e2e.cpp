// kvq bench e2e on the CPU with the tiny preset (the GPU figures come from scripts/device.sh): the
// cells and the largest-context search run end to end, the figures hang together, bad flags
// get one-line errors before any model is built.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kvq {
namespace {

using test::quoted;
using test::run_kvq;

const std::string kTiny =
    "bench e2e --preset tiny --device cpu --dtype fp32 --warmup 1 --steps 2 --calib-tokens 64";

TEST(BenchE2e, TinyModelOnTheCpu) {
  test::TempDir tmp;
  const std::string json = tmp.file("e2e.json");
  // The CPU store holds 2 layers x 2 KV heads x 64 x 4 bytes x 2 = 2 KiB per token: 1 MiB is
  // 512 tokens, two pages.
  const auto r =
      run_kvq(kTiny + " --contexts 100,300 --batches 1,2 --methods nuq3-1%,int4-token" +
              " --kv-mem " + std::to_string(1.0 / 1024) + " --json-file " + quoted(json));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("RANDOM fp32 weights"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| method | largest context (batch 1) |"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(test::read_file(json));
  ASSERT_EQ(j["decode"].size(), 3u * 2 * 2);  // fp16 + 2 methods, 2 batches, 2 contexts
  int measured = 0;
  for (const auto& c : j["decode"]) {
    SCOPED_TRACE(c.dump());
    const bool fits = c["batch"].get<int>() * ((c["context"].get<int>() + 3 + 255) / 256) <= 2;
    if (!fits) {
      EXPECT_EQ(c["tokens_per_s"].get<double>(), 0.0);
      EXPECT_NE(c["note"].get<std::string>().find("does not fit"), std::string::npos);
      continue;
    }
    ++measured;
    EXPECT_GT(c["tokens_per_s"].get<double>(), 0.0);
    EXPECT_NEAR(c["tokens_per_s"].get<double>() * c["ms_per_step"].get<double>() / 1e3,
                c["batch"].get<double>(), 1e-6);
    // The median step lies between the fastest and the slowest.
    EXPECT_GT(c["ms_per_step_min"].get<double>(), 0.0);
    EXPECT_LE(c["ms_per_step_min"].get<double>(), c["ms_per_step"].get<double>());
    EXPECT_LE(c["ms_per_step"].get<double>(), c["ms_per_step_max"].get<double>());
    EXPECT_GT(c["x_fp16"].get<double>(), 0.0);
    if (c["method"] == "fp16") {
      EXPECT_DOUBLE_EQ(c["x_fp16"].get<double>(), 1.0);
    }
  }
  EXPECT_EQ(measured, 3 * 3);  // batch 2 x 300 tokens needs 4 pages
  ASSERT_EQ(j["max_context"].size(), 3u);
  for (const auto& x : j["max_context"]) {
    SCOPED_TRACE(x.dump());
    EXPECT_EQ(x["tokens"].get<int64_t>(), 512 - 3);  // the pool, less the warm-up and steps
    EXPECT_FALSE(x["model_bound"].get<bool>());
    EXPECT_GT(x["tokens_per_s"].get<double>(), 0.0);
  }
}

TEST(BenchE2e, BadFlags) {
  const std::string cpu = "bench e2e --preset tiny --device cpu --dtype fp32";
  test::expect_one_line_error(run_kvq("bench e2e --preset 13b --device cpu"), "bench e2e",
                              "--preset: expected 7b or tiny, found '13b'");
  test::expect_one_line_error(run_kvq(cpu + " --contexts 0"), "bench e2e", "--contexts");
  test::expect_one_line_error(run_kvq(cpu + " --batches 1,0"), "bench e2e", "--batches");
  test::expect_one_line_error(run_kvq(cpu + " --methods nuq3,nuq9"), "bench e2e", "'nuq9'");
  test::expect_one_line_error(run_kvq(cpu + " --methods nuq3,nuq3"), "bench e2e",
                              "--methods: 'nuq3' is given twice");
  test::expect_one_line_error(run_kvq(cpu + " --contexts 64,128,64"), "bench e2e",
                              "--contexts: '64' is given twice");
  test::expect_one_line_error(run_kvq(cpu + " --batches 1,1"), "bench e2e",
                              "--batches: '1' is given twice");
  test::expect_one_line_error(run_kvq(cpu + " --steps 0"), "bench e2e", "--steps");
  test::expect_one_line_error(run_kvq(cpu + " --contexts 9223372036854775807"), "bench e2e",
                              "--contexts: expected 1..2^26 tokens");
  test::expect_one_line_error(run_kvq(cpu + " --warmup 2147483647"), "bench e2e", "--warmup");
  test::expect_one_line_error(run_kvq("bench e2e --preset tiny --device tpu"), "bench e2e",
                              "--device");
  test::expect_one_line_error(run_kvq(cpu + " --json-file /nonexistent/dir/x.json"), "bench e2e",
                              "/nonexistent/dir");
  EXPECT_EQ(run_kvq(cpu + " --contexts abc").exit_code, 2);
}

}  // namespace
}  // namespace kvq
