// The results table `kvq eval` prints, one row per method: as markdown (the default stdout
// format), CSV and JSON. Not here: writing them to files (artifact/atomic_file.h),
// computing the numbers (eval/perplexity.h) or deciding which rows to show.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvq::eval {

struct ResultRow {
  std::string method;           // method string as in DESIGN.md, e.g. "fp16", "uniform:k4v4"
  double bits_per_element = 0;  // average stored bits per K/V element, metadata included
  double ppl = 0;
  double delta_pct = 0;  // 100 * (ppl / ppl_fp16 - 1)
  double mean_loss = 0;  // nats per scored token
  int64_t n_tokens = 0;  // scored tokens
  double seconds = 0;
  std::string note;
  // Agreement with fp16 on the same windows (eval/divergence.h); fp16's own row has 0 and 100.
  double kl = 0;    // mean KL(P_fp16 || P_method) per scored token (nats)
  double top1 = 0;  // % of scored positions where the method's argmax token is fp16's
};

// Columns: method | bits/elem | ppl | Δ vs fp16 | KL | top-1 % | note, padded to align, numbers
// right-aligned. bits with 2 decimals, ppl with 4, delta signed with 2 and '%' ("+1.25%",
// "+0.00%", never "-0.00%"), KL with 4 significant digits ("0.01234", "1.234e-05", "0"; a
// rounding-level negative KL is shown as it is), top-1 with 2 decimals ("99.87"). '|' in text
// cells is escaped as "\|" and line breaks become spaces, so every row stays one table row. Ends
// with '\n'; an empty `rows` gives the header and rule only.
std::string markdown_table(const std::vector<ResultRow>& rows);

// Header "method,bits_per_element,ppl,delta_pct,kl,top1_pct,mean_loss,n_tokens,seconds,note",
// then one line per row; numbers at full precision (shortest text that parses back to the same
// double); fields with a comma, quote, CR or LF are quoted per RFC 4180 with quotes doubled.
// Records end with '\n' rather than RFC 4180's CRLF: every CSV reader accepts it and Unix tools
// want it.
std::string csv_table(const std::vector<ResultRow>& rows);

// An array of objects keyed like the CSV header; non-finite numbers become null.
nlohmann::json json_rows(const std::vector<ResultRow>& rows);

}  // namespace kvq::eval
