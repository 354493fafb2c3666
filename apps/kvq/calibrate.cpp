// kvq calibrate: Fisher information and activation statistics for every layer's pre-RoPE Keys
// and Values over seeded calibration sequences, written to calib.h5 (schemas/calib-2.md).

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "inspect.h"
#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/artifact/output_path.h"
#include "kvq/calib/calib_writer.h"
#include "kvq/calib/calibrate.h"
#include "kvq/common/error.h"
#include "kvq/common/progress.h"
#include "kvq/data/text.h"
#include "kvq/model/llama.h"
#include "options.h"

namespace kvq::app {
namespace {

struct CalibrateFlags {
  ModelFlags model;
  std::string data;
  std::string format = "auto";
  std::string jsonl_field = "text";
  std::string out = "calib.h5";
  calib::CalibOptions options;
  bool json = false;
  bool quiet = false;
};

void run_calibrate(CalibrateFlags& f) {
  calib::check_options(f.options);  // before the model loads or anything is allocated
  if (f.options.seq_len < 0)
    fail("--seq-len: expected a positive number, found {}", f.options.seq_len);
  // Fail now rather than after the calibration if the output cannot be written.
  artifact::check_outputs({{"--out", f.out}}, {{"--data", f.data}, {"--model", f.model.path}});
  const model::LlamaModel m = f.model.load();
  const auto tokenizer = f.model.tokenizer(m);
  const std::string text = data::load_text(f.data, data::parse_format(f.format), f.jsonl_field);
  const std::vector<int32_t> tokens = tokenizer->encode(text, /*add_bos=*/true);
  if (tokens.size() <= 1) {
    fail("--data: {}: the tokenizer of {} produces no tokens from it", f.data, f.model.path);
  }
  f.options.progress = !f.quiet;
  const calib::CalibResult r = calib::calibrate(m, tokens, f.options);

  const artifact::DataFingerprint data =
      data_fingerprint(f.data, static_cast<int64_t>(tokens.size()), r.options);
  const auto fingerprint =
      artifact::model_fingerprint(m.config(), m.weights().checksum, f.model.path);
  calib::write_calib(f.out, r, fingerprint, data,
                     {f.model.resolved_device(), f.model.dtype, utc_now()});

  const artifact::CalibData written = artifact::read_calib(f.out);  // validates what was written
  RunFigures run{r.seconds, r.tokens_per_s, r.peak_rss_bytes, r.peak_device_bytes, r.mean_loss};
  print_calib(written, f.json, &run);
}

}  // namespace

void register_calibrate(CLI::App& app) {
  auto flags = std::make_shared<CalibrateFlags>();
  flags->model.device = "auto";
  CLI::App* cmd = app.add_subcommand(
      "calibrate",
      "Fisher information and statistics of every layer's Keys and Values -> calib.h5");
  flags->model.add_to(*cmd);
  cmd->add_option("--data", flags->data,
                  "Calibration text: a file (plain, WikiText, .jsonl) or a Brown corpus directory")
      ->required();
  cmd->add_option("--format", flags->format, "Data format: auto, plain, jsonl or brown");
  cmd->add_option("--jsonl-field", flags->jsonl_field, "jsonl: the field holding the text");
  cmd->add_option("--samples", flags->options.n_samples, "Calibration sequences");
  cmd->add_option("--seq-len", flags->options.seq_len,
                  "Tokens per sequence (0: min(2048, the model's context))");
  cmd->add_option("--seed", flags->options.seed, "Seed for drawing the sequences");
  cmd->add_option("--out", flags->out,
                  "Output calib.h5 (written to a temporary file, then renamed)");
  cmd->add_option("--key-bins", flags->options.key_bins, "Histogram bins per channel");
  cmd->add_option("--value-bins", flags->options.value_bins,
                  "Histogram bins for per-token-normalized values");
  cmd->add_option("--sample-tokens", flags->options.sample_tokens,
                  "Tokens kept per layer as raw samples");
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->add_flag("--quiet", flags->quiet, "No progress output on stderr");
  cmd->callback([flags] { run_calibrate(*flags); });
}

}  // namespace kvq::app
