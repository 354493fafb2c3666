// kvq/artifact: the HDF5 layer (every dtype and rank round trips, attributes, byte-identical
// output, exact error messages for wrong types, shapes, missing objects and broken files),
// AtomicOutput (nothing left behind unless committed), write_text_file_atomic and the Problems
// collector.
#include "kvq/artifact/h5.h"

#include <hdf5.h>  // only to count open HDF5 objects
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/validate.h"
#include "support/test_support.h"

namespace kvq::artifact {
namespace {

using test::error_of;
using test::TempDir;

const std::vector<std::vector<int64_t>> kShapes = {{},        {5},          {2, 3},
                                                   {2, 1, 3}, {1, 2, 3, 2}, {0, 3}};

template <typename T>
std::vector<T> pattern(int64_t n, int salt) {
  std::vector<T> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<T>((i * 37 + salt * 11) % 251);
  if (std::is_floating_point_v<T> && n > 1) v[1] = static_cast<T>(-0.15625);  // exact in float
  return v;
}

template <typename T>
class H5RoundTrip : public ::testing::Test {};
using DTypes = ::testing::Types<double, float, int64_t, int32_t, uint8_t, uint32_t>;
TYPED_TEST_SUITE(H5RoundTrip, DTypes);

TYPED_TEST(H5RoundTrip, EveryRank) {
  using T = TypeParam;
  TempDir tmp;
  const std::string path = tmp.file("a.h5");
  {
    File f = File::create(path);
    Group g = f.root().create_group("data");
    for (size_t i = 0; i < kShapes.size(); ++i)
      g.write("d" + std::to_string(i), pattern<T>(numel(kShapes[i]), i), kShapes[i]);
    f.close();
  }
  File f = File::open(path);
  const Group g = f.root().open_group("data");
  for (size_t i = 0; i < kShapes.size(); ++i) {
    const std::string name = "d" + std::to_string(i);
    const Array<T> a = g.read<T>(name);
    EXPECT_EQ(a.shape, kShapes[i]) << name;
    EXPECT_EQ(a.values, pattern<T>(numel(kShapes[i]), i)) << name;
    EXPECT_EQ(g.read<T>(name, kShapes[i]).values.size(), a.values.size());
    const DatasetInfo info = g.dataset_info(name);
    EXPECT_EQ(info.dtype, dtype_name<T>());
    EXPECT_FALSE(info.chunked);
  }
}

TYPED_TEST(H5RoundTrip, LargeIsChunkedCompressedAndExact) {
  using T = TypeParam;
  TempDir tmp;
  const std::string path = tmp.file("big.h5");
  const std::vector<int64_t> shape = {3, 517, 301};  // not a multiple of any chunk size
  const auto values = pattern<T>(numel(shape), 7);
  {
    File f = File::create(path);
    f.root().write("big", values, shape);
  }
  File f = File::open(path);
  EXPECT_TRUE(f.root().dataset_info("big").chunked);
  EXPECT_EQ(f.root().read<T>("big").values, values);
  EXPECT_LT(std::filesystem::file_size(path), values.size() * sizeof(T) / 2);  // deflate ran
}

// Writes the same small artifact every time.
void write_sample(const std::string& path) {
  File f = File::create(path);
  Group root = f.root();
  root.set_string_attr("schema", "kvq.quant/1");
  root.set_int_attr("n_layers", 2);
  root.set_double_array_attr("rope", {10000.0, 1.0});
  for (const char* layer : {"layers/01/key", "layers/00/value"}) {
    Group g = root.create_group(layer);
    g.set_int_attr("bits", 3);
    g.write("codebook", pattern<float>(8, 1), {8});
    g.write("big", pattern<double>(70000, 2), {70000});
  }
  f.close();
}

TEST(H5, OutputIsByteIdentical) {
  TempDir tmp;
  write_sample(tmp.file("a.h5"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // HDF5 times have 1 s resolution
  write_sample(tmp.file("b.h5"));
  EXPECT_EQ(test::read_file(tmp.file("a.h5")), test::read_file(tmp.file("b.h5")));
}

TEST(H5, Groups) {
  TempDir tmp;
  write_sample(tmp.file("a.h5"));
  File f = File::open(tmp.file("a.h5"));
  const Group root = f.root();
  EXPECT_EQ(root.children(), (std::vector<std::string>{"layers"}));
  EXPECT_EQ(root.open_group("layers").children(), (std::vector<std::string>{"00", "01"}));
  const Group key = root.open_group("layers/01/key");
  EXPECT_EQ(key.path(), "/layers/01/key");
  EXPECT_EQ(key.children(), (std::vector<std::string>{"big", "codebook"}));
  EXPECT_TRUE(root.exists("layers/01/key/codebook"));
  EXPECT_FALSE(root.exists("layers/02/key"));
  EXPECT_FALSE(root.exists("layers/01/key/codebook/x"));
  const std::string p = tmp.file("a.h5");
  EXPECT_EQ(error_of([&] { root.open_group("layers/07"); }), p + ":/layers/07: missing group");
  EXPECT_EQ(error_of([&] { key.open_group("codebook"); }),
            p + ":/layers/01/key/codebook: expected a group, found a dataset");
  EXPECT_EQ(error_of([&] { root.read<float>("layers"); }),
            p + ":/layers: expected a dataset, found a group");
}

TEST(H5, Attributes) {
  TempDir tmp;
  const std::string path = tmp.file("a.h5");
  {
    File f = File::create(path);
    Group g = f.root();
    g.set_string_attr("var", "µ-law → ok");
    g.set_string_attr("fixed", "kvq.calib/1", /*fixed_length=*/true);
    g.set_string_attr("empty", "");
    g.set_string_attr("empty_fixed", "", /*fixed_length=*/true);
    g.set_int_attr("i", -(int64_t(1) << 40));
    g.set_int_attr("replaced", 1);
    g.set_int_attr("replaced", 2);
    g.set_double_attr("d", 0.1);
    g.set_int_array_attr("ia", {3, -4, 5});
    g.set_double_array_attr("da", {1.5, std::numeric_limits<double>::infinity()});
    g.set_double_array_attr("da_empty", {});
    g.create_group("sub").set_string_attr("x", "y");
  }
  File f = File::open(path);
  const Group g = f.root();
  EXPECT_EQ(g.string_attr("var"), "µ-law → ok");
  EXPECT_EQ(g.string_attr("fixed"), "kvq.calib/1");
  EXPECT_EQ(g.string_attr("empty"), "");
  EXPECT_EQ(g.string_attr("empty_fixed"), "");
  EXPECT_EQ(g.int_attr("i"), -(int64_t(1) << 40));
  EXPECT_EQ(g.int_attr("replaced"), 2);
  EXPECT_EQ(g.double_attr("d"), 0.1);
  EXPECT_EQ(g.int_array_attr("ia"), (std::vector<int64_t>{3, -4, 5}));
  EXPECT_EQ(g.double_array_attr("da"), (std::vector<double>{1.5, INFINITY}));
  EXPECT_TRUE(g.double_array_attr("da_empty").empty());
  EXPECT_EQ(g.open_group("sub").string_attr("x"), "y");
  EXPECT_TRUE(g.has_attr("var"));
  EXPECT_FALSE(g.has_attr("nope"));

  EXPECT_EQ(error_of([&] { g.int_attr("nope"); }), path + ":/@nope: missing attribute");
  EXPECT_EQ(error_of([&] { g.open_group("sub").double_attr("bits"); }),
            path + ":/sub@bits: missing attribute");
  EXPECT_EQ(error_of([&] { g.int_attr("d"); }), path + ":/@d: expected int64, found float64");
  EXPECT_EQ(error_of([&] { g.double_attr("var"); }),
            path + ":/@var: expected float64, found string");
  EXPECT_EQ(error_of([&] { g.string_attr("i"); }), path + ":/@i: expected string, found int64");
  EXPECT_EQ(error_of([&] { g.int_attr("ia"); }),
            path + ":/@ia: expected a single value, found shape [3]");
  EXPECT_EQ(error_of([&] { g.int_array_attr("i"); }),
            path + ":/@i: expected a 1-D array, found shape []");
}

TEST(H5, DatasetErrors) {
  TempDir tmp;
  const std::string path = tmp.file("a.h5");
  {
    File f = File::create(path);
    Group g = f.root().create_group("layers/07/key");
    g.write("scales", pattern<int32_t>(4, 0), {4});
    g.write("x", pattern<float>(6 * 128, 0), {6, 128});
    const std::string w = path + ":/layers/07/key";
    EXPECT_EQ(error_of([&] { g.write("x", pattern<float>(1, 0), {}); }), w + "/x: already exists");
    EXPECT_EQ(error_of([&] {
                g.write("y", pattern<float>(5, 0), {2, 3});
              }),
              w + "/y: expected 6 values for shape [2, 3], found 5");
    EXPECT_EQ(error_of([&] {
                g.write("y", pattern<float>(1, 0), {1, 1, 1, 1, 1});
              }),
              w + "/y: expected rank 0 to 4, found shape [1, 1, 1, 1, 1]");
    EXPECT_EQ(error_of([&] {
                g.write("nope/y", pattern<float>(1, 0), {});
              }).rfind(w + "/nope/y: cannot create dataset (", 0),
              0u);
  }
  File f = File::open(path);
  const Group g = f.root();
  const std::string w = path + ":/layers/07/key";
  EXPECT_EQ(error_of([&] { g.read<double>("layers/07/key/scales"); }),
            w + "/scales: expected float64, found int32");
  EXPECT_EQ(error_of([&] {
              g.read<float>("layers/07/key/x", {6, 256});
            }),
            w + "/x: expected shape [6, 256], found [6, 128]");
  EXPECT_EQ(error_of([&] { g.read<float>("layers/07/key/codebook"); }),
            w + "/codebook: missing dataset");
  EXPECT_EQ(error_of([&] { g.dataset_info("layers/08/key/codebook"); }),
            path + ":/layers/08/key/codebook: missing dataset");
}

TEST(H5, GroupAfterFileClose) {
  TempDir tmp;
  File f = File::create(tmp.file("a.h5"));
  const Group g = f.root();
  f.close();
  EXPECT_NE(error_of([&] { g.has_attr("x"); }).find("/ used after its file was closed"),
            std::string::npos);
}

TEST(H5, NothingLeftOpen) {
  TempDir tmp;
  write_sample(tmp.file("a.h5"));
  {
    File f = File::open(tmp.file("a.h5"));
    const Group g = f.root().open_group("layers/00/value");
    (void)g.read<double>("big");
    (void)g.int_attr("bits");
    EXPECT_NE(error_of([&] { g.read<float>("big"); }), "<no error>");
  }
  EXPECT_EQ(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

TEST(H5, BrokenFiles) {
  TempDir tmp;
  const std::string text = tmp.file("notes.h5");
  test::write_file(text, "this is not HDF5\n");
  EXPECT_EQ(error_of([&] { File::open(text); }), text + ": not an HDF5 file");
  test::write_file(tmp.file("empty.h5"), "");
  EXPECT_EQ(error_of([&] { File::open(tmp.file("empty.h5")); }),
            tmp.file("empty.h5") + ": not an HDF5 file");
  EXPECT_EQ(error_of([&] { File::open(tmp.file("nope.h5")); }),
            tmp.file("nope.h5") + ": cannot open (No such file or directory)");
  EXPECT_EQ(error_of([&] { File::open(tmp.path()); }),
            tmp.path() + ": expected an HDF5 file, found a directory");
  EXPECT_EQ(error_of([&] {
              File::create(tmp.file("no/such/dir.h5"));
            }).rfind(tmp.file("no/such/dir.h5") + ": cannot create HDF5 file (", 0),
            0u);

  const std::string good = tmp.file("good.h5");
  write_sample(good);
  const std::string bytes = test::read_file(good);
  for (size_t keep : {size_t(8), size_t(200), bytes.size() / 2, bytes.size() - 1}) {
    const std::string cut = tmp.file("cut" + std::to_string(keep) + ".h5");
    test::write_file(cut, bytes.substr(0, keep));
    const std::string e = error_of([&] {
      File f = File::open(cut);
      f.root().open_group("layers/00/value").read<double>("big");
    });
    EXPECT_EQ(e.rfind(cut + ": ", 0), 0u) << e;  // one line, names the file
  }
  // Garbage in the middle of a file that is mostly compressed chunks: open works, read fails.
  const std::string bad = tmp.file("bad.h5");
  std::vector<double> noise(200000);
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = std::sin(double(i) * i);
  File::create(bad).root().write("noise", noise, {int64_t(noise.size())});
  std::string corrupt = test::read_file(bad);
  for (size_t i = corrupt.size() / 2; i < corrupt.size() / 2 + 64; ++i) corrupt[i] = '\x5a';
  test::write_file(bad, corrupt);
  EXPECT_EQ(error_of([&] { File::open(bad).root().read<double>("noise"); }),
            bad + ":/noise: cannot read dataset (data error detected by Fletcher32 checksum)");
}

// Every dataset carries the XXH64 of its values: a flipped byte in a small (contiguous, not
// Fletcher-checked) dataset is an error naming it; a file without the attribute (written before
// it existed) still reads; a checksum attribute of the wrong type is refused.
TEST(H5, EveryDatasetIsChecksummed) {
  TempDir tmp;
  const std::string path = tmp.file("a.h5");
  const std::vector<double> values = {1.0, 2.5, -3.25, 1e-300, 7.0};
  {
    File f = File::create(path);
    f.root().write("small", values, {5});
    f.root().write("scalar", std::vector<int32_t>{42}, {});
    f.root().write("empty", std::vector<float>{}, {0, 3});
  }
  EXPECT_EQ(File::open(path).root().read<double>("small").values, values);
  EXPECT_EQ(File::open(path).root().read<int32_t>("scalar").values, std::vector<int32_t>{42});
  EXPECT_TRUE(File::open(path).root().read<float>("empty").values.empty());

  std::string bytes = test::read_file(path);
  const std::string needle(reinterpret_cast<const char*>(&values[2]), sizeof(double));
  const size_t at = bytes.find(needle);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 7] ^= 0x01;  // -3.25 becomes another finite double
  const std::string bad = tmp.file("bad.h5");
  test::write_file(bad, bytes);
  const std::string e = error_of([&] { File::open(bad).root().read<double>("small"); });
  EXPECT_EQ(e.rfind(bad + ":/small: checksum mismatch: the values hash to ", 0), 0u) << e;
  EXPECT_NE(e.find("(the file is corrupt)"), std::string::npos) << e;
  EXPECT_EQ(File::open(bad).root().read<int32_t>("scalar").values, std::vector<int32_t>{42});

  // Without the attribute (an older file): read as before. With a wrong-typed one: refused.
  const std::string old = tmp.file("old.h5");
  {
    File f = File::create(old);
    f.root().write("small", values, {5});
  }
  {
    const hid_t f = H5Fopen(old.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "small", H5P_DEFAULT);
    ASSERT_GE(H5Adelete(d, "xxh64"), 0);
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(d, "xxh64", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    const int64_t wrong = 7;
    ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT64, &wrong), 0);
    H5Aclose(a);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
  }
  EXPECT_EQ(error_of([&] { File::open(old).root().read<double>("small"); }),
            old + ":/small@xxh64: expected a string of 16 hex digits, found int64");
  {
    const hid_t f = H5Fopen(old.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "small", H5P_DEFAULT);
    ASSERT_GE(H5Adelete(d, "xxh64"), 0);
    H5Dclose(d);
    H5Fclose(f);
  }
  EXPECT_EQ(File::open(old).root().read<double>("small").values, values);
}

TEST(AtomicOutput, UncommittedLeavesNothingBehind) {
  TempDir tmp;
  {
    AtomicOutput out(tmp.file("q.h5"));
    EXPECT_EQ(out.temp_path().rfind(tmp.path() + "/.q.h5.tmp." + std::to_string(getpid()) + ".", 0),
              0u);
    File f = File::create(out.temp_path());
    f.root().set_int_attr("x", 1);
  }  // e.g. an exception before commit()
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path()));
}

TEST(AtomicOutput, CommitReplacesExistingFile) {
  TempDir tmp;
  const std::string path = tmp.file("q.h5");
  test::write_file(path, "old contents");
  {
    AtomicOutput out(path);
    {
      File f = File::create(out.temp_path());
      f.root().set_string_attr("schema", "kvq.quant/1");
    }
    EXPECT_EQ(test::read_file(path), "old contents");
    out.commit();
    EXPECT_TRUE(out.committed());
  }
  EXPECT_EQ(File::open(path).root().string_attr("schema"), "kvq.quant/1");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp.path()), {}), 1);
}

