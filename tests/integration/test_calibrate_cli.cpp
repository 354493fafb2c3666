// kvq calibrate and kvq inspect end to end on the real small models: a valid calib.h5 that
// inspect accepts, the same content from the same inputs and seed, the outlier key channels in
// the per-channel ranges, and every bad input refused with no file left at the output path.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "kvq/artifact/h5.h"
#include "kvq/model/io/safetensors.h"
#include "support/test_support.h"

namespace kvq {
namespace {

using test::data_path;
using test::expect_one_line_error;
using test::kModel18m;
using test::kModel1m;
using test::kTest;
using test::kTrain;
using test::quoted;
using test::run_kvq;

std::string calibrate_args(const std::string& model, const std::string& data,
                           const std::string& out) {
  return "calibrate --model " + quoted(model) + " --data " + quoted(data) + " --out " + quoted(out);
}

// Every file in `dir` (the output and any temporary file a writer could leave).
std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  return names;
}

// Every dataset under `g`, recursively, as "<path>" -> raw values (compared as bytes).
void collect(const artifact::Group& g, std::map<std::string, std::string>& out) {
  for (const std::string& name : g.children()) {
    const artifact::DatasetInfo info = [&] {
      try {
        return g.dataset_info(name);
      } catch (const Error&) {
        return artifact::DatasetInfo{"group", {}, false};
      }
    }();
    auto bytes = [](const auto& a) {
      return std::string(reinterpret_cast<const char*>(a.values.data()),
                         a.values.size() * sizeof(a.values[0]));
    };
    if (info.dtype == "group") {
      collect(g.open_group(name), out);
    } else if (info.dtype == "float64") {
      out[g.where(name)] = bytes(g.read<double>(name));
    } else if (info.dtype == "float32") {
      out[g.where(name)] = bytes(g.read<float>(name));
    } else if (info.dtype == "int64") {
      out[g.where(name)] = bytes(g.read<int64_t>(name));
    } else {
      ADD_FAILURE() << "unexpected dtype " << info.dtype << " at " << g.where(name);
    }
  }
}

TEST(CliCalibrate, Llama1m16x512WritesAnArtifactInspectAccepts) {
  KVQ_REQUIRE_DATA(kModel1m);
  test::TempDir tmp;
  const std::string out = tmp.file("calib.h5");
  const auto r = run_kvq(calibrate_args(data_path(kModel1m), data_path(kTrain), out) +
                         " --samples 16 --seq-len 512 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << "progress on stderr: " << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["data"]["n_sequences"], 16);
  EXPECT_EQ(j["data"]["seq_len"], 512);
  EXPECT_GT(j["run"]["tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(j["run"]["peak_rss_bytes"].get<double>(), 0.0);
  ASSERT_EQ(j["layers"].size(), 4u);
  // A few key channels are much larger than the typical one (the reason for per-channel keys).
  double largest_ratio = 0;
  for (const auto& l : j["layers"]) {
    largest_ratio = std::max(largest_ratio, l["key"]["max_abs"].get<double>() /
                                                l["key"]["median_channel_max"].get<double>());
    EXPECT_GT(l["key"]["fisher_mean"].get<double>(), 0.0);
    EXPECT_GT(l["value"]["fisher_mean"].get<double>(), 0.0);
  }
  EXPECT_GT(largest_ratio, 2.0);

  const auto table = run_kvq("inspect " + quoted(out));
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("| layer | K max abs"), std::string::npos) << table.out;
  const auto inspected = nlohmann::json::parse(run_kvq("inspect --json " + quoted(out)).out);
  EXPECT_EQ(inspected["valid"], true);
  EXPECT_EQ(inspected["layers"], j["layers"]);
  EXPECT_EQ(files_in(tmp.path()), std::vector<std::string>{"calib.h5"});
}

TEST(CliCalibrate, SameInputsAndSeedGiveIdenticalDatasets) {
  KVQ_REQUIRE_DATA(kModel1m);
  test::TempDir tmp;
  std::map<std::string, std::string> runs[3];
  const std::string seeds[3] = {"7", "7", "8"};
  for (int i = 0; i < 3; ++i) {
    const std::string out = tmp.file("c" + std::to_string(i) + ".h5");
    const auto r = run_kvq(calibrate_args(data_path(kModel1m), data_path(kTest), out) +
                           " --samples 3 --seq-len 128 --quiet --seed " + seeds[i]);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    collect(artifact::File::open(out).root(), runs[i]);
  }
  ASSERT_GT(runs[0].size(), 20u);
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (const auto& [path, bytes] : runs[0]) {
    const std::string rel = path.substr(path.find(':'));
    const auto other = std::find_if(runs[1].begin(), runs[1].end(), [&](const auto& kv) {
      return kv.first.substr(kv.first.find(':')) == rel;
    });
    ASSERT_NE(other, runs[1].end()) << rel;
    EXPECT_EQ(bytes, other->second) << "differs between identical runs: " << rel;
  }
  // ...and a different seed draws different sequences.
  const auto hist = [](const std::map<std::string, std::string>& m) {
    for (const auto& [path, bytes] : m) {
      if (path.find("/layers/00/key/hist_count") != std::string::npos) return bytes;
    }
    return std::string();
  };
  EXPECT_NE(hist(runs[0]), hist(runs[2]));
}

TEST(CliCalibrate, Llama18mShowsTheLargeKeyChannelOfLayer1) {
  KVQ_REQUIRE_DATA(kModel18m);
  test::TempDir tmp;
  const std::string out = tmp.file("calib.h5");
  const auto r = run_kvq(calibrate_args(data_path(kModel18m), data_path(kTest), out) +
                         " --samples 2 --seq-len 256 --quiet --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto layer1 = nlohmann::json::parse(r.out)["layers"][1]["key"];
  // reference.json key_channel_max for layer 1: 11.8 against a median channel max of 3.05.
  EXPECT_GT(layer1["max_abs"].get<double>(), 8.0);
  EXPECT_LT(layer1["median_channel_max"].get<double>(), 4.5);
}

class CalibrateBadInput : public ::testing::Test {
 protected:
  void SetUp() override { KVQ_REQUIRE_DATA(kModel1m); }
  std::string run_args(const std::string& data, const std::string& extra) const {
    return calibrate_args(data_path(kModel1m), data, out()) + " --quiet " + extra;
  }
  std::string out() const { return tmp.file("calib.h5"); }
  void expect_nothing_written() const {
    EXPECT_TRUE(files_in(tmp.path()).size() <= 1) << "left behind in " << tmp.path();
    EXPECT_FALSE(std::filesystem::exists(out()));
    for (const auto& name : files_in(tmp.path()))
      EXPECT_EQ(name.find("calib.h5"), std::string::npos) << name;
  }
  test::TempDir tmp;
};

TEST_F(CalibrateBadInput, UnwritableOutputPath) {
  const auto r = run_kvq(
      calibrate_args(data_path(kModel1m), data_path(kTest), tmp.file("no/such/dir/calib.h5")) +
      " --quiet --samples 1 --seq-len 64");
  expect_one_line_error(r, "calibrate", tmp.file("no/such/dir"));
  expect_nothing_written();
}

TEST_F(CalibrateBadInput, ZeroSamples) {
  expect_one_line_error(run_kvq(run_args(data_path(kTest), "--samples 0")), "calibrate",
                        "--samples: expected 1..1048576, found 0");
  expect_nothing_written();
}

// Size flags have stated maxima, checked before the model loads: 2e9 key bins would otherwise
// ask for a terabyte of histograms.
TEST_F(CalibrateBadInput, SizeFlagsAboveTheirMaximum) {
  const auto t0 = std::chrono::steady_clock::now();
  expect_one_line_error(run_kvq(run_args(data_path(kTest), "--key-bins 2000000000")), "calibrate",
                        "--key-bins: expected 2..65536, found 2000000000");
  expect_one_line_error(run_kvq(run_args(data_path(kTest), "--value-bins 1")), "calibrate",
                        "--value-bins: expected 2..1048576, found 1");
  // Refused before any allocation: the bound only catches a terabyte's worth of work, so it is
  // loose for two kvq starts on a loaded 2-core CI machine (~2 s each there).
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  expect_nothing_written();
}

TEST_F(CalibrateBadInput, DataShorterThanOneSequence) {
  test::write_file(tmp.file("short.txt"), "only a few words of text\n");
  expect_one_line_error(run_kvq(run_args(tmp.file("short.txt"), "--samples 1 --seq-len 64")),
                        "calibrate", "--data");
  EXPECT_FALSE(std::filesystem::exists(out()));
}

TEST_F(CalibrateBadInput, DataTheTokenizerTurnsIntoNoTokens) {
  test::write_file(tmp.file("empty.jsonl"), "{\"text\": \"\"}\n{\"text\": \"\"}\n");
  const auto r = run_kvq(run_args(tmp.file("empty.jsonl"), "--samples 1 --seq-len 64"));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("no t"), std::string::npos) << r.err;  // "no text" or "no tokens"
  EXPECT_FALSE(std::filesystem::exists(out()));
}

// A copy of wt2-llama-1m whose layer-1 key projection is ~3e38 everywhere: its Keys overflow to
// inf, as an fp16 overflow would, and the calibration must stop rather than write NaN.
TEST_F(CalibrateBadInput, NonFiniteActivationsOrGradients) {
  const std::string src = data_path(kModel1m);
  const std::string dir = tmp.file("broken-model");
  std::filesystem::create_directory(dir);
  for (const char* f : {"config.json", "tokenizer.model"})
    std::filesystem::copy(src + "/" + f, dir + "/" + f);
  std::string bytes = test::read_file(src + "/model.safetensors");
  {
    const model::SafetensorsFile file(src + "/model.safetensors");
    const model::TensorView& wk = file.get("model.layers.1.self_attn.k_proj.weight");
    const size_t offset =
        bytes.find(std::string(reinterpret_cast<const char*>(wk.data), wk.n_bytes));
    ASSERT_NE(offset, std::string::npos);
    std::fill(bytes.begin() + offset, bytes.begin() + offset + wk.n_bytes, '\x7f');
  }
  test::write_file(dir + "/model.safetensors", bytes);
  const auto r =
      run_kvq(calibrate_args(dir, data_path(kTest), out()) + " --quiet --samples 1 --seq-len 64");
  expect_one_line_error(r, "calibrate", "not finite");
  expect_nothing_written();
}

TEST(CliInspect, RefusesWhatIsNotACalibArtifact) {
  test::TempDir tmp;
  test::write_file(tmp.file("text.h5"), "not hdf5 at all\n");
  expect_one_line_error(run_kvq("inspect " + quoted(tmp.file("text.h5"))), "inspect",
                        "not an HDF5 file");
  {
    artifact::File f = artifact::File::create(tmp.file("newer.h5"));
    f.root().set_string_attr("schema", "kvq.calib/3");
    f.close();
  }
  expect_one_line_error(run_kvq("inspect " + quoted(tmp.file("newer.h5"))), "inspect",
                        "upgrade kvq");
  {  // version 1 held value histograms per KV head only
    artifact::File f = artifact::File::create(tmp.file("older.h5"));
    f.root().set_string_attr("schema", "kvq.calib/1");
    f.close();
  }
  expect_one_line_error(
      run_kvq("inspect " + quoted(tmp.file("older.h5"))), "inspect",
      "schema kvq.calib/1 is older than this kvq reads (kvq.calib/2); make it again with this kvq");
}

}  // namespace
}  // namespace kvq
