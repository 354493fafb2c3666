// Fuzzes kvq serve's request parser (serve/api.h): the input is a POST /v1/completions body. Bad
// requests are ApiErrors (a kvq::Error) whose error document must build; an accepted request is
// checked against small model limits with a byte-per-token encoder.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "fuzz_input.h"
#include "kvq/serve/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  auto encode = [](std::string_view text) {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  };
  kvq::fuzz::expect_documented_errors([&] {
    try {
      const kvq::serve::CompletionRequest r = kvq::serve::parse_completion_request(body);
      KVQ_FUZZ_ASSERT(r.max_tokens > 0);
      const kvq::serve::ModelLimits limits{/*context=*/512, /*vocab=*/256, /*pool_tokens=*/1024};
      const std::vector<int32_t> ids = kvq::serve::prompt_tokens(r, limits, encode);
      KVQ_FUZZ_ASSERT(static_cast<int64_t>(ids.size()) <= limits.context);
    } catch (const kvq::serve::ApiError& e) {
      KVQ_FUZZ_ASSERT(e.status() >= 400 && e.status() < 600);
      (void)kvq::serve::error_json(e).dump();  // what the server sends must serialize
    }
  });
  return 0;
}
