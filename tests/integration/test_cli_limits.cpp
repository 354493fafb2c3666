// Counts from flags are checked against the model or a stated maximum before any work, so size
// arithmetic (prompt + -n, samples x sequence length) cannot overflow: one line, exit 1, no
// output and no file.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/test_support.h"

namespace kvq {
namespace {

using test::data_path;
using test::expect_one_line_error;
using test::kModel1m;
using test::quoted;
using test::run_kvq;

TEST(CliLimits, GenerateTokensAreBoundedByTheContext) {
  KVQ_REQUIRE_DATA(kModel1m);
  const std::string base = "generate --model " + quoted(data_path(kModel1m)) + " --prompt 'The'";
  for (const std::string n : {"9223372036854775807", "513"}) {
    const auto r = run_kvq(base + " -n " + n);
    expect_one_line_error(r, "generate", "");
    EXPECT_EQ(r.err,
              "kvq generate: error: -n: expected 1..512 (the model's context), found " + n + "\n");
  }
}

TEST(CliLimits, CalibrationSamplesHaveAStatedMaximum) {
  KVQ_REQUIRE_DATA(kModel1m);
  test::TempDir tmp;
  test::write_file(tmp.file("data.txt"), "The cat sat on the mat .\n");
  for (const std::string cmd : {"calibrate", "reproduce"}) {
    const std::string out = cmd == "calibrate" ? " --out " + quoted(tmp.file("c.h5"))
                                               : " --out-dir " + quoted(tmp.file("run"));
    const auto r = run_kvq(cmd + " --model " + quoted(data_path(kModel1m)) + " --data " +
                           quoted(tmp.file("data.txt")) + " --samples 9223372036854775807" + out);
    expect_one_line_error(r, cmd, "");
    EXPECT_EQ(r.err, "kvq " + cmd +
                         ": error: --samples: expected 1..1048576, found 9223372036854775807\n");
  }
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp.path()),
                          std::filesystem::directory_iterator()),
            1);
}

}  // namespace
}  // namespace kvq
