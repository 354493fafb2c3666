// kvq bench kernels: one decode step (one layer) of attention over the compressed KV cache
// against fp16 attention over an fp16 cache, all measured in the same run on LLaMA-7B shapes
// (32 heads, head_dim 128) and a GQA shape (8 KV heads): time (warmup, median of repeats, L2
// flushed before each), bytes read and bits per element, bandwidth against a measured
// device-to-device copy, speedups; and the cost of appending one token at 32K. The fp16
// baselines: our cuBLAS and flash-decoding kernels (attention_fp16.h), and LibTorch's
// scaled_dot_product_attention (SDPA) over the same buffers (needs a CUDA LibTorch 2.x).
// Methods are method strings (methods::parse_method); the cache refuses by name those it cannot
// serve, and the row says why. The compressed caches are filled with valid random content
// (KvCache::fill_random): decode reads the same bytes whatever they hold.
// Not here: end-to-end decoding (kvq generate), the command line (apps/kvq/bench.cpp).
#include "kernels_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "attention_fp16.h"
#include "kvq/common/error.h"
#include "kvq/methods/method.h"
#include "kvq/quant/rope.h"
#include "kvq/runtime/device_buffer.h"
#include "kvq/runtime/kv_cache.h"
#include "kvq/runtime/cache_config.h"

// SDPA on the GPU needs LibTorch 2.x built with CUDA. KVQ_TORCH_CUDA tells the latter: Debian's
// CPU LibTorch ships c10/cuda headers too (incomplete, and no library behind them).
#if TORCH_VERSION_MAJOR >= 2 && defined(KVQ_TORCH_CUDA)
#define KVQ_BENCH_SDPA 1
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace kvq::bench {
namespace {

using runtime::KvAttentionKernel;
using runtime::KvAttentionParams;
using runtime::KvCache;
using runtime::KvCacheConfig;

void check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    fail("bench kernels: {}: {}", what, cudaGetErrorString(err));
  }
}

class Gpu {
 public:
  Gpu() {
    check(cudaStreamCreate(&stream_), "stream");
    if (cublasCreate(&cublas_) != CUBLAS_STATUS_SUCCESS) fail("bench kernels: cublasCreate failed");
    cublasSetStream(cublas_, stream_);
    check(cudaEventCreate(&e0_), "event");
    check(cudaEventCreate(&e1_), "event");
    check(cudaGetDevice(&device_), "device");
    check(cudaGetDeviceProperties(&prop_, device_), "device properties");
    flush_bytes_ = std::max<size_t>(size_t{2} * prop_.l2CacheSize, size_t{64} << 20);
    check(cudaMalloc(&flush_, flush_bytes_), "L2 flush buffer");
  }
  ~Gpu() {
    cudaFree(flush_);
    cudaEventDestroy(e0_);
    cudaEventDestroy(e1_);
    cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
  }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  int device() const { return device_; }
  const cudaDeviceProp& prop() const { return prop_; }

