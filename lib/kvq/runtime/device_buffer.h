// DeviceBuffer<T>: n elements of T in GPU memory (cudaMalloc), freed on destruction; the one
// owner of device memory in the runtime, the benchmarks and the GPU tests. Move-only. A failed
// allocation throws kvq::Error naming the bytes, what they were for and CUDA's error, and
// clears CUDA's error state, so the caller can go on (e.g. refuse one request and serve the next).
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include <cuda_runtime_api.h>

#include "kvq/common/error.h"

namespace kvq::runtime {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // n == 0 allocates nothing (data() is null).
  explicit DeviceBuffer(size_t n, const std::string& what = "a device buffer") : n_(n) {
    if (n == 0) return;
    void* p = nullptr;
    if (const cudaError_t err = cudaMalloc(&p, n * sizeof(T)); err != cudaSuccess) {
      (void)cudaGetLastError();
      n_ = 0;
      fail("cudaMalloc of {} bytes for {} failed: {}", n * sizeof(T), what,
           cudaGetErrorString(err));
    }
    data_ = static_cast<T*>(p);
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      cudaFree(data_);
      data_ = std::exchange(o.data_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  T* data() const { return data_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  size_t n_ = 0;
};

}  // namespace kvq::runtime
