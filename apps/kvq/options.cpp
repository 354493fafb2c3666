#include "options.h"

#include <sys/stat.h>

#include <ctime>

#include <ATen/Context.h>

#include "kvq/calib/calibrate.h"
#include "kvq/common/hash.h"

namespace kvq::app {

void ModelFlags::add_to(CLI::App& cmd, bool with_device) {
  cmd.add_option("--model", path, "Model: a Hugging Face directory or a llama2.c .bin checkpoint")
      ->required();
  cmd.add_option("--dtype", dtype, "Compute dtype: fp32, bf16 or fp16");
  if (with_device)
    cmd.add_option("--device", device, "Device: cpu, cuda, cuda:N or auto (cuda when present)");
}

std::string ModelFlags::resolved_device() const {
  if (device == "auto") return at::hasCUDA() ? "cuda" : "cpu";
  return device;
}

model::LlamaModel ModelFlags::load() const {
  model::LoadOptions options;
  options.dtype = model::parse_dtype(dtype, "--dtype");
  options.device = model::parse_device(resolved_device(), "--device");
  return model::LlamaModel::load(path, options);
}

std::unique_ptr<model::Tokenizer> ModelFlags::tokenizer(const model::LlamaModel& m) const {
  return model::open_tokenizer_for_model(path, static_cast<int32_t>(m.config().vocab_size));
}

bool show_progress(bool quiet) { return !quiet; }

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

artifact::DataFingerprint data_fingerprint(const std::string& path, int64_t n_tokens,
                                           const calib::CalibOptions& options) {
  struct stat st {};
  const bool regular = stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
  return {path,
          regular ? sha256_file(path) : "",
          n_tokens,
          options.n_samples,
          options.seq_len,
          static_cast<int64_t>(options.seed)};
}

}  // namespace kvq::app
