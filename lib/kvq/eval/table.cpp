// Formatting kvq eval's results as markdown, CSV and JSON.
// Not here: terminal colours or widths (the markdown is plain text, valid in any renderer).
#include "kvq/eval/table.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace kvq::eval {

namespace {

// Display width in a monospace terminal: code points, so "Δ" (two bytes) counts as one.
size_t display_width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// A text cell that cannot break the table: '|' would start a new column, a newline a new row.
std::string markdown_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_delta(double delta_pct) {
  std::string s = fmt::format("{:+.2f}%", delta_pct);
  // A delta that rounds to zero reads as no change, whichever side of zero it came from.
  if (s == "-0.00%") s = "+0.00%";
  return s;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// Shortest round-trip text; fmt's "{}" for a double is exactly that.
std::string full_precision(double v) { return fmt::format("{}", v); }

nlohmann::json json_number(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

std::string markdown_table(const std::vector<ResultRow>& rows) {
  constexpr size_t kColumns = 7;
  // Numbers right-aligned so decimal points line up; text left-aligned.
  const bool right_aligned[kColumns] = {false, true, true, true, true, true, false};
  std::vector<std::vector<std::string>> cells;
  cells.push_back({"method", "bits/elem", "ppl", "Δ vs fp16", "KL", "top-1 %", "note"});
  for (const ResultRow& r : rows) {
    cells.push_back({markdown_cell(r.method), fmt::format("{:.2f}", r.bits_per_element),
                     fmt::format("{:.4f}", r.ppl), format_delta(r.delta_pct),
                     fmt::format("{:.4g}", r.kl), fmt::format("{:.2f}", r.top1),
                     markdown_cell(r.note)});
  }
  size_t width[kColumns] = {};
  for (const auto& line : cells)
    for (size_t c = 0; c < kColumns; ++c) width[c] = std::max(width[c], display_width(line[c]));
  // A markdown rule needs at least three dashes per column.
  for (size_t& w : width) w = std::max<size_t>(w, 3);

  auto emit_row = [&](const std::vector<std::string>& line, std::string& out) {
    out += '|';
    for (size_t c = 0; c < kColumns; ++c) {
      const std::string pad(width[c] - display_width(line[c]), ' ');
      out += ' ';
      out += right_aligned[c] ? pad + line[c] : line[c] + pad;
      out += " |";
    }
    out += '\n';
  };
  std::string out;
  emit_row(cells[0], out);
  out += '|';
  for (size_t c = 0; c < kColumns; ++c) {
    out += right_aligned[c] ? " " + std::string(width[c] - 1, '-') + ": |"
                            : " " + std::string(width[c], '-') + " |";
  }
  out += '\n';
  for (size_t i = 1; i < cells.size(); ++i) emit_row(cells[i], out);
  return out;
}

std::string csv_table(const std::vector<ResultRow>& rows) {
  std::string out =
      "method,bits_per_element,ppl,delta_pct,kl,top1_pct,mean_loss,n_tokens,seconds,note\n";
  for (const ResultRow& r : rows) {
    out += fmt::format("{},{},{},{},{},{},{},{},{},{}\n", csv_field(r.method),
                       full_precision(r.bits_per_element), full_precision(r.ppl),
                       full_precision(r.delta_pct), full_precision(r.kl), full_precision(r.top1),
                       full_precision(r.mean_loss), r.n_tokens, full_precision(r.seconds),
                       csv_field(r.note));
  }
  return out;
}

nlohmann::json json_rows(const std::vector<ResultRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const ResultRow& r : rows) {
    out.push_back({{"method", r.method},
                   {"bits_per_element", json_number(r.bits_per_element)},
                   {"ppl", json_number(r.ppl)},
                   {"delta_pct", json_number(r.delta_pct)},
                   {"kl", json_number(r.kl)},
                   {"top1_pct", json_number(r.top1)},
                   {"mean_loss", json_number(r.mean_loss)},
                   {"n_tokens", r.n_tokens},
                   {"seconds", json_number(r.seconds)},
                   {"note", r.note}});
  }
  return out;
}

}  // namespace kvq::eval
