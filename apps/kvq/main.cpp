// kvq: the command-line entry point. Parsing and printing only; the work is in lib/kvq.
// Exit codes: 0 success, 1 error (one line on stderr), 2 bad usage.
#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>
#include <thread>

#include <malloc.h>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <fmt/format.h>

#include "command.h"
#include "kvq/common/error.h"

namespace {

// CLI11 converts integers with strtoll/strtoull without looking at errno: a value past 2^63
// became 2^63 - 1 and "-1" for an unsigned flag became 2^64 - 1, both accepted as if typed. This
// check runs before the conversion, on each value of every integer option (its type name INT or
// UINT), so such a value is a usage error naming the flag. Narrower types keep CLI11's own
// check (the converted value must round-trip).
std::string check_integer(const std::string& text, bool is_unsigned) {
  const char* begin = text.c_str();
  while (*begin == ' ' || *begin == '\t') ++begin;
  char* end = nullptr;
  errno = 0;
  if (is_unsigned) {
    if (*begin == '-') return "expected an integer >= 0, found " + text;
    std::strtoull(begin, &end, 0);
  } else {
    std::strtoll(begin, &end, 0);
  }
  if (end == begin || *end != '\0') return "expected an integer, found " + text;
  if (errno == ERANGE)
    return std::string("expected an integer in ") +
           (is_unsigned ? "0..2^64 - 1" : "-2^63..2^63 - 1") + ", found " + text;
  return "";
}

void guard_integer_options(CLI::App& app) {
  for (CLI::Option* opt : app.get_options()) {
    const std::string type = opt->get_type_name();
    if (type != "INT" && type != "UINT") continue;
    const bool is_unsigned = type == "UINT";
    opt->check(CLI::Validator(
        [is_unsigned](std::string& value) { return check_integer(value, is_unsigned); }, ""));
  }
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    guard_integer_options(*sub);
}

// "kvq bench e2e": the subcommands parsed so far.
std::string command_name(const CLI::App& app) {
  std::string cmd = "kvq";
  for (const CLI::App* level = &app; !level->get_subcommands().empty();) {
    level = level->get_subcommands().front();
    cmd += " " + level->get_name();
  }
  return cmd;
}

// CLI11's "Could not convert: --port = 99999999999" in the form of kvq's other usage errors. After
// check_integer, an integer flag fails conversion only when it is narrower than 64 bits (kvq's are
// int), and a number flag when the text is not a number.
std::string usage_message(const CLI::App& app, const std::string& what) {
  const std::string prefix = "Could not convert: ";
  const size_t eq = what.find(" = ");
  if (what.rfind(prefix, 0) != 0 || eq == std::string::npos) return what;
  const std::string name = what.substr(prefix.size(), eq - prefix.size());
  const std::string value = what.substr(eq + 3);
  const CLI::Option* opt = nullptr;
  for (const CLI::App* level = &app; level;) {
    if (const CLI::Option* o = level->get_option_no_throw(name)) opt = o;
    const auto subs = level->get_subcommands();
    level = subs.empty() ? nullptr : subs.front();
  }
  if (!opt) return what;
  const std::string type = opt->get_type_name().substr(0, opt->get_type_name().find(':'));
  if (type == "INT")
    return name + ": expected an integer in -2^31..2^31 - 1 (a 32-bit flag), found " + value;
  if (type == "FLOAT") return name + ": expected a number, found " + value;
  return what;
}

// libgomp (LibTorch's and OpenBLAS's threads) spins while waiting for work by default; when the
// cores are shared (ctest -j2, a second job) the spinning threads starve the working ones and a
// calibration ran 30x slower. libgomp reads the policy in its constructor, before main. The
// executable's .preinit_array runs before any shared library's constructor, so the default is set
// there; the user's own OMP_WAIT_POLICY is kept. (kvq used to set it in main and re-execute
// itself, which loaded LibTorch's ~290 libraries twice: 1.1 s of each 2.2 s start.)
void passive_omp_by_default(int, char**, char**) { setenv("OMP_WAIT_POLICY", "PASSIVE", 0); }
using PreinitFunction = void (*)(int, char**, char**);
__attribute__((section(".preinit_array"), used)) const PreinitFunction kPassiveOmp =
    passive_omp_by_default;

}  // namespace

int main(int argc, char** argv) {
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
  guard_integer_options(app);

  // LibTorch may start with one intra-op thread; use every core unless the user chose.
  if (!std::getenv("OMP_NUM_THREADS")) {
    at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help and --version
    // Usage errors: the one-line form of every error, exit 2 (CLI11's own print adds a line).
    fmt::print(stderr, "{}: error: {}\n", command_name(app),
               kvq::one_line(usage_message(app, e.what())));
    return 2;
  } catch (...) {
    const std::string cmd = command_name(app);
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
