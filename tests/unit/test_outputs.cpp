// Output paths and temp files (artifact/output_path.h, artifact/atomic_file.h): outputs that are
// not regular files or that are inputs are refused by name, several files are written all or
// none, and a SIGTERM or SIGINT removes the live temp files unless the command has its own
// handler.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <vector>

#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/output_path.h"
#include "support/test_support.h"

namespace kvq {
namespace {

using artifact::check_outputs;
using test::error_of;

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(OutputPaths, AbsentAndRegularFilesPassAndLeaveNothing) {
  test::TempDir tmp;
  test::write_file(tmp.file("old.h5"), "old");
  check_outputs({{"--out", tmp.file("new.h5")}, {"--csv", tmp.file("old.h5")}, {"--plot", ""}},
                {{"--data", tmp.file("data.txt")}});
  EXPECT_EQ(listing(tmp.path()), std::vector<std::string>{"old.h5"});
  EXPECT_EQ(test::read_file(tmp.file("old.h5")), "old");
}

TEST(OutputPaths, NonRegularTargetsAreRefusedByKind) {
  test::TempDir tmp;
  ASSERT_EQ(::mkfifo(tmp.file("fifo").c_str(), 0644), 0);
  std::filesystem::create_directory(tmp.file("dir"));
  std::filesystem::create_symlink(tmp.file("fifo"), tmp.file("link"));
  EXPECT_EQ(error_of([] {
              check_outputs({{"--out", "/dev/null"}}, {});
            }),
            "--out: /dev/null: expected a regular file or a new name, found a character device");
  EXPECT_EQ(error_of([&] {
              check_outputs({{"--out", tmp.file("fifo")}}, {});
            }),
            "--out: " + tmp.file("fifo") + ": expected a regular file or a new name, found a FIFO");
  EXPECT_EQ(
      error_of([&] {
        check_outputs({{"--out", tmp.file("dir")}}, {});
      }),
      "--out: " + tmp.file("dir") + ": expected a regular file or a new name, found a directory");
  EXPECT_EQ(error_of([&] {
              check_outputs({{"--out", tmp.file("link")}}, {});
            }),
            "--out: " + tmp.file("link") +
                ": expected a regular file or a new name, found a FIFO (through a symbolic link)");
  EXPECT_EQ(error_of([&] {
              check_outputs({{"--out", tmp.file("dir/")}}, {});
            }),
            "--out: " + tmp.file("dir/") + ": expected a file name, found a directory name");
  EXPECT_EQ(error_of([&] {
              check_outputs({{"--out", tmp.file("none/x.h5")}}, {});
            }),
            "--out: " + tmp.file("none/x.h5") + ": the directory " + tmp.file("none") +
                " does not exist");
  EXPECT_EQ(listing(tmp.path()), (std::vector<std::string>{"dir", "fifo", "link"}));
  struct stat st {};
  ASSERT_EQ(::stat(tmp.file("fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST(OutputPaths, AnInputOrAnotherOutputIsRefused) {
  test::TempDir tmp;
  test::write_file(tmp.file("data.txt"), "text");
  std::filesystem::create_directory(tmp.file("model"));
  test::write_file(tmp.file("model/config.json"), "{}");
  std::filesystem::create_symlink(tmp.file("model/config.json"), tmp.file("alias.json"));
  EXPECT_EQ(error_of([&] {
              check_outputs({{"--out", tmp.file("data.txt")}}, {{"--data", tmp.file("data.txt")}});
            }),
            "--out: " + tmp.file("data.txt") + ": is the input --data " + tmp.file("data.txt") +
                " (an output never replaces an input)");
  // Through a symbolic link, and a file inside a directory input: compared by device and inode.
  EXPECT_EQ(error_of([&] {
              check_outputs({{"--out", tmp.file("alias.json")}}, {{"--model", tmp.file("model")}});
            }),
            "--out: " + tmp.file("alias.json") + ": is the input --model " + tmp.file("model") +
                "/config.json (an output never replaces an input)");
  EXPECT_EQ(
      error_of([&] {
        check_outputs({{"--csv", tmp.file("r.svg")}, {"--plot", tmp.path() + "/./r.svg"}}, {});
      }),
      "--plot: " + tmp.path() +
          "/./r.svg: is also the output of --csv (each output needs "
          "its own file)");
  EXPECT_EQ(test::read_file(tmp.file("data.txt")), "text");
}

TEST(AtomicFiles, SeveralFilesAreWrittenAllOrNone) {
  test::TempDir tmp;
  ::mkfifo(tmp.file("fifo").c_str(), 0644);
  const std::string error = error_of([&] {
    artifact::write_text_files_atomic({{tmp.file("a.csv"), "a"}, {tmp.file("fifo"), "b"}});
  });
  EXPECT_EQ(error, tmp.file("fifo") + ": cannot write file: " + tmp.file("fifo") +
                       ": expected a regular file or a new name, found a FIFO");
  EXPECT_EQ(listing(tmp.path()), std::vector<std::string>{"fifo"});
  artifact::write_text_files_atomic({{tmp.file("a.csv"), "a"}, {tmp.file("b.svg"), "b"}});
  EXPECT_EQ(test::read_file(tmp.file("b.svg")), "b");
}

// In a child: a live temp file, then `sig`. Returns how the child ended (waitpid status).
int die_with_live_temp(const std::string& final_path, int sig, bool own_handler) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (own_handler) std::signal(sig, [](int) { ::_exit(42); });
    artifact::AtomicOutput out(final_path);
    ::raise(sig);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST(AtomicFiles, SigtermAndSigintRemoveTheTempFileAndStillEndTheProcess) {
  for (const int sig : {SIGTERM, SIGINT}) {
    test::TempDir tmp;
    const int status = die_with_live_temp(tmp.file("calib.h5"), sig, /*own_handler=*/false);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << status;
    EXPECT_TRUE(listing(tmp.path()).empty()) << listing(tmp.path()).front();
  }
}

// kvq serve installs its own SIGINT/SIGTERM handlers (graceful shutdown): they are kept.
TEST(AtomicFiles, AHandlerTheCommandInstalledIsKept) {
  test::TempDir tmp;
  const int status = die_with_live_temp(tmp.file("x.json"), SIGTERM, /*own_handler=*/true);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 42) << status;
}

}  // namespace
}  // namespace kvq
