// Helpers for the GPU tests (tests/gpu): skip with a visible reason when no GPU is usable, check
// CUDA calls, own device buffers (runtime::DeviceBuffer). Header-only; only tests that link
// CUDA::cudart include it.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "kvq/runtime/device_buffer.h"

// Skips the current test unless a GPU is usable: a device is visible and a context can be made
// on it. The reason names the failing call and CUDA's error, e.g. cudaErrorInsufficientDriver
// on a machine with the toolkit but no driver. Use at the top of a TEST body or in SetUp().
#define KVQ_REQUIRE_GPU()                                                       \
  do {                                                                          \
    const std::string kvq_no_gpu_ = ::kvq::test::gpu_unusable_reason();         \
    if (!kvq_no_gpu_.empty()) GTEST_SKIP() << "no usable GPU: " << kvq_no_gpu_; \
  } while (0)

// Fails the current test (and returns from it) when a CUDA call does not return cudaSuccess.
#define KVQ_CUDA_CHECK(call)                                                                    \
  do {                                                                                          \
    const cudaError_t kvq_err_ = (call);                                                        \
    ASSERT_EQ(kvq_err_, cudaSuccess)                                                            \
        << #call << ": " << cudaGetErrorName(kvq_err_) << ": " << cudaGetErrorString(kvq_err_); \
  } while (0)

namespace kvq::test {

// Empty when device 0 is usable, else why not (which call failed and CUDA's error).
inline std::string gpu_unusable_reason() {
  auto describe = [](const char* call, cudaError_t err) {
    (void)cudaGetLastError();  // leave no sticky error behind for the test's own checks
    return std::string(call) + " returned " + cudaGetErrorName(err) + " (" +
           cudaGetErrorString(err) + ")";
  };
  int n_devices = 0;
  if (const cudaError_t err = cudaGetDeviceCount(&n_devices); err != cudaSuccess) {
    return describe("cudaGetDeviceCount", err);
  }
  if (n_devices == 0) return "cudaGetDeviceCount found 0 devices";
  if (const cudaError_t err = cudaSetDevice(0); err != cudaSuccess) {
    return describe("cudaSetDevice(0)", err);
  }
  if (const cudaError_t err = cudaFree(nullptr); err != cudaSuccess) {  // makes the context
    return describe("cudaFree(nullptr)", err);
  }
  return "";
}

// The runtime's owner of device memory (freed on destruction, so a failed ASSERT leaks nothing;
// a failed cudaMalloc throws kvq::Error, which GoogleTest reports as a failure).
using runtime::DeviceBuffer;

// A device copy of `host`. A failed copy throws, which GoogleTest reports as a failure of the
// test (as a failed allocation does), so no test goes on with an input it did not upload.
template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> d(host.size(), "a test input");
  if (const cudaError_t err = cudaMemcpy(d.data(), host.data(), d.bytes(), cudaMemcpyHostToDevice);
      err != cudaSuccess) {
    throw std::runtime_error(std::string("to_device: cudaMemcpy of ") + std::to_string(d.bytes()) +
                             " bytes: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
  }
  return d;
}

}  // namespace kvq::test
