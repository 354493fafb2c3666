// Flags and helpers shared by the subcommands that run a model or write an artifact
// (options.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "kvq/artifact/fingerprint.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"

namespace kvq::calib {
struct CalibOptions;
}  // namespace kvq::calib

namespace kvq::app {

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

// UTC now as ISO 8601 ("2026-11-26T03:05:50Z"), for artifacts' `created` attribute.
std::string utc_now();

// What calib.h5 records about its data: the path, the file's sha256 (empty for a directory such
// as the Brown corpus), the encoded size and the sampling options.
artifact::DataFingerprint data_fingerprint(const std::string& path, int64_t n_tokens,
                                           const calib::CalibOptions& options);

// True if stderr is a terminal or progress was not switched off with --quiet.
bool show_progress(bool quiet);

}  // namespace kvq::app
