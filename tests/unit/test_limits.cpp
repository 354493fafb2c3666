// Limits before work and strict model readers: checked size arithmetic, capped problem lists,
// duplicate JSON keys (config.json, safetensors headers, index files), layer counts a checkpoint
// cannot hold, unused tensors and shapes beyond 2^63, each rejected with its exact message.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <sys/stat.h>

#include <chrono>
#include <string>
#include <string_view>

#include "kvq/artifact/h5.h"
#include "kvq/artifact/validate.h"
#include "kvq/common/json.h"
#include "kvq/common/limits.h"
#include "kvq/model/io/checkpoint.h"
#include "kvq/model/io/config.h"
#include "kvq/model/io/safetensors.h"
#include "unit/model_io_fixtures.h"

namespace kvq {
namespace {

using nlohmann::json;
using test::error_of;
using test::TempDir;
using test::write_file;

TEST(CheckedSize, MultiplyAndAddDetectOverflow) {
  EXPECT_EQ(checked_mul(1ull << 31, 1ull << 32, "x"), 1ull << 63);
  EXPECT_EQ(checked_add(UINT64_MAX - 1, 1, "x"), UINT64_MAX);
  EXPECT_EQ(error_of([] { checked_mul(1ull << 32, 1ull << 32, "f.h5:/d"); }),
            "f.h5:/d: expected a size below 2^64, found 4294967296 * 4294967296");
  EXPECT_EQ(error_of([] { checked_add(UINT64_MAX, 1, "--n"); }),
            "--n: expected a size below 2^64, found 18446744073709551615 + 1");
  EXPECT_EQ(checked_product({2, 3, 4}, 8, "x"), 192u);
  EXPECT_EQ(error_of([] {
              checked_product({1ull << 40, 1ull << 30}, 2, "s");
            }),
            "s: expected a size below 2^64, found 2199023255552 * 1073741824");
}

TEST(CappedList, ListsAtMostMaxThenCounts) {
  EXPECT_EQ(capped_list({}), "");
  EXPECT_EQ(capped_list({"a", "b"}, 2), "a, b");
  EXPECT_EQ(capped_list({"a", "b", "c", "d"}, 2), "a, b ... and 2 more");
  std::vector<std::string> many(1000000, "x");
  EXPECT_EQ(capped_list(many).size(),
            std::string("x, x, x, x, x, x, x, x, x, x ... and 999990 more").size());
}

TEST(StrictJson, DuplicateKeysAreErrorsNamingThePath) {
  EXPECT_EQ(parse_json_strict(R"({"a": 1, "b": {"a": 2}})", "f").at("b").at("a"), 2);
  EXPECT_EQ(error_of([] { parse_json_strict(R"({"a": 1, "a": 2})", "f.json"); }),
            "f.json: expected unique keys, found 'a' twice in /");
  EXPECT_EQ(error_of([] { parse_json_strict(R"({"x": [0, {"k": 1, "k": 1}]})", "f.json"); }),
            "f.json: expected unique keys, found 'k' twice in /x/[1]");
  EXPECT_EQ(error_of([] { parse_json_strict(R"({"x": {"y": {}, "y": {}}})", "f.json"); }),
            "f.json: expected unique keys, found 'y' twice in /x");
  // Same key in sibling objects is fine.
  EXPECT_NO_THROW(parse_json_strict(R"([{"a": 1}, {"a": 2}])", "f"));
}

// A number past double's range is the library's out_of_range, not a parse error: it is worded
// with its file like every other JSON error (config.json, a safetensors header, serve's body).
TEST(StrictJson, NumberOverflowNamesTheFile) {
  EXPECT_EQ(error_of([] { parse_json_strict(R"({"rope_theta": 1e400})", "m/config.json"); }),
            "m/config.json: invalid JSON (number overflow parsing '1e400')");
  TempDir tmp;
  write_file(tmp.file("config.json"), R"({"model_type": "llama", "rope_theta": -1e999})");
  EXPECT_EQ(error_of([&] { model::parse_hf_config(tmp.file("config.json")); }),
            tmp.file("config.json") + ": invalid JSON (number overflow parsing '-1e999')");
  EXPECT_THROW(parse_json_strict("{\"a\": }", "f"), nlohmann::json::parse_error);
  for (const char* text : {R"({"a": -8e4999999999})", "[1, 2, 1e400]"}) {  // found by fuzz_config
    EXPECT_NE(error_of([&] {
                parse_json_strict(text, "f.json");
              }).find("f.json: invalid JSON (number overflow parsing"),
              std::string::npos)
        << text;
  }
}

// Inputs read whole must be regular files: a FIFO nobody writes would block the open itself.
TEST(RegularFile, FifosDevicesAndFoldersAreRefusedWithoutOpening) {
  TempDir tmp;
  ASSERT_EQ(::mkfifo(tmp.file("fifo").c_str(), 0644), 0);
  write_file(tmp.file("f.json"), "{}");
  EXPECT_EQ(error_of([&] { require_regular_file(tmp.file("fifo"), "--prompts: x"); }),
            "--prompts: x: expected a regular file, found a FIFO");
  EXPECT_EQ(error_of([] { require_regular_file("/dev/zero", "/dev/zero"); }),
            "/dev/zero: expected a regular file, found a character device");
  EXPECT_EQ(error_of([&] { require_regular_file(tmp.path(), "d"); }),
            "d: expected a regular file, found a directory");
  EXPECT_EQ(error_of([&] { require_regular_file(tmp.file("none"), "n"); }),
            "n: cannot open (No such file or directory)");
  EXPECT_EQ(error_of([&] { require_regular_file(tmp.file("f.json"), "f"); }), "<no error>");
  EXPECT_EQ(error_of([&] { artifact::File::open(tmp.file("fifo")); }),
            tmp.file("fifo") + ": expected an HDF5 file, found a FIFO");
}

// However many problems a corrupt artifact yields, 20 are kept and the rest counted.
TEST(ProblemList, KeepsTheFirstTwentyAndCountsTheRest) {
  artifact::Problems p;
  for (int i = 0; i < 1000000; ++i) p.add("f.h5:/layers/" + std::to_string(i), "missing group");
  EXPECT_EQ(p.size(), 1000000u);
  EXPECT_EQ(p.list().size(), 20u);
  EXPECT_EQ(p.n_omitted(), 999980u);
  EXPECT_EQ(p.list().back(), "f.h5:/layers/19: missing group");
  EXPECT_EQ(error_of([&] { p.throw_if_any(); }), "f.h5:/layers/0: missing group (and 999999 more)");
}

// A dataset whose shape claims 2^40 float64 values in a file of a few kB fails before allocating.
TEST(H5Limits, DatasetShapeIsBoundedByTheStoredBytes) {
  TempDir tmp;
  const std::string path = tmp.file("big.h5");
  {
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[1] = {hsize_t{1} << 40}, chunk[1] = {1024};
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, chunk);
    const hid_t d = H5Dcreate2(f, "x", H5T_IEEE_F64LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ASSERT_GE(d, 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(f);
  }
  const artifact::File file = artifact::File::open(path);
  EXPECT_EQ(error_of([&] { file.root().read<double>("x"); }),
            path + ":/x: shape [1099511627776] needs 8796093022208 bytes, the file stores 0");
}

class StrictModelDir : public ::testing::Test {
 protected:
  std::string open_error() {
    return error_of([&] { model::open_checkpoint(tmp_.path()); });
  }
  TempDir tmp_;
  std::string config_ = tmp_.file("config.json");
  std::string st_ = tmp_.file("model.safetensors");
};

TEST_F(StrictModelDir, DuplicateKeyInConfig) {
  write_file(st_, test::make_safetensors(test::tiny_tensors()));
  std::string text = test::tiny_config().dump();
  text.insert(1, R"("num_hidden_layers": 1, )");
  write_file(config_, text);
  EXPECT_EQ(open_error(), config_ + ": expected unique keys, found 'num_hidden_layers' twice in /");
}

TEST_F(StrictModelDir, DuplicateTensorInSafetensorsHeader) {
  const std::string header = R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},)"
                             R"( "w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})";
  write_file(st_, test::safetensors_bytes(header, "ab"));
  EXPECT_EQ(error_of([&] { model::SafetensorsFile f(st_); }),
            st_ + ": header: expected unique keys, found 'w' twice in /");
}

