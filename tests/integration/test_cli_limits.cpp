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

// CLI11 alone saturated a value past 2^63 to 2^63 - 1 and wrapped "-1" for an unsigned flag to
// 2^64 - 1; each is now a usage error (exit 2) naming the flag, before any file is read.
TEST(CliLimits, IntegerFlagsOutsideTheirTypeAreUsageErrors) {
  const std::string model = " --model /nonexistent/model";
  const struct {
    std::string cmd, args, message;
  } cases[] = {
      {"generate", model + " -n 99999999999999999999",
       "--n-tokens: expected an integer in -2^63..2^63 - 1, found 99999999999999999999"},
      {"generate", model + " --seed -1", "--seed: expected an integer >= 0, found -1"},
      {"generate", model + " --seed 18446744073709551616",
       "--seed: expected an integer in 0..2^64 - 1, found 18446744073709551616"},
      {"calibrate", model + " --data x --samples 1e30",
       "--samples: expected an integer, found 1e30"},
      {"reproduce", model + " --samples -99999999999999999999",
       "--samples: expected an integer in -2^63..2^63 - 1, found -99999999999999999999"},
      {"eval", model + " --data x --max-tokens 12abc",
       "--max-tokens: expected an integer, found 12abc"},
      {"bench kernels", " --contexts 4096,99999999999999999999",
       "--contexts: expected an integer in -2^63..2^63 - 1, found 99999999999999999999"},
      // A 32-bit flag past its range, and a number flag given text: CLI11's own conversion
      // errors, worded like the rest.
      {"serve", model + " --kv fp16 --port 99999999999",
       "--port: expected an integer in -2^31..2^31 - 1 (a 32-bit flag), found 99999999999"},
      {"generate", model + " --temperature warm", "--temperature: expected a number, found warm"},
  };
  for (const auto& c : cases) {
    const auto r = run_kvq(c.cmd + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args;
    EXPECT_EQ(r.out, "") << c.args;
    EXPECT_EQ(r.err, "kvq " + c.cmd + ": error: " + c.message + "\n");
  }
  // Usage errors CLI11 finds itself take the same one-line form.
  const auto r = run_kvq("eval --data x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "kvq eval: error: --model is required\n");
}

// A calib.h5 from fuzz_calib_h5 whose string attribute references an object past its global heap
// collection: libhdf5 1.10's H5HG_read copies from a wild pointer (SIGSEGV). kvq reads the whole
// file in a forked child first, so the file is refused with one line instead of a crash.
TEST(CliHdf5, AnAttributeThatCrashesLibhdf5IsRefused) {
  const std::string file =
      std::string(KVQ_TEST_SOURCE_DIR) + "/tests/data/hdf5-vlen-attr-heap-index.h5";
  const auto r = run_kvq("inspect " + quoted(file));
  expect_one_line_error(r, "inspect", "reading it crashed the HDF5 library");
}

}  // namespace
}  // namespace kvq
