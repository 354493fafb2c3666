// kvq/eval/plot: the exact SVG text of a small chart, the Pareto front against its definition
// on random points, label boxes of a crowded chart clear of each other and of every marker,
// XML escaping, 1-2-5 ticks, and the one-line errors for bad input and unwritable paths.
#include "kvq/eval/plot.h"

#include <dirent.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq::eval {
namespace {

using test::error_of;
using test::TempDir;

// Two families against bits, fp16 as the Δ = 0 reference, as kvq eval draws them.
PlotSpec small_spec() {
  PlotSpec spec;
  spec.title = "m on t, L = 8";
  spec.x_label = "bits";
  spec.y_label = "Δ ppl (%)";
  spec.x_unit = " bits";
  spec.y_unit = "%";
  spec.series.push_back({"int", {2.25, 4.25}, {16.9, 0.58}, {"int2", "int4"}});
  spec.series.push_back({"nuq", {3.09}, {0.64}, {"nuq3"}});
  spec.y_reference = 0.0;
  spec.reference_label = "fp16";
  return spec;
}

TEST(PlotSvg, ExactTextOfASmallChart) {
  // Ticks 1-2-5 on the symlog y axis (c = 0.1%), the front int2 -> nuq3 -> int4 under the
  // markers, each label beside its marker and clear of the front line.
  EXPECT_EQ(
      render_svg(small_spec()),
      R"svg(<svg xmlns="http://www.w3.org/2000/svg" width="960" height="620" viewBox="0 0 960 620" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">
<title>m on t, L = 8</title>
<rect width="960" height="620" fill="#fff"/>
<text x="480.0" y="26.0" font-size="15" text-anchor="middle">m on t, L = 8</text>
<g stroke="#e8e8e8">
<line x1="95.4" y1="44.0" x2="95.4" y2="568.0"/>
<line x1="162.4" y1="44.0" x2="162.4" y2="568.0"/>
<line x1="229.4" y1="44.0" x2="229.4" y2="568.0"/>
<line x1="296.4" y1="44.0" x2="296.4" y2="568.0"/>
<line x1="363.4" y1="44.0" x2="363.4" y2="568.0"/>
<line x1="430.3" y1="44.0" x2="430.3" y2="568.0"/>
<line x1="497.3" y1="44.0" x2="497.3" y2="568.0"/>
<line x1="564.3" y1="44.0" x2="564.3" y2="568.0"/>
<line x1="631.3" y1="44.0" x2="631.3" y2="568.0"/>
<line x1="698.2" y1="44.0" x2="698.2" y2="568.0"/>
<line x1="765.2" y1="44.0" x2="765.2" y2="568.0"/>
<line x1="72.0" y1="539.9" x2="822.2" y2="539.9"/>
<line x1="72.0" y1="476.8" x2="822.2" y2="476.8"/>
<line x1="72.0" y1="439.8" x2="822.2" y2="439.8"/>
<line x1="72.0" y1="376.7" x2="822.2" y2="376.7"/>
<line x1="72.0" y1="321.5" x2="822.2" y2="321.5"/>
<line x1="72.0" y1="262.6" x2="822.2" y2="262.6"/>
<line x1="72.0" y1="181.8" x2="822.2" y2="181.8"/>
<line x1="72.0" y1="119.5" x2="822.2" y2="119.5"/>
<line x1="72.0" y1="56.8" x2="822.2" y2="56.8"/>
</g>
<g fill="#333">
<text x="95.4" y="584.0" text-anchor="middle">2.2</text>
<text x="162.4" y="584.0" text-anchor="middle">2.4</text>
<text x="229.4" y="584.0" text-anchor="middle">2.6</text>
<text x="296.4" y="584.0" text-anchor="middle">2.8</text>
<text x="363.4" y="584.0" text-anchor="middle">3.0</text>
<text x="430.3" y="584.0" text-anchor="middle">3.2</text>
<text x="497.3" y="584.0" text-anchor="middle">3.4</text>
<text x="564.3" y="584.0" text-anchor="middle">3.6</text>
<text x="631.3" y="584.0" text-anchor="middle">3.8</text>
<text x="698.2" y="584.0" text-anchor="middle">4.0</text>
<text x="765.2" y="584.0" text-anchor="middle">4.2</text>
<text x="66.0" y="543.9" text-anchor="end">0%</text>
<text x="66.0" y="480.8" text-anchor="end">+0.1%</text>
<text x="66.0" y="443.8" text-anchor="end">+0.2%</text>
<text x="66.0" y="380.7" text-anchor="end">+0.5%</text>
<text x="66.0" y="325.5" text-anchor="end">+1%</text>
<text x="66.0" y="266.6" text-anchor="end">+2%</text>
<text x="66.0" y="185.8" text-anchor="end">+5%</text>
<text x="66.0" y="123.5" text-anchor="end">+10%</text>
<text x="66.0" y="60.8" text-anchor="end">+20%</text>
<text x="447.1" y="606.0" text-anchor="middle">bits</text>
<text transform="translate(16,306.0) rotate(-90)" text-anchor="middle">Δ ppl (%)</text>
</g>
<rect x="72.0" y="44.0" width="750.2" height="524.0" fill="none" stroke="#444"/>
<line x1="72.0" y1="539.9" x2="822.2" y2="539.9" stroke="#777" stroke-dasharray="6 4"/>
<polyline points="112.2,72.1 393.5,357.6 782.0,365.3" fill="none" stroke="#333" stroke-width="1.5" stroke-opacity="0.6"/>
<g stroke="#999" stroke-width="0.7">
</g>
<g fill="#1f77b4" stroke="#fff" stroke-width="0.8">
<path d="M107.7,72.1a4.5,4.5 0 1 0 9.0,0a4.5,4.5 0 1 0 -9.0,0Z"><title>int2: 2.25 bits, +16.90%</title></path>
<path d="M777.5,365.3a4.5,4.5 0 1 0 9.0,0a4.5,4.5 0 1 0 -9.0,0Z"><title>int4: 4.25 bits, +0.58%</title></path>
</g>
<g fill="#ff7f0e" stroke="#fff" stroke-width="0.8">
<path d="M389.4,353.5L397.5,353.5L397.5,361.6L389.4,361.6Z"><title>nuq3: 3.09 bits, +0.64%</title></path>
</g>
<g fill="#222">
<text x="77.4" y="75.4">int2</text>
<text x="789.5" y="368.6">int4</text>
<text x="379.9" y="374.0">nuq3</text>
<path d="M841.7,52.0a4.5,4.5 0 1 0 9.0,0a4.5,4.5 0 1 0 -9.0,0Z" fill="#1f77b4"/>
<text x="862.2" y="56.0">int</text>
<path d="M842.1,66.0L850.2,66.0L850.2,74.0L842.1,74.0Z" fill="#ff7f0e"/>
<text x="862.2" y="74.0">nuq</text>
<line x1="836.2" y1="88.0" x2="856.2" y2="88.0" fill="none" stroke="#333" stroke-width="1.5" stroke-opacity="0.6"/>
<text x="862.2" y="92.0">Pareto front</text>
<line x1="836.2" y1="106.0" x2="856.2" y2="106.0" stroke="#777" stroke-dasharray="6 4"/>
<text x="862.2" y="110.0">fp16</text>
</g>
</svg>
)svg");
}

TEST(PlotSvg, FileHoldsTheRenderedText) {
  TempDir dir;
  write_plot_svg(dir.file("p.svg"), small_spec());
  EXPECT_EQ(test::read_file(dir.file("p.svg")), render_svg(small_spec()));
}

// Symlog: a method better than fp16 mirrors one as much worse, and +0.5% is not squashed
// against 0 by +16.9% (a linear axis would give it 3% of the height).
TEST(PlotSvg, SymlogAxisMirrorsAroundZeroAndSpreadsSmallDeltas) {
  PlotSpec spec = small_spec();
  spec.series = {{"a", {1, 2, 3, 4}, {-0.5, 0, 0.5, 16.9}, {}}};
  const PlotLayout layout = plot_layout(spec);
  const double below = layout.points[0].cy, zero = layout.points[1].cy, above = layout.points[2].cy;
  EXPECT_NEAR(below - zero, zero - above, 0.01);
  EXPECT_GT(zero - above, 0.25 * (zero - layout.points[3].cy));
  const std::string svg = render_svg(spec);
  for (const char* tick : {">-0.5%<", ">-0.1%<", ">0%<", ">+0.1%<", ">+1%<", ">+10%<"})
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;
}

// The definition, pair by pair.
bool dominated(const std::vector<double>& x, const std::vector<double>& y, size_t i) {
  for (size_t j = 0; j < x.size(); ++j) {
    if (x[j] <= x[i] && y[j] <= y[i] && (x[j] < x[i] || y[j] < y[i])) return true;
  }
  return false;
}

TEST(ParetoFront, MatchesTheDefinitionOnRandomPointsWithTies) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const size_t n = trial % 25;
    // Few distinct values, so equal x, equal y and equal points are common.
    const int range = 1 + trial % 7;
    std::vector<double> x(n), y(n);
    for (size_t i = 0; i < n; ++i)
      x[i] = double(rng() % range) / 4, y[i] = double(rng() % range) - 2;
    std::vector<size_t> want;
    for (size_t i = 0; i < n; ++i) {
      if (!dominated(x, y, i)) want.push_back(i);
    }
    std::vector<size_t> got = pareto_front(x, y);
    for (size_t k = 1; k < got.size(); ++k) {
      EXPECT_LE(x[got[k - 1]], x[got[k]]) << "trial " << trial << ": not sorted by x";
    }
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << "trial " << trial;
  }
}

