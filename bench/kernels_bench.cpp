// kvq bench kernels: one decode step (one layer) of attention over the compressed KV cache
// against fp16 attention over an fp16 cache, all measured in the same run on LLaMA-7B shapes
// (32 heads, head_dim 128) and a GQA shape (8 KV heads): time (warmup, median of repeats, L2
// flushed before each), bytes read and bits per element, bandwidth against a measured
// device-to-device copy and against a read roofline, speedups; and at 32K the cost of appending
// one token, alone and as part of the step (the append, then the kernel). One row per kernel per
// shape. The fp16 baselines: our cuBLAS and flash-decoding kernels (attention_fp16.h), and
// LibTorch's scaled_dot_product_attention (SDPA) over the same buffers (needs a CUDA LibTorch
// 2.x); the compressed cache: every --versions kernel that serves the method (v1 simple: all; v2
// mma: KIVI; v3 two-phase: KVQuant) of every method. Methods are method strings
// (methods::parse_method); the cache refuses by name those it cannot serve, and the row says why.
//
// Inputs. fp16 caches hold uniform random keys and values in [-1, 1); compressed caches valid
// random codes, scales and outliers (KvCache::fill_random: decode reads the same bytes whatever
// they hold). The queries are one seeded N(0, 1) draw per shape and batch, the same for every
// kernel over a cache, scaled per cache by kScoreStd / (RMS of its keys) so that the scores have
// a standard deviation of ~4 over the tokens: peaked attention (~8 heavy tokens at 4K, ~70 at
// 1M), outputs far from zero, every score mattering. Unscaled queries gave near-uniform
// attention, outputs near zero, and relative errors that meant little.
//
// Check. Every timed output is compared with fp64 attention over the same cache on the GPU
// (attention_fp64.h): the fp16 cache as stored, without RoPE, as the fp16 baselines define it;
// a compressed cache through KvCache::dequantize, with RoPE and GQA as kv_attention_ref. The
// output buffer is poisoned (NaN) before each kernel. Relative L2 over the tensor and the worst
// row (sequence, query head); past kOutputBound (kernels_report.h, with the reasoning) the row is
// WRONG: no time, no figure derived from it, counted, and the command exits 1 at the end.
//
// Roofline. For each cache, a kernel reading exactly the bytes its decode step reads (16-byte
// loads over one buffer, the grid filling the GPU; launch_read_bytes), timed like the others;
// % roofline = roofline ms / kernel ms.
// Not here: end-to-end decoding (kvq generate), the command line (apps/kvq/bench.cpp), the
// table and JSON (kernels_report.h).
#include "kernels_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "attention_fp16.h"
#include "attention_fp64.h"
#include "cublas_loader.h"
#include "kernels_report.h"
#include "kvq/artifact/atomic_file.h"
#include "kvq/common/error.h"
#include "kvq/methods/method.h"
#include "kvq/quant/rope.h"
#include "kvq/runtime/device_buffer.h"
#include "kvq/runtime/kv_cache.h"
#include "kvq/runtime/cache_config.h"
#include "kv_score_probe.h"

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

// The appends timed at 32K: each timing (the append alone, then the append and the step of each
// timed kernel version: at most three, --versions refusing a repeat) appends kAppendWarmup +
// kAppendRepeats tokens, which the cache's kAppendRoom tokens past the context hold.
constexpr int kAppendWarmup = 2;
constexpr int kAppendRepeats = 40;  // or --repeats, if fewer
constexpr int kAppendRoom = 256;
static_assert((1 + 3) * (kAppendWarmup + kAppendRepeats) <= kAppendRoom, "room for the appends");

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
    if (cublas_api().create(&cublas_) != CUBLAS_STATUS_SUCCESS)
      fail("bench kernels: cublasCreate failed");
    cublas_api().set_stream(cublas_, stream_);
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
    cublas_api().destroy(cublas_);
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

// n fp16 values from the device as floats (after the stream's work).
std::vector<float> read_half(const __half* x, size_t n, cudaStream_t stream) {
  check(cudaStreamSynchronize(stream), "output");
  std::vector<__half> h(n);
  check(cudaMemcpy(h.data(), x, n * 2, cudaMemcpyDeviceToHost), "read output");
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __half2float(h[i]);
  return out;
}

float as_float(float x) { return x; }
float as_float(__half x) { return __half2float(x); }

