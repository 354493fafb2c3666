#include "cublas_loader.h"

#include <dlfcn.h>

#include <string>

#include "kvq/common/error.h"

namespace kvq::bench {
namespace {

std::string dl_reason() {
  const char* e = dlerror();
  return e ? e : "unknown reason";
}

template <typename F>
void resolve(void* lib, const char* name, const std::string& file, F* out) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out) fail("bench kernels: {} has no {}: {}", file, name, dl_reason());
}

CublasApi load() {
  std::string file = KVQ_CUBLAS_SONAME;
  void* lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const std::string first = dl_reason();
    file = KVQ_CUBLAS_FILE;
    lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      fail("bench kernels: cannot load cuBLAS ({}: {}; {}: {})", KVQ_CUBLAS_SONAME, first, file,
           dl_reason());
    }
  }
  CublasApi api;
  resolve(lib, "cublasCreate_v2", file, &api.create);
  resolve(lib, "cublasDestroy_v2", file, &api.destroy);
  resolve(lib, "cublasSetStream_v2", file, &api.set_stream);
  resolve(lib, "cublasGemmStridedBatchedEx", file, &api.gemm_strided_batched);
  return api;  // the library stays loaded for the process's life
}

}  // namespace

const CublasApi& cublas_api() {
  static const CublasApi api = load();
  return api;
}

}  // namespace kvq::bench
