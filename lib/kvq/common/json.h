// Strict JSON parsing for every JSON document kvq reads from outside (config.json, safetensors
// headers, model.safetensors.index.json, JSONL data): nlohmann keeps the last of duplicate keys,
// which would silently pick one of two conflicting values, so duplicates are rejected here.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace kvq {

// Parses [begin, end). Throws kvq::Error "<where>: expected unique keys, found 'KEY' twice in
// /PATH" (PATH names the enclosing object by its keys, "/" for the top level, array elements as
// [i]); a number past double's range throws "<where>: invalid JSON (number overflow parsing
// '1e400')"; other invalid JSON throws nlohmann::json::parse_error, which callers word for their
// file.
nlohmann::json parse_json_strict(const char* begin, const char* end, const std::string& where);
nlohmann::json parse_json_strict(const std::string& text, const std::string& where);

}  // namespace kvq
