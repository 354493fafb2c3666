// The runtime (lib/kvq/runtime: engine, stores, generator) on the CPU with the real small
// models: greedy generation against the transformers references, batching that changes
// nothing, a quant.h5 served as kvq eval defines its cache, and every refusal leaving the engine
// usable. GPU twins: tests/gpu/test_runtime_cuda.cpp.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kvq/methods/fit.h"
#include "kvq/methods/quant_file.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"
#include "kvq/runtime/engine.h"
#include "kvq/runtime/generator.h"
#include "support/test_support.h"

namespace kvq {
namespace {

using test::data_path;
using test::kModel18m;
using test::kModel1m;
using test::kTest;
using test::kValid;
using test::quoted;
using test::run_kvq;

std::vector<int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

// Greedy tokens of each prompt through one generator (all submitted at once).
std::vector<std::vector<int32_t>> generate_all(runtime::Engine& engine,
                                               const std::vector<std::vector<int32_t>>& prompts,
                                               int64_t n_new) {
  runtime::Generator gen(engine, nullptr);
  std::vector<int64_t> ids;
  for (const auto& p : prompts) {
    runtime::Request r;
    r.prompt = p;
    r.max_new_tokens = n_new;
    r.stop_at_eos = false;
    ids.push_back(gen.submit(r));
  }
  for (int guard = 0; !gen.done() && guard < 100000; ++guard) gen.step();
  EXPECT_TRUE(gen.done());
  std::vector<std::vector<int32_t>> out;
  for (int64_t id : ids) out.push_back(gen.completion(id).tokens);
  EXPECT_EQ(engine.free_pages(), engine.total_pages());  // every page back
  return out;
}

// quant.h5 files fitted once for the suite from a small calibration of wt2-llama-1m.
class Runtime1m : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_data(kModel1m)) return;
    dir_ = new test::TempDir;
    const auto r = run_kvq("calibrate --model " + quoted(data_path(kModel1m)) + " --data " +
                           quoted(data_path(kValid)) + " --samples 2 --seq-len 256 --quiet --out " +
                           quoted(dir_->file("calib.h5")));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const char* method : {"nuq3-1%", "kivi2-g32-r128", "skvq-k2-v2-g32-w64"}) {
      const auto f =
          run_kvq(std::string("fit --method ") + quoted(method) + " --calib " +
                  quoted(dir_->file("calib.h5")) + " --model " + quoted(data_path(kModel1m)) +
                  " --out " + quoted(dir_->file(std::string(method) + ".h5")));
      ASSERT_EQ(f.exit_code, 0) << f.err;
    }
    model_ = new model::LlamaModel(model::LlamaModel::load(data_path(kModel1m)));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }
  void SetUp() override { KVQ_REQUIRE_DATA(kModel1m); }
  static std::string quant(const std::string& method) { return dir_->file(method + ".h5"); }
  static test::TempDir* dir_;
  static model::LlamaModel* model_;
};
test::TempDir* Runtime1m::dir_ = nullptr;
model::LlamaModel* Runtime1m::model_ = nullptr;

TEST_F(Runtime1m, Fp16CacheGivesTheReferenceGreedyTokens) {
  const auto ref = nlohmann::json::parse(test::read_file(data_path(kModel1m) + "/reference.json"));
  const methods::Quantizer fp16 = methods::fit(methods::parse_method("fp16"), nullptr);
  runtime::Engine engine(*model_, fp16, {});
  const auto out = generate_all(
      engine,
      {ids_of(ref["greedy"]["bos"]["prompt_ids"]), ids_of(ref["greedy"]["prompt16"]["prompt_ids"])},
      64);
  EXPECT_EQ(out[0], ids_of(ref["greedy"]["bos"]["new_ids"]));
  EXPECT_EQ(out[1], ids_of(ref["greedy"]["prompt16"]["new_ids"]));
}

