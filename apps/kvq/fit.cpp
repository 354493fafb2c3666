// kvq fit: a method string (DESIGN.md section 3) and calibration statistics -> quant.h5
// (schemas/quant-2.md), validated by reading it back and printed like kvq inspect prints it.
#include <chrono>
#include <optional>

#include <fmt/format.h>

#include "command.h"
#include "inspect.h"
#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/artifact/output_path.h"
#include "kvq/common/error.h"
#include "kvq/methods/fit.h"
#include "kvq/methods/quant_file.h"
#include "kvq/model/llama.h"
#include "options.h"

namespace kvq::app {

namespace {

struct FitFlags {
  std::string calib, method, out = "quant.h5", model;
  double bits_budget = 0.0;
  int64_t context = 0;
  bool json = false;
};

void run_fit(const FitFlags& f) {
  const methods::MethodSpec spec = methods::parse_method(f.method);
  if (spec.needs_calib() && f.calib.empty()) fail("method {} needs --calib calib.h5", spec.name());
  if (f.bits_budget != 0.0 && !(f.bits_budget >= 2.0 && f.bits_budget <= 4.0)) {
    fail("--bits-budget: expected 2..4 average code bits per element, found {}", f.bits_budget);
  }
  if (f.context < 0) fail("--context: expected a positive number of tokens, found {}", f.context);
  // An unwritable --out, or one naming an input, fails before the work.
  artifact::check_outputs({{"--out", f.out}}, {{"--calib", f.calib}, {"--model", f.model}});
  std::optional<artifact::CalibData> calib;
  if (!f.calib.empty()) calib = artifact::read_calib(f.calib);
  std::optional<artifact::ModelFingerprint> model;
  if (!f.model.empty()) {
    const model::LlamaModel m = model::LlamaModel::load(f.model);
    model = artifact::model_fingerprint(m.config(), m.weights().checksum, f.model);
    if (calib) artifact::require_same_model(f.calib, calib->model, *model);
  }
  methods::FitOptions options;
  options.bits_budget = f.bits_budget;
  options.model = model ? &*model : nullptr;
  const auto start = std::chrono::steady_clock::now();
  const methods::Quantizer q = methods::fit(spec, calib ? &*calib : nullptr, options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  methods::write_quant(f.out, q, utc_now());
  print_quant(methods::read_quant(f.out), f.json, f.context,
              seconds);  // validates what was written
}

}  // namespace

void register_fit(CLI::App& app) {
  auto flags = std::make_shared<FitFlags>();
  CLI::App* cmd = app.add_subcommand("fit", "Fit a quantization method from calib.h5 -> quant.h5");
  cmd->add_option("--method", flags->method, std::string("Method: ") + methods::method_forms())
      ->required();
  cmd->add_option("--calib", flags->calib, "calib.h5 from kvq calibrate (needed by nuq and skvq)");
  cmd->add_option(
      "--model", flags->model,
      "Model to fingerprint a calibration-free method for (checked against --calib if both)");
  cmd->add_option("--bits-budget", flags->bits_budget,
                  "nuq: per-layer bits in {2,3,4} for this average code bits per element (0: off)");
  cmd->add_option("--out", flags->out,
                  "Output quant.h5 (written to a temporary file, then renamed)");
  cmd->add_option("--context", flags->context,
                  "Tokens for the bits-per-element figure (0: the model's context)");
  cmd->add_flag("--json", flags->json, "Print one JSON document instead of a table");
  cmd->callback([flags] { run_fit(*flags); });
}

}  // namespace kvq::app
