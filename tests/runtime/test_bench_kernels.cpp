// The host side of `kvq bench kernels` without a GPU (the GPU parts run in `kvq bench kernels`
// on the device): each timed output's error against the fp64 reference and the bound that makes
// it WRONG (no time, no figure from it, the exit code), the derived figures and the table, and
// the flags (comma-separated lists, bad values refused before any GPU work).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels_report.h"
#include "support/test_support.h"

namespace kvq::bench {
namespace {

TEST(BenchKernelsCheck, RelativeErrorsOverTheTensorAndPerRow) {
  // Two rows of 2: row 0 exact, row 1 off by (0.3, 0.4) against (3, 4): 0.5 / 5 = 0.1.
  const std::vector<double> ref = {1.0, 0.0, 3.0, 4.0};
  OutputError e = compare_output({1.0f, 0.0f, 3.3f, 4.4f}, ref, 2);
  EXPECT_NEAR(e.worst_row_rel, 0.1, 1e-6);
  EXPECT_EQ(e.worst_row, 1);
  EXPECT_NEAR(e.rel_l2, 0.5 / std::sqrt(26.0), 1e-6);
  EXPECT_EQ(e.non_finite, 0);
  e = compare_output({1.0f, 0.0f, 3.0f, 4.0f}, ref, 2);
  EXPECT_EQ(e.rel_l2, 0.0);
  EXPECT_EQ(e.worst_row_rel, 0.0);
  EXPECT_EQ(e.worst_row, 0);
  // NaN (the poison of an unwritten element) and Inf: counted, and their row is the worst.
  e = compare_output({1.0f, NAN, 3.0f, INFINITY}, ref, 2);
  EXPECT_EQ(e.non_finite, 2);
  EXPECT_TRUE(std::isinf(e.worst_row_rel));
  EXPECT_EQ(e.worst_row, 0);
  EXPECT_THROW(compare_output({1.0f, 2.0f, 3.0f}, ref, 2), Error);
}

TEST(BenchKernelsCheck, Bound) {
  OutputError e;
  e.rel_l2 = 1.9e-2;
  e.worst_row_rel = 4.9e-2;
  EXPECT_EQ(bound_violation(e, kOutputBound), "");
  e.rel_l2 = 0.7;
  EXPECT_EQ(bound_violation(e, kOutputBound), "rel L2 7.0e-01 > 2e-02");
  e.rel_l2 = 1e-3;
  e.worst_row_rel = 0.06;
  EXPECT_EQ(bound_violation(e, kOutputBound), "worst row 6.0e-02 > 5e-02");
  e.worst_row_rel = NAN;
  EXPECT_NE(bound_violation(e, kOutputBound), "");
  e.worst_row_rel = 0.0;
  e.non_finite = 3;
  EXPECT_EQ(bound_violation(e, kOutputBound), "3 NaN/Inf elements");
}

KernelRow make_row(const std::string& method, const std::string& kernel, double ms) {
  KernelRow r;
  r.shape = "mha";
  r.batch = 2;
  r.context = 4096;
  r.method = method;
  r.kernel = kernel;
  r.n_q_heads = 32;
  r.ms = ms;
  r.bytes = 1e9;
  r.bits = method == "fp16" ? 16 : 3.76;
  r.roofline_ms = 0.25;
  return r;
}

TEST(BenchKernelsCheck, WrongRowsLoseTheirTimeAndEveryFigureFromIt) {
  OutputError good;
  good.rel_l2 = 3e-4;
  good.worst_row_rel = 8e-4;
  good.worst_row = 5;
  OutputError bad;
  bad.rel_l2 = 0.7;
  bad.worst_row_rel = 0.99;
  bad.worst_row = 32 + 3;  // sequence 1, query head 3
  std::vector<KernelRow> rows = {make_row("fp16", "cuBLAS", 2.0), make_row("fp16", "flash", 1.0),
                                 make_row("fp16", "SDPA", 0.5),
                                 make_row("nuq3-1%-vhead", "v1 simple", 4.0),
                                 make_row("nuq3-1%-vhead", "v2 mma", 0.8)};
  set_check(&rows[0], good, kOutputBound);
  set_check(&rows[1], good, kOutputBound);
  set_check(&rows[2], bad, kOutputBound);  // SDPA WRONG: no speedup against it
  set_check(&rows[3], bad, kOutputBound);
  set_check(&rows[4], good, kOutputBound);
  KernelRow other_cell = make_row("fp16", "SDPA", 0.1);  // another context: not a baseline here
  other_cell.context = 8192;
  rows.push_back(other_cell);
  derive_figures(&rows, 4000.0);

  EXPECT_FALSE(rows[1].wrong);
  EXPECT_TRUE(rows[2].wrong);
  EXPECT_EQ(rows[2].ms, -1.0);
  EXPECT_EQ(rows[2].note, "WRONG: rel L2 7.0e-01 > 2e-02 (worst: sequence 1 query head 3)");
  EXPECT_EQ(rows[3].gbs, 0.0);
  EXPECT_EQ(rows[3].pct_roofline, 0.0);

  const KernelRow& v2 = rows[4];
  EXPECT_DOUBLE_EQ(v2.gbs, 1e9 / 0.8e-3 / 1e9);
  EXPECT_DOUBLE_EQ(v2.pct_copy, 100.0 * v2.gbs / 4000.0);
  EXPECT_DOUBLE_EQ(v2.pct_roofline, 100.0 * 0.25 / 0.8);
  EXPECT_DOUBLE_EQ(v2.x_cublas, 2.0 / 0.8);
  EXPECT_DOUBLE_EQ(v2.x_flash, 1.0 / 0.8);
  EXPECT_EQ(v2.x_sdpa, 0.0);
  EXPECT_DOUBLE_EQ(rows[1].x_flash, 1.0);

  EXPECT_EQ(count_checked(rows), 5);
  EXPECT_EQ(count_wrong(rows), 2);
  EXPECT_EQ(check_summary(rows),
            "2 of 5 timed outputs WRONG against fp64 (rows marked WRONG, no time shown): exit "
            "code 1");

  rows[4].step_append_ms = 0.95;  // the append, then the kernel (measured at 32K)
  const std::string table = kernels_table(rows);
  EXPECT_EQ(table.rfind("| shape | batch | context | cache | kernel | ms |", 0), 0u) << table;
  EXPECT_NE(table.find("| % roofline | x SDPA | x flash | rel L2 | worst row |"),
            std::string::npos);
  EXPECT_NE(table.find("| mha | 2 | 4096 | nuq3-1%-vhead | v2 mma | 0.8000 | 3.76 | 1000.0 | "
                       "1250 | 31 | 31 | - | 1.25 | 3.0e-04 | 8.0e-04 | - | 0.9500 |  |"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| mha | 2 | 4096 | fp16 | SDPA | WRONG | 16.00 | 1000.0 | - | - | - | - | "
                       "- | 7.0e-01 | 9.9e-01 | - | - | WRONG: "),
            std::string::npos)
      << table;
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 2 + 6);

