// kvq/eval/plot: PNG structure (signature, chunk CRCs, IHDR), decoding the file back with a
// decoder written here (stored and fixed-Huffman deflate, all five PNG filters) to exactly the
// rendered pixels, markers where PlotFrame puts them, the dashed reference line, 1-2-5 ticks,
// and the one-line errors for bad input and unwritable paths.
#include "kvq/eval/plot.h"

#include <dirent.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq::eval {
namespace {

using test::error_of;
using test::TempDir;

uint32_t be32(const std::string& s, size_t at) {
  return uint32_t(uint8_t(s[at])) << 24 | uint32_t(uint8_t(s[at + 1])) << 16 |
         uint32_t(uint8_t(s[at + 2])) << 8 | uint32_t(uint8_t(s[at + 3]));
}

// Bitwise, without a table: deliberately unlike the library's, so they do not share a bug.
uint32_t crc32_bitwise(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : s) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
  }
  return ~c;
}

struct Chunk {
  std::string type, data;
};

// Splits a PNG into chunks, checking the signature and every CRC.
std::vector<Chunk> png_chunks(const std::string& png) {
  if (png.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) != 0)
    throw std::runtime_error("no PNG signature");
  std::vector<Chunk> chunks;
  for (size_t at = 8; at < png.size();) {
    if (at + 12 > png.size()) throw std::runtime_error("truncated chunk header");
    const uint32_t len = be32(png, at);
    if (at + 12 + len > png.size()) throw std::runtime_error("truncated chunk");
    const std::string typed = png.substr(at + 4, 4 + len);
    if (crc32_bitwise(typed) != be32(png, at + 8 + len))
      throw std::runtime_error("bad CRC in chunk " + typed.substr(0, 4));
    chunks.push_back({typed.substr(0, 4), typed.substr(4)});
    at += 12 + len;
  }
  return chunks;
}

class BitReader {
 public:
  explicit BitReader(const std::string& s) : s_(s) {}
  uint32_t bits(int n) {  // fields, low bit first
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) {
      if (pos_ >= s_.size()) throw std::runtime_error("inflate: out of data");
      v |= ((uint8_t(s_[pos_]) >> bit_) & 1u) << i;
      if (++bit_ == 8) bit_ = 0, ++pos_;
    }
    return v;
  }
  uint32_t huffman(int n) {  // Huffman codes, high bit first
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 1) | bits(1);
    return v;
  }
  void align() {
    if (bit_ != 0) bit_ = 0, ++pos_;
  }
  size_t pos() const { return pos_; }

 private:
  const std::string& s_;
  size_t pos_ = 0;
  int bit_ = 0;
};

// RFC 1951 3.2.6, read a bit at a time: 7-bit codes 256..279, 8-bit 0..143 and 280..287,
// 9-bit 144..255.
int fixed_literal_length(BitReader& r) {
  uint32_t c = r.huffman(7);
  if (c <= 0x17) return int(256 + c);
  c = (c << 1) | r.bits(1);
  if (c >= 0x30 && c <= 0xBF) return int(c - 0x30);
  if (c >= 0xC0 && c <= 0xC7) return int(280 + c - 0xC0);
  c = (c << 1) | r.bits(1);
  if (c >= 0x190) return int(144 + c - 0x190);
  throw std::runtime_error("inflate: bad fixed code");
}

