// The scheduler thread of kvq serve (scheduler.h).
#include "kvq/serve/scheduler.h"

#include <algorithm>
#include <ctime>

#include <fmt/format.h>

namespace kvq::serve {
namespace {

using Clock = std::chrono::steady_clock;

// How long the idle loop sleeps before looking at the clock (rates, deadlines) again.
constexpr auto kIdleWait = std::chrono::milliseconds(100);

ApiError shutting_down() {
  return ApiError(503, "server_error", "", "the server is shutting down; retry on another");
}

}  // namespace

Channel::Update Channel::take(std::chrono::milliseconds max_wait) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, max_wait, [&] { return !pieces_.empty() || ended_; });
  Update u;
  u.pieces.assign(std::make_move_iterator(pieces_.begin()), std::make_move_iterator(pieces_.end()));
  pieces_.clear();
  if (ended_) {
    u.finished = !error_;
    u.finish_reason = reason_;
    u.usage = usage_;
    u.error = error_;
  }
  return u;
}

bool Channel::ended() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ended_;
}

void Channel::push(std::string text) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pieces_.push_back(std::move(text));
  }
  cv_.notify_all();
}

void Channel::finish(const std::string& reason, Usage usage) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    ended_ = true;
    reason_ = reason;
    usage_ = usage;
  }
  cv_.notify_all();
}

void Channel::fail(const ApiError& e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return;
    ended_ = true;
    error_ = e;
  }
  cv_.notify_all();
}

Scheduler::Scheduler(Loader loader, SchedulerOptions options)
    : loader_(std::move(loader)), options_(std::move(options)) {
  metrics_.max_running = options_.max_running;
  metrics_.max_queue = options_.max_queue;
}

void Scheduler::start() {
  KVQ_CHECK(!thread_.joinable(), "the scheduler started twice");
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string Scheduler::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void Scheduler::log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

std::shared_ptr<Channel> Scheduler::submit(runtime::Request request) {
  std::shared_ptr<Channel> channel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const State s = state_.load();
    if (s == State::kLoading) {
      throw ApiError(503, "server_error", "", "the model is still loading; retry shortly");
    }
    if (s != State::kReady || draining_ || stop_) throw shutting_down();
    // Requests that can start at the next step do not count against the queue: as many as
    // there are free slots, unless a request already waits (then the pool is what is full).
    const int64_t room = blocked_ ? 0 : std::max<int64_t>(0, options_.max_running - running_);
    if (unstarted_ >= options_.max_queue + room) {
      throw ApiError(429, "rate_limit_error", "",
                     fmt::format("server busy: {} requests running and {} waiting, the queue "
                                 "holds {} (--max-queue); retry later",
                                 running_, unstarted_, options_.max_queue));
    }
    channel = std::make_shared<Channel>(next_handle_++);
    inbox_.push_back({std::move(request), channel, Clock::now()});
    ++unstarted_;
  }
  wake_.notify_all();
  return channel;
}

void Scheduler::cancel(int64_t handle) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(handle);
  }
  wake_.notify_all();
}

MetricsSnapshot Scheduler::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  MetricsSnapshot m = metrics_;
  m.ready = state_.load() == State::kReady;
  m.waiting = unstarted_;
  m.running = running_;
  return m;
}

void Scheduler::drain(Clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!draining_) {
      draining_ = true;
      deadline_ = deadline;
    } else {
      deadline_ = std::min(deadline_, deadline);
    }
    State ready = State::kReady;
    state_.compare_exchange_strong(ready, State::kDraining);
  }
  wake_.notify_all();
}

bool Scheduler::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return inbox_.empty() && unstarted_ == 0 && running_ == 0;
}

void Scheduler::run() {
  try {
    load();
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = e.what();
    state_ = State::kFailed;
    return;
  }
  try {
    loop();
  } catch (const std::exception& e) {
    // A failure outside a step (those are caught per step): nothing can be served any more.
    std::vector<Queued> inbox;
    {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = e.what();
      state_ = State::kFailed;
      inbox.swap(inbox_);
    }
    const ApiError failed(500, "server_error", "", std::string("internal error: ") + e.what());
    for (auto& [id, a] : active_) a.channel->fail(failed);
    for (Queued& q : inbox) q.channel->fail(failed);
    log(std::string("scheduler failed: ") + e.what());
  }
}

void Scheduler::load() {
  backend_ = loader_();
  runtime::Engine& engine = *backend_.engine;
  KVQ_CHECK(engine.max_batch() == options_.max_running, "engine max_batch {} != max_running {}",
            engine.max_batch(), options_.max_running);
  gen_ = std::make_unique<runtime::Generator>(engine, backend_.tokenizer.get());
  const runtime::CacheCost cost = engine.store().cost();
  const auto& c = engine.model().config();
  info_.name = options_.model_name;
  info_.kv = backend_.quantizer->label();
  info_.created = static_cast<int64_t>(std::time(nullptr));
  info_.page_size = engine.store().page_size();
  info_.pages_total = engine.total_pages();
  info_.limits = {c.max_seq_len, c.vocab_size, info_.pages_total * info_.page_size};
  info_.bytes_per_token = cost.bytes_per_token;
  info_.bits_per_element = cost.bits_per_element;
  info_.describe = engine.describe();
  std::lock_guard<std::mutex> lock(mu_);
  metrics_.kv = info_.kv;
  metrics_.page_size = info_.page_size;
  metrics_.pages_total = metrics_.pages_free = info_.pages_total;
  metrics_.bytes_per_token = info_.bytes_per_token;
  metrics_.bits_per_element = info_.bits_per_element;
  state_ = draining_ || stop_ ? State::kDraining : State::kReady;
}

