// Generator (generator.h).
#include "kvq/runtime/generator.h"

#include <algorithm>

#include "kvq/common/error.h"

namespace kvq::runtime {
namespace {

// Tokens decoded again before new ones, so that a piece's leading space and merged bytes come
// out as in the whole text (SentencePiece drops the space of a text's first piece).
constexpr size_t kDecodeContext = 6;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Length of the longest suffix of `text` that is a proper prefix of a stop string: text that
// might still become a stop string is not shown yet.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n) {
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

Generator::Generator(Engine& engine, const model::Tokenizer* tokenizer)
    : engine_(engine), tok_(tokenizer) {}

int64_t Generator::capacity(const Request& r) const {
  // The last token sampled is never appended.
  return static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens - 1;
}

int64_t Generator::submit(Request r) {
  const int64_t ctx = engine_.model().config().max_seq_len;
  const int64_t vocab = engine_.model().config().vocab_size;
  if (r.prompt.empty()) fail("prompt: no tokens (an empty prompt needs at least BOS)");
  for (int32_t t : r.prompt) {
    if (t < 0 || t >= vocab) fail("prompt: token id {} outside the vocabulary 0..{}", t, vocab - 1);
  }
  if (r.max_new_tokens < 1 || r.max_new_tokens > ctx) {
    fail("max tokens: expected 1..{} (the model's context), found {}", ctx, r.max_new_tokens);
  }
  if (static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens - 1 > ctx) {
    fail("prompt: {} tokens + {} new tokens exceed the model's context of {} tokens",
         r.prompt.size(), r.max_new_tokens, ctx);
  }
  const int64_t pages = engine_.pages_for(capacity(r));
  if (pages > engine_.total_pages()) {
    fail("prompt: {} tokens + {} new need {} cache pages, the whole pool holds {} (raise --kv-mem)",
         r.prompt.size(), r.max_new_tokens, pages, engine_.total_pages());
  }
  check_sampling(r.sampling);
  for (const std::string& s : r.stop) {
    if (s.empty()) fail("stop: an empty stop string");
    if (!tok_) fail("stop: stop strings need a tokenizer");
  }
  const int64_t id = next_++;
  waiting_.emplace_back(id, std::move(r));
  return id;
}

std::string Generator::waiting_reason() const {
  if (waiting_.empty()) return "";
  const Request& r = waiting_.front().second;
  if (engine_.open_count() >= engine_.max_batch()) {
    return fmt::format("all {} sequence slots are running", engine_.max_batch());
  }
  const int64_t pages = engine_.pages_for(capacity(r));
  if (pages <= engine_.free_pages() && !engine_.fits(capacity(r))) {
    return fmt::format(
        "{} tokens do not fit beside the running sequences (the cache's rows are as long as the "
        "longest; {} pages)",
        capacity(r), engine_.total_pages());
  }
  return fmt::format("needs {} cache pages, {} of {} are free", pages, engine_.free_pages(),
                     engine_.total_pages());
}

void Generator::extend_text(Active& a, bool flush) const {
  if (!tok_ || a.read >= a.ids.size()) return;
  const auto first = a.ids.begin() + static_cast<std::ptrdiff_t>(a.prefix);
  const std::string before =
      tok_->decode({first, a.ids.begin() + static_cast<std::ptrdiff_t>(a.read)});
  const std::string after = tok_->decode({first, a.ids.end()});
  if (after.compare(0, before.size(), before) != 0) {
    // The tokenizer's decoding of the context changed with the new tokens: decode everything
    // once (the prompt's text is the whole decoding's prefix, or the tokens are decoded alone).
    const std::vector<int32_t> generated(
        a.ids.begin() + static_cast<std::ptrdiff_t>(a.c.prompt_tokens), a.ids.end());
    const std::string prompt_text = tok_->decode(
        {a.ids.begin(), a.ids.begin() + static_cast<std::ptrdiff_t>(a.c.prompt_tokens)});
    const std::string full = tok_->decode(a.ids);
    a.c.text = full.compare(0, prompt_text.size(), prompt_text) == 0
                   ? full.substr(prompt_text.size())
                   : tok_->decode(generated);
  } else {
    // A byte-fallback character split over tokens decodes to U+FFFD until its last byte.
    static const std::string kReplacement = "\xEF\xBF\xBD";
    const bool incomplete =
        after.size() >= before.size() + kReplacement.size() &&
        after.compare(after.size() - kReplacement.size(), kReplacement.size(), kReplacement) == 0;
    if (incomplete && !flush) return;
    a.c.text.append(after, before.size(), std::string::npos);
  }
  a.prefix = a.read;
  a.read = a.ids.size();
}

bool Generator::accept(Active& a, int32_t token, Event* e) {
  e->request = a.request;
  ++stats_.generated_tokens;
  const size_t old_size = a.c.text.size();
  if (a.r.stop_at_eos && token == engine_.model().config().eos_id) {
    a.c.finish_reason = "eos";
  } else {
    e->token = token;
    a.c.tokens.push_back(token);
    a.ids.push_back(token);
    extend_text(a, /*flush=*/static_cast<int64_t>(a.c.tokens.size()) >= a.r.max_new_tokens);
    // A stop string not in the old text ends in the new part.
    size_t cut = std::string::npos;
    for (const std::string& s : a.r.stop) {
      cut = std::min(cut, a.c.text.find(s, old_size >= s.size() ? old_size - s.size() + 1 : 0));
    }
    if (cut != std::string::npos) {
      a.c.text.resize(cut);
      a.c.finish_reason = "stop";
    } else if (static_cast<int64_t>(a.c.tokens.size()) >= a.r.max_new_tokens) {
      a.c.finish_reason = "length";
    }
  }
  const bool finished = !a.c.finish_reason.empty();
  if (a.c.finish_reason == "eos") extend_text(a, /*flush=*/true);  // bytes held for a character
  const std::string& text = a.c.text;
  const size_t safe = finished ? text.size() : text.size() - held_back(text, a.r.stop);
  if (safe > a.shown) {
    e->text = text.substr(a.shown, safe - a.shown);
    a.shown = safe;
  }
  e->finished = finished;
  e->finish_reason = a.c.finish_reason;
  a.pending = token;
  return finished;
}

std::vector<Event> Generator::step() {
  std::vector<Event> events;
  std::vector<size_t> done;
  ++stats_.steps;
  if (!running_.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<int64_t> ids;
    std::vector<int32_t> tokens;
    for (const Active& a : running_) {
      ids.push_back(a.seq);
      tokens.push_back(a.pending);
    }
    const at::Tensor logits = engine_.decode(ids, tokens).to(at::kCPU, at::kFloat).contiguous();
    const int64_t vocab = logits.size(1);
    for (size_t i = 0; i < running_.size(); ++i) {
      Event e;
      const int32_t next = running_[i].sampler.sample(logits.data_ptr<float>() + i * vocab, vocab);
      if (accept(running_[i], next, &e)) done.push_back(i);
      events.push_back(std::move(e));
    }
    stats_.decode_tokens += static_cast<int64_t>(running_.size());
    stats_.decode_seconds += seconds_since(t0);
  }
  // Finished requests free their pages before new ones are admitted.
  for (auto it = done.rbegin(); it != done.rend(); ++it) {
    Active& a = running_[*it];
    engine_.close(a.seq);
    finished_[a.request] = std::move(a.c);
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(*it));
  }
  while (!waiting_.empty()) {
    const int64_t seq = engine_.open(capacity(waiting_.front().second));
    if (seq < 0) break;
    Active a(waiting_.front().first, seq, std::move(waiting_.front().second));
    waiting_.pop_front();
    a.c.prompt_tokens = static_cast<int64_t>(a.r.prompt.size());
    if (tok_) {
      a.ids = a.r.prompt;
      a.read = a.ids.size();
      a.prefix = a.read > kDecodeContext ? a.read - kDecodeContext : 0;
    }
    const auto t0 = std::chrono::steady_clock::now();
    at::Tensor logits;
    try {
      logits = engine_.prefill(seq, a.r.prompt).select(0, -1).to(at::kCPU, at::kFloat).contiguous();
    } catch (...) {
      engine_.close(seq);
      throw;
    }
    Event e;
    const bool finished = accept(a, a.sampler.sample(logits.data_ptr<float>(), logits.size(0)), &e);
    stats_.prompt_tokens += a.c.prompt_tokens;
    stats_.prefill_seconds += seconds_since(t0);
    events.push_back(std::move(e));
    if (finished) {
      engine_.close(seq);
      finished_[a.request] = std::move(a.c);
    } else {
      running_.push_back(std::move(a));
    }
  }
  stats_.max_running = std::max(stats_.max_running, static_cast<int>(running_.size()));
  return events;
}

void Generator::cancel(int64_t request) {
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i].request == request) {
      engine_.close(running_[i].seq);
      running_[i].c.finish_reason = "cancelled";
      finished_[request] = std::move(running_[i].c);
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      return;
    }
  }
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (it->first == request) {
      waiting_.erase(it);
      finished_[request].finish_reason = "cancelled";
      return;
    }
  }
}

const Completion& Generator::completion(int64_t request) const {
  const auto it = finished_.find(request);
  if (it == finished_.end()) fail("generate: request {} has not finished", request);
  return it->second;
}

Completion Generator::release(int64_t request) {
  const auto it = finished_.find(request);
  if (it == finished_.end()) fail("generate: request {} has not finished", request);
  Completion c = std::move(it->second);
  finished_.erase(it);
  return c;
}

}  // namespace kvq::runtime
