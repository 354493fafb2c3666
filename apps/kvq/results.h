// The methods table kvq eval and kvq reproduce share (results.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvq/eval/perplexity.h"
#include "kvq/eval/table.h"
#include "kvq/methods/quantizer.h"
#include "kvq/model/llama.h"

namespace kvq::app {

// Perplexity for each quantizer (the first is the baseline the deltas refer to), one row each
// with bits per element, KL divergence and top-1 agreement against fp16, and outlier share;
// *baseline gets the first's result. qs must not be empty.
std::vector<eval::ResultRow> evaluate_all(const model::LlamaModel& m,
                                          const std::vector<int32_t>& tokens,
                                          const std::vector<methods::Quantizer>& qs,
                                          const eval::PerplexityOptions& options,
                                          eval::PerplexityResult* baseline);
// An SVG of Δ perplexity against bits per element: one series per method family (rows[0], the
// fp16 baseline, is the dashed Δ = 0 line), the Pareto front, and the model and data by their
// base names in the title. `path` only names the plot in errors; nothing is written.
std::string results_plot_svg(const std::string& path, const std::vector<eval::ResultRow>& rows,
                             const std::vector<methods::Quantizer>& qs,
                             const std::string& model_path, const std::string& data_path,
                             int64_t seq_len);

}  // namespace kvq::app