TEST_F(StrictModelDir, DuplicateKeyInIndex) {
  write_file(config_, test::tiny_config().dump());
  write_file(tmp_.file("a.safetensors"), test::make_safetensors(test::tiny_tensors()));
  const std::string index = tmp_.file("model.safetensors.index.json");
  write_file(index, R"({"weight_map": {"model.norm.weight": "a.safetensors",)"
                    R"( "model.norm.weight": "b.safetensors"}})");
  EXPECT_EQ(open_error(),
            index + ": expected unique keys, found 'model.norm.weight' twice in /weight_map");
}

TEST_F(StrictModelDir, HugeLayerCountFailsBeforeBuildingTheList) {
  write_file(st_, test::make_safetensors(test::tiny_tensors()));
  json cfg = test::tiny_config();
  cfg["num_hidden_layers"] = 1000000000000000;
  write_file(config_, cfg.dump());
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(open_error(),
            config_ + ": field 'num_hidden_layers' must be at most 65536, found 1000000000000000");
  // Below the stated maximum, the tensors present bound it before any name is built.
  cfg["num_hidden_layers"] = 65536;
  write_file(config_, cfg.dump());
  EXPECT_EQ(open_error(),
            config_ + ": 65536 layers exceed the 21 tensors of the " + "checkpoint " + tmp_.path());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  cfg["num_hidden_layers"] = 3;
  write_file(config_, cfg.dump());
  EXPECT_EQ(open_error(), st_ + ": tensor 'model.layers.2.input_layernorm.weight' not found");
}

