// Checks of a KV cache configuration and quantizer (kv_config.h); one kvq::Error per problem.
#include "kv_config.h"

#include <cmath>
#include <string>

#include "kvq/common/error.h"
#include "kvq/quant/kv_format.h"

namespace kvq::kernels {
namespace {

void check_levels(const char* name, const std::vector<float>& levels, int bits) {
  const size_t want = size_t{1} << bits;
  if (levels.size() != want) {
    fail("kv cache: quantizer {}: expected {} levels for {} bits, found {}", name, want, bits,
         levels.size());
  }
  for (size_t i = 0; i < levels.size(); ++i) {
    if (!std::isfinite(levels[i]) || (i > 0 && !(levels[i] > levels[i - 1]))) {
      fail("kv cache: quantizer {}[{}]: expected finite ascending levels, found {}", name, i,
           levels[i]);
    }
  }
}

}  // namespace

int kv_default_page_size(int bits) { return bits == 3 ? 320 : 256; }

int kv_v_outliers_per_token(int head_dim, double fraction) {
  return static_cast<int>(2 * quant::outliers_per_side(head_dim, fraction));
}

KvLayout kv_check_config(KvCacheConfig* c, const NuqQuantizer* quantizer) {
  const bool nuq = c->method == KvMethod::kNuq;
  if (!nuq && c->method != KvMethod::kKivi) fail("kv cache: method: expected nuq or kivi");
  if (nuq ? (c->bits < 2 || c->bits > 4) : (c->bits != 2 && c->bits != 4)) {
    fail("kv cache: bits: expected {}, found {}", nuq ? "2, 3 or 4" : "2 or 4 for KIVI", c->bits);
  }
  if (c->head_dim != 64 && c->head_dim != 128) {
    fail("kv cache: head_dim: expected 64 or 128, found {}", c->head_dim);
  }
  if (c->n_kv_heads < 1) fail("kv cache: n_kv_heads: expected >= 1, found {}", c->n_kv_heads);
  if (c->n_q_heads < 1 || c->n_q_heads % c->n_kv_heads != 0 ||
      c->n_q_heads / c->n_kv_heads > kMaxQueryGroup) {
    fail("kv cache: n_q_heads: expected a multiple of n_kv_heads = {} with at most {} query "
         "heads per KV head, found {}", c->n_kv_heads, kMaxQueryGroup, c->n_q_heads);
  }
  if (!nuq) {
    const int g = c->kivi_group;
    if ((g != 32 && g != 64 && g != 128) || g > c->head_dim) {
      fail("kv cache: kivi_group: expected 32, 64 or 128, at most head_dim = {}, found {}",
           c->head_dim, g);
    }
  }
  if (c->page_size == 0) c->page_size = kv_default_page_size(c->bits);
  const int block = kv_block_tokens(c->bits);
  if (c->page_size < block || c->page_size % block != 0 ||
      (!nuq && c->page_size % c->kivi_group != 0)) {
    fail("kv cache: page_size: expected a positive multiple of {} tokens{}, found {}", block,
         nuq ? "" : " and of kivi_group", c->page_size);
  }
  if (int64_t{c->page_size} * c->head_dim >= 65536) {
    fail("kv cache: page_size: expected page_size * head_dim < 65536 (outlier index), found "
         "{} * {}", c->page_size, c->head_dim);
  }
  if (c->n_sink < 0 || c->n_recent < 0) {
    fail("kv cache: n_sink, n_recent: expected >= 0, found {}, {}", c->n_sink, c->n_recent);
  }
  if (c->max_batch < 1) fail("kv cache: max_batch: expected >= 1, found {}", c->max_batch);
  if (c->max_seq_len < 1 || c->max_seq_len > (int64_t{1} << 31) - 1) {
    fail("kv cache: max_seq_len: expected 1 .. 2^31 - 1, found {}", c->max_seq_len);
  }
  int v_out = 0;
  if (nuq) {
    if (!(c->v_outlier_fraction >= 0.0 && c->v_outlier_fraction < 1.0)) {
      fail("kv cache: v_outlier_fraction: expected 0 <= f < 1, found {}", c->v_outlier_fraction);
    }
    v_out = kv_v_outliers_per_token(c->head_dim, c->v_outlier_fraction);
    if (v_out > 8) {
      fail("kv cache: v_outlier_fraction: expected at most 4 outliers per side of {} values, "
           "found {} (fraction {})", c->head_dim, v_out / 2, c->v_outlier_fraction);
    }
    if (c->k_outlier_capacity == 0 && c->k_outliers) {
      c->k_outlier_capacity = c->page_size * c->head_dim / 16;
    }
    if (c->k_outlier_capacity < 0 || c->k_outlier_capacity > 65535) {
      fail("kv cache: k_outlier_capacity: expected 0 .. 65535, found {}", c->k_outlier_capacity);
    }
    if (!quantizer) fail("kv cache: KVQuant needs a quantizer (quant.h5 of the layer)");
    check_levels("k_levels", quantizer->k_levels, c->bits);
    check_levels("v_levels", quantizer->v_levels, c->bits);
    const size_t n_ch = size_t{static_cast<size_t>(c->n_kv_heads)} * c->head_dim;
    if (quantizer->k_lo.size() != n_ch || quantizer->k_hi.size() != n_ch) {
      fail("kv cache: quantizer k_lo/k_hi: expected [n_kv_heads = {}, head_dim = {}] = {} "
           "values each, found {} and {}", c->n_kv_heads, c->head_dim, n_ch,
           quantizer->k_lo.size(), quantizer->k_hi.size());
    }
    for (size_t i = 0; i < n_ch; ++i) {
      const float lo = quantizer->k_lo[i], hi = quantizer->k_hi[i];
      if (!std::isfinite(lo) || !std::isfinite(hi) || !(lo <= hi)) {
        fail("kv cache: quantizer key range of head {} channel {}: expected finite lo <= hi, "
             "found [{}, {}]", i / c->head_dim, i % c->head_dim, lo, hi);
      }
    }
  } else {
    c->k_outliers = false;
    c->k_outlier_capacity = 0;
  }
  const int64_t pages_per_seq = (c->max_seq_len + c->page_size - 1) / c->page_size;
  if (c->n_pages == 0) c->n_pages = c->max_batch * pages_per_seq;
  if (c->n_pages < 0) fail("kv cache: n_pages: expected >= 0, found {}", c->n_pages);
  return kv_make_layout(c->method, c->bits, c->head_dim, c->page_size, c->quant_group(), v_out,
                        c->k_outlier_capacity);
}

std::vector<float> rope_inv_freq(double theta, int head_dim) {
  if (!(theta > 1.0) || head_dim < 2 || head_dim % 2 != 0) {
    fail("rope: expected theta > 1 and an even head_dim, found theta {} head_dim {}", theta,
         head_dim);
  }
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int j = 0; j < head_dim / 2; ++j) {
    f[j] = static_cast<float>(std::pow(theta, -2.0 * j / head_dim));
  }
  return f;
}

}  // namespace kvq::kernels
