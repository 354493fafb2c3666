// kvq serve: the runtime behind an OpenAI-compatible HTTP server (lib/kvq/serve). Flags, the
// model's loading on the scheduler thread, signals: SIGINT/SIGTERM stop accepting connections,
// let running requests finish until --shutdown-timeout (then cancel them) and exit 0; a second
// signal cancels at once. Logs go to stderr; the server prints nothing on stdout.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "command.h"
#include "kvq/common/error.h"
#include "kvq/methods/fit.h"
#include "kvq/methods/quant_file.h"
#include "kvq/runtime/engine.h"
#include "options.h"
#if KVQ_HAVE_SERVE
#include "kvq/serve/scheduler.h"
#include "kvq/serve/server.h"
#endif

namespace kvq::app {
namespace {

struct ServeFlags {
  ModelFlags model;
  std::string quant;
  std::string kv;
  std::string host = "127.0.0.1";
  int port = 8080;
  double kv_mem = 0;
  int max_running = 8;
  int max_queue = 64;
  std::string api_key;
  int64_t max_body = 1 << 20;
  double shutdown_timeout = 10;
  std::string model_name;
  bool quiet = false;
};

#if KVQ_HAVE_SERVE
using Clock = std::chrono::steady_clock;

// SIGINT and SIGTERM write their number here; a thread reads it (a handler may do little else).
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_signal(int sig) {
  const char c = static_cast<char>(sig);
  const ssize_t ignored = write(g_signal_pipe[1], &c, 1);
  (void)ignored;
}

void install_signal_handlers() {
  if (pipe(g_signal_pipe) != 0) fail("serve: cannot make a pipe for signals");
  for (int fd : g_signal_pipe) fcntl(fd, F_SETFD, FD_CLOEXEC);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A client that goes away makes writes fail with EPIPE; the signal would end the process.
  std::signal(SIGPIPE, SIG_IGN);
}

// The served model's name: the model path's last component ("wt2-llama-18m").
std::string default_model_name(const std::string& path) {
  std::filesystem::path p(path);
  if (!p.has_filename()) p = p.parent_path();  // "dir/"
  return p.filename().string();
}

bool loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1";
}

void run_serve(const ServeFlags& f) {
  if (!f.quant.empty() && !f.kv.empty()) fail("--quant and --kv: give one (a quant.h5, or fp16)");
  if (f.quant.empty() && f.kv.empty()) {
    fail("--quant or --kv: give the KV cache (a quant.h5 from kvq fit, or --kv fp16)");
  }
  if (!f.kv.empty() && f.kv != "fp16") {
    fail("--kv: expected fp16 (quantized caches come from a quant.h5: --quant), found '{}'", f.kv);
  }
  if (f.host.empty()) fail("--host: empty");
  if (f.port < 0 || f.port > 65535)
    fail("--port: expected 0..65535 (0: any free port), found {}", f.port);
  if (f.max_running < 1 || f.max_running > 4096) {
    fail("--max-running: expected 1..4096, found {}", f.max_running);
  }
  if (f.max_queue < 0) fail("--max-queue: expected >= 0, found {}", f.max_queue);
  if (f.max_body < 1024) fail("--max-body: expected >= 1024 bytes, found {}", f.max_body);
  if (!(f.shutdown_timeout >= 0)) {
    fail("--shutdown-timeout: expected seconds >= 0, found {}", f.shutdown_timeout);
  }
  if (f.api_key.find_first_of(" \t\r\n") != std::string::npos) {
    fail("--api-key: contains white space (it is sent as 'Authorization: Bearer KEY')");
  }
  // The model path and the artifact are checked before anything listens; the model loads after
  // (its own errors then follow the log's first lines).
  if (!std::filesystem::exists(f.model.path))
    fail("--model: {}: no such file or directory", f.model.path);
  auto quantizer = std::make_shared<methods::Quantizer>(
      f.quant.empty() ? methods::fit(methods::parse_method("fp16"), nullptr)
                      : methods::read_quant(f.quant));

  std::mutex log_mu;
  const auto log = [&log_mu, quiet = f.quiet](const std::string& line) {
    if (quiet) return;
    std::lock_guard<std::mutex> lock(log_mu);
    fmt::print(stderr, "serve: {}\n", line);
  };
  serve::SchedulerOptions so;
  so.model_name = f.model_name.empty() ? default_model_name(f.model.path) : f.model_name;
  so.max_running = f.max_running;
  so.max_queue = f.max_queue;
  so.log = log;
  serve::ServerOptions o;
  o.host = f.host;
  o.port = f.port;
  o.api_key = f.api_key;
  o.max_body_bytes = static_cast<size_t>(f.max_body);
  // A waiting or running request holds its connection's thread; a few more answer /health,
  // /metrics and the 429s.
  o.threads = f.max_running + f.max_queue + 8;
  o.log = log;
  install_signal_handlers();
  const Clock::time_point t0 = Clock::now();
  serve::Loader loader = [&f, quantizer] {
    serve::Backend b;
    b.quantizer = std::make_unique<methods::Quantizer>(std::move(*quantizer));
    b.model = std::make_unique<model::LlamaModel>(f.model.load());
    b.tokenizer = f.model.tokenizer(*b.model);
    runtime::EngineOptions eo;
    eo.max_batch = f.max_running;
    eo.kv_mem_gib = f.kv_mem;
    b.engine = std::make_unique<runtime::Engine>(*b.model, *b.quantizer, eo);
    return b;
  };
  // The port is taken before the model loads: a port in use fails at once, and /health answers
  // 503 while loading.
  auto scheduler = std::make_unique<serve::Scheduler>(loader, so);
  auto server = std::make_unique<serve::Server>(*scheduler, o);
  const int port = server->bind();
  log(fmt::format("listening on http://{}:{} (loading {})", f.host, port, f.model.path));
  if (!loopback(f.host) && f.api_key.empty()) {
    log(
        fmt::format("warning: listening on {} without --api-key: whoever reaches the port can use "
                    "the model",
                    f.host));
  }
  scheduler->start();

  std::atomic<bool> done{false};
  std::thread watcher([&] {
    bool told_ready = false, stopping = false;
    int signals = 0;
    while (!done) {
      pollfd p{g_signal_pipe[0], POLLIN, 0};
      if (poll(&p, 1, 100) > 0) {
        char c = 0;
        if (read(g_signal_pipe[0], &c, 1) == 1) {
          ++signals;
          const char* name = c == SIGINT ? "SIGINT" : "SIGTERM";
          if (signals == 1) {
            const serve::MetricsSnapshot m = scheduler->metrics();
            log(
                fmt::format("{}: stopping: no new connections; {} running requests may finish "
                            "within {} s, {} waiting are refused (again to cancel at once)",
                            name, m.running, f.shutdown_timeout, m.waiting));
            scheduler->drain(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(f.shutdown_timeout)));
            server->stop_accepting();
            stopping = true;
          } else {
            log(fmt::format("{} again: cancelling every request", name));
            scheduler->drain(Clock::now());
          }
        }
      }
      const serve::Scheduler::State s = scheduler->state();
      if (!told_ready && s == serve::Scheduler::State::kReady) {
        told_ready = true;
        for (const std::string& line : scheduler->info().describe) log(line);
        log(
            fmt::format("ready in {:.1f} s: model {} with a {} KV cache, up to {} running and {} "
                        "waiting requests",
                        std::chrono::duration<double>(Clock::now() - t0).count(),
                        scheduler->info().name, scheduler->info().kv, f.max_running, f.max_queue));
      }
      if (s == serve::Scheduler::State::kFailed && !stopping) {
        server->stop_accepting();
        stopping = true;
      }
    }
  });
  server->run();
  done = true;
  watcher.join();
  if (scheduler->state() == serve::Scheduler::State::kFailed) {
    throw Error(scheduler->error());
  }
  scheduler.reset();
  log("stopped");
}
#endif

}  // namespace

