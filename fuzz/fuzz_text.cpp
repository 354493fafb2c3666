// Fuzzes the data readers (data/text.h). Input: one byte choosing the format (plain, jsonl,
// brown as a single file), then the file. Accepted text is never empty.
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"
#include "kvq/data/text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  using kvq::data::TextFormat;
  const TextFormat formats[] = {TextFormat::Plain, TextFormat::Jsonl, TextFormat::Brown};
  const TextFormat format = formats[data[0] % 3];
  static kvq::fuzz::InputFile input("data.txt");
  const std::string& path = input.write(data + 1, size - 1);
  kvq::fuzz::expect_documented_errors([&] {
    const std::string text = kvq::data::load_text(path, format, "text");
    KVQ_FUZZ_ASSERT(!text.empty());
  });
  return 0;
}
