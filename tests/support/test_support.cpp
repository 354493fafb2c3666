#include "support/test_support.h"

#include <gtest/gtest.h>

#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace kvq::test {

std::string data_dir() {
  const char* env = std::getenv("KVQ_DATA_DIR");
  return env ? env : KVQ_TEST_DATA_DIR;
}

std::string data_path(const std::string& relative) { return data_dir() + "/" + relative; }

bool have_data(const std::string& relative) { return std::filesystem::exists(data_path(relative)); }

std::string source_dir() { return KVQ_TEST_SOURCE_DIR; }

TempDir::TempDir() {
  std::string templ = (std::filesystem::temp_directory_path() / "kvq-test-XXXXXX").string();
  if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed for " + templ);
  path_ = templ;
}

TempDir::~TempDir() {
  // nftw rather than std::filesystem::remove_all, which crashes in test binaries linked with
  // the GPU machine's LibTorch 2.11 (seen in tests/gpu/test_runtime_cuda.cpp).
  nftw(
      path_.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) {
        (void)::remove(p);  // best effort, as remove_all with an error_code was
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string kvq_bin() {
  const char* env = std::getenv("KVQ_BIN");
  return env ? env : KVQ_TEST_BIN;
}

CommandResult run_kvq(const std::string& args) {
  const std::string bin = kvq_bin();
  TempDir tmp;
  const std::string out_path = tmp.file("stdout"), err_path = tmp.file("stderr");
  const std::string cmd =
      std::string("'") + bin + "' " + args + " >'" + out_path + "' 2>'" + err_path + "' </dev/null";
  const int status = std::system(cmd.c_str());
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

}  // namespace kvq::test

namespace kvq::test {

void expect_one_line_error(const CommandResult& r, const std::string& cmd,
                           const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  EXPECT_EQ(r.err.rfind("kvq " + cmd + ": error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
}

}  // namespace kvq::test
