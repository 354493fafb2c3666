// Reading a whole JSON file (config.json, model.safetensors.index.json) with one-line errors.
// Internal to kvq/model/io; callers outside it get parsed structs instead.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace kvq::model {

// Throws kvq::Error "<path>: cannot open (...)", "<path>: expected JSON, found invalid JSON at
// byte N" (nlohmann's own message quotes raw input, which may span lines) or, for a key given
// twice, "<path>: expected unique keys, found 'KEY' twice in /PATH".
nlohmann::json read_json_file(const std::string& path);

}  // namespace kvq::model
