// A client of kvq serve (or any server with OpenAI's completions API over plain HTTP): the
// endpoint from a URL, plain requests, a streamed completion read event by event (Server-Sent
// Events) with its time to first token, and a metric read from /metrics. What `kvq bench serve`
// and the tests use. Not here: HTTPS, retries, chat completions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvq/serve/api.h"

namespace kvq::serve {

struct Endpoint {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;     // sent as "Authorization: Bearer KEY" unless empty
  double timeout_s = 600;  // per connect, read and write
};

// "http://HOST:PORT" (a trailing "/" allowed) into an endpoint; anything else is a kvq::Error
// naming `flag`.
Endpoint parse_url(const std::string& url, const std::string& flag);

struct HttpResult {
  int status = -1;  // -1: no answer (error says why)
  std::string body;
  std::string error;  // the transport's failure
};
HttpResult http_get(const Endpoint& e, const std::string& path);
HttpResult http_post_json(const Endpoint& e, const std::string& path, const std::string& body);

// Splits a byte stream of Server-Sent Events into the data of each event (lines "data: ..."
// joined; comments and other fields skipped), across chunk boundaries.
class SseParser {
 public:
  void feed(std::string_view bytes, const std::function<void(const std::string& data)>& on_data);

 private:
  std::string buffer_, data_;
  bool has_data_ = false;
};

struct StreamResult {
  int status = -1;                  // HTTP status; -1: no answer
  std::string error;                // transport failure, or the error document of a non-200 answer
  std::string body;                 // a non-200 answer's body
  std::vector<std::string> pieces;  // choices[0].text of each chunk that had text
  std::string text;                 // the pieces joined
  std::string finish_reason;
  bool has_usage = false;
  Usage usage;
  bool done = false;     // "data: [DONE]" arrived
  bool stopped = false;  // the caller stopped reading (keep_reading returned false)
  double ttft_s = -1;    // from sending to the first piece of text
  double total_s = 0;
};

// POST /v1/completions with `body` (its "stream" set to true), reading the events as they come;
// `keep_reading` (optional) is asked after each piece of text and stops reading when false,
// which closes the connection as a client that goes away does.
StreamResult stream_completion(const Endpoint& e, nlohmann::json body,
                               const std::function<bool(const StreamResult&)>& keep_reading = {});

// The value of an unlabelled metric (or a labelled one, named with its labels, e.g.
// kvq_requests_refused_total{reason="queue_full"}) in Prometheus text; -1 when absent.
double metric_value(const std::string& text, const std::string& name);

}  // namespace kvq::serve
