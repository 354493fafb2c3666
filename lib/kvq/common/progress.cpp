#include "kvq/common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

namespace kvq {

Progress::Progress(std::string label, int64_t total, std::string unit, bool quiet)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(std::max<int64_t>(total, 1)),
      quiet_(quiet),
      tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  if (!quiet_ && tty_) draw(false);
}

Progress::~Progress() { finish(); }

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double Progress::rate() const {
  const double s = elapsed_seconds();
  return s > 0 ? static_cast<double>(done_) / s : 0.0;
}

void Progress::advance(int64_t n) {
  done_ = std::min(done_ + n, total_);
  if (quiet_ || finished_) return;
  if (tty_) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_draw_ > std::chrono::milliseconds(100) || done_ == total_) {
      last_draw_ = now;
      draw(false);
    }
  } else {
    const int decile = static_cast<int>(10 * done_ / total_);
    if (decile > last_decile_) {
      last_decile_ = decile;
      draw(false);
    }
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!quiet_) draw(true);
}

void Progress::draw(bool final) {
  const double frac = static_cast<double>(done_) / static_cast<double>(total_);
  const double r = rate();
  const double eta = r > 0 ? static_cast<double>(total_ - done_) / r : 0.0;
  const std::string stats =
      fmt::format("{}/{} {} | {} {}/s | {} elapsed{}", human_count(done_), human_count(total_),
                  unit_, human_count(r), unit_, human_duration(elapsed_seconds()),
                  final ? "" : " | ETA " + human_duration(eta));
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(std::round(frac * kWidth));
    fmt::print(stderr, "\r{} [{}{}] {:3.0f}% {}\033[K{}", label_, std::string(filled, '#'),
               std::string(kWidth - filled, '.'), 100 * frac, stats, final ? "\n" : "");
  } else {
    fmt::print(stderr, "{}: {:3.0f}% {}\n", label_, 100 * frac, stats);
  }
  std::fflush(stderr);
}

std::string human_count(double value) {
  const double a = std::fabs(value);
  if (a >= 1e9) return fmt::format("{:.2f} G", value / 1e9);
  if (a >= 1e6) return fmt::format("{:.2f} M", value / 1e6);
  if (a >= 1e4) return fmt::format("{:.1f} k", value / 1e3);
  if (a == std::floor(a)) return fmt::format("{:.0f}", value);
  return fmt::format("{:.1f}", value);
}

std::string human_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, std::round(seconds)));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

}  // namespace kvq
