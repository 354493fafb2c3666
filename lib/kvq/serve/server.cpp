// kvq serve's HTTP side on cpp-httplib (server.h).
#include "kvq/serve/server.h"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <random>

#include <fmt/format.h>
#include <httplib.h>

namespace kvq::serve {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// How long a handler waits on its channel before looking at the server's state again.
constexpr auto kPoll = std::chrono::milliseconds(200);
// A stream with nothing to say for this long (its request waits in the queue) sends an SSE
// comment: writing is the only way to learn that the client has gone.
constexpr auto kKeepAlive = std::chrono::seconds(1);

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The refused-requests label of an error status.
const char* refusal(int status) {
  switch (status) {
    case 400: return "invalid_request";
    case 401: return "unauthorized";
    case 404: return "not_found";
    case 413: return "too_large";
    case 429: return "queue_full";
    case 503: return "unavailable";
    default: return "error";
  }
}

}  // namespace

struct Server::Impl {
  Impl(Scheduler& s, ServerOptions o)
      : sched(s), options(std::move(o)), rng(std::random_device{}()) {}

  // What a streaming response needs between calls of its content provider.
  struct Stream {
    std::shared_ptr<Channel> channel;
    std::string id, model;
    int64_t created = 0;
    bool include_usage = false;
    Clock::time_point start, last_write;
    std::string summary;  // for the request log line
  };