TEST(AtomicOutput, DirectoryErrors) {
  TempDir tmp;
  EXPECT_EQ(error_of([&] { AtomicOutput out(tmp.file("no/q.h5")); }),
            tmp.file("no") + ": output directory does not exist (No such file or directory)");
  test::write_file(tmp.file("f"), "");
  EXPECT_EQ(error_of([&] { AtomicOutput out(tmp.file("f/q.h5")); }),
            tmp.file("f") + ": expected an output directory, found a file");
  // Root ignores permission bits, but sysfs refuses new files even to root.
  std::string dir = tmp.file("ro");
  if (geteuid() == 0) {
    dir = "/sys";
  } else {
    ASSERT_EQ(mkdir(dir.c_str(), 0555), 0);
  }
  EXPECT_EQ(error_of([&] { AtomicOutput out(dir + "/q.h5"); }),
            dir + ": output directory is not writable (Permission denied)");
}

TEST(WriteTextFileAtomic, WritesReplacesAndNamesPathOnError) {
  TempDir dir;
  const std::string path = dir.file("results.csv");
  write_text_file_atomic(path, "first\n");
  EXPECT_EQ(test::read_file(path), "first\n");
  write_text_file_atomic(path, std::string("second\0binary", 13));
  EXPECT_EQ(test::read_file(path), std::string("second\0binary", 13));

  const std::string missing = dir.file("nope/results.csv");
  EXPECT_EQ(error_of([&] { write_text_file_atomic(missing, "x"); }),
            missing + ": cannot write file: " + dir.file("nope") +
                ": output directory does not exist (No such file or directory)");
  EXPECT_EQ(error_of([&] { write_text_file_atomic(dir.path() + "/", "x"); }),
            dir.path() + "/: cannot write file: " + dir.path() +
                "/: expected an output file path, found a directory name");
}