// 8 prompts of different lengths in one batch (joining as slots free up, pool and slots
// smaller than the load) give each prompt the tokens it gets alone.
TEST_F(Runtime1m, BatchedGreedyEqualsAlone) {
  const auto ref = nlohmann::json::parse(test::read_file(data_path(kModel1m) + "/reference.json"));
  const std::vector<int32_t> text = ids_of(ref["greedy"]["prompt16"]["prompt_ids"]);
  std::vector<std::vector<int32_t>> prompts;
  for (size_t n : {1, 3, 16, 7, 12, 2, 9, 5}) {
    prompts.emplace_back(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(n));
  }
  // fp16 and nuq3-1%: rows of one pool, one attention for the batch; KIVI and SKVQ (fp16
  // windows): a cache per sequence.
  for (const std::string method : {"fp16", "nuq3-1%", "kivi2-g32-r128", "skvq-k2-v2-g32-w64"}) {
    SCOPED_TRACE(method);
    const methods::Quantizer q = method == "fp16"
                                     ? methods::fit(methods::parse_method("fp16"), nullptr)
                                     : methods::read_quant(quant(method));
    runtime::EngineOptions batched;
    batched.max_batch = 5;  // fewer slots than prompts: three wait, then join
    batched.prefill_chunk = 4;
    runtime::Engine many(*model_, q, batched);
    const auto together = generate_all(many, prompts, 150);  // KIVI's residual flushes
    runtime::EngineOptions single;
    single.max_batch = 1;
    runtime::Engine one(*model_, q, single);
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(together[i], generate_all(one, {prompts[i]}, 150)[0]) << "prompt " << i;
    }
  }
}

TEST_F(Runtime1m, RefusalsLeaveTheEngineUsable) {
  const methods::Quantizer q = methods::read_quant(quant("nuq3-1%"));
  runtime::EngineOptions o;
  o.max_batch = 2;
  runtime::Engine engine(*model_, q, o);
  runtime::Generator gen(engine, nullptr);
  runtime::Request empty;
  empty.max_new_tokens = 4;
  EXPECT_NE(test::error_of([&] { gen.submit(empty); }).find("prompt: no tokens"),
            std::string::npos);
  runtime::Request too_long;
  too_long.prompt.assign(500, 5);
  too_long.max_new_tokens = 20;
  EXPECT_NE(test::error_of([&] {
              gen.submit(too_long);
            }).find("500 tokens + 20 new tokens exceed the model's context of 512"),
            std::string::npos);
  runtime::Request bad_token{{1, 99999}, 4, {}, {}, true};
  EXPECT_NE(test::error_of([&] { gen.submit(bad_token); }).find("outside the vocabulary"),
            std::string::npos);
  runtime::Request hot{{1, 5}, 4, {}, {}, true};
  hot.sampling.top_p = 0;
  EXPECT_NE(test::error_of([&] { gen.submit(hot); }).find("top_p"), std::string::npos);
  EXPECT_TRUE(gen.done());
  runtime::Request ok{{1, 299, 13}, 8, {}, {}, false};
  const int64_t id = gen.submit(ok);
  while (!gen.done()) gen.step();
  EXPECT_EQ(gen.completion(id).tokens.size(), 8u);
  EXPECT_EQ(engine.free_pages(), engine.total_pages());
}

