// `kvq bench serve` (serve_bench.h).
#include "serve_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/output_path.h"
#include "kvq/common/error.h"
#include "kvq/common/lists.h"
#include "kvq/serve/client.h"

namespace kvq::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Level {
  int concurrency = 0, requests = 0, ok = 0;
  double wall_s = 0;
  int64_t generated_tokens = 0;
  std::vector<double> ttft_s, latency_s;
  std::string first_error;
};

// Nearest-rank percentile of unsorted values; NaN when there are none.
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::max<size_t>(rank, 1) - 1];
}

Level run_level(const serve::Endpoint& endpoint, const json& body, int concurrency, int n) {
  Level level;
  level.concurrency = concurrency;
  level.requests = n;
  std::atomic<int> next{0};
  std::mutex mu;
  const Clock::time_point t0 = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&] {
      // Bounded: each client takes request numbers until the level's n are handed out.
      for (int i = next++; i < n; i = next++) {
        const serve::StreamResult r = serve::stream_completion(endpoint, body);
        std::lock_guard<std::mutex> lock(mu);
        const bool ok = r.status == 200 && r.error.empty() && r.done && r.has_usage;
        if (!ok) {
          if (level.first_error.empty()) {
            level.first_error = r.status > 0 ? fmt::format("HTTP {}: {}", r.status, r.error)
                                             : (r.error.empty() ? "no [DONE]" : r.error);
          }
          continue;
        }
        ++level.ok;
        level.generated_tokens += r.usage.completion_tokens;
        if (r.ttft_s >= 0) level.ttft_s.push_back(r.ttft_s);
        level.latency_s.push_back(r.total_s);
      }
    });
  }
  for (std::thread& t : clients) t.join();
  level.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  return level;
}

// A number for the table: "-" when it is not a number.
std::string cell(double v, const char* format) {
  return std::isnan(v) ? "-" : fmt::format(fmt::runtime(format), v);
}

json number(double v) { return std::isnan(v) ? json(nullptr) : json(v); }

}  // namespace

void check_serve_bench_options(const ServeBenchOptions& o) {
  serve::parse_url(o.url, "--url");
  if (o.concurrency.empty()) fail("--concurrency: expected at least one level");
  for (int c : o.concurrency) {
    if (c < 1 || c > 4096) fail("--concurrency: expected 1..4096 clients, found {}", c);
  }
  require_distinct(o.concurrency, "--concurrency");
  if (o.requests < 0)
    fail("--requests: expected >= 0 (0: 4 x the concurrency), found {}", o.requests);
  if (o.max_tokens < 1) fail("--max-tokens: expected a positive count, found {}", o.max_tokens);
  if (o.prompt.empty()) fail("--prompt: empty (the server adds BOS to text prompts; give text)");
  if (!(o.temperature >= 0)) fail("--temperature: expected >= 0, found {}", o.temperature);
  if (!(o.timeout_s > 0)) fail("--timeout: expected seconds > 0, found {}", o.timeout_s);
  if (!(o.wait_ready_s >= 0)) fail("--wait-ready: expected seconds >= 0, found {}", o.wait_ready_s);
}