// zlib stream -> bytes; stored and fixed-Huffman blocks only, adler32 checked.
std::string zlib_inflate(const std::string& z) {
  if (z.size() < 6 || (uint8_t(z[0]) & 0x0F) != 8 || (uint8_t(z[0]) * 256 + uint8_t(z[1])) % 31)
    throw std::runtime_error("bad zlib header");
  // Length and distance bases from their extra-bit counts (RFC 1951 3.2.5), not copied tables.
  std::vector<int> len_base(29), len_extra(29), dist_base(30), dist_extra(30);
  for (int i = 0, base = 3; i < 28; ++i) {
    len_extra[i] = i < 8 ? 0 : (i - 4) / 4;
    len_base[i] = base, base += 1 << len_extra[i];
  }
  len_base[28] = 258, len_extra[28] = 0;
  for (int i = 0, base = 1; i < 30; ++i) {
    dist_extra[i] = i < 4 ? 0 : (i - 2) / 2;
    dist_base[i] = base, base += 1 << dist_extra[i];
  }
  const std::string body = z.substr(2);
  BitReader r(body);
  std::string out;
  for (bool last = false; !last;) {
    last = r.bits(1) == 1;
    const uint32_t type = r.bits(2);
    if (type == 0) {
      r.align();
      const uint32_t len = r.bits(16), nlen = r.bits(16);
      if ((len ^ 0xFFFF) != nlen) throw std::runtime_error("inflate: bad stored length");
      for (uint32_t i = 0; i < len; ++i) out += char(r.bits(8));
    } else if (type == 1) {
      for (int sym; (sym = fixed_literal_length(r)) != 256;) {
        if (sym < 256) {
          out += char(sym);
          continue;
        }
        if (sym > 285) throw std::runtime_error("inflate: bad length symbol");
        const size_t len = len_base[sym - 257] + r.bits(len_extra[sym - 257]);
        const uint32_t d = r.huffman(5);
        if (d >= 30) throw std::runtime_error("inflate: bad distance symbol");
        const size_t dist = dist_base[d] + r.bits(dist_extra[d]);
        if (dist > out.size()) throw std::runtime_error("inflate: distance before start");
        for (size_t k = 0; k < len; ++k) out += out[out.size() - dist];
      }
    } else {
      throw std::runtime_error("inflate: block type " + std::to_string(type) + " unsupported");
    }
  }
  r.align();
  uint32_t a = 1, b = 0;
  for (unsigned char c : out) a = (a + c) % 65521, b = (b + a) % 65521;
  if (body.size() < r.pos() + 4 || be32(body, r.pos()) != ((b << 16) | a))
    throw std::runtime_error("bad adler32");
  return out;
}

// A whole 8-bit RGB PNG -> Image, undoing any of the five filters.
Image decode_png(const std::string& png) {
  const std::vector<Chunk> chunks = png_chunks(png);
  if (chunks.empty() || chunks[0].type != "IHDR" || chunks.back().type != "IEND")
    throw std::runtime_error("expected IHDR first and IEND last");
  const std::string& ihdr = chunks[0].data;
  if (ihdr.size() != 13 || ihdr.substr(8) != std::string("\x08\x02\x00\x00\x00", 5))
    throw std::runtime_error("expected 8-bit RGB, no interlace");
  Image image;
  image.width = int(be32(ihdr, 0)), image.height = int(be32(ihdr, 4));
  std::string z;
  for (const Chunk& c : chunks)
    if (c.type == "IDAT") z += c.data;
  const std::string raw = zlib_inflate(z);
  const size_t stride = size_t(image.width) * 3;
  if (raw.size() != (stride + 1) * size_t(image.height))
    throw std::runtime_error("wrong decompressed size");
  image.rgb.resize(stride * size_t(image.height));
  for (size_t y = 0; y < size_t(image.height); ++y) {
    const int filter = uint8_t(raw[y * (stride + 1)]);
    uint8_t* cur = &image.rgb[y * stride];
    for (size_t x = 0; x < stride; ++x) {
      const int v = uint8_t(raw[y * (stride + 1) + 1 + x]);
      const int a = x >= 3 ? cur[x - 3] : 0, b = y > 0 ? cur[x - stride] : 0;
      const int c = x >= 3 && y > 0 ? cur[x - stride - 3] : 0;
      const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
      const int paeth = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      const int pred[5] = {0, a, b, (a + b) / 2, paeth};
      if (filter > 4) throw std::runtime_error("bad filter type");
      cur[x] = uint8_t(v + pred[filter]);
    }
  }
  return image;
}

// The chart kvq eval draws: two method families against bits, fp16 as the reference.
PlotSpec eval_like_spec() {
  PlotSpec spec;
  spec.title = "wt2-llama-1m: perplexity vs bits";
  spec.x_label = "bits per element";
  spec.y_label = "perplexity";
  spec.series.push_back({"uniform",
                         {2.25, 3.25, 4.25, 8.25},
                         {9.8, 7.1, 6.2, 5.75},
                         {"k2v2", "k3v3", "k4v4", "k8v8"},
                         /*connect=*/true});
  spec.series.push_back({"kmeans", {2.1, 3.1, 4.1}, {8.1, 6.6, 6.0}, {}, /*connect=*/false});
  spec.y_reference = 5.70;
  spec.reference_label = "fp16 5.70";
  return spec;
}

