// Rendering kvq eval's perplexity-vs-bits chart into an RGB buffer and encoding it as PNG.
// Everything is integer pixel work: Bresenham lines, filled marker shapes, a 5x7 ASCII bitmap
// font (1x for labels, 2x for the title). PNG data is zlib with one fixed-Huffman deflate block
// and greedy LZ77, which shrinks a mostly-white 900x600 chart from 1.6 MB to tens of KB. Not
// here: anti-aliasing, dynamic Huffman tables, text layout beyond one line.
#include "kvq/eval/plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/eval/table.h"

namespace kvq::eval {

namespace {

// ASCII 32..126: one byte per row, top row first in the high byte; bit 4 of a row is its
// leftmost of 5 columns.
constexpr uint64_t kFont[95] = {
    0x00000000000000, 0x04040404040004, 0x0A0A0A00000000, 0x0A0A1F0A1F0A0A,  //   ! " #
    0x040F140E051E04, 0x18190204081303, 0x0C12140815120D, 0x0C040800000000,  // $ % & '
    0x02040808080402, 0x08040202020408, 0x0004150E150400, 0x0004041F040400,  // ( ) * +
    0x000000000C0408, 0x0000001F000000, 0x00000000000C0C, 0x00010204081000,  // , - . /
    0x0E11131519110E, 0x040C040404040E, 0x0E11010204081F, 0x1F02040201110E,  // 0 1 2 3
    0x02060A121F0202, 0x1F101E0101110E, 0x0608101E11110E, 0x1F010204080808,  // 4 5 6 7
    0x0E11110E11110E, 0x0E11110F01020C, 0x000C0C000C0C00, 0x000C0C000C0408,  // 8 9 : ;
    0x02040810080402, 0x00001F001F0000, 0x08040201020408, 0x0E110102040004,  // < = > ?
    0x0E11010D15150E, 0x0E1111111F1111, 0x1E11111E11111E, 0x0E11101010110E,  // @ A B C
    0x1C12111111121C, 0x1F10101E10101F, 0x1F10101E101010, 0x0E11101711110F,  // D E F G
    0x1111111F111111, 0x0E04040404040E, 0x0702020202120C, 0x11121418141211,  // H I J K
    0x1010101010101F, 0x111B1515111111, 0x11111915131111, 0x0E11111111110E,  // L M N O
    0x1E11111E101010, 0x0E11111115120D, 0x1E11111E141211, 0x0F10100E01011E,  // P Q R S
    0x1F040404040404, 0x1111111111110E, 0x11111111110A04, 0x1111111515150A,  // T U V W
    0x11110A040A1111, 0x1111110A040404, 0x1F01020408101F, 0x0E08080808080E,  // X Y Z [
    0x00100804020100, 0x0E02020202020E, 0x040A1100000000, 0x0000000000001F,  // \ ] ^ _
    0x08040200000000, 0x00000E010F110F, 0x1010161911111E, 0x00000E1010110E,  // ` a b c
    0x01010D1311110F, 0x00000E111F100E, 0x0609081C080808, 0x000F11110F010E,  // d e f g
    0x10101619111111, 0x04000C0404040E, 0x0200060202120C, 0x10101214181412,  // h i j k
    0x0C04040404040E, 0x00001A15151111, 0x00001619111111, 0x00000E1111110E,  // l m n o
    0x00001E111E1010, 0x00000D130F0101, 0x00001619101010, 0x00000E100E011E,  // p q r s
    0x08081C08080906, 0x0000111111130D, 0x00001111110A04, 0x0000111115150A,  // t u v w
    0x0000110A040A11, 0x000011110F010E, 0x00001F0204081F, 0x02040408040402,  // x y z {
    0x04040404040404, 0x08040402040408, 0x00000815020000,                    // | } ~
};

constexpr int kGlyphW = 6;  // 5 columns plus one of spacing
constexpr int kMarkerRadius = 4;
constexpr Rgb kInk{30, 30, 30}, kFrame{60, 60, 60}, kGrid{228, 228, 228}, kReference{110, 110, 110},
    kLegendBorder{170, 170, 170};
// matplotlib's tab10: distinct hues that stay apart for the common forms of colour blindness.
constexpr Rgb kPalette[10] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                              {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                              {188, 189, 34},  {23, 190, 207}};

// One glyph per UTF-8 code point, so a non-ASCII character costs one '?' rather than several.
std::vector<int> glyphs_of(const std::string& s) {
  std::vector<int> out;
  for (unsigned char c : s) {
    if ((c & 0xC0) == 0x80) continue;
    out.push_back(c >= 32 && c < 127 ? c - 32 : '?' - 32);
  }
  return out;
}

int text_width(const std::string& s, int scale = 1) {
  const int n = int(glyphs_of(s).size());
  return n == 0 ? 0 : (n * kGlyphW - 1) * scale;
}

// Drawing primitives on an Image; every write is clipped to the current clip rectangle.
class Canvas {
 public:
  explicit Canvas(Image& image) : image_(image) { unclip(); }
  void clip(int left, int top, int right, int bottom) { clip_ = {left, top, right, bottom}; }
  void unclip() { clip_ = {0, 0, image_.width - 1, image_.height - 1}; }

