// Writes the fuzz targets' seed corpora, one folder per target under OUT_DIR, from the small real
// models and data in DATA_DIR (read, never copied into the repository) and from tiny valid files
// built here (a llama2.c checkpoint, a safetensors file, a tokenizer.bin, an HDF5 artifact), so a
// seed is a file the reader accepts and mutations start from its structure. Files of DATA_DIR that
// are missing are skipped with a note. Not here: calib.h5 from a real calibration, which needs
// the LibTorch build (scripts/fuzz.sh adds one when build/bin/kvq exists); the committed seeds of
// fuzz/seeds/ (method strings, request bodies).
//
// Usage: fuzz_make_seeds OUT_DIR DATA_DIR
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kvq/artifact/h5.h"

namespace fs = std::filesystem;

namespace {

std::string out_dir, data_dir;

std::string read_file(const std::string& path, size_t max_bytes = SIZE_MAX) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() > max_bytes) bytes.resize(max_bytes);
  return bytes;
}

void write_seed(const std::string& target, const std::string& name, const std::string& bytes) {
  fs::create_directories(out_dir + "/" + target);
  std::ofstream out(out_dir + "/" + target + "/" + name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A seed from DATA_DIR/relative (its first max_bytes), after `prefix`; skipped if missing.
void seed_from_data(const std::string& target, const std::string& name, const std::string& relative,
                    const std::string& prefix = "", size_t max_bytes = SIZE_MAX) {
  const std::string bytes = read_file(data_dir + "/" + relative, max_bytes);
  if (bytes.empty()) {
    std::fprintf(stderr, "fuzz_make_seeds: %s/%s missing, seed %s/%s skipped\n", data_dir.c_str(),
                 relative.c_str(), target.c_str(), name.c_str());
    return;
  }
  write_seed(target, name, prefix + bytes);
}

template <typename T>
void append(std::string& s, T value) {
  s.append(reinterpret_cast<const char*>(&value), sizeof(value));
}

// llama2.c: seven int32 header fields, then float32 tensors (model/io/checkpoint.cpp's order).
std::string tiny_llama2c(int32_t vocab) {
  const int32_t dim = 8, hidden = 16, n_layers = 1, n_heads = 2, n_kv_heads = 1, seq_len = 4;
  std::string s;
  for (int32_t v : {dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len}) append(s, v);
  const int64_t head_dim = dim / n_heads, kv_dim = n_kv_heads * head_dim;
  const int64_t v = vocab < 0 ? -int64_t{vocab} : vocab;
  const int64_t n_floats = v * dim + n_layers * dim * (2 + 2 * dim + 2 * kv_dim) +
                           n_layers * hidden * dim * 3 + dim + seq_len * head_dim +
                           (vocab < 0 ? v * dim : 0);
  for (int64_t i = 0; i < n_floats; ++i) append(s, 0.01f * static_cast<float>(i % 97));
  return s;
}

std::string safetensors(const std::string& header, const std::string& data) {
  std::string h = header;
  while (h.size() % 8 != 0) h.push_back(' ');
  std::string s;
  append(s, static_cast<uint64_t>(h.size()));
  return s + h + data;
}

// tokenizer.bin: max_token_length, then per token a float32 score, an int32 length, the bytes.
std::string tiny_tokenizer_bin(const std::vector<std::pair<std::string, float>>& pieces) {
  std::string s;
  int32_t max_len = 0;
  for (const auto& p : pieces) max_len = std::max<int32_t>(max_len, p.first.size());
  append(s, max_len);
  for (const auto& [piece, score] : pieces) {
    append(s, score);
    append(s, static_cast<int32_t>(piece.size()));
    s += piece;
  }
  return s;
}

std::string with_vocab(int32_t vocab, const std::string& bytes) {
  std::string s;
  append(s, vocab);
  return s + bytes;
}

// Another kvq schema, so fuzz_calib_h5 walks it through the h5 layer (calib.h5 seeds come from
// scripts/fuzz.sh); quant.h5's own reader needs LibTorch.
void write_h5_seed() {
  const std::string path = out_dir + "/calib_h5/tiny.h5";
  fs::create_directories(out_dir + "/calib_h5");
  kvq::artifact::File file = kvq::artifact::File::create(path);
  const kvq::artifact::Group root = file.root();
  root.set_string_attr("schema", "kvq.quant/2");
  root.set_int_attr("key_bins", 16);
  root.set_int_attr("value_bins", 16);
  root.set_double_array_attr("fractions", {0.0, 0.01});
  const kvq::artifact::Group layer = root.create_group("layers/00/key");
  layer.write<double>("min", std::vector<double>{-1.0, -2.0}, {2});
  layer.write<float>("sample", std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}, {2, 2});
  layer.write<int64_t>("positions", std::vector<int64_t>{0, 7}, {2});
  layer.write<int32_t>("i32", std::vector<int32_t>{3}, {});
  layer.write<uint8_t>("u8", std::vector<uint8_t>{1, 2, 3}, {3});
  layer.write<uint32_t>("u32", std::vector<uint32_t>{5, 6}, {1, 2});
  file.close();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fuzz_make_seeds OUT_DIR DATA_DIR\n");
    return 2;
  }
  out_dir = argv[1];
  data_dir = argv[2];
  fs::create_directories(out_dir);

  write_seed("checkpoint", "tiny-shared.bin", tiny_llama2c(16));
  write_seed("checkpoint", "tiny-unshared.bin", tiny_llama2c(-16));
  seed_from_data("checkpoint", "wt2-llama-1m-head.bin", "models/wt2-llama-1m/model.bin", "", 4096);

  write_seed("safetensors", "tiny.safetensors",
             safetensors(R"({"__metadata__":{"format":"pt"},)"
                         R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                         R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},)"
                         R"("c":{"dtype":"I64","shape":[],"data_offsets":[32,40]}})",
                         std::string(40, '\x01')));
  // The real header with the first bytes of its data: structure for the JSON mutations.
  {
    const std::string bytes =
        read_file(data_dir + "/models/wt2-llama-1m/model.safetensors", 1 << 20);
    if (bytes.size() >= 8) {
      uint64_t n = 0;
      std::memcpy(&n, bytes.data(), 8);
      if (n < bytes.size() - 8)
        write_seed("safetensors", "wt2-llama-1m-head", bytes.substr(0, 8 + n + 64));
    }
  }

  seed_from_data("config", "wt2-llama-1m.json", "models/wt2-llama-1m/config.json");
  seed_from_data("config", "wt2-llama-18m.json", "models/wt2-llama-18m/config.json");

  write_seed("tokenizer", "tiny",
             with_vocab(8, tiny_tokenizer_bin({{"<unk>", 0.0f},
                                               {"\n<s>\n", 0.0f},
                                               {"\n</s>\n", 0.0f},
                                               {"<0x41>", 0.0f},
                                               {" a", -1.0f},
                                               {"b", -2.0f},
                                               {"ab", -0.5f},
                                               {" ab", -0.25f}})));
  // The model's vocab_size (its config.json's) comes first.
  seed_from_data("tokenizer", "wt2-llama-1m", "models/wt2-llama-1m/tokenizer.bin",
                 with_vocab(4096, ""));

  seed_from_data("text", "plain", "wikitext-2/wiki.test.tokens", std::string(1, '\0'), 4096);
  write_seed("text", "jsonl",
             std::string(1, '\1') +
                 "{\"text\": \"Hello \\u00e9 world\"}\n\n{\"text\": \"\"}\n{\"text\": \"x\", "
                 "\"id\": 3}\n");
  write_seed("text", "brown",
             std::string(1, '\2') +
                 "\n\n\tThe/at Fulton/np-tl County/nn-tl said/vbd ``/`` no/at "
                 "evidence/nn ''/'' ./.\n\n\n\tIt/pps was/bedz a/at/x test/nn ./.\n");

  write_h5_seed();
  return 0;
}
