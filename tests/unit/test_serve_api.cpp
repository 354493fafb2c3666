// kvq serve's wire format without a socket (lib/kvq/serve: api.h, metrics.h, client.h's parsers):
// every bad request field with its status, param and message, the defaults, the prompt against
// the context and the pool, the response documents' shapes, the API key comparison, the
// Prometheus text, Server-Sent Events split at every byte, URLs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kvq/serve/api.h"
#include "kvq/serve/client.h"
#include "kvq/serve/metrics.h"
#include "support/test_support.h"

namespace kvq::serve {
namespace {

using nlohmann::json;

struct Refusal {
  int status = 0;
  std::string param, message;
};

Refusal refusal_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ApiError& e) {
    return {e.status(), e.param(), e.what()};
  }
  return {0, "", "<no error>"};
}

TEST(ServeApi, EveryBadFieldIsA400NamingIt) {
  struct Case {
    std::string body, param, message;
  };
  const std::vector<Case> cases = {
      {"{bad", "", "request body: not valid JSON (at byte 2)"},
      {"", "", "request body: not valid JSON (at byte 1)"},
      {"[1, 2]", "", "request body: expected a JSON object, found an array"},
      {"{}", "prompt", "prompt: required (a string or an array of token ids)"},
      {R"({"prompt": null})", "prompt",
       "prompt: expected a string or an array of token ids, found null"},
      {R"({"prompt": 5})", "prompt",
       "prompt: expected a string or an array of token ids, found an integer"},
      {R"({"prompt": []})", "prompt", "prompt: an empty array of token ids"},
      {R"({"prompt": ["a", "b"]})", "prompt",
       "prompt: expected one prompt (a string or an array of token ids), found an array of "
       "strings: send one request per prompt"},
      {R"({"prompt": [1, 2.5]})", "prompt",
       "prompt: expected an array of integer token ids, found a number"},
      {R"({"prompt": [1, -3]})", "prompt", "prompt: token id -3 at index 1 is not a token id"},
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens",
       "max_tokens: expected a positive number of tokens, found 0"},
      {R"({"prompt": "x", "max_tokens": -5})", "max_tokens",
       "max_tokens: expected a positive number of tokens, found -5"},
      {R"({"prompt": "x", "max_tokens": "16"})", "max_tokens",
       "max_tokens: expected an integer, found a string"},
      {R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens",
       "max_tokens: expected an integer, found a number"},
      {R"({"prompt": "x", "max_tokens": 18446744073709551615})", "max_tokens",
       "max_tokens: 18446744073709551615 is out of range"},
      {R"({"prompt": "x", "temperature": -0.5})", "temperature",
       "temperature: expected >= 0 (0: greedy), found -0.5"},
      {R"({"prompt": "x", "temperature": "hot"})", "temperature",
       "temperature: expected a number, found a string"},
      {R"({"prompt": "x", "top_p": 0})", "top_p", "top_p: expected a number in (0, 1], found 0"},
      {R"({"prompt": "x", "top_p": 1.5})", "top_p",
       "top_p: expected a number in (0, 1], found 1.5"},
      {R"({"prompt": "x", "top_k": -2})", "top_k",
       "top_k: expected -1 or 0 (all) or a count, found -2"},
      {R"({"prompt": "x", "top_k": true})", "top_k", "top_k: expected an integer, found a boolean"},
      {R"({"prompt": "x", "seed": "1"})", "seed", "seed: expected an integer, found a string"},
      {R"({"prompt": "x", "stop": 3})", "stop",
       "stop: expected a string or an array of strings, found an integer"},
      {R"({"prompt": "x", "stop": ["a", 3]})", "stop",
       "stop: expected a string or an array of strings, found an integer"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", "stop",
       "stop: at most 4 stop strings, found 5"},
      {R"({"prompt": "x", "stop": ""})", "stop", "stop: an empty stop string"},
      {R"({"prompt": "x", "stream": "yes"})", "stream",
       "stream: expected true or false, found a string"},
      {R"({"prompt": "x", "stream": true, "stream_options": 1})", "stream_options",
       "stream_options: expected an object, found an integer"},
      {R"({"prompt": "x", "stream": true, "stream_options": {"x": true}})", "stream_options",
       "stream_options: unrecognized option 'x' (only include_usage)"},
      {R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage",
       "stream_options.include_usage: expected true or false, found an integer"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options",
       "stream_options: only allowed with \"stream\": true"},
      {R"({"prompt": "x", "ignore_eos": 1})", "ignore_eos",
       "ignore_eos: expected true or false, found an integer"},
      {R"({"prompt": "x", "model": 7})", "model", "model: expected a string, found an integer"},
      {R"({"prompt": "x", "user": 7})", "user", "user: expected a string, found an integer"},
      {R"({"prompt": "x", "n": 2})", "n", "n: only 1 is supported, found 2"},
      {R"({"prompt": "x", "best_of": 3})", "best_of", "best_of: only 1 is supported, found 3"},
      {R"({"prompt": "x", "echo": true})", "echo", "echo: echo is not supported (only false)"},
      {R"({"prompt": "x", "logprobs": 5})", "logprobs",
       "logprobs: log probabilities are not supported (only null or 0)"},
      {R"({"prompt": "x", "suffix": "end"})", "suffix", "suffix: suffix is not supported"},
      {R"({"prompt": "x", "presence_penalty": 0.5})", "presence_penalty",
       "presence_penalty: penalties are not supported (only 0), found 0.5"},
      {R"({"prompt": "x", "logit_bias": {"1": 5}})", "logit_bias",
       "logit_bias: logit_bias is not supported (only {})"},
      {R"({"prompt": "x", "max_token": 3})", "max_token",
       "max_token: unrecognized field (a typo?)"},
      {R"({"prompt": "x", "max_tokens": 3, "max_tokens": 300})", "",
       "request body: expected unique keys, found 'max_tokens' twice in /"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    const Refusal r = refusal_of([&] { parse_completion_request(c.body); });
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.param, c.param);
    EXPECT_EQ(r.message, c.message);
  }
}