// Requests that need more pages than are free wait (and say why); larger than the pool: refused.
TEST_F(Runtime1m, OutOfPagesWaitsOrIsRefused) {
  const methods::Quantizer q = methods::read_quant(quant("nuq3-1%"));
  runtime::EngineOptions o;
  o.max_batch = 4;
  // The CPU store holds 2 x 4 layers x 2 heads x 32 x 4 bytes = 2 KiB per token: 2 pages.
  o.kv_mem_gib = 2.0 * 256 * 2048 / double(1 << 30);
  runtime::Engine engine(*model_, q, o);
  ASSERT_EQ(engine.total_pages(), 2);
  runtime::Generator gen(engine, nullptr);
  runtime::Request big{std::vector<int32_t>(300, 7), 200, {}, {}, false};  // 499 tokens: 2 pages
  runtime::Request small{{1, 2, 3}, 10, {}, {}, false};
  const int64_t a = gen.submit(big), b = gen.submit(small);
  gen.step();
  EXPECT_EQ(gen.running(), 1);
  EXPECT_EQ(gen.waiting(), 1);
  EXPECT_NE(gen.waiting_reason().find("needs 1 cache pages, 0 of 2 are free"), std::string::npos)
      << gen.waiting_reason();
  for (int guard = 0; !gen.done() && guard < 1000; ++guard) gen.step();
  EXPECT_EQ(gen.completion(a).tokens.size(), 200u);
  EXPECT_EQ(gen.completion(b).tokens.size(), 10u);
  // release() hands the result over once and forgets it (kvq serve runs for days).
  EXPECT_EQ(gen.release(a).tokens.size(), 200u);
  EXPECT_EQ(test::error_of([&] { gen.release(a); }), "generate: request 0 has not finished");
  o.kv_mem_gib = 1.0 * 256 * 2048 / double(1 << 30);
  runtime::Engine tiny(*model_, q, o);
  runtime::Generator g2(tiny, nullptr);
  EXPECT_NE(test::error_of([&] { g2.submit(big); }).find("the whole pool holds 1"),
            std::string::npos);
}

// The fp16 cache's rows are as long as the longest sequence: within 3 pages a sequence of 498
// tokens and one of 12 take 3 pages but 2 rows of 498; the second waits until the first ends,
// and both give the tokens they get alone.
TEST_F(Runtime1m, Fp16RowsWaitForRoomAndMatchAlone) {
  const methods::Quantizer q = methods::fit(methods::parse_method("fp16"), nullptr);
  runtime::EngineOptions o;
  o.max_batch = 4;
  // 2 x 4 layers x 2 heads x 32 x 4 bytes = 2 KiB per token: 3 pages.
  o.kv_mem_gib = 3.0 * 256 * 2048 / double(1 << 30);
  runtime::Engine engine(*model_, q, o);
  ASSERT_EQ(engine.total_pages(), 3);
  runtime::Generator gen(engine, nullptr);
  runtime::Request big{std::vector<int32_t>(300, 7), 199, {}, {}, false};
  runtime::Request small{{1, 2, 3}, 10, {}, {}, false};
  const int64_t a = gen.submit(big), b = gen.submit(small);
  gen.step();
  EXPECT_EQ(gen.running(), 1);
  EXPECT_EQ(gen.waiting(), 1);
  EXPECT_NE(gen.waiting_reason().find("12 tokens do not fit beside the running sequences"),
            std::string::npos)
      << gen.waiting_reason();
  for (int guard = 0; !gen.done() && guard < 1000; ++guard) gen.step();
  const auto big_tokens = gen.completion(a).tokens, small_tokens = gen.completion(b).tokens;
  EXPECT_EQ(big_tokens.size(), 199u);
  EXPECT_EQ(small_tokens.size(), 10u);
  runtime::Engine alone(*model_, q, {});
  EXPECT_EQ(generate_all(alone, {big.prompt}, 199)[0], big_tokens);
  EXPECT_EQ(generate_all(alone, {small.prompt}, 10)[0], small_tokens);
}

