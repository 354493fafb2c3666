// A thin RAII layer over the HDF5 C API for kvq artifacts: files, groups, typed n-d datasets
// and attributes. Every failure is a one-line kvq::Error naming the file and the path inside it
// ("quant.h5:/layers/07/key/codebook: expected float64, found int32"); HDF5's own error stack
// is never printed. Writes are deterministic: the same calls give byte-identical files (object
// timestamps are off). Not here: schemas (what an artifact must contain), hyperslab (partial)
// I/O, dataset attributes, compound/enum types, parallel HDF5. hdf5.h stays out of this header.
//
// The serial HDF5 library is not thread-safe: use this layer from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace kvq::artifact {

using Hid = int64_t;  // hid_t (int64_t since HDF5 1.10)

// Owns one HDF5 identifier of any kind and closes it on destruction.
class Handle {
 public:
  Handle() = default;
  explicit Handle(Hid id) : id_(id) {}
  Handle(Handle&& other) noexcept : id_(other.release()) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.release();
    }
    return *this;
  }
  ~Handle() { reset(); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  Hid get() const { return id_; }
  Hid release() {
    const Hid id = id_;
    id_ = -1;
    return id;
  }
  void reset();  // closes the id if it is still valid (closing its file may have closed it)

 private:
  Hid id_ = -1;
};

// Element types a dataset holds: double, float, int64_t, int32_t, uint8_t, uint32_t, stored as
// little-endian "float64", "float32", "int64", "int32", "uint8", "uint32".
template <typename T>
const char* dtype_name();

template <typename T>
struct Array {
  std::vector<T> values;       // row-major
  std::vector<int64_t> shape;  // outermost first; [] for a scalar
};

// Reading a file that may be hostile. libhdf5 1.10 trusts what a file says where kvq cannot
// check it first: corrupt object headers make it read freed memory, a bad global heap reference
// makes it copy from a wild pointer. kvq's readers therefore call
//   CalibData d = read_isolated(path, [&] { const File f = File::open(path); ...; return d; });
// `read` runs first in a forked child, then here, from the same process state: libhdf5's faults
// are deterministic, so one that would hit this process happens in the child first, and the file
// is refused with one line ("<path>: corrupt HDF5 file: reading it crashed the HDF5 library
// (Segmentation fault)", likewise for a child that exits with a sanitizer's report or runs past
// 30 s plus 1 s per 32 MiB of the file). What `read` throws in the child is dropped (it throws
// again here). `read` must open the file itself, and print and change nothing outside what it
// returns: its side effects happen twice. File::open and open_image inside `read` (in either
// process) skip their own vetting, which the child's run replaces.
namespace detail {
void run_isolated(const std::string& path, const std::function<void()>& read);
// The sanitizer build's verdict on a child's report: whether it blames kvq's code (UBSan, or the
// first frame that is libhdf5's or kvq's being kvq's) rather than libhdf5 (the file's fault).
bool blames_kvq(const std::string& log);
// While one exists, File::open and open_image in this thread do not fork a vetting child.
class IsolatedScope {
 public:
  IsolatedScope();
  ~IsolatedScope();
  IsolatedScope(const IsolatedScope&) = delete;
  IsolatedScope& operator=(const IsolatedScope&) = delete;
};
}  // namespace detail

template <typename F>
auto read_isolated(const std::string& path, F&& read) -> decltype(read()) {
  detail::run_isolated(path, [&read] { (void)read(); });
  const detail::IsolatedScope scope;
  return read();
}

struct DatasetInfo {
  std::string dtype;  // "float64", ..., or e.g. "int16", "string" for foreign types
  std::vector<int64_t> shape;
  bool chunked = false;  // chunked (+ shuffle, deflate if available, fletcher32) vs contiguous
};

class Group;