// Root mean square of the first rows of one (sequence, KV head)'s keys, fp32 or fp16 on the
// device: what the queries are scaled by (set_queries).
template <typename T>
double key_rms(const T* k, int64_t n_tokens, int head_dim) {
  const size_t n = static_cast<size_t>(std::min<int64_t>(n_tokens, 4096)) * head_dim;
  std::vector<T> h(n);
  check(cudaMemcpy(h.data(), k, n * sizeof(T), cudaMemcpyDeviceToHost), "read keys");
  double sum = 0.0;
  for (const T& x : h) {
    const double y = as_float(x);
    sum += y * y;
  }
  return std::sqrt(sum / static_cast<double>(n));
}

// The queries of every kernel over one cache: the shape's seeded N(0, 1) direction `unit`
// [batch][n_q_heads][head_dim] times kScoreStd / key_rms, as fp16. Each score is then a sum of
// head_dim products of that scale, with a standard deviation of ~kScoreStd over the tokens.
void set_queries(const std::vector<float>& unit, double key_rms, __half* q, cudaStream_t stream) {
  const double scale = key_rms > 0 && std::isfinite(key_rms) ? kScoreStd / key_rms : kScoreStd;
  std::vector<__half> h(unit.size());
  for (size_t i = 0; i < unit.size(); ++i)
    h[i] = __float2half_rn(static_cast<float>(unit[i] * scale));
  check(cudaStreamSynchronize(stream), "queries");
  check(cudaMemcpy(q, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "upload queries");
}

// The fp64 reference of one shape, batch and context (attention_fp64.h), one (sequence, KV head)
// at a time so that the fp32 rows of a compressed cache take 2 x context x head_dim floats
// whatever the batch and heads; the buffers serve every cache of the cell.
class Reference {
 public:
  Reference(int batch, const Shape& sh, int64_t n_tokens)
      : batch_(batch),
        sh_(sh),
        n_(n_tokens),
        scores_(static_cast<size_t>(sh.n_q / sh.n_kv) * n_tokens, "fp64 scores"),
        part_(static_cast<size_t>(sh.n_q / sh.n_kv) * fp64_attention_chunks(n_tokens) *
                  (sh.head_dim + 2),
              "fp64 partial sums"),
        out_(static_cast<size_t>(batch) * sh.n_q * sh.head_dim, "fp64 output") {}

  // Over an fp16 cache, k and v [batch][n_kv][n_tokens][head_dim], no RoPE (the baselines').
  std::vector<double> fp16(const __half* q, const __half* k, const __half* v, cudaStream_t stream) {
    for (int b = 0; b < batch_; ++b) {
      for (int h = 0; h < sh_.n_kv; ++h) {
        Fp64AttentionParams p = params(q, b, h);
        const size_t off = (static_cast<size_t>(b) * sh_.n_kv + h) * n_ * sh_.head_dim;
        p.k16 = k + off;
        p.v16 = v + off;
        check(launch_fp64_attention(p, stream), "fp64 reference");
      }
    }
    return result(stream);
  }

  // Over a compressed cache's dequantized rows (KvCache::dequantize), RoPE as kv_attention_ref.
  std::vector<double> compressed(const KvCache& cache, const __half* q, const float* inv_freq,
                                 cudaStream_t stream) {
    for (int b = 0; b < batch_; ++b) {
      KVQ_CHECK(cache.length(b) == n_, "sequence {} holds {} tokens, not {}", b, cache.length(b),
                n_);
      for (int h = 0; h < sh_.n_kv; ++h) {
        cache.dequantize(b, h, k32().data(), v32().data(), stream);
        Fp64AttentionParams p = params(q, b, h);
        p.k32 = k32_.data();
        p.v32 = v32_.data();
        p.inv_freq = inv_freq;
        check(launch_fp64_attention(p, stream), "fp64 reference");
      }
    }
    return result(stream);
  }

  // fp32 rows [n_tokens][head_dim] for KvCache::dequantize (allocated on first use).
  Buf<float>& k32() {
    if (!k32_.data()) k32_ = Buf<float>(static_cast<size_t>(n_) * sh_.head_dim, "fp32 keys");
    return k32_;
  }
  Buf<float>& v32() {
    if (!v32_.data()) v32_ = Buf<float>(static_cast<size_t>(n_) * sh_.head_dim, "fp32 values");
    return v32_;
  }

 private:
  Fp64AttentionParams params(const __half* q, int b, int h) {
    const int group = sh_.n_q / sh_.n_kv;
    const size_t row = (static_cast<size_t>(b) * sh_.n_q + static_cast<size_t>(h) * group);
    Fp64AttentionParams p;
    p.head_dim = sh_.head_dim;
    p.group = group;  // query head qh reads KV head qh / group
    p.n_tokens = n_;
    p.q = q + row * sh_.head_dim;
    p.scores = scores_.data();
    p.part = part_.data();
    p.out = out_.data() + row * sh_.head_dim;
    return p;
  }
  std::vector<double> result(cudaStream_t stream) {
    check(cudaStreamSynchronize(stream), "fp64 reference");
    std::vector<double> out(out_.size());
    check(cudaMemcpy(out.data(), out_.data(), out_.bytes(), cudaMemcpyDeviceToHost), "read");
    return out;
  }

  int batch_;
  Shape sh_;
  int64_t n_;
  Buf<double> scores_, part_, out_;
  Buf<float> k32_, v32_;
};

const char* version_name(int v) {
  return v == 1 ? "v1 simple" : v == 2 ? "v2 mma" : "v3 two-phase";
}

}  // namespace