TEST_F(StrictModelDir, FewerLayersThanTheCheckpointNamesUnusedTensors) {
  write_file(st_, test::make_safetensors(test::tiny_tensors()));
  json cfg = test::tiny_config();
  cfg["num_hidden_layers"] = 1;
  write_file(config_, cfg.dump());
  EXPECT_EQ(open_error(), st_ + ": expected only the tensors of 1 layers (" + config_ +
                              "), found 9 unused: 'model.layers.1.input_layernorm.weight', "
                              "'model.layers.1.mlp.down_proj.weight', "
                              "'model.layers.1.mlp.gate_proj.weight', "
                              "'model.layers.1.mlp.up_proj.weight', "
                              "'model.layers.1.post_attention_layernorm.weight', "
                              "'model.layers.1.self_attn.k_proj.weight', "
                              "'model.layers.1.self_attn.o_proj.weight', "
                              "'model.layers.1.self_attn.q_proj.weight', "
                              "'model.layers.1.self_attn.v_proj.weight'");
  // A stray extra tensor, and a tied config beside an lm_head, are unused too.
  auto t = test::tiny_tensors();
  t.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {2}});
  write_file(st_, test::make_safetensors(t));
  cfg["num_hidden_layers"] = 2;
  cfg["tie_word_embeddings"] = true;
  write_file(config_, cfg.dump());
  EXPECT_EQ(open_error(), st_ + ": expected only the tensors of 2 layers (" + config_ +
                              "), found 2 unused: 'lm_head.weight', "
                              "'model.layers.0.self_attn.rotary_emb.inv_freq'");
}

TEST_F(StrictModelDir, UnusedListIsCapped) {
  auto t = test::tiny_tensors();
  for (int i = 0; i < 25; ++i) t.push_back({"extra." + std::to_string(100 + i), "F32", {1}});
  write_file(st_, test::make_safetensors(t));
  write_file(config_, test::tiny_config().dump());
  const std::string e = open_error();
  EXPECT_NE(e.find("found 25 unused: 'extra.100', "), std::string::npos) << e;
  EXPECT_NE(e.find("'extra.109' ... and 15 more"), std::string::npos) << e;
}

TEST_F(StrictModelDir, ShapeAbove2To63PrintsUnsigned) {
  const std::string header =
      R"({"w": {"dtype": "U8", "shape": [9223372036854775808], "data_offsets": [0, 1]}})";
  write_file(st_, test::safetensors_bytes(header, "a"));
  EXPECT_EQ(error_of([&] { model::SafetensorsFile f(st_); }),
            st_ + ": tensor 'w' shape [9223372036854775808] has a dimension above 2^63 - 1");
}

}  // namespace
}  // namespace kvq
