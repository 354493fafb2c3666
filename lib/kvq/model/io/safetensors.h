// Reader for the safetensors format (8-byte little-endian header length, a JSON header mapping
// each tensor name to {dtype, shape, data_offsets}, then the raw bytes). The file is memory
// mapped; every length, offset and shape is checked against the file before any byte is read.
// This file knows nothing of LibTorch: it hands out typed views that model/weights.cpp copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvq::model {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, Bool };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // the safetensors spelling: "F32", "BF16", ...

// A tensor's bytes inside a mapped file. `data` stays valid while the owning file object lives.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // outermost first
  const uint8_t* data = nullptr;
  size_t n_bytes = 0;
  int64_t numel() const;
};

// A read-only memory mapping of a whole file; unmapped on destruction.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws kvq::Error naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class SafetensorsFile {
 public:
  // Throws kvq::Error "<path>: <problem>" for a short file, a header length past the end, bad
  // JSON, an unknown dtype, a shape whose byte size disagrees with its offsets, offsets out of
  // range or overlapping.
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return file_->path(); }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws "<path>: tensor '<name>' not found".
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace kvq::model
