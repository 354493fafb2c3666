// Fuzzes method strings (methods/method.h, parse_method): the input is the string. An accepted
// method's canonical name parses back to the same spec (method.h promises it), and its cache
// format and fp16 token counts can be asked for at any length.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_input.h"
#include "kvq/methods/method.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  kvq::fuzz::expect_documented_errors([&] {
    const kvq::methods::MethodSpec spec = kvq::methods::parse_method(text);
    const std::string name = spec.name();
    KVQ_FUZZ_ASSERT(kvq::methods::parse_method(name) == spec);
    KVQ_FUZZ_ASSERT(kvq::methods::parse_method(name).name() == name);
    (void)spec.kv_format();
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{127}, int64_t{4097}, int64_t{1} << 40}) {
      const int64_t fp16 = spec.fp16_tokens(n);
      KVQ_FUZZ_ASSERT(fp16 >= 0 && fp16 <= n);
    }
  });
  return 0;
}