  void set(int x, int y, Rgb c) {
    if (x < clip_[0] || y < clip_[1] || x > clip_[2] || y > clip_[3]) return;
    uint8_t* p = &image_.rgb[(size_t(y) * size_t(image_.width) + size_t(x)) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void fill_rect(int x0, int y0, int x1, int y1, Rgb c) {
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) set(x, y, c);
  }
  void rect(int x0, int y0, int x1, int y1, Rgb c) {
    fill_rect(x0, y0, x1, y0, c);
    fill_rect(x0, y1, x1, y1, c);
    fill_rect(x0, y0, x0, y1, c);
    fill_rect(x1, y0, x1, y1, c);
  }
  // Bresenham with a square brush `thick` pixels wide; dash_on > 0 alternates that many steps
  // drawn with dash_off skipped.
  void line(int x0, int y0, int x1, int y1, Rgb c, int thick, int dash_on = 0, int dash_off = 0) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    const int lo = -(thick - 1) / 2;
    int err = dx + dy;
    for (int step = 0;; ++step) {
      if (dash_on == 0 || step % (dash_on + dash_off) < dash_on)
        fill_rect(x0 + lo, y0 + lo, x0 + lo + thick - 1, y0 + lo + thick - 1, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }
  // Shapes 0..6: circle, square, triangle up, diamond, triangle down, plus, cross. Each covers
  // its centre pixel, so a marker is always found where PlotFrame puts it.
  void marker(int shape, int cx, int cy, Rgb c) {
    const int r = kMarkerRadius;
    for (int dy = -r; dy <= r; ++dy) {
      for (int dx = -r; dx <= r; ++dx) {
        const int ax = std::abs(dx), ay = std::abs(dy);
        const bool in = shape == 0   ? dx * dx + dy * dy <= r * r + r
                        : shape == 1 ? ax < r && ay < r
                        : shape == 2 ? 2 * ax <= dy + r
                        : shape == 3 ? ax + ay <= r
                        : shape == 4 ? 2 * ax <= r - dy
                        : shape == 5 ? ax <= 1 || ay <= 1
                                     : std::abs(ax - ay) <= 1;
        if (in) set(cx + dx, cy + dy, c);
      }
    }
  }
  // (x, y) is the text's top-left; vertical text reads bottom to top and (x, y) is its
  // bottom-left.
  void text(int x, int y, const std::string& s, Rgb c, int scale = 1, bool vertical = false) {
    int advance = 0;
    for (int g : glyphs_of(s)) {
      for (int row = 0; row < 7; ++row) {
        for (int col = 0; col < 5; ++col) {
          if (((kFont[g] >> (8 * (6 - row) + 4 - col)) & 1) == 0) continue;
          const int along = advance + col * scale, down = row * scale, end = scale - 1;
          if (vertical) {
            fill_rect(x + down, y - along - end, x + down + end, y - along, c);
          } else {
            fill_rect(x + along, y + down, x + along + end, y + down + end, c);
          }
        }
      }
      advance += kGlyphW * scale;
    }
  }

 private:
  Image& image_;
  std::array<int, 4> clip_{};
};

std::string plot_name(const PlotSpec& spec) {
  return spec.title.empty() ? "plot" : fmt::format("plot '{}'", spec.title);
}

void validate(const PlotSpec& spec, const std::string& where) {
  if (spec.width < 160 || spec.height < 120 || spec.width > 10000 || spec.height > 10000) {
    fail("{}: expected a plot size from 160x120 to 10000x10000 pixels, found {}x{}", where,
         spec.width, spec.height);
  }
  if (spec.series.empty()) fail("{}: expected at least one series, found none", where);
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const Series& s = spec.series[i];
    const std::string name =
        s.name.empty() ? fmt::format("series #{}", i) : fmt::format("series '{}'", s.name);
    if (s.x.empty()) fail("{}: {}: expected at least one point, found none", where, name);
    if (s.y.size() != s.x.size()) {
      fail("{}: {}: expected as many y values as x values ({}), found {}", where, name, s.x.size(),
           s.y.size());
    }
    if (!s.point_labels.empty() && s.point_labels.size() != s.x.size()) {
      fail("{}: {}: expected no point labels or one per point ({}), found {}", where, name,
           s.x.size(), s.point_labels.size());
    }
    for (size_t k = 0; k < s.x.size(); ++k) {
      if (!std::isfinite(s.x[k]) || !std::isfinite(s.y[k])) {
        fail("{}: {} point {}: expected finite x and y, found x={} y={}", where, name, k, s.x[k],
             s.y[k]);
      }
      if (spec.log_y && s.y[k] <= 0)
        fail("{}: {} point {}: log_y needs y > 0, found y={}", where, name, k, s.y[k]);
    }
  }
  if (spec.y_reference) {
    const double r = *spec.y_reference;
    if (!std::isfinite(r) || (spec.log_y && r <= 0))
      fail("{}: y_reference: expected a finite value{}, found {}", where,
           spec.log_y ? " > 0 (log_y)" : "", r);
  }
}

// Heckbert's nice numbers: the 1-2-5 step closest to span / target.
double nice_step(double span, int target) {
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

// Data range plus a margin so no marker sits on the frame; a single value gets a window.
std::pair<double, double> padded(double lo, double hi) {
  if (hi == lo) {
    const double d = lo == 0 ? 1 : std::abs(lo) * 0.1;
    return {lo - d, hi + d};
  }
  const double d = (hi - lo) * 0.06;
  return {lo - d, hi + d};
}

struct Axis {
  std::vector<double> ticks;
  std::vector<std::string> labels;
};

Axis linear_axis(double lo, double hi, int target) {
  Axis a;
  a.ticks = nice_ticks(lo, hi, target);
  const double step = nice_step(hi - lo, target);
  const int decimals = step >= 1 ? 0 : int(std::ceil(-std::log10(step) - 1e-9));
  for (double t : a.ticks) a.labels.push_back(fmt::format("{:.{}f}", t, decimals));
  return a;
}

// Under a decade (the usual ppl range) 1-2-5 steps of the values themselves, placed
// logarithmically; wider, 1-2-5 (or 1, or every n-th decade) times powers of ten.
Axis log_axis(double lo, double hi, int target) {
  if (hi / lo < 10) return linear_axis(lo, hi, target);
  const int k0 = int(std::floor(std::log10(lo))), k1 = int(std::ceil(std::log10(hi)));
  const int n_decades = k1 - k0;
  const std::vector<double> mantissas =
      n_decades * 3 <= target + 2 ? std::vector<double>{1, 2, 5} : std::vector<double>{1};
  const int every = std::max(1, (n_decades + target - 1) / target);
  Axis a;
  for (int k = k0; k <= k1; ++k) {
    if (((k % every) + every) % every != 0) continue;
    for (double m : mantissas) {
      const double v = k < 0 ? m / std::pow(10.0, -k) : m * std::pow(10.0, k);
      if (v < lo * (1 - 1e-12) || v > hi * (1 + 1e-12)) continue;
      a.ticks.push_back(v);
      a.labels.push_back(fmt::format("{:g}", v));
    }
  }
  return a;
}

struct Layout {
  PlotFrame frame;
  Axis x_axis, y_axis;
};

// Margins: title (2x font) on top, x tick labels and x label below, y label (vertical) and y
// tick labels on the left, room on the right for the last x tick label.
Layout make_layout(const PlotSpec& spec, const std::string& where) {
  double x_lo = HUGE_VAL, x_hi = -HUGE_VAL, y_lo = HUGE_VAL, y_hi = -HUGE_VAL;
  for (const Series& s : spec.series) {
    for (size_t k = 0; k < s.x.size(); ++k) {
      x_lo = std::min(x_lo, s.x[k]), x_hi = std::max(x_hi, s.x[k]);
      y_lo = std::min(y_lo, s.y[k]), y_hi = std::max(y_hi, s.y[k]);
    }
  }
  if (spec.y_reference) {
    y_lo = std::min(y_lo, *spec.y_reference), y_hi = std::max(y_hi, *spec.y_reference);
  }

  Layout layout;
  PlotFrame& f = layout.frame;
  f.log_y = spec.log_y;
  std::tie(f.x_lo, f.x_hi) = padded(x_lo, x_hi);
  if (spec.log_y) {
    const auto [a, b] = padded(std::log10(y_lo), std::log10(y_hi));
    f.y_lo = std::pow(10.0, a), f.y_hi = std::pow(10.0, b);
  } else {
    std::tie(f.y_lo, f.y_hi) = padded(y_lo, y_hi);
  }
  f.top = spec.title.empty() ? 16 : 40;
  f.bottom = spec.height - 1 - (6 + 4 + 7 + (spec.x_label.empty() ? 0 : 17) + 12);
  const int y_target = std::clamp((f.bottom - f.top) / 60, 2, 10);
  layout.y_axis =
      spec.log_y ? log_axis(f.y_lo, f.y_hi, y_target) : linear_axis(f.y_lo, f.y_hi, y_target);
  int label_w = 0;
  for (const std::string& s : layout.y_axis.labels) label_w = std::max(label_w, text_width(s));
  f.left = 12 + (spec.y_label.empty() ? 0 : 17) + label_w + 4 + 6;
  f.right = spec.width - 1 - 24;
  if (f.right - f.left < 40 || f.bottom - f.top < 40) {
    fail("{}: {}x{} pixels leave no room for the plot area; make the image larger", where,
         spec.width, spec.height);
  }
  layout.x_axis = linear_axis(f.x_lo, f.x_hi, std::clamp((f.right - f.left) / 90, 2, 12));
  return layout;
}

// In the corner covering the fewest markers, top-right first: ppl falls as bits rise, so the
// curves rarely reach it.
void draw_legend(Canvas& canvas, const PlotSpec& spec, const PlotFrame& f) {
  std::vector<size_t> entries;
  int name_w = 0;
  for (size_t i = 0; i < spec.series.size(); ++i) {
    if (spec.series[i].name.empty()) continue;
    entries.push_back(i);
    name_w = std::max(name_w, text_width(spec.series[i].name));
  }
  if (entries.empty()) return;
  const int row_h = 14, w = 36 + name_w + 8, h = 6 + row_h * int(entries.size()), inset = 8;
  const std::array<std::pair<int, int>, 4> corners = {{{f.right - inset - w, f.top + inset},
                                                       {f.left + inset, f.top + inset},
                                                       {f.right - inset - w, f.bottom - inset - h},
                                                       {f.left + inset, f.bottom - inset - h}}};
  size_t best = 0, best_count = SIZE_MAX;
  for (size_t c = 0; c < corners.size(); ++c) {
    const auto [x0, y0] = corners[c];
    size_t count = 0;
    for (const Series& s : spec.series) {
      for (size_t k = 0; k < s.x.size(); ++k) {
        const int px = f.px(s.x[k]), py = f.py(s.y[k]), r = kMarkerRadius;
        count += px >= x0 - r && px <= x0 + w + r && py >= y0 - r && py <= y0 + h + r;
      }
    }
    if (count < best_count) best = c, best_count = count;
  }
  const auto [x0, y0] = corners[best];
  canvas.fill_rect(x0, y0, x0 + w - 1, y0 + h - 1, kBackground);
  canvas.rect(x0, y0, x0 + w - 1, y0 + h - 1, kLegendBorder);
  for (size_t e = 0; e < entries.size(); ++e) {
    const Series& s = spec.series[entries[e]];
    const Rgb color = series_color(entries[e]);
    const int cy = y0 + 10 + row_h * int(e);
    if (s.connect) canvas.line(x0 + 8, cy, x0 + 30, cy, color, /*thick=*/2);
    canvas.marker(int(entries[e] % 7), x0 + 19, cy, color);
    canvas.text(x0 + 36, cy - 3, s.name, kInk);
  }
}

Image render(const PlotSpec& spec, const std::string& where) {
  validate(spec, where);
  const Layout layout = make_layout(spec, where);
  const PlotFrame& f = layout.frame;
  Image image;
  image.width = spec.width, image.height = spec.height;
  image.rgb.assign(size_t(spec.width) * size_t(spec.height) * 3, 255);
  static_assert(kBackground.r == 255 && kBackground.g == 255 && kBackground.b == 255);
  Canvas canvas(image);

  // Grid, reference and connecting lines stay inside the frame; markers and text may not.
  canvas.clip(f.left, f.top, f.right, f.bottom);
  for (double t : layout.x_axis.ticks) canvas.line(f.px(t), f.top, f.px(t), f.bottom, kGrid, 1);
  for (double t : layout.y_axis.ticks) canvas.line(f.left, f.py(t), f.right, f.py(t), kGrid, 1);
  if (spec.y_reference) {
    const int y = f.py(*spec.y_reference);
    canvas.line(f.left, y, f.right, y, kReference, /*thick=*/2, /*dash_on=*/8, /*dash_off=*/5);
  }
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const Series& s = spec.series[i];
    if (!s.connect) continue;
    for (size_t k = 1; k < s.x.size(); ++k) {
      canvas.line(f.px(s.x[k - 1]), f.py(s.y[k - 1]), f.px(s.x[k]), f.py(s.y[k]), series_color(i),
                  /*thick=*/2);
    }
  }
  canvas.unclip();
  canvas.rect(f.left, f.top, f.right, f.bottom, kFrame);

  for (size_t i = 0; i < spec.series.size(); ++i) {
    const Series& s = spec.series[i];
    for (size_t k = 0; k < s.x.size(); ++k)
      canvas.marker(int(i % 7), f.px(s.x[k]), f.py(s.y[k]), series_color(i));
  }
  // Labels right of their marker, or left of it where they would cross the frame.
  for (const Series& s : spec.series) {
    for (size_t k = 0; k < s.point_labels.size(); ++k) {
      const std::string& label = s.point_labels[k];
      const int px = f.px(s.x[k]), py = f.py(s.y[k]), w = text_width(label);
      const int x = px + 7 + w <= f.right ? px + 7 : px - 7 - w;
      canvas.text(x, py - 3, label, kInk);
    }
  }
  if (spec.y_reference && !spec.reference_label.empty()) {
    const int y = f.py(*spec.y_reference);
    canvas.text(f.left + 6, y - 11 >= f.top + 2 ? y - 11 : y + 5, spec.reference_label, kReference);
  }

  for (size_t t = 0; t < layout.x_axis.ticks.size(); ++t) {
    const int x = f.px(layout.x_axis.ticks[t]);
    const std::string& label = layout.x_axis.labels[t];
    canvas.line(x, f.bottom + 1, x, f.bottom + 6, kFrame, 1);
    canvas.text(x - text_width(label) / 2, f.bottom + 10, label, kInk);
  }
  for (size_t t = 0; t < layout.y_axis.ticks.size(); ++t) {
    const int y = f.py(layout.y_axis.ticks[t]);
    const std::string& label = layout.y_axis.labels[t];
    canvas.line(f.left - 6, y, f.left - 1, y, kFrame, 1);
    canvas.text(f.left - 10 - text_width(label), y - 3, label, kInk);
  }
  canvas.text((f.left + f.right - text_width(spec.x_label)) / 2, f.bottom + 27, spec.x_label, kInk);
  canvas.text(12, (f.top + f.bottom + text_width(spec.y_label)) / 2, spec.y_label, kInk,
              /*scale=*/1, /*vertical=*/true);
  canvas.text((spec.width - text_width(spec.title, 2)) / 2, 12, spec.title, kInk, /*scale=*/2);
  draw_legend(canvas, spec, f);
  return image;
}

// PNG's CRC-32 (ISO 3309, reflected polynomial 0xEDB88320) over a chunk's type and data.
uint32_t crc32(const char* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ uint8_t(p[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t adler32(const std::string& s) {
  uint32_t a = 1, b = 0;
  // 5552 bytes is the most that cannot overflow b before the modulo (RFC 1950, zlib's NMAX).
  for (size_t i = 0; i < s.size(); i += 5552) {
    const size_t end = std::min(s.size(), i + 5552);
    for (size_t k = i; k < end; ++k) a += uint8_t(s[k]), b += a;
    a %= 65521, b %= 65521;
  }
  return (b << 16) | a;
}

void put_be32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += char((v >> shift) & 0xFF);
}

// Deflate bit order (RFC 1951 3.1.1): fields fill bytes from the low bit up; Huffman codes go
// most significant bit first.
class BitWriter {
 public:
  explicit BitWriter(std::string& out) : out_(out) {}
  void bits(uint32_t value, int count) {
    acc_ |= uint64_t(value) << n_;
    n_ += count;
    for (; n_ >= 8; n_ -= 8, acc_ >>= 8) out_ += char(acc_ & 0xFF);
  }
  void code(uint32_t code, int len) {
    uint32_t reversed = 0;
    for (int i = 0; i < len; ++i) reversed |= ((code >> i) & 1) << (len - 1 - i);
    bits(reversed, len);
  }
  // The fixed literal/length code (RFC 1951 3.2.6).
  void symbol(int s) {
    if (s < 144) return code(0x30 + s, 8);
    if (s < 256) return code(0x190 + s - 144, 9);
    if (s < 280) return code(s - 256, 7);
    code(0xC0 + s - 280, 8);
  }
  void flush() {
    if (n_ > 0) bits(0, 8 - n_);
  }

 private:
  std::string& out_;
  uint64_t acc_ = 0;
  int n_ = 0;
};

constexpr uint16_t kLengthBase[29] = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                      15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                      67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr uint8_t kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr uint16_t kDistBase[30] = {1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
                                    33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
                                    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr uint8_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                    6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

// One final fixed-Huffman block with greedy LZ77 over a 32 KiB window (hash chains capped at
// 32 links): for flat-coloured charts nearly all bytes fall in long runs, so a dynamic Huffman
// table would gain little.
std::string deflate_fixed(const std::string& input) {
  constexpr int kHashBits = 15, kMaxChain = 32;
  constexpr size_t kWindow = 32768, kMaxLen = 258;
  const auto* in = reinterpret_cast<const uint8_t*>(input.data());
  const size_t n = input.size();
  std::vector<int64_t> head(size_t(1) << kHashBits, -1), prev(kWindow, -1);
  auto hash = [&](size_t i) {
    const uint32_t v = uint32_t(in[i]) | uint32_t(in[i + 1]) << 8 | uint32_t(in[i + 2]) << 16;
    return (v * 2654435761u) >> (32 - kHashBits);
  };
  auto insert = [&](size_t i) {
    if (i + 3 > n) return;
    const uint32_t h = hash(i);
    prev[i & (kWindow - 1)] = head[h];
    head[h] = int64_t(i);
  };

  std::string out;
  BitWriter w(out);
  w.bits(1, 1);  // BFINAL
  w.bits(1, 2);  // BTYPE 01: fixed Huffman codes
  size_t i = 0;
  while (i < n) {
    size_t best_len = 0, best_dist = 0;
    if (i + 3 <= n) {
      const size_t max_len = std::min(kMaxLen, n - i);
      int64_t j = head[hash(i)];
      for (int chain = 0; j >= 0 && i - size_t(j) <= kWindow && chain < kMaxChain; ++chain) {
        size_t len = 0;
        while (len < max_len && in[size_t(j) + len] == in[i + len]) ++len;
        if (len > best_len) {
          best_len = len, best_dist = i - size_t(j);
          if (len == max_len) break;
        }
        const int64_t next = prev[size_t(j) & (kWindow - 1)];
        if (next >= j) break;  // the slot was reused by a newer position: chain ends
        j = next;
      }
    }
    if (best_len >= 3) {
      const int li =
          int(std::upper_bound(kLengthBase, kLengthBase + 29, best_len) - kLengthBase) - 1;
      w.symbol(257 + li);
      w.bits(uint32_t(best_len - kLengthBase[li]), kLengthExtra[li]);
      const int di = int(std::upper_bound(kDistBase, kDistBase + 30, best_dist) - kDistBase) - 1;
      w.code(uint32_t(di), 5);
      w.bits(uint32_t(best_dist - kDistBase[di]), kDistExtra[di]);
      for (size_t k = 0; k < best_len; ++k) insert(i + k);
      i += best_len;
    } else {
      w.symbol(in[i]);
      insert(i);
      ++i;
    }
  }
  w.symbol(256);  // end of block
  w.flush();
  return out;
}

}  // namespace

Rgb Image::at(int x, int y) const {
  KVQ_CHECK(x >= 0 && y >= 0 && x < width && y < height, "pixel ({}, {}) of {}x{}", x, y, width,
            height);
  const uint8_t* p = &rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
  return {p[0], p[1], p[2]};
}

int PlotFrame::px(double x) const {
  return left + int(std::lround((x - x_lo) / (x_hi - x_lo) * (right - left)));
}

int PlotFrame::py(double y) const {
  const double t = log_y
                       ? (std::log10(y) - std::log10(y_lo)) / (std::log10(y_hi) - std::log10(y_lo))
                       : (y - y_lo) / (y_hi - y_lo);
  return bottom - int(std::lround(t * (bottom - top)));
}

Rgb series_color(size_t i) { return kPalette[i % 10]; }

std::vector<double> nice_ticks(double lo, double hi, int target) {
  KVQ_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi && target >= 1,
            "lo={} hi={} target={}", lo, hi, target);
  if (lo == hi) return {lo};
  const double step = nice_step(hi - lo, target);
  // Below 1, dividing by the integer 1/step gives 0.3 where 3 * 0.1 gives 0.30000000000000004.
  const double per_unit = std::round(1 / step);
  std::vector<double> out;
  for (double k = std::ceil(lo / step - 1e-9); k <= std::floor(hi / step + 1e-9); ++k)
    out.push_back((step < 1 ? k / per_unit : k * step) + 0.0);  // + 0.0 turns -0 into 0
  return out;
}

PlotFrame plot_frame(const PlotSpec& spec) {
  const std::string where = plot_name(spec);
  validate(spec, where);
  return make_layout(spec, where).frame;
}

Image render_plot(const PlotSpec& spec) { return render(spec, plot_name(spec)); }

std::string encode_png(const Image& image) {
  KVQ_CHECK(image.width > 0 && image.height > 0 &&
                image.rgb.size() == size_t(image.width) * size_t(image.height) * 3,
            "{}x{} image with {} bytes", image.width, image.height, image.rgb.size());
  const size_t stride = size_t(image.width) * 3;
  // Filter "Up" on every row (row 0 has zeros above): a row repeating the one above becomes
  // zeros, which LZ77 turns into a handful of 258-byte matches.
  std::string raw;
  raw.reserve((stride + 1) * size_t(image.height));
  for (size_t y = 0; y < size_t(image.height); ++y) {
    const uint8_t* row = &image.rgb[y * stride];
    raw += char(2);
    for (size_t x = 0; x < stride; ++x) raw += char(row[x] - (y > 0 ? row[x - stride] : 0));
  }
  std::string zlib("\x78\x01", 2);  // deflate, 32 KiB window, no dictionary; check bits hold
  zlib += deflate_fixed(raw);
  put_be32(zlib, adler32(raw));

  std::string png("\x89PNG\r\n\x1a\n", 8);
  auto chunk = [&png](const char* type, const std::string& data) {
    put_be32(png, uint32_t(data.size()));
    const size_t start = png.size();
    png.append(type, 4);
    png += data;
    put_be32(png, crc32(png.data() + start, png.size() - start));
  };
  std::string ihdr;
  put_be32(ihdr, uint32_t(image.width));
  put_be32(ihdr, uint32_t(image.height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit, RGB, deflate, adaptive, no interlace
  chunk("IHDR", ihdr);
  chunk("IDAT", zlib);
  chunk("IEND", "");
  return png;
}

void write_plot_png(const std::string& path, const PlotSpec& spec) {
  write_text_file_atomic(path, encode_png(render(spec, path)));
}

}  // namespace kvq::eval