// A sequence filled with random content (kvq bench e2e) decodes beside a prefilled one without
// touching it: the prefilled sequence's logits are those it gets alone (to rounding).
TEST_F(Runtime1m, FillRandomDecodesBesideAPrefilledSequence) {
  const methods::Quantizer q = methods::read_quant(quant("nuq3-1%"));
  const std::vector<int32_t> prompt = {1, 299, 13, 40, 7};
  runtime::Engine alone(*model_, q, {});
  const int64_t a0 = alone.open(64);
  alone.prefill(a0, prompt);
  const at::Tensor want = alone.decode({a0}, {11});

  runtime::Engine engine(*model_, q, {});
  const int64_t filled = engine.open(300);
  engine.fill_random(filled, 290);
  EXPECT_EQ(engine.length(filled), 290);
  const int64_t a = engine.open(64);
  engine.prefill(a, prompt);
  const at::Tensor got = engine.decode({filled, a}, {3, 11});
  EXPECT_TRUE(got.isfinite().all().item<bool>());
  EXPECT_TRUE(at::allclose(got[1], want[0], 1e-4, 1e-4));  // batch 2 vs 1: gemm rounding
  EXPECT_EQ(engine.length(filled), 291);
  EXPECT_NE(test::error_of([&] { engine.fill_random(filled, 5); }).find("already holds 291"),
            std::string::npos);
  const int64_t b = engine.open(100);
  EXPECT_NE(test::error_of([&] { engine.fill_random(b, 101); }).find("expected 1..100 tokens"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { engine.fill_random(b + 1, 5); }).find("no open sequence"),
            std::string::npos);
  engine.close(filled);
  engine.close(a);
  engine.close(b);
  EXPECT_EQ(engine.free_pages(), engine.total_pages());
}

TEST_F(Runtime1m, SamplingIsSeededAndStopsAtStopStrings) {
  const methods::Quantizer q = methods::read_quant(quant("nuq3-1%"));
  runtime::Engine engine(*model_, q, {});
  const auto tok = model::open_tokenizer_for_model(data_path(kModel1m), 4096);
  auto run = [&](runtime::Request r) {
    runtime::Generator gen(engine, tok.get());
    const int64_t id = gen.submit(std::move(r));
    std::string streamed;
    while (!gen.done()) {
      for (const auto& e : gen.step()) streamed += e.text;
    }
    EXPECT_EQ(streamed, gen.completion(id).text);
    return gen.completion(id);
  };
  runtime::Request r{tok->encode("The game", true), 40, {}, {}, false};
  r.sampling = {0.9, 40, 0.95, 7};
  const auto a = run(r), b = run(r);
  EXPECT_EQ(a.tokens, b.tokens);  // same seed, same tokens
  r.sampling.seed = 8;
  EXPECT_NE(run(r).tokens, a.tokens);
  // Greedy text cut before the first stop string found in it.
  runtime::Request g{tok->encode("The game", true), 40, {}, {}, false};
  const auto full = run(g);
  // The text decoded token by token is the whole decoding less the prompt's.
  std::vector<int32_t> all = g.prompt;
  all.insert(all.end(), full.tokens.begin(), full.tokens.end());
  EXPECT_EQ(full.text, tok->decode(all).substr(tok->decode(g.prompt).size()));
  const std::string stop = full.text.substr(10, 3);
  g.stop = {stop};
  const auto cut = run(g);
  EXPECT_EQ(cut.finish_reason, "stop");
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(stop)));
}

// Text decoded token by token (generator.cpp) equals the whole decoding less the prompt's, also
// for near-random tokens at a high temperature: byte-fallback pieces that split characters,
// invalid UTF-8, leading spaces; and the stream adds up to it.
TEST_F(Runtime1m, IncrementalTextEqualsTheWholeDecoding) {
  const methods::Quantizer fp16 = methods::fit(methods::parse_method("fp16"), nullptr);
  runtime::Engine engine(*model_, fp16, {});
  const auto tok = model::open_tokenizer_for_model(data_path(kModel1m), 4096);
  for (const uint64_t seed : {1, 2, 3}) {
    runtime::Request r{tok->encode("Caf\xC3\xA9 \xE6\x97\xA5 the", true), 300, {}, {}, false};
    r.sampling = {4.0, 0, 1.0, seed};
    runtime::Generator gen(engine, tok.get());
    const int64_t id = gen.submit(r);
    std::string streamed;
    while (!gen.done()) {
      for (const auto& e : gen.step()) streamed += e.text;
    }
    const runtime::Completion& c = gen.completion(id);
    std::vector<int32_t> all = r.prompt;
    all.insert(all.end(), c.tokens.begin(), c.tokens.end());
    EXPECT_EQ(c.text, tok->decode(all).substr(tok->decode(r.prompt).size())) << "seed " << seed;
    EXPECT_EQ(streamed, c.text);
  }
}

