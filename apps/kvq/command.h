// How subcommands plug into the kvq binary: each file registers one CLI11 subcommand whose
// callback does the work. Shared flag groups (model, device) live in options.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kvq/calib/calib_file.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"

namespace kvq::app {

void register_calibrate(CLI::App& app);
void register_eval(CLI::App& app);
void register_generate(CLI::App& app);
void register_inspect(CLI::App& app);

// --model, --dtype, --device: every subcommand that runs a model takes these.
struct ModelFlags {
  std::string path;
  std::string dtype = "fp32";
  std::string device = "cpu";
  void add_to(CLI::App& cmd, bool with_device = true);
  std::string resolved_device() const;  // "auto" becomes cuda when a GPU is usable, else cpu
  model::LlamaModel load() const;
  std::unique_ptr<model::Tokenizer> tokenizer(const model::LlamaModel& m) const;
};

// Figures of the run that made an artifact, printed beside its contents.
struct RunFigures {
  double seconds = 0, tokens_per_s = 0;
  int64_t peak_rss_bytes = 0, peak_device_bytes = -1;
  double mean_loss = 0;
};

// Prints a calib.h5's per-layer summary as a markdown table or one JSON document (inspect.cpp).
void print_calib(const calib::CalibData& calib, bool json, const RunFigures* run);

// True if stderr is a terminal or progress was not switched off with --quiet.
bool show_progress(bool quiet);

}  // namespace kvq::app