void Scheduler::forget(int64_t id) {
  gen_->cancel(id);  // a running request's pages return to the pool now
  try {
    gen_->release(id);
  } catch (const Error&) {
    // A request whose prefill threw is in neither the generator's queue nor its batch.
  }
}

void Scheduler::loop() {
  const Clock::time_point t0 = Clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  std::map<std::string, int64_t> finished;  // the loop's counts, published under the lock
  for (;;) {
    std::vector<Queued> inbox;
    std::vector<int64_t> cancels;
    bool stop = false, draining = false;
    Clock::time_point deadline;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (gen_->done() && inbox_.empty() && cancels_.empty() && !stop_) {
        wake_.wait_for(lock, kIdleWait);
      }
      inbox.swap(inbox_);
      cancels.swap(cancels_);
      stop = stop_;
      draining = draining_;
      deadline = deadline_;
    }
    // New requests into the generator (checked by the handler; a refusal here is a 400 too).
    for (Queued& q : inbox) {
      if (draining || stop) {
        q.channel->fail(shutting_down());
        ++finished["cancelled"];
        continue;
      }
      int64_t id = -1;
      try {
        id = gen_->submit(std::move(q.request));
      } catch (const Error& e) {
        q.channel->fail(ApiError(400, "invalid_request_error", "", e.what()));
        ++finished["error"];
        continue;
      }
      id_of_handle_[q.channel->handle()] = id;
      active_[id] = {q.channel, q.arrived, false};
    }
    for (int64_t handle : cancels) {
      const auto it = id_of_handle_.find(handle);
      if (it == id_of_handle_.end()) continue;  // ended already
      const int64_t id = it->second;
      forget(id);
      active_[id].channel->fail(ApiError(499, "cancelled", "", "the client went away"));
      active_.erase(id);
      id_of_handle_.erase(it);
      ++finished["cancelled"];
    }
    // Shutdown: queued requests go now, running ones at the deadline.
    if (draining || stop) {
      const bool past = stop || Clock::now() >= deadline;
      std::vector<int64_t> ending;
      for (const auto& [id, a] : active_) {
        if (!a.started || past) ending.push_back(id);
      }
      for (int64_t id : ending) {
        const auto it = active_.find(id);
        forget(id);
        it->second.channel->fail(shutting_down());
        id_of_handle_.erase(it->second.channel->handle());
        active_.erase(it);
        ++finished["cancelled"];
      }
    }
    if (stop && gen_->done()) break;

    std::vector<runtime::Event> events;
    if (!gen_->done()) {
      try {
        events = gen_->step();
      } catch (const std::exception& e) {
        // The step's requests cannot go on (their state in the generator is unknown): each
        // gets a 500 and its pages back; the server keeps serving new requests.
        log(std::string("step failed, ending every request: ") + e.what());
        const ApiError failed(500, "server_error", "", std::string("internal error: ") + e.what());
        for (auto& [id, a] : active_) {
          forget(id);
          a.channel->fail(failed);
          ++finished["error"];
        }
        active_.clear();
        id_of_handle_.clear();
        events.clear();
      }
    }
    const Clock::time_point now = Clock::now();
    double ttft_sum = 0;
    int64_t ttft_count = 0;
    for (const runtime::Event& e : events) {
      const auto it = active_.find(e.request);
      if (it == active_.end()) continue;
      Active& a = it->second;
      if (!a.started) {
        a.started = true;
        ttft_sum += std::chrono::duration<double>(now - a.arrived).count();
        ++ttft_count;
      }
      if (!e.text.empty()) a.channel->push(e.text);
      if (e.finished) {
        const runtime::Completion c = gen_->release(e.request);
        const std::string reason = finish_reason(c.finish_reason);
        a.channel->finish(reason, {c.prompt_tokens, static_cast<int64_t>(c.tokens.size())});
        id_of_handle_.erase(a.channel->handle());
        active_.erase(it);
        ++finished[reason];
      }
    }
    int64_t unstarted = 0;
    for (const auto& [id, a] : active_) unstarted += a.started ? 0 : 1;
    const runtime::GenerationStats& s = gen_->stats();
    const double t = seconds();
    prompt_rate_.add(t, s.prompt_tokens);
    generated_rate_.add(t, s.generated_tokens);
    std::lock_guard<std::mutex> lock(mu_);
    unstarted_ = unstarted + static_cast<int64_t>(inbox_.size());
    running_ = gen_->running();
    blocked_ = gen_->waiting() > 0;
    metrics_.pages_free = backend_.engine->free_pages();
    metrics_.prompt_tokens = s.prompt_tokens;
    metrics_.generated_tokens = s.generated_tokens;
    metrics_.prompt_tokens_per_s = prompt_rate_.rate(t);
    metrics_.generated_tokens_per_s = generated_rate_.rate(t);
    metrics_.steps = s.steps;
    metrics_.finished = finished;
    metrics_.ttft_seconds_sum += ttft_sum;
    metrics_.ttft_count += ttft_count;
  }
}

}  // namespace kvq::serve
