// parse_json_strict: nlohmann's parser callback sees every key in order, which lets a stack of
// per-object key sets catch duplicates that the finished json value can no longer show.
#include "kvq/common/json.h"

#include <set>
#include <vector>

#include "kvq/common/error.h"

namespace kvq {

namespace {

using nlohmann::json;

// One open object or array: its keys so far (objects) or the next index (arrays), and the name
// its parent gave it, for the path in the message.
struct Frame {
  bool is_object;
  std::string name;
  std::set<std::string> keys;
  std::string last_key;
  size_t n_items = 0;
};

std::string frame_path(const std::vector<Frame>& stack) {
  std::string p;
  for (size_t i = 1; i < stack.size(); ++i) p += "/" + stack[i].name;
  return p.empty() ? "/" : p;
}

}  // namespace

json parse_json_strict(const char* begin, const char* end, const std::string& where) {
  std::vector<Frame> stack;
  // The name the next container will get from its parent.
  auto child_name = [&]() -> std::string {
    if (stack.empty()) return "";
    Frame& top = stack.back();
    return top.is_object ? top.last_key : "[" + std::to_string(top.n_items) + "]";
  };
  json::parser_callback_t cb = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        stack.push_back({true, child_name(), {}, {}, 0});
        break;
      case json::parse_event_t::array_start:
        stack.push_back({false, child_name(), {}, {}, 0});
        break;
      case json::parse_event_t::key: {
        Frame& top = stack.back();
        const std::string key = parsed.get<std::string>();
        if (!top.keys.insert(key).second)
          fail("{}: expected unique keys, found '{}' twice in {}", where, key, frame_path(stack));
        top.last_key = key;
        break;
      }
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        stack.pop_back();
        if (!stack.empty()) ++stack.back().n_items;
        break;
      case json::parse_event_t::value:
        if (!stack.empty()) ++stack.back().n_items;
        break;
    }
    return true;
  };
  try {
    return json::parse(begin, end, cb);
  } catch (const json::parse_error&) {
    throw;  // the callers word it with the byte offset
  } catch (const json::exception& e) {
    // A number past double's range ("1e400") is out_of_range.406, not a parse_error: word it
    // here, with where it is, instead of letting the library's message escape.
    std::string what = e.what();
    const size_t bracket = what.find("] ");
    if (bracket != std::string::npos) what = what.substr(bracket + 2);
    fail("{}: invalid JSON ({})", where, one_line(what));
  }
}

json parse_json_strict(const std::string& text, const std::string& where) {
  return parse_json_strict(text.data(), text.data() + text.size(), where);
}

}  // namespace kvq
