// Fuzzes the HDF5 artifact readers (artifact/h5.h, calib_file.h, validate.h): the input is a whole
// HDF5 file, opened in memory. A calib.h5 (schema kvq.calib/...) goes through check_calib, the
// checks kvq inspect and kvq fit run; any other file (quant.h5, whose reader needs LibTorch) is
// walked through the h5 layer: every group, attribute reader and dataset of a kvq dtype read.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_input.h"
#include "kvq/artifact/calib_file.h"
#include "kvq/artifact/h5.h"
#include "kvq/artifact/validate.h"

namespace {

using kvq::artifact::Group;

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
void read_as(const Group& g, const std::string& name, const kvq::artifact::DatasetInfo& info) {
  const kvq::artifact::Array<T> a = g.read<T>(name);
  KVQ_FUZZ_ASSERT(a.shape == info.shape);
  KVQ_FUZZ_ASSERT(static_cast<int64_t>(a.values.size()) == kvq::artifact::numel(a.shape));
}

void walk(const Group& g, int depth) {
  read_attrs(g);
  if (depth > 6) return;
  for (const std::string& name : g.children()) {
    kvq::fuzz::expect_documented_errors([&] {
      const kvq::artifact::DatasetInfo info = g.dataset_info(name);
      if (info.dtype == "float64") read_as<double>(g, name, info);
      if (info.dtype == "float32") read_as<float>(g, name, info);
      if (info.dtype == "int64") read_as<int64_t>(g, name, info);
      if (info.dtype == "int32") read_as<int32_t>(g, name, info);
      if (info.dtype == "uint8") read_as<uint8_t>(g, name, info);
      if (info.dtype == "uint32") read_as<uint32_t>(g, name, info);
    });
    kvq::fuzz::expect_documented_errors([&] { walk(g.open_group(name), depth + 1); });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvq::fuzz::expect_documented_errors([&] {
    const kvq::artifact::File file = kvq::artifact::File::open_image("calib.h5", data, size);
    const Group root = file.root();
    const std::string schema = root.has_attr("schema") ? root.string_attr("schema") : "";
    if (schema.rfind(std::string(kvq::artifact::kCalibSchema) + "/", 0) == 0) {
      kvq::artifact::Problems problems;
      const kvq::artifact::CalibData d = kvq::artifact::check_calib(file, problems);
      KVQ_FUZZ_ASSERT(problems.list().size() <= kvq::artifact::Problems::kKept);
      if (problems.empty()) {
        KVQ_FUZZ_ASSERT(static_cast<int64_t>(d.layers.size()) == d.model.n_layers);
      }
    } else {
      walk(root, 0);  // check_calib reads all of a calib.h5 itself; the walk would double the cost
    }
  });
  return 0;
}
