// PNG charts for `kvq eval --plot F.png`: perplexity against bits per element, one marker
// series per method family, drawn into an RGB buffer with a built-in 5x7 bitmap font and
// encoded as PNG (zlib stream of fixed-Huffman deflate blocks) with no library beyond the
// standard one. Not here: anti-aliasing, non-ASCII glyphs (drawn as '?'), log x axes, colour
// management; the chart is for reading numbers off, not for print.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kvq::eval {

struct Series {
  std::string name;                       // legend entry; empty leaves the series out of it
  std::vector<double> x, y;               // same length, at least one point, all finite
  std::vector<std::string> point_labels;  // empty, or one per point, drawn beside the marker
  bool connect = false;                   // join the points with a line, in the order given
};

struct PlotSpec {
  std::string title, x_label, y_label;
  std::vector<Series> series;  // series i gets colour i % 10 and marker shape i % 7
  bool log_y = false;          // every y (and y_reference) must then be > 0
  int width = 900, height = 600;
  std::optional<double> y_reference;  // horizontal dashed line, e.g. fp16 perplexity
  std::string reference_label;        // drawn just above that line's left end
};

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb& o) const { return r == o.r && g == o.g && b == o.b; }
  bool operator!=(const Rgb& o) const { return !(*this == o); }
};

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // [height, width, 3], rows top to bottom
  Rgb at(int x, int y) const;
};

// Where data lands: the plot area in pixels (inclusive bounds) and the data range it shows.
struct PlotFrame {
  int left = 0, top = 0, right = 0, bottom = 0;
  double x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;
  bool log_y = false;
  int px(double x) const;  // pixel column of data x
  int py(double y) const;  // pixel row of data y
};

inline constexpr Rgb kBackground{255, 255, 255};
Rgb series_color(size_t i);

// Tick values at multiples of a 1-2-5 step (1, 2, 5, 10, 20, ...) inside [lo, hi], about
// `target` of them; lo == hi gives {lo}. Requires finite lo <= hi and target >= 1.
std::vector<double> nice_ticks(double lo, double hi, int target);

// The plot area and axis ranges render_plot uses for `spec` (validated as below).
PlotFrame plot_frame(const PlotSpec& spec);

// Renders the chart. Throws kvq::Error naming the plot (its title) if there are no series, a
// series is empty, its x, y and point_labels lengths disagree, a value is not finite (naming
// the series and point index), log_y meets a value <= 0, or the size is outside 160x120 to
// 10000x10000.
Image render_plot(const PlotSpec& spec);

// A PNG file's bytes: 8-bit RGB, one IDAT chunk.
std::string encode_png(const Image& image);

// Renders and writes `path` via a temp file in the same directory and a rename. Throws
// kvq::Error naming `path` for the input errors above or when the file cannot be written.
void write_plot_png(const std::string& path, const PlotSpec& spec);

}  // namespace kvq::eval
