// What every fuzz target shares: the input written to a file for the readers that take a path,
// and the one rule for outcomes. A reader may refuse bad bytes only by the exceptions it
// documents: kvq::Error (and std::runtime_error with a message, which it derives from) and, for
// invalid JSON, nlohmann::json::parse_error (common/json.h). Anything else escapes the target, so
// libFuzzer reports it as a crash, as it does for ASan/UBSan reports, leaks, timeouts and OOM.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace kvq::fuzz {

// A per-process file under $TMPDIR (or /dev/shm when it exists: no disk I/O) that holds the
// current input; removed at exit.
class InputFile {
 public:
  explicit InputFile(const std::string& name) {
    const char* tmp = std::getenv("TMPDIR");
    const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (tmp ? tmp : "/tmp");
    path_ = dir + "/kvq-fuzz-" + std::to_string(getpid()) + "-" + name;
  }
  ~InputFile() { std::remove(path_.c_str()); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // Replaces the file's contents with [data, data + size); returns its path.
  const std::string& write(const uint8_t* data, size_t size) {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    if (!out) {
      std::fprintf(stderr, "fuzz: cannot write %s\n", path_.c_str());
      std::abort();
    }
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `read`; the documented refusals are an expected outcome, anything else propagates.
template <typename F>
void expect_documented_errors(F&& read) {
  try {
    read();
  } catch (const std::runtime_error&) {  // kvq::Error and its kin: a one-line refusal
  } catch (const nlohmann::json::parse_error&) {
  }
}

// A failed property of a result the reader accepted: a finding.
#define KVQ_FUZZ_ASSERT(cond)                                                                \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "fuzz: %s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

}  // namespace kvq::fuzz
