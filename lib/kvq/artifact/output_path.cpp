// POSIX stat()/lstat() checks of output paths (output_path.h).
#include "kvq/artifact/output_path.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "kvq/artifact/atomic_file.h"
#include "kvq/common/error.h"

namespace kvq::artifact {

namespace {

// A directory input is compared file by file; a corpus folder has hundreds, not millions.
constexpr int kMaxFilesPerInputDir = 100000;

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// The input's regular file (itself, or those directly in it if it is a directory) that is the
// same file as `out`, or "" if none.
std::string input_matching(const std::string& input, const struct stat& out) {
  struct stat st {};
  if (::stat(input.c_str(), &st) != 0) return "";
  if (S_ISREG(st.st_mode)) return same_file(st, out) ? input : "";
  if (!S_ISDIR(st.st_mode)) return "";
  DIR* dir = ::opendir(input.c_str());
  if (dir == nullptr) return "";
  std::string found;
  int n = 0;
  for (dirent* e = ::readdir(dir); e != nullptr && found.empty() && n < kMaxFilesPerInputDir;
       e = ::readdir(dir), ++n) {
    const std::string path = input + "/" + e->d_name;
    struct stat f {};
    if (::stat(path.c_str(), &f) == 0 && S_ISREG(f.st_mode) && same_file(f, out)) found = path;
  }
  ::closedir(dir);
  return found;
}

// The same path spelled differently ("./a.csv", "a.csv") for a file that does not exist yet.
std::string normal_form(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

void check_one(const NamedPath& out, const std::vector<NamedPath>& inputs) {
  const std::string& path = out.path;
  if (path.back() == '/')
    fail("{}: {}: expected a file name, found a directory name", out.flag, path);
  const std::string dir = parent_dir(path);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    fail("{}: {}: the directory {} does not exist", out.flag, path, dir);
  if (!S_ISDIR(st.st_mode)) fail("{}: {}: {} is not a directory", out.flag, path, dir);

  struct stat link {};
  if (::lstat(path.c_str(), &link) == 0) {
    const bool is_link = S_ISLNK(link.st_mode);
    struct stat target {};
    // A dangling link is replaced by the new file, like an absent one.
    if (::stat(path.c_str(), &target) == 0) {
      if (!S_ISREG(target.st_mode)) {
        fail("{}: {}: expected a regular file or a new name, found {}{}", out.flag, path,
             file_kind(target.st_mode), is_link ? " (through a symbolic link)" : "");
      }
      for (const NamedPath& in : inputs) {
        if (in.path.empty()) continue;
        const std::string match = input_matching(in.path, target);
        if (!match.empty()) {
          fail("{}: {}: is the input {} {} (an output never replaces an input)", out.flag, path,
               in.flag, match);
        }
      }
    }
  }
  // Creating (and removing) a file is the only reliable writability test (access() says yes to
  // root on a read-only mount).
  try {
    AtomicOutput probe(path);
  } catch (const Error& e) {
    fail("{}: {}: {}", out.flag, path, e.what());
  }
}

}  // namespace

void check_outputs(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].path.empty()) continue;
    check_one(outputs[i], inputs);
    for (size_t j = 0; j < i; ++j) {
      if (outputs[j].path.empty()) continue;
      struct stat a {
      }, b{};
      const bool same =
          (::stat(outputs[i].path.c_str(), &a) == 0 && ::stat(outputs[j].path.c_str(), &b) == 0)
              ? same_file(a, b)
              : normal_form(outputs[i].path) == normal_form(outputs[j].path);
      if (same) {
        fail("{}: {}: is also the output of {} (each output needs its own file)", outputs[i].flag,
             outputs[i].path, outputs[j].flag);
      }
    }
  }
}

}  // namespace kvq::artifact
