// kvq: the command-line entry point. Parsing and printing only; the work is in lib/kvq.
// Exit codes: 0 success, 1 error (one line on stderr), 2 bad usage.
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <exception>
#include <thread>

#include <ATen/Parallel.h>

#include <fmt/format.h>

#include "command.h"
#include "kvq/common/error.h"

int main(int argc, char** argv) {
  CLI::App app{"kvq: KV-cache quantization for long-context LLM inference (KVQuant and baselines)"};
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", std::string("kvq ") + KVQ_VERSION);
  app.require_subcommand(1);
  kvq::app::register_eval(app);
  kvq::app::register_generate(app);

  // LibTorch may start with one intra-op thread; use every core unless the user chose.
  if (!std::getenv("OMP_NUM_THREADS")) {
    at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version exit 0; usage errors 2
  } catch (const std::exception& e) {
    std::string cmd = "kvq";
    for (const CLI::App* sub : app.get_subcommands()) cmd += " " + sub->get_name();
    fmt::print(stderr, "{}: error: {}\n", cmd, e.what());
    return 1;
  }
  return 0;
}