TEST_F(Runtime1m, RefusesAnArtifactOfAnotherModel) {
  KVQ_REQUIRE_DATA(kModel18m);
  const auto r = run_kvq("generate --model " + quoted(data_path(kModel18m)) + " --quant " +
                         quoted(quant("nuq3-1%")) + " --prompt hi -n 4");
  test::expect_one_line_error(r, "generate", "made for a different model");
}

TEST_F(Runtime1m, CliGeneratesStreamsAndReports) {
  const auto ref = nlohmann::json::parse(test::read_file(data_path(kModel1m) + "/reference.json"));
  const auto j = run_kvq("generate --model " + quoted(data_path(kModel1m)) +
                         " --kv fp16 --prompt '' -n 64 --ignore-eos --json");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const auto doc = nlohmann::json::parse(j.out);
  EXPECT_EQ(doc["new_ids"], ref["greedy"]["bos"]["new_ids"]);
  EXPECT_GT(doc["stats"]["decode_tokens_per_s"].get<double>(), 0);
  const auto s = run_kvq("generate --model " + quoted(data_path(kModel1m)) + " --quant " +
                         quoted(quant("nuq3-1%")) + " --prompt 'The game' -n 16");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(s.out.rfind("The game", 0), 0u) << s.out;
  EXPECT_NE(s.err.find("bits per element"), std::string::npos) << s.err;
  EXPECT_NE(s.err.find("decode"), std::string::npos) << s.err;
  test::write_file(dir_->file("p.jsonl"), "{\"prompt\": \"The\"}\n\n{\"prompt\": \"A long\"}\n");
  const auto b = run_kvq("generate --model " + quoted(data_path(kModel1m)) + " --quant " +
                         quoted(quant("kivi2-g32-r128")) + " --prompts " +
                         quoted(dir_->file("p.jsonl")) + " -n 8 --json --max-batch 1");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(nlohmann::json::parse(b.out)["completions"].size(), 2u);
  EXPECT_NE(b.err.find("prompts waiting: 1 (running: 1): all 1 sequence slots are running"),
            std::string::npos)
      << b.err;
}

TEST_F(Runtime1m, CliBadInput) {
  const std::string m = " --model " + quoted(data_path(kModel1m));
  test::write_file(dir_->file("bad.jsonl"), "{\"prompt\": \"ok\"}\n{\"text\": 3}\n");
  test::expect_one_line_error(
      run_kvq("generate" + m + " --prompts " + quoted(dir_->file("bad.jsonl")) + " -n 2"),
      "generate", "bad.jsonl:2: expected an object with a string");
  test::write_file(dir_->file("worse.jsonl"), "{\"prompt\": \n");
  test::expect_one_line_error(
      run_kvq("generate" + m + " --prompts " + quoted(dir_->file("worse.jsonl")) + " -n 2"),
      "generate", "worse.jsonl:1: not a JSON object");
  test::write_file(dir_->file("empty.txt"), "");
  test::expect_one_line_error(
      run_kvq("generate" + m + " --prompt-file " + quoted(dir_->file("empty.txt")) + " -n 2"),
      "generate", "empty.txt: no text");
  test::expect_one_line_error(run_kvq("generate" + m + " --prompt hi -n 600"), "generate",
                              "-n: expected 1..512 (the model's context), found 600");
  std::string words;
  for (int i = 0; i < 600; ++i) words += " the";
  test::write_file(dir_->file("long.txt"), words);
  test::expect_one_line_error(
      run_kvq("generate" + m + " --prompt-file " + quoted(dir_->file("long.txt")) + " -n 8"),
      "generate", "tokens + 8 new tokens exceed the model's context of 512");
  test::expect_one_line_error(run_kvq("generate" + m + " --prompt hi --kv-mem 0.000001"),
                              "generate", "--kv-mem");
  test::expect_one_line_error(run_kvq("generate" + m + " --prompt hi --kv int4"), "generate",
                              "--kv: expected fp16");
  test::expect_one_line_error(run_kvq("generate" + m + " --prompt hi --temperature -1"), "generate",
                              "temperature");
  test::expect_one_line_error(run_kvq("generate" + m + " -n 2"), "generate",
                              "exactly one of --prompt");
  test::expect_one_line_error(
      run_kvq("generate" + m + " --prompt hi --quant " + quoted(dir_->file("nope.h5"))), "generate",
      "nope.h5");
}

}  // namespace
}  // namespace kvq

