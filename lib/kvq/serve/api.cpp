// The wire format of kvq serve (api.h).
#include "kvq/serve/api.h"

#include <cmath>
#include <limits>

#include "kvq/common/json.h"

namespace kvq::serve {
namespace {

using nlohmann::json;

// JSON's name for a value's type, for "expected X, found Y" messages.
std::string type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// A short rendering of a value for a message (long strings and arrays cut).
std::string shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

[[noreturn]] void wrong_type(const std::string& field, const char* expected, const json& v) {
  bad_request(field, fmt::format("expected {}, found {}", expected, type_name(v)));
}

int64_t as_int(const std::string& field, const json& v) {
  if (!v.is_number_integer()) wrong_type(field, "an integer", v);
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()}) {
    bad_request(field, fmt::format("{} is out of range", shown(v)));
  }
  return v.get<int64_t>();
}

double as_number(const std::string& field, const json& v) {
  if (!v.is_number()) wrong_type(field, "a number", v);
  const double d = v.get<double>();
  if (!std::isfinite(d)) bad_request(field, "expected a finite number");
  return d;
}

bool as_bool(const std::string& field, const json& v) {
  if (!v.is_boolean()) wrong_type(field, "true or false", v);
  return v.get<bool>();
}

void parse_prompt(const json& v, CompletionRequest* r) {
  if (v.is_string()) {
    r->prompt_is_text = true;
    r->prompt_text = v.get<std::string>();
    return;
  }
  if (!v.is_array()) wrong_type("prompt", "a string or an array of token ids", v);
  if (v.empty()) bad_request("prompt", "an empty array of token ids");
  if (v[0].is_string()) {
    bad_request("prompt",
                "expected one prompt (a string or an array of token ids), found an "
                "array of strings: send one request per prompt");
  }
  r->prompt_is_text = false;
  r->prompt_ids.clear();
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string where = fmt::format("prompt[{}]", i);
    if (!v[i].is_number_integer()) wrong_type("prompt", "an array of integer token ids", v[i]);
    const int64_t id = as_int(where, v[i]);
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
      bad_request("prompt", fmt::format("token id {} at index {} is not a token id", id, i));
    }
    r->prompt_ids.push_back(static_cast<int32_t>(id));
  }
}

void parse_stop(const json& v, CompletionRequest* r) {
  r->stop.clear();
  if (v.is_null()) return;
  if (v.is_string()) {
    r->stop.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > 4)
      bad_request("stop", fmt::format("at most 4 stop strings, found {}", v.size()));
    for (const json& s : v) {
      if (!s.is_string()) wrong_type("stop", "a string or an array of strings", s);
      r->stop.push_back(s.get<std::string>());
    }
  } else {
    wrong_type("stop", "a string or an array of strings", v);
  }
  for (const std::string& s : r->stop) {
    if (s.empty()) bad_request("stop", "an empty stop string");
  }
}

// OpenAI fields kvq accepts only at their neutral value (a client library may send them).
void check_neutral(const std::string& key, const json& v) {
  if (v.is_null()) return;
  if (key == "n" || key == "best_of") {
    if (as_int(key, v) != 1)
      bad_request(key, fmt::format("only 1 is supported, found {}", shown(v)));
  } else if (key == "echo") {
    if (as_bool(key, v)) bad_request(key, "echo is not supported (only false)");
  } else if (key == "logprobs") {
    if (as_int(key, v) != 0)
      bad_request(key, "log probabilities are not supported (only null or 0)");
  } else if (key == "suffix") {
    if (!v.is_string()) wrong_type(key, "a string or null", v);
    if (!v.get<std::string>().empty()) bad_request(key, "suffix is not supported");
  } else if (key == "presence_penalty" || key == "frequency_penalty") {
    if (as_number(key, v) != 0) {
      bad_request(key, fmt::format("penalties are not supported (only 0), found {}", shown(v)));
    }
  } else if (key == "logit_bias") {
    if (!v.is_object()) wrong_type(key, "an object or null", v);
    if (!v.empty()) bad_request(key, "logit_bias is not supported (only {})");
  }
}

}  // namespace

void bad_request(const std::string& param, const std::string& what) {
  throw ApiError(400, "invalid_request_error", param, param.empty() ? what : param + ": " + what);
}

