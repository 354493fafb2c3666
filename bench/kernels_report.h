// The host side of `kvq bench kernels` (kernels_bench.cpp), in plain C++ so that it runs and is
// tested without a GPU (tests/runtime/test_bench_kernels.cpp): the option checks, each timed
// output's error against the fp64 reference and the bound that makes it WRONG, and the rows with
// their derived figures, markdown table and JSON. Not here: anything that touches the device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels_bench.h"

namespace kvq::bench {

// Throws kvq::Error naming the flag, e.g. "--contexts: expected 1..2^26 tokens, found 0", before
// any work. Method strings are parsed by the caller (methods::parse_method).
void check_kernels_bench_options(const KernelsBenchOptions& options);

// A kernel's output against the fp64 reference, both [rows][row_len] (rows: sequence x query
// head). Relative errors are L2 norms; a row whose reference is all zeros divides by 1e-30.
struct OutputError {
  double rel_l2 = 0.0;         // ||out - ref|| / ||ref|| over the whole tensor
  double worst_row_rel = 0.0;  // the same per row, the largest (infinite for a row with NaN/Inf)
  int64_t worst_row = -1;      // that row: sequence * n_q_heads + query head
  int64_t non_finite = 0;      // NaN or Inf elements of out (left out of the norms)
};
OutputError compare_output(const std::vector<float>& out, const std::vector<double>& ref,
                           int64_t row_len);

// When a timed output is WRONG: any non-finite element, or an error past either figure.
//
// Expected errors, all kernels reading fp16 inputs exactly and rounding their output to fp16
// (2^-11 relative at most, ~3e-4 relative L2):
// - fp16 flash and SDPA: fp32 scores and sums, so the output rounding dominates: ~3e-4.
// - fp16 cuBLAS: normalized probabilities rounded to fp16 (2^-11 each, ~3e-4). Those below
//   2^-14 are subnormal, and the old cross-check (near-uniform attention, probabilities ~1/T)
//   suggested its GEMM flushes them past ~16K tokens. With scores of std kScoreStd = 4 they hold
//   little of the output: simulated (Gaussian scores, uniform random values, every subnormal
//   flushed) 7e-3 at 128K and 1.0e-2 at 1M over the tensor, 2.8e-2 for the worst of 32 rows at
//   1M; 3e-4 if they are kept.
// - compressed caches against their own dequantized contents: the kernels hold dequantized keys,
//   RoPE phases and the rotated query in fp16 (~6e-4 relative per element), so each score is off
//   by ~ score std x 6e-4 = 2.4e-3, which moves the output by about as much relative; with fp16
//   probabilities and output rounding ~3e-3 (the GPU tests see <= 2.6e-3 per row at std ~1).
// A real fault is far above: a dropped split or page moves the rows whose few heavy tokens it
// held by O(1), a wrong RoPE phase or a wrong KV head scrambles the scores (O(1) everywhere).
// 2e-2 over the tensor is ~7x the compressed kernels' expected error (2x cuBLAS's flushed case);
// 5e-2 per row covers the spread of the worst of 32-256 rows and still catches a fault confined
// to one sequence or head, which the tensor-wide figure dilutes.
struct ErrorBound {
  double rel_l2 = 2e-2;
  double worst_row_rel = 5e-2;
};
inline constexpr ErrorBound kOutputBound{};

// The standard deviation the queries give the scores over each cache (natural-log units): the
// attention is peaked, ~8 heavy tokens at 4K to ~70 at 1M (1 / sum of p^2 over Gaussian scores),
// so outputs are far from zero and every score matters.
inline constexpr double kScoreStd = 4.0;

// "" when `e` is within `bound`, else why, e.g. "rel L2 7.0e-01 > 2e-02".
std::string bound_violation(const OutputError& e, const ErrorBound& bound);

// One kernel at one shape: a row of the table.
struct KernelRow {
  std::string shape;  // "mha" or "gqa"
  int batch = 0;
  int64_t context = 0;
  std::string method;  // the cache: "fp16" or a method string
  std::string kernel;  // "cuBLAS", "flash", "SDPA" (fp16); "v1 simple", "v2 mma" (compressed)
  int n_q_heads = 0;   // to name the worst row
  double ms = -1.0;    // median time; -1: not timed, or WRONG
  double bytes = 0.0;  // read by one decode step
  double bits = 0.0;   // per cached element
  double roofline_ms = -1.0;     // the read kernel on `bytes` (-1: not measured)
  double append_ms = -1.0;       // appending one token (compressed, 32K)
  double step_append_ms = -1.0;  // the append, then this kernel: one decode step (32K)
  bool checked = false;          // compared with the fp64 reference
  bool wrong = false;
  OutputError error;
  std::string note;
  // Derived by derive_figures().
  double gbs = 0.0, pct_copy = 0.0, pct_roofline = 0.0, x_cublas = 0.0, x_flash = 0.0, x_sdpa = 0.0;
};

// Records `e` for the row; past `bound` the row is WRONG: its time is dropped (no figure derived
// from it, nor any speedup against it) and the note says why and where.
void set_check(KernelRow* row, const OutputError& e, const ErrorBound& bound);

// GB/s, % of copy, % of the roofline (roofline ms / kernel ms) and the speedups against the fp16
// rows of the same shape, batch and context (none against a row without a time).
void derive_figures(std::vector<KernelRow>* rows, double copy_gbs);

int count_wrong(const std::vector<KernelRow>& rows);
int count_checked(const std::vector<KernelRow>& rows);

// The markdown table, one row per kernel per shape, header line included.
std::string kernels_table(const std::vector<KernelRow>& rows);
// The rows as JSON objects (fields as the table's, errors included).
nlohmann::json kernels_json(const std::vector<KernelRow>& rows);
// The closing line: "all N timed outputs within the bounds" or "K of N timed outputs WRONG ...".
std::string check_summary(const std::vector<KernelRow>& rows);

}  // namespace kvq::bench