  void log(const std::string& line) const {
    if (options.log) options.log(line);
  }
  void count_refused(int status) {
    std::lock_guard<std::mutex> lock(mu);
    ++refused[refusal(status)];
  }
  void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status();
    res.set_content(error_json(e).dump(), "application/json");
    if (e.status() == 429 || e.status() == 503) res.set_header("Retry-After", "1");
    if (e.status() == 401) res.set_header("WWW-Authenticate", "Bearer");
    count_refused(e.status());
  }
  bool allowed(const httplib::Request& req) const {
    return options.api_key.empty() ||
           authorized(req.get_header_value("Authorization"), options.api_key);
  }
  static ApiError unauthorized() {
    return ApiError(401, "authentication_error", "",
                    "missing or wrong API key: send the header 'Authorization: Bearer KEY'");
  }

  // Every route: the API key, then the handler; whatever it throws becomes an error document.
  httplib::Server::Handler guarded(void (Impl::*handler)(const httplib::Request&,
                                                         httplib::Response&)) {
    return [this, handler](const httplib::Request& req, httplib::Response& res) {
      try {
        if (!allowed(req)) throw unauthorized();
        (this->*handler)(req, res);
      } catch (const ApiError& e) {
        if (options.log_requests && req.path == "/v1/completions") {
          log(fmt::format("{} {} {}: {}", req.method, req.path, e.status(), e.what()));
        }
        send_error(res, e);
      } catch (const std::exception& e) {
        log(fmt::format("{} {} 500: {}", req.method, req.path, e.what()));
        send_error(res,
                   ApiError(500, "server_error", "", std::string("internal error: ") + e.what()));
      }
    };
  }

  void health(const httplib::Request&, httplib::Response& res) {
    switch (sched.state()) {
      case Scheduler::State::kReady:
        res.set_content(json{{"status", "ok"}}.dump(), "application/json");
        return;
      case Scheduler::State::kLoading:
        res.status = 503;
        res.set_content(json{{"status", "loading"}}.dump(), "application/json");
        return;
      case Scheduler::State::kDraining:
        res.status = 503;
        res.set_content(json{{"status", "shutting down"}}.dump(), "application/json");
        return;
      case Scheduler::State::kFailed:
        res.status = 503;
        res.set_content(json{{"status", "failed"}, {"error", sched.error()}}.dump(),
                        "application/json");
        return;
    }
  }

  void require_ready() const {
    switch (sched.state()) {
      case Scheduler::State::kReady: return;
      case Scheduler::State::kLoading:
        throw ApiError(503, "server_error", "", "the model is still loading; retry shortly");
      case Scheduler::State::kDraining:
        throw ApiError(503, "server_error", "", "the server is shutting down");
      case Scheduler::State::kFailed:
        throw ApiError(503, "server_error", "", "the server failed: " + sched.error());
    }
  }

  void models(const httplib::Request&, httplib::Response& res) {
    require_ready();
    const ModelInfo& m = sched.info();
    const json model = {{"id", m.name},
                        {"object", "model"},
                        {"created", m.created},
                        {"owned_by", "kvq"},
                        {"context_length", m.limits.context},
                        {"kv_cache",
                         {{"method", m.kv},
                          {"bytes_per_token", m.bytes_per_token},
                          {"bits_per_element", m.bits_per_element},
                          {"page_size", m.page_size},
                          {"pages", m.pages_total}}}};
    res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(),
                    "application/json");
  }

  void metrics(const httplib::Request&, httplib::Response& res) {
    MetricsSnapshot m = sched.metrics();
    {
      std::lock_guard<std::mutex> lock(mu);
      m.refused = refused;
    }
    res.set_content(prometheus_text(m), "text/plain; version=0.0.4");
  }

  void completions(const httplib::Request& req, httplib::Response& res) {
    const Clock::time_point start = Clock::now();
    require_ready();
    const CompletionRequest cr = parse_completion_request(req.body);
    const ModelInfo& info = sched.info();
    runtime::Request r;
    r.prompt = prompt_tokens(cr, info.limits, [&](std::string_view text) {
      return sched.tokenizer().encode(text, /*add_bos=*/true);
    });
    r.max_new_tokens = cr.max_tokens;
    r.sampling = cr.sampling;
    if (!cr.seed_given) {
      std::lock_guard<std::mutex> lock(mu);
      r.sampling.seed = rng();
    }
    r.stop = cr.stop;
    r.stop_at_eos = !cr.ignore_eos;
    const size_t n_prompt = r.prompt.size();
    std::shared_ptr<Channel> channel = sched.submit(std::move(r));
    const std::string id = fmt::format("cmpl-{}-{}", start_id, channel->handle());
    const auto created = static_cast<int64_t>(std::time(nullptr));
    if (cr.stream) {
      auto s = std::make_shared<Stream>();
      s->channel = channel;
      s->id = id;
      s->model = info.name;
      s->created = created;
      s->include_usage = cr.include_usage;
      s->start = s->last_write = start;
      s->summary = fmt::format("{} prompt tokens, stream", n_prompt);
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, s](size_t /*offset*/, httplib::DataSink& sink) { return stream_step(*s, sink); },
          [this, s](bool success) {
            if (!s->channel->ended()) {
              sched.cancel(s->channel->handle());
              if (options.log_requests) {
                log(
                    fmt::format("POST /v1/completions 200: client went away after {:.2f} s ({}); "
                                "cancelled",
                                seconds_since(s->start), s->summary));
              }
            } else if (!success && options.log_requests) {
              log(fmt::format("POST /v1/completions 200: the stream's end was not delivered ({})",
                              s->summary));
            }
          });
      return;
    }
    std::string text;
    for (;;) {
      Channel::Update u = channel->take(kPoll);
      for (const std::string& piece : u.pieces) text += piece;
      if (u.error) throw *u.error;
      if (u.finished) {
        res.set_content(
            completion_json(id, created, info.name, text, u.finish_reason, u.usage).dump(),
            "application/json");
        if (options.log_requests) {
          log(fmt::format("POST /v1/completions 200: {} prompt + {} new tokens ({}) in {:.2f} s",
                          u.usage.prompt_tokens, u.usage.completion_tokens, u.finish_reason,
                          seconds_since(start)));
        }
        return;
      }
    }
  }

  // One call of a stream's content provider: the tokens that arrived, or the end. False ends
  // the response (the client is gone); the releaser then cancels the request.
  bool stream_step(Stream& s, httplib::DataSink& sink) {
    Channel::Update u = s.channel->take(kPoll);
    const auto send = [&](const std::string& event) {
      s.last_write = Clock::now();
      return sink.write(event.data(), event.size());
    };
    const auto data = [](const json& j) { return "data: " + j.dump() + "\n\n"; };
    for (const std::string& piece : u.pieces) {
      if (!send(data(chunk_json(s.id, s.created, s.model, piece, "")))) return false;
    }
    if (u.error) {
      send(data(error_json(*u.error)));
      send("data: [DONE]\n\n");
      sink.done();
      if (options.log_requests) {
        log(fmt::format("POST /v1/completions {} during the stream: {}", u.error->status(),
                        u.error->what()));
      }
      return true;
    }
    if (u.finished) {
      if (!send(data(chunk_json(s.id, s.created, s.model, "", u.finish_reason)))) return false;
      if (s.include_usage && !send(data(usage_chunk_json(s.id, s.created, s.model, u.usage)))) {
        return false;
      }
      if (!send("data: [DONE]\n\n")) return false;
      sink.done();
      if (options.log_requests) {
        log(
            fmt::format("POST /v1/completions 200: {} prompt + {} new tokens ({}) in {:.2f} s, "
                        "stream",
                        u.usage.prompt_tokens, u.usage.completion_tokens, u.finish_reason,
                        seconds_since(s.start)));
      }
      return true;
    }
    if (u.pieces.empty() && Clock::now() - s.last_write >= kKeepAlive) {
      return send(": keep-alive\n\n");
    }
    return true;
  }

  Scheduler& sched;
  ServerOptions options;
  httplib::Server http;
  std::atomic<int> listen_fd{-1};
  std::atomic<bool> binding{false}, stopping{false};
  const int64_t start_id = static_cast<int64_t>(std::time(nullptr));
  std::mutex mu;  // refused, rng
  std::map<std::string, int64_t> refused;
  std::mt19937_64 rng;  // seeds of requests that give none
};

