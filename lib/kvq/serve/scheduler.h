// Scheduler: the one thread of kvq serve that touches LibTorch and the engine. It loads the model
// (the loader runs on it), then loops: takes the requests HTTP handlers queued and the
// cancellations they asked for, runs one Generator step (one token for every running request,
// then admission of waiting ones while a slot and their pages are free: continuous batching at
// step granularity), and hands each new token's text to the request's Channel, which its handler
// waits on. Handlers never block the loop and the loop never waits on a handler: all waits are
// bounded, on condition variables.
//
// Admission control: a request that cannot start at once may wait, at most --max-queue of them;
// past that submit() refuses it (429). A cancelled request (its client went away) leaves the
// running batch, and its pages return to the pool, at the loop's next turn.
// Not here: HTTP (server.h), request parsing (api.h).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kvq/methods/quantizer.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"
#include "kvq/runtime/engine.h"
#include "kvq/runtime/generator.h"
#include "kvq/serve/api.h"
#include "kvq/serve/metrics.h"

namespace kvq::serve {

// One request's results, from the scheduler thread to the HTTP handler waiting for them.
class Channel {
 public:
  struct Update {
    std::vector<std::string> pieces;  // each new token's text (empty ones left out), in order
    bool finished = false;            // finish_reason and usage are set
    std::string finish_reason;        // OpenAI's: "stop" or "length"
    Usage usage;
    std::optional<ApiError> error;  // the request ended without an answer (shutdown, failure)
  };
  explicit Channel(int64_t handle) : handle_(handle) {}
  int64_t handle() const { return handle_; }

  // Handler side: what arrived since the last take, waiting up to `max_wait` for something.
  Update take(std::chrono::milliseconds max_wait);
  bool ended() const;

  // Scheduler side.
  void push(std::string text);
  void finish(const std::string& reason, Usage usage);
  void fail(const ApiError& e);

 private:
  const int64_t handle_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> pieces_;
  bool ended_ = false;
  std::string reason_;
  Usage usage_;
  std::optional<ApiError> error_;
};

// What the scheduler serves, made by the loader on the scheduler thread. Members are destroyed
// in reverse order: the engine before the model and quantizer it refers to.
struct Backend {
  std::unique_ptr<methods::Quantizer> quantizer;
  std::unique_ptr<model::LlamaModel> model;
  std::unique_ptr<model::Tokenizer> tokenizer;
  std::unique_ptr<runtime::Engine> engine;
};
using Loader = std::function<Backend()>;

// The served model as the API reports it; fixed once loaded.
struct ModelInfo {
  std::string name;  // "model" in responses
  std::string kv;    // the cache's method label
  int64_t created = 0;
  ModelLimits limits;
  int64_t page_size = 0, pages_total = 0;
  double bytes_per_token = 0, bits_per_element = 0;
  std::vector<std::string> describe;  // the engine's lines about the cache
};

struct SchedulerOptions {
  std::string model_name;
  int max_running = 8;  // must equal the engine's max_batch
  int max_queue = 64;
  std::function<void(const std::string&)> log;  // one line, no newline; may be empty
};

class Scheduler {
 public:
  enum class State { kLoading, kReady, kDraining, kFailed };

  Scheduler(Loader loader, SchedulerOptions options);
  // Cancels whatever is left and joins the thread (after the loader, if it runs).
  ~Scheduler();
  // Starts the thread, which runs the loader, then the loop. Once.
  void start();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  State state() const { return state_.load(); }
  // Why loading or the loop failed (state kFailed).
  std::string error() const;
  // Valid once the state has been kReady (the loop publishes them before that).
  const ModelInfo& info() const { return info_; }
  // Encoding is const and holds no mutable state, so handler threads call it concurrently.
  const model::Tokenizer& tokenizer() const { return *backend_.tokenizer; }

  // Queues a request (its prompt already checked against info().limits); its results come on
  // the returned channel. Throws ApiError: 503 while loading or shutting down, 429 when
  // --max-queue requests already wait.
  std::shared_ptr<Channel> submit(runtime::Request request);
  // Ends a request at the loop's next turn (its pages return to the pool); no-op once ended.
  void cancel(int64_t handle);

  // Figures for /metrics (refused is the server's to fill).
  MetricsSnapshot metrics() const;

  // Shutdown: new requests are refused (503), queued ones now, running ones may finish until
  // `deadline` and are then cancelled. Returns at once; idle() says when all have ended.
  void drain(std::chrono::steady_clock::time_point deadline);
  bool idle() const;

 private:
  struct Queued {
    runtime::Request request;
    std::shared_ptr<Channel> channel;
    std::chrono::steady_clock::time_point arrived;
  };
  struct Active {
    std::shared_ptr<Channel> channel;
    std::chrono::steady_clock::time_point arrived;
    bool started = false;  // prefilled: has a sequence and its pages
  };

  void run();
  void load();
  void loop();
  // Drops a request from the generator, wherever it is (by generator id).
  void forget(int64_t id);
  void log(const std::string& line) const;

  Loader loader_;
  SchedulerOptions options_;
  std::atomic<State> state_{State::kLoading};
  Backend backend_;
  std::unique_ptr<runtime::Generator> gen_;
  ModelInfo info_;

  // Shared with handler threads.
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Queued> inbox_;
  std::vector<int64_t> cancels_;
  bool stop_ = false;
  bool draining_ = false;
  std::chrono::steady_clock::time_point deadline_;
  int64_t next_handle_ = 0;
  int64_t unstarted_ = 0;  // accepted, not yet running (in the inbox or waiting in the generator)
  int64_t running_ = 0;
  bool blocked_ = false;  // a request waits in the generator: no slot or pages free now
  std::string error_;
  MetricsSnapshot metrics_;

  // The loop's own (its thread only).
  std::map<int64_t, Active> active_;         // by generator request id
  std::map<int64_t, int64_t> id_of_handle_;  // channel handle -> generator request id
  RateWindow prompt_rate_, generated_rate_;

  std::thread thread_;  // last: started once everything above exists
};

}  // namespace kvq::serve
