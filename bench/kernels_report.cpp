// The host side of `kvq bench kernels` (kernels_report.h): option checks, output errors, rows.
#include "kernels_report.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "kvq/artifact/output_path.h"
#include "kvq/common/error.h"
#include "kvq/common/lists.h"

namespace kvq::bench {
namespace {

constexpr int64_t kMaxTokens = int64_t{1} << 26;

std::string row_name(const KernelRow& r) {
  if (r.error.worst_row < 0 || r.n_q_heads < 1) return "-";
  return fmt::format("sequence {} query head {}", r.error.worst_row / r.n_q_heads,
                     r.error.worst_row % r.n_q_heads);
}

bool same_cell(const KernelRow& a, const KernelRow& b) {
  return a.shape == b.shape && a.batch == b.batch && a.context == b.context;
}

}  // namespace

void check_kernels_bench_options(const KernelsBenchOptions& f) {
  if (f.contexts.empty() || f.batches.empty() || f.shapes.empty()) {
    fail("--contexts, --batches and --shapes: give at least one each");
  }
  for (const int64_t t : f.contexts) {
    if (t < 1 || t > kMaxTokens) fail("--contexts: expected 1..2^26 tokens, found {}", t);
  }
  for (const int b : f.batches) {
    if (b < 1 || b > 4096) fail("--batches: expected 1..4096 sequences, found {}", b);
  }
  for (const std::string& s : f.shapes) {
    if (s != "mha" && s != "gqa") {
      fail("--shapes: '{}': expected mha (32 heads) or gqa (32 query, 8 KV heads)", s);
    }
  }
  if (f.versions.empty())
    fail("--versions: give at least one of 1 (simple), 2 (mma), 3 (two-phase)");
  for (const int v : f.versions) {
    if (v < 1 || v > 3)
      fail("--versions: expected 1 (simple), 2 (mma) or 3 (two-phase), found {}", v);
  }
  require_distinct(f.contexts, "--contexts");
  require_distinct(f.batches, "--batches");
  require_distinct(f.shapes, "--shapes");
  require_distinct(f.versions, "--versions");
  if (f.warmup < 0 || f.warmup > 100000 || f.repeats < 1 || f.repeats > 100000) {
    fail("--warmup 0..100000 and --repeats 1..100000: found {} and {}", f.warmup, f.repeats);
  }
  artifact::check_outputs({{"--json-file", f.json_file}}, {});
}

OutputError compare_output(const std::vector<float>& out, const std::vector<double>& ref,
                           int64_t row_len) {
  KVQ_CHECK(row_len > 0 && out.size() == ref.size() && out.size() % row_len == 0,
            "{} outputs, {} reference values, rows of {}", out.size(), ref.size(), row_len);
  OutputError e;
  double num = 0.0, den = 0.0;
  const int64_t rows = static_cast<int64_t>(out.size()) / row_len;
  for (int64_t r = 0; r < rows; ++r) {
    double rn = 0.0, rd = 0.0;
    const int64_t bad_before = e.non_finite;
    for (int64_t c = 0; c < row_len; ++c) {
      const size_t i = static_cast<size_t>(r * row_len + c);
      const double y = ref[i];
      rd += y * y;
      if (!std::isfinite(out[i])) {
        ++e.non_finite;
        continue;
      }
      rn += (out[i] - y) * (out[i] - y);
    }
    // A row with NaN/Inf is the worst whatever its finite part.
    const double rel = e.non_finite > bad_before ? INFINITY : std::sqrt(rn / std::max(rd, 1e-30));
    if (e.worst_row < 0 || rel > e.worst_row_rel) {
      e.worst_row_rel = rel;
      e.worst_row = r;
    }
    num += rn;
    den += rd;
  }
  e.rel_l2 = std::sqrt(num / std::max(den, 1e-30));
  return e;
}

std::string bound_violation(const OutputError& e, const ErrorBound& bound) {
  if (e.non_finite > 0) return fmt::format("{} NaN/Inf elements", e.non_finite);
  // Written so that a NaN error fails too.
  if (!(e.rel_l2 <= bound.rel_l2))
    return fmt::format("rel L2 {:.1e} > {:.0e}", e.rel_l2, bound.rel_l2);
  if (!(e.worst_row_rel <= bound.worst_row_rel)) {
    return fmt::format("worst row {:.1e} > {:.0e}", e.worst_row_rel, bound.worst_row_rel);
  }
  return "";
}

void set_check(KernelRow* row, const OutputError& e, const ErrorBound& bound) {
  row->checked = true;
  row->error = e;
  const std::string why = bound_violation(e, bound);
  row->wrong = !why.empty();
  if (row->wrong) {
    row->ms = -1.0;
    row->note = fmt::format("WRONG: {} (worst: {})", why, row_name(*row));
  }
}

void derive_figures(std::vector<KernelRow>* rows, double copy_gbs) {
  for (KernelRow& r : *rows) {
    r.gbs = r.pct_copy = r.pct_roofline = r.x_cublas = r.x_flash = r.x_sdpa = 0.0;
    if (!(r.ms > 0)) continue;
    r.gbs = r.bytes / (r.ms * 1e-3) / 1e9;
    if (copy_gbs > 0) r.pct_copy = 100.0 * r.gbs / copy_gbs;
    if (r.roofline_ms > 0) r.pct_roofline = 100.0 * r.roofline_ms / r.ms;
    for (const KernelRow& b : *rows) {
      if (!same_cell(r, b) || b.method != "fp16" || !(b.ms > 0)) continue;
      if (b.kernel == "cuBLAS") r.x_cublas = b.ms / r.ms;
      if (b.kernel == "flash") r.x_flash = b.ms / r.ms;
      if (b.kernel == "SDPA") r.x_sdpa = b.ms / r.ms;
    }
  }
}

int count_wrong(const std::vector<KernelRow>& rows) {
  return static_cast<int>(
      std::count_if(rows.begin(), rows.end(), [](const auto& r) { return r.wrong; }));
}

int count_checked(const std::vector<KernelRow>& rows) {
  return static_cast<int>(
      std::count_if(rows.begin(), rows.end(), [](const auto& r) { return r.checked; }));
}

std::string kernels_table(const std::vector<KernelRow>& rows) {
  const auto num = [](double x, int precision) {
    return x > 0 ? fmt::format("{:.{}f}", x, precision) : std::string("-");
  };
  const auto err = [](const KernelRow& r, double x) {
    return r.checked && r.error.non_finite == 0 ? fmt::format("{:.1e}", x) : std::string("-");
  };
  std::string s =
      "| shape | batch | context | cache | kernel | ms | bits/elem | MB read | GB/s | % copy | "
      "% roofline | x SDPA | x flash | rel L2 | worst row | append ms | append + step ms | note |\n"
      "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const KernelRow& r : rows) {
    s += fmt::format(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | "
        "{} | {} | {} |\n",
        r.shape, r.batch, r.context, r.method, r.kernel,
        r.wrong ? std::string("WRONG") : num(r.ms, 4), num(r.bits, 2), num(r.bytes / 1e6, 1),
        num(r.gbs, 0), num(r.pct_copy, 0), num(r.pct_roofline, 0), num(r.x_sdpa, 2),
        num(r.x_flash, 2), err(r, r.error.rel_l2), err(r, r.error.worst_row_rel),
        num(r.append_ms, 4), num(r.step_append_ms, 4), r.note);
  }
  return s;
}