TEST(PlotLabels, CrowdedChartLabelsOverlapNothingAndStayInTheFrame) {
  PlotSpec spec = small_spec();
  spec.series.clear();
  std::mt19937 rng(5);
  for (int s = 0; s < 8; ++s) {
    Series series{"family " + std::to_string(s), {}, {}, {}};
    for (int k = 0; k < 15; ++k) {
      series.x.push_back(2 + double(rng() % 1000) / 1000);                // 2..3 bits
      series.y.push_back(std::pow(10.0, double(rng() % 300) / 100 - 2));  // 0.01%..10%
      series.point_labels.push_back(fmt::format("method-{}-{}", s, k));
    }
    spec.series.push_back(series);
  }
  const PlotLayout layout = plot_layout(spec);
  ASSERT_EQ(layout.points.size(), 120u);
  size_t labelled = 0, leaders = 0;
  for (size_t i = 0; i < layout.points.size(); ++i) {
    const PointLayout& p = layout.points[i];
    EXPECT_TRUE(p.marker.inside(layout.frame)) << i;
    if (!p.labelled) continue;
    ++labelled, leaders += p.leader;
    EXPECT_TRUE(p.label.inside(layout.frame)) << i;
    for (size_t j = 0; j < layout.points.size(); ++j) {
      const PointLayout& q = layout.points[j];
      EXPECT_FALSE(p.label.overlaps(q.marker)) << "label " << i << " on marker " << j;
      if (j != i && q.labelled) {
        EXPECT_FALSE(p.label.overlaps(q.label)) << "labels " << i << " and " << j;
      }
    }
  }
  EXPECT_GT(labelled, 60u);
  EXPECT_LT(labelled, 120u) << "a crowd this dense should leave some labels to tooltips";
  EXPECT_GT(leaders, 0u);
  // Every label is in the file, drawn or in its marker's tooltip.
  const std::string svg = render_svg(spec);
  for (const Series& s : spec.series) {
    for (const std::string& label : s.point_labels)
      EXPECT_NE(svg.find("<title>" + label + ": "), std::string::npos);
  }
}

