// What GET /metrics reports (Prometheus text exposition format 0.0.4): requests running and
// waiting, tokens in and out (totals and per second over a recent window), the KV pool's pages,
// what the cache costs per token, finished and refused requests, time to first token. A plain
// snapshot struct and its formatter, so the text is unit-tested without a server.
// Not here: where the figures come from (scheduler.h, server.h).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <utility>

namespace kvq::serve {

struct MetricsSnapshot {
  bool ready = false;  // the model is loaded
  int64_t running = 0, waiting = 0;
  int64_t max_running = 0, max_queue = 0;
  int64_t pages_total = 0, pages_free = 0, page_size = 0;
  double bytes_per_token = 0, bits_per_element = 0;  // the cache format's, all layers
  std::string kv;                                    // the cache's method label ("nuq3-1%")
  int64_t prompt_tokens = 0, generated_tokens = 0;   // since start
  double prompt_tokens_per_s = 0, generated_tokens_per_s = 0;  // over the recent window
  int64_t steps = 0;                                           // decode steps since start
  std::map<std::string, int64_t> finished;  // by reason: stop, length, cancelled, error
  std::map<std::string, int64_t> refused;   // by reason: queue_full, invalid_request, ...
  double ttft_seconds_sum = 0;              // time to first token, summed over requests
  int64_t ttft_count = 0;
};

// The snapshot as Prometheus text: one HELP and TYPE line per metric, names prefixed kvq_.
std::string prometheus_text(const MetricsSnapshot& m);

// A counter's rate over the last `window_s` seconds, from samples (time, total) added as they
// come; an idle counter's rate falls to 0 as its last increase leaves the window.
class RateWindow {
 public:
  explicit RateWindow(double window_s = 10) : window_s_(window_s) {}
  void add(double t, int64_t total);
  double rate(double now) const;

 private:
  double window_s_;
  std::deque<std::pair<double, int64_t>> samples_;
};

}  // namespace kvq::serve