  // Median milliseconds of fn over repeats; L2 flushed before each (the flush also keeps the
  // GPU busy while the host queues the timed work, so launch gaps stay out of the numbers).
  template <typename F>
  double time_ms(int warmup, int repeats, F&& fn) {
    for (int i = 0; i < warmup; ++i) fn();
    check(cudaStreamSynchronize(stream_), "warmup");
    std::vector<float> ms;
    for (int i = 0; i < repeats; ++i) {
      check(cudaMemsetAsync(flush_, i & 0xFF, flush_bytes_, stream_), "flush");
      check(launch_gpu_sleep(20, stream_), "sleep");
      check(cudaEventRecord(e0_, stream_), "event");
      fn();
      check(cudaEventRecord(e1_, stream_), "event");
      check(cudaEventSynchronize(e1_), "timed work");
      float t = 0.0f;
      check(cudaEventElapsedTime(&t, e0_, e1_), "elapsed");
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudaEvent_t e0_ = nullptr, e1_ = nullptr;
  int device_ = 0;
  cudaDeviceProp prop_{};
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
};

template <typename T>
using Buf = runtime::DeviceBuffer<T>;

size_t free_memory() {
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) (void)cudaGetLastError();
  return free;
}

// Relative L2 error of x against ref, n halves each on the device.
double rel_l2(const __half* x, const __half* ref, size_t n) {
  std::vector<__half> a(n), b(n);
  check(cudaMemcpy(a.data(), x, n * 2, cudaMemcpyDeviceToHost), "read");
  check(cudaMemcpy(b.data(), ref, n * 2, cudaMemcpyDeviceToHost), "read");
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double y = __half2float(b[i]), d = __half2float(a[i]) - y;
    num += d * d;
    den += y * y;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Why LibTorch's SDPA cannot run here; empty when it can.
std::string sdpa_unavailable() {
#if TORCH_VERSION_MAJOR < 2
  return fmt::format("LibTorch {}.{} has no SDPA", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR);
#elif !defined(KVQ_BENCH_SDPA)
  return "LibTorch without CUDA";
#else
  return at::hasCUDA() ? "" : "LibTorch without CUDA";
#endif
}

#ifdef KVQ_BENCH_SDPA
// at::scaled_dot_product_attention over p's fp16 buffers, wrapped in place (from_blob, no
// copies): q as [batch][n_q_heads][1][head_dim]; k and v as the cache holds them,
// [batch][n_kv_heads][n_tokens][head_dim], already SDPA's [N, H, L, E]. Runs on LibTorch's
// current stream.
at::Tensor sdpa_attention(const Fp16AttentionParams& p, int device) {
  const auto half = at::TensorOptions().dtype(at::kHalf).device(at::kCUDA, device);
  const auto wrap = [&](const __half* x, int64_t heads, int64_t rows) {
    return at::from_blob(const_cast<__half*>(x), {p.batch, heads, rows, p.head_dim}, half);
  };
  const at::Tensor k = wrap(p.k, p.n_kv_heads, p.n_tokens), v = wrap(p.v, p.n_kv_heads, p.n_tokens);
#if TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 5
  // GQA: query head h reads KV head h / group, as in our kernels. The flash and cuDNN backends
  // read the shared KV head in place; only the math fallback would repeat it.
  return at::scaled_dot_product_attention(wrap(p.q, p.n_q_heads, 1), k, v, {}, 0.0, false,
                                          std::nullopt, /*enable_gqa=*/p.n_q_heads != p.n_kv_heads);
#else
  // No enable_gqa before 2.5, and k.expand() to n_q_heads then reshape() would copy (a stride-0
  // group dimension does not merge into a view). So a group's query heads ride as query rows of
  // their KV head, [batch][n_kv_heads][group][head_dim]: the same bytes as q and as the output.
  return at::scaled_dot_product_attention(wrap(p.q, p.n_kv_heads, p.n_q_heads / p.n_kv_heads), k,
                                          v);
#endif
}
#endif

// Copy bandwidth: bytes read plus bytes written per second of a large device-to-device copy.
double copy_gbs(Gpu& gpu) {
  const size_t bytes = size_t{1} << 30;
  Buf<uint8_t> a(bytes), b(bytes);
  check(cudaMemset(a.data(), 1, bytes), "memset");
  const double ms = gpu.time_ms(2, 7, [&] {
    check(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, gpu.stream()),
          "copy");
  });
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

struct Shape {
  std::string name;
  int n_q, n_kv, head_dim;
};

struct Row {
  std::string shape, method;
  int batch = 0;
  int64_t context = 0;
  double ms = -1, bytes = 0, bits = 0, gbs = 0, pct_copy = 0, x_cublas = 0, x_flash = 0, x_sdpa = 0,
         append_ms = -1;
  std::string note;
  Row(std::string s, std::string m, int b, int64_t t)
      : shape(std::move(s)), method(std::move(m)), batch(b), context(t) {}
};

// Levels and key ranges of the right shapes (decode reads the same bytes whatever they hold).
quant::KvTables bench_tables(int bits, int n_kv, int head_dim) {
  quant::KvTables t;
  for (int i = 0; i < (1 << bits); ++i) {
    const float x = -1.0f + 2.0f * i / ((1 << bits) - 1);
    t.k_levels.push_back(x * std::abs(x));
    t.v_levels.push_back(x);
  }
  t.k_lo.assign(static_cast<size_t>(n_kv) * head_dim, -1.5f);
  t.k_hi.assign(t.k_lo.size(), 1.5f);
  return t;
}

}  // namespace

void run_kernels_bench(const KernelsBenchOptions& f) {
  std::vector<methods::MethodSpec> specs;
  for (const auto& m : f.methods) specs.push_back(methods::parse_method(m));
  std::vector<Shape> shapes;
  for (const auto& s : f.shapes) {
    if (s == "mha")
      shapes.push_back({"mha", 32, 32, 128});
    else if (s == "gqa")
      shapes.push_back({"gqa", 32, 8, 128});
    else
      fail("--shapes: '{}': expected mha (32 heads) or gqa (32 query, 8 KV heads)", s);
  }
  if (f.repeats < 1 || f.warmup < 0) fail("--repeats, --warmup: expected >= 1 and >= 0");
  Gpu gpu;
  const double copy = copy_gbs(gpu);
  std::fprintf(stderr, "bench kernels: %s, copy %.0f GB/s\n", gpu.prop().name, copy);
  std::vector<Row> rows;
  for (const Shape& sh : shapes) {
    const int D = sh.head_dim;
    const std::vector<float> inv_host = quant::rope_inv_freq(10000.0, D);
    Buf<float> inv_freq(inv_host.size());
    check(cudaMemcpy(inv_freq.data(), inv_host.data(), inv_host.size() * 4, cudaMemcpyHostToDevice),
          "upload");
    for (const int batch : f.batches) {
      Buf<__half> q(static_cast<size_t>(batch) * sh.n_q * D), out(q.size()), out2(q.size());
      check(launch_fill_random_half(q.data(), static_cast<int64_t>(q.size()), 7, gpu.stream()),
            "fill q");
      for (const int64_t T : f.contexts) {
        std::fprintf(stderr, "bench kernels: %s batch %d context %lld\n", sh.name.c_str(), batch,
                     static_cast<long long>(T));
        const double elems = 2.0 * batch * sh.n_kv * static_cast<double>(T) * D;  // K and V
        Row cub(sh.name, "fp16 cuBLAS", batch, T), fla(sh.name, "fp16 flash", batch, T),
            sdpa(sh.name, "fp16 SDPA", batch, T);
        const size_t fp16_bytes = static_cast<size_t>(elems) * 2;
        const size_t score_bytes = static_cast<size_t>(batch) * sh.n_q * T * 6;
        if (fp16_bytes + score_bytes + (size_t{4} << 30) < free_memory()) {
          Buf<__half> k(static_cast<size_t>(elems / 2)), v(k.size());
          Buf<float> scores(static_cast<size_t>(batch) * sh.n_q * T);
          Buf<__half> probs(scores.size());
          check(launch_fill_random_half(k.data(), static_cast<int64_t>(k.size()), 1, gpu.stream()),
                "fill");
          check(launch_fill_random_half(v.data(), static_cast<int64_t>(v.size()), 2, gpu.stream()),
                "fill");
          Fp16AttentionParams p;
          p.batch = batch;
          p.n_kv_heads = sh.n_kv;
          p.n_q_heads = sh.n_q;
          p.head_dim = D;
          p.n_tokens = T;
          p.q = q.data();
          p.k = k.data();
          p.v = v.data();
          p.scores = scores.data();
          p.probs = probs.data();
          p.n_splits = fp16_flash_splits(batch, sh.n_kv, T);
          Buf<float> part(static_cast<size_t>(batch) * sh.n_q * p.n_splits * (D + 2));
          p.part = part.data();
          p.out = out.data();
          cub.ms = gpu.time_ms(f.warmup, f.repeats, [&] {
            check(launch_fp16_cublas_attention(p, gpu.cublas(), gpu.stream()), "cuBLAS attention");
          });
          p.out = out2.data();
          fla.ms = gpu.time_ms(f.warmup, f.repeats, [&] {
            check(launch_fp16_flash_decode(p, gpu.stream()), "flash attention");
          });
          const double rel = rel_l2(out2.data(), out.data(), q.size());
          // Past ~16K tokens the cuBLAS path's fp16 probabilities (~1/T on these near-uniform
          // scores) are subnormal and partly flushed, so only shorter contexts cross-check.
          if (T <= 16384 && !(rel < 2e-2))
            fla.note = fmt::format("differs from cuBLAS by {:.1e}", rel);
          sdpa.note = sdpa_unavailable();
#ifdef KVQ_BENCH_SDPA
          if (sdpa.note.empty()) {
            // LibTorch on our stream: its kernels, and its allocator's blocks for the output.
            const c10::cuda::CUDAStreamGuard on_stream(c10::cuda::getStreamFromExternal(
                gpu.stream(), static_cast<c10::DeviceIndex>(gpu.device())));
            try {
              at::Tensor o;
              sdpa.ms =
                  gpu.time_ms(f.warmup, f.repeats, [&] { o = sdpa_attention(p, gpu.device()); });
              o = o.contiguous();
              const double rel_sdpa =
                  rel_l2(static_cast<const __half*>(o.data_ptr()), out2.data(), q.size());
              if (!(rel_sdpa < 2e-2))
                sdpa.note = fmt::format("differs from flash by {:.1e}", rel_sdpa);
            } catch (const c10::Error& e) {
              sdpa.note = fmt::format("SDPA failed: {}", e.what_without_backtrace());
            }
            c10::cuda::CUDACachingAllocator::emptyCache();  // free_memory() then counts its blocks
          }
#endif
          for (Row* r : {&cub, &fla, &sdpa}) {
            if (r->ms <= 0) continue;
            r->bytes = static_cast<double>(fp16_bytes);
            r->bits = 16;
            r->gbs = r->bytes / (r->ms * 1e-3) / 1e9;
            r->pct_copy = 100.0 * r->gbs / copy;
          }
        } else {
          cub.note = fla.note = sdpa.note = "fp16 cache does not fit";
        }
        rows.push_back(cub);
        rows.push_back(fla);
        rows.push_back(sdpa);
        for (const methods::MethodSpec& m : specs) {
          Row r(sh.name, m.name(), batch, T);
          try {
            KvCacheConfig c;
            c.format = m.kv_format();
            c.head_dim = D;
            c.n_kv_heads = sh.n_kv;
            c.n_q_heads = sh.n_q;
            c.max_batch = batch;
            c.max_seq_len = T + 64;
            const quant::KvTables tables = bench_tables(m.key_bits, sh.n_kv, D);
            KvCache cache(c, &tables);
            const double k_fraction = c.format.key_outliers() ? c.format.outlier_fraction : 0.0;
            cache.fill_random(std::vector<int64_t>(batch, T), k_fraction, 11, gpu.stream());
            const KvAttentionParams p = cache.attention_params(
                q.data(), false, out.data(), inv_freq.data(), KvAttentionKernel::kMma);
            r.ms = gpu.time_ms(f.warmup, f.repeats, [&] {
              check(kernels::launch_kv_attention(p, KvAttentionKernel::kMma, gpu.stream()),
                    "attention");
            });
            r.bytes = static_cast<double>(cache.attention_bytes(k_fraction));
            r.bits = 8.0 * r.bytes / elems;
            const double best = r.ms;
            r.gbs = r.bytes / (best * 1e-3) / 1e9;
            r.pct_copy = 100.0 * r.gbs / copy;
            if (cub.ms > 0) r.x_cublas = cub.ms / best;
            if (fla.ms > 0) r.x_flash = fla.ms / best;
            if (sdpa.ms > 0) r.x_sdpa = sdpa.ms / best;
            if (T == 32768) {
              Buf<__half> kn(static_cast<size_t>(batch) * sh.n_kv * D), vn(kn.size());
              check(launch_fill_random_half(kn.data(), static_cast<int64_t>(kn.size()), 3,
                                            gpu.stream()),
                    "fill");
              check(launch_fill_random_half(vn.data(), static_cast<int64_t>(vn.size()), 4,
                                            gpu.stream()),
                    "fill");
              r.append_ms = gpu.time_ms(2, std::min(f.repeats, 40),
                                        [&] { cache.append(kn.data(), vn.data(), gpu.stream()); });
            }
          } catch (const Error& e) {
            r.note = e.what();
          }
          rows.push_back(r);
        }
      }
    }
  }
  nlohmann::json j;
  {
    j["device"] = gpu.prop().name;
    j["sms"] = gpu.prop().multiProcessorCount;
    j["copy_gbs"] = copy;
    j["warmup"] = f.warmup;
    j["repeats"] = f.repeats;
    for (const Row& r : rows) {
      nlohmann::json x = {{"shape", r.shape},
                          {"batch", r.batch},
                          {"context", r.context},
                          {"method", r.method},
                          {"ms", r.ms},
                          {"bytes", r.bytes},
                          {"bits_per_element", r.bits},
                          {"gbs", r.gbs},
                          {"pct_copy", r.pct_copy},
                          {"speedup_cublas", r.x_cublas},
                          {"speedup_flash", r.x_flash},
                          {"speedup_sdpa", r.x_sdpa},
                          {"append_ms", r.append_ms},
                          {"note", r.note}};
      j["results"].push_back(x);
    }
  }
  if (!f.json_file.empty()) {
    std::FILE* out = std::fopen(f.json_file.c_str(), "w");
    if (!out) fail("--json-file: cannot write {}", f.json_file);
    std::fputs(j.dump(2).c_str(), out);
    std::fclose(out);
  }
  if (f.json) {
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("device: {} ({} SMs), device-to-device copy {:.0f} GB/s (read + write)\n\n",
             gpu.prop().name, gpu.prop().multiProcessorCount, copy);
  fmt::print(
      "| shape | batch | context | method | ms | bits/elem | MB read | GB/s | % copy | x cuBLAS | "
      "x flash | x SDPA | append ms | note |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  auto num = [](double x, int precision) {
    return x > 0 ? fmt::format("{:.{}f}", x, precision) : std::string("-");
  };
  for (const Row& r : rows) {
    fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r.shape,
               r.batch, r.context, r.method, num(r.ms, 4), num(r.bits, 2), num(r.bytes / 1e6, 1),
               num(r.gbs, 0), num(r.pct_copy, 0), num(r.x_cublas, 2), num(r.x_flash, 2),
               num(r.x_sdpa, 2), num(r.append_ms, 4), r.note);
  }
}

}  // namespace kvq::bench
