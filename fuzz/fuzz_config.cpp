// Fuzzes the config.json reader (model/io/config.h): the input is the whole file. An accepted
// config must pass its own validate() (the reader promises the sizes are consistent).
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "kvq/model/io/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvq::fuzz::InputFile input("config.json");
  const std::string& path = input.write(data, size);
  kvq::fuzz::expect_documented_errors([&] {
    const kvq::model::ModelConfig c = kvq::model::parse_hf_config(path);
    c.validate(path);
    KVQ_FUZZ_ASSERT(c.dim > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0);
    KVQ_FUZZ_ASSERT(c.n_heads % c.n_kv_heads == 0);
  });
  return 0;
}