class File {
 public:
  // Creates `path`, truncating an existing file. Write to AtomicOutput::temp_path(), not the
  // final name.
  static File create(const std::string& path);
  // Opens `path` read-only; "<path>: not an HDF5 file" for anything else. Outside
  // read_isolated, a forked child first walks the whole file (every object, attribute and
  // dataset, generically) and the file is refused if that faults; readers that can, use
  // read_isolated, which runs their own reads in the child instead.
  static File open(const std::string& path);
  // Opens the HDF5 file held in [data, data + size) read-only, in memory (HDF5's core driver;
  // the bytes are copied), named `name` in messages. The fuzz targets read artifacts this way.
  static File open_image(const std::string& name, const void* data, size_t size);

  File(File&&) noexcept = default;
  File& operator=(File&&) noexcept = default;
  ~File();  // closes quietly; call close() to see write errors
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // Flushes and closes, invalidating every Group of this file; throws if the flush fails.
  void close();
  const std::string& path() const { return path_; }
  Group root() const;  // "/", which also carries the file's attributes

 private:
  File(std::string path, Handle id) : path_(std::move(path)), id_(std::move(id)) {}
  std::string path_;
  Handle id_;
};

// A group of an open file. Names are relative to it and may contain '/' ("layers/07/key").
class Group {
 public:
  Group(Group&&) noexcept = default;
  Group& operator=(Group&&) noexcept = default;
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  const std::string& file_path() const { return file_path_; }
  const std::string& path() const { return path_; }  // "/" or "/layers/07"
  // "<file>:<path>/<name>" (or "<file>:<path>" for an empty name), for messages.
  std::string where(const std::string& name = "") const;

  bool exists(const std::string& name) const;  // a group or dataset at `name`
  // Opens `name`, creating it and any missing parent groups.
  Group create_group(const std::string& name) const;
  Group open_group(const std::string& name) const;  // "<where>: missing group"
  std::vector<std::string> children() const;        // names of groups and datasets, sorted

  // Writes a new dataset (error if `name` exists) of numel(shape) values, rank 0..4; parent
  // groups must exist. Above 256 KiB it is chunked (<= 1 MiB chunks), shuffled, deflated at
  // level 1 when the filter is available, and Fletcher32-checksummed.
  template <typename T>
  void write(const std::string& name, const std::vector<T>& values,
             const std::vector<int64_t>& shape) const;
  template <typename T>
  void write(const std::string& name, const T* values, const std::vector<int64_t>& shape) const;
  // Reads a dataset whose stored type is exactly T's ("<where>: expected float64, found int32"),
  // optionally requiring its shape ("<where>: expected shape [6, 256], found [6, 128]").
  template <typename T>
  Array<T> read(const std::string& name) const;
  template <typename T>
  Array<T> read(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  DatasetInfo dataset_info(const std::string& name) const;

  // Attributes of this group; setting an existing one replaces it. Strings are UTF-8, written
  // variable-length unless fixed_length; both kinds read back with string_attr.
  bool has_attr(const std::string& name) const;
  void set_string_attr(const std::string& name, const std::string& value,
                       bool fixed_length = false) const;
  void set_int_attr(const std::string& name, int64_t value) const;
  void set_double_attr(const std::string& name, double value) const;
  void set_int_array_attr(const std::string& name, const std::vector<int64_t>& values) const;
  void set_double_array_attr(const std::string& name, const std::vector<double>& values) const;
  // Readers check the stored type: "<where>@<name>: missing attribute", "...: expected int64,
  // found float64". Scalar readers accept a scalar or a one-element array.
  std::string string_attr(const std::string& name) const;
  int64_t int_attr(const std::string& name) const;
  double double_attr(const std::string& name) const;
  std::vector<int64_t> int_array_attr(const std::string& name) const;
  std::vector<double> double_array_attr(const std::string& name) const;

 private:
  friend class File;
  Group(std::string file_path, std::string path, Handle id)
      : file_path_(std::move(file_path)), path_(std::move(path)), id_(std::move(id)) {}
  Hid id() const;  // id_, checked to be still open
  std::string child_path(const std::string& name) const;
  Handle open_object(const std::string& name, bool want_group) const;
  Handle open_attr(const std::string& name) const;
  template <typename T>
  Array<T> read_impl(const std::string& name, const std::vector<int64_t>* expected_shape) const;

  std::string file_path_, path_;
  Handle id_;
};

}  // namespace kvq::artifact
