// Writing a file under its final name only once it is complete: the writer fills a temporary
// file in the same directory, commit() renames it over the final path, and an uncommitted temp
// file is removed, so a crash or an exception never leaves a half-written artifact behind.
// write_text_file_atomic does all of it for content held in memory (tables, CSV, JSON, SVG).
// A temp file is also removed when SIGINT or SIGTERM ends the process: the first AtomicOutput
// installs a handler that unlinks the live temp files and re-raises the signal with its default
// action, unless the signal already has a handler (kvq serve's) or is ignored.
// Not here: locking against concurrent writers of the same final path (last commit wins).
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace kvq::artifact {

// Usage:
//   AtomicOutput out(path);
//   { File f = File::create(out.temp_path()); ...write...; f.close(); }
//   out.commit();
class AtomicOutput {
 public:
  // Creates the empty temp file ".<name>.tmp.<pid>.<counter>" next to `final_path`, which proves
  // up front that the directory exists and is writable; errors name the directory. A
  // `final_path` that exists and is not a regular file (a device node, FIFO, directory, also
  // through a symbolic link) is an error, here and again at commit().
  explicit AtomicOutput(std::string final_path);
  // Removes the temp file unless commit() succeeded; never throws.
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& temp_path() const { return temp_path_; }
  const std::string& final_path() const { return final_path_; }
  bool committed() const { return committed_; }

  // fsyncs the temp file, renames it over final_path (replacing any existing file) and fsyncs
  // the directory. The writer must have closed the temp file first.
  void commit();

 private:
  std::string final_path_, dir_, temp_path_;
  bool committed_ = false;
  int slot_ = -1;  // in the table of temp files removed on SIGINT/SIGTERM, -1 if not
};

// Writes `content` (any bytes) to `path` through an AtomicOutput, so readers never see a partial
// file. Throws kvq::Error "<path>: cannot write file: <why>".
void write_text_file_atomic(const std::string& path, const std::string& content);

// Several files (path, content) written together: every temp file is created and filled before
// the first is renamed, so a failure to write any of them leaves none of them behind.
void write_text_files_atomic(const std::vector<std::pair<std::string, std::string>>& files);

// What a file that is not a regular one is, for messages: "a directory", "a FIFO", ... (stat's
// st_mode). AtomicOutput and check_outputs (output_path.h) refuse such targets by this name.
std::string file_kind(mode_t mode);

}  // namespace kvq::artifact
