// Temp file + fsync + rename, POSIX only. Not here: Windows (MoveFileEx), cross-device renames
// (the temp file is always in the final directory, so rename never crosses a device).
#include "kvq/artifact/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>

#include "kvq/common/error.h"

namespace kvq::artifact {

namespace {

std::atomic<unsigned long> g_counter{0};

// The live temp files, for the SIGINT/SIGTERM handler: a fixed array, since a handler may only
// call async-signal-safe functions (no allocation, no locks). A slot's path is written before its
// state turns kLive, so the handler never reads a half-written path.
constexpr int kMaxLiveTemps = 64;
constexpr size_t kMaxTempPath = 4096;
enum SlotState : int { kFree = 0, kClaimed = 1, kLive = 2 };
char g_temp_paths[kMaxLiveTemps][kMaxTempPath];
std::atomic<int> g_temp_state[kMaxLiveTemps];
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler reads g_temp_state");

extern "C" void unlink_temps_and_reraise(int sig) {
  for (int i = 0; i < kMaxLiveTemps; ++i) {
    if (g_temp_state[i].load() == kLive) ::unlink(g_temp_paths[i]);
  }
  // The default action (termination by this signal) keeps the exit status a shell expects.
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Installed on the first temp file, and only where the signal still has its default action: a
// command with its own handlers (kvq serve stops gracefully on SIGTERM) or an ignored SIGINT
// (nohup, a background job) keeps them.
void install_cleanup_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const int sig : {SIGINT, SIGTERM}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0) continue;
      if ((old.sa_flags & SA_SIGINFO) != 0 || old.sa_handler != SIG_DFL) continue;
      struct sigaction sa {};
      sa.sa_handler = unlink_temps_and_reraise;
      sigemptyset(&sa.sa_mask);
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

// Registers a temp path before the file exists; -1 if the table is full or the path too long
// (the file is then only removed by the destructor, as before).
int register_temp(const std::string& path) {
  install_cleanup_handlers();
  if (path.size() >= kMaxTempPath) return -1;
  for (int i = 0; i < kMaxLiveTemps; ++i) {
    int expected = kFree;
    if (g_temp_state[i].compare_exchange_strong(expected, kClaimed)) {
      std::memcpy(g_temp_paths[i], path.c_str(), path.size() + 1);
      g_temp_state[i].store(kLive);
      return i;
    }
  }
  return -1;
}

void unregister_temp(int slot) {
  if (slot >= 0) g_temp_state[slot].store(kFree);
}

// rename() would replace a device node, FIFO or socket by a regular file (as root, /dev/null).
void require_regular_or_absent(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    fail("{}: expected a regular file or a new name, found {}", path, file_kind(st.st_mode));
}

// fsync of a path opened read-only; works for regular files and, on Linux, directories.
int fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | flags);
  if (fd < 0) return errno;
  const int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

}  // namespace

std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

AtomicOutput::AtomicOutput(std::string final_path) : final_path_(std::move(final_path)) {
  if (final_path_.empty() || final_path_.back() == '/')
    fail("{}: expected an output file path, found a directory name", final_path_);
  const size_t slash = final_path_.rfind('/');
  dir_ = slash == std::string::npos ? "." : slash == 0 ? "/" : final_path_.substr(0, slash);
  const std::string name = slash == std::string::npos ? final_path_ : final_path_.substr(slash + 1);

  struct stat st {};
  if (::stat(dir_.c_str(), &st) != 0)
    fail("{}: output directory does not exist ({})", dir_, std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) fail("{}: expected an output directory, found a file", dir_);
  require_regular_or_absent(final_path_);

  temp_path_ = fmt::format("{}/.{}.tmp.{}.{}", dir_, name, static_cast<long>(::getpid()),
                           g_counter.fetch_add(1));
  slot_ = register_temp(temp_path_);
  // Creating the file is the only reliable writability test (access() says yes to root even
  // on read-only mounts).
  const int fd = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    unregister_temp(slot_);
    temp_path_.clear();
    fail("{}: output directory is not writable ({})", dir_, std::strerror(err));
  }
  ::close(fd);
}

AtomicOutput::~AtomicOutput() {
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
  if (!committed_) unregister_temp(slot_);
}

void AtomicOutput::commit() {
  KVQ_CHECK(!committed_, "commit() called twice for {}", final_path_);
  if (const int err = fsync_path(temp_path_, 0))
    fail("{}: cannot sync the temporary output file ({})", temp_path_, std::strerror(err));
  require_regular_or_absent(final_path_);  // again: the run took a while
  if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0)
    fail("{}: cannot rename {} over it ({})", final_path_, temp_path_, std::strerror(errno));
  committed_ = true;
  unregister_temp(slot_);
  // Makes the rename itself durable; a failure here loses nothing already visible.
  fsync_path(dir_, O_DIRECTORY);
}

void write_text_file_atomic(const std::string& path, const std::string& content) {
  write_text_files_atomic({{path, content}});
}

void write_text_files_atomic(const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<std::unique_ptr<AtomicOutput>> outs;
  // AtomicOutput's own errors name the directory; the caller knows the file by its path.
  std::string path;
  try {
    for (const auto& [file_path, content] : files) {
      path = file_path;
      outs.push_back(std::make_unique<AtomicOutput>(file_path));
      const std::string& temp = outs.back()->temp_path();
      std::FILE* f = std::fopen(temp.c_str(), "wb");
      if (f == nullptr) fail("cannot open {} ({})", temp, std::strerror(errno));
      const bool written = std::fwrite(content.data(), 1, content.size(), f) == content.size();
      const int write_errno = errno;
      if (std::fclose(f) != 0 || !written) {
        fail("cannot write {} ({})", temp, std::strerror(written ? errno : write_errno));
      }
    }
    for (size_t i = 0; i < outs.size(); ++i) {
      path = files[i].first;
      outs[i]->commit();
    }
  } catch (const Error& e) {
    fail("{}: cannot write file: {}", path, e.what());
  }
}

}  // namespace kvq::artifact
