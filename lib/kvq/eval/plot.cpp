// Writing kvq eval's quality-vs-cost chart as SVG text. The y axis is symmetric-log (linear
// within ±c around 0, logarithmic beyond, c two decades below the largest |y|), so Δ values
// from +0.01% to +17% each get room. Labels are placed greedily, Pareto front first: a spot
// beside the marker if one is free, else one further out joined by a leader line; a spot is
// free if it stays in the plot area and meets no marker, label or line. A label with no free
// spot lives only in its marker's tooltip. Not here: measuring text (widths are estimated
// per character), raster output.
#include "kvq/eval/plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "kvq/artifact/atomic_file.h"
#include "kvq/common/error.h"

namespace kvq::eval {

namespace {

constexpr double kWidth = 960, kHeight = 620;
constexpr double kFontSize = 11, kTitleSize = 15;
constexpr double kCharWidth = 0.62;  // of the font size: DejaVu Sans' average is about 0.6
constexpr double kPi = 3.14159265358979323846;
constexpr double kMarkerR = 4.5, kMarkerExtent = 1.3 * kMarkerR;  // triangles reach 1.3 r
// matplotlib's tab10: distinct hues that stay apart for the common forms of colour blindness.
constexpr const char* kPalette[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// One decimal; never "-0.0", so equal pictures give equal text.
std::string num(double v) {
  const std::string s = fmt::format("{:.1f}", v);
  return s == "-0.0" ? "0.0" : s;
}

// Estimated width in pixels: one character width per UTF-8 code point.
double text_width(const std::string& s) {
  const auto n =
      std::count_if(s.begin(), s.end(), [](char c) { return (uint8_t(c) & 0xC0) != 0x80; });
  return double(n) * kCharWidth * kFontSize;
}

std::string plot_name(const PlotSpec& spec) {
  return spec.title.empty() ? "plot" : fmt::format("plot '{}'", spec.title);
}

void validate(const PlotSpec& spec, const std::string& where) {
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
    }
  }
  if (spec.y_reference && !std::isfinite(*spec.y_reference)) {
    fail("{}: y_reference: expected a finite value, found {}", where, *spec.y_reference);
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
  const double d = hi == lo ? (lo == 0 ? 1 : std::abs(lo) * 0.1) : (hi - lo) * 0.06;
  return {lo - d, hi + d};
}

double pow10(int k) { return k < 0 ? 1 / std::pow(10.0, -k) : std::pow(10.0, k); }

struct Tick {
  double value;
  std::string label;
};

// Everything the layout and the drawing share: the plot area, data ranges and ticks.
struct Geometry {
  Box frame;
  double x_lo = 0, x_hi = 1, t_lo = 0, t_hi = 1;
  double c = 1;  // symlog's linear threshold
  std::vector<Tick> x_ticks, y_ticks;
  double legend_x = 0;

