// How subcommands plug into the kvq binary: each file registers one CLI11 subcommand whose
// callback does the work. What subcommands share is declared next to where it is defined
// (options.h, results.h, inspect.h), so each file includes only what it uses.
#pragma once

#include <CLI/CLI.hpp>

namespace kvq::app {

void register_bench(CLI::App& app);
void register_calibrate(CLI::App& app);
void register_eval(CLI::App& app);
void register_fit(CLI::App& app);
void register_generate(CLI::App& app);
void register_inspect(CLI::App& app);
void register_reproduce(CLI::App& app);
void register_serve(CLI::App& app);

}  // namespace kvq::app
