// `kvq bench serve`: a load generator for a running kvq serve (serve_bench.cpp). At each
// concurrency level, that many clients send streaming completions back to back until the level's
// requests are done; reported per level: requests/s, generated tokens/s, time to first token
// (p50, p90) and request latency, from the client's side of the socket. Greedy and fixed-length
// by default (ignore_eos), so every level generates the same tokens. Plain options so that the
// CLI builds without cpp-httplib.
// Not here: starting the server (the user runs kvq serve), any non-streaming traffic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvq::bench {

struct ServeBenchOptions {
  std::string url = "http://127.0.0.1:8080";
  std::string api_key;
  std::vector<int> concurrency = {1, 8, 32, 64};
  int requests = 0;  // per level; 0: 4 x the concurrency, at least 8
  int64_t max_tokens = 128;
  std::string prompt = "The game began development in 2010 , carrying over a large portion of";
  double temperature = 0;
  bool ignore_eos = true;    // every request generates max_tokens tokens
  double timeout_s = 600;    // per request (connect, each read)
  double wait_ready_s = 60;  // how long to wait for GET /health to answer 200
  bool json = false;         // one JSON document instead of the table
  std::string json_file;     // also write the JSON document here
};

// Throws kvq::Error naming the flag for options that cannot run (before any request).
void check_serve_bench_options(const ServeBenchOptions& options);
// Runs every level and prints the table (or JSON) to stdout, progress to stderr. Throws
// kvq::Error when the server cannot be reached or is not ready in time; failed requests are
// counted per level (the first error is shown), and the command then exits 1.
void run_serve_bench(const ServeBenchOptions& options);

}  // namespace kvq::bench
