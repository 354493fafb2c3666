// Prometheus text for kvq serve (metrics.h).
#include "kvq/serve/metrics.h"

#include <fmt/format.h>

namespace kvq::serve {
namespace {

// Label values escape backslash, quote and newline (the exposition format's rule).
std::string escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

class Writer {
 public:
  void metric(const char* name, const char* type, const char* help, double value) {
    head(name, type, help);
    text_ += fmt::format("kvq_{} {}\n", name, value);
  }
  void labelled(const char* name, const char* type, const char* help, const char* label,
                const std::map<std::string, int64_t>& values) {
    head(name, type, help);
    for (const auto& [key, value] : values) {
      text_ += fmt::format("kvq_{}{{{}=\"{}\"}} {}\n", name, label, escaped(key), value);
    }
  }
  void raw(const std::string& line) { text_ += line; }
  void head(const char* name, const char* type, const char* help) {
    text_ += fmt::format("# HELP kvq_{} {}\n# TYPE kvq_{} {}\n", name, help, name, type);
  }
  std::string take() { return std::move(text_); }

 private:
  std::string text_;
};

}  // namespace

std::string prometheus_text(const MetricsSnapshot& m) {
  // Every reason the server gives is there from the start, at 0 (a counter that appears only
  // once it is 1 breaks rate() over its first increase).
  std::map<std::string, int64_t> finished = {
      {"stop", 0}, {"length", 0}, {"cancelled", 0}, {"error", 0}};
  for (const auto& [k, v] : m.finished) finished[k] = v;
  std::map<std::string, int64_t> refused = {
      {"invalid_request", 0}, {"unauthorized", 0}, {"not_found", 0}, {"too_large", 0},
      {"queue_full", 0},      {"unavailable", 0},  {"error", 0}};
  for (const auto& [k, v] : m.refused) refused[k] = v;
  Writer w;
  w.metric("ready", "gauge", "1 once the model is loaded and requests are served", m.ready);
  w.metric("requests_running", "gauge", "Requests in the running batch", m.running);
  w.metric("requests_waiting", "gauge", "Requests queued for a sequence slot or cache pages",
           m.waiting);
  w.metric("max_running", "gauge", "Sequences decoded together at most (--max-running)",
           m.max_running);
  w.metric("max_queue", "gauge", "Requests that may wait (--max-queue)", m.max_queue);
  w.metric("prompt_tokens_total", "counter", "Prompt tokens prefilled", m.prompt_tokens);
  w.metric("generated_tokens_total", "counter", "Tokens generated", m.generated_tokens);
  w.metric("prompt_tokens_per_second", "gauge", "Prompt tokens prefilled per second, last 10 s",
           m.prompt_tokens_per_s);
  w.metric("generated_tokens_per_second", "gauge", "Tokens generated per second, last 10 s",
           m.generated_tokens_per_s);
  w.metric("decode_steps_total", "counter", "Decode steps of the running batch", m.steps);
  w.metric("kv_pages_total", "gauge", "Pages of the KV cache pool", m.pages_total);
  w.metric("kv_pages_used", "gauge", "Pages reserved by running requests",
           m.pages_total - m.pages_free);
  w.metric("kv_pages_free", "gauge", "Pages free", m.pages_free);
  w.metric("kv_page_size_tokens", "gauge", "Tokens per page", m.page_size);
  w.head("kv_cache_bytes_per_token", "gauge",
         "KV cache bytes per token of context, all layers (the cache's format)");
  w.raw(fmt::format("kvq_kv_cache_bytes_per_token{{kv=\"{}\"}} {}\n", escaped(m.kv),
                    m.bytes_per_token));
  w.head("kv_cache_bits_per_element", "gauge", "KV cache bits per cached element");
  w.raw(fmt::format("kvq_kv_cache_bits_per_element{{kv=\"{}\"}} {}\n", escaped(m.kv),
                    m.bits_per_element));
  w.labelled("requests_finished_total", "counter", "Requests ended, by finish reason", "reason",
             finished);
  w.labelled("requests_refused_total", "counter", "Requests answered with an error status",
             "reason", refused);
  w.head("time_to_first_token_seconds", "summary",
         "From a request's arrival at the queue to its first token");
  w.raw(fmt::format("kvq_time_to_first_token_seconds_sum {}\n", m.ttft_seconds_sum));
  w.raw(fmt::format("kvq_time_to_first_token_seconds_count {}\n", m.ttft_count));
  return w.take();
}

void RateWindow::add(double t, int64_t total) {
  samples_.emplace_back(t, total);
  // Keep one sample at or before the window's start, so the rate spans the whole window.
  while (samples_.size() > 2 && samples_[1].first <= t - window_s_) samples_.pop_front();
}

double RateWindow::rate(double now) const {
  if (samples_.size() < 2) return 0;
  const auto& [t0, first] = samples_.front();
  // Over (t0, now]: an idle counter's rate falls as time passes even before new samples come.
  return now > t0 ? static_cast<double>(samples_.back().second - first) / (now - t0) : 0;
}

}  // namespace kvq::serve
