// Fuzzes llama2.c's tokenizer.bin reader and its BPE (model/io/tokenizer.h). Input: a 4-byte
// little-endian vocab_size (the model header's, which the checkpoint reader has already checked:
// kept below 2^16 here), then the tokenizer.bin bytes. An accepted tokenizer encodes and decodes
// a fixed text and every id of its vocabulary, and decode(encode(text)) gives the text back.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_input.h"
#include "kvq/model/io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t raw = 0;
  std::memcpy(&raw, data, 4);
  const int32_t vocab_size = static_cast<int32_t>(raw & 0xffff);
  static kvq::fuzz::InputFile input("tokenizer.bin");
  const std::string& path = input.write(data + 4, size - 4);
  kvq::fuzz::expect_documented_errors([&] {
    const auto tok = kvq::model::load_llama2c_tokenizer(path, vocab_size);
    KVQ_FUZZ_ASSERT(tok->vocab_size() == vocab_size);
    const std::string text = "The quick  brown fox, 123 \xc3\xa9t\xc3\xa9\n\tend \xe2\x82\xac\xff";
    const std::vector<int32_t> ids = tok->encode(text, /*add_bos=*/true);
    for (int32_t id : ids) KVQ_FUZZ_ASSERT(id >= 0 && id < vocab_size);
    (void)tok->decode(ids);
    std::vector<int32_t> all;
    for (int32_t id = 0; id < vocab_size && id < 4096; ++id) all.push_back(id);
    (void)tok->decode(all);
    (void)kvq::model::encode_up_to(*tok, text, /*add_bos=*/false, /*max_tokens=*/3);
  });
  return 0;
}