TEST(PlotPng, SignatureChunksCrcAndIhdr) {
  PlotSpec spec = eval_like_spec();
  spec.width = 640, spec.height = 480;
  const std::string png = encode_png(render_plot(spec));
  ASSERT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  const std::vector<Chunk> chunks = png_chunks(png);  // throws on a bad CRC
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].type, "IHDR");
  EXPECT_EQ(chunks[1].type, "IDAT");
  EXPECT_EQ(chunks[2].type, "IEND");
  EXPECT_EQ(be32(chunks[0].data, 0), 640u);
  EXPECT_EQ(be32(chunks[0].data, 4), 480u);
  EXPECT_EQ(chunks[2].data, "");

  std::string corrupt = png;
  corrupt[40] ^= 0x01;  // inside IDAT
  EXPECT_THROW(png_chunks(corrupt), std::runtime_error);
}

TEST(PlotPng, FileDecodesToRenderedPixelsWithMarkersWherePlotFrameSays) {
  TempDir dir;
  const PlotSpec spec = eval_like_spec();
  write_plot_png(dir.file("ppl.png"), spec);
  const std::string png = test::read_file(dir.file("ppl.png"));
  const Image decoded = decode_png(png);
  const Image rendered = render_plot(spec);
  ASSERT_EQ(decoded.width, 900);
  ASSERT_EQ(decoded.height, 600);
  EXPECT_TRUE(decoded.rgb == rendered.rgb);
  // A mostly-white chart compresses well below the 1.6 MB of raw pixels.
  EXPECT_LT(png.size(), 100u * 1024) << "png is " << png.size() << " bytes";

  const PlotFrame f = plot_frame(spec);
  EXPECT_GT(f.left, 0);
  EXPECT_LT(f.right, 900);
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const Series& s = spec.series[i];
    for (size_t k = 0; k < s.x.size(); ++k) {
      const int px = f.px(s.x[k]), py = f.py(s.y[k]);
      EXPECT_GT(px, f.left);
      EXPECT_LT(px, f.right);
      EXPECT_GT(py, f.top);
      EXPECT_LT(py, f.bottom);
      EXPECT_EQ(decoded.at(px, py), series_color(i)) << "series " << i << " point " << k;
    }
  }
  // Higher ppl is higher on the image.
  EXPECT_LT(f.py(9.8), f.py(5.75));

  auto ink_in_rows = [&](int y0, int y1, int x0, int x1) {
    int n = 0;
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) n += decoded.at(x, y) != kBackground;
    return n;
  };
  EXPECT_GT(ink_in_rows(12, 25, 0, 899), 100) << "title";
  EXPECT_GT(ink_in_rows(f.bottom + 27, f.bottom + 33, f.left, f.right), 30) << "x label";
  EXPECT_GT(ink_in_rows(f.top, f.bottom, 12, 18), 30) << "vertical y label";
  EXPECT_EQ(ink_in_rows(0, 5, 0, 899), 0) << "top margin";

  // The reference line is dashed: ink and gaps alternate along its row.
  const int ry = f.py(5.70);
  int ink = 0, gaps = 0;
  for (int x = f.left + 1; x < f.right; ++x) (decoded.at(x, ry) != kBackground ? ink : gaps)++;
  EXPECT_GT(ink, (f.right - f.left) / 2);
  EXPECT_GT(gaps, (f.right - f.left) / 5);
}

TEST(PlotPng, LogYAndSinglePointRender) {
  PlotSpec spec;
  spec.log_y = true;
  spec.series.push_back({"wide", {2, 4, 8, 16}, {2000, 150, 12, 5.5}, {}, true});
  spec.series.push_back({"", {5}, {40}, {"lone"}, false});
  const Image image = render_plot(spec);
  const PlotFrame f = plot_frame(spec);
  EXPECT_TRUE(f.log_y);
  // Equal ratios are equal distances on a log axis.
  EXPECT_NEAR(f.py(10) - f.py(100), f.py(100) - f.py(1000), 1);
  for (size_t i = 0; i < spec.series.size(); ++i)
    for (size_t k = 0; k < spec.series[i].x.size(); ++k)
      EXPECT_EQ(image.at(f.px(spec.series[i].x[k]), f.py(spec.series[i].y[k])), series_color(i));

  PlotSpec single;
  single.width = 160, single.height = 120;
  single.series.push_back({"one", {4}, {6}, {}, false});
  const PlotFrame g = plot_frame(single);
  EXPECT_EQ(render_plot(single).at(g.px(4), g.py(6)), series_color(0));
}