TEST(PlotSvg, EscapesXmlInEveryText) {
  EXPECT_EQ(xml_escape("a<b>&\"c'\td\x01\ne"), "a&lt;b&gt;&amp;&quot;c&apos;\td \ne");
  EXPECT_EQ(xml_escape("Δ 100%"), "Δ 100%");
  PlotSpec spec = small_spec();
  spec.title = "<m> & \"t\"";
  spec.series[0].name = "int<4>";
  spec.series[1].point_labels = {"a&b"};
  const std::string svg = render_svg(spec);
  EXPECT_NE(svg.find("<title>&lt;m&gt; &amp; &quot;t&quot;</title>"), std::string::npos);
  EXPECT_NE(svg.find(">int&lt;4&gt;</text>"), std::string::npos);
  EXPECT_NE(svg.find(">a&amp;b</text>"), std::string::npos);
  EXPECT_EQ(svg.find("<m>"), std::string::npos);
  EXPECT_EQ(svg.find("a&b"), std::string::npos);
}

TEST(NiceTicks, OneTwoFiveSteps) {
  auto expect_ticks = [](double lo, double hi, int target, std::vector<double> want) {
    EXPECT_EQ(nice_ticks(lo, hi, target), want) << lo << ".." << hi;
  };
  expect_ticks(0, 1, 5, {0, 0.2, 0.4, 0.6, 0.8, 1});
  expect_ticks(2.1, 16.3, 7, {4, 6, 8, 10, 12, 14, 16});
  expect_ticks(5.62, 7.3, 4, {6, 6.5, 7});
  expect_ticks(0.3, 1.1, 8, {0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1});
  expect_ticks(-3, 3, 6, {-3, -2, -1, 0, 1, 2, 3});
  expect_ticks(120, 980, 4, {200, 400, 600, 800});
  expect_ticks(4, 4, 5, {4});
  EXPECT_FALSE(std::signbit(nice_ticks(-0.5, 0.5, 4)[2]));  // 0, not -0 ("-0.0" on the axis)
}