TEST(Validate, ProblemsAndChecks) {
  Problems p;
  EXPECT_NO_THROW(p.throw_if_any());
  EXPECT_TRUE(check_shape(p, "q.h5:/a", {2, 3}, {2, 3}));
  EXPECT_TRUE(check_finite(p, "q.h5:/b", std::vector<float>{1, 2}));
  EXPECT_TRUE(p.empty());
  EXPECT_FALSE(check_shape(p, "q.h5:/a", {6, 256}, {6, 128}));
  EXPECT_EQ(error_of([&] { p.throw_if_any(); }),
            "q.h5:/a: expected shape [6, 256], found [6, 128]");
  EXPECT_FALSE(check_finite(p, "q.h5:/b", std::vector<float>{1, NAN, INFINITY}));
  EXPECT_FALSE(check_finite(p, "q.h5:/c", std::vector<double>{0, 0, 0, -INFINITY}));
  EXPECT_EQ(p.list(),
            (std::vector<std::string>{"q.h5:/a: expected shape [6, 256], found [6, 128]",
                                      "q.h5:/b: expected finite values, found nan at index 1",
                                      "q.h5:/c: expected finite values, found -inf at index 3"}));
  EXPECT_EQ(error_of([&] { p.throw_if_any(); }),
            "q.h5:/a: expected shape [6, 256], found [6, 128] (and 2 more)");
  EXPECT_EQ(error_of([] { require_shape("x", {}, {1}); }), "x: expected shape [], found [1]");
  EXPECT_EQ(error_of([] { require_finite("x", std::vector<double>{NAN}); }),
            "x: expected finite values, found nan at index 0");
}

}  // namespace
}  // namespace kvq::artifact

