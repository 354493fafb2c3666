// kvq: the command-line entry point. Parsing and printing only; the work is in lib/kvq.
// Exit codes: 0 success, 1 error (one line on stderr), 2 bad usage.
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <thread>

#include <malloc.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <fmt/format.h>

#include "command.h"
#include "kvq/common/error.h"

int main(int argc, char** argv) {
  // libgomp (LibTorch's and OpenBLAS's threads) spins while waiting for work by default; when
  // the cores are shared (ctest -j2, a second job) the spinning threads starve the working ones
  // and a calibration ran 30x slower. The policy is read when libgomp loads, before main, so it
  // is set here and the process re-executes itself once.
  if (!std::getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0) {
    execv("/proc/self/exe", argv);  // returns only on failure: carry on with the default policy
  }
  // glibc serves every allocation above 32 MiB with a fresh mmap and unmaps it on free, so each
  // forward's logits and attention scores were page-faulted in again (zeroed by the kernel) on
  // every batch: 35% of an eval's time in the kernel, and a 5.6x slower wt2-llama-1m eval. The
  // heap serves them instead and keeps what it grew to; peak memory is unchanged (the same
  // buffers were live at once before), it is just not handed back between batches.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  CLI::App app{"kvq: KV-cache quantization for long-context LLM inference (KVQuant and baselines)"};
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", std::string("kvq ") + KVQ_VERSION);
  app.require_subcommand(1);
  kvq::app::register_bench(app);
  kvq::app::register_calibrate(app);
  kvq::app::register_eval(app);
  kvq::app::register_fit(app);
  kvq::app::register_generate(app);
  kvq::app::register_inspect(app);
  kvq::app::register_reproduce(app);
  kvq::app::register_serve(app);

  // LibTorch may start with one intra-op thread; use every core unless the user chose.
  if (!std::getenv("OMP_NUM_THREADS")) {
    at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version exit 0; usage errors 2
  } catch (...) {
    std::string cmd = "kvq";
    for (const CLI::App* level = &app; !level->get_subcommands().empty();) {  // "kvq bench e2e"
      level = level->get_subcommands().front();
      cmd += " " + level->get_name();
    }
    std::string what;
    try {
      throw;
    } catch (const c10::Error& e) {
      // LibTorch's errors carry a backtrace after the first line; the rule is one line.
      what = kvq::one_line(std::string("LibTorch: ") + e.what_without_backtrace());
    } catch (...) {
      what = kvq::describe_current_exception();
    }
    fmt::print(stderr, "{}: error: {}\n", cmd, what);
    return 1;
  }
  return 0;
}
