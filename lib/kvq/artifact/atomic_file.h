// Writing a file under its final name only once it is complete: the writer fills a temporary
// file in the same directory, commit() renames it over the final path, and an uncommitted temp
// file is removed, so a crash or an exception never leaves a half-written artifact behind.
// write_text_file_atomic does all of it for content held in memory (tables, CSV, JSON, SVG).
// Not here: locking against concurrent writers of the same final path (last commit wins).
#pragma once

#include <string>

namespace kvq::artifact {

// Usage:
//   AtomicOutput out(path);
//   { File f = File::create(out.temp_path()); ...write...; f.close(); }
//   out.commit();
class AtomicOutput {
 public:
  // Creates the empty temp file ".<name>.tmp.<pid>.<counter>" next to `final_path`, which proves
  // up front that the directory exists and is writable; errors name the directory.
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
};

// Writes `content` (any bytes) to `path` through an AtomicOutput, so readers never see a partial
// file. Throws kvq::Error "<path>: cannot write file: <why>".
void write_text_file_atomic(const std::string& path, const std::string& content);

}  // namespace kvq::artifact