namespace kvq::artifact {
namespace {

// HDF5 1.10 never returns from reading a string out of a global heap collection whose free-space
// object has size 0, and reads past a collection of a size it never writes (both found by
// fuzz/fuzz_calib_h5): such files are refused when opened, from a path or from memory, and the
// valid file still opens.
// Datasets whose shapes claim far more than the file stores (chunks never written): opening the
// file reads nothing of them (the vetting child bounds its reads as Group::read does), so a tiny
// file cannot make kvq fill gigabytes; reading one is refused by the same bound.
TEST(H5Corrupt, ClaimedShapesCostNothingToOpen) {
  TempDir tmp;
  const std::string path = tmp.file("claims.h5");
  {
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t n = hsize_t{1} << 25, chunk = hsize_t{1} << 16;  // 256 MiB of float64 each
    const hid_t space = H5Screate_simple(1, &n, nullptr), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    for (int i = 0; i < 64; ++i) {
      const hid_t d = H5Dcreate2(f, ("d" + std::to_string(i)).c_str(), H5T_IEEE_F64LE, space,
                                 H5P_DEFAULT, dcpl, H5P_DEFAULT);
      ASSERT_GE(d, 0);
      H5Dclose(d);
    }
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Fclose(f);
  }
  ASSERT_LT(std::filesystem::file_size(path), 1u << 20);
  const auto t0 = std::chrono::steady_clock::now();
  File f = File::open(path);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  EXPECT_EQ(error_of([&] { f.root().read<double>("d0"); }),
            path + ":/d0: shape [33554432] needs 268435456 bytes, the file stores 0");
}

// A file holding nothing but the root attribute schema = "kvq.calib/2".
void write_schema_only(const std::string& path) {
  File f = File::create(path);
  f.root().set_string_attr("schema", "kvq.calib/2");
  f.close();
}

// read_isolated: `read` runs in a forked child first, then here; what it throws, it throws here.
TEST(H5Isolated, ReadRunsInAChildFirstThenHere) {
  TempDir tmp;
  const std::string path = tmp.file("a.h5");
  write_schema_only(path);
  const pid_t self = ::getpid();
  const std::string child_ran = tmp.file("child-ran");
  int runs_here = 0;
  const std::string schema = read_isolated(path, [&] {
    if (::getpid() == self)
      ++runs_here;
    else
      test::write_file(child_ran, "yes");
    return File::open(path).root().string_attr("schema");
  });
  EXPECT_EQ(schema, "kvq.calib/2");
  EXPECT_EQ(runs_here, 1);
  EXPECT_EQ(test::read_file(child_ran), "yes");
  EXPECT_EQ(error_of([&] {
              read_isolated(path, [&] { return File::open(path).root().int_attr("schema"); });
            }),
            error_of([&] { File::open(path).root().int_attr("schema"); }));
}

// A file that kills libhdf5 (a string attribute naming an object past its global heap
// collection) is refused with one line before this process reads any of it.
TEST(H5Isolated, AFileThatCrashesLibhdf5IsRefusedBeforeItIsReadHere) {
  const std::string path = test::source_dir() + "/tests/data/hdf5-vlen-attr-heap-index.h5";
  int runs_here = 0;
  const std::string e = error_of([&] {
    read_isolated(path, [&] {
      ++runs_here;
      const File f = File::open(path);
      const Group root = f.root();
      std::string text;
      for (const char* name : {"schema", "tool_version", "created", "device", "dtype",
                               "model.source", "model.architecture", "model.rope_scaling",
                               "model.weights_checksum", "data.source", "data.sha256"})
        text += root.has_attr(name) ? root.string_attr(name) : "";
      return text;
    });
  });
  EXPECT_EQ(runs_here, 0);
  EXPECT_EQ(e.rfind(path + ": corrupt HDF5 file: ", 0), 0u) << e;
}

// The sanitizer build's verdict on a vetting child's report (abbreviated real reports).
TEST(H5Isolated, ReportsAreBlamedOnTheFirstFrameThatIsLibhdf5sOrKvqs) {
  using detail::blames_kvq;
  const std::string error =
      "==1==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x60b000042b00\n";
  // CI, 2026-12-05 (fuzz/regressions/calib_h5/attr-exists-strdup.h5): ASan's strdup interceptor
  // is in kvq's binary without a source line; the fault is libhdf5's.
  EXPECT_FALSE(blames_kvq(
      error +
      "    #0 0x56412f842c25 in strdup (/work/ci/build-san/fuzz/fuzz_calib_h5+0x111c25)"
      " (BuildId: af43f51a)\n"
      "    #1 0x7f4139d8431d in H5MM_strdup (/lib/x86_64-linux-gnu/libhdf5_serial.so.103+"
      "0x18431d)\n"
      "    #6 0x56412f8d0a83 in kvq::artifact::Group::open_attr(std::string const&) const "
      "/work/ci/lib/kvq/artifact/h5.cpp:818:25\n"));
  // An unsymbolized libhdf5 frame first.
  EXPECT_FALSE(blames_kvq(
      error + "    #0 0x7f4139d90d21  (/lib/x86_64-linux-gnu/libhdf5_serial.so.103+0x190d21)\n"));
  // kvq's code first, past ASan's memcpy, libc and a standard header inlined into kvq.
  EXPECT_TRUE(blames_kvq(
      error +
      "    #0 0x55 in __asan_memcpy (/work/ci/build-san/fuzz/fuzz_calib_h5+0x1)\n"
      "    #1 0x7f in __memmove_avx_unaligned_erms string/../sysdeps/x86_64/multiarch/"
      "memmove-vec-unaligned-erms.S:317\n"
      "    #2 0x56 in std::vector<float>::operator[](unsigned long) /usr/bin/../lib/gcc/x86_64-"
      "linux-gnu/12/../../../../include/c++/12/bits/stl_vector.h:1123:2\n"
      "    #3 0x56 in kvq::artifact::check_calib(kvq::artifact::File const&) "
      "/work/main/build-san/lib/kvq/../../../lib/kvq/artifact/calib_file.cpp:235:17\n"
      "    #4 0x7f in H5Dread (/lib/x86_64-linux-gnu/libhdf5_serial.so.103+0x5c350)\n"));
  EXPECT_TRUE(blames_kvq("calib_file.cpp:120:30: runtime error: signed integer overflow\n"));
  EXPECT_FALSE(blames_kvq(""));
  EXPECT_FALSE(
      blames_kvq(error + "    #0 0x7f in __libc_start_main csu/../csu/libc-start.c:360:3\n"));
}

TEST(H5Corrupt, GlobalHeapThatWouldHangIsRefused) {
  TempDir tmp;
  const std::string path = tmp.file("a.h5");
  write_schema_only(path);
  std::string bytes = test::read_file(path);
  EXPECT_EQ(File::open(path).root().string_attr("schema"), "kvq.calib/2");
  const size_t gcol = bytes.find("GCOL\x01");
  ASSERT_NE(gcol, std::string::npos);
  // Objects follow the 16-byte header: index (2 bytes), refcount (2), reserved (4), size (8),
  // data padded to 8; index 0 is the free space.
  size_t p = gcol + 16;
  while (bytes[p] != 0 || bytes[p + 1] != 0) {
    uint64_t size = 0;
    std::memcpy(&size, bytes.data() + p + 8, 8);
    p += 16 + (size + 7) / 8 * 8;
  }
  std::memset(&bytes[p + 8], 0, 8);
  test::write_file(path, bytes);
  const std::string what = fmt::format(
      ": corrupt HDF5 global heap at byte {}: object 0 of 0 bytes in a collection of 4096", p);
  EXPECT_EQ(error_of([&] { File::open(path); }), path + what);
  EXPECT_EQ(error_of([&] { File::open_image("mem.h5", bytes.data(), bytes.size()); }),
            "mem.h5" + what);
  // A collection shorter than HDF5 writes (HDF5 reads past it) or past the end of the file.
  for (const uint64_t size : {uint64_t{16}, uint64_t{1} << 40}) {
    std::memcpy(&bytes[gcol + 8], &size, 8);
    test::write_file(path, bytes);
    EXPECT_EQ(error_of([&] { File::open(path); }),
              fmt::format("{}: corrupt HDF5 global heap at byte {}: a collection of {} bytes", path,
                          gcol, size));
  }
}

}  // namespace
}  // namespace kvq::artifact
