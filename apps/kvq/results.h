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
// with bits per element and outlier share; *baseline gets the first's result.
std::vector<eval::ResultRow> evaluate_all(const model::LlamaModel& m, const std::vector<int32_t>& tokens,
                                          const std::vector<methods::Quantizer>& qs,
                                          const eval::PerplexityOptions& options, eval::PerplexityResult* baseline);
// Perplexity against bits per element, one series per method family, fp16 as a dashed line.
void write_results_plot(const std::string& path, const std::vector<eval::ResultRow>& rows,
                        const std::vector<methods::Quantizer>& qs, const std::string& title);

}  // namespace kvq::app
