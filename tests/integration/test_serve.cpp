// kvq serve end to end on loopback: the built binary started on a free port with wt2-llama-1m,
// 32 concurrent requests (half streaming) whose greedy text and usage equal kvq generate's for
// the same prompts (fp16 cache, and a nuq3-1% quant.h5), the pool all free afterwards, a client
// that leaves mid-stream freeing its pages, every bad request's status and message, the API key,
// the queue's 429, SIGTERM finishing a running stream and exiting 0, bad flags and a port in
// use, and kvq bench serve against the server. Every wait is bounded in count and time; a server
// left running is killed by the fixture.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kvq/serve/client.h"
#include "support/test_support.h"

namespace kvq {
namespace {

using nlohmann::json;
using test::data_path;
using test::kModel18m;
using test::kModel1m;
using test::quoted;
using test::run_kvq;
using Clock = std::chrono::steady_clock;

constexpr char kKey[] = "test-key-0123";

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// `kvq serve --port PORT ARGS` in a child process, stderr to a file; killed if still running at
// destruction.
class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& args, int port = 0) {
    log_ = dir_.file("serve.err");
    out_ = dir_.file("serve.out");
    const std::string bin = test::kvq_bin();
    std::vector<std::string> argv = {bin, "serve", "--port", std::to_string(port)};
    argv.insert(argv.end(), args.begin(), args.end());
    test::write_file(log_, "");  // there to read before the child writes
    test::write_file(out_, "");
    pid_ = fork();
    if (pid_ == 0) {
      const int err = open(log_.c_str(), O_WRONLY | O_APPEND);
      const int out = open(out_.c_str(), O_WRONLY | O_APPEND);
      dup2(err, 2);
      dup2(out, 1);
      std::vector<char*> c;
      for (std::string& a : argv) c.push_back(a.data());
      c.push_back(nullptr);
      execv(bin.c_str(), c.data());
      _exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && exit_code_ == kRunning) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Waits (at most timeout_s) for the "listening on" line and then for GET /health to answer
  // 200; the endpoint, or port -1 when the server did not come up.
  serve::Endpoint start(double timeout_s = 60) {
    serve::Endpoint e;
    e.port = -1;
    e.api_key = api_key;
    e.timeout_s = 60;
    const Clock::time_point t0 = Clock::now();
    static const std::string kLine = "listening on http://127.0.0.1:";
    while (seconds_since(t0) < timeout_s && exit_code(0) == kRunning) {
      const std::string log = this->log();
      const size_t at = log.find(kLine);
      if (at != std::string::npos && log.find(' ', at + kLine.size()) != std::string::npos) {
        e.port = std::stoi(log.substr(at + kLine.size()));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (e.port < 0) return e;
    while (seconds_since(t0) < timeout_s && exit_code(0) == kRunning) {
      serve::Endpoint probe = e;
      probe.timeout_s = 5;
      if (serve::http_get(probe, "/health").status == 200) return e;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    e.port = -1;
    return e;
  }
  void signal(int sig) const { kill(pid_, sig); }
  // The exit code once exited within timeout_s, else kRunning.
  int exit_code(double timeout_s) {
    const Clock::time_point t0 = Clock::now();
    while (exit_code_ == kRunning) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (seconds_since(t0) >= timeout_s) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return exit_code_;
  }
  std::string log() const { return test::read_file(log_); }
  std::string out() const { return test::read_file(out_); }

  static constexpr int kRunning = -1000;
  std::string api_key;

 private:
  test::TempDir dir_;
  std::string log_, out_;
  pid_t pid_ = -1;
  int exit_code_ = kRunning;
};

// One request's answer as the tests compare it.
struct Answer {
  int status = -1;
  std::string text, finish_reason, error;
  int64_t prompt_tokens = -1, completion_tokens = -1;
  bool done = false;  // streams: [DONE] arrived
};

Answer complete(const serve::Endpoint& e, const json& body) {
  Answer a;
  const serve::HttpResult r = serve::http_post_json(e, "/v1/completions", body.dump());
  a.status = r.status;
  a.error = r.error;
  if (r.status < 0) return a;
  const json j = json::parse(r.body);
  if (r.status != 200) {
    a.error = j["error"]["message"];
    return a;
  }
  a.text = j["choices"][0]["text"];
  a.finish_reason = j["choices"][0]["finish_reason"];
  a.prompt_tokens = j["usage"]["prompt_tokens"];
  a.completion_tokens = j["usage"]["completion_tokens"];
  EXPECT_EQ(j["usage"]["total_tokens"], a.prompt_tokens + a.completion_tokens);
  EXPECT_EQ(j["object"], "text_completion");
  return a;
}

Answer stream(const serve::Endpoint& e, json body) {
  body["stream_options"] = {{"include_usage", true}};
  const serve::StreamResult r = serve::stream_completion(e, body);
  Answer a;
  a.status = r.status;
  a.error = r.error;
  a.text = r.text;
  a.finish_reason = r.finish_reason;
  a.done = r.done;
  if (r.has_usage) {
    a.prompt_tokens = r.usage.prompt_tokens;
    a.completion_tokens = r.usage.completion_tokens;
  }
  return a;
}

std::string metrics(const serve::Endpoint& e) {
  const serve::HttpResult r = serve::http_get(e, "/metrics");
  EXPECT_EQ(r.status, 200) << r.error;
  return r.body;
}

// Polls /metrics (every 20 ms, at most timeout_s) until nothing runs or waits and every page
// is free; true when it got there.
bool wait_idle(const serve::Endpoint& e, double timeout_s = 20) {
  const Clock::time_point t0 = Clock::now();
  while (seconds_since(t0) < timeout_s) {
    const std::string m = metrics(e);
    if (serve::metric_value(m, "kvq_requests_running") == 0 &&
        serve::metric_value(m, "kvq_requests_waiting") == 0 &&
        serve::metric_value(m, "kvq_kv_pages_free") ==
            serve::metric_value(m, "kvq_kv_pages_total")) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// 32 prompts: lines of real text from wiki.valid.tokens, cut at a word to at most 100 bytes.
std::vector<std::string> prompts() {
  std::ifstream in(data_path(test::kValid));
  std::vector<std::string> out;
  std::string line;
  for (int guard = 0; out.size() < 32 && guard < 10000 && std::getline(in, line); ++guard) {
    const size_t first = line.find_first_not_of(' ');
    if (first == std::string::npos || line.size() - first < 30 || line[first] == '=') continue;
    line = line.substr(first, 100);
    line = line.substr(0, line.rfind(' '));
    out.push_back(line);
  }
  return out;
}

// kvq generate --json over the same prompts (greedy, EOS stops): what the server must answer.
json generate(const std::string& cache_flags, const std::vector<std::string>& ps, int n_new,
              const test::TempDir& dir) {
  std::string lines;
  for (const std::string& p : ps) lines += json{{"prompt", p}}.dump() + "\n";
  test::write_file(dir.file("prompts.jsonl"), lines);
  const auto r = run_kvq("generate --model " + quoted(data_path(kModel1m)) + " " + cache_flags +
                         " --prompts " + quoted(dir.file("prompts.jsonl")) + " -n " +
                         std::to_string(n_new) + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out)["completions"] : json::array();
}

// Sends every prompt at once from its own thread (odd ones streaming) and checks each answer
// against kvq generate's, then that the server is idle with every page free.
void expect_concurrent_equal_generate(const serve::Endpoint& e, const std::vector<std::string>& ps,
                                      const json& expected, int n_new) {
  ASSERT_EQ(expected.size(), ps.size());
  std::vector<Answer> answers(ps.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < ps.size(); ++i) {
    clients.emplace_back([&, i] {
      const json body = {
          {"model", "wt2-llama-1m"}, {"prompt", ps[i]}, {"max_tokens", n_new}, {"temperature", 0}};
      answers[i] = i % 2 ? stream(e, body) : complete(e, body);
    });
  }
  for (std::thread& t : clients) t.join();
  int64_t generated = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i) + (i % 2 ? " (stream)" : "") + ": " + ps[i]);
    const Answer& a = answers[i];
    const json& want = expected[i];
    ASSERT_EQ(a.status, 200) << a.error;
    EXPECT_TRUE(a.error.empty()) << a.error;
    EXPECT_EQ(a.text, want["text"].get<std::string>());
    EXPECT_EQ(a.prompt_tokens, static_cast<int64_t>(want["prompt_ids"].size()));
    EXPECT_EQ(a.completion_tokens, static_cast<int64_t>(want["new_ids"].size()));
    EXPECT_EQ(a.finish_reason, want["finish_reason"] == "length" ? "length" : "stop");
    if (i % 2) {
      EXPECT_TRUE(a.done);
    }
    generated += a.completion_tokens;
  }
  EXPECT_TRUE(wait_idle(e));
  // Requests were decoded together: far fewer decode steps than tokens.
  const double steps = serve::metric_value(metrics(e), "kvq_decode_steps_total");
  EXPECT_LT(steps, generated / 2.0) << generated << " tokens";
}

class Serve1m : public ::testing::Test {
 protected:
  void SetUp() override {
    KVQ_REQUIRE_DATA(kModel1m);
    KVQ_REQUIRE_DATA(test::kValid);
  }
  std::vector<std::string> model1m() const { return {"--model", data_path(kModel1m)}; }
  test::TempDir dir_;
};

TEST_F(Serve1m, ConcurrentRequestsEqualGenerateThenSigtermExitsZero) {
  const std::vector<std::string> ps = prompts();
  ASSERT_EQ(ps.size(), 32u);
  const json expected = generate("--kv fp16", ps, 24, dir_);
  std::vector<std::string> args = model1m();
  args.insert(args.end(), {"--kv", "fp16", "--max-running", "8", "--api-key", kKey});
  ServerProcess server(args);
  server.api_key = kKey;
  const serve::Endpoint e = server.start();
  ASSERT_GT(e.port, 0) << server.log();
  expect_concurrent_equal_generate(e, ps, expected, 24);
  if (HasFailure()) ADD_FAILURE() << "the server's log:\n" << server.log();

  // /v1/models says what the cache holds.
  const serve::HttpResult models = serve::http_get(e, "/v1/models");
  ASSERT_EQ(models.status, 200);
  const json m = json::parse(models.body)["data"][0];
  EXPECT_EQ(m["id"], "wt2-llama-1m");
  EXPECT_EQ(m["kv_cache"]["method"], "fp16");
  EXPECT_EQ(m["kv_cache"]["bits_per_element"], 16.0);
  EXPECT_EQ(m["context_length"], 512);

  // kvq bench serve against it: every level's requests succeed, JSON on stdout.
  const auto bench =
      run_kvq("bench serve --url http://127.0.0.1:" + std::to_string(e.port) + " --api-key " +
              kKey + " --concurrency 1,4 --requests 4 --max-tokens 8 --json");
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  const json b = json::parse(bench.out);
  ASSERT_EQ(b["levels"].size(), 2u);
  for (const json& level : b["levels"]) {
    EXPECT_EQ(level["ok"], 4);
    EXPECT_EQ(level["generated_tokens"], 32);  // EOS ignored: 4 x 8
    EXPECT_GT(level["requests_per_s"].get<double>(), 0);
    EXPECT_GT(level["ttft_p50_ms"].get<double>(), 0);
  }
  EXPECT_EQ(b["kv"], "fp16");
  // Markdown by default.
  const auto table = run_kvq("bench serve --url http://127.0.0.1:" + std::to_string(e.port) +
                             " --api-key " + kKey + " --concurrency 2 --requests 2 --max-tokens 4");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("| clients | requests | ok | requests/s | generated tok/s |"),
            std::string::npos)
      << table.out;
  EXPECT_TRUE(wait_idle(e));

  server.signal(SIGTERM);
  EXPECT_EQ(server.exit_code(30), 0) << server.log();
  EXPECT_NE(server.log().find("serve: SIGTERM: stopping"), std::string::npos) << server.log();
  EXPECT_NE(server.log().find("serve: stopped"), std::string::npos) << server.log();
  EXPECT_EQ(server.out(), "");  // logs go to stderr only
}

TEST_F(Serve1m, QuantCacheEqualsGenerate) {
  const auto c =
      run_kvq("calibrate --model " + quoted(data_path(kModel1m)) + " --data " +
              quoted(data_path(test::kValid)) + " --samples 2 --seq-len 256 --quiet --out " +
              quoted(dir_.file("calib.h5")));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const std::string quant = dir_.file("nuq3-1%.h5");
  const auto f = run_kvq("fit --method nuq3-1% --calib " + quoted(dir_.file("calib.h5")) +
                         " --model " + quoted(data_path(kModel1m)) + " --out " + quoted(quant));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  std::vector<std::string> ps = prompts();
  ps.resize(12);
  const json expected = generate("--quant " + quoted(quant), ps, 24, dir_);
  std::vector<std::string> args = model1m();
  args.insert(args.end(), {"--quant", quant, "--max-running", "4"});  // 8 wait at first
  ServerProcess server(args);
  const serve::Endpoint e = server.start();
  ASSERT_GT(e.port, 0) << server.log();
  expect_concurrent_equal_generate(e, ps, expected, 24);
  const std::string m = metrics(e);
  EXPECT_EQ(serve::metric_value(m, "kvq_kv_cache_bits_per_element{kv=\"nuq3-1%\"}") < 5, true) << m;
}

// A client that stops reading a stream: the server's next writes fail, the request is
// cancelled, its pages return to the pool.
TEST_F(Serve1m, DisconnectMidStreamFreesItsPages) {
  std::vector<std::string> args = model1m();
  args.insert(args.end(), {"--kv", "fp16"});
  ServerProcess server(args);
  const serve::Endpoint e = server.start();
  ASSERT_GT(e.port, 0) << server.log();
  const double cancelled_before =
      serve::metric_value(metrics(e), "kvq_requests_finished_total{reason=\"cancelled\"}");
  const json body = {
      {"prompt", "The game began"}, {"max_tokens", 500}, {"temperature", 0}, {"ignore_eos", true}};
  const serve::StreamResult r = serve::stream_completion(
      e, body, [](const serve::StreamResult& s) { return s.pieces.size() < 3; });
  EXPECT_TRUE(r.stopped);
  EXPECT_FALSE(r.done);
  EXPECT_TRUE(wait_idle(e)) << metrics(e);
  const std::string m = metrics(e);
  EXPECT_EQ(serve::metric_value(m, "kvq_requests_finished_total{reason=\"cancelled\"}"),
            cancelled_before + 1)
      << m;
  EXPECT_EQ(serve::metric_value(m, "kvq_requests_finished_total{reason=\"length\"}"), 0) << m;
  EXPECT_NE(server.log().find("client went away"), std::string::npos) << server.log();
  // The server goes on serving.
  EXPECT_EQ(complete(e, {{"prompt", "The game"}, {"max_tokens", 4}}).status, 200);
}

TEST_F(Serve1m, BadRequestsGetTheirStatusAndMessage) {
  std::vector<std::string> args = model1m();
  args.insert(args.end(), {"--kv", "fp16", "--api-key", kKey, "--max-body", "65536"});
  ServerProcess server(args);
  server.api_key = kKey;
  const serve::Endpoint e = server.start();
  ASSERT_GT(e.port, 0) << server.log();
  struct Case {
    std::string body;
    int status;
    std::string param, message;
  };
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "The game began development in 2010 . ";
  const std::vector<Case> cases = {
      {"{not json", 400, "", "request body: not valid JSON (at byte 3)"},
      {R"({"prompt": "x", "max_tokens": 0})", 400, "max_tokens",
       "max_tokens: expected a positive number of tokens, found 0"},
      {R"({"prompt": "x", "max_tokens": -1})", 400, "max_tokens",
       "max_tokens: expected a positive number of tokens, found -1"},
      {R"({"prompt": "x", "temperature": "warm"})", 400, "temperature",
       "temperature: expected a number, found a string"},
      {R"({"prompt": "x", "stream": 1})", 400, "stream",
       "stream: expected true or false, found an integer"},
      {R"({"prompt": "x", "stop": [1]})", 400, "stop",
       "stop: expected a string or an array of strings, found an integer"},
      {R"({"prompt": "x", "bogus": 1})", 400, "bogus", "bogus: unrecognized field (a typo?)"},
      {R"({"max_tokens": 3})", 400, "prompt",
       "prompt: required (a string or an array of token ids)"},
      {json{{"prompt", std::vector<int>(600, 7)}}.dump(), 400, "prompt",
       "prompt: 600 tokens, longer than the model's context of 512 tokens"},
      {json{{"prompt", long_text}}.dump(), 400, "prompt", "longer than the model's context"},
      {R"({"prompt": [1, 4096]})", 400, "prompt",
       "prompt: token id 4096 at index 1 outside the vocabulary 0..4095"},
      {R"({"prompt": [1, 2, 3], "max_tokens": 511})", 400, "max_tokens",
       "max_tokens: the prompt's 3 tokens + 511 new exceed the model's context of 512 tokens "
       "(at most 510 new)"},
      {json{{"prompt", std::string(70000, 'a')}}.dump(), 413, "",
       "request body: larger than 65536 bytes (the server's --max-body)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body.substr(0, 60));
    const serve::HttpResult r = serve::http_post_json(e, "/v1/completions", c.body);
    ASSERT_EQ(r.status, c.status) << r.error << r.body;
    const json err = json::parse(r.body)["error"];
    EXPECT_NE(err["message"].get<std::string>().find(c.message), std::string::npos) << r.body;
    if (c.status == 400) {
      EXPECT_EQ(err["type"], "invalid_request_error");
    }
    if (c.param.empty()) {
      EXPECT_TRUE(err["param"].is_null()) << r.body;
    } else {
      EXPECT_EQ(err["param"], c.param);
    }
    EXPECT_TRUE(err["code"].is_null());
  }
  // Streaming requests are checked before the stream starts: a plain 400.
  const serve::StreamResult s = serve::stream_completion(e, {{"prompt", "x"}, {"max_tokens", 0}});
  EXPECT_EQ(s.status, 400);
  EXPECT_EQ(s.error, "max_tokens: expected a positive number of tokens, found 0");

  const serve::HttpResult unknown = serve::http_get(e, "/v1/chat/completions");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_NE(unknown.body.find("no such endpoint: GET /v1/chat/completions"), std::string::npos);

  // Without the key, with another, with another scheme: 401 everywhere.
  for (const std::string key : {"", "test-key-0124", "test-key-012", "test-key-01234"}) {
    serve::Endpoint bad = e;
    bad.api_key = key;
    for (const std::string path : {"/health", "/v1/models", "/metrics", "/nope"}) {
      const serve::HttpResult r = serve::http_get(bad, path);
      EXPECT_EQ(r.status, 401) << key << " " << path;
      EXPECT_NE(r.body.find("missing or wrong API key"), std::string::npos) << r.body;
    }
    const serve::HttpResult r =
        serve::http_post_json(bad, "/v1/completions", R"({"prompt": "x", "max_tokens": 2})");
    EXPECT_EQ(r.status, 401) << key;
    EXPECT_EQ(json::parse(r.body)["error"]["type"], "authentication_error");
  }
  EXPECT_EQ(serve::http_get(e, "/health").status, 200);
  const std::string m = metrics(e);
  EXPECT_EQ(serve::metric_value(m, "kvq_requests_refused_total{reason=\"invalid_request\"}"), 13);
  EXPECT_EQ(serve::metric_value(m, "kvq_requests_refused_total{reason=\"too_large\"}"), 1);
  EXPECT_EQ(serve::metric_value(m, "kvq_requests_refused_total{reason=\"unauthorized\"}"), 20);
  EXPECT_EQ(serve::metric_value(m, "kvq_requests_refused_total{reason=\"not_found\"}"), 1);
}

// wt2-llama-18m decodes slowly enough on the CPU (~4 s for 1,000 tokens at batch 1) that a
// long stream is still running while the test fills the queue and signals the server.
TEST_F(Serve1m, FullQueueIs429AndSigtermLetsTheStreamFinish) {
  KVQ_REQUIRE_DATA(kModel18m);
  ServerProcess server({"--model", data_path(kModel18m), "--kv", "fp16", "--max-running", "1",
                        "--max-queue", "1", "--shutdown-timeout", "60"});
  const serve::Endpoint e = server.start();
  ASSERT_GT(e.port, 0) << server.log();
  const json long_body = {
      {"prompt", "The game began"}, {"max_tokens", 1000}, {"temperature", 0}, {"ignore_eos", true}};
  // A runs; B waits (the one slot is A's); C finds the queue full.
  Answer b, c;
  std::thread b_client;
  const serve::StreamResult a =
      serve::stream_completion(e, long_body, [&](const serve::StreamResult& s) {
        if (s.pieces.size() != 3) return true;
        b_client = std::thread([&] { b = complete(e, {{"prompt", "The"}, {"max_tokens", 4}}); });
        const Clock::time_point t0 = Clock::now();
        while (seconds_since(t0) < 10 &&
               serve::metric_value(metrics(e), "kvq_requests_waiting") < 1) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        c = complete(e, {{"prompt", "The"}, {"max_tokens", 4}});
        return false;  // A's client goes away: B runs
      });
  ASSERT_TRUE(b_client.joinable());
  b_client.join();
  EXPECT_TRUE(a.stopped);
  EXPECT_EQ(b.status, 200) << b.error;
  EXPECT_EQ(b.completion_tokens, 4);
  EXPECT_EQ(c.status, 429) << c.error;
  EXPECT_EQ(c.error,
            "server busy: 1 requests running and 1 waiting, the queue holds 1 (--max-queue); "
            "retry later");
  EXPECT_TRUE(wait_idle(e));
  EXPECT_EQ(serve::metric_value(metrics(e), "kvq_requests_refused_total{reason=\"queue_full\"}"),
            1);

  // SIGTERM while D streams: new connections are refused, D runs to its end, exit 0.
  int refused = 0, tokens_after_signal = 0;
  bool signalled = false;
  const serve::StreamResult d =
      serve::stream_completion(e, long_body, [&](const serve::StreamResult& s) {
        if (signalled) {
          ++tokens_after_signal;
        } else if (s.pieces.size() == 3) {
          server.signal(SIGTERM);
          signalled = true;
          serve::Endpoint probe = e;
          probe.timeout_s = 2;
          const Clock::time_point t0 = Clock::now();
          // The listening socket closes within a moment of the signal.
          while (seconds_since(t0) < 10 && refused == 0) {
            if (serve::http_get(probe, "/health").status < 0) ++refused;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }
        return true;
      });
  EXPECT_EQ(d.status, 200) << d.error;
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.finish_reason, "length");
  EXPECT_GT(tokens_after_signal, 100);
  EXPECT_EQ(refused, 1);
  EXPECT_EQ(server.exit_code(30), 0) << server.log();
}

TEST_F(Serve1m, BadFlagsAreOneLineErrors) {
  const std::string m = " --model " + quoted(data_path(kModel1m));
  test::expect_one_line_error(run_kvq("serve" + m), "serve", "--quant or --kv: give the KV cache");
  test::expect_one_line_error(run_kvq("serve" + m + " --kv int4"), "serve", "--kv: expected fp16");
  test::expect_one_line_error(run_kvq("serve" + m + " --kv fp16 --port 70000"), "serve",
                              "--port: expected 0..65535");
  test::expect_one_line_error(run_kvq("serve" + m + " --kv fp16 --max-running 0"), "serve",
                              "--max-running: expected 1..4096, found 0");
  test::expect_one_line_error(run_kvq("serve --model " + quoted(dir_.file("none")) + " --kv fp16"),
                              "serve", "--model: " + dir_.file("none") + ": no such file");
  test::expect_one_line_error(run_kvq("serve" + m + " --kv fp16 --api-key 'a b'"), "serve",
                              "--api-key: contains white space");
  test::expect_one_line_error(run_kvq("serve" + m + " --quant " + quoted(dir_.file("no.h5"))),
                              "serve", "no.h5");
  test::expect_one_line_error(run_kvq("serve" + m + " --kv fp16 --host 203.0.113.7 --port 1"),
                              "serve", "--host 203.0.113.7 --port 1: cannot listen there");
  test::expect_one_line_error(run_kvq("bench serve --url localhost:8080"), "bench serve",
                              "--url: expected http://HOST:PORT, found 'localhost:8080'");
  test::expect_one_line_error(run_kvq("bench serve --concurrency 0"), "bench serve",
                              "--concurrency: expected 1..4096 clients, found 0");
  test::expect_one_line_error(run_kvq("bench serve --concurrency 1,4,1"), "bench serve",
                              "--concurrency: '1' is given twice");
  // Nobody listens on port 1: the bench says so instead of waiting forever.
  test::expect_one_line_error(run_kvq("bench serve --url http://127.0.0.1:1 --wait-ready 0"),
                              "bench serve", "--url: http://127.0.0.1:1 is not ready");
  ServerProcess first({"--model", data_path(kModel1m), "--kv", "fp16"});
  const serve::Endpoint e = first.start();
  ASSERT_GT(e.port, 0) << first.log();
  // A port in use (run as a child process: were the bind to succeed, the test would not hang).
  ServerProcess second({"--model", data_path(kModel1m), "--kv", "fp16"}, e.port);
  EXPECT_EQ(second.exit_code(60), 1) << second.log();
  EXPECT_EQ(second.log(), "kvq serve: error: --host 127.0.0.1 --port " + std::to_string(e.port) +
                              ": cannot listen there (Address already in use)\n");
}

}  // namespace
}  // namespace kvq