  const nlohmann::json j = kernels_json(rows);
  ASSERT_EQ(j.size(), 6u);
  EXPECT_EQ(j[2]["wrong"], true);
  EXPECT_EQ(j[2]["ms"], -1.0);
  EXPECT_EQ(j[2]["worst_row"], "sequence 1 query head 3");
  EXPECT_DOUBLE_EQ(j[4]["rel_l2"].get<double>(), 3e-4);
  EXPECT_DOUBLE_EQ(j[4]["pct_roofline"].get<double>(), 31.25);
  EXPECT_DOUBLE_EQ(j[4]["step_append_ms"].get<double>(), 0.95);
  EXPECT_EQ(j[3]["step_append_ms"], -1.0);
  EXPECT_TRUE(j[5]["rel_l2"].is_null());  // never checked
  EXPECT_EQ(j[5]["checked"], false);
}

TEST(BenchKernelsCheck, AllWithinBounds) {
  std::vector<KernelRow> rows = {make_row("fp16", "flash", 1.0)};
  set_check(&rows[0], OutputError{}, kOutputBound);
  EXPECT_EQ(check_summary(rows), "all 1 timed outputs within the bounds of fp64");
}

TEST(BenchKernelsCheck, Options) {
  // The error of the default options with one field changed.
  const auto error_with = [](auto&& change) {
    KernelsBenchOptions f;
    change(f);
    return test::error_of([&] { check_kernels_bench_options(f); });
  };
  EXPECT_EQ(error_with([](KernelsBenchOptions&) {}), "<no error>");
  EXPECT_EQ(error_with([](KernelsBenchOptions& f) {
              f.contexts = {4096, 0};
            }),
            "--contexts: expected 1..2^26 tokens, found 0");
  EXPECT_EQ(error_with([](KernelsBenchOptions& f) {
              f.batches = {1, 5000};
            }),
            "--batches: expected 1..4096 sequences, found 5000");
  EXPECT_EQ(error_with([](KernelsBenchOptions& f) {
              f.versions = {2, 4};
            }),
            "--versions: expected 1 (simple), 2 (mma) or 3 (two-phase), found 4");
  EXPECT_EQ(error_with([](KernelsBenchOptions& f) { f.shapes = {}; }),
            "--contexts, --batches and --shapes: give at least one each");
  // A value given twice would time a cache twice under one row's key.
  EXPECT_EQ(error_with([](KernelsBenchOptions& f) {
              f.versions = {3, 1, 3};
            }),
            "--versions: '3' is given twice");
  EXPECT_EQ(error_with([](KernelsBenchOptions& f) {
              f.contexts = {4096, 32768, 4096};
            }),
            "--contexts: '4096' is given twice");
  EXPECT_EQ(error_with([](KernelsBenchOptions& f) {
              f.batches = {8, 8};
            }),
            "--batches: '8' is given twice");
  EXPECT_EQ(error_with([](KernelsBenchOptions& f) {
              f.shapes = {"gqa", "mha", "gqa"};
            }),
            "--shapes: 'gqa' is given twice");
}

// Through the kvq binary: the lists are split at commas (the bad value is the second), and bad
// values are refused before any GPU work, so this runs on any machine.
TEST(BenchKernelsCheck, Flags) {
  const std::string cmd = "bench kernels";
  test::expect_one_line_error(test::run_kvq(cmd + " --contexts 4096,0"), cmd,
                              "--contexts: expected 1..2^26 tokens, found 0");
  test::expect_one_line_error(test::run_kvq(cmd + " --batches 1,0"), cmd,
                              "--batches: expected 1..4096 sequences, found 0");
  test::expect_one_line_error(test::run_kvq(cmd + " --shapes mha,mqa"), cmd, "--shapes: 'mqa'");
  test::expect_one_line_error(test::run_kvq(cmd + " --versions 1,4"), cmd, "--versions");
  test::expect_one_line_error(test::run_kvq(cmd + " --methods nuq3-1%-vhead,nuq9"), cmd, "'nuq9'");
  test::expect_one_line_error(test::run_kvq(cmd + " --versions 3,3"), cmd,
                              "--versions: '3' is given twice");
  test::expect_one_line_error(test::run_kvq(cmd + " --methods nuq3-1%,nuq3-1.0%"), cmd,
                              "--methods: 'nuq3-1%' and 'nuq3-1.0%' are the same method");
  test::expect_one_line_error(test::run_kvq(cmd + " --repeats 0"), cmd, "--repeats");
  test::expect_one_line_error(test::run_kvq(cmd + " --json-file /nonexistent/dir/x.json"), cmd,
                              "/nonexistent/dir");
  EXPECT_EQ(test::run_kvq(cmd + " --contexts 4096,abc").exit_code, 2);
}

}  // namespace
}  // namespace kvq::bench
