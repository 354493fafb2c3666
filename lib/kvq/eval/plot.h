// SVG charts for `kvq eval --plot F.svg`: a scatter of quality against cost (Δ perplexity
// against bits per element), one marker series per method family, the Pareto front drawn
// through the points no other point beats, and point labels placed so they overlap neither
// each other nor any marker. The output is plain text and deterministic (fixed number
// formats, no timestamps), so tests compare it as a string. Not here: raster output, text
// measurement (label widths are estimated from the character count), log x axes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace kvq::eval {

struct Series {
  std::string name;                       // legend entry
  std::vector<double> x, y;               // same length, at least one point, all finite
  std::vector<std::string> point_labels;  // empty, or one per point, drawn beside the marker
};

struct PlotSpec {
  std::string title, x_label, y_label;
  std::string x_unit, y_unit;         // in tooltips ("3.51 bits, +0.28%"); y_unit also on y ticks
  std::vector<Series> series;         // colour i % 10, marker shape i % 5; one front over all
  std::optional<double> y_reference;  // dashed horizontal line, e.g. fp16 at Δ = 0
  std::string reference_label;        // its legend entry
};

// Tick values at multiples of a 1-2-5 step (1, 2, 5, 10, 20, ...) inside [lo, hi], about
// `target` of them; lo == hi gives {lo}. Requires finite lo <= hi and target >= 1.
std::vector<double> nice_ticks(double lo, double hi, int target);

// Indices of the points no other point dominates (has <= x and <= y, one of them strictly
// less), sorted by x then y. Equal points do not dominate each other. Requires equal lengths.
std::vector<size_t> pareto_front(const std::vector<double>& x, const std::vector<double>& y);

// `s` with & < > " ' as entities and control characters other than tab and newline as spaces.
std::string xml_escape(const std::string& s);

// A rectangle in SVG user units (pixels), y growing downwards.
struct Box {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
  bool inside(const Box& o) const { return x0 >= o.x0 && y0 >= o.y0 && x1 <= o.x1 && y1 <= o.y1; }
};

struct PointLayout {
  size_t series = 0, point = 0;
  double cx = 0, cy = 0;  // marker centre
  Box marker;             // the marker's extent
  bool labelled = false;  // false: no free spot; the label is only in the marker's tooltip
  bool leader = false;    // the label sits away from the marker, joined by a thin line
  Box label;              // where the label text goes, when labelled
};

// Where render_svg puts things: the plot area, and every point with its marker and label.
struct PlotLayout {
  Box frame;
  std::vector<PointLayout> points;  // series by series, points in order
  std::vector<size_t> front;        // indices into points of the Pareto front, by x
};

// Throws kvq::Error naming the plot (its title) if there are no series, a series is empty, its
// x, y and point_labels lengths disagree, or a value is not finite (naming series and index).
PlotLayout plot_layout(const PlotSpec& spec);
std::string render_svg(const PlotSpec& spec);

// Renders and writes `path` via a temp file in the same directory and a rename. Throws
// kvq::Error naming `path` for the input errors above or when the file cannot be written.
void write_plot_svg(const std::string& path, const PlotSpec& spec);

}  // namespace kvq::eval
