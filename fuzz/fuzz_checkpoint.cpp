// Fuzzes the llama2.c checkpoint reader (model/io/checkpoint.h): the input is a whole .bin file
// (header, then float32 tensors). An accepted checkpoint's tensors lie inside the file, each of
// its config's shape; every byte is read.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "kvq/model/io/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvq::fuzz::InputFile input("model.bin");
  const std::string& path = input.write(data, size);
  kvq::fuzz::expect_documented_errors([&] {
    const kvq::model::Checkpoint ck = kvq::model::open_llama2c_checkpoint(path);
    ck.config.validate(path);
    const int64_t dim = ck.config.dim;
    ck.require("model.embed_tokens.weight", {ck.config.vocab_size, dim});
    ck.require("model.norm.weight", {dim});
    for (const auto& [name, view] : ck.tensors) {
      KVQ_FUZZ_ASSERT(view.n_bytes ==
                      static_cast<size_t>(view.numel()) * kvq::model::dtype_size(view.dtype));
      KVQ_FUZZ_ASSERT(view.n_bytes <= size);
      unsigned sum = 0;
      for (size_t i = 0; i < view.n_bytes; ++i) sum += view.data[i];
      (void)sum;
    }
  });
  return 0;
}
