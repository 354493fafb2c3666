// Every subcommand's output paths are checked before any work and nothing is written by a run
// that fails: a device node, FIFO, directory or a link to one, an input (--data, --calib, a file
// of --model) or another output named as an output is refused with one line, exit 1, and the
// folder exactly as it was (names, sizes, modification times).
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <string>
#include <tuple>

#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace kvq {
namespace {

using test::data_path;
using test::expect_one_line_error;
using test::kModel1m;
using test::quoted;
using test::run_kvq;

// name -> (type, size, mtime in ns) of everything directly in `dir`.
using Listing = std::map<std::string, std::tuple<int, int64_t, int64_t>>;
Listing listing(const std::string& dir) {
  Listing out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    out[e.path().filename().string()] = {static_cast<int>(st.st_mode & S_IFMT),
                                         static_cast<int64_t>(st.st_size),
                                         st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
  }
  return out;
}

class OutputsCli : public ::testing::Test {
 protected:
  void SetUp() override {
    KVQ_REQUIRE_DATA(kModel1m);
    test::write_file(tmp_.file("data.txt"), "The cat sat on the mat .\n");
    test::write_file(tmp_.file("calib.h5"), "a calib.h5 the run must not replace");
    ASSERT_EQ(::mkfifo(tmp_.file("fifo").c_str(), 0644), 0);
    std::filesystem::create_directory(tmp_.file("dir"));
    std::filesystem::create_symlink(tmp_.file("fifo"), tmp_.file("link"));
    // A link to the model's config.json: refused as an input, so the shared file is never at risk
    // (had the check failed, the rename would replace the link, not the file).
    std::filesystem::create_symlink(data_path(kModel1m) + "/config.json", tmp_.file("config"));
    before_ = listing(tmp_.path());
  }
  // The command failed with exactly `message` after "kvq <cmd>: error: " and touched nothing.
  void expect_refused(const std::string& cmd, const std::string& args, const std::string& message) {
    const auto r = run_kvq(cmd + " " + args);
    expect_one_line_error(r, cmd, message);
    EXPECT_EQ(r.err, "kvq " + cmd + ": error: " + message + "\n");
    EXPECT_EQ(listing(tmp_.path()), before_) << args;
  }
  std::string model() const { return quoted(data_path(kModel1m)); }
  std::string file(const std::string& name) const { return tmp_.file(name); }