  double t(double y) const { return std::copysign(std::log10(1 + std::abs(y) / c), y); }
  double inv(double t) const { return std::copysign(c * (std::pow(10.0, std::abs(t)) - 1), t); }
  double px(double x) const {
    return frame.x0 + (x - x_lo) / (x_hi - x_lo) * (frame.x1 - frame.x0);
  }
  double py(double y) const {
    return frame.y1 - (t(y) - t_lo) / (t_hi - t_lo) * (frame.y1 - frame.y0);
  }
};

std::vector<Tick> linear_ticks(double lo, double hi, int target, const std::string& unit) {
  const double step = lo == hi ? 1 : nice_step(hi - lo, target);
  const int decimals = step >= 1 ? 0 : int(std::ceil(-std::log10(step) - 1e-9));
  std::vector<Tick> out;
  for (double v : nice_ticks(lo, hi, target))
    out.push_back({v, fmt::format("{:.{}f}{}", v, decimals, unit)});
  return out;
}

// 0 and ±{1, 2, 5} x 10^k from c up (just ±10^k where 1-2-5 would crowd); a range holding
// fewer than two of those gets 1-2-5 ticks of its own span.
std::vector<Tick> symlog_ticks(const Geometry& g, const std::string& unit) {
  const int k0 = int(std::lround(std::log10(g.c)));
  const double per_unit = (g.frame.y1 - g.frame.y0) / (g.t_hi - g.t_lo);
  const bool fine = per_unit * std::log10(1.5) >= 16;  // the closest pair: c and 2c
  const double top = std::max(std::abs(g.inv(g.t_lo)), std::abs(g.inv(g.t_hi)));
  std::vector<Tick> out;
  auto add = [&](double v, const std::string& label) {
    if (g.t(v) >= g.t_lo && g.t(v) <= g.t_hi) out.push_back({v, label});
  };
  add(0, "0" + unit);
  for (int k = k0; pow10(k) <= top; ++k) {
    for (int m : {1, 2, 5}) {
      if (m != 1 && !fine) continue;
      const double v = m * pow10(k);
      const std::string text = fmt::format("{:.{}f}{}", v, std::max(0, -k), unit);
      add(v, "+" + text);
      add(-v, "-" + text);
    }
  }
  if (out.size() < 2) return linear_ticks(g.inv(g.t_lo), g.inv(g.t_hi), 5, unit);
  std::sort(out.begin(), out.end(), [](const Tick& a, const Tick& b) { return a.value < b.value; });
  return out;
}

std::vector<std::string> legend_entries(const PlotSpec& spec) {
  std::vector<std::string> out;
  for (const Series& s : spec.series) out.push_back(s.name);
  out.push_back("Pareto front");
  if (spec.y_reference) out.push_back(spec.reference_label);
  return out;
}

// Margins: the title on top, tick labels and axis labels below and left, the legend right.
Geometry geometry(const PlotSpec& spec) {
  double legend_w = 0;
  for (const std::string& e : legend_entries(spec)) legend_w = std::max(legend_w, text_width(e));
  legend_w =
      std::min(legend_w, 300.0);  // longer names run off the canvas rather than squeeze the plot
  Geometry g;
  g.frame = {72, 44, kWidth - 16 - (legend_w + 26) - 14, kHeight - 52};
  g.legend_x = g.frame.x1 + 14;
  double x_lo = HUGE_VAL, x_hi = -HUGE_VAL, y_max = 0;
  std::vector<double> ys;
  for (const Series& s : spec.series) {
    for (size_t k = 0; k < s.x.size(); ++k) {
      x_lo = std::min(x_lo, s.x[k]), x_hi = std::max(x_hi, s.x[k]);
      ys.push_back(s.y[k]);
    }
  }
  if (spec.y_reference) ys.push_back(*spec.y_reference);
  for (double y : ys) y_max = std::max(y_max, std::abs(y));
  g.c = y_max > 0 ? pow10(int(std::floor(std::log10(y_max))) - 2) : 1;
  double t_lo = HUGE_VAL, t_hi = -HUGE_VAL;
  for (double y : ys) t_lo = std::min(t_lo, g.t(y)), t_hi = std::max(t_hi, g.t(y));
  std::tie(g.x_lo, g.x_hi) = padded(x_lo, x_hi);
  std::tie(g.t_lo, g.t_hi) = padded(t_lo, t_hi);
  g.x_ticks = linear_ticks(g.x_lo, g.x_hi, std::max(2, int((g.frame.x1 - g.frame.x0) / 70)), "");
  g.y_ticks = symlog_ticks(g, spec.y_unit);
  return g;
}

struct Segment {
  double x1, y1, x2, y2;
};

// Whether the segment meets the box (Liang-Barsky clipping leaves some of it).
bool crosses(const Segment& s, const Box& b) {
  const double dx = s.x2 - s.x1, dy = s.y2 - s.y1;
  const double p[4] = {-dx, dx, -dy, dy},
               q[4] = {s.x1 - b.x0, b.x1 - s.x1, s.y1 - b.y0, b.y1 - s.y1};
  double t0 = 0, t1 = 1;
  for (int i = 0; i < 4; ++i) {
    if (p[i] == 0) {
      if (q[i] < 0) return false;
      continue;
    }
    const double r = q[i] / p[i];
    if (p[i] < 0) {
      t0 = std::max(t0, r);
    } else {
      t1 = std::min(t1, r);
    }
    if (t0 > t1) return false;
  }
  return true;
}

double distance(const Box& b, double x, double y) {
  return std::hypot(x - std::clamp(x, b.x0, b.x1), y - std::clamp(y, b.y0, b.y1));
}

// From the marker's edge to the nearest point of the label box.
Segment leader(const PointLayout& p) {
  const double x = std::clamp(p.cx, p.label.x0, p.label.x1),
               y = std::clamp(p.cy, p.label.y0, p.label.y1);
  const double d = std::hypot(x - p.cx, y - p.cy);
  return {p.cx + (x - p.cx) * kMarkerExtent / d, p.cy + (y - p.cy) * kMarkerExtent / d, x, y};
}

// Whether two segments cross at a point inside both.
bool crosses(const Segment& a, const Segment& b) {
  auto side = [](const Segment& s, double x, double y) {
    return (s.x2 - s.x1) * (y - s.y1) - (s.y2 - s.y1) * (x - s.x1);
  };
  return side(a, b.x1, b.y1) * side(a, b.x2, b.y2) < 0 &&
         side(b, a.x1, a.y1) * side(b, a.x2, a.y2) < 0;
}

// Placement order: the front (by x), then the other points as given, so the labels a reader
// looks for first get the spots next to their markers. A label keeps clear of the markers, of
// earlier labels and of every line (front, reference, leaders); a leader line keeps clear of
// other labels, markers and leaders.
PlotLayout layout_points(const PlotSpec& spec, const Geometry& g) {
  PlotLayout layout;
  layout.frame = g.frame;
  std::vector<double> xs, ys;
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const Series& s = spec.series[i];
    for (size_t k = 0; k < s.x.size(); ++k) {
      PointLayout p;
      p.series = i, p.point = k, p.cx = g.px(s.x[k]), p.cy = g.py(s.y[k]);
      p.marker = {p.cx - kMarkerExtent, p.cy - kMarkerExtent, p.cx + kMarkerExtent,
                  p.cy + kMarkerExtent};
      layout.points.push_back(p);
      xs.push_back(s.x[k]), ys.push_back(s.y[k]);
    }
  }
  layout.front = pareto_front(xs, ys);
  std::vector<Segment> lines;
  for (size_t k = 1; k < layout.front.size(); ++k) {
    const PointLayout &a = layout.points[layout.front[k - 1]], &b = layout.points[layout.front[k]];
    lines.push_back({a.cx, a.cy, b.cx, b.cy});
  }
  if (spec.y_reference)
    lines.push_back({g.frame.x0, g.py(*spec.y_reference), g.frame.x1, g.py(*spec.y_reference)});
  const size_t n_fixed = lines.size();  // then the leader lines
  std::vector<size_t> order = layout.front;
  std::vector<bool> on_front(xs.size());
  for (size_t i : order) on_front[i] = true;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!on_front[i]) order.push_back(i);
  }

  std::vector<Box> taken;  // the markers, in point order, then the labels placed so far
  for (const PointLayout& p : layout.points) taken.push_back(p.marker);
  // Whether candidate c for point i keeps clear of everything placed so far.
  auto free = [&](size_t i, const PointLayout& c) {
    if (!c.label.inside(g.frame)) return false;
    for (size_t k = 0; k < taken.size(); ++k) {
      if (taken[k].overlaps(c.label) || (c.leader && k != i && crosses(leader(c), taken[k])))
        return false;
    }
    // Clearly nearer its own marker than any other (a leader's label: not next to another).
    const double own = std::min(1.5 * distance(c.label, c.cx, c.cy), 14.0);
    for (size_t k = 0; k < layout.points.size(); ++k) {
      if (k != i && distance(c.label, layout.points[k].cx, layout.points[k].cy) < own) return false;
    }
    // A leader may cross the front or reference line (it is thinner and lighter), not another
    // leader.
    for (size_t k = 0; k < lines.size(); ++k) {
      if (crosses(lines[k], c.label) || (c.leader && k >= n_fixed && crosses(lines[k], leader(c))))
        return false;
    }
    return true;
  };
  // Beside the markers first (eight spots), then with leader lines (sixteen directions, five
  // distances), so that no leader takes the spot another label needed beside its own marker.
  std::vector<std::array<double, 3>> near, far;  // distance, direction x, direction y
  for (const auto& [dx, dy] :
       {std::pair{1, 0}, {-1, 0}, {0, -1}, {0, 1}, {1, -1}, {1, 1}, {-1, -1}, {-1, 1}})
    near.push_back({kMarkerR + 2, double(dx), double(dy)});
  for (double d : {18, 32, 50, 72, 100}) {
    for (int k = 0; k < 16; ++k) far.push_back({d, std::cos(k * kPi / 8), -std::sin(k * kPi / 8)});
  }
  for (const auto* spots : {&near, &far}) {
    for (size_t i : order) {
      PointLayout& p = layout.points[i];
      const std::vector<std::string>& labels = spec.series[p.series].point_labels;
      if (p.labelled || labels.empty() || labels[p.point].empty()) continue;
      const double w = text_width(labels[p.point]) + 2, h = 1.2 * kFontSize;
      for (size_t c = 0; c < spots->size() && !p.labelled; ++c) {
        const auto [d, dx, dy] = (*spots)[c];
        const double ax = p.cx + d * dx, ay = p.cy + d * dy;  // the box's corner or edge centre
        const double x0 = dx > 0.3 ? ax : dx < -0.3 ? ax - w : ax - w / 2;
        const double y0 = dy > 0.3 ? ay : dy < -0.3 ? ay - h : ay - h / 2;
        PointLayout candidate = p;
        candidate.labelled = true, candidate.leader = spots == &far,
        candidate.label = {x0, y0, x0 + w, y0 + h};
        if (free(i, candidate)) p = candidate;
      }
      if (!p.labelled) continue;
      taken.push_back(p.label);
      if (p.leader) lines.push_back(leader(p));
    }
  }
  return layout;
}

