// Temp file + fsync + rename, POSIX only. Not here: Windows (MoveFileEx), cross-device renames
// (the temp file is always in the final directory, so rename never crosses a device).
#include "kvq/artifact/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "kvq/common/error.h"

namespace kvq::artifact {

namespace {

std::atomic<unsigned long> g_counter{0};

// fsync of a path opened read-only; works for regular files and, on Linux, directories.
int fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | flags);
  if (fd < 0) return errno;
  const int rc = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

}  // namespace

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

  temp_path_ = fmt::format("{}/.{}.tmp.{}.{}", dir_, name, static_cast<long>(::getpid()),
                           g_counter.fetch_add(1));
  // Creating the file is the only reliable writability test (access() says yes to root even
  // on read-only mounts).
  const int fd = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    temp_path_.clear();
    fail("{}: output directory is not writable ({})", dir_, std::strerror(err));
  }
  ::close(fd);
}

AtomicOutput::~AtomicOutput() {
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicOutput::commit() {
  KVQ_CHECK(!committed_, "commit() called twice for {}", final_path_);
  if (const int err = fsync_path(temp_path_, 0))
    fail("{}: cannot sync the temporary output file ({})", temp_path_, std::strerror(err));
  if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0)
    fail("{}: cannot rename {} over it ({})", final_path_, temp_path_, std::strerror(errno));
  committed_ = true;
  // Makes the rename itself durable; a failure here loses nothing already visible.
  fsync_path(dir_, O_DIRECTORY);
}

void write_text_file_atomic(const std::string& path, const std::string& content) {
  // AtomicOutput's own errors name the directory; the caller knows the file by `path`.
  try {
    AtomicOutput out(path);
    std::FILE* f = std::fopen(out.temp_path().c_str(), "wb");
    if (f == nullptr) fail("cannot open {} ({})", out.temp_path(), std::strerror(errno));
    const bool written = std::fwrite(content.data(), 1, content.size(), f) == content.size();
    const int write_errno = errno;
    if (std::fclose(f) != 0 || !written) {
      fail("cannot write {} ({})", out.temp_path(), std::strerror(written ? errno : write_errno));
    }
    out.commit();
  } catch (const Error& e) {
    fail("{}: cannot write file: {}", path, e.what());
  }
}

}  // namespace kvq::artifact
