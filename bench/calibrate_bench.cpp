// Calibration throughput and peak memory on a LLaMA-7B-shaped model with random weights (no real
// 7B weights exist here): kvq's calibrate (range pass + gradient pass + statistics) against the
// bare forward + backward to the Keys and Values on the same sequences, measured in the same run.
// The ratio is the cost of everything kvq adds to the gradient computation it cannot avoid.
//
// With --fit-method it then writes the calib.h5, reads it back and fits that method from it, timed
// separately (kvq fit's cost at 7B size).
//
//   bench_calibrate [--preset 7b|tiny] [--samples 16] [--seq-len 2048] [--device cuda]
//                   [--dtype bf16] [--layers N] [--fit-method nuq3-1%] [--calib-out PATH]
#include <chrono>
#include <cstdio>
#include <random>

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "kvq/artifact/calib_file.h"
#include "kvq/calib/calib_writer.h"
#include "kvq/calib/calibrate.h"
#include "kvq/calib/fisher.h"
#include "kvq/common/error.h"
#include "kvq/methods/fit.h"
#include "kvq/methods/method.h"
#include "llama_shapes.h"

#ifdef KVQ_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace {

using kvq::model::ModelConfig;

void synchronize(const at::Device& d) {
  if (d.is_cuda()) at::ones({1}, at::TensorOptions().device(d)).sum().item<float>();
}

int64_t device_peak(const at::Device& d) {
#ifdef KVQ_TORCH_CUDA
  if (d.is_cuda()) return c10::cuda::CUDACachingAllocator::getDeviceStats(0).reserved_bytes[0].peak;
#endif
  (void)d;
  return -1;
}

void reset_peak(const at::Device& d) {
#ifdef KVQ_TORCH_CUDA
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(0);
#endif
  (void)d;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Calibration throughput on a random-weight LLaMA-shaped model"};
  app.option_defaults()->always_capture_default();
  std::string preset_name = "7b", device_name = "cuda", dtype_name = "bf16";
  int64_t samples = 16, seq_len = 2048, layers = 0;
  app.add_option("--preset", preset_name, "Model shape: 7b or tiny");
  app.add_option("--samples", samples, "Calibration sequences");
  app.add_option("--seq-len", seq_len, "Tokens per sequence");
  app.add_option("--layers", layers, "Override the number of layers (0: the preset's)");
  app.add_option("--device", device_name, "cpu or cuda");
  app.add_option("--dtype", dtype_name, "fp32, bf16 or fp16");
  std::string fit_method, calib_out = "/tmp/kvq-bench-calib.h5";
  app.add_option("--fit-method", fit_method,
                 "Also write calib.h5 and time fitting this method from it");
  app.add_option("--calib-out", calib_out, "Where --fit-method writes the calib.h5");
  CLI11_PARSE(app, argc, argv);
  try {
    ModelConfig c = kvq::bench::llama_preset(preset_name, "--preset");
    if (layers > 0) c.n_layers = layers;
    const at::Device device = kvq::model::parse_device(device_name, "--device");
    const at::ScalarType dtype = kvq::model::parse_dtype(dtype_name, "--dtype");
    const kvq::model::LlamaModel m = kvq::bench::random_llama(c, dtype, device);
    std::mt19937 rng(0);
    std::vector<int32_t> tokens(samples * seq_len + 1);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);

    // Baseline: forward + backward to K and V only, the work calibration cannot avoid.
    kvq::calib::kv_gradients(m, at::randint(c.vocab_size, {seq_len}, at::kLong));  // warm-up
    std::vector<at::Tensor> sequences;
    for (int64_t s = 0; s < samples; ++s) {
      std::vector<int64_t> ids(tokens.begin() + s * seq_len, tokens.begin() + (s + 1) * seq_len);
      sequences.push_back(at::tensor(ids, at::kLong));
    }
    synchronize(device);
    reset_peak(device);
    const auto t0 = std::chrono::steady_clock::now();
    for (const at::Tensor& seq : sequences) kvq::calib::kv_gradients(m, seq);
    synchronize(device);
    const double bare_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t bare_peak = device_peak(device);

    kvq::calib::CalibOptions o;
    o.n_samples = samples;
    o.seq_len = seq_len;
    o.progress = false;
    const kvq::calib::CalibResult r = kvq::calib::calibrate(m, tokens, o);
    const double n_tok = static_cast<double>(samples * seq_len);
    auto gib = [](int64_t bytes) {
      return bytes < 0 ? std::string("n/a") : fmt::format("{:.2f} GiB", bytes / 1073741824.0);
    };
    fmt::print(
        "| model | device | dtype | sequences | tokens | fwd+bwd tok/s | calibrate tok/s | "
        "calibrate / fwd+bwd time | peak GPU fwd+bwd | peak GPU calibrate | peak RSS |\n");
    fmt::print("|---|---|---|---|---|---|---|---|---|---|---|\n");
    fmt::print(
        "| {} ({} layers, dim {}, {}/{} heads x {}) | {} | {} | {} x {} | {} | {:.0f} | {:.0f} | "
        "{:.2f}x | {} | {} | {} |\n",
        preset_name, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, device_name,
        dtype_name, samples, seq_len, samples * seq_len, n_tok / bare_s, r.tokens_per_s,
        r.seconds / bare_s, gib(bare_peak), gib(r.peak_device_bytes), gib(r.peak_rss_bytes));
    if (!fit_method.empty()) {
      auto seconds_since = [](std::chrono::steady_clock::time_point t) {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
      };
      const auto fp = kvq::artifact::model_fingerprint(c, m.weights().checksum, "random");
      const kvq::artifact::DataFingerprint data{
          "random tokens", "", static_cast<int64_t>(tokens.size()), samples, seq_len, 0};
      auto t = std::chrono::steady_clock::now();
      kvq::calib::write_calib(calib_out, r, fp, data, {device_name, dtype_name, ""});
      const double write_s = seconds_since(t);
      t = std::chrono::steady_clock::now();
      const kvq::artifact::CalibData d = kvq::artifact::read_calib(calib_out);
      const double read_s = seconds_since(t);
      t = std::chrono::steady_clock::now();
      const kvq::methods::Quantizer q =
          kvq::methods::fit(kvq::methods::parse_method(fit_method), &d);
      const double fit_s = seconds_since(t);
      struct stat st {};
      stat(calib_out.c_str(), &st);
      fmt::print(
          "\n| fit | layers | calib.h5 size | write calib.h5 | read + validate | fit "
          "|\n|---|---|---|---|---|---|\n");
      fmt::print("| {} | {} | {:.2f} GiB | {:.1f} s | {:.1f} s | {:.2f} s |\n", q.label(),
                 c.n_layers, st.st_size / 1073741824.0, write_s, read_s, fit_s);
      std::remove(calib_out.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_calibrate: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
