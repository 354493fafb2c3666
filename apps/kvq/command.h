// How subcommands plug into the kvq binary: each file registers one CLI11 subcommand whose
// callback does the work. Shared flag groups (model, device) live in options.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"

namespace kvq::app {

void register_eval(CLI::App& app);
void register_generate(CLI::App& app);

// --model, --dtype, --device: every subcommand that runs a model takes these.
struct ModelFlags {
  std::string path;
  std::string dtype = "fp32";
  std::string device = "cpu";
  void add_to(CLI::App& cmd, bool with_device = true);
  model::LlamaModel load() const;
  std::unique_ptr<model::Tokenizer> tokenizer(const model::LlamaModel& m) const;
};

// True if stderr is a terminal or progress was not switched off with --quiet.
bool show_progress(bool quiet);

}  // namespace kvq::app