  test::TempDir tmp_;
  Listing before_;
};

TEST_F(OutputsCli, CalibrateRefusesOutputsThatAreNotNewOrRegularFiles) {
  const std::string base = "--model " + model() + " --data " + quoted(file("data.txt")) + " --out ";
  const std::string kind = ": expected a regular file or a new name, found ";
  expect_refused("calibrate", base + "/dev/null", "--out: /dev/null" + kind + "a character device");
  expect_refused("calibrate", base + quoted(file("fifo")),
                 "--out: " + file("fifo") + kind + "a FIFO");
  expect_refused("calibrate", base + quoted(file("dir")),
                 "--out: " + file("dir") + kind + "a directory");
  expect_refused("calibrate", base + quoted(file("link")),
                 "--out: " + file("link") + kind + "a FIFO (through a symbolic link)");
  expect_refused(
      "calibrate", base + quoted(file("none/calib.h5")),
      "--out: " + file("none/calib.h5") + ": the directory " + file("none") + " does not exist");
  struct stat st {};
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
}

TEST_F(OutputsCli, CalibrateAndFitNeverReplaceAnInput) {
  const std::string never = " (an output never replaces an input)";
  expect_refused(
      "calibrate",
      "--model " + model() + " --data " + quoted(file("data.txt")) + " --out " +
          quoted(file("data.txt")),
      "--out: " + file("data.txt") + ": is the input --data " + file("data.txt") + never);
  expect_refused("calibrate",
                 "--model " + model() + " --data " + quoted(file("data.txt")) + " --out " +
                     quoted(file("config")),
                 "--out: " + file("config") + ": is the input --model " + data_path(kModel1m) +
                     "/config.json" + never);
  expect_refused(
      "fit",
      "--method nuq3 --calib " + quoted(file("calib.h5")) + " --out " + quoted(file("calib.h5")),
      "--out: " + file("calib.h5") + ": is the input --calib " + file("calib.h5") + never);
  expect_refused("fit",
                 "--method int4-token --model " + model() + " --out " + quoted(file("config")),
                 "--out: " + file("config") + ": is the input --model " + data_path(kModel1m) +
                     "/config.json" + never);
  expect_refused(
      "fit", "--method int4-token --out /dev/null",
      "--out: /dev/null: expected a regular file or a new name, found a character device");
}

// Both outputs are checked before the model is loaded, and written together at the end.
TEST_F(OutputsCli, EvalChecksCsvAndPlotBeforeTheRun) {
  const std::string base = "--model " + model() + " --data " + quoted(file("data.txt")) +
                           " --methods int4-token --quiet --csv " + quoted(file("r.csv"));
  expect_refused(
      "eval", base + " --plot " + quoted(file("none/r.svg")),
      "--plot: " + file("none/r.svg") + ": the directory " + file("none") + " does not exist");
  expect_refused("eval",
                 "--model " + model() + " --data " + quoted(file("data.txt")) +
                     " --methods int4-token --csv " + quoted(file("r.csv.svg")) + " --plot " +
                     quoted(tmp_.path() + "/./r.csv.svg"),
                 "--plot: " + tmp_.path() +
                     "/./r.csv.svg: is also the output of --csv (each "
                     "output needs its own file)");
  expect_refused("eval",
                 "--model " + model() + " --data " + quoted(file("data.txt")) +
                     " --methods int4-token --csv " + quoted(file("data.txt")),
                 "--csv: " + file("data.txt") + ": is the input --data " + file("data.txt") +
                     " (an output never replaces an input)");
}

TEST_F(OutputsCli, ReproduceReadsEveryInputBeforeCreatingItsFolder) {
  expect_refused("reproduce",
                 "--model " + model() + " --train " + quoted(file("data.txt")) + " --data " +
                     quoted(file("missing.txt")) + " --out-dir " + quoted(file("run")),
                 "--data: " + file("missing.txt") + ": no such file or directory");
  expect_refused("reproduce",
                 "--model " + model() + " --train " + quoted(file("data.txt")) + " --data " +
                     quoted(file("data.txt")) + " --out-dir " + quoted(file("calib.h5")),
                 "--out-dir: " + file("calib.h5") + ": expected a directory");
  // Window lengths the model cannot take are refused before the calibration runs, each naming
  // its own flag (the calibration's was reported as --seq-len, and the evaluation's only after
  // calibrating).
  const std::string base = "--model " + model() + " --train " + quoted(file("data.txt")) +
                           " --data " + quoted(file("data.txt")) + " --out-dir " +
                           quoted(file("run"));
  expect_refused("reproduce", base + " --calib-seq-len 1",
                 "--calib-seq-len: expected at least 2 tokens, found 1");
  expect_refused(
      "reproduce", base + " --seq-len 99999",
      "--seq-len: 99999 exceeds the context of 512 tokens of the model at " + data_path(kModel1m));
}

TEST_F(OutputsCli, BenchJsonFileIsCheckedBeforeTheBenchmark) {
  expect_refused(
      "bench e2e", "--preset tiny --device cpu --json-file " + quoted(file("fifo")),
      "--json-file: " + file("fifo") + ": expected a regular file or a new name, found a FIFO");
  expect_refused(
      "bench serve", "--url http://127.0.0.1:1 --json-file " + quoted(file("dir")),
      "--json-file: " + file("dir") + ": expected a regular file or a new name, found a directory");
}

// A path that is not UTF-8 is legal on Linux: --json prints it with U+FFFD in its place instead
// of failing with a JSON library error after the artifact was committed.
TEST_F(OutputsCli, JsonNamesAPathThatIsNotUtf8) {
  const std::string out = file("q\xff.h5");
  const auto r = run_kvq("fit --method int4-token --json --out " + quoted(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["file"], file("q\xef\xbf\xbd.h5"));
  EXPECT_TRUE(std::filesystem::is_regular_file(out));
}

}  // namespace
}  // namespace kvq