Server::Server(Scheduler& scheduler, ServerOptions options)
    : impl_(std::make_unique<Impl>(scheduler, std::move(options))) {
  Impl& s = *impl_;
  httplib::Server& http = s.http;
  const int threads = std::max(1, s.options.threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(s.options.max_body_bytes);
  http.set_read_timeout(10, 0);
  http.set_write_timeout(10, 0);
  // An idle keep-alive connection holds a thread until this passes, shutdown included; it is
  // also how long a new connection's first request may take to arrive.
  http.set_keep_alive_timeout(5);
  // The listening socket is the one made while binding; shutting it down is how the server
  // stops accepting without cutting the responses being written (stop_accepting()).
  http.set_socket_options([&s](socket_t sock) {
    // SO_REUSEADDR only: cpp-httplib's default, SO_REUSEPORT, lets a second server bind the
    // same port and silently take half of the connections.
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (s.binding) s.listen_fd = sock;
  });
  http.Post("/v1/completions", s.guarded(&Impl::completions));
  http.Get("/v1/models", s.guarded(&Impl::models));
  http.Get("/health", s.guarded(&Impl::health));
  http.Get("/metrics", s.guarded(&Impl::metrics));
  http.set_error_handler([&s](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler's own error document
    if (res.status == 413) {
      s.send_error(res, ApiError(413, "invalid_request_error", "",
                                 fmt::format("request body: larger than {} bytes (the "
                                             "server's --max-body)",
                                             s.options.max_body_bytes)));
    } else if (!s.allowed(req)) {
      s.send_error(res, Impl::unauthorized());
    } else if (res.status == 404) {
      s.send_error(res, ApiError(404, "not_found_error", "",
                                 fmt::format("no such endpoint: {} {} (POST /v1/completions, GET "
                                             "/v1/models, /health, /metrics)",
                                             req.method, req.path)));
    } else {
      s.send_error(res, ApiError(res.status, "invalid_request_error", "",
                                 fmt::format("HTTP {}", res.status)));
    }
  });
}

Server::~Server() = default;

int Server::bind() {
  Impl& s = *impl_;
  s.binding = true;
  errno = 0;
  int port = s.options.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.options.host);
  } else if (!s.http.bind_to_port(s.options.host, port)) {
    port = -1;
  }
  const int error = errno;
  s.binding = false;
  if (port < 0 || s.listen_fd < 0) {
    fail("--host {} --port {}: cannot listen there ({})", s.options.host, s.options.port,
         error ? std::strerror(error) : "not an address of this machine?");
  }
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of clients overflows it, and a client
  // whose handshake the kernel dropped sent its request too early and got no answer (seen with
  // 32 clients at once). listen() again only raises the backlog.
  if (::listen(s.listen_fd, SOMAXCONN) != 0) {
    fail("--port {}: cannot raise the listen backlog ({})", port, std::strerror(errno));
  }
  return port;
}

void Server::run() {
  Impl& s = *impl_;
  const bool ok = s.http.listen_after_bind();
  // listen_after_bind() reports the accept() that stop_accepting() made fail as a failure.
  if (!ok && !s.stopping) fail("--port {}: the listening socket failed", s.options.port);
}

void Server::stop_accepting() {
  Impl& s = *impl_;
  s.stopping = true;
  const int fd = s.listen_fd.exchange(-1);
  // accept() then fails, and cpp-httplib leaves its accept loop, closes the socket and waits
  // for the connections it has: unlike Server::stop(), nothing being written is cut.
  if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

}  // namespace kvq::serve
