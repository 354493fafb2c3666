// safetensors reader: mmap the file, validate the JSON header against the file before handing
// out any view. Not here: writing safetensors, dtype conversion (model/weights.cpp does that).
#include "kvq/model/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "kvq/common/error.h"
#include "kvq/common/json.h"
#include "kvq/common/limits.h"

namespace kvq::model {

namespace {

using nlohmann::json;

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::Bool, "BOOL", 1},
};

const DTypeInfo& info(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d;
  fail("internal error: unknown DType {}", static_cast<int>(dtype));
}

// A JSON value for an error message; invalid UTF-8 is replaced rather than thrown on.
std::string show(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Reads a non-negative JSON integer; `what` names it in the error.
uint64_t read_u64(const json& j, const std::string& path, const std::string& what) {
  if (!j.is_number_unsigned())
    fail("{}: {} must be a non-negative integer, found {}", path, what, show(j));
  return j.get<uint64_t>();
}

}  // namespace

size_t dtype_size(DType dtype) { return info(dtype).size; }
const char* dtype_name(DType dtype) { return info(dtype).name; }

int64_t TensorView::numel() const {
  // Readers bound n_bytes by the file, so the product fits; checked anyway as views can be built
  // by hand.
  uint64_t n = 1;
  for (int64_t d : shape)
    n = checked_mul(n, static_cast<uint64_t>(d), fmt::format("tensor '{}' element count", name));
  KVQ_CHECK(n <= static_cast<uint64_t>(INT64_MAX), "tensor '{}' has {} elements", name, n);
  return static_cast<int64_t>(n);
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open ({})", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("{}: cannot stat ({})", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: expected a regular file, found {}", path,
         S_ISDIR(st.st_mode) ? "a directory" : "a special file");
  }
  size_ = static_cast<size_t>(st.st_size);
  // mmap of length 0 is an error; an empty file simply has no bytes to view.
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail("{}: cannot mmap {} bytes ({})", path, size_, std::strerror(err));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file referenced
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_shared<MappedFile>(path)) {
  const size_t file_size = file_->size();
  if (file_size < 8)
    fail("{}: expected at least 8 bytes (the header length), file has {}", path, file_size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file_->data()[i];  // little endian
  if (header_len > file_size - 8)
    fail("{}: header length {} exceeds the file ({} bytes after the 8-byte length)", path,
         header_len, file_size - 8);

  const char* header_begin = reinterpret_cast<const char*>(file_->data() + 8);
  json header;
  try {
    header = parse_json_strict(header_begin, header_begin + header_len, path + ": header");
  } catch (const json::parse_error& e) {
    // nlohmann's own message quotes raw input (possibly multi-line); the byte offset suffices.
    fail("{}: expected a JSON header of {} bytes, found invalid JSON at byte {}", path, header_len,
         e.byte);
  }
  if (!header.is_object())
    fail("{}: expected the header to be a JSON object, found {}", path, header.type_name());

  const uint8_t* data_section = file_->data() + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;
  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        fail("{}: expected __metadata__ to be an object, found {}", path, entry.type_name());
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          fail("{}: expected __metadata__ '{}' to be a string, found {}", path, key,
               value.type_name());
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = fmt::format("tensor '{}'", name);
    if (!entry.is_object())
      fail("{}: expected {} to be an object, found {}", path, where, entry.type_name());
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(key)) fail("{}: {} is missing '{}'", path, where, key);

    TensorView view;
    view.name = name;
    const json& dtype = entry["dtype"];
    if (!dtype.is_string())
      fail("{}: expected {} dtype to be a string, found {}", path, where, show(dtype));
    const auto it = std::find_if(std::begin(kDTypes), std::end(kDTypes), [&](const DTypeInfo& d) {
      return dtype.get<std::string>() == d.name;
    });
    if (it == std::end(kDTypes))
      fail("{}: {} has dtype '{}', expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL", path,
           where, dtype.get<std::string>());
    view.dtype = it->dtype;

    const json& shape = entry["shape"];
    if (!shape.is_array())
      fail("{}: expected {} shape to be an array, found {}", path, where, show(shape));
    std::vector<uint64_t> dims;
    for (const json& d : shape) dims.push_back(read_u64(d, path, where + " shape entry"));
    // Shapes print unsigned: a dimension of 2^63 must not show as a negative number.
    const std::string shape_text = fmt::format("[{}]", fmt::join(dims, ", "));
    for (uint64_t dim : dims)
      if (dim > static_cast<uint64_t>(INT64_MAX))
        fail("{}: {} shape {} has a dimension above 2^63 - 1", path, where, shape_text);
    for (uint64_t dim : dims) view.shape.push_back(static_cast<int64_t>(dim));
    uint64_t n_bytes = 0;
    bool overflow = false;
    try {
      n_bytes = checked_product(dims, it->size, where);
    } catch (const Error&) {
      overflow = true;
    }

    const json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2)
      fail("{}: expected {} data_offsets to be [begin, end], found {}", path, where, show(offsets));
    const uint64_t begin = read_u64(offsets[0], path, where + " data_offsets[0]");
    const uint64_t end = read_u64(offsets[1], path, where + " data_offsets[1]");
    if (begin > end)
      fail("{}: expected {} data_offsets [{}, {}] to have begin <= end", path, where, begin, end);
    if (end > data_size)
      fail("{}: {} data_offsets [{}, {}] exceed the data section ({} bytes)", path, where, begin,
           end, data_size);
    if (overflow || n_bytes != end - begin)
      fail("{}: {} of shape {} and dtype {} needs {} bytes, data_offsets [{}, {}] hold {}", path,
           where, shape_text, it->name,
           overflow ? std::string("more than 2^64") : std::to_string(n_bytes), begin, end,
           end - begin);
    view.data = data_section + begin;
    view.n_bytes = static_cast<size_t>(end - begin);
    auto inserted = tensors_.emplace(name, std::move(view));
    if (begin != end) spans.push_back({begin, end, &inserted.first->first});
  }

  // Empty tensors occupy no bytes, so they cannot overlap anything.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    const Span& a = spans[i - 1];
    const Span& b = spans[i];
    if (b.begin < a.end)
      fail(
          "{}: expected disjoint tensor data, found tensor '{}' [{}, {}] overlapping tensor '{}' "
          "[{}, {}]",
          path, *a.name, a.begin, a.end, *b.name, b.begin, b.end);
  }
}

const TensorView& SafetensorsFile::get(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("{}: tensor '{}' not found", path(), name);
  return it->second;
}

}  // namespace kvq::model