// Shapes by series: circle, square, triangle up, diamond, triangle down.
std::string marker_path(size_t series, double cx, double cy) {
  const double r = kMarkerR;
  if (series % 5 == 0)
    return fmt::format("M{},{}a{r},{r} 0 1 0 {d},0a{r},{r} 0 1 0 -{d},0Z", num(cx - r), num(cy),
                       fmt::arg("r", num(r)), fmt::arg("d", num(2 * r)));
  static const std::vector<std::vector<std::pair<double, double>>> kPolygons = {
      {{-0.9, -0.9}, {0.9, -0.9}, {0.9, 0.9}, {-0.9, 0.9}},
      {{0, -1.3}, {1.1, 0.8}, {-1.1, 0.8}},
      {{0, -1.3}, {1, 0}, {0, 1.3}, {-1, 0}},
      {{0, 1.3}, {1.1, -0.8}, {-1.1, -0.8}}};
  std::string d;
  for (const auto& [u, v] : kPolygons[series % 5 - 1])
    d += fmt::format("{}{},{}", d.empty() ? "M" : "L", num(cx + u * r), num(cy + v * r));
  return d + "Z";
}

std::string line(double x1, double y1, double x2, double y2, const std::string& attributes = "") {
  return fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"{}/>\n", num(x1), num(y1),
                     num(x2), num(y2), attributes);
}

