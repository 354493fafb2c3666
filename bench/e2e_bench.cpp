// kvq bench e2e (e2e_bench.h): decode steps of a whole model through the runtime's engine, the
// fp16 cache (LibTorch) against the compressed caches (CUDA kernels) in one run.
//
// The model has LLaMA-7B's shapes and random bf16 weights (llama_shapes.h): its cost is a real
// 7B decode step (every weight read once per step, attention over every cached token), its text
// is noise, and the output says so. The compressed methods are fitted (methods::fit) from a
// calibration of that model on random tokens, so their tables are well-formed and the kernels
// take their real paths. Contexts are not prefilled: Engine::fill_random puts random content in
// the cache (decode reads the same bytes whatever they hold), then warm-up and timed decode
// steps run at that length, every sequence of the batch one token per step. Each timed step
// ends by waiting for the device, as generation does (the next token needs the logits), and a
// cell reports the median step with the fastest and slowest beside it: a one-off stall (the
// 2026-12-05 H200 runs gave the fp16 cache's first cell 17.4 and 33.7 ms as a mean of 8 steps)
// then shows as spread instead of moving the figure. The run's first cell is run once untimed
// before it is measured.
//
// Two tables: decode tokens/s per (method, batch, context), with the fp16 cache's figure of the
// same cell as the baseline; and each cache's largest context at batch 1 on this device, found by
// giving the cache all free memory but a reserve, filling the longest sequence its pool holds and
// running decode steps at that length (a failure there doubles the reserve and tries again).
#include "e2e_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/fingerprint.h"
#include "kvq/artifact/output_path.h"
#include "kvq/calib/calib_writer.h"
#include "kvq/calib/calibrate.h"
#include "kvq/common/error.h"
#include "kvq/common/lists.h"
#include "kvq/methods/fit.h"
#include "kvq/methods/method.h"
#include "kvq/runtime/engine.h"
#include "llama_shapes.h"