TEST(ServeApi, DefaultsAreOpenAIsAndEveryFieldParses) {
  const CompletionRequest d = parse_completion_request(R"({"prompt": "hello"})");
  EXPECT_TRUE(d.prompt_is_text);
  EXPECT_EQ(d.prompt_text, "hello");
  EXPECT_EQ(d.max_tokens, 16);
  EXPECT_EQ(d.sampling.temperature, 1.0);
  EXPECT_EQ(d.sampling.top_p, 1.0);
  EXPECT_EQ(d.sampling.top_k, 0);
  EXPECT_FALSE(d.seed_given);
  EXPECT_FALSE(d.stream);
  EXPECT_FALSE(d.ignore_eos);
  EXPECT_TRUE(d.stop.empty());

  const CompletionRequest r = parse_completion_request(R"({
      "model": "any", "prompt": [1, 5, 9], "max_tokens": 7, "temperature": 0, "top_p": 0.9,
      "top_k": 40, "seed": 42, "stop": ["\n\n", "="], "stream": true,
      "stream_options": {"include_usage": true}, "ignore_eos": true, "n": 1, "best_of": 1,
      "echo": false, "logprobs": null, "suffix": null, "presence_penalty": 0,
      "frequency_penalty": 0.0, "logit_bias": {}, "user": "u"})");
  EXPECT_FALSE(r.prompt_is_text);
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{1, 5, 9}));
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.sampling.temperature, 0.0);
  EXPECT_EQ(r.sampling.top_p, 0.9);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "="}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.ignore_eos);
  // A single stop string, null fields at their defaults, top_k -1 meaning all.
  const CompletionRequest s = parse_completion_request(
      R"({"prompt": "", "stop": "\n", "max_tokens": null, "temperature": null, "top_k": -1})");
  EXPECT_EQ(s.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(s.max_tokens, 16);
  EXPECT_EQ(s.sampling.top_k, 0);
}

