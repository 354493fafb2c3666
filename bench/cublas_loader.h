// cuBLAS for the fp16 baseline of `kvq bench kernels`, loaded on first use instead of linked:
// every process that linked libcublas (and the libcublasLt it loads) paid for it at start, for
// one baseline of one benchmark (CPU machine: an empty program linked to it starts in 0.48 s;
// kvq --version used 1.51 s of CPU with it, 1.16 s without). The types and constants still come
// from cublas_v2.h.
#pragma once

#include <cublas_v2.h>

namespace kvq::bench {

// The cuBLAS functions the baseline calls.
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  // The library's function (CUDA's cublas_api.h also declares an inline C++ overload taking the
  // compute type as a cudaDataType).
  cublasStatus_t (*gemm_strided_batched)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int,
                                         int, int, const void*, const void*, cudaDataType, int,
                                         long long, const void*, cudaDataType, int, long long,
                                         const void*, void*, cudaDataType, int, long long, int,
                                         cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
};

// Loads libcublas (its SONAME, else the file the build linked against) on the first call and
// returns its functions; throws kvq::Error naming the library and dlerror()'s reason when it
// cannot be loaded or lacks a function. Thread-safe.
const CublasApi& cublas_api();

}  // namespace kvq::bench
