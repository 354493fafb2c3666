// safetensors reader: the real model files parse, synthetic files give the right views, and each
// malformed file is rejected with its exact one-line message.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "kvq/model/io/safetensors.h"
#include "unit/model_io_fixtures.h"

namespace kvq::model {
namespace {

using test::error_of;
using test::make_safetensors;
using test::safetensors_bytes;
using test::TempDir;
using test::write_file;

TEST(Safetensors, DTypeSizesAndNames) {
  const std::pair<DType, std::pair<const char*, size_t>> cases[] = {
      {DType::F64, {"F64", 8}},   {DType::F32, {"F32", 4}}, {DType::F16, {"F16", 2}},
      {DType::BF16, {"BF16", 2}}, {DType::I64, {"I64", 8}}, {DType::I32, {"I32", 4}},
      {DType::I16, {"I16", 2}},   {DType::I8, {"I8", 1}},   {DType::U8, {"U8", 1}},
      {DType::Bool, {"BOOL", 1}}};
  for (const auto& [dtype, expected] : cases) {
    EXPECT_STREQ(dtype_name(dtype), expected.first);
    EXPECT_EQ(dtype_size(dtype), expected.second) << expected.first;
  }
}

TEST(Safetensors, RealSingleFileModel) {
  KVQ_REQUIRE_DATA("models/wt2-llama-1m");
  const SafetensorsFile f(test::data_path("models/wt2-llama-1m/model.safetensors"));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.tensors().size(), 4u * 9 + 2);  // tied embeddings: no lm_head
  const TensorView& emb = f.get("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype, DType::F32);
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{4096, 128}));
  EXPECT_EQ(emb.n_bytes, 4096u * 128 * 4);
  EXPECT_EQ(emb.numel(), 4096 * 128);
  EXPECT_EQ(f.get("model.layers.3.self_attn.k_proj.weight").shape, (std::vector<int64_t>{64, 128}));
  EXPECT_FALSE(f.contains("lm_head.weight"));
}

TEST(Safetensors, RealBf16Shard) {
  KVQ_REQUIRE_DATA("models/wt2-llama-18m");
  const SafetensorsFile f(test::data_path("models/wt2-llama-18m/model-00004-of-00004.safetensors"));
  ASSERT_EQ(f.tensors().size(), 1u);
  const TensorView& head = f.get("lm_head.weight");
  EXPECT_EQ(head.dtype, DType::BF16);
  EXPECT_EQ(head.shape, (std::vector<int64_t>{4096, 512}));
  EXPECT_EQ(head.n_bytes, 4096u * 512 * 2);
}

TEST(Safetensors, SyntheticViewsPointAtTheirBytes) {
  TempDir tmp;
  const std::string path = tmp.file("t.safetensors");
  write_file(path, make_safetensors({{"a", "F32", {2, 3}, 4},
                                     {"b", "I8", {4}, 1},
                                     {"scalar", "BOOL", {}, 1},
                                     {"empty", "F16", {0, 5}, 2},
                                     {"c", "BF16", {3}, 2}},
                                    {{"format", "pt"}, {"note", "x"}}));
  const SafetensorsFile f(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata().at("note"), "x");
  ASSERT_EQ(f.tensors().size(), 5u);
  const TensorView& a = f.get("a");
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.numel(), 6);
  EXPECT_EQ(a.n_bytes, 24u);
  EXPECT_EQ(a.data[0], 1);
  EXPECT_EQ(a.data[23], 1);
  const TensorView& b = f.get("b");
  EXPECT_EQ(b.dtype, DType::I8);
  EXPECT_EQ(b.data, a.data + 24);
  EXPECT_EQ(b.data[3], 2);
  EXPECT_EQ(f.get("scalar").numel(), 1);
  EXPECT_TRUE(f.get("scalar").shape.empty());
  EXPECT_EQ(f.get("empty").n_bytes, 0u);
  EXPECT_EQ(f.get("empty").numel(), 0);
  EXPECT_EQ(f.get("c").data[5], 5);
  EXPECT_EQ(f.get("c").data + 6, f.get("c").data + f.get("c").n_bytes);
}

TEST(Safetensors, MappedFileReadsAndRejects) {
  TempDir tmp;
  write_file(tmp.file("x"), "hello");
  const MappedFile m(tmp.file("x"));
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(std::memcmp(m.data(), "hello", 5), 0);
  write_file(tmp.file("empty"), "");
  EXPECT_EQ(MappedFile(tmp.file("empty")).size(), 0u);
  EXPECT_EQ(error_of([&] { MappedFile(tmp.file("nope")); }),
            tmp.file("nope") + ": cannot open (No such file or directory)");
  EXPECT_EQ(error_of([&] { MappedFile(tmp.path()); }),
            tmp.path() + ": expected a regular file, found a directory");
}

// Writes a file of `bytes` and returns the error of opening it.
class SafetensorsErrors : public ::testing::Test {
 protected:
  std::string open(const std::string& bytes) {
    write_file(path_, bytes);
    return error_of([&] { SafetensorsFile f(path_); });
  }
  std::string open_header(const std::string& header, size_t n_data) {
    return open(safetensors_bytes(header, std::string(n_data, '\0')));
  }
  TempDir tmp_;
  std::string path_ = tmp_.file("model.safetensors");
};

