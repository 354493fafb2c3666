// The OpenAI-style wire format of kvq serve: a completion request's JSON body parsed and checked
// field by field (pure functions, no socket, no model: unit-testable), and the JSON documents the
// server answers with (a completion, a stream chunk, an error, the model list). Every bad request
// is an ApiError naming the field, which the server sends as
//   {"error": {"message": ..., "type": "invalid_request_error", "param": FIELD, "code": null}}.
// Not here: the HTTP plumbing (server.h), the queue and the engine (scheduler.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvq/common/error.h"
#include "kvq/runtime/sampler.h"

namespace kvq::serve {

// A request the server refuses: the HTTP status, OpenAI's error type, the field at fault ("" for
// none: param null) and a one-line message (what() starts with the field where there is one).
class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string param, const std::string& message)
      : Error(message), status_(status), type_(std::move(type)), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string type_;
  std::string param_;
};

// 400 invalid_request_error naming `param`; the message starts "param: ".
[[noreturn]] void bad_request(const std::string& param, const std::string& what);

// POST /v1/completions, as parsed. Defaults are OpenAI's (max_tokens 16, temperature 1, top_p 1).
struct CompletionRequest {
  bool prompt_is_text = true;
  std::string prompt_text;          // encoded with BOS first
  std::vector<int32_t> prompt_ids;  // used as given (no BOS added)
  int64_t max_tokens = 16;
  runtime::SamplingParams sampling{/*temperature=*/1.0, /*top_k=*/0, /*top_p=*/1.0, /*seed=*/0};
  bool seed_given = false;  // without a seed each request draws its own
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  bool ignore_eos = false;     // kvq's (and vLLM's) extension: generate max_tokens tokens
};

// Parses and checks a request body. Throws ApiError (400) for malformed JSON, a body that is not
// an object, an unknown field, a known field of the wrong type or out of range, and for the
// OpenAI fields kvq does not implement (n, best_of, echo, logprobs, suffix, penalties,
// logit_bias) at anything but their neutral value.
CompletionRequest parse_completion_request(std::string_view body);

// What a request is checked against once the model is known.
struct ModelLimits {
  int64_t context = 0;      // the model's context in tokens
  int64_t vocab = 0;        // token ids 0..vocab-1
  int64_t pool_tokens = 0;  // tokens the whole KV pool holds for one sequence (pages x page size)
};

// The prompt as token ids (text encoded by `encode`, ids checked against the vocabulary), and
// the request checked against the context and the pool: a prompt longer than the context is a
// 400 on "prompt", prompt + max_tokens beyond the context or the pool a 400 on "max_tokens".
std::vector<int32_t> prompt_tokens(
    const CompletionRequest& r, const ModelLimits& limits,
    const std::function<std::vector<int32_t>(std::string_view)>& encode);

// The error document of an ApiError (or of any status, type and message).
nlohmann::json error_json(const ApiError& e);

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// OpenAI's finish_reason for a runtime one: "eos" and "stop" are "stop", "length" stays.
std::string finish_reason(const std::string& runtime_reason);

// {id, object: "text_completion", created, model, choices: [{index, text, finish_reason,
// logprobs: null}], usage}: the whole answer, or (stream) one chunk: finish_reason null until
// the last, no usage.
nlohmann::json completion_json(const std::string& id, int64_t created, const std::string& model,
                               const std::string& text, const std::string& finish,
                               const Usage& usage);
nlohmann::json chunk_json(const std::string& id, int64_t created, const std::string& model,
                          const std::string& text, const std::string& finish);
// The stream's usage chunk (stream_options.include_usage): no choices, the usage.
nlohmann::json usage_chunk_json(const std::string& id, int64_t created, const std::string& model,
                                const Usage& usage);

// Whether `given` (an Authorization header) is exactly "Bearer <key>", in time that depends on
// the key's length only, not on where the first difference is.
bool authorized(std::string_view given, std::string_view key);

}  // namespace kvq::serve