namespace kvq::bench {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct Cell {
  std::string method;
  int batch = 0;
  int64_t context = 0;
  double ms = 0;                  // median decode step; 0: not measured (note says why)
  double ms_min = 0, ms_max = 0;  // the fastest and slowest timed step
  double tok_s = 0;               // batch tokens per second
  double x_fp16 = 0;              // tok_s / the fp16 cache's tok_s of the same cell; 0: no baseline
  double gpu_gib = -1;            // device memory in use during the steps (all of the device)
  std::string note;
};

struct MaxContext {
  std::string method;
  int64_t tokens = 0;        // the longest sequence decoded; 0: none (note says why)
  bool model_bound = false;  // the model's context, not memory, set the limit
  double pool_gib = 0;
  double bytes_per_token = 0;
  double ms = 0, tok_s = 0;  // the median step, as for a Cell
  double x_fp16 = 0;         // tokens / the fp16 cache's tokens
  std::string note;
};

struct Method {
  std::string name;
  methods::Quantizer q;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The methods fitted from a calibration of `m` on random tokens, fp16 first.
std::vector<Method> fit_methods(const model::LlamaModel& m, const E2eBenchOptions& f) {
  std::vector<Method> out;
  out.push_back({"fp16", methods::fit(methods::parse_method("fp16"), nullptr)});
  std::vector<methods::MethodSpec> specs;
  for (const std::string& name : f.methods) {
    if (name == "fp16") continue;
    specs.push_back(methods::parse_method(name));
  }
  if (specs.empty()) return out;
  const model::ModelConfig& c = m.config();
  const int64_t seq_len = std::min<int64_t>(f.calib_tokens, c.max_seq_len);
  std::vector<int32_t> tokens(seq_len + 1);
  uint32_t x = 12345;
  for (int32_t& t : tokens) {  // a fixed LCG: the same tokens on every machine
    x = x * 1664525u + 1013904223u;
    t = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(c.vocab_size));
  }
  calib::CalibOptions o;
  o.n_samples = 1;
  o.seq_len = seq_len;
  o.key_bins = 64;  // the tables' quality does not change the time of a step
  o.value_bins = 1024;
  o.progress = false;
  fmt::print(stderr, "bench e2e: calibrating on {} random tokens, fitting {} methods\n", seq_len,
             specs.size());
  const calib::CalibResult r = calib::calibrate(m, tokens, o);
  // Under $TMPDIR (temp_directory_path reads it), /tmp if unset.
  const std::string base = std::filesystem::temp_directory_path().string();
  std::string dir_template = base + "/kvq-bench-e2e.XXXXXX";
  const char* tmp_dir = mkdtemp(dir_template.data());
  if (!tmp_dir) fail("bench e2e: cannot create a temporary directory in {}", base);
  const std::string path = std::string(tmp_dir) + "/calib.h5";
  try {
    calib::write_calib(path, r, artifact::model_fingerprint(c, m.weights().checksum, m.source()),
                       {"random tokens", "", static_cast<int64_t>(tokens.size()), 1, seq_len, 0},
                       {m.device().str(), c10::toString(m.dtype()), ""});
    const artifact::CalibData d = artifact::read_calib(path);
    for (const methods::MethodSpec& s : specs) {
      methods::Quantizer q = methods::fit(s, &d);
      out.push_back({q.label(), std::move(q)});
    }
  } catch (...) {
    std::remove(path.c_str());
    rmdir(tmp_dir);
    throw;
  }
  std::remove(path.c_str());
  rmdir(tmp_dir);
  return out;
}

struct StepTimes {
  double median = 0, min = 0, max = 0;  // ms
};

// `batch` sequences filled to `context` tokens, `warmup` then `steps` decode steps, each waited
// for; the steps' times. Closes the sequences whatever happens.
StepTimes time_steps(runtime::Engine& e, int batch, int64_t context, int warmup, int steps,
                     double* gpu_gib) {
  std::vector<int64_t> ids;
  struct Closer {
    runtime::Engine& e;
    std::vector<int64_t>& ids;
    ~Closer() {
      for (int64_t id : ids) e.close(id);
    }
  } closer{e, ids};
  for (int b = 0; b < batch; ++b) {
    const int64_t id = e.open(context + warmup + steps);
    if (id < 0) fail("the pool has no room for sequence {} of {}", b + 1, batch);
    ids.push_back(id);
    e.fill_random(id, context);
  }
  // A pool grown for this cell (the fp16 cache's rows) leaves the last cell's blocks in
  // LibTorch's cache: give them back, so that a cell runs and reports (gpu_gib) with its own
  // memory only, not near the device's limit because of the cell before.
  runtime::release_cached_memory(e.model().device());
  const std::vector<int32_t> tokens(batch, 1);
  for (int i = 0; i < warmup; ++i) e.decode(ids, tokens).sum().item<float>();
  const auto [used, total] = runtime::device_memory(e.model().device());
  *gpu_gib = used >= 0 ? used / kGiB : -1;
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    e.decode(ids, tokens).sum().item<float>();  // waits for the device
    ms.push_back(seconds_since(t0) * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  const size_t h = ms.size() / 2;
  return {ms.size() % 2 ? ms[h] : (ms[h - 1] + ms[h]) / 2, ms.front(), ms.back()};
}

// warm_device: the first cell that fits is run once untimed before it is measured (the run's
// first decode steps also pay for the device's clocks coming up and LibTorch's first uses).
std::vector<Cell> measure_cells(const model::LlamaModel& m, const Method& method,
                                const E2eBenchOptions& f, bool warm_device) {
  std::vector<Cell> cells;
  runtime::EngineOptions eo;
  eo.max_batch = *std::max_element(f.batches.begin(), f.batches.end());
  eo.kv_mem_gib = f.kv_mem_gib;
  std::unique_ptr<runtime::Engine> e;
  std::string refused;
  try {
    e = std::make_unique<runtime::Engine>(m, method.q, eo);
  } catch (const std::exception& ex) {
    refused = ex.what();
  }
  for (int batch : f.batches) {
    for (int64_t context : f.contexts) {
      Cell cell;
      cell.method = method.name;
      cell.batch = batch;
      cell.context = context;
      const int64_t capacity = context + f.warmup + f.steps;
      if (!e) {
        cell.note = refused;
      } else if (capacity > m.config().max_seq_len) {
        cell.note = fmt::format("past the model's context ({} tokens)", m.config().max_seq_len);
      } else if (e->pages_for(capacity) * batch > e->total_pages()) {
        cell.note = fmt::format(
            "does not fit: {} x {} tokens need {} pages of {} tokens, the pool holds {}", batch,
            capacity, e->pages_for(capacity) * batch, e->store().page_size(), e->total_pages());
      } else {
        fmt::print(stderr, "bench e2e: {} batch {} context {}\n", method.name, batch, context);
        try {
          if (warm_device) {
            time_steps(*e, batch, context, f.warmup, f.steps, &cell.gpu_gib);
            warm_device = false;
          }
          const StepTimes t = time_steps(*e, batch, context, f.warmup, f.steps, &cell.gpu_gib);
          cell.ms = t.median;
          cell.ms_min = t.min;
          cell.ms_max = t.max;
          cell.tok_s = batch * 1e3 / cell.ms;
        } catch (const std::exception& ex) {
          cell.note = std::string(ex.what()).substr(0, std::string(ex.what()).find('\n'));
        }
      }
      cells.push_back(cell);
    }
  }
  return cells;
}

MaxContext measure_max_context(const model::LlamaModel& m, const Method& method,
                               const E2eBenchOptions& f) {
  MaxContext r;
  r.method = method.name;
  const at::Device device = m.device();
  double reserve = f.reserve_gib;
  for (int attempt = 0; attempt < 4; ++attempt, reserve *= 2) {
    double kv_gib = f.kv_mem_gib;
    if (kv_gib <= 0) {
      runtime::release_cached_memory(device);
      const auto [used, total] = runtime::device_memory(device);
      if (total < 0) {
        r.note = "needs a GPU or --kv-mem";
        return r;
      }
      kv_gib = (total - used) / kGiB - reserve;
      if (kv_gib <= 0) {
        r.note = fmt::format("less than the {:.1f} GiB reserve is free", reserve);
        return r;
      }
    }
    try {
      runtime::EngineOptions eo;
      eo.max_batch = 1;
      eo.kv_mem_gib = kv_gib;
      runtime::Engine e(m, method.q, eo);
      const int64_t page = e.store().page_size();
      const int64_t capacity = std::min(m.config().max_seq_len, e.total_pages() * page);
      r.model_bound = capacity == m.config().max_seq_len;
      r.tokens = capacity - f.warmup - f.steps;
      r.pool_gib = kv_gib;
      r.bytes_per_token = e.store().cost().bytes_per_token;
      fmt::print(stderr, "bench e2e: {} largest context: trying {} tokens in {:.1f} GiB\n",
                 method.name, r.tokens, kv_gib);
      double gpu = 0;
      r.ms = time_steps(e, 1, r.tokens, f.warmup, f.steps, &gpu).median;
      r.tok_s = 1e3 / r.ms;
      r.note.clear();
      return r;
    } catch (const std::exception& ex) {
      r.tokens = 0;
      r.note = std::string(ex.what()).substr(0, std::string(ex.what()).find('\n'));
      if (f.kv_mem_gib > 0) return r;  // the user's size: no other to try
    }
  }
  return r;
}

std::string num(double x, int precision) {
  return x > 0 ? fmt::format("{:.{}f}", x, precision) : std::string("-");
}

}  // namespace

void run_e2e_bench(const E2eBenchOptions& f) {
  if (f.contexts.empty() || f.batches.empty()) fail("--contexts and --batches: give at least one");
  constexpr int64_t kMaxTokens = int64_t{1} << 26;  // also --model-context's bound
  for (int64_t t : f.contexts) {
    if (t < 1 || t > kMaxTokens) fail("--contexts: expected 1..2^26 tokens, found {}", t);
  }
  for (int b : f.batches) {
    if (b < 1 || b > 4096) fail("--batches: expected 1..4096 sequences, found {}", b);
  }
  require_distinct(f.contexts, "--contexts");
  require_distinct(f.batches, "--batches");
  if (f.warmup < 0 || f.warmup > 100000 || f.steps < 1 || f.steps > 100000) {
    fail("--warmup 0..100000 and --steps 1..100000: found {} and {}", f.warmup, f.steps);
  }
  if (!(f.reserve_gib >= 0) || !(f.kv_mem_gib >= 0)) {
    fail("--reserve and --kv-mem: expected sizes in GiB >= 0");
  }
  if (f.calib_tokens < 2) fail("--calib-tokens: expected >= 2, found {}", f.calib_tokens);
  methods::parse_methods(f.methods, "--methods");  // fail before loading
  model::ModelConfig c = llama_preset(f.preset, "--preset");
  c.max_seq_len = f.model_context > 0 ? f.model_context : (f.preset == "7b" ? 2097152 : 4096);
  if (c.max_seq_len > kMaxTokens) {
    fail("--model-context: expected at most 2^26 tokens, found {}", c.max_seq_len);
  }
  const at::Device device = model::parse_device(f.device, "--device");
  const at::ScalarType dtype = model::parse_dtype(f.dtype, "--dtype");
  artifact::check_outputs({{"--json-file", f.json_file}}, {});  // before any work

  fmt::print(stderr, "bench e2e: building the {} model with random weights on {}\n", f.preset,
             device.str());
  const model::LlamaModel m = random_llama(c, dtype, device);
  const std::vector<Method> methods = fit_methods(m, f);

  std::vector<Cell> cells;
  std::vector<MaxContext> maxes;
  for (const Method& method : methods) {
    for (Cell& cell : measure_cells(m, method, f, &method == &methods.front())) {
      cells.push_back(cell);
    }
    if (f.max_context) maxes.push_back(measure_max_context(m, method, f));
  }
  for (Cell& cell : cells) {  // the fp16 cache's cell of the same batch and context
    for (const Cell& base : cells) {
      if (base.method == "fp16" && base.batch == cell.batch && base.context == cell.context &&
          base.tok_s > 0 && cell.tok_s > 0) {
        cell.x_fp16 = cell.tok_s / base.tok_s;
      }
    }
  }
  for (MaxContext& x : maxes) {
    if (!maxes.empty() && maxes[0].tokens > 0 && x.tokens > 0) {
      x.x_fp16 = static_cast<double>(x.tokens) / maxes[0].tokens;
    }
  }

  const auto [used, total] = runtime::device_memory(device);
  const std::string shape = fmt::format(
      "{} shapes ({} layers, dim {}, {}/{} heads x {}, FFN {}, vocab {}, context {}) with RANDOM "
      "{} weights",
      f.preset == "7b" ? "LLaMA-7B" : f.preset, c.n_layers, c.dim, c.n_heads, c.n_kv_heads,
      c.head_dim, c.ffn_dim, c.vocab_size, c.max_seq_len, f.dtype);
  nlohmann::json j;
  j["model"] = shape;
  j["device"] = runtime::device_name(device);
  j["device_memory_gib"] = total > 0 ? total / kGiB : -1;
  j["warmup"] = f.warmup;
  j["steps"] = f.steps;
  j["calib_tokens"] = f.calib_tokens;
  j["decode"] = nlohmann::json::array();
  for (const Cell& x : cells) {
    j["decode"].push_back({{"method", x.method},
                           {"batch", x.batch},
                           {"context", x.context},
                           {"ms_per_step", x.ms},
                           {"ms_per_step_min", x.ms_min},
                           {"ms_per_step_max", x.ms_max},
                           {"tokens_per_s", x.tok_s},
                           {"x_fp16", x.x_fp16},
                           {"gpu_gib", x.gpu_gib},
                           {"note", x.note}});
  }
  j["max_context"] = nlohmann::json::array();
  for (const MaxContext& x : maxes) {
    j["max_context"].push_back({{"method", x.method},
                                {"tokens", x.tokens},
                                {"model_bound", x.model_bound},
                                {"x_fp16", x.x_fp16},
                                {"pool_gib", x.pool_gib},
                                {"bytes_per_token", x.bytes_per_token},
                                {"ms_per_step", x.ms},
                                {"tokens_per_s", x.tok_s},
                                {"note", x.note}});
  }
  if (!f.json_file.empty())
    artifact::write_text_file_atomic(
        f.json_file, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  if (f.json) {
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  fmt::print("kvq bench e2e: {}; on {}{}.\n", shape, runtime::device_name(device),
             total > 0 ? fmt::format(" ({:.0f} GiB)", total / kGiB) : "");
  fmt::print(
      "Methods fitted on {} random tokens. Contexts are filled with random cache content (no "
      "prefill); {} warm-up and {} timed decode steps per cell, each waited for: the median "
      "step, and the fastest and slowest.\n\n",
      f.calib_tokens, f.warmup, f.steps);
  fmt::print(
      "| method | batch | context | ms/step | min-max ms | tok/s | x fp16 | GPU GiB in use | note "
      "|\n");
  fmt::print("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const Cell& x : cells) {
    const std::string spread =
        x.ms > 0 ? fmt::format("{}-{}", num(x.ms_min, 2), num(x.ms_max, 2)) : "-";
    fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", x.method, x.batch, x.context,
               num(x.ms, 2), spread, num(x.tok_s, 1), num(x.x_fp16, 2), num(x.gpu_gib, 1), x.note);
  }
  if (maxes.empty()) return;
  fmt::print(
      "\n| method | largest context (batch 1) | x fp16 | cache GiB | bytes/token | "
      "ms/step there | tok/s there | note |\n");
  fmt::print("|---|---:|---:|---:|---:|---:|---:|---|\n");
  for (const MaxContext& x : maxes) {
    std::string note = x.note;
    if (x.model_bound) note = "the model's context, not memory, is the limit";
    fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} |\n", x.method,
               x.tokens > 0 ? std::to_string(x.tokens) : "-", num(x.x_fp16, 2), num(x.pool_gib, 2),
               num(x.bytes_per_token, 0), num(x.ms, 2), num(x.tok_s, 1), note);
  }
}

}  // namespace kvq::bench