TEST(ServeApi, PromptAgainstContextVocabularyAndPool) {
  const ModelLimits limits{/*context=*/16, /*vocab=*/100, /*pool_tokens=*/12};
  // A fake tokenizer: BOS, then one token per byte.
  const auto encode = [](std::string_view text) {
    std::vector<int32_t> ids{1};
    for (char c : text) ids.push_back(static_cast<unsigned char>(c) % 90 + 5);
    return ids;
  };
  const auto request = [](const std::string& body) { return parse_completion_request(body); };
  EXPECT_EQ(prompt_tokens(request(R"({"prompt": "ab", "max_tokens": 4})"), limits, encode).size(),
            3u);
  EXPECT_EQ(prompt_tokens(request(R"({"prompt": [7, 8], "max_tokens": 11})"), limits, encode),
            (std::vector<int32_t>{7, 8}));
  const auto refused = [&](const std::string& body) {
    return refusal_of([&] { prompt_tokens(request(body), limits, encode); });
  };
  Refusal r = refused(R"({"prompt": "a long prompt here", "max_tokens": 1})");
  EXPECT_EQ(r.param, "prompt");
  EXPECT_EQ(r.message, "prompt: 19 tokens, longer than the model's context of 16 tokens");
  r = refused(R"({"prompt": [1, 100], "max_tokens": 1})");
  EXPECT_EQ(r.message, "prompt: token id 100 at index 1 outside the vocabulary 0..99");
  r = refused(R"({"prompt": "abcdefghij", "max_tokens": 8})");
  EXPECT_EQ(r.param, "max_tokens");
  EXPECT_EQ(r.message,
            "max_tokens: the prompt's 11 tokens + 8 new exceed the model's context of 16 tokens "
            "(at most 6 new)");
  r = refused(R"({"prompt": [5, 6], "max_tokens": 12})");
  EXPECT_EQ(r.param, "max_tokens");
  EXPECT_EQ(r.message,
            "max_tokens: the prompt's 2 tokens + 12 new exceed the 12 tokens the whole KV cache "
            "holds (the server's --kv-mem)");
  EXPECT_EQ(r.status, 400);
}

TEST(ServeApi, ResponseDocumentsHaveOpenAIsShape) {
  const json c = completion_json("cmpl-1", 1700000000, "m", "hi", "length", {5, 2});
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["id"], "cmpl-1");
  EXPECT_EQ(c["created"], 1700000000);
  EXPECT_EQ(c["model"], "m");
  EXPECT_EQ(c["choices"].size(), 1u);
  EXPECT_EQ(c["choices"][0]["index"], 0);
  EXPECT_EQ(c["choices"][0]["text"], "hi");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(c["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(c["usage"],
            (json{{"prompt_tokens", 5}, {"completion_tokens", 2}, {"total_tokens", 7}}));
  const json chunk = chunk_json("cmpl-1", 1, "m", "x", "");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(chunk.contains("usage"));
  const json usage = usage_chunk_json("cmpl-1", 1, "m", {3, 4});
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  EXPECT_EQ(finish_reason("eos"), "stop");
  EXPECT_EQ(finish_reason("stop"), "stop");
  EXPECT_EQ(finish_reason("length"), "length");
  const json e = error_json(ApiError(400, "invalid_request_error", "top_p", "top_p: bad"));
  EXPECT_EQ(e, (json{{"error",
                      {{"message", "top_p: bad"},
                       {"type", "invalid_request_error"},
                       {"param", "top_p"},
                       {"code", nullptr}}}}));
  EXPECT_TRUE(
      error_json(ApiError(429, "rate_limit_error", "", "busy"))["error"]["param"].is_null());
}

TEST(ServeApi, ApiKeyMustMatchExactly) {
  EXPECT_TRUE(authorized("Bearer s3cret", "s3cret"));
  EXPECT_FALSE(authorized("", "s3cret"));
  EXPECT_FALSE(authorized("Bearer", "s3cret"));
  EXPECT_FALSE(authorized("Bearer s3cre", "s3cret"));
  EXPECT_FALSE(authorized("Bearer s3cret2", "s3cret"));
  EXPECT_FALSE(authorized("Bearer s3creT", "s3cret"));
  EXPECT_FALSE(authorized("bearer s3cret", "s3cret"));
  EXPECT_FALSE(authorized("Basic s3cret", "s3cret"));
  EXPECT_FALSE(authorized("s3cret", "s3cret"));
  EXPECT_FALSE(authorized("Bearer ", ""));  // an empty key never authorizes
}