void run_serve_bench(const ServeBenchOptions& o) {
  check_serve_bench_options(o);
  artifact::check_outputs({{"--json-file", o.json_file}}, {});  // before any work
  serve::Endpoint endpoint = serve::parse_url(o.url, "--url");
  endpoint.api_key = o.api_key;
  endpoint.timeout_s = o.timeout_s;

  // The server must be up and its model loaded; a loading one is waited for (bounded).
  serve::Endpoint probe = endpoint;
  probe.timeout_s = 5;
  const Clock::time_point t0 = Clock::now();
  for (;;) {
    const serve::HttpResult h = serve::http_get(probe, "/health");
    if (h.status == 200) break;
    if (h.status == 401) fail("--api-key: the server at {} refused it (401)", o.url);
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    if (waited >= o.wait_ready_s) {
      fail("--url: {} is not ready after {:.0f} s ({})", o.url, waited,
           h.status < 0 ? h.error : fmt::format("GET /health: HTTP {} {}", h.status, h.body));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  std::string model = "?", kv = "?";
  double bytes_per_token = std::nan("");
  const serve::HttpResult m = serve::http_get(endpoint, "/v1/models");
  if (m.status == 200) {
    try {
      const json d = json::parse(m.body).at("data").at(0);
      model = d.value("id", model);
      if (d.contains("kv_cache")) {
        kv = d["kv_cache"].value("method", kv);
        bytes_per_token = d["kv_cache"].value("bytes_per_token", bytes_per_token);
      }
    } catch (const json::exception&) {
      // Another server's model list: the table says "?".
    }
  }

  const json body = {{"model", model},
                     {"prompt", o.prompt},
                     {"max_tokens", o.max_tokens},
                     {"temperature", o.temperature},
                     {"ignore_eos", o.ignore_eos},
                     {"stream_options", {{"include_usage", true}}}};
  std::vector<Level> levels;
  int failed = 0;
  for (int c : o.concurrency) {
    const int n = o.requests > 0 ? o.requests : std::max(8, 4 * c);
    fmt::print(stderr, "bench serve: {} concurrent clients, {} requests of {} tokens\n", c, n,
               o.max_tokens);
    levels.push_back(run_level(endpoint, body, c, n));
    failed += levels.back().requests - levels.back().ok;
  }

  json rows = json::array();
  for (const Level& l : levels) {
    rows.push_back({{"concurrency", l.concurrency},
                    {"requests", l.requests},
                    {"ok", l.ok},
                    {"seconds", l.wall_s},
                    {"requests_per_s", l.ok / l.wall_s},
                    {"generated_tokens", l.generated_tokens},
                    {"generated_tokens_per_s", static_cast<double>(l.generated_tokens) / l.wall_s},
                    {"ttft_p50_ms", number(percentile(l.ttft_s, 50) * 1e3)},
                    {"ttft_p90_ms", number(percentile(l.ttft_s, 90) * 1e3)},
                    {"latency_p50_s", number(percentile(l.latency_s, 50))},
                    {"latency_p90_s", number(percentile(l.latency_s, 90))},
                    {"first_error", l.first_error}});
  }
  const json doc = {{"url", o.url},
                    {"model", model},
                    {"kv", kv},
                    {"kv_bytes_per_token", number(bytes_per_token)},
                    {"max_tokens", o.max_tokens},
                    {"prompt", o.prompt},
                    {"temperature", o.temperature},
                    {"ignore_eos", o.ignore_eos},
                    {"levels", rows}};
  if (!o.json_file.empty())
    artifact::write_text_file_atomic(
        o.json_file, doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  if (o.json) {
    fmt::print("{}\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    fmt::print(
        "kvq bench serve: {} at {}, KV cache {} ({} bytes per token); streaming requests "
        "of {} tokens ({}), client-side times.\n\n",
        model, o.url, kv, cell(bytes_per_token, "{:.0f}"), o.max_tokens,
        o.ignore_eos ? "EOS ignored" : "up to EOS");
    fmt::print(
        "| clients | requests | ok | requests/s | generated tok/s | TTFT p50 ms | TTFT p90 ms "
        "| latency p50 s | latency p90 s |\n");
    fmt::print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const Level& l : levels) {
      fmt::print(
          "| {} | {} | {} | {:.2f} | {:.1f} | {} | {} | {} | {} |\n", l.concurrency, l.requests,
          l.ok, l.ok / l.wall_s, static_cast<double>(l.generated_tokens) / l.wall_s,
          cell(percentile(l.ttft_s, 50) * 1e3, "{:.1f}"),
          cell(percentile(l.ttft_s, 90) * 1e3, "{:.1f}"),
          cell(percentile(l.latency_s, 50), "{:.2f}"), cell(percentile(l.latency_s, 90), "{:.2f}"));
    }
  }
  for (const Level& l : levels) {
    if (!l.first_error.empty()) {
      fmt::print(stderr, "bench serve: {} clients: {} of {} requests failed, first: {}\n",
                 l.concurrency, l.requests - l.ok, l.requests, l.first_error);
    }
  }
  if (failed > 0) fail("{} requests failed (above)", failed);
}

}  // namespace kvq::bench