nlohmann::json kernels_json(const std::vector<KernelRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const KernelRow& r : rows) {
    nlohmann::json x = {{"shape", r.shape},
                        {"batch", r.batch},
                        {"context", r.context},
                        {"method", r.method},
                        {"kernel", r.kernel},
                        {"ms", r.ms},
                        {"bytes", r.bytes},
                        {"bits_per_element", r.bits},
                        {"gbs", r.gbs},
                        {"pct_copy", r.pct_copy},
                        {"roofline_ms", r.roofline_ms},
                        {"pct_roofline", r.pct_roofline},
                        {"speedup_cublas", r.x_cublas},
                        {"speedup_flash", r.x_flash},
                        {"speedup_sdpa", r.x_sdpa},
                        {"append_ms", r.append_ms},
                        {"step_append_ms", r.step_append_ms},
                        {"checked", r.checked},
                        {"wrong", r.wrong},
                        {"note", r.note}};
    if (r.checked) {
      x["rel_l2"] = r.error.rel_l2;
      x["worst_row_rel"] = r.error.worst_row_rel;
      x["worst_row"] = row_name(r);
      x["non_finite"] = r.error.non_finite;
    } else {
      x["rel_l2"] = x["worst_row_rel"] = x["worst_row"] = x["non_finite"] = nullptr;
    }
    out.push_back(x);
  }
  return out;
}

std::string check_summary(const std::vector<KernelRow>& rows) {
  const int wrong = count_wrong(rows), checked = count_checked(rows);
  if (wrong == 0) return fmt::format("all {} timed outputs within the bounds of fp64", checked);
  return fmt::format(
      "{} of {} timed outputs WRONG against fp64 (rows marked WRONG, no time "
      "shown): exit code 1",
      wrong, checked);
}

}  // namespace kvq::bench
