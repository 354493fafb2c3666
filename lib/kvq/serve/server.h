// Server: kvq serve's HTTP side on cpp-httplib (a thread per connection from a fixed pool):
//   POST /v1/completions  OpenAI completions, whole or streamed as Server-Sent Events
//   GET  /v1/models       the served model and what its KV cache holds
//   GET  /health          503 while the model loads (and while shutting down), then 200
//   GET  /metrics         Prometheus text (metrics.h)
// Handlers parse and check a request (api.h), queue it with the Scheduler and wait on its
// channel with bounded waits; a streaming handler whose client went away (a write fails)
// cancels its request, whose pages return at the scheduler's next step. With an API key every
// request needs "Authorization: Bearer KEY" (401 otherwise; compared in constant time). Bodies
// past max_body_bytes get a 413. Every error is OpenAI's JSON error document.
// Not here: the engine loop (scheduler.h), signals and flags (apps/kvq/serve.cpp).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "kvq/serve/scheduler.h"

namespace kvq::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (bind() returns it)
  std::string api_key;
  size_t max_body_bytes = 1 << 20;
  int threads = 16;                             // connections served at once
  bool log_requests = true;                     // one line per request to `log`
  std::function<void(const std::string&)> log;  // may be empty
};

class Server {
 public:
  Server(Scheduler& scheduler, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port; returns the port. Throws kvq::Error naming --host/--port when it cannot.
  int bind();
  // Serves until stop_accepting() or stop(), then returns once every handler has returned.
  void run();
  // From any thread: the listening socket stops accepting (new connections are refused);
  // requests already inside go on, and run() returns when they have ended.
  void stop_accepting();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvq::serve
