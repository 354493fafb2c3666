// Checks of a KV cache configuration and a layer's tables (cache_config.h); one kvq::Error per
// problem.
#include "kvq/runtime/cache_config.h"

#include <algorithm>
#include <string>

#include "kv_attention.h"
#include "kvq/common/error.h"
#include "kvq/quant/kv_format.h"

namespace kvq::runtime {
namespace {

using kernels::KvCacheConfig;
using kernels::KvMethod;

// The formats the kernels were built for; anything else is refused naming the method.
void check_format(const quant::KvCacheFormat& f, int head_dim) {
  auto refuse = [&](const std::string& why) {
    fail("kv cache: method '{}': {} (the CUDA cache holds {})", f.method, why, kCacheMethods);
  };
  const bool nuq = f.codec == quant::KvCodec::kNuq, kivi = f.codec == quant::KvCodec::kKivi;
  if (!nuq && !kivi) refuse("no CUDA kernels for this kind of method");
  if (nuq && f.qnorm) refuse("Q-Norm decode levels are not served");
  if (!f.pre_rope) refuse("keys quantized after RoPE (-post) are not served");
  if (f.key_bits != f.value_bits) {
    refuse(fmt::format("expected the same key and value bits, found {} and {}", f.key_bits,
                       f.value_bits));
  }
  const int bits = f.key_bits;
  if (nuq ? (bits < 2 || bits > 4) : (bits != 2 && bits != 4)) {
    fail("kv cache: bits: expected {}, found {}", nuq ? "2, 3 or 4" : "2 or 4 for KIVI", bits);
  }
  if (f.n_sink < 0 || f.n_recent < 0 || f.n_sink > (1 << 20) || f.n_recent > (1 << 20)) {
    fail("kv cache: n_sink, n_recent: expected 0 .. 2^20, found {}, {}", f.n_sink, f.n_recent);
  }
  if (kivi) {
    const int64_t g = f.key_time_group;
    if ((g != 32 && g != 64 && g != 128) || g > head_dim || f.channel_group != g) {
      fail(
          "kv cache: kivi group: expected 32, 64 or 128 tokens and channels, at most head_dim = "
          "{}, found {} and {}",
          head_dim, g, f.channel_group);
    }
    if (f.flush < g || f.flush % g != 0 || f.flush > (1 << 16)) {
      refuse(
          fmt::format("the residual must be a positive multiple of the group {} (at most "
                      "65536), found {}",
                      g, f.flush));
    }
  } else if (f.flush != 1) {
    refuse(fmt::format("KVQuant tokens are quantized one at a time, found flush {}", f.flush));
  }
}

void check_tables(const KvCacheConfig& c, const quant::KvTables* t) {
  if (!t) fail("kv cache: KVQuant needs the layer's tables (quant.h5)");
  quant::check_levels("kv cache: k_levels", t->k_levels, c.bits(), /*in_unit=*/false);
  quant::check_levels("kv cache: v_levels", t->v_levels, c.bits(), /*in_unit=*/false);
  const int64_t n_ch = int64_t{c.n_kv_heads} * c.head_dim;
  if (static_cast<int64_t>(t->k_lo.size()) != n_ch ||
      static_cast<int64_t>(t->k_hi.size()) != n_ch) {
    fail(
        "kv cache: key ranges: expected [n_kv_heads = {}, head_dim = {}] = {} values each, "
        "found {} and {}",
        c.n_kv_heads, c.head_dim, n_ch, t->k_lo.size(), t->k_hi.size());
  }
  quant::check_key_ranges("kv cache: key ranges", t->k_lo, t->k_hi, n_ch);
}

}  // namespace

kernels::KvLayout check_kv_config(KvCacheConfig* c, const quant::KvTables* tables) {
  if (c->head_dim != 64 && c->head_dim != 128) {
    fail("kv cache: head_dim: expected 64 or 128, found {}", c->head_dim);
  }
  check_format(c->format, c->head_dim);
  const bool nuq = c->method() == KvMethod::kNuq;
  if (c->n_kv_heads < 1) fail("kv cache: n_kv_heads: expected >= 1, found {}", c->n_kv_heads);
  if (c->n_q_heads < 1 || c->n_q_heads % c->n_kv_heads != 0 ||
      c->n_q_heads / c->n_kv_heads > kernels::kMaxQueryGroup) {
    fail(
        "kv cache: n_q_heads: expected a multiple of n_kv_heads = {} with at most {} query "
        "heads per KV head, found {}",
        c->n_kv_heads, kernels::kMaxQueryGroup, c->n_q_heads);
  }
  if (c->page_size == 0) c->page_size = kernels::kv_default_page_size(c->bits());
  const int block = kernels::kv_block_tokens(c->bits());
  if (c->page_size < block || c->page_size % block != 0 ||
      (!nuq && c->page_size % c->quant_group() != 0)) {
    fail("kv cache: page_size: expected a positive multiple of {} tokens{}, found {}", block,
         nuq ? "" : " and of the KIVI group", c->page_size);
  }
  if (int64_t{c->page_size} * c->head_dim >= 65536) {
    fail(
        "kv cache: page_size: expected page_size * head_dim < 65536 (outlier index), found "
        "{} * {}",
        c->page_size, c->head_dim);
  }
  if (c->max_batch < 1) fail("kv cache: max_batch: expected >= 1, found {}", c->max_batch);
  if (c->max_seq_len < 1 || c->max_seq_len > (int64_t{1} << 31) - 1) {
    fail("kv cache: max_seq_len: expected 1 .. 2^31 - 1, found {}", c->max_seq_len);
  }
  if (nuq) {
    const double f = c->format.outlier_fraction;
    if (!(f >= 0.0 && f < 1.0))
      fail("kv cache: outlier fraction: expected 0 <= f < 1, found {}", f);
    // A row's entries are indexed by 16-bit fields (kv_layout.h, v_index).
    if (c->v_outliers_per_row() > 65535) {
      fail(
          "kv cache: method '{}': {} value outliers per token ({} values), at most 65535; use a "
          "smaller outlier fraction",
          c->format.method, c->v_outliers_per_row(), c->v_vector_size());
    }
    if (c->k_outlier_capacity == 0 && c->format.key_outliers()) {
      c->k_outlier_capacity = static_cast<int>(
          std::min<int64_t>(65535, kernels::kv_default_k_outlier_capacity(
                                       c->page_size, c->head_dim, c->format.outlier_fraction)));
    }
    if (c->k_outlier_capacity < 0 || c->k_outlier_capacity > 65535) {
      fail("kv cache: k_outlier_capacity: expected 0 .. 65535, found {}", c->k_outlier_capacity);
    }
    check_tables(*c, tables);
  } else {
    c->k_outlier_capacity = 0;
  }
  const int64_t pages_per_seq = (c->max_seq_len + c->page_size - 1) / c->page_size;
  if (c->n_pages == 0) c->n_pages = c->max_batch * pages_per_seq;
  if (c->n_pages < 0) fail("kv cache: n_pages: expected >= 0, found {}", c->n_pages);
  return c->layout();
}

}  // namespace kvq::runtime