std::string text(double x, double y, const std::string& s, const std::string& attributes = "") {
  return fmt::format("<text x=\"{}\" y=\"{}\"{}>{}</text>\n", num(x), num(y), attributes,
                     xml_escape(s));
}

std::string render(const PlotSpec& spec, const std::string& where) {
  validate(spec, where);
  const Geometry g = geometry(spec);
  const PlotLayout layout = layout_points(spec, g);
  const Box& f = g.frame;
  const double baseline = 0.9 * kFontSize;  // from a label box's top to its text's baseline

  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} "
      "{1}\" "
      "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"{2}\">\n",
      kWidth, kHeight, kFontSize);
  out += fmt::format("<title>{}</title>\n<rect width=\"{}\" height=\"{}\" fill=\"#fff\"/>\n",
                     xml_escape(spec.title), kWidth, kHeight);
  out += text(kWidth / 2, 26, spec.title,
              fmt::format(" font-size=\"{}\" text-anchor=\"middle\"", kTitleSize));

  out += "<g stroke=\"#e8e8e8\">\n";
  for (const Tick& t : g.x_ticks) out += line(g.px(t.value), f.y0, g.px(t.value), f.y1);
  for (const Tick& t : g.y_ticks) out += line(f.x0, g.py(t.value), f.x1, g.py(t.value));
  out += "</g>\n<g fill=\"#333\">\n";
  for (const Tick& t : g.x_ticks)
    out += text(g.px(t.value), f.y1 + 16, t.label, " text-anchor=\"middle\"");
  for (const Tick& t : g.y_ticks)
    out += text(f.x0 - 6, g.py(t.value) + 4, t.label, " text-anchor=\"end\"");
  out += text((f.x0 + f.x1) / 2, f.y1 + 38, spec.x_label, " text-anchor=\"middle\"");
  out += fmt::format(
      "<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
      num((f.y0 + f.y1) / 2), xml_escape(spec.y_label));
  out += fmt::format(
      "</g>\n<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n",
      num(f.x0), num(f.y0), num(f.x1 - f.x0), num(f.y1 - f.y0));

  const std::string kReferenceStyle = " stroke=\"#777\" stroke-dasharray=\"6 4\"";
  const std::string kFrontStyle =
      " fill=\"none\" stroke=\"#333\" stroke-width=\"1.5\" stroke-opacity=\"0.6\"";
  if (spec.y_reference)
    out += line(f.x0, g.py(*spec.y_reference), f.x1, g.py(*spec.y_reference), kReferenceStyle);
  std::string front;
  for (size_t i : layout.front) {
    front += fmt::format("{}{},{}", front.empty() ? "" : " ", num(layout.points[i].cx),
                         num(layout.points[i].cy));
  }
  out += fmt::format("<polyline points=\"{}\"{}/>\n", front, kFrontStyle);

  out += "<g stroke=\"#999\" stroke-width=\"0.7\">\n";
  for (const PointLayout& p : layout.points) {
    if (!p.leader) continue;
    const Segment s = leader(p);
    out += line(s.x1, s.y1, s.x2, s.y2);
  }
  out += "</g>\n";
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const Series& s = spec.series[i];
    out += fmt::format("<g fill=\"{}\" stroke=\"#fff\" stroke-width=\"0.8\">\n", kPalette[i % 10]);
    for (const PointLayout& p : layout.points) {
      if (p.series != i) continue;
      const std::string label = s.point_labels.empty() ? s.name : s.point_labels[p.point];
      const std::string tip = fmt::format("{}: {:.2f}{}, {:+.2f}{}", label, s.x[p.point],
                                          spec.x_unit, s.y[p.point], spec.y_unit);
      out += fmt::format("<path d=\"{}\"><title>{}</title></path>\n", marker_path(i, p.cx, p.cy),
                         xml_escape(tip));
    }
    out += "</g>\n";
  }
  out += "<g fill=\"#222\">\n";
  for (const PointLayout& p : layout.points) {
    if (p.labelled)
      out +=
          text(p.label.x0 + 1, p.label.y0 + baseline, spec.series[p.series].point_labels[p.point]);
  }
  const std::vector<std::string> entries = legend_entries(spec);
  for (size_t e = 0; e < entries.size(); ++e) {
    const double x = g.legend_x, y = f.y0 + 8 + 18 * double(e);
    if (e < spec.series.size()) {
      out += fmt::format("<path d=\"{}\" fill=\"{}\"/>\n", marker_path(e, x + 10, y),
                         kPalette[e % 10]);
    } else {
      out += line(x, y, x + 20, y, e == spec.series.size() ? kFrontStyle : kReferenceStyle);
    }
    out += text(x + 26, y + 4, entries[e]);
  }
  out += "</g>\n</svg>\n";
  return out;
}

}  // namespace

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

