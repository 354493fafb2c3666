// Quantize-on-append into the compressed KV cache (kv_layout.h): one decode step for every
// sequence of a batch, and prefill of whole prompts in one launch. KVQuant (nuq, outliers) and
// KIVI (uniform groups) as kv_format.h defines them; CPU twin: kv_quantize_ref (kv_ref.h).
// Raw device pointers, work queued on `stream`; the pages must already be in the page table
// (kv_cache.h allocates them). Layout details and versions: kv_append.cu.
#pragma once

#include <cstdint>

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "kv_layout.h"

namespace kvq::kernels {

// Appends token n_b (n_b = cache.seq_len[b], only read) of every sequence b < batch: writes it
// to the sink or the recent window, quantizes what leaves the window into its page (KVQuant: one
// token; KIVI: the full residual, cache.flush tokens) and writes seq_len_out[b] = n_b + 1 (a
// buffer other than cache.seq_len; the caller then uses it as the lengths), all in one launch.
// The page of every token that gets quantized must be mapped. Returns cudaErrorInvalidValue for
// a bad batch or null pointers, cudaErrorNotSupported for a bits/head_dim/method the kernels
// were not built for; else the launch's error.
cudaError_t launch_kv_append(const KvCacheView& cache, int batch,
                             const __half* __restrict__ k,       // [batch][n_kv_heads][head_dim]
                             const __half* __restrict__ v,       // [batch][n_kv_heads][head_dim]
                             int32_t* __restrict__ seq_len_out,  // [batch]
                             cudaStream_t stream);

// Fills empty sequences b < batch with prompts of lengths[b] tokens (device array, each at most
// max_tokens; pages for every quantized token mapped) and sets seq_len[b] = lengths[b].
// max_pages: the most pages any sequence quantizes into (ceil(n_quant / page_size)).
cudaError_t launch_kv_prefill(
    const KvCacheView& cache, int batch, int64_t max_tokens, int64_t max_pages,
    const int32_t* __restrict__ lengths,  // [batch]
    const __half* __restrict__ k,         // [batch][max_tokens][n_kv_heads][head_dim]
    const __half* __restrict__ v, cudaStream_t stream);

// Test and benchmark helper: fills the quantized pages of every sequence with valid random
// content (codes, fp16 scales, about `outlier_fraction` key outliers per page and the value
// outlier slots) and the fp16 tokens with random values, as a cache of seq_len tokens would
// hold; seq_len must be set and the pages mapped. Deterministic in `seed`.
cudaError_t launch_kv_fill_random(const KvCacheView& cache, int batch, int64_t max_pages,
                                  double k_outlier_fraction, uint32_t seed, cudaStream_t stream);

}  // namespace kvq::kernels
