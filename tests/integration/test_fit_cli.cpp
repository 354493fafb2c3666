// kvq fit and kvq inspect end to end on a calib.h5 of wt2-llama-1m: nuq3-1%, kivi2, skvq and fp8
// fits that inspect accepts, --json that parses and agrees with inspect, a mixed-precision budget,
// and every bad input refused with one line and no file left at --out.
#include <gtest/gtest.h>

#include <hdf5.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvq/artifact/h5.h"
#include "support/h5_edit.h"
#include "support/test_support.h"

namespace kvq {
namespace {

using test::data_path;
using test::expect_one_line_error;
using test::quoted;
using test::run_kvq;

const std::string kModel = "models/wt2-llama-1m";

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// In-place edits of a copy of an artifact through HDF5's C API, to make values out of their
// documented ranges while everything else stays valid.
void h5_edit(const std::string& file, const std::function<void(hid_t)>& edit) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0) << file;
  edit(f);
  H5Fclose(f);
}
void h5_set_attr(hid_t f, const char* name, double value, const char* object = "/") {
  const hid_t o = H5Oopen(f, object, H5P_DEFAULT);
  ASSERT_GE(o, 0) << object;
  const hid_t a = H5Aopen(o, name, H5P_DEFAULT);
  ASSERT_GE(a, 0) << name;
  EXPECT_GE(H5Awrite(a, H5T_NATIVE_DOUBLE, &value), 0);
  H5Aclose(a);
  H5Oclose(o);
}
void h5_set_attr(hid_t f, const char* name, int64_t value) {
  const hid_t a = H5Aopen_by_name(f, "/", name, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(a, 0) << name;
  EXPECT_GE(H5Awrite(a, H5T_NATIVE_INT64, &value), 0);
  H5Aclose(a);
}
class FitCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_data(kModel)) return;
    calib_dir_ = std::make_unique<test::TempDir>();
    const auto r = run_kvq("calibrate --model " + quoted(data_path(kModel)) + " --data " +
                           quoted(data_path(test::kValid)) +
                           " --samples 4 --seq-len 256 --quiet --out " + quoted(calib()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { calib_dir_.reset(); }
  void SetUp() override { KVQ_REQUIRE_DATA(kModel); }

  static std::string calib() { return calib_dir_->file("calib.h5"); }
  std::string out() const { return tmp_.file("quant.h5"); }
  test::CommandResult fit(const std::string& method, const std::string& extra = "") const {
    return run_kvq("fit --calib " + quoted(calib()) + " --method " + quoted(method) + " --out " +
                   quoted(out()) + " " + extra);
  }
  nlohmann::json fit_json(const std::string& method, const std::string& extra = "") const {
    const auto r = fit(method, "--json " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }
  void expect_inspect_agrees(const nlohmann::json& fitted) const {
    const auto table = run_kvq("inspect " + quoted(out()));
    ASSERT_EQ(table.exit_code, 0) << table.err;
    EXPECT_NE(table.out.find("kvq.quant/2"), std::string::npos) << table.out;
    const auto j = run_kvq("inspect --json " + quoted(out()));
    ASSERT_EQ(j.exit_code, 0) << j.err;
    const auto inspected = nlohmann::json::parse(j.out);
    EXPECT_EQ(inspected["valid"], true);
    EXPECT_EQ(inspected["layers"], fitted["layers"]);
    EXPECT_EQ(inspected["method"], fitted["method"]);
  }
  void expect_nothing_written() const { EXPECT_TRUE(files_in(tmp_.path()).empty()) << tmp_.path(); }

  static std::unique_ptr<test::TempDir> calib_dir_;
  test::TempDir tmp_;
};

std::unique_ptr<test::TempDir> FitCli::calib_dir_;

TEST_F(FitCli, Nuq3WithOutliers) {
  const auto j = fit_json("nuq3-1%");
  EXPECT_EQ(j["method"], "nuq3-1%");
  EXPECT_EQ(j["n_layers"], 4);
  EXPECT_EQ(j["model"]["n_kv_heads"], 2);
  EXPECT_EQ(j["data"]["n_sequences"], 4);
  ASSERT_EQ(j["layers"].size(), 4u);
  for (const auto& l : j["layers"]) {
    EXPECT_EQ(l["key"]["levels_encode"].size(), 8u);
    EXPECT_EQ(l["value"]["levels_decode"].size(), 8u);
    EXPECT_EQ(l["key"]["outlier_fraction"], 0.01);
    EXPECT_EQ(l["key"]["pre_rope"], true);
    EXPECT_GT(l["key"]["fisher_error"].get<double>(), 0.0);
  }
  // 3-bit codes, fp16 scales per value vector of 64 (a token of 2 KV heads x 32), a few
  // outliers: between 3.5 and 6 bits.
  EXPECT_GT(j["bits_per_element"]["total"].get<double>(), 3.5);
  EXPECT_LT(j["bits_per_element"]["total"].get<double>(), 6.0);
  expect_inspect_agrees(j);
  EXPECT_EQ(files_in(tmp_.path()), std::vector<std::string>{"quant.h5"});
  const auto table = fit("nuq3-1%");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("| layer | K bits | V bits | outliers |"), std::string::npos)
      << table.out;
}

TEST_F(FitCli, KiviSkvqFp8AndCalibrationFree) {
  const auto kivi = fit_json("kivi2");
  EXPECT_EQ(kivi["method"], "kivi2-g32-r128");
  EXPECT_EQ(kivi["cache"]["window_kind"], "residual");
  EXPECT_EQ(kivi["cache"]["key_time_group"], 32);
  expect_inspect_agrees(kivi);
  const auto skvq = fit_json("skvq-k2-v2-g128-w128");
  EXPECT_EQ(skvq["cache"]["n_sink"], 5);
  EXPECT_EQ(skvq["layers"][0]["key"]["perm"].size(), 64u);
  const double clip = skvq["layers"][0]["key"]["clip"].get<double>();
  EXPECT_TRUE(clip > 0.49 && clip <= 1.0) << clip;
  expect_inspect_agrees(skvq);
  const auto fp8 = fit_json("fp8-e4m3");
  EXPECT_GT(fp8["layers"][0]["key"]["amax"].get<double>(), 0.0);
  expect_inspect_agrees(fp8);
  // Without calib: fp8 is dynamic and layer-independent; with --model, per-layer tables.
  const auto r = run_kvq("fit --method fp8-e5m2 --json --out " + quoted(out()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["n_layers"], 0);
  const auto m = run_kvq("fit --method int4 --json --model " + quoted(data_path(kModel)) +
                         " --out " + quoted(out()));
  ASSERT_EQ(m.exit_code, 0) << m.err;
  const auto mj = nlohmann::json::parse(m.out);
  EXPECT_EQ(mj["n_layers"], 4);
  EXPECT_EQ(mj["data"], nullptr);
  EXPECT_EQ(mj["bits_per_element"]["total"], 5.0);
  EXPECT_EQ(run_kvq("inspect " + quoted(out())).exit_code, 0);
}

TEST_F(FitCli, BitsBudget) {
  const auto j = fit_json("nuq3-1%", "--bits-budget 2.5");
  EXPECT_EQ(j["bits_budget"], 2.5);
  double sum = 0;
  for (const auto& l : j["layers"]) {
    for (const char* kind : {"key", "value"}) {
      const int bits = l[kind]["bits"];
      EXPECT_TRUE(bits >= 2 && bits <= 4) << bits;
      EXPECT_EQ(l[kind]["levels_encode"].size(), size_t{1} << bits);
      sum += bits;
    }
  }
  EXPECT_LE(sum / 8, 2.5);
  EXPECT_NE(j["label"].get<std::string>().find("mixed"), std::string::npos);
  expect_inspect_agrees(j);
}

TEST_F(FitCli, BadInputs) {
  expect_one_line_error(fit("foo"), "fit", "method 'foo': unknown method family 'foo'");
  expect_one_line_error(fit("nuq5"), "fit", "method 'nuq5': nuq bits: expected 2..4, found 5");
  expect_one_line_error(fit("int9"), "fit", "method 'int9': int bits: expected 1..8, found 9");
  expect_one_line_error(fit("nuq3-3%"), "fit",
                        "outlier fraction 0.03 is not among the calibrated fractions");
  expect_one_line_error(fit("nuq3", "--bits-budget 5"), "fit",
                        "--bits-budget: expected 2..4 average code bits per element, found 5");
  expect_one_line_error(fit("kivi2", "--bits-budget 3"), "fit",
                        "--bits-budget: only nuq methods take a budget");
  expect_one_line_error(run_kvq("fit --method nuq3 --out " + quoted(out())), "fit",
                        "method nuq3 needs --calib calib.h5");
  expect_one_line_error(run_kvq("fit --method nuq3 --calib " + quoted(tmp_.file("none.h5")) +
                                " --out " + quoted(out())),
                        "fit", "none.h5");
  expect_nothing_written();
  const auto unwritable = run_kvq("fit --method int4 --out " + quoted(tmp_.file("no/dir/q.h5")));
  expect_one_line_error(unwritable, "fit", tmp_.file("no/dir"));
  expect_nothing_written();
  // inspect on a newer schema and on a corrupted level.
  {
    artifact::File f = artifact::File::create(out());
    f.root().set_string_attr("schema", "kvq.quant/3");
    f.close();
  }
  expect_one_line_error(run_kvq("inspect " + quoted(out())), "inspect", "upgrade kvq");
}

TEST_F(FitCli, InspectListsEveryProblemOfACorruptedFile) {
  ASSERT_EQ(fit("nuq2-1%").exit_code, 0);
  // Rewrite the file with one NaN level, through the h5 layer, keeping everything else.
  const std::string bad = tmp_.file("bad.h5");
  {
    const artifact::File src = artifact::File::open(out());
    artifact::File dst = artifact::File::create(bad);
    const artifact::Group s = src.root(), d = dst.root();
    for (const char* a : {"schema", "tool_version", "created", "method", "fingerprint",
                          "model.source", "model.architecture", "model.rope_scaling",
                          "model.weights_checksum", "data.source", "data.sha256"}) {
      d.set_string_attr(a, s.string_attr(a));
    }
    for (const char* a :
         {"n_layers", "n_kv_heads", "head_dim", "model.n_layers", "model.dim", "model.n_heads",
          "model.n_kv_heads", "model.head_dim", "model.vocab_size", "model.max_seq_len",
          "data.n_tokens", "data.n_sequences", "data.seq_len", "data.seed"}) {
      d.set_int_attr(a, s.int_attr(a));
    }
    d.set_double_attr("bits_budget", s.double_attr("bits_budget"));
    d.set_double_attr("model.rope_theta", s.double_attr("model.rope_theta"));
    for (int i = 0; i < 4; ++i) {
      for (const std::string kind : {"key", "value"}) {
        const std::string path = "layers/0" + std::to_string(i) + "/" + kind;
        const artifact::Group sg = s.open_group(path), dg = d.create_group(path);
        dg.set_int_attr("bits", sg.int_attr("bits"));
        dg.set_double_attr("outlier_fraction", sg.double_attr("outlier_fraction"));
        dg.set_string_attr("granularity", sg.string_attr("granularity"));
        if (kind == "key") dg.set_int_attr("pre_rope", sg.int_attr("pre_rope"));
        for (const std::string name : {"levels_encode", "levels_decode", "lo", "hi"}) {
          if (!sg.exists(name)) continue;
          artifact::Array<float> a = sg.read<float>(name);
          if (i == 2 && kind == "value" && name == "levels_decode") a.values[1] = std::nanf("");
          dg.write<float>(name, a.values, a.shape);
        }
      }
    }
    dst.close();
  }
  const auto r = run_kvq("inspect " + quoted(bad));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(
      r.out.find("problem: " + bad +
                 ":/layers/02/value/levels_decode: expected finite values, found nan at index 1"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.err.find("1 problem(s) found"), std::string::npos) << r.err;
}

// calib.h5 values outside the ranges schemas/calib-2.md documents are refused by inspect (a
// problem line naming the file, the path and the range) and by fit (one line, nothing written).
TEST_F(FitCli, CalibValuesOutOfRangeAreRefused) {
  struct Case {
    std::function<void(hid_t)> edit;
    std::string problem;
  };
  const std::string bad = tmp_.file("bad-calib.h5");
  const Case cases[] = {
      {[](hid_t f) { test::h5_set_element(f, "/layers/01/value/token/outlier_fraction", 2, 2.0); },
       bad + ":/layers/01/value/token/outlier_fraction: expected values in [0, 1], found 2 at "
             "index 2"},
      {[](hid_t f) { test::h5_set_element<int64_t>(f, "/layers/00/samples/positions", 0, -5); },
       bad + ":/layers/00/samples/positions: expected values in [0, 256), found -5 at index 0"},
      {[](hid_t f) { h5_set_attr(f, "mean_loss", std::nan("")); },
       bad + ":/@mean_loss: expected a finite value >= 0, found nan"},
      {[](hid_t f) { h5_set_attr(f, "key_bins", int64_t{2000000000}); },
       bad + ":/@key_bins: expected 2..65536, found 2000000000"},
      // thresholds [F, 2, C] with C = 64: channel 0's lo and hi at fraction 0.
      {[](hid_t f) {
         test::h5_set_element(f, "/layers/00/key/thresholds", 0, 5.0);
         test::h5_set_element(f, "/layers/00/key/thresholds", 64, 4.0);
       },
       bad + ":/layers/00/key/thresholds: expected lo <= hi, found 5 > 4 at fraction 0 channel 0"},
      {[](hid_t f) {
         for (size_t i = 0; i < 3; ++i)
           test::h5_set_element(f, "/layers/03/value/head/vector_range", 3 + i, 5.0 - i);
       },
       bad + ":/layers/03/value/head/vector_range: expected 0 <= min <= mean <= max, found 5, 4, "
             "3 at fraction 1"},
      {[](hid_t f) { h5_set_attr(f, "model.rope_theta", 0.0); },
       bad + ":/@model.rope_theta: expected a finite value > 0, found 0"},
      // The h5 layer's message names the path once (it used to come twice).
      {[](hid_t f) { EXPECT_GE(H5Ldelete(f, "/layers/00/samples/positions", H5P_DEFAULT), 0); },
       bad + ":/layers/00/samples/positions: missing dataset"},
  };
  for (const Case& c : cases) {
    std::filesystem::copy_file(calib(), bad, std::filesystem::copy_options::overwrite_existing);
    h5_edit(bad, c.edit);
    const auto r = run_kvq("inspect " + quoted(bad));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("problem: " + c.problem + "\n"), std::string::npos) << r.out;
    const auto f =
        run_kvq("fit --calib " + quoted(bad) + " --method nuq3-1% --out " + quoted(out()));
    test::expect_one_line_error(f, "fit", c.problem);
    EXPECT_FALSE(std::filesystem::exists(out()));
  }
}

// A layer count the file cannot hold is refused at once, and problem lists are capped.
// quant.h5 values outside the ranges schemas/quant-2.md documents: inspect lists the problem,
// generate (a reader with a model) refuses the file with the same words.
TEST_F(FitCli, QuantValuesOutOfRangeAreRefused) {
  ASSERT_EQ(fit("nuq2-1%").exit_code, 0);
  struct Case {
    std::function<void(hid_t)> edit;
    std::string problem;
  };
  const std::string bad = tmp_.file("bad-quant.h5");
  const Case cases[] = {
      {[](hid_t f) { h5_set_attr(f, "fisher_error", -1.0, "/layers/00/key"); },
       bad + ":/layers/00/key@fisher_error: expected a finite value >= 0, found -1"},
      {[](hid_t f) { h5_set_attr(f, "outlier_fraction", std::nan(""), "/layers/01/value"); },
       bad + ":/layers/01/value@outlier_fraction: expected 0.01 (nuq2-1%), found nan"},
      {[](hid_t f) {
         test::h5_set_element(f, "/layers/02/key/lo", 3, -3e38f);
         test::h5_set_element(f, "/layers/02/key/hi", 3, 3e38f);
       },
       bad + ":/layers/02/key/hi: expected lo + hi and hi - lo finite in fp32, found lo -3e+38 "
             "and hi 3e+38 in channel 3"},
      {[](hid_t f) {
         test::h5_set_element(f, "/layers/03/key/lo", 0, 3e38f);
         test::h5_set_element(f, "/layers/03/key/hi", 0, 3.2e38f);
       },
       bad + ":/layers/03/key/hi: expected lo + hi and hi - lo finite in fp32, found lo 3e+38 "
             "and hi 3.2e+38 in channel 0"},
      {[](hid_t f) { h5_set_attr(f, "bits_budget", std::nan("")); },
       bad + ":/@bits_budget: expected 0, or 2..4 for a nuq method, found nan (nuq2-1%)"},
      {[](hid_t f) { h5_set_attr(f, "model.rope_theta", std::nan("")); },
       bad + ":/@model.rope_theta: expected a finite value > 0, found nan"},
  };
  for (const Case& c : cases) {
    std::filesystem::copy_file(out(), bad, std::filesystem::copy_options::overwrite_existing);
    h5_edit(bad, c.edit);
    const auto r = run_kvq("inspect " + quoted(bad));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("problem: " + c.problem + "\n"), std::string::npos) << r.out;
    const auto g = run_kvq("generate --model " + quoted(data_path(kModel)) + " --quant " +
                           quoted(bad) + " --prompt The -n 1");
    test::expect_one_line_error(g, "generate", c.problem);
  }
}

TEST_F(FitCli, HugeCountsAndLongProblemListsStayBounded) {
  const std::string bad = tmp_.file("bad-calib.h5");
  std::filesystem::copy_file(calib(), bad);
  // Past config.json's maximum (2^16 layers): refused as a size; at it, by the groups present.
  h5_edit(bad, [](hid_t f) { h5_set_attr(f, "model.n_layers", int64_t{10000000}); });
  auto r = run_kvq("inspect " + quoted(bad));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out,
            "problem: " + bad + ":/@model.n_layers: expected a size in 1..65536, found 10000000\n");
  h5_edit(bad, [](hid_t f) { h5_set_attr(f, "model.n_layers", int64_t{65536}); });
  auto t0 = std::chrono::steady_clock::now();
  r = run_kvq("inspect " + quoted(bad));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "problem: " + bad +
                       ":/layers: expected 65536 layer groups (model.n_layers), found 4\n");

  ASSERT_EQ(fit("nuq2-1%").exit_code, 0);
  const std::string bad_quant = tmp_.file("bad-quant.h5");
  std::filesystem::copy_file(out(), bad_quant);
  h5_edit(bad_quant, [](hid_t f) {
    h5_set_attr(f, "n_layers", int64_t{65536});
    h5_set_attr(f, "model.n_layers", int64_t{65536});
  });
  t0 = std::chrono::steady_clock::now();
  r = run_kvq("inspect " + quoted(bad_quant));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "problem: " + bad_quant +
                       ":/layers: expected 65536 layer groups (n_layers), found 4\n");

  // Channels that disagree with every dataset: dozens of problems, at most 20 listed.
  std::filesystem::copy_file(calib(), bad, std::filesystem::copy_options::overwrite_existing);
  h5_edit(bad, [](hid_t f) { h5_set_attr(f, "model.head_dim", int64_t{16}); });
  r = run_kvq("inspect " + quoted(bad));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 21) << r.out;
  EXPECT_NE(r.out.find("\nproblem: ... and "), std::string::npos) << r.out;
  const auto j = run_kvq("inspect --json " + quoted(bad));
  const auto doc = nlohmann::json::parse(j.out);
  EXPECT_EQ(doc["problems"].size(), 20u);
  EXPECT_GT(doc["n_problems"].get<int64_t>(), 20);
}

}  // namespace
}  // namespace kvq
