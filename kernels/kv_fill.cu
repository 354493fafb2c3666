// launch_kv_fill_random (kv_append.h): a cache of any length with valid random content, for the
// benchmark (a million-token prefill is not what a decode step should be timed after) and for
// attention tests on long contexts. Decode attention reads the same bytes whatever they hold, so
// only the amount of each part matters: codes, scales, a token's whole value-outlier budget (for
// values per token over all KV heads, the token's 2k outliers spread over its heads), and key
// outliers spread evenly at the requested fraction.
//
// Grid: (max_pages + 1, n_kv_heads, batch) blocks of 256 threads; block x < max_pages fills
// page x of the sequence, block x = max_pages the sink and ring rows.
#include "kv_append.h"

#include "kv_device.cuh"

namespace kvq::kernels {
namespace {

__device__ __forceinline__ uint32_t mix(uint32_t a, uint32_t b) {
  uint32_t h = a * 0x9E3779B1u ^ (b + 0x7F4A7C15u + (a << 6) + (a >> 2));
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}
__device__ __forceinline__ float unit(uint32_t h) { return (h >> 8) * (1.0f / 16777216.0f); }
__device__ __forceinline__ uint16_t rand_half(uint32_t h, float lo, float hi) {
  return __half_as_ushort(__float2half_rn(lo + (hi - lo) * unit(h)));
}
__device__ __forceinline__ uint32_t half_pair(uint16_t lo, uint16_t hi) {
  return uint32_t{lo} | (uint32_t{hi} << 16);
}

__global__ void kv_fill_kernel(KvCacheView c, int64_t max_pages, uint32_t k_out_per_million,
                               uint32_t seed) {
  const KvLayout& L = c.layout;
  const int D = L.head_dim, C = L.codes_per_word;
  const int b = blockIdx.z, h = blockIdx.y;
  const uint32_t base = mix(mix(seed, b), mix(h, blockIdx.x));
  const int64_t n = c.seq_len[b];
  const int64_t nq = c.n_quant(n);
  if (blockIdx.x == max_pages) {
    for (int64_t i = threadIdx.x; i < int64_t{c.ring_size} * D; i += blockDim.x) {
      const int64_t r = i / D, ch = i % D;
      __half* k = c.ring_k + ((int64_t{b} * c.n_kv_heads + h) * c.ring_size + r) * D;
      __half* v = c.ring_v + ((int64_t{b} * c.n_kv_heads + h) * c.ring_size + r) * D;
      k[ch] = __ushort_as_half(rand_half(mix(base, 2 * i), -1.0f, 1.0f));
      v[ch] = __ushort_as_half(rand_half(mix(base, 2 * i + 1), -1.0f, 1.0f));
    }
    for (int64_t i = threadIdx.x; i < int64_t{c.n_sink} * D; i += blockDim.x) {
      __half* k = c.sink_k + (int64_t{b} * c.n_kv_heads + h) * c.n_sink * D;
      __half* v = c.sink_v + (int64_t{b} * c.n_kv_heads + h) * c.n_sink * D;
      k[i] = __ushort_as_half(rand_half(mix(~base, 2 * i), -1.0f, 1.0f));
      v[i] = __ushort_as_half(rand_half(mix(~base, 2 * i + 1), -1.0f, 1.0f));
    }
    return;
  }
  const int64_t p0 = int64_t{blockIdx.x} * L.page_size;
  const int rows = static_cast<int>(min(int64_t{L.page_size}, nq - p0));
  if (rows <= 0) return;
  int unused;
  uint8_t* sec = dev::quant_section(c, b, h, p0, &unused);
  const uint32_t used = C * L.bits == 32 ? 0xFFFFFFFFu : (1u << (C * L.bits)) - 1u;
  uint32_t* kw = reinterpret_cast<uint32_t*>(sec + L.off_k_codes);
  for (int i = threadIdx.x; i < rows * L.k_row_words; i += blockDim.x) {
    const int word = i % L.k_row_words;
    uint32_t mask = used;
    for (int s = 0; s < C; ++s) {
      if (word * C + s >= D) mask &= ~(((1u << L.bits) - 1u) << (L.bits * s));
    }
    kw[i] = mix(base, 0x10000000u + i) & mask;
  }
  const int v_words = (rows + C - 1) / C;
  uint32_t* vw = reinterpret_cast<uint32_t*>(sec + L.off_v_codes);
  for (int i = threadIdx.x; i < D * v_words; i += blockDim.x) {
    vw[int64_t{i / v_words} * L.v_row_words + i % v_words] = mix(base, 0x20000000u + i) & used;
  }
  if (L.method == KvMethod::kKivi) {
    uint32_t* kp = reinterpret_cast<uint32_t*>(sec + L.off_k_params);
    for (int i = threadIdx.x; i < rows / L.group * D; i += blockDim.x) {
      const uint32_t hh = mix(base, 0x30000000u + i);
      kp[i] = i % 2 == 0 ? half_pair(rand_half(hh, 0.01f, 0.05f), rand_half(hh >> 7, 0.01f, 0.05f))
                         : half_pair(rand_half(hh, -0.1f, 0.0f), rand_half(hh >> 7, -0.1f, 0.0f));
    }
    uint32_t* vp = reinterpret_cast<uint32_t*>(sec + L.off_v_params);
    for (int i = threadIdx.x; i < rows * (D / L.group); i += blockDim.x) {
      const uint32_t hh = mix(base, 0x40000000u + i);
      vp[i] = half_pair(rand_half(hh, 0.01f, 0.05f), rand_half(hh >> 7, -0.1f, 0.0f));
    }
    return;
  }
  // Values: scales per value vector (head 0's block writes the token's for values over all KV
  // heads), and the row's outlier entries filled: values per token over all heads deal the
  // token's 2k outliers round-robin (outlier i to head i mod n_kv_heads), so head h holds
  // ceil((2k - h) / n_kv_heads) after those of the heads before it; per head, 2k each at h * 2k.
  int64_t page;
  {
    int unused;
    page = dev::quant_page(c, b, p0, &unused);
  }
  uint8_t* tok = c.token_section(page);
  if (!c.v_token || h == 0) {
    uint32_t* vs = reinterpret_cast<uint32_t*>(tok + L.off_v_scales) +
                   int64_t{c.v_token ? 0 : h} * L.page_size;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) {
      const uint32_t hh = mix(base, 0x50000000u + r);
      vs[r] = half_pair(rand_half(hh, 0.02f, 0.1f), rand_half(hh >> 7, -0.05f, 0.05f));
    }
  }
  const int slots = kv_v_head_slots(L);
  int used_slots = slots, v_begin = h * slots;
  if (c.v_token) {
    const int H = c.n_kv_heads;
    v_begin = 0;
    for (int hh = 0; hh < h; ++hh) v_begin += (slots - hh + H - 1) / H;
    used_slots = (slots - h + H - 1) / H;  // <= head_dim since 2k < H * D
  }
  uint32_t* vi = reinterpret_cast<uint32_t*>(sec + L.off_v_index);
  uint32_t* vo = reinterpret_cast<uint32_t*>(tok + L.off_v_out);
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    vi[r] = static_cast<uint32_t>(v_begin) | (static_cast<uint32_t>(used_slots) << 16);
  }
  for (int i = threadIdx.x; i < rows * used_slots; i += blockDim.x) {
    const int r = i / used_slots, j = i % used_slots;
    const uint32_t hh = mix(base, 0x60000000u + i);
    const int ch = j * (D / used_slots) + static_cast<int>(hh % (D / used_slots));
    const float sign = (hh >> 31) ? -1.0f : 1.0f;
    vo[int64_t{r} * L.v_out_per_row + v_begin + j] =
        (static_cast<uint32_t>(r * D + ch) << 16) | rand_half(hh >> 3, 0.5f * sign, 2.0f * sign);
  }
  const int64_t cells = int64_t{rows} * D;
  const int count = static_cast<int>(
      min(int64_t{L.k_out_capacity}, (cells * k_out_per_million + 500000) / 1000000));
  uint32_t* ko = reinterpret_cast<uint32_t*>(sec + L.off_k_out);
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t idx = int64_t{i} * cells / count;
    const uint32_t hh = mix(base, 0x70000000u + i);
    const float sign = (hh >> 31) ? -1.0f : 1.0f;
    ko[i] = (static_cast<uint32_t>(idx) << 16) | rand_half(hh, 1.0f * sign, 3.0f * sign);
  }
  if (threadIdx.x == 0) *reinterpret_cast<int32_t*>(sec + L.off_header) = count;
  uint16_t* begin = reinterpret_cast<uint16_t*>(sec + L.off_header + 4);
  for (int bi = threadIdx.x; bi * L.block_tokens < rows; bi += blockDim.x) {
    const int64_t x = int64_t{bi} * L.block_tokens * D;
    begin[bi] = static_cast<uint16_t>(count == 0 ? 0 : (x * count + cells - 1) / cells);
  }
}

}  // namespace

cudaError_t launch_kv_fill_random(const KvCacheView& cache, int batch, int64_t max_pages,
                                  double k_outlier_fraction, uint32_t seed, cudaStream_t stream) {
  if (batch < 0 || max_pages < 0 || max_pages > 65534 || !cache.pool || !cache.seq_len ||
      !cache.page_table || !(k_outlier_fraction >= 0.0 && k_outlier_fraction < 1.0)) {
    return cudaErrorInvalidValue;
  }
  if (batch == 0) return cudaSuccess;
  kv_fill_kernel<<<dim3(static_cast<unsigned>(max_pages + 1), cache.n_kv_heads, batch), 256, 0,
                   stream>>>(cache, max_pages,
                             static_cast<uint32_t>(k_outlier_fraction * 1e6 + 0.5), seed);
  return cudaGetLastError();
}

}  // namespace kvq::kernels
