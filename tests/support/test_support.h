// Shared helpers for kvq's tests: where the real data is, temporary directories, running the
// built kvq binary.
#pragma once

#include <functional>
#include <string>

#include "kvq/common/error.h"

namespace kvq::test {

// The shared models and data sets ($KVQ_DATA_DIR, else the build's KVQ_DATA_DIR). Tests that
// need them call data_path("models/wt2-llama-1m") and skip with a reason if it is absent.
std::string data_dir();
// The shared models and splits the integration tests use, relative to data_dir().
inline const std::string kModel1m = "models/wt2-llama-1m";
inline const std::string kModel18m = "models/wt2-llama-18m";
inline const std::string kTrain = "wikitext-2/wiki.train.tokens";
inline const std::string kTest = "wikitext-2/wiki.test.tokens";
// The small split (1.1 MB): calibrations that only need to exist, for the fixtures (encoding
// wiki.train alone takes ~20 s on 2 cores, and every test process sets its suite up again).
inline const std::string kValid = "wikitext-2/wiki.valid.tokens";
std::string data_path(const std::string& relative);
bool have_data(const std::string& relative);
// The source tree (for the small files under tests/data).
std::string source_dir();

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// The message of the kvq::Error that `f` throws, "<no error>" if it returns, and
// "<multi-line> ..." if the message breaks the one-line rule.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const kvq::Error& e) {
    const std::string what = e.what();
    return what.find('\n') == std::string::npos ? what : "<multi-line> " + what;
  }
  return "<no error>";
}

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// The built kvq binary: $KVQ_BIN, else the one this build made.
std::string kvq_bin();
// Runs kvq_bin() with `args` (already shell-quoted where needed).
CommandResult run_kvq(const std::string& args);

// 'path' for a shell command line.
inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

// Expects exit code 1, nothing on stdout, and one line on stderr starting "kvq <cmd>: error: "
// and containing `needle`.
void expect_one_line_error(const CommandResult& r, const std::string& cmd,
                           const std::string& needle);

}  // namespace kvq::test

#define KVQ_REQUIRE_DATA(relative)                                                  \
  do {                                                                              \
    if (!::kvq::test::have_data(relative))                                          \
      GTEST_SKIP() << "shared data not found: " << ::kvq::test::data_path(relative) \
                   << " (set KVQ_DATA_DIR)";                                        \
  } while (0)
