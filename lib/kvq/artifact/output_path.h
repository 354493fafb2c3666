// Output paths checked before a run does any work, so a run never replaces something that is not
// its own output: the parent directory exists and is writable, the target is absent or a regular
// file (never a device node, FIFO, socket or directory, also through a symbolic link), and it is
// neither one of the run's inputs (by device and inode) nor another output of the same run.
// Not here: the writing itself (atomic_file.h), which checks the target's type once more.
#pragma once

#include <string>
#include <vector>

namespace kvq::artifact {

// A path as the user named it: the flag it came from ("--out", "--data") and the path.
struct NamedPath {
  std::string flag;
  std::string path;
};

// Checks every output against the rules above, against every input and against each other.
// Empty paths are skipped (an optional flag not given). An input that is a directory (a model
// folder, the Brown corpus) stands for the regular files directly in it. Throws kvq::Error
// "<flag>: <path>: <what>", e.g. "--out: /dev/null: expected a regular file or a new name, found
// a character device"; creates nothing that outlives the call.
void check_outputs(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs);

}  // namespace kvq::artifact