TEST(PlotErrors, OneLineMessagesNamingPathSeriesAndIndex) {
  TempDir dir;
  const std::string path = dir.file("p.svg");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto with = [](std::vector<Series> series) {
    PlotSpec spec;
    spec.series = std::move(series);
    return spec;
  };
  EXPECT_EQ(error_of([&] { write_plot_svg(path, with({})); }),
            path + ": expected at least one series, found none");
  EXPECT_EQ(error_of([&] {
              write_plot_svg(path, with({{"int4", {}, {}, {}}}));
            }),
            path + ": series 'int4': expected at least one point, found none");
  EXPECT_EQ(error_of([&] {
              write_plot_svg(path, with({{"a", {1, 2}, {1}, {}}}));
            }),
            path + ": series 'a': expected as many y values as x values (2), found 1");
  EXPECT_EQ(error_of([&] {
              write_plot_svg(path, with({{"a", {1}, {1}, {"x", "y"}}}));
            }),
            path + ": series 'a': expected no point labels or one per point (1), found 2");
  EXPECT_EQ(
      error_of([&] {
        write_plot_svg(path, with({{"a", {1}, {1}, {}}, {"int4", {1, 2, 3}, {5, 6, nan}, {}}}));
      }),
      path + ": series 'int4' point 2: expected finite x and y, found x=3 y=nan");
  EXPECT_EQ(error_of([&] {
              write_plot_svg(path, with({{"", {INFINITY}, {1}, {}}}));
            }),
            path + ": series #0 point 0: expected finite x and y, found x=inf y=1");
  PlotSpec ref = with({{"a", {1}, {1}, {}}});
  ref.y_reference = nan;
  EXPECT_EQ(error_of([&] { write_plot_svg(path, ref); }),
            path + ": y_reference: expected a finite value, found nan");
  // Without a path the plot is named by its title.
  ref.title = "t";
  EXPECT_EQ(error_of([&] { render_svg(ref); }),
            "plot 't': y_reference: expected a finite value, found nan");
  EXPECT_EQ(error_of([&] { plot_layout(with({})); }),
            "plot: expected at least one series, found none");

  const std::string missing = dir.file("no/such/dir/p.svg");
  const std::string msg = error_of([&] { write_plot_svg(missing, small_spec()); });
  EXPECT_EQ(msg.rfind(missing + ": cannot write file: ", 0), 0u) << msg;

  // Nothing was left behind: no p.svg, no temp files.
  DIR* d = opendir(dir.path().c_str());
  ASSERT_NE(d, nullptr);
  int entries = 0;
  while (dirent* e = readdir(d))
    entries += std::string(e->d_name) != "." && std::string(e->d_name) != "..";
  closedir(d);
  EXPECT_EQ(entries, 0);
}

}  // namespace
}  // namespace kvq::eval