CompletionRequest parse_completion_request(std::string_view body) {
  json j;
  try {
    j = parse_json_strict(body.data(), body.data() + body.size(), "request body");
  } catch (const json::parse_error& e) {
    bad_request("", fmt::format("request body: not valid JSON (at byte {})", e.byte));
  } catch (const Error& e) {  // a key given twice: which value was meant is unknown
    bad_request("", e.what());
  }
  if (!j.is_object()) {
    bad_request("", fmt::format("request body: expected a JSON object, found {}", type_name(j)));
  }
  CompletionRequest r;
  bool has_prompt = false;
  for (const auto& [key, v] : j.items()) {
    if (key == "prompt") {
      parse_prompt(v, &r);
      has_prompt = true;
    } else if (v.is_null()) {
      continue;  // null is the default of every optional field
    } else if (key == "model") {
      if (!v.is_string()) wrong_type(key, "a string", v);  // any name: one model is served
    } else if (key == "user") {
      if (!v.is_string()) wrong_type(key, "a string", v);
    } else if (key == "max_tokens") {
      r.max_tokens = as_int(key, v);
      if (r.max_tokens <= 0) {
        bad_request(key,
                    fmt::format("expected a positive number of tokens, found {}", r.max_tokens));
      }
    } else if (key == "temperature") {
      r.sampling.temperature = as_number(key, v);
      if (r.sampling.temperature < 0) {
        bad_request(key, fmt::format("expected >= 0 (0: greedy), found {}", shown(v)));
      }
    } else if (key == "top_p") {
      r.sampling.top_p = as_number(key, v);
      if (!(r.sampling.top_p > 0 && r.sampling.top_p <= 1)) {
        bad_request(key, fmt::format("expected a number in (0, 1], found {}", shown(v)));
      }
    } else if (key == "top_k") {
      const int64_t k = as_int(key, v);
      if (k < -1) bad_request(key, fmt::format("expected -1 or 0 (all) or a count, found {}", k));
      r.sampling.top_k = k < 0 ? 0 : k;
    } else if (key == "seed") {
      r.sampling.seed = static_cast<uint64_t>(as_int(key, v));
      r.seed_given = true;
    } else if (key == "stop") {
      parse_stop(v, &r);
    } else if (key == "stream") {
      r.stream = as_bool(key, v);
    } else if (key == "stream_options") {
      if (!v.is_object()) wrong_type(key, "an object", v);
      for (const auto& [option, value] : v.items()) {
        if (option != "include_usage") {
          bad_request(key, fmt::format("unrecognized option '{}' (only include_usage)", option));
        }
        r.include_usage = as_bool("stream_options.include_usage", value);
      }
    } else if (key == "ignore_eos") {
      r.ignore_eos = as_bool(key, v);
    } else if (key == "n" || key == "best_of" || key == "echo" || key == "logprobs" ||
               key == "suffix" || key == "presence_penalty" || key == "frequency_penalty" ||
               key == "logit_bias") {
      check_neutral(key, v);
    } else {
      bad_request(key, "unrecognized field (a typo?)");
    }
  }
  if (!has_prompt) bad_request("prompt", "required (a string or an array of token ids)");
  if (r.include_usage && !r.stream) {
    bad_request("stream_options", "only allowed with \"stream\": true");
  }
  return r;
}

std::vector<int32_t> prompt_tokens(
    const CompletionRequest& r, const ModelLimits& limits,
    const std::function<std::vector<int32_t>(std::string_view)>& encode) {
  std::vector<int32_t> ids = r.prompt_is_text ? encode(r.prompt_text) : r.prompt_ids;
  if (ids.empty()) bad_request("prompt", "no tokens");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= limits.vocab) {
      bad_request("prompt", fmt::format("token id {} at index {} outside the vocabulary 0..{}",
                                        ids[i], i, limits.vocab - 1));
    }
  }
  const auto n = static_cast<int64_t>(ids.size());
  if (n > limits.context) {
    bad_request("prompt", fmt::format("{} tokens, longer than the model's context of {} tokens", n,
                                      limits.context));
  }
  // The last token sampled is never appended to the cache (runtime::Generator).
  const int64_t need = n + r.max_tokens - 1;
  if (need > limits.context) {
    bad_request("max_tokens",
                fmt::format("the prompt's {} tokens + {} new exceed the model's context of {} "
                            "tokens (at most {} new)",
                            n, r.max_tokens, limits.context, limits.context - n + 1));
  }
  if (need > limits.pool_tokens) {
    bad_request("max_tokens",
                fmt::format("the prompt's {} tokens + {} new exceed the {} tokens the whole KV "
                            "cache holds (the server's --kv-mem)",
                            n, r.max_tokens, limits.pool_tokens));
  }
  return ids;
}

nlohmann::json error_json(const ApiError& e) {
  return {{"error",
           {{"message", e.what()},
            {"type", e.type()},
            {"param", e.param().empty() ? json(nullptr) : json(e.param())},
            {"code", nullptr}}}};
}

std::string finish_reason(const std::string& runtime_reason) {
  return runtime_reason == "eos" ? "stop" : runtime_reason;
}

nlohmann::json completion_json(const std::string& id, int64_t created, const std::string& model,
                               const std::string& text, const std::string& finish,
                               const Usage& usage) {
  json j = chunk_json(id, created, model, text, finish);
  j["usage"] = {{"prompt_tokens", usage.prompt_tokens},
                {"completion_tokens", usage.completion_tokens},
                {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
  return j;
}

nlohmann::json chunk_json(const std::string& id, int64_t created, const std::string& model,
                          const std::string& text, const std::string& finish) {
  return {
      {"id", id},
      {"object", "text_completion"},
      {"created", created},
      {"model", model},
      {"choices", json::array({{{"index", 0},
                                {"text", text},
                                {"finish_reason", finish.empty() ? json(nullptr) : json(finish)},
                                {"logprobs", nullptr}}})}};
}

nlohmann::json usage_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                const Usage& usage) {
  json j = completion_json(id, created, model, "", "", usage);
  j["choices"] = json::array();
  return j;
}

bool authorized(std::string_view given, std::string_view key) {
  static constexpr std::string_view kScheme = "Bearer ";
  // Every byte of the expected value is compared, whatever `given` holds, and differences are
  // accumulated rather than returned early: the time says nothing about the key's content.
  const size_t n = kScheme.size() + key.size();
  unsigned char diff = given.size() == n ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const char want = i < kScheme.size() ? kScheme[i] : key[i - kScheme.size()];
    const char have = i < given.size() ? given[i] : 0;
    diff |= static_cast<unsigned char>(want ^ have);
  }
  return diff == 0 && !key.empty();
}

}  // namespace kvq::serve
