// A progress bar on stderr: a redrawn bar with rate and ETA when stderr is a terminal, otherwise
// one plain line about every 10%, so logs stay readable. Never writes to stdout.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvq {

class Progress {
 public:
  // `unit` names what is counted ("tok"); total must be > 0. quiet: print nothing.
  Progress(std::string label, int64_t total, std::string unit, bool quiet = false);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n);  // n more units done
  void finish();            // final line; called by the destructor if not before
  double elapsed_seconds() const;
  double rate() const;  // units per second so far

 private:
  void draw(bool final);

  std::string label_, unit_;
  int64_t total_, done_ = 0;
  bool quiet_, tty_, finished_ = false;
  int last_decile_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1.2 k", "3.4 M": for rates and counts in human output.
std::string human_count(double value);
// "1:02:03" or "2:03".
std::string human_duration(double seconds);

}  // namespace kvq