std::vector<size_t> pareto_front(const std::vector<double>& x, const std::vector<double>& y) {
  KVQ_CHECK(x.size() == y.size(), "{} x values, {} y values", x.size(), y.size());
  std::vector<size_t> order(x.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::make_pair(x[a], y[a]) < std::make_pair(x[b], y[b]);
  });
  // Within a run of equal x only the lowest y survives (ties all do), and only if it beats
  // every point of smaller x.
  std::vector<size_t> front;
  double best = HUGE_VAL;
  for (size_t run = 0; run < order.size();) {
    size_t end = run;
    while (end < order.size() && x[order[end]] == x[order[run]]) ++end;
    const double low = y[order[run]];
    for (size_t k = run; k < end && y[order[k]] == low; ++k) {
      if (low < best) front.push_back(order[k]);
    }
    best = std::min(best, low);
    run = end;
  }
  return front;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += uint8_t(c) < 0x20 && c != '\t' && c != '\n' ? ' ' : c;
    }
  }
  return out;
}

PlotLayout plot_layout(const PlotSpec& spec) {
  validate(spec, plot_name(spec));
  return layout_points(spec, geometry(spec));
}

std::string render_svg(const PlotSpec& spec) { return render(spec, plot_name(spec)); }

void write_plot_svg(const std::string& path, const PlotSpec& spec) {
  const std::string svg = render(spec, path);
  try {
    artifact::AtomicOutput out(path);
    {
      std::ofstream file(out.temp_path(), std::ios::binary);
      file << svg;
      file.close();
      if (!file) fail("cannot write {}", out.temp_path());
    }
    out.commit();
  } catch (const Error& e) {
    fail("{}: cannot write file: {}", path, e.what());
  }
}

}  // namespace kvq::eval
