// How subcommands plug into the kvq binary: each file registers one CLI11 subcommand whose
// callback does the work. Shared flag groups (model, device) live in options.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/calib/calibrate.h"
#include "kvq/eval/perplexity.h"
#include "kvq/eval/table.h"
#include "kvq/methods/quantizer.h"
#include "kvq/model/io/tokenizer.h"
#include "kvq/model/llama.h"

namespace kvq::app {

void register_bench(CLI::App& app);
void register_calibrate(CLI::App& app);
void register_eval(CLI::App& app);
void register_fit(CLI::App& app);
void register_generate(CLI::App& app);
void register_inspect(CLI::App& app);
void register_reproduce(CLI::App& app);

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
void print_calib(const artifact::CalibData& calib, bool json, const RunFigures* run);

// Perplexity for each quantizer (the first is the baseline the deltas refer to), one row each
// with bits per element and outlier share (results.cpp); *baseline gets the first's result.
std::vector<eval::ResultRow> evaluate_all(const model::LlamaModel& m, const std::vector<int32_t>& tokens,
                                          const std::vector<methods::Quantizer>& qs,
                                          const eval::PerplexityOptions& options, eval::PerplexityResult* baseline);
// Perplexity against bits per element, one series per method family, fp16 as a dashed line.
void write_results_plot(const std::string& path, const std::vector<eval::ResultRow>& rows,
                        const std::vector<methods::Quantizer>& qs, const std::string& title);

// UTC now as ISO 8601 ("2026-11-26T03:05:50Z"), for artifacts' `created` attribute.
std::string utc_now();

// What calib.h5 records about its data: the path, the file's sha256 (empty for a directory such
// as the Brown corpus), the encoded size and the sampling options.
artifact::DataFingerprint data_fingerprint(const std::string& path, int64_t n_tokens,
                                           const calib::CalibOptions& options);

// True if stderr is a terminal or progress was not switched off with --quiet.
bool show_progress(bool quiet);

}  // namespace kvq::app
