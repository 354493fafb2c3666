// CPU reference of the compressed KV cache and decode attention (kv_ref.h). Quantization goes
// through kv_format.h element by element and is checked against its fake-quantizers; the page
// layout is read with pack.h. Written for clarity, not speed.
#include "kv_ref.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "kvq/common/error.h"
#include "kvq/quant/kv_format.h"
#include "kvq/quant/pack.h"

namespace kvq::kernels {
namespace {

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

template <typename T>
T load(const uint8_t* p) {
  T x;
  std::memcpy(&x, p, sizeof(T));
  return x;
}

struct Shape {
  int D, H, S, G, P, ring;
  const quant::KvCacheFormat& f;
  explicit Shape(const KvCacheConfig& c)
      : D(c.head_dim),
        H(c.n_kv_heads),
        S(static_cast<int>(c.format.n_sink)),
        G(c.quant_group()),
        P(c.page_size),
        ring(c.ring_size()),
        f(c.format) {}
  int64_t n_quant(int64_t n) const { return f.n_quantized(n); }
  bool is_fp16(int64_t t, int64_t nq) const { return t < S || t >= S + nq; }
};

void quantize_nuq_head(const Shape& s, const KvCacheConfig& c, const quant::KvTables& qz, int h,
                       const std::vector<uint16_t>& k, const std::vector<uint16_t>& v,
                       KvHeadState* hs, uint64_t* overflow) {
  const int D = s.D;
  const int n_levels = 1 << c.bits();
  const float* kl = qz.k_levels.data();
  const float* vl = qz.v_levels.data();
  // A value vector is the whole token (kToken: n_kv_heads * head_dim values, head h's channels
  // at h * D) or head h's part of it (kTokenHead); the token's values are [n_kv_heads][D].
  const int64_t nv = c.v_vector_size();
  const int64_t at = c.v_token() ? int64_t{h} * D : 0;  // head h's channel 0 in the vector
  std::vector<float> xt(static_cast<size_t>(s.H) * D), want(static_cast<size_t>(nv));
  int64_t page_count = 0;
  for (int64_t u = 0; u < hs->n_quant; ++u) {
    const int64_t t = s.S + u;
    if (u % s.P == 0) page_count = 0;
    for (int ch = 0; ch < D; ++ch) {  // keys: per-channel offline range, pre-RoPE
      const float x = kv_half_float(k[(t * s.H + h) * D + ch]);
      const float lo = qz.k_lo[h * D + ch], hi = qz.k_hi[h * D + ch];
      const float offset = (lo + hi) / 2.0f, scale = (hi - lo) / 2.0f;
      const int code = scale == 0.0f ? 0 : quant::nuq_encode((x - offset) / scale, kl, n_levels);
      const bool candidate = c.format.key_outliers() && (x < lo || x > hi);
      const bool keep = candidate && page_count < c.k_outlier_capacity;
      if (keep) {
        hs->k_out.push_back({u, ch, kv_half_bits(x)});
        ++page_count;
      } else if (candidate) {
        ++*overflow;
      }
      hs->k_codes[u * D + ch] = static_cast<uint8_t>(code);
      const float got = keep ? x : (scale == 0.0f ? offset : kl[code] * scale + offset);
      float ref = 0.0f;
      quant::nuq_fake_quant_channel_ref(&x, 1, 1, lo, hi, keep, kl, n_levels, &ref);
      KVQ_CHECK(same_bits(got, ref), "key u={} ch={}: {} vs kv_format {}", u, ch, got, ref);
    }
    for (int64_t i = 0; i < s.H * D; ++i) xt[i] = kv_half_float(v[t * s.H * D + i]);
    const float* xv = c.v_token() ? xt.data() : xt.data() + int64_t{h} * D;
    const quant::DenseRange r = quant::dense_range_ref(xv, nv, 1, c.format.outlier_fraction);
    const float offset = quant::round_to_fp16((r.lo + r.hi) / 2.0f);
    const float scale = quant::round_to_fp16((r.hi - r.lo) / 2.0f);
    hs->v_scale[u] = kv_half_bits(scale);
    hs->v_offset[u] = kv_half_bits(offset);
    quant::nuq_fake_quant_vector_ref(xv, nv, 1, vl, n_levels, c.format.outlier_fraction,
                                     want.data());
    for (int ch = 0; ch < D; ++ch) {
      const float x = xv[at + ch];
      const int code = scale == 0.0f ? 0 : quant::nuq_encode((x - offset) / scale, vl, n_levels);
      const bool outlier = x < r.lo || x > r.hi;
      if (outlier) hs->v_out.push_back({u, ch, kv_half_bits(x)});
      hs->v_codes[u * D + ch] = static_cast<uint8_t>(code);
      const float got = outlier ? x : (scale == 0.0f ? offset : vl[code] * scale + offset);
      KVQ_CHECK(same_bits(got, want[at + ch]), "value u={} ch={}: {} vs kv_format {}", u, ch, got,
                want[at + ch]);
    }
  }
}

// KIVI: uniform asymmetric min-max with fp16 scale and zero; codes are taken against the
// rounded pair, so that decoding code * scale + zero is what the cache reproduces.
quant::UniformParams kivi_params(const float* x, int64_t n, int64_t stride, int bits) {
  const quant::UniformParams p = quant::uniform_params_ref(x, n, stride, bits);
  return {quant::round_to_fp16(p.scale), quant::round_to_fp16(p.zero)};
}

void quantize_kivi_head(const Shape& s, const KvCacheConfig& c, int h,
                        const std::vector<uint16_t>& k, const std::vector<uint16_t>& v,
                        KvHeadState* hs) {
  const int D = s.D, G = s.G;
  std::vector<float> xs(static_cast<size_t>(G) * D);
  for (int64_t g0 = 0; g0 < hs->n_quant; g0 += G) {
    for (int i = 0; i < G; ++i) {
      for (int ch = 0; ch < D; ++ch) {
        xs[i * D + ch] = kv_half_float(k[((s.S + g0 + i) * s.H + h) * D + ch]);
      }
    }
    for (int ch = 0; ch < D; ++ch) {  // keys: per channel over the group's G tokens
      const quant::UniformParams p = kivi_params(&xs[ch], G, D, c.bits());
      hs->k_gscale[g0 / G * D + ch] = kv_half_bits(p.scale);
      hs->k_gzero[g0 / G * D + ch] = kv_half_bits(p.zero);
      for (int i = 0; i < G; ++i) {
        hs->k_codes[(g0 + i) * D + ch] =
            static_cast<uint8_t>(quant::uniform_encode(xs[i * D + ch], p, c.bits()));
      }
    }
  }
  std::vector<float> xv(D);
  for (int64_t u = 0; u < hs->n_quant; ++u) {  // values: per token, G channels
    for (int ch = 0; ch < D; ++ch) xv[ch] = kv_half_float(v[((s.S + u) * s.H + h) * D + ch]);
    for (int cg = 0; cg < D / G; ++cg) {
      const quant::UniformParams p = kivi_params(&xv[cg * G], G, 1, c.bits());
      hs->v_gscale[u * (D / G) + cg] = kv_half_bits(p.scale);
      hs->v_gzero[u * (D / G) + cg] = kv_half_bits(p.zero);
      for (int i = 0; i < G; ++i) {
        hs->v_codes[u * D + cg * G + i] =
            static_cast<uint8_t>(quant::uniform_encode(xv[cg * G + i], p, c.bits()));
      }
    }
  }
}

void size_head(const Shape& s, const KvCacheConfig& c, int64_t n, KvHeadState* hs) {
  hs->n_tokens = n;
  hs->n_quant = s.n_quant(n);
  const auto nq = static_cast<size_t>(hs->n_quant);
  hs->k16.assign(static_cast<size_t>(n) * s.D, 0);
  hs->v16.assign(static_cast<size_t>(n) * s.D, 0);
  hs->k_codes.assign(nq * s.D, 0);
  hs->v_codes.assign(nq * s.D, 0);
  if (c.method() == KvMethod::kNuq) {
    hs->v_scale.assign(nq, 0);
    hs->v_offset.assign(nq, 0);
  } else {
    hs->k_gscale.assign(nq / s.G * s.D, 0);
    hs->k_gzero.assign(nq / s.G * s.D, 0);
    hs->v_gscale.assign(nq * (s.D / s.G), 0);
    hs->v_gzero.assign(nq * (s.D / s.G), 0);
  }
}

}  // namespace

uint16_t kv_half_bits(float x) {
  const __half h = __float2half_rn(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

float kv_half_float(uint16_t bits) {
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}

uint16_t kv_bf16_bits(float x) {
  const __nv_bfloat16 h = __float2bfloat16_rn(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

float kv_bf16_float(uint16_t bits) {
  const uint32_t u = uint32_t{bits} << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

KvState kv_quantize_ref(const KvCacheConfig& config, const quant::KvTables* quantizer,
                        const std::vector<std::vector<uint16_t>>& k,
                        const std::vector<std::vector<uint16_t>>& v) {
  KvState st;
  st.config = config;
  st.layout = config.layout();
  if (config.method() == KvMethod::kNuq && quantizer == nullptr) {
    fail("kv_quantize_ref: KVQuant needs the layer's tables");
  }
  const KvCacheConfig& c = st.config;
  const Shape s(c);
  if (k.size() != v.size())
    fail("kv_quantize_ref: {} key and {} value histories", k.size(), v.size());
  st.batch = static_cast<int>(k.size());
  st.heads.resize(k.size() * c.n_kv_heads);
  for (size_t b = 0; b < k.size(); ++b) {
    const size_t row = size_t{static_cast<size_t>(s.H)} * s.D;
    if (k[b].size() % row != 0 || v[b].size() != k[b].size()) {
      fail(
          "kv_quantize_ref: sequence {}: expected [n][{}][{}] keys and values, found {} and {} "
          "elements",
          b, s.H, s.D, k[b].size(), v[b].size());
    }
    const auto n = static_cast<int64_t>(k[b].size() / row);
    for (int h = 0; h < s.H; ++h) {
      KvHeadState& hs = st.heads[b * s.H + h];
      size_head(s, c, n, &hs);
      for (int64_t t = 0; t < n; ++t) {
        if (!s.is_fp16(t, hs.n_quant)) continue;
        for (int ch = 0; ch < s.D; ++ch) {
          hs.k16[t * s.D + ch] = k[b][(t * s.H + h) * s.D + ch];
          hs.v16[t * s.D + ch] = v[b][(t * s.H + h) * s.D + ch];
        }
      }
      if (c.method() == KvMethod::kNuq) {
        quantize_nuq_head(s, c, *quantizer, h, k[b], v[b], &hs, &st.k_overflow);
      } else {
        quantize_kivi_head(s, c, h, k[b], v[b], &hs);
      }
    }
  }
  return st;
}

KvState kv_parse_image(const KvCacheConfig& config, const KvImage& im,
                       std::vector<std::string>* problems) {
  KvState st;
  st.config = config;
  st.layout = config.layout();
  const KvLayout& L = st.layout;
  const Shape s(config);
  const int64_t page_bytes = L.page_bytes;
  const int64_t n_pages = page_bytes ? static_cast<int64_t>(im.pool.size()) / page_bytes : 0;
  const int row_codes = kv_k_row_codes(config.bits(), s.D);
  st.batch = im.batch;
  st.heads.resize(static_cast<size_t>(im.batch) * s.H);
  st.k_overflow = im.k_overflow;
  auto problem = [&](const std::string& p) {
    if (problems->size() < 20) problems->push_back(p);
  };
  std::vector<uint8_t> codes(std::max(row_codes, s.P));
  std::vector<int> v_next;  // values per token over all heads: where head h's entries must start
  for (int b = 0; b < im.batch; ++b) {
    const int64_t n = im.seq_len[b];
    v_next.assign(static_cast<size_t>(std::max<int64_t>(0, n)), 0);
    for (int h = 0; h < s.H; ++h) {
      KvHeadState& hs = st.heads[b * s.H + h];
      size_head(s, config, n, &hs);
      for (int64_t t = 0; t < n; ++t) {
        if (!s.is_fp16(t, hs.n_quant)) continue;
        const size_t src =
            t < s.S
                ? ((size_t{static_cast<size_t>(b)} * s.H + h) * s.S + t) * s.D
                : ((size_t{static_cast<size_t>(b)} * s.H + h) * s.ring + (t - s.S) % s.ring) * s.D;
        const auto& kk = t < s.S ? im.sink_k : im.ring_k;
        const auto& vv = t < s.S ? im.sink_v : im.ring_v;
        std::copy_n(kk.begin() + src, s.D, hs.k16.begin() + t * s.D);
        std::copy_n(vv.begin() + src, s.D, hs.v16.begin() + t * s.D);
      }
      for (int64_t p0 = 0; p0 < hs.n_quant; p0 += s.P) {
        const int64_t pi = p0 / s.P;
        const int32_t page = im.page_table[b * im.pages_per_seq + pi];
        if (page < 0 || page >= n_pages) {
          problem(fmt::format("seq {} page {}: physical page {} outside the pool of {}", b, pi,
                              page, n_pages));
          continue;
        }
        const uint8_t* sec = im.pool.data() + page * page_bytes + h * L.head_bytes;
        const int rows = static_cast<int>(std::min<int64_t>(s.P, hs.n_quant - p0));
        for (int r = 0; r < rows; ++r) {
          quant::unpack_rows_ref(
              reinterpret_cast<const uint32_t*>(sec + L.off_k_codes) + int64_t{r} * L.k_row_words,
              1, row_codes, config.bits(), codes.data());
          for (int ch = 0; ch < s.D; ++ch) {
            hs.k_codes[(p0 + r) * s.D + ch] = codes[kv_k_code_index(ch, s.D)];
          }
          for (int i = s.D; i < row_codes; ++i) {
            if (codes[i] != 0)
              problem(fmt::format("seq {} head {} u {}: padding code {} is {}", b, h, p0 + r, i,
                                  codes[i]));
          }
        }
        for (int ch = 0; ch < s.D; ++ch) {
          quant::unpack_rows_ref(
              reinterpret_cast<const uint32_t*>(sec + L.off_v_codes) + int64_t{ch} * L.v_row_words,
              1, s.P, config.bits(), codes.data());
          for (int r = 0; r < rows; ++r) hs.v_codes[(p0 + r) * s.D + ch] = codes[r];
        }
        if (config.method() == KvMethod::kKivi) {
          for (int gi = 0; gi < rows / s.G; ++gi) {
            for (int g = 0; g < s.D / 2; ++g) {
              const uint8_t* e = sec + L.off_k_params + (int64_t{gi} * (s.D / 2) + g) * 8;
              const int64_t at = (p0 / s.G + gi) * s.D;
              hs.k_gscale[at + g] = load<uint16_t>(e);
              hs.k_gscale[at + g + s.D / 2] = load<uint16_t>(e + 2);
              hs.k_gzero[at + g] = load<uint16_t>(e + 4);
              hs.k_gzero[at + g + s.D / 2] = load<uint16_t>(e + 6);
            }
          }
          for (int r = 0; r < rows; ++r) {
            for (int cg = 0; cg < s.D / s.G; ++cg) {
              const uint8_t* e = sec + L.off_v_params + (int64_t{r} * (s.D / s.G) + cg) * 4;
              hs.v_gscale[(p0 + r) * (s.D / s.G) + cg] = load<uint16_t>(e);
              hs.v_gzero[(p0 + r) * (s.D / s.G) + cg] = load<uint16_t>(e + 2);
            }
          }
          continue;
        }
        const uint8_t* tok = im.pool.data() + page * page_bytes + s.H * L.head_bytes;
        const int slots = kv_v_head_slots(L);
        for (int r = 0; r < rows; ++r) {
          const uint8_t* vs = tok + L.off_v_scales + 4 * ((L.v_vectors > 1 ? h : 0) * s.P + r);
          hs.v_scale[p0 + r] = load<uint16_t>(vs);
          hs.v_offset[p0 + r] = load<uint16_t>(vs + 2);
          const auto index = load<uint32_t>(sec + L.off_v_index + 4 * r);
          const int begin = static_cast<int>(index & 0xFFFFu),
                    count = static_cast<int>(index >> 16);
          const int want = config.v_token() ? v_next[p0 + r] : h * slots;
          const int room = config.v_token() ? L.v_out_per_row - want : slots;
          if (begin != want || count > room) {
            problem(fmt::format(
                "seq {} head {} u {}: value outliers at {} count {}, expected at {} count <= {}", b,
                h, p0 + r, begin, count, want, room));
            continue;
          }
          if (config.v_token()) v_next[p0 + r] += count;
          int prev = -1;
          for (int j = 0; j < count; ++j) {
            const auto e =
                load<uint32_t>(tok + L.off_v_out + 4 * (int64_t{r} * L.v_out_per_row + begin + j));
            const uint32_t idx = e >> 16;
            if (static_cast<int>(idx / s.D) != r || static_cast<int>(idx % s.D) <= prev) {
              problem(fmt::format(
                  "seq {} head {} u {}: value outlier {} holds index {} (row {}, previous channel "
                  "{})",
                  b, h, p0 + r, j, idx, r, prev));
            }
            prev = static_cast<int>(idx % s.D);
            hs.v_out.push_back({p0 + r, static_cast<int>(idx % s.D), static_cast<uint16_t>(e)});
          }
        }
        const int32_t count = load<int32_t>(sec + L.off_header);
        if (count < 0 || count > L.k_out_capacity) {
          problem(fmt::format("seq {} head {} page {}: key outlier count {} outside 0..{}", b, h,
                              pi, count, L.k_out_capacity));
          continue;
        }
        int64_t prev = -1;
        std::vector<int> before_block(L.blocks_per_page + 1, 0);
        for (int i = 0; i < count; ++i) {
          const auto e = load<uint32_t>(sec + L.off_k_out + 4 * int64_t{i});
          const int64_t idx = e >> 16;
          if (idx <= prev || idx / s.D >= rows) {
            problem(
                fmt::format("seq {} head {} page {}: key outlier {} has index {} (previous "
                            "{}, {} rows)",
                            b, h, pi, i, idx, prev, rows));
          }
          prev = idx;
          hs.k_out.push_back(
              {p0 + idx / s.D, static_cast<int>(idx % s.D), static_cast<uint16_t>(e)});
          for (int bi = static_cast<int>(idx / s.D / L.block_tokens) + 1; bi <= L.blocks_per_page;
               ++bi) {
            ++before_block[bi];
          }
        }
        for (int bi = 0; bi * L.block_tokens < rows; ++bi) {
          const auto begin = load<uint16_t>(sec + L.off_header + 4 + 2 * bi);
          if (begin != before_block[bi]) {
            problem(
                fmt::format("seq {} head {} page {}: block {} starts at key outlier {}, "
                            "expected {}",
                            b, h, pi, bi, begin, before_block[bi]));
          }
        }
      }
    }
  }
  return st;
}

std::string kv_compare(const KvState& want, const KvState& got, int max_lines) {
  std::string out;
  int lines = 0;
  auto add = [&](const std::string& line) {
    if (lines++ < max_lines) out += line + "\n";
  };
  if (want.batch != got.batch || want.heads.size() != got.heads.size()) {
    return fmt::format("batch {} vs {}\n", want.batch, got.batch);
  }
  if (want.k_overflow != got.k_overflow) {
    add(fmt::format("key outlier overflow {} vs {}", want.k_overflow, got.k_overflow));
  }
  const int D = want.config.head_dim, H = want.config.n_kv_heads;
  for (size_t i = 0; i < want.heads.size(); ++i) {
    const KvHeadState& a = want.heads[i];
    const KvHeadState& b = got.heads[i];
    const auto where = [&](int64_t t, int ch) {
      return fmt::format("seq {} head {} token {} channel {}", i / H, i % H, t, ch);
    };
    if (a.n_tokens != b.n_tokens || a.n_quant != b.n_quant) {
      add(fmt::format("seq {} head {}: {} tokens ({} quantized) vs {} ({})", i / H, i % H,
                      a.n_tokens, a.n_quant, b.n_tokens, b.n_quant));
      continue;
    }
    const int64_t S = want.config.format.n_sink;
    for (size_t e = 0; e < a.k16.size(); ++e) {
      if (a.k16[e] != b.k16[e] || a.v16[e] != b.v16[e]) {
        add(where(e / D, e % D) + fmt::format(": fp16 k/v {:04x}/{:04x} vs {:04x}/{:04x}", a.k16[e],
                                              a.v16[e], b.k16[e], b.v16[e]));
      }
    }
    for (size_t e = 0; e < a.k_codes.size(); ++e) {
      if (a.k_codes[e] != b.k_codes[e] || a.v_codes[e] != b.v_codes[e]) {
        add(where(S + e / D, e % D) + fmt::format(": codes k/v {}/{} vs {}/{}", a.k_codes[e],
                                                  a.v_codes[e], b.k_codes[e], b.v_codes[e]));
      }
    }
    for (size_t u = 0; u < a.v_scale.size(); ++u) {
      if (a.v_scale[u] != b.v_scale[u] || a.v_offset[u] != b.v_offset[u]) {
        add(where(S + u, -1) + fmt::format(": value scale/offset {:04x}/{:04x} vs {:04x}/{:04x}",
                                           a.v_scale[u], a.v_offset[u], b.v_scale[u],
                                           b.v_offset[u]));
      }
    }
    if (a.k_gscale != b.k_gscale || a.k_gzero != b.k_gzero) {
      add(fmt::format("seq {} head {}: KIVI key scales/zeros differ", i / H, i % H));
    }
    if (a.v_gscale != b.v_gscale || a.v_gzero != b.v_gzero) {
      add(fmt::format("seq {} head {}: KIVI value scales/zeros differ", i / H, i % H));
    }
    for (const auto* lists : {&a.k_out, &a.v_out}) {
      const auto& other = lists == &a.k_out ? b.k_out : b.v_out;
      const char* name = lists == &a.k_out ? "key" : "value";
      if (*lists == other) continue;
      size_t j = 0;
      while (j < lists->size() && j < other.size() && (*lists)[j] == other[j]) ++j;
      const auto show = [](const std::vector<KvOutlier>& l, size_t j) {
        return j < l.size()
                   ? fmt::format("(u {}, ch {}, {:04x})", l[j].token, l[j].channel, l[j].value)
                   : std::string("(end)");
      };
      add(fmt::format("seq {} head {}: {} outliers {} vs {}; first difference at {}: {} vs {}",
                      i / H, i % H, name, lists->size(), other.size(), j, show(*lists, j),
                      show(other, j)));
    }
  }
  if (lines > max_lines) out += fmt::format("... {} more\n", lines - max_lines);
  return out;
}

void kv_dequantize_ref(const KvState& st, const quant::KvTables* qz, int b, int h,
                       std::vector<float>* k, std::vector<float>* v) {
  const KvCacheConfig& c = st.config;
  const Shape s(c);
  const KvHeadState& hs = st.head(b, h);
  k->assign(static_cast<size_t>(hs.n_tokens) * s.D, 0.0f);
  v->assign(static_cast<size_t>(hs.n_tokens) * s.D, 0.0f);
  for (int64_t t = 0; t < hs.n_tokens; ++t) {
    const bool fp16 = s.is_fp16(t, hs.n_quant);
    const int64_t u = t - s.S;
    for (int ch = 0; ch < s.D; ++ch) {
      float& kx = (*k)[t * s.D + ch];
      float& vx = (*v)[t * s.D + ch];
      if (fp16) {
        kx = kv_half_float(hs.k16[t * s.D + ch]);
        vx = kv_half_float(hs.v16[t * s.D + ch]);
      } else if (c.method() == KvMethod::kNuq) {
        const float lo = qz->k_lo[h * s.D + ch], hi = qz->k_hi[h * s.D + ch];
        const float offset = (lo + hi) / 2.0f, scale = (hi - lo) / 2.0f;
        kx = scale == 0.0f ? offset : qz->k_levels[hs.k_codes[u * s.D + ch]] * scale + offset;
        const float vs = kv_half_float(hs.v_scale[u]), vo = kv_half_float(hs.v_offset[u]);
        vx = vs == 0.0f ? vo : qz->v_levels[hs.v_codes[u * s.D + ch]] * vs + vo;
      } else {
        const int64_t kg = u / s.G * s.D + ch, vg = u * (s.D / s.G) + ch / s.G;
        kx = quant::uniform_decode(hs.k_codes[u * s.D + ch],
                                   {kv_half_float(hs.k_gscale[kg]), kv_half_float(hs.k_gzero[kg])});
        vx = quant::uniform_decode(hs.v_codes[u * s.D + ch],
                                   {kv_half_float(hs.v_gscale[vg]), kv_half_float(hs.v_gzero[vg])});
      }
    }
  }
  for (const KvOutlier& o : hs.k_out)
    (*k)[(s.S + o.token) * s.D + o.channel] = kv_half_float(o.value);
  for (const KvOutlier& o : hs.v_out)
    (*v)[(s.S + o.token) * s.D + o.channel] = kv_half_float(o.value);
}

std::vector<double> kv_attention_ref(const KvState& st, const quant::KvTables* qz,
                                     const std::vector<float>& q,
                                     const std::vector<float>& inv_freq) {
  const KvCacheConfig& c = st.config;
  const int D = c.head_dim, half = D / 2, group = c.q_per_kv();
  if (q.size() != static_cast<size_t>(st.batch) * c.n_q_heads * D ||
      inv_freq.size() != static_cast<size_t>(half)) {
    fail("kv_attention_ref: expected q [{}][{}][{}] and inv_freq [{}], found {} and {} values",
         st.batch, c.n_q_heads, D, half, q.size(), inv_freq.size());
  }
  std::vector<double> out(q.size(), 0.0);
  std::vector<float> k, v;
  std::vector<double> score;
  for (int b = 0; b < st.batch; ++b) {
    for (int h = 0; h < c.n_kv_heads; ++h) {
      kv_dequantize_ref(st, qz, b, h, &k, &v);
      const int64_t n = st.head(b, h).n_tokens;
      const int64_t tq = n - 1;
      score.assign(static_cast<size_t>(n), 0.0);
      for (int qi = 0; qi < group; ++qi) {
        const int qh = h * group + qi;
        const float* qv = &q[(static_cast<size_t>(b) * c.n_q_heads + qh) * D];
        double mx = -INFINITY;
        for (int64_t t = 0; t < n; ++t) {
          const float* kt = &k[t * D];
          double s = 0.0;
          for (int j = 0; j < half; ++j) {
            const double a = static_cast<double>(t - tq) * static_cast<double>(inv_freq[j]);
            const double co = std::cos(a), si = std::sin(a);
            const double qj = qv[j], qh2 = qv[j + half], kj = kt[j], kh = kt[j + half];
            s += (qj * kj + qh2 * kh) * co + (qh2 * kj - qj * kh) * si;
          }
          score[t] = s / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, score[t]);
        }
        double sum = 0.0;
        for (int64_t t = 0; t < n; ++t) sum += (score[t] = std::exp(score[t] - mx));
        double* o = &out[(static_cast<size_t>(b) * c.n_q_heads + qh) * D];
        for (int64_t t = 0; t < n; ++t) {
          for (int ch = 0; ch < D; ++ch) o[ch] += score[t] / sum * v[t * D + ch];
        }
      }
    }
  }
  return out;
}

}  // namespace kvq::kernels
