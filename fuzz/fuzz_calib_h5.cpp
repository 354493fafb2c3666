// Fuzzes the HDF5 artifact readers (artifact/h5.h, calib_file.h, validate.h): the input is a whole
// HDF5 file, opened in memory. A calib.h5 (schema kvq.calib/...) goes through check_calib, the
// checks kvq inspect and kvq fit run; any other file (quant.h5, whose reader needs LibTorch) is
// walked through the h5 layer: every group, attribute reader and dataset of a kvq dtype read.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_input.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/h5.h"
#include "kvq/artifact/validate.h"

namespace {

using kvq::artifact::Group;

// Properties of what the readers accepted. They are asserted where read_isolated returns, in this
// process: in its child, an abort would look like a file that crashes libhdf5, and be refused.
struct Properties {
  std::string first_failed;
  void expect(bool ok, const char* what) {
    if (!ok && first_failed.empty()) first_failed = what;
  }
};

void read_attrs(const Group& g) {
  for (const char* name : {"schema", "key_bins", "value_bins", "fractions", "mean_loss"}) {
    if (!g.has_attr(name)) continue;
    kvq::fuzz::expect_documented_errors([&] { (void)g.string_attr(name); });
    kvq::fuzz::expect_documented_errors([&] { (void)g.int_attr(name); });
    kvq::fuzz::expect_documented_errors([&] { (void)g.double_attr(name); });
    kvq::fuzz::expect_documented_errors([&] { (void)g.int_array_attr(name); });
    kvq::fuzz::expect_documented_errors([&] { (void)g.double_array_attr(name); });
  }
}

template <typename T>
void read_as(const Group& g, const std::string& name, const kvq::artifact::DatasetInfo& info,
             Properties& p) {
  const kvq::artifact::Array<T> a = g.read<T>(name);
  p.expect(a.shape == info.shape, "a.shape == info.shape");
  p.expect(static_cast<int64_t>(a.values.size()) == kvq::artifact::numel(a.shape),
           "a.values.size() == numel(a.shape)");
}

void walk(const Group& g, int depth, Properties& p) {
  read_attrs(g);
  if (depth > 6) return;
  for (const std::string& name : g.children()) {
    kvq::fuzz::expect_documented_errors([&] {
      const kvq::artifact::DatasetInfo info = g.dataset_info(name);
      if (info.dtype == "float64") read_as<double>(g, name, info, p);
      if (info.dtype == "float32") read_as<float>(g, name, info, p);
      if (info.dtype == "int64") read_as<int64_t>(g, name, info, p);
      if (info.dtype == "int32") read_as<int32_t>(g, name, info, p);
      if (info.dtype == "uint8") read_as<uint8_t>(g, name, info, p);
      if (info.dtype == "uint32") read_as<uint32_t>(g, name, info, p);
    });
    kvq::fuzz::expect_documented_errors([&] { walk(g.open_group(name), depth + 1, p); });
  }
}

// What kvq's readers do (read_calib, read_quant, kvq inspect): the reads run in a forked child
// first (read_isolated), so a libhdf5 fault on this input is the child's and the input is refused.
Properties read_input(const uint8_t* data, size_t size) {
  Properties p;
  const kvq::artifact::File file = kvq::artifact::File::open_image("calib.h5", data, size);
  const Group root = file.root();
  const std::string schema = root.has_attr("schema") ? root.string_attr("schema") : "";
  if (schema.rfind(std::string(kvq::artifact::kCalibSchema) + "/", 0) == 0) {
    kvq::artifact::Problems problems;
    const kvq::artifact::CalibData d = kvq::artifact::check_calib(file, problems);
    p.expect(problems.list().size() <= kvq::artifact::Problems::kKept,
             "problems.list().size() <= Problems::kKept");
    p.expect(!problems.empty() || static_cast<int64_t>(d.layers.size()) == d.model.n_layers,
             "an accepted file has n_layers layers");
  } else {
    walk(root, 0, p);  // check_calib reads all of a calib.h5 itself; the walk would double the cost
  }
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvq::fuzz::expect_documented_errors([&] {
    const Properties p =
        kvq::artifact::read_isolated("calib.h5", [&] { return read_input(data, size); });
    if (!p.first_failed.empty()) {
      std::fprintf(stderr, "fuzz: property failed: %s\n", p.first_failed.c_str());
      std::abort();
    }
  });
  return 0;
}