void run_kernels_bench(const KernelsBenchOptions& f) {
  check_kernels_bench_options(f);
  const std::vector<methods::MethodSpec> specs = methods::parse_methods(f.methods, "--methods");
  std::vector<Shape> shapes;
  for (const auto& s : f.shapes) {
    if (s == "mha") shapes.push_back({"mha", 32, 32, 128});
    if (s == "gqa") shapes.push_back({"gqa", 32, 8, 128});
  }
  Gpu gpu;
  const cudaStream_t stream = gpu.stream();
  const double copy = copy_gbs(gpu);
  std::fprintf(stderr, "bench kernels: %s, copy %.0f GB/s\n", gpu.prop().name, copy);
  // What any kernel costs in this harness (the launch, the event pair around it): the floor
  // under the append of one token, the shortest kernel timed here.
  const double empty_ms =
      gpu.time_ms(f.warmup, f.repeats, [&] { check(launch_empty(stream), "empty kernel"); });
  const int read_blocks = read_bytes_blocks();
  Buf<uint32_t> sink(static_cast<size_t>(read_blocks));
  // The read roofline of n bytes at x, timed as the kernels are.
  const auto roofline_ms = [&](const void* x, double bytes) {
    return gpu.time_ms(f.warmup, f.repeats, [&] {
      check(launch_read_bytes(x, static_cast<int64_t>(bytes), read_blocks, sink.data(), stream),
            "read roofline");
    });
  };
  std::vector<KernelRow> rows;
  for (const Shape& sh : shapes) {
    const int D = sh.head_dim;
    const std::vector<float> inv_host = quant::rope_inv_freq(10000.0, D);
    Buf<float> inv_freq(inv_host.size());
    check(cudaMemcpy(inv_freq.data(), inv_host.data(), inv_host.size() * 4, cudaMemcpyHostToDevice),
          "upload");
    for (const int batch : f.batches) {
      const size_t n_out = static_cast<size_t>(batch) * sh.n_q * D;
      Buf<__half> q(n_out), out(n_out);
      std::vector<float> unit(n_out);
      {
        std::mt19937 rng(7u + static_cast<uint32_t>(batch));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (float& x : unit) x = normal(rng);
      }
      // Poisons out (fp16 NaN), times fn, compares out with want: a kernel that leaves an
      // element unwritten is WRONG too.
      const auto time_and_check = [&](KernelRow* r, const std::vector<double>& want, auto&& fn) {
        check(cudaMemsetAsync(out.data(), 0xFF, out.bytes(), stream), "poison");
        r->ms = gpu.time_ms(f.warmup, f.repeats, fn);
        set_check(r, compare_output(read_half(out.data(), n_out, stream), want, D), kOutputBound);
      };
      for (const int64_t T : f.contexts) {
        std::fprintf(stderr, "bench kernels: %s batch %d context %lld\n", sh.name.c_str(), batch,
                     static_cast<long long>(T));
        Reference ref(batch, sh, T);
        const double elems = 2.0 * batch * sh.n_kv * static_cast<double>(T) * D;  // K and V
        const auto row = [&](const std::string& method, const std::string& kernel) {
          KernelRow r;
          r.shape = sh.name;
          r.batch = batch;
          r.context = T;
          r.method = method;
          r.kernel = kernel;
          r.n_q_heads = sh.n_q;
          return r;
        };
        KernelRow cub = row("fp16", "cuBLAS"), fla = row("fp16", "flash"),
                  sdpa = row("fp16", "SDPA");
        const size_t fp16_bytes = static_cast<size_t>(elems) * 2;
        const size_t score_bytes = static_cast<size_t>(batch) * sh.n_q * T * 6;
        if (fp16_bytes + score_bytes + (size_t{4} << 30) < free_memory()) {
          // K then V in one allocation, so that the roofline reads the very bytes.
          Buf<__half> kv(static_cast<size_t>(elems));
          __half* const k = kv.data();
          __half* const v = kv.data() + kv.size() / 2;
          Buf<float> scores(static_cast<size_t>(batch) * sh.n_q * T);
          Buf<__half> probs(scores.size());
          check(launch_fill_random_half(k, static_cast<int64_t>(kv.size() / 2), 1, stream), "fill");
          check(launch_fill_random_half(v, static_cast<int64_t>(kv.size() / 2), 2, stream), "fill");
          check(cudaStreamSynchronize(stream), "fill");
          set_queries(unit, key_rms(k, T, D), q.data(), stream);
          const std::vector<double> want = ref.fp16(q.data(), k, v, stream);
          const double roof = roofline_ms(kv.data(), static_cast<double>(fp16_bytes));
          for (KernelRow* r : {&cub, &fla, &sdpa}) {
            r->bytes = static_cast<double>(fp16_bytes);
            r->bits = 16;
            r->roofline_ms = roof;
          }
          Fp16AttentionParams p;
          p.batch = batch;
          p.n_kv_heads = sh.n_kv;
          p.n_q_heads = sh.n_q;
          p.head_dim = D;
          p.n_tokens = T;
          p.q = q.data();
          p.k = k;
          p.v = v;
          p.out = out.data();
          p.scores = scores.data();
          p.probs = probs.data();
          p.n_splits = fp16_flash_splits(batch, sh.n_kv, T);
          Buf<float> part(static_cast<size_t>(batch) * sh.n_q * p.n_splits * (D + 2));
          p.part = part.data();
          time_and_check(&cub, want, [&] {
            check(launch_fp16_cublas_attention(p, gpu.cublas(), stream), "cuBLAS attention");
          });
          time_and_check(&fla, want,
                         [&] { check(launch_fp16_flash_decode(p, stream), "flash attention"); });
          sdpa.note = sdpa_unavailable();
#ifdef KVQ_BENCH_SDPA
          if (sdpa.note.empty()) {
            // LibTorch on our stream: its kernels, and its allocator's blocks for the output.
            const c10::cuda::CUDAStreamGuard on_stream(c10::cuda::getStreamFromExternal(
                stream, static_cast<c10::DeviceIndex>(gpu.device())));
            try {
              at::Tensor o;
              sdpa.ms =
                  gpu.time_ms(f.warmup, f.repeats, [&] { o = sdpa_attention(p, gpu.device()); });
              o = o.contiguous();
              set_check(
                  &sdpa,
                  compare_output(read_half(static_cast<const __half*>(o.data_ptr()), n_out, stream),
                                 want, D),
                  kOutputBound);
            } catch (const c10::Error& e) {
              sdpa.ms = -1;
              sdpa.note = fmt::format("SDPA failed: {}", e.what_without_backtrace());
            }
            c10::cuda::CUDACachingAllocator::emptyCache();  // free_memory() then counts its blocks
          }
#endif
        } else {
          cub.note = fla.note = sdpa.note = "fp16 cache does not fit";
        }
        rows.push_back(cub);
        rows.push_back(fla);
        rows.push_back(sdpa);
        for (const methods::MethodSpec& m : specs) {
          KernelRow base = row(m.name(), "-");
          std::vector<KernelRow> cache_rows;
          try {
            KvCacheConfig c;
            c.format = m.kv_format();
            c.head_dim = D;
            c.n_kv_heads = sh.n_kv;
            c.n_q_heads = sh.n_q;
            c.max_batch = batch;
            c.max_seq_len = T + kAppendRoom;
            const quant::KvTables tables = bench_tables(m.key_bits, sh.n_kv, D);
            KvCache cache(c, &tables);
            const double k_fraction = c.format.key_outliers() ? c.format.outlier_fraction : 0.0;
            cache.fill_random(std::vector<int64_t>(batch, T), k_fraction, 11, stream);
            cache.dequantize(0, 0, ref.k32().data(), ref.v32().data(), stream);
            check(cudaStreamSynchronize(stream), "dequantize");
            set_queries(unit, key_rms(ref.k32().data(), T, D), q.data(), stream);
            const std::vector<double> want =
                ref.compressed(cache, q.data(), inv_freq.data(), stream);
            base.bytes = static_cast<double>(cache.attention_bytes(k_fraction));
            base.bits = 8.0 * base.bytes / elems;
            if (base.bytes + static_cast<double>(size_t{1} << 30) < free_memory()) {
              Buf<uint8_t> bytes(static_cast<size_t>(base.bytes) + 16, "the read roofline");
              base.roofline_ms = roofline_ms(bytes.data(), base.bytes);
            } else {
              base.note = "no room for the read roofline's buffer";
            }
            // The score probe after v3's row `v3` (same launch parameters, whose part_ml it
            // left): times the probe and compares each split's log2-sum-exp with v3's.
            const auto time_probe = [&](const KernelRow& v3) {
              KernelRow r = v3;
              r.kernel = "v3 q.K probe";
              r.ms = -1;
              r.append_ms = -1;
              r.checked = r.wrong = false;
              r.error = {};
              const auto kernel = KvAttentionKernel::kTwoPhase;
              const KvAttentionParams p =
                  cache.attention_params(q.data(), false, out.data(), inv_freq.data(), kernel);
              const auto& L = p.cache.layout;
              r.bytes = static_cast<double>(batch) * sh.n_kv *
                        static_cast<double>(p.cache.n_quant(T)) *
                        (L.k_row_words * 4.0 + k_fraction * L.head_dim * 4.0);
              r.bits = 8.0 * r.bytes / (elems / 2);
              r.roofline_ms = -1;
              if (r.bytes + static_cast<double>(size_t{1} << 30) < free_memory()) {
                Buf<uint8_t> bytes(static_cast<size_t>(r.bytes) + 16, "the probe's roofline");
                r.roofline_ms = roofline_ms(bytes.data(), r.bytes);
              }
              const size_t n_ml = kernels::kv_attention_part_rows(batch, sh.n_q, p.n_splits) * 2;
              const auto lse = [&](std::vector<float>* out_lse) {
                check(cudaStreamSynchronize(stream), "part_ml");
                std::vector<float> ml(n_ml);
                check(cudaMemcpy(ml.data(), p.part_ml, n_ml * 4, cudaMemcpyDeviceToHost),
                      "read part_ml");
                // Per split: log2 of its sum of exp2 (0 for an empty split); the fp16 part is
                // the probe's to skip.
                out_lse->clear();
                for (size_t i = 0; i < n_ml / 2; ++i) {
                  if (static_cast<int>(i % static_cast<size_t>(p.n_splits + 1)) == p.n_splits)
                    continue;
                  const float m = ml[2 * i], l = ml[2 * i + 1];
                  out_lse->push_back(l > 0 ? m + std::log2(l) : (l == 0 ? 0.0f : NAN));
                }
              };
              std::vector<float> want_f, got;
              lse(&want_f);
              const std::vector<double> want(want_f.begin(), want_f.end());
              check(cudaMemsetAsync(p.part_ml, 0xFF, n_ml * 4, stream), "poison");
              r.ms = gpu.time_ms(f.warmup, f.repeats, [&] {
                check(kernels::launch_kv_score_probe(p, stream), "score probe");
              });
              lse(&got);
              // The same arithmetic as v3's in the same order: equal to float rounding.
              set_check(&r, compare_output(got, want, p.n_splits), ErrorBound{1e-5, 1e-5});
              r.note = "keys only: bytes, % roofline of the key side; check: part_ml vs v3's";
              return r;
            };
            std::vector<std::pair<size_t, KvAttentionKernel>> timed;  // rows with a time
            for (const int version : f.versions) {
              // v2 serves KIVI pages, v3 KVQuant pages, v1 both: no row for the other pairs.
              if (!kernels::kv_attention_serves(cache.config().layout(),
                                                static_cast<KvAttentionKernel>(version))) {
                continue;
              }
              KernelRow r = base;
              r.kernel = version_name(version);
              try {
                const auto kernel = static_cast<KvAttentionKernel>(version);
                const KvAttentionParams p =
                    cache.attention_params(q.data(), false, out.data(), inv_freq.data(), kernel);
                time_and_check(&r, want, [&] {
                  check(kernels::launch_kv_attention(p, kernel, stream), "attention");
                });
              } catch (const Error& e) {
                r.ms = -1;
                r.note = e.what();
              }
              if (r.ms > 0 && !r.wrong) {
                timed.emplace_back(cache_rows.size(), static_cast<KvAttentionKernel>(version));
              }
              cache_rows.push_back(r);
              if (f.probe && version == 3 && !r.wrong && r.ms > 0 &&
                  kernels::kv_score_probe_serves(cache.config().layout(), sh.n_q / sh.n_kv)) {
                cache_rows.push_back(time_probe(r));
              }
            }
            if (T == 32768) {  // the cost of one decode step's append, on every row of the cache
              Buf<__half> kn(static_cast<size_t>(batch) * sh.n_kv * D), vn(kn.size());
              check(launch_fill_random_half(kn.data(), static_cast<int64_t>(kn.size()), 3, stream),
                    "fill");
              check(launch_fill_random_half(vn.data(), static_cast<int64_t>(vn.size()), 4, stream),
                    "fill");
              const int repeats = std::min(f.repeats, kAppendRepeats);
              const double append_ms = gpu.time_ms(
                  kAppendWarmup, repeats, [&] { cache.append(kn.data(), vn.data(), stream); });
              for (KernelRow& r : cache_rows) r.append_ms = append_ms;
              // A decode step as a model runs it: the append, then the kernel. Its excess over
              // the kernel's own time is what the append costs the step (its launch gap
              // included).
              for (const auto& [i, kernel] : timed) {
                cache_rows[i].step_append_ms =
                    gpu.time_ms(kAppendWarmup, repeats, [&, kernel = kernel] {
                      cache.append(kn.data(), vn.data(), stream);
                      cache.attend(q.data(), false, out.data(), inv_freq.data(), kernel, stream);
                    });
              }
            }
          } catch (const Error& e) {
            base.note = e.what();
            cache_rows.push_back(base);
          }
          rows.insert(rows.end(), cache_rows.begin(), cache_rows.end());
        }
      }
    }
  }
  derive_figures(&rows, copy);
  nlohmann::json j;
  j["device"] = gpu.prop().name;
  j["sms"] = gpu.prop().multiProcessorCount;
  j["copy_gbs"] = copy;
  j["empty_kernel_ms"] = empty_ms;
  j["warmup"] = f.warmup;
  j["repeats"] = f.repeats;
  j["score_std"] = kScoreStd;
  j["bound"] = {{"rel_l2", kOutputBound.rel_l2}, {"worst_row_rel", kOutputBound.worst_row_rel}};
  j["checked"] = count_checked(rows);
  j["wrong"] = count_wrong(rows);
  j["results"] = kernels_json(rows);
  if (!f.json_file.empty()) {
    artifact::write_text_file_atomic(
        f.json_file, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  }
  if (f.json) {
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    fmt::print(
        "device: {} ({} SMs), device-to-device copy {:.0f} GB/s (read + write), an empty kernel "
        "{:.4f} ms (timed as every kernel here: the floor of the append)\n",
        gpu.prop().name, gpu.prop().multiProcessorCount, copy, empty_ms);
    fmt::print(
        "check: each output against fp64 attention over the same cache (fp16: as stored; "
        "compressed: dequantized, RoPE), queries scaled to score std {:.0f}; WRONG (no time): "
        "NaN/Inf, rel L2 > {:.0e} or worst row > {:.0e}\n",
        kScoreStd, kOutputBound.rel_l2, kOutputBound.worst_row_rel);
    fmt::print(
        "roofline: a 16-byte-load read of the bytes the cache's decode step reads; % roofline = "
        "roofline ms / kernel ms\n\n");
    fmt::print("{}\n{}\n", kernels_table(rows), check_summary(rows));
  }
  std::fflush(stdout);
  if (count_wrong(rows) > 0) {
    fail("{} of {} timed outputs WRONG against fp64 (the rows marked WRONG)", count_wrong(rows),
         count_checked(rows));
  }
}

}  // namespace kvq::bench