TEST(PlotPng, EncoderRoundTripsNoiseRunsAndEveryDistance) {
  std::mt19937 rng(7);
  for (const auto& [w, h] : std::vector<std::pair<int, int>>{{1, 1}, {37, 23}, {700, 90}}) {
    Image image;
    image.width = w, image.height = h;
    image.rgb.resize(size_t(w) * h * 3);
    for (size_t i = 0; i < image.rgb.size(); ++i) {
      // Noise in some rows (literals of every value), stripes elsewhere (long matches).
      const size_t row = i / (size_t(w) * 3);
      image.rgb[i] = row % 3 == 0 ? uint8_t(rng()) : uint8_t((i / 7) % 5 * 50);
    }
    EXPECT_TRUE(decode_png(encode_png(image)).rgb == image.rgb) << w << "x" << h;
  }
  // One row, so the stream deflate sees is the bytes themselves: copies of random length from
  // random distances up to 32 KiB reach every length and distance code.
  Image row;
  row.width = 30000, row.height = 1;
  for (size_t i = 0; i < 90000;) {
    if (i < 300 || rng() % 3 == 0) {
      row.rgb.push_back(uint8_t(rng())), ++i;
      continue;
    }
    const size_t dist = 1 + rng() % std::min<size_t>(i, 32768), len = 3 + rng() % 300;
    for (size_t k = 0; k < len && i < 90000; ++k, ++i) row.rgb.push_back(row.rgb[i - dist]);
  }
  EXPECT_TRUE(decode_png(encode_png(row)).rgb == row.rgb);
}

TEST(NiceTicks, OneTwoFiveSteps) {
  auto expect_ticks = [](double lo, double hi, int target, std::vector<double> want) {
    const std::vector<double> got = nice_ticks(lo, hi, target);
    ASSERT_EQ(got.size(), want.size()) << lo << ".." << hi;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << lo << ".." << hi;
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
  const std::string path = dir.file("p.png");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto with = [](std::vector<Series> series) {
    PlotSpec spec;
    spec.series = std::move(series);
    return spec;
  };
  EXPECT_EQ(error_of([&] { write_plot_png(path, with({})); }),
            path + ": expected at least one series, found none");
  EXPECT_EQ(error_of([&] {
              write_plot_png(path, with({{"int4", {}, {}, {}, false}}));
            }),
            path + ": series 'int4': expected at least one point, found none");
  EXPECT_EQ(error_of([&] {
              write_plot_png(path, with({{"a", {1, 2}, {1}, {}, false}}));
            }),
            path + ": series 'a': expected as many y values as x values (2), found 1");
  EXPECT_EQ(error_of([&] {
              write_plot_png(path, with({{"a", {1}, {1}, {"x", "y"}, false}}));
            }),
            path + ": series 'a': expected no point labels or one per point (1), found 2");
  EXPECT_EQ(error_of([&] {
              write_plot_png(path, with({{"a", {1}, {1}, {}, false},
                                         {"int4", {1, 2, 3}, {5, 6, nan}, {}, false}}));
            }),
            path + ": series 'int4' point 2: expected finite x and y, found x=3 y=nan");
  EXPECT_EQ(error_of([&] {
              write_plot_png(path, with({{"", {INFINITY}, {1}, {}, false}}));
            }),
            path + ": series #0 point 0: expected finite x and y, found x=inf y=1");

  PlotSpec log = with({{"a", {1, 2}, {3, 0}, {}, false}});
  log.log_y = true;
  EXPECT_EQ(error_of([&] { write_plot_png(path, log); }),
            path + ": series 'a' point 1: log_y needs y > 0, found y=0");
  PlotSpec small = with({{"a", {1}, {1}, {}, false}});
  small.width = 100;
  EXPECT_EQ(error_of([&] { write_plot_png(path, small); }),
            path + ": expected a plot size from 160x120 to 10000x10000 pixels, found 100x600");
  PlotSpec ref = with({{"a", {1}, {1}, {}, false}});
  ref.y_reference = nan;
  EXPECT_EQ(error_of([&] { write_plot_png(path, ref); }),
            path + ": y_reference: expected a finite value, found nan");
  ref.title = "t";
  EXPECT_EQ(error_of([&] { render_plot(ref); }),
            "plot 't': y_reference: expected a finite value, found nan");

  const std::string missing = dir.file("no/such/dir/p.png");
  const std::string msg = error_of([&] { write_plot_png(missing, eval_like_spec()); });
  EXPECT_EQ(msg.rfind(missing + ": cannot write file: ", 0), 0u) << msg;

  // Nothing was left behind: no p.png, no temp files.
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