void register_serve(CLI::App& app) {
  auto flags = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server over the runtime: /v1/completions (streaming too), "
      "/v1/models, /health, /metrics");
  flags->model.add_to(*cmd);
  cmd->add_option("--quant", flags->quant, "quant.h5 (kvq fit): the KV cache's method");
  cmd->add_option("--kv", flags->kv, "fp16: a plain fp16 cache (instead of --quant)");
  cmd->add_option("--host", flags->host,
                  "Address to listen on (0.0.0.0: every interface; then use --api-key)");
  cmd->add_option("--port", flags->port, "TCP port (0: any free port, printed at start)");
  cmd->add_option("--kv-mem", flags->kv_mem,
                  "GiB for the KV cache (0: 90% of the free GPU memory; CPU: max-running full "
                  "sequences)");
  cmd->add_option("--max-running", flags->max_running, "Requests decoded together at most");
  cmd->add_option("--max-queue", flags->max_queue,
                  "Requests that may wait for a slot or pages; more get 429");
  cmd->add_option("--api-key", flags->api_key,
                  "Require 'Authorization: Bearer KEY' on every request (or $KVQ_API_KEY)")
      ->envname("KVQ_API_KEY");
  cmd->add_option("--max-body", flags->max_body, "Largest request body in bytes (413 beyond)");
  cmd->add_option("--shutdown-timeout", flags->shutdown_timeout,
                  "Seconds running requests may take to finish after SIGINT/SIGTERM");
  cmd->add_option("--model-name", flags->model_name,
                  "The model's id in the API (default: the --model path's last component)");
  cmd->add_flag("--quiet", flags->quiet, "No log lines (errors still go to stderr)");
  cmd->callback([flags] {
#if KVQ_HAVE_SERVE
    run_serve(*flags);
#else
    fail("built without cpp-httplib (apt-get install libcpp-httplib-dev, then rebuild)");
#endif
  });
}

}  // namespace kvq::app