TEST_F(SafetensorsErrors, ShorterThanEightBytes) {
  EXPECT_EQ(open("abcde"), path_ + ": expected at least 8 bytes (the header length), file has 5");
  EXPECT_EQ(open(""), path_ + ": expected at least 8 bytes (the header length), file has 0");
}

TEST_F(SafetensorsErrors, HeaderLengthPastEndOfFile) {
  std::string bytes = safetensors_bytes("{}", "");
  bytes[0] = 100;  // claims a 100-byte header; only 2 follow
  EXPECT_EQ(open(bytes),
            path_ + ": header length 100 exceeds the file (2 bytes after the 8-byte length)");
  bytes.replace(0, 8, std::string(8, '\xff'));  // 2^64 - 1 must not wrap around
  EXPECT_EQ(open(bytes), path_ +
                             ": header length 18446744073709551615 exceeds the file (2 bytes "
                             "after the 8-byte length)");
}

TEST_F(SafetensorsErrors, InvalidJson) {
  EXPECT_EQ(open_header("{\"a\": [1,\n", 0),
            path_ + ": expected a JSON header of 10 bytes, found invalid JSON at byte 11");
  EXPECT_EQ(open_header("[1, 2]", 0),
            path_ + ": expected the header to be a JSON object, found array");
}

TEST_F(SafetensorsErrors, DataOffsetsOutOfRange) {
  EXPECT_EQ(open_header(
                R"({"x": {"dtype": "F32", "shape": [249999], "data_offsets": [0, 999996]}})", 4096),
            path_ + ": tensor 'x' data_offsets [0, 999996] exceed the data section (4096 bytes)");
  EXPECT_EQ(open_header(R"({"x": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})", 16),
            path_ + ": expected tensor 'x' data_offsets [8, 4] to have begin <= end");
  EXPECT_EQ(open_header(R"({"x": {"dtype": "U8", "shape": [4], "data_offsets": [-4, 0]}})", 16),
            path_ + ": tensor 'x' data_offsets[0] must be a non-negative integer, found -4");
  EXPECT_EQ(open_header(R"({"x": {"dtype": "U8", "shape": [4], "data_offsets": [0]}})", 16),
            path_ + ": expected tensor 'x' data_offsets to be [begin, end], found [0]");
}

TEST_F(SafetensorsErrors, ShapeDisagreesWithOffsets) {
  EXPECT_EQ(
      open_header(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 16]}})", 16),
      path_ +
          ": tensor 'w' of shape [2, 3] and dtype BF16 needs 12 bytes, data_offsets "
          "[0, 16] hold 16");
  EXPECT_EQ(open_header(R"({"w": {"dtype": "F64", "shape": [4294967296, 4294967296],)"
                        R"( "data_offsets": [0, 8]}})",
                        8),
            path_ +
                ": tensor 'w' of shape [4294967296, 4294967296] and dtype F64 needs more "
                "than 2^64 bytes, data_offsets [0, 8] hold 8");
  EXPECT_EQ(open_header(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
            path_ + ": tensor 'w' shape entry must be a non-negative integer, found -1");
}

TEST_F(SafetensorsErrors, UnknownDtype) {
  EXPECT_EQ(open_header(R"({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})", 4),
            path_ +
                ": tensor 'w' has dtype 'F8_E4M3', expected one of F64 F32 F16 BF16 I64 I32 "
                "I16 I8 U8 BOOL");
  EXPECT_EQ(open_header(R"({"w": {"dtype": 4, "shape": [4], "data_offsets": [0, 4]}})", 4),
            path_ + ": expected tensor 'w' dtype to be a string, found 4");
}

TEST_F(SafetensorsErrors, MalformedEntries) {
  EXPECT_EQ(open_header(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4),
            path_ + ": tensor 'w' is missing 'shape'");
  EXPECT_EQ(open_header(R"({"w": 3})", 0),
            path_ + ": expected tensor 'w' to be an object, found number");
  EXPECT_EQ(open_header(R"({"__metadata__": {"format": 1}})", 0),
            path_ + ": expected __metadata__ 'format' to be a string, found number");
}

TEST_F(SafetensorsErrors, OverlappingTensors) {
  EXPECT_EQ(open_header(R"({"a": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]},)"
                        R"( "b": {"dtype": "U8", "shape": [16], "data_offsets": [8, 24]},)"
                        R"( "e": {"dtype": "U8", "shape": [0], "data_offsets": [4, 4]}})",
                        24),
            path_ +
                ": expected disjoint tensor data, found tensor 'a' [0, 16] overlapping "
                "tensor 'b' [8, 24]");
}

TEST_F(SafetensorsErrors, MissingTensorAndMissingFile) {
  write_file(path_, make_safetensors({{"a", "F32", {1}, 4}}));
  const SafetensorsFile f(path_);
  EXPECT_EQ(error_of([&] { f.get("b"); }), path_ + ": tensor 'b' not found");
  EXPECT_EQ(error_of([&] { SafetensorsFile g(tmp_.file("absent.safetensors")); }),
            tmp_.file("absent.safetensors") + ": cannot open (No such file or directory)");
}

}  // namespace
}  // namespace kvq::model
