// The methods table shared by kvq eval and kvq reproduce: all quantizers over the same windows
// (eval/quantized.h), rows with bits per element and agreement with fp16, and the plot of
// Δ perplexity against bits.
#include "results.h"

#include <map>

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/eval/plot.h"
#include "kvq/eval/quantized.h"
#include "kvq/methods/method.h"

namespace kvq::app {

std::vector<eval::ResultRow> evaluate_all(const model::LlamaModel& m,
                                          const std::vector<int32_t>& tokens,
                                          const std::vector<methods::Quantizer>& qs,
                                          const eval::PerplexityOptions& options,
                                          eval::PerplexityResult* baseline) {
  KVQ_CHECK(!qs.empty(), "evaluate_all: no quantizers");
  const std::vector<eval::MethodResult> results = eval::evaluate_methods(m, tokens, qs, options);
  std::vector<eval::ResultRow> rows;
  const eval::PerplexityResult base = results.front().ppl;
  for (size_t i = 0; i < results.size(); ++i) {
    const eval::MethodResult& r = results[i];
    eval::ResultRow row;
    row.method = r.method;
    row.bits_per_element = r.bits_per_element;
    row.ppl = r.ppl.ppl;
    row.delta_pct = 100.0 * (r.ppl.ppl / base.ppl - 1.0);
    row.kl = r.agreement.mean_kl();
    row.top1 = 100.0 * r.agreement.top1_rate();
    row.mean_loss = r.ppl.mean_loss;
    row.n_tokens = r.ppl.n_scored;
    row.seconds = r.ppl.seconds;
    const int64_t n = r.keys.elements + r.values.elements;
    if (n > 0 && r.keys.outliers + r.values.outliers > 0) {
      row.note = fmt::format("outliers {:.2f}%",
                             100.0 * static_cast<double>(r.keys.outliers + r.values.outliers) / n);
    }
    const std::string& source = qs[i].provenance.path;
    if (!source.empty()) row.note += (row.note.empty() ? "" : "; ") + source;
    rows.push_back(row);
  }
  if (baseline) *baseline = base;
  return rows;
}

namespace {

// "models/wt2-llama-18m/" -> "wt2-llama-18m": a title names things, not where they live.
std::string base_name(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos || path.size() == 1 ? path : path.substr(slash + 1);
}

}  // namespace

std::string results_plot_svg(const std::string& path, const std::vector<eval::ResultRow>& rows,
                             const std::vector<methods::Quantizer>& qs,
                             const std::string& model_path, const std::string& data_path,
                             int64_t seq_len) {
  std::map<std::string, eval::Series> families;
  for (size_t i = 1; i < rows.size(); ++i) {
    const methods::MethodSpec& spec = qs[i].spec();
    std::string family = methods::kind_name(spec.kind);
    if (spec.kind == methods::MethodKind::kNuq)
      family += spec.outlier_percent > 0 ? " + outliers" : "";
    if (spec.post_rope) family += " (post-RoPE)";
    eval::Series& s = families[family];
    s.name = family;
    s.x.push_back(rows[i].bits_per_element);
    s.y.push_back(rows[i].delta_pct);
    s.point_labels.push_back(rows[i].method);
  }
  eval::PlotSpec spec;
  spec.title =
      fmt::format("{} on {}, L = {}", base_name(model_path), base_name(data_path), seq_len);
  spec.x_label = "bits per element (codes + scales + outliers + fp16 tokens)";
  spec.y_label = "Δ perplexity vs fp16 (%)";
  spec.x_unit = " bits";
  spec.y_unit = "%";
  spec.y_reference = 0.0;
  spec.reference_label = fmt::format("fp16 (ppl {:.4f})", rows.front().ppl);
  for (auto& [name, s] : families) spec.series.push_back(std::move(s));
  if (spec.series.empty()) fail("--plot: no quantized method to plot (add --methods)");
  try {
    return eval::render_svg(spec);
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
}

}  // namespace kvq::app