namespace kvq {
namespace {

// kvq eval --runtime on a prefix of wiki.test with wt2-llama-18m and nuq3-1% (values per token
// over all KV heads, the format kvq fit writes): the runtime's perplexity (prefill 256 tokens,
// then 767 decode steps per window) is within 0.1% of the fake-quantized figure of the same run.
// The calibration is 4 x 1024 tokens of wiki.valid here for CI's time (the runtime is compared
// with the fake-quantized figure of the same artifact, so the corpus does not matter; wiki.train
// is 10 times larger and costs ~30 s of CPU to tokenize); the README's figures use 16 x 1024 of
// wiki.train.
TEST(RuntimeEval, Llama18mNuq3MatchesTheFakeQuantizedPerplexity) {
  KVQ_REQUIRE_DATA(test::kModel18m);
  test::TempDir tmp;
  const std::string model = quoted(data_path(test::kModel18m));
  const auto c = run_kvq("calibrate --model " + model + " --data " + quoted(data_path(kValid)) +
                         " --samples 4 --quiet --out " + quoted(tmp.file("calib.h5")));
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const auto f = run_kvq("fit --method nuq3-1% --calib " + quoted(tmp.file("calib.h5")) +
                         " --out " + quoted(tmp.file("nuq3.h5")));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  const auto r = run_kvq("eval --model " + model + " --data " + quoted(data_path(kTest)) +
                         " --max-tokens 2048 --quant " + quoted(tmp.file("nuq3.h5")) +
                         " --runtime --quiet --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rows = nlohmann::json::parse(r.out)["methods"];
  ASSERT_EQ(rows.size(), 3u) << r.out;  // fp16, nuq3-1% fake-quantized, nuq3-1% (runtime)
  EXPECT_EQ(rows[2]["method"], "nuq3-1% (runtime)");
  const double fake = rows[1]["ppl"], runtime = rows[2]["ppl"], fp16 = rows[0]["ppl"];
  EXPECT_LT(std::abs(runtime / fake - 1.0), 1e-3) << "runtime " << runtime << " fake " << fake;
  std::printf("fp16 %.4f, nuq3-1%% fake-quantized %.4f, runtime %.4f (%+.4f%%)\n", fp16, fake,
              runtime, 100.0 * (runtime / fake - 1.0));
  EXPECT_EQ(rows[2]["n_tokens"], rows[1]["n_tokens"]);
  for (int i : {1, 2}) {
    EXPECT_GT(rows[i]["kl"].get<double>(), 0.0);
    EXPECT_LT(rows[i]["kl"].get<double>(), 0.05);
    EXPECT_GT(rows[i]["top1_pct"].get<double>(), 90.0);
    EXPECT_LT(rows[i]["top1_pct"].get<double>(), 100.0);
  }
  test::expect_one_line_error(
      run_kvq("eval --model " + model + " --data " + quoted(data_path(kTest)) + " --runtime"),
      "eval", "--runtime: needs --quant");
}

}  // namespace
}  // namespace kvq
