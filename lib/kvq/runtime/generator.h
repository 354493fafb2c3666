// Generator: text generation requests over an Engine: a FIFO queue, continuous batching at step
// granularity (each step decodes one token for every running request, then admits waiting ones
// while a sequence slot and the pages for their whole length are free), sampling, and stopping
// at EOS, at stop strings or at the token limit. A request that can never run (empty prompt,
// longer than the context or the pool, bad sampling parameters) is refused at submit() with a
// kvq::Error and leaves the generator as it was; one that does not fit now waits.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "kvq/model/io/tokenizer.h"
#include "kvq/runtime/engine.h"
#include "kvq/runtime/sampler.h"

namespace kvq::runtime {

struct Request {
  std::vector<int32_t> prompt;  // token ids, BOS included if wanted
  int64_t max_new_tokens = 64;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (the text ends before the first one found)
  bool stop_at_eos = true;
};

// What one step produced for one request.
struct Event {
  int64_t request = 0;
  int32_t token = -1;  // the new token; -1 when the request ended without one (EOS)
  std::string text;    // new text safe to show (a possible stop string's start is held back)
  bool finished = false;
  std::string finish_reason;  // "length", "eos" or "stop" once finished
};

struct Completion {
  int64_t prompt_tokens = 0;
  std::vector<int32_t> tokens;  // generated (EOS not included)
  std::string text;             // decoded, cut before a stop string
  std::string finish_reason;
};

struct GenerationStats {
  int64_t prompt_tokens = 0, generated_tokens = 0, decode_tokens = 0, steps = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  int max_running = 0;
};

class Generator {
 public:
  // tokenizer: for text and stop strings (may be null: no text, no stop strings).
  Generator(Engine& engine, const model::Tokenizer* tokenizer);

  // Checks and queues a request; returns its id.
  int64_t submit(Request request);
  // One decode step for the running requests, then admission of waiting ones.
  std::vector<Event> step();
  bool done() const { return running_.empty() && waiting_.empty(); }
  int running() const { return static_cast<int>(running_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  // Why the oldest waiting request cannot start now ("" if none waits).
  std::string waiting_reason() const;
  // Ends a request now (running: its pages are freed; waiting: dropped).
  void cancel(int64_t request);
  // The finished request's result; throws if it has not finished.
  const Completion& completion(int64_t request) const;
  // The same, moved out: the generator forgets the request (a server running for days would
  // otherwise keep every result). Throws if it has not finished.
  Completion release(int64_t request);
  const GenerationStats& stats() const { return stats_; }

 private:
  struct Active {
    Active(int64_t request_id, int64_t seq_id, Request req)
        : request(request_id), seq(seq_id), r(std::move(req)), sampler(r.sampling) {}
    int64_t request = 0;
    int64_t seq = -1;
    Request r;
    Sampler sampler;
    int32_t pending = -1;  // sampled, not yet in the cache
    Completion c;
    // Incremental detokenization: ids is the prompt and the tokens so far; ids[prefix, read)
    // were decoded already and are decoded again as context for the tokens after them.
    std::vector<int32_t> ids;
    size_t prefix = 0, read = 0;
    size_t shown = 0;  // bytes of c.text emitted
  };
  int64_t capacity(const Request& r) const;
  // Appends to a.c.text what the tokens after ids[read) add to the decoded text.
  void extend_text(Active& a, bool flush) const;
  // Takes a sampled token; fills the event; true when the request finished.
  bool accept(Active& a, int32_t token, Event* e);

  Engine& engine_;
  const model::Tokenizer* tok_;
  int64_t next_ = 0;
  std::deque<std::pair<int64_t, Request>> waiting_;
  std::vector<Active> running_;
  std::map<int64_t, Completion> finished_;
  GenerationStats stats_;
};

}  // namespace kvq::runtime
