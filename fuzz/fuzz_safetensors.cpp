// Fuzzes the safetensors reader (model/io/safetensors.h): the input is a whole file. An accepted
// file must hand out views whose sizes agree with their dtype and shape; every byte of every view
// is read, so a view past the mapping crashes here rather than in the runner.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "kvq/model/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvq::fuzz::InputFile input("model.safetensors");
  const std::string& path = input.write(data, size);
  kvq::fuzz::expect_documented_errors([&] {
    const kvq::model::SafetensorsFile file(path);
    size_t total = 0;
    for (const auto& [name, view] : file.tensors()) {
      KVQ_FUZZ_ASSERT(name == view.name);
      KVQ_FUZZ_ASSERT(view.numel() >= 0);
      KVQ_FUZZ_ASSERT(view.n_bytes ==
                      static_cast<size_t>(view.numel()) * kvq::model::dtype_size(view.dtype));
      KVQ_FUZZ_ASSERT(view.n_bytes <= size);
      total += view.n_bytes;
      unsigned sum = 0;
      for (size_t i = 0; i < view.n_bytes; ++i) sum += view.data[i];
      (void)sum;
      KVQ_FUZZ_ASSERT(&file.get(name) == &view);
    }
    KVQ_FUZZ_ASSERT(total <= size);  // views do not overlap (the reader refuses overlaps)
  });
  return 0;
}