TEST(ServeMetrics, PrometheusTextHasEveryFigure) {
  MetricsSnapshot m;
  m.ready = true;
  m.running = 3;
  m.waiting = 2;
  m.pages_total = 16;
  m.pages_free = 10;
  m.page_size = 256;
  m.bytes_per_token = 1024;
  m.bits_per_element = 3.5;
  m.kv = "nuq3-1%";
  m.generated_tokens = 99;
  m.finished["length"] = 4;
  m.refused["queue_full"] = 2;
  m.ttft_seconds_sum = 0.5;
  m.ttft_count = 4;
  const std::string text = prometheus_text(m);
  EXPECT_EQ(metric_value(text, "kvq_ready"), 1);
  EXPECT_EQ(metric_value(text, "kvq_requests_running"), 3);
  EXPECT_EQ(metric_value(text, "kvq_requests_waiting"), 2);
  EXPECT_EQ(metric_value(text, "kvq_kv_pages_total"), 16);
  EXPECT_EQ(metric_value(text, "kvq_kv_pages_used"), 6);
  EXPECT_EQ(metric_value(text, "kvq_kv_pages_free"), 10);
  EXPECT_EQ(metric_value(text, "kvq_generated_tokens_total"), 99);
  EXPECT_EQ(metric_value(text, "kvq_kv_cache_bits_per_element{kv=\"nuq3-1%\"}"), 3.5);
  EXPECT_EQ(metric_value(text, "kvq_kv_cache_bytes_per_token{kv=\"nuq3-1%\"}"), 1024);
  EXPECT_EQ(metric_value(text, "kvq_requests_finished_total{reason=\"length\"}"), 4);
  EXPECT_EQ(metric_value(text, "kvq_requests_finished_total{reason=\"cancelled\"}"), 0);
  EXPECT_EQ(metric_value(text, "kvq_requests_refused_total{reason=\"queue_full\"}"), 2);
  EXPECT_EQ(metric_value(text, "kvq_requests_refused_total{reason=\"unauthorized\"}"), 0);
  EXPECT_EQ(metric_value(text, "kvq_time_to_first_token_seconds_count"), 4);
  EXPECT_EQ(metric_value(text, "kvq_no_such_metric"), -1);
  EXPECT_NE(text.find("# TYPE kvq_generated_tokens_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE kvq_kv_pages_free gauge\n"), std::string::npos);
  EXPECT_EQ(text.back(), '\n');
}

TEST(ServeMetrics, RateOverTheWindowFallsToZeroWhenIdle) {
  RateWindow w(/*window_s=*/10);
  EXPECT_EQ(w.rate(0), 0);
  w.add(0, 0);
  w.add(1, 100);
  w.add(2, 200);
  EXPECT_DOUBLE_EQ(w.rate(2), 100);
  for (int t = 3; t <= 30; ++t) w.add(t, 200);  // idle
  EXPECT_DOUBLE_EQ(w.rate(30), 0);
}

TEST(ServeClient, SseEventsSurviveEveryChunkBoundary) {
  const std::string stream =
      ": keep-alive\n\ndata: {\"a\":1}\n\ndata: two\r\ndata: lines\r\n\r\nevent: x\ndata: "
      "[DONE]\n\n";
  const std::vector<std::string> want = {"{\"a\":1}", "two\nlines", "[DONE]"};
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    SseParser p;
    std::vector<std::string> got;
    const auto on = [&](const std::string& d) { got.push_back(d); };
    p.feed(std::string_view(stream).substr(0, cut), on);
    p.feed(std::string_view(stream).substr(cut), on);
    EXPECT_EQ(got, want) << "cut at " << cut;
  }
}

TEST(ServeClient, UrlsAreHttpHostPort) {
  const Endpoint e = parse_url("http://127.0.0.1:8080/", "--url");
  EXPECT_EQ(e.host, "127.0.0.1");
  EXPECT_EQ(e.port, 8080);
  EXPECT_EQ(parse_url("http://localhost:1", "--url").host, "localhost");
  EXPECT_EQ(test::error_of([] { parse_url("https://x:1", "--url"); }),
            "--url: expected http://HOST:PORT, found 'https://x:1' (only plain http)");
  EXPECT_EQ(test::error_of([] { parse_url("http://x", "--url"); }),
            "--url: expected http://HOST:PORT, found 'http://x' (no port)");
  EXPECT_EQ(test::error_of([] { parse_url("http://x:0", "--url"); }),
            "--url: expected http://HOST:PORT, found 'http://x:0' (port not in 1..65535)");
  EXPECT_EQ(test::error_of([] { parse_url("http://x:80/v1", "--url"); }),
            "--url: expected http://HOST:PORT, found 'http://x:80/v1' (no path after the port)");
}

}  // namespace
}  // namespace kvq::serve
