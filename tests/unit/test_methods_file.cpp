// kvq/methods quant_file: kvq.quant/2 round trips for every method (per-layer tables, mixed bits,
// fingerprints, layer-independent quantizers), and files written by hand through the h5 layer
// with one defect each are refused with their exact message: a newer schema ("upgrade kvq"),
// another kind, a bad method, NaN or unordered levels, wrong shapes and dtypes, bits that do not
// match the method, a perm that is not a permutation, missing groups; require_model mismatches.
#include "kvq/methods/quant_file.h"

#include <filesystem>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/artifact/fingerprint.h"
#include "support/test_support.h"
#include "unit/methods_fixtures.h"

namespace kvq::methods {
namespace {

using test::error_of;
using test::TempDir;

artifact::ModelFingerprint fingerprint(int64_t n_layers, int64_t h, int64_t d) {
  artifact::ModelFingerprint m;
  m.source = "tiny";
  m.architecture = "llama";
  m.n_layers = n_layers;
  m.n_heads = m.n_kv_heads = h;
  m.head_dim = d;
  m.dim = h * d;
  m.vocab_size = 32;
  m.max_seq_len = 128;
  m.rope_theta = 10000;
  m.rope_scaling = "none";
  m.weights_checksum = "00000000deadbeef";
  return m;
}

LayerParams layer_for(const MethodSpec& spec, int64_t channels, int key_bits, int value_bits) {
  LayerParams l;
  l.key.bits = key_bits;
  l.value.bits = value_bits;
  for (TensorParams* p : {&l.key, &l.value}) {
    p->outlier_fraction = spec.outlier_fraction();
    if (spec.kind == MethodKind::kNuq) {
      for (int j = 0; j < (1 << p->bits); ++j)
        p->levels_encode.push_back(-0.9f + 1.7f * j / ((1 << p->bits) - 1));
      for (float v : p->levels_encode) p->levels_decode.push_back(v * 1.05f);
      p->fisher_error = 0.125;
    }
    if (spec.kind == MethodKind::kSkvq) {
      for (int64_t c = channels - 1; c >= 0; --c) p->perm.push_back(c);
      p->clip = 0.85f;
    }
    if (spec.kind == MethodKind::kFp8) p->amax = p == &l.key ? 3.5f : 0.0f;
  }
  if (spec.kind == MethodKind::kNuq) {
    for (int64_t c = 0; c < channels; ++c) {
      l.key.lo.push_back(-1.0f - c);
      l.key.hi.push_back(1.0f + c);
    }
  }
  return l;
}

TEST(MethodsFile, RoundTripsEveryMethod) {
  TempDir tmp;
  const std::string path = tmp.file("quant.h5");
  for (const std::string method : {"nuq3-1%", "nuq2-sink-vhead-qnorm-post", "skvq-k2-v3-g4-w16",
                                   "fp8-e4m3", "kivi2", "int4-g8", "fp16"}) {
    const MethodSpec spec = parse_method(method);
    std::vector<LayerParams> layers;
    for (int i = 0; i < 3; ++i)
      layers.push_back(layer_for(spec, 8, spec.key_bits, spec.value_bits));
    Quantizer q(spec, layers, 2, 4);
    q.provenance.has_model = q.provenance.has_data = true;
    q.provenance.model = fingerprint(3, 2, 4);
    q.provenance.data.source = "text";
    q.provenance.data.n_sequences = 4;
    write_quant(path, q, "2024-01-01T00:00:00Z");
    const Quantizer r = read_quant(path);
    EXPECT_EQ(r.spec(), spec);
    EXPECT_EQ(r.n_layers(), 3);
    EXPECT_EQ(r.provenance.path, path);
    EXPECT_EQ(r.provenance.created, "2024-01-01T00:00:00Z");
    EXPECT_EQ(r.provenance.data.n_sequences, 4);
    EXPECT_EQ(r.provenance.model.weights_checksum, "00000000deadbeef");
    test::expect_same_params(q, r, 3, method);
    r.require_model(fingerprint(3, 2, 4));
    EXPECT_EQ(error_of([&] { r.require_model(fingerprint(5, 2, 4)); }),
              path +
                  ": made for a different model than tiny: n_layers 3 in the artifact, 5 in the "
                  "model (run kvq "
                  "calibrate with this model)");
  }
  // Per-layer bits from a budget, and a layer-independent quantizer without any fingerprint.
  const MethodSpec nuq = parse_method("nuq3-1%");
  Quantizer mixed(nuq, {layer_for(nuq, 8, 2, 4), layer_for(nuq, 8, 3, 3)}, 2, 4);
  mixed.provenance.bits_budget = 3.0;
  write_quant(path, mixed, "now");
  const Quantizer m = read_quant(path);
  EXPECT_EQ(m.key_params(0).bits, 2);
  EXPECT_EQ(m.value_params(0).bits, 4);
  EXPECT_EQ(m.provenance.bits_budget, 3.0);
  EXPECT_EQ(m.label(), "nuq3-1% (mixed, 3.00 bits)");
  EXPECT_FALSE(m.provenance.has_model);
  m.require_model(fingerprint(2, 2, 4));
  EXPECT_EQ(error_of([&] { m.require_model(fingerprint(2, 4, 4)); }),
            path + ": made for 2 KV heads x 4, the model tiny has 4 x 4");
  write_quant(path, Quantizer(parse_method("int3"), {}, 0, 0), "now");
  EXPECT_EQ(read_quant(path).n_layers(), 0);
  EXPECT_EQ(std::vector<std::string>{"quant.h5"}, [&] {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(tmp.path()))
      names.push_back(e.path().filename().string());
    return names;
  }());
}

// A one-layer quant.h5 (1 KV head x 2) written attribute by attribute, with hooks for defects.
struct HandFile {
  std::string schema = "kvq.quant/2";
  std::string method = "nuq2-1%";
  int64_t key_bits = 2;
  std::vector<float> levels = {-0.9f, -0.2f, 0.3f, 0.8f};
  std::vector<float> lo = {-1.0f, -2.0f}, hi = {1.0f, 2.0f};
  std::vector<int64_t> perm = {1, 0};
  bool value_group = true;
  bool levels_as_double = false;

