// What the CUDA compressed cache serves, checked in one place before anything is allocated: the
// method's format (quant::KvCacheFormat, from methods::Quantizer::kv_format), the shapes and the
// layer's fitted tables. Everything else is refused by name with one kvq::Error line, e.g.
// "kv cache: head_dim: expected 64 or 128, found 96" or "kv cache: method 'skvq-k2-v2-g128-w128':
// ...". Host code only (no GPU needed), so CI checks every refusal.
#pragma once

#include "kv_config.h"
#include "kv_layout.h"
#include "kvq/quant/kv_cache_format.h"

namespace kvq::runtime {

// The method forms the cache holds, for messages and --help.
inline constexpr const char* kCacheMethods =
    "nuqB[-P%][-sink[N]][-vhead] (B 2..4) and kiviB[-gG][-rR] (B 2 or 4, G 32/64/128, R a positive "
    "multiple of G)";

// Checks `config` (and `tables`, which KVQuant needs and KIVI ignores), fills the defaults
// (page_size, k_outlier_capacity, n_pages) and returns the page layout.
kernels::KvLayout check_kv_config(kernels::KvCacheConfig* config, const quant::KvTables* tables);

}  // namespace kvq::runtime
