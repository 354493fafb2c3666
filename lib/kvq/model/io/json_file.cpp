// read_json_file: the shared error handling for the JSON files of a model directory.
#include "kvq/model/io/json_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "kvq/common/error.h"
#include "kvq/common/json.h"
#include "kvq/common/limits.h"

namespace kvq::model {

nlohmann::json read_json_file(const std::string& path) {
  require_regular_file(path, path);  // a FIFO would block the open
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open ({})", path, std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: cannot read ({})", path, std::strerror(errno));
  try {
    return parse_json_strict(text, path);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: expected JSON, found invalid JSON at byte {}", path, e.byte);
  }
}

}  // namespace kvq::model