  void write(const std::string& path) const {
    artifact::File f = artifact::File::create(path);
    const artifact::Group root = f.root();
    root.set_string_attr("schema", schema);
    root.set_string_attr("tool_version", "0.1.0");
    root.set_string_attr("created", "now");
    root.set_string_attr("method", method);
    root.set_double_attr("bits_budget", 0.0);
    root.set_int_attr("n_layers", 1);
    root.set_int_attr("n_kv_heads", 1);
    root.set_int_attr("head_dim", 2);
    root.set_string_attr("fingerprint", "model");
    artifact::write_fingerprints(root, fingerprint(1, 1, 2), {});
    const bool skvq = method.rfind("skvq", 0) == 0;
    for (const char* kind : {"key", "value"}) {
      if (std::string(kind) == "value" && !value_group) continue;
      const artifact::Group g = root.create_group(std::string("layers/00/") + kind);
      const bool key = std::string(kind) == "key";
      g.set_int_attr("bits", key ? key_bits : 2);
      g.set_double_attr("outlier_fraction", skvq ? 0.0 : 0.01);
      g.set_string_attr("granularity", skvq ? "token/perm-group2" : key ? "channel" : "token");
      if (key) g.set_int_attr("pre_rope", 1);
      if (skvq) {
        g.write<int64_t>("perm", perm, {static_cast<int64_t>(perm.size())});
        g.write<float>("clip", std::vector<float>{0.9f}, {});
        continue;
      }
      if (levels_as_double) {
        g.write<double>("levels_encode", std::vector<double>(levels.begin(), levels.end()),
                        {static_cast<int64_t>(levels.size())});
      } else {
        g.write<float>("levels_encode", levels, {static_cast<int64_t>(levels.size())});
      }
      g.write<float>("levels_decode", std::vector<float>{-0.9f, -0.2f, 0.3f, 0.8f}, {4});
      if (key) {
        g.write<float>("lo", lo, {static_cast<int64_t>(lo.size())});
        g.write<float>("hi", hi, {static_cast<int64_t>(hi.size())});
      }
    }
    f.close();
  }
};

class MethodsFileDefects : public ::testing::Test {
 protected:
  std::string read_error(const HandFile& h) {
    h.write(path());
    return error_of([&] { read_quant(path()); });
  }
  std::string path() const { return tmp.file("q.h5"); }
  TempDir tmp;
};

TEST_F(MethodsFileDefects, TheHandWrittenFileIsValid) {
  HandFile h;
  h.write(path());
  const Quantizer q = read_quant(path());
  EXPECT_EQ(q.spec().name(), "nuq2-1%");
  EXPECT_EQ(q.key_params(0).hi, (std::vector<float>{1.0f, 2.0f}));
  HandFile s;
  s.method = "skvq-k2-v2-g2-w4";
  s.write(path());
  EXPECT_EQ(read_quant(path()).value_params(0).perm, (std::vector<int64_t>{1, 0}));
}

TEST_F(MethodsFileDefects, Schema) {
  HandFile h;
  h.schema = "kvq.quant/3";
  EXPECT_EQ(
      read_error(h),
      path() + ":/: schema kvq.quant/3 is newer than this kvq reads (kvq.quant/2); upgrade kvq");
  // Version 1 meant per-(token, head) values and Q-Norm by default under the same method names.
  h.schema = "kvq.quant/1";
  EXPECT_EQ(read_error(h), path() +
                               ":/: schema kvq.quant/1 is older than this kvq reads (kvq.quant/2); "
                               "make it again with this kvq");
  h.schema = "kvq.calib/1";
  EXPECT_EQ(read_error(h),
            path() + ":/: expected a kvq.quant artifact, found kvq.calib (schema \"kvq.calib/1\")");
  h = HandFile();
  h.method = "nuq5";
  EXPECT_EQ(read_error(h),
            path() + ":/@method: method 'nuq5': nuq bits: expected 2..4, found 5 (valid: " +
                method_forms() + ")");
}

TEST_F(MethodsFileDefects, Levels) {
  HandFile h;
  h.levels[1] = std::nanf("");
  EXPECT_EQ(read_error(h), path() +
                               ":/layers/00/key/levels_encode: expected finite values, found nan "
                               "at index 1 (and 1 more)");
  h.levels = {-0.9f, -0.2f, -0.5f, 0.8f};
  EXPECT_EQ(
      read_error(h),
      path() +
          ":/layers/00/key/levels_encode: expected strictly ascending values, found -0.5 after "
          "-0.2 at index 2 (and 1 more)");
  h.levels = {-0.9f, -0.2f, 0.3f, 1.5f};
  EXPECT_EQ(read_error(h), path() +
                               ":/layers/00/key/levels_encode: expected levels in [-1, 1], found "
                               "1.5 at index 3 (and 1 more)");
  h.levels = {-0.9f, 0.0f, 0.8f};
  EXPECT_EQ(read_error(h),
            path() + ":/layers/00/key/levels_encode: expected shape [4], found [3] (and 1 more)");
  h = HandFile();
  h.levels_as_double = true;
  EXPECT_EQ(read_error(h),
            path() + ":/layers/00/key/levels_encode: expected float32, found float64 (and 1 more)");
}

TEST_F(MethodsFileDefects, RangesBitsGroupsAndPermutations) {
  HandFile h;
  h.lo = {-1.0f, -2.0f, 0.0f};
  EXPECT_EQ(read_error(h), path() + ":/layers/00/key/lo: expected shape [2], found [3]");
  h = HandFile();
  h.lo = {2.0f, -2.0f};
  EXPECT_EQ(read_error(h),
            path() + ":/layers/00/key/lo: expected lo <= hi, found 2 > 1 in channel 0");
  h = HandFile();
  h.key_bits = 3;
  EXPECT_EQ(read_error(h), path() + ":/layers/00/key@bits: expected 2 (nuq2-1%), found 3");
  h = HandFile();
  h.value_group = false;
  EXPECT_EQ(read_error(h), path() + ":/layers/00/value: missing group (the file has 1 layers)");
  h = HandFile();
  h.method = "skvq-k2-v2-g2-w4";
  h.perm = {1, 1};
  EXPECT_EQ(
      read_error(h),
      path() +
          ":/layers/00/key/perm: expected a permutation of 0..1, found 1 at index 1 (and 1 more)");
}

TEST_F(MethodsFileDefects, NotAnArtifact) {
  test::write_file(path(), "not hdf5");
  EXPECT_EQ(error_of([&] { read_quant(path()); }), path() + ": not an HDF5 file");
}

}  // namespace
}  // namespace kvq::methods
