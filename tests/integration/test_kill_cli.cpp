// Killing kvq calibrate and kvq fit at seeded random points (SIGTERM and SIGKILL, a handful
// each) leaves at --out either the previous complete artifact or the new complete one (kvq
// inspect accepts it), never a partial file; after SIGTERM no temp file ".NAME.tmp.PID.N" is
// left. After SIGKILL one may be (nothing can run on SIGKILL); it never has the final name.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace kvq {
namespace {

using test::data_path;
using test::kModel1m;
using test::quoted;
using test::run_kvq;

std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) out.push_back(name);
  }
  return out;
}

// Starts kvq with `args`, its output to /dev/null.
pid_t spawn_kvq(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::FILE* null = std::fopen("/dev/null", "w");
    ::dup2(fileno(null), 1);
    ::dup2(fileno(null), 2);
    std::vector<char*> argv;
    const std::string bin = test::kvq_bin();
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

double run_seconds(const std::vector<std::string>& args) {
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  ::waitpid(spawn_kvq(args), &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Kills `make_args(i)` runs at random points of their run time and checks --out after each.
void kill_at_random_points(const test::TempDir& tmp, const std::string& out,
                           const std::function<std::vector<std::string>(int)>& make_args) {
  const double seconds = run_seconds(make_args(0));  // the previous complete file
  std::mt19937 rng(16);
  std::uniform_real_distribution<double> when(0.0, seconds);
  for (int i = 1; i <= 6; ++i) {
    const int sig = i % 2 == 1 ? SIGTERM : SIGKILL;
    const double delay = when(rng);
    const pid_t pid = spawn_kvq(make_args(i));
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    SCOPED_TRACE("run " + std::to_string(i) + ": signal " + std::to_string(sig) + " after " +
                 std::to_string(delay) + " s");
    const auto inspected = run_kvq("inspect " + quoted(out));
    EXPECT_EQ(inspected.exit_code, 0) << inspected.err;
    // Either the previous file, or a run that got as far as its rename (possibly killed while
    // printing afterwards) and left the new one: inspect accepting it shows it is complete.
    // (Which one is checked exactly by the kill while writing below.)
    if (sig == SIGTERM) {
      EXPECT_TRUE(temp_files(tmp.path()).empty()) << temp_files(tmp.path()).front();
    }
    for (const std::string& name : temp_files(tmp.path()))
      std::filesystem::remove(tmp.file(name));  // SIGKILL's, so the next SIGTERM is judged alone
  }
}

// SIGTERM the moment the temp file has content, i.e. while the artifact is being written (the
// random points above mostly fall in the computation). True if SIGTERM ended the run.
bool sigterm_while_writing(const test::TempDir& tmp, const std::string& out_name,
                           const std::vector<std::string>& args) {
  const pid_t pid = spawn_kvq(args);
  const std::string prefix = "." + out_name + ".tmp.";
  bool caught = false;
  int status = 0;
  while (!caught && ::waitpid(pid, &status, WNOHANG) == 0) {
    for (const auto& e : std::filesystem::directory_iterator(tmp.path())) {
      std::error_code ec;
      if (e.path().filename().string().rfind(prefix, 0) == 0 && e.file_size(ec) > 0 && !ec) {
        caught = true;
        break;
      }
    }
    if (!caught) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!caught) return false;
  ::kill(pid, SIGTERM);
  ::waitpid(pid, &status, 0);
  // A run may still win the race to its rename (then it exits 0 with the new file): not counted.
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM;
}

void expect_sigterm_while_writing_leaves_the_old_file(
    const test::TempDir& tmp, const std::string& out,
    const std::function<std::vector<std::string>(int)>& make_args) {
  const std::string name = std::filesystem::path(out).filename().string();
  int caught = 0;
  for (int i = 0; i < 5 && caught < 2; ++i) {
    const std::string before = test::read_file(out);
    if (!sigterm_while_writing(tmp, name, make_args(100 + i))) continue;
    ++caught;
    EXPECT_EQ(test::read_file(out), before) << "a run killed while writing replaced the file";
    EXPECT_TRUE(temp_files(tmp.path()).empty()) << temp_files(tmp.path()).front();
  }
  // The write takes tens of milliseconds and the poll is sub-millisecond: missing it five times
  // means the temp file is not where AtomicOutput says it is.
  EXPECT_GT(caught, 0) << "never saw " << out << "'s temp file with content";
}

TEST(KillCli, CalibrateLeavesTheOldOrTheNewFile) {
  KVQ_REQUIRE_DATA(kModel1m);
  test::TempDir tmp;
  // 64 KB of the validation split: a run of a second or two, most of it calibrating and writing.
  test::write_file(tmp.file("data.txt"), test::read_file(data_path(test::kValid)).substr(0, 65536));
  const std::string out = tmp.file("calib.h5");
  const auto args = [&](int i) {
    return std::vector<std::string>{"calibrate",
                                    "--model",
                                    data_path(kModel1m),
                                    "--data",
                                    tmp.file("data.txt"),
                                    "--samples",
                                    "4",
                                    "--seq-len",
                                    "128",
                                    "--seed",
                                    std::to_string(i),
                                    "--device",
                                    "cpu",
                                    "--quiet",
                                    "--out",
                                    out};
  };
  kill_at_random_points(tmp, out, args);
  expect_sigterm_while_writing_leaves_the_old_file(tmp, out, args);
}

TEST(KillCli, FitLeavesTheOldOrTheNewFile) {
  KVQ_REQUIRE_DATA(kModel1m);
  test::TempDir tmp;
  test::write_file(tmp.file("data.txt"), test::read_file(data_path(test::kValid)).substr(0, 65536));
  const auto calib = run_kvq("calibrate --model " + quoted(data_path(kModel1m)) + " --data " +
                             quoted(tmp.file("data.txt")) +
                             " --samples 4 --seq-len 128 --device cpu --quiet --out " +
                             quoted(tmp.file("calib.h5")));
  ASSERT_EQ(calib.exit_code, 0) << calib.err;
  const std::string out = tmp.file("quant.h5");
  const auto args = [&](int i) {
    // Alternating methods, so a completed run changes the file.
    return std::vector<std::string>{
        "fit",   "--calib", tmp.file("calib.h5"), "--method", i % 2 == 0 ? "nuq3-1%" : "nuq4-1%",
        "--out", out};
  };
  kill_at_random_points(tmp, out, args);
  expect_sigterm_while_writing_leaves_the_old_file(tmp, out, args);
}

}  // namespace
}  // namespace kvq
