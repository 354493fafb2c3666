// HDF5 calls behind h5.h. HDF5's stderr error printing is silenced before first use, and each
// failed call becomes a kvq::Error carrying the most specific message from HDF5's error stack.
// Not here: APIs whose signatures differ between HDF5 1.10 and 1.14 (H5Oget_info*, H5Literate*);
// the one call that 1.12 deprecated (H5Fis_hdf5) is switched on the version.
#include "kvq/artifact/h5.h"

#include <fmt/ranges.h>
#include <hdf5.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kvq/artifact/atomic_file.h"
#include "kvq/artifact/validate.h"
#include "kvq/common/error.h"
#include "kvq/common/hash.h"
#include "kvq/common/limits.h"

// Built with ASan (scripts/sanitize.sh, which adds UBSan): run_isolated's child must not run
// the death callback libFuzzer installs. (No macro tells of UBSan alone.)
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVQ_SANITIZED 1
#endif
#elif defined(__SANITIZE_ADDRESS__)
#define KVQ_SANITIZED 1
#endif
#ifndef KVQ_SANITIZED
#define KVQ_SANITIZED 0
#endif
#if KVQ_SANITIZED
#include <sanitizer/common_interface_defs.h>
#endif

static_assert(std::is_same_v<hid_t, kvq::artifact::Hid>, "h5.h assumes hid_t is int64_t");

namespace kvq::artifact {

namespace {

constexpr size_t kChunkThresholdBytes = 256 << 10;  // smaller datasets stay contiguous
constexpr size_t kChunkTargetBytes = 1 << 20;       // chunks are at most this large
// Every dataset's attribute holding the XXH64 of its values' bytes (little-endian, as stored):
// HDF5 checksums neither contiguous raw data nor, in the format kvq writes, its metadata.
constexpr const char* kChecksumAttr = "xxh64";
constexpr size_t kChecksumDigits = 16;

// The most bytes a dataset's values can take given the bytes the file stores for it: a shape is
// only a claim. Deflate compresses at most ~1032:1, so 1100x the stored bytes (plus a page for
// tiny datasets) is more than any dataset kvq writes can need; contiguous data is stored whole.
uint64_t max_value_bytes(uint64_t stored, bool chunked) {
  if (!chunked) return stored;
  return stored > (UINT64_MAX - 4096) / 1100 ? UINT64_MAX : stored * 1100 + 4096;
}

template <typename T>
struct Traits;
#define KVQ_H5_TRAITS(T, mem_type, file_type, type_name) \
  template <>                                            \
  struct Traits<T> {                                     \
    static hid_t mem() { return mem_type; }              \
    static hid_t file() { return file_type; }            \
    static constexpr const char* kName = type_name;      \
  };
KVQ_H5_TRAITS(double, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, "float64")
KVQ_H5_TRAITS(float, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, "float32")
KVQ_H5_TRAITS(int64_t, H5T_NATIVE_INT64, H5T_STD_I64LE, "int64")
KVQ_H5_TRAITS(int32_t, H5T_NATIVE_INT32, H5T_STD_I32LE, "int32")
KVQ_H5_TRAITS(uint8_t, H5T_NATIVE_UINT8, H5T_STD_U8LE, "uint8")
KVQ_H5_TRAITS(uint32_t, H5T_NATIVE_UINT32, H5T_STD_U32LE, "uint32")
#undef KVQ_H5_TRAITS

// HDF5 prints its whole error stack to stderr by default; we report failures ourselves.
void quiet() {
  static const bool done = H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0;
  (void)done;
}

// The most specific message on HDF5's error stack ("truncated file: eof = 96, ..."); clears it.
std::string reason() {
  std::string out;
  auto innermost = [](unsigned n, const H5E_error2_t* e, void* data) -> herr_t {
    if (n == 0 && e->desc) *static_cast<std::string*>(data) = e->desc;
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &out);
  H5Eclear2(H5E_DEFAULT);
  std::replace(out.begin(), out.end(), '\n', ' ');
  return out.empty() ? "unknown HDF5 error" : out;
}

[[noreturn]] void fail_h5(const std::string& where, const char* action) {
  fail("{}: {} ({})", where, action, reason());
}

Handle checked(hid_t id, const std::string& where, const char* action) {
  if (id < 0) fail_h5(where, action);
  return Handle(id);
}

void check(herr_t rc, const std::string& where, const char* action) {
  if (rc < 0) fail_h5(where, action);
}

// "float64", "int32", ... as dtype_name<T>() spells them; a class name for anything else.
std::string describe_type(hid_t type) {
  const std::string bits = std::to_string(8 * H5Tget_size(type));
  const H5T_class_t cls = H5Tget_class(type);
  if (cls == H5T_FLOAT) return "float" + bits;
  if (cls == H5T_INTEGER) return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + bits;
  return cls == H5T_STRING     ? "string"
         : cls == H5T_ENUM     ? "enum"
         : cls == H5T_COMPOUND ? "compound"
                               : "other type";
}

// The extent of a dataspace; false for a null (empty, shapeless) dataspace.
bool read_shape(hid_t space, std::vector<int64_t>* shape) {
  shape->clear();
  const H5S_class_t cls = H5Sget_simple_extent_type(space);
  if (cls != H5S_SIMPLE) return cls == H5S_SCALAR;
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(std::max(rank, 0));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  shape->assign(dims.begin(), dims.end());
  return true;
}

bool deflate_available() {
  static const bool available = [] {
    unsigned config = 0;
    return H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0 &&
           H5Zget_filter_info(H5Z_FILTER_DEFLATE, &config) >= 0 &&
           (config & H5Z_FILTER_CONFIG_ENCODE_ENABLED) != 0;
  }();
  return available;
}

// An object-creation property list with modification times off, so files are reproducible.
Handle untimed(hid_t plist_class, const std::string& where) {
  Handle plist = checked(H5Pcreate(plist_class), where, "cannot create property list");
  check(H5Pset_obj_track_times(plist.get(), 0), where, "cannot set property list");
  return plist;
}

// Creates (or replaces) attribute `name` of `loc`; `group_where` names loc in messages.
void write_attr(hid_t loc, const std::string& group_where, const std::string& name, hid_t file_type,
                hid_t mem_type, hid_t space, const void* data) {
  const std::string where = group_where + "@" + name;
  if (H5Aexists(loc, name.c_str()) > 0)
    check(H5Adelete(loc, name.c_str()), where, "cannot replace attribute");
  Handle attr = checked(H5Acreate2(loc, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT),
                        where, "cannot create attribute");
  if (data) check(H5Awrite(attr.get(), mem_type, data), where, "cannot write attribute");
}

template <typename T>
void write_numeric_attr(hid_t loc, const std::string& group_where, const std::string& name,
                        const std::vector<T>& values, bool scalar) {
  const hsize_t n = values.size();
  Handle space = checked(scalar   ? H5Screate(H5S_SCALAR)
                         : n == 0 ? H5Screate(H5S_NULL)  // zero-size attributes are not portable
                                  : H5Screate_simple(1, &n, nullptr),
                         group_where + "@" + name, "cannot create dataspace");
  write_attr(loc, group_where, name, Traits<T>::file(), Traits<T>::mem(), space.get(),
             n ? values.data() : nullptr);
}

template <typename T>
std::vector<T> read_numeric_attr(hid_t attr, const std::string& where, bool scalar) {
  Handle type = checked(H5Aget_type(attr), where, "cannot read attribute type");
  const std::string found = describe_type(type.get());
  if (found != Traits<T>::kName) fail("{}: expected {}, found {}", where, Traits<T>::kName, found);
  Handle space = checked(H5Aget_space(attr), where, "cannot read attribute shape");
  std::vector<int64_t> shape;
  const bool has_shape = read_shape(space.get(), &shape);
  const int64_t n = has_shape ? numel(shape) : 0;
  if (scalar && n != 1)
    fail("{}: expected a single value, found shape {}", where, shape_string(shape));
  if (!scalar && has_shape && shape.size() != 1)
    fail("{}: expected a 1-D array, found shape {}", where, shape_string(shape));
  std::vector<T> values(n);
  if (n > 0) check(H5Aread(attr, Traits<T>::mem(), values.data()), where, "cannot read attribute");
  return values;
}

}  // namespace

template <typename T>
const char* dtype_name() {
  return Traits<T>::kName;
}

// ---- Handle ----

void Handle::reset() {
  if (id_ < 0) return;
  // H5Fclose flushes; for every other kind, dropping the last reference is its close.
  if (H5Iis_valid(id_) > 0) (void)(H5Iget_type(id_) == H5I_FILE ? H5Fclose(id_) : H5Idec_ref(id_));
  id_ = -1;
}

// ---- File ----

namespace {
// Closing the file closes everything opened in it, so close() really releases the file even if
// a Group outlives it (that Group's id is then invalid, and Handle::reset skips it).
Handle strong_close_fapl(const std::string& path) {
  Handle fapl = checked(H5Pcreate(H5P_FILE_ACCESS), path, "cannot create property list");
  check(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path, "cannot set property list");
  return fapl;
}

// HDF5 1.10 trusts the global heap collections (signature "GCOL": where variable-length strings
// live) it reads: on an object whose walk does not advance (size 0 in the free-space slot) the
// first vlen read never returns; on a collection shorter than HDF5 writes, or objects past its
// end, it copies from past the memory it holds (found by fuzz/fuzz_calib_h5). So every
// collection in the file is checked first, and walked as H5HG's loader does (8-byte lengths, as
// kvq writes); such a file is refused. Bytes in valid data that happen to read "GCOL\x01" are
// refused too when the size after them is not a collection's (a 1 in 2^40 per byte chance).
void check_global_heaps(const std::string& where, const uint8_t* data, size_t size) {
  auto u64 = [&](size_t at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | data[at + i];
    return v;
  };
  constexpr size_t kHeader = 16, kObjectHeader = 16;  // "GCOL", version, 3 reserved, size
  constexpr uint64_t kMinCollection = 4096;           // H5HG_MINSIZE
  const uint8_t* hit = data;
  while (size - static_cast<size_t>(hit - data) >= kHeader &&
         (hit = static_cast<const uint8_t*>(
              memmem(hit, size - static_cast<size_t>(hit - data), "GCOL\x01", 5))) != nullptr) {
    const size_t start = static_cast<size_t>(hit - data);
    ++hit;
    if (size - start < kHeader) break;
    const uint64_t collection = u64(start + 8);
    // HDF5 writes collections of 4 KiB or more inside the file; it loads a smaller or longer one
    // all the same and then reads its objects past the memory it holds.
    if (collection < kMinCollection || collection > size - start)
      fail("{}: corrupt HDF5 global heap at byte {}: a collection of {} bytes", where, start,
           collection);
    const size_t end = start + collection;
    for (size_t p = start + kHeader; p + kObjectHeader <= end;) {
      const unsigned idx = data[p] | (data[p + 1] << 8);
      const uint64_t object = u64(p + 8);
      const uint64_t need = idx > 0 ? (object > UINT64_MAX - kObjectHeader - 7
                                           ? UINT64_MAX
                                           : kObjectHeader + ((object + 7) & ~uint64_t{7}))
                                    : object;
      if (need == 0 || need > end - p)
        fail("{}: corrupt HDF5 global heap at byte {}: object {} of {} bytes in a collection of {}",
             where, p, idx, object, collection);
      p += need;
    }
  }
}

void check_global_heaps(const std::string& path, const struct stat& st) {
  if (!S_ISREG(st.st_mode) || st.st_size == 0) return;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;  // H5Fopen says why
  void* map = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return;
  try {
    check_global_heaps(path, static_cast<const uint8_t*>(map), static_cast<size_t>(st.st_size));
  } catch (...) {
    ::munmap(map, static_cast<size_t>(st.st_size));
    throw;
  }
  ::munmap(map, static_cast<size_t>(st.st_size));
}
// ---- vetting: reads run once in a forked child first ----
//
// libhdf5 1.10 trusts what a file says where kvq cannot check it first: a string attribute whose
// variable-length reference names an object past its global heap collection makes H5Aread copy
// from a wild pointer and kill the process (tests/data/hdf5-vlen-attr-heap-index.h5); corrupt
// object headers make H5Aexists read freed memory (fuzz/fuzz_calib_h5 under ASan). So before this
// process reads a file, a forked child does the same reads (detail::run_isolated): the reader's
// own code under read_isolated, else (a bare File::open) a generic walk of every object, every
// attribute (looked up by name, then read as its native type), every dataset's type, shape,
// layout and, up to kVetBytes, its values. A child that dies by a signal, exits with an error (a
// sanitizer's report), or is still reading after its time limit refuses the file with one line.
// Limits: a fault that neither kills nor is reported (a read of freed memory in a build without
// ASan) is not noticed; the generic walk can miss a fault on a path through libhdf5 that the
// later reads take and it does not. Where fork fails, the file is read as before.

constexpr uint64_t kVetBytes = uint64_t{1} << 28;  // bytes of values read per dataset, at most
constexpr uint64_t kVetSeconds = 30;               // plus a second per kVetBytesPerSecond
constexpr uint64_t kVetBytesPerSecond = uint64_t{32} << 20;  // of the file's size

// Reads one attribute as the library's native type (what string_attr and the number readers
// do), then frees what a variable-length read allocated. Errors are left to the real reads.
herr_t vet_attribute(hid_t loc, const char* name, const H5A_info_t*, void*) {
  (void)H5Aexists(loc, name);  // has_attr's lookup by name, a different path from the iteration
  const hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) return 0;
  const hid_t file_type = H5Aget_type(a), space = H5Aget_space(a);
  const hid_t type = file_type >= 0 ? H5Tget_native_type(file_type, H5T_DIR_ASCEND) : -1;
  const hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
  const size_t size = type >= 0 ? H5Tget_size(type) : 0;
  if (n >= 0 && size > 0 && static_cast<uint64_t>(n) * size <= (uint64_t{1} << 26)) {
    std::vector<unsigned char> buf(static_cast<size_t>(n) * size + 16);
    if (H5Aread(a, type, buf.data()) >= 0 &&
        (H5Tdetect_class(type, H5T_VLEN) > 0 || H5Tis_variable_str(type) > 0)) {
      H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf.data());
    }
  }
  for (const hid_t t : {type, file_type}) {
    if (t >= 0) H5Tclose(t);
  }
  if (space >= 0) H5Sclose(space);
  H5Aclose(a);
  return 0;
}

// A dataset as Group::dataset_info and Group::read see it: type, shape, layout, storage size,
// and its values when they are numbers of at most kVetBytes that the file can hold
// (max_value_bytes, as Group::read bounds them), so the child's work is in proportion to the file.
void vet_dataset(hid_t d) {
  const hid_t file_type = H5Dget_type(d), space = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
  bool chunked = false;
  if (dcpl >= 0) {
    chunked = H5Pget_layout(dcpl) == H5D_CHUNKED;
    for (int i = 0, n = H5Pget_nfilters(dcpl); i < n && i < 32; ++i) {
      unsigned flags = 0, values[8];
      size_t n_values = 8;
      char name[64];
      (void)H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &n_values, values, sizeof name,
                           name, nullptr);
    }
    H5Pclose(dcpl);
  }
  const H5T_class_t cls = file_type >= 0 ? H5Tget_class(file_type) : H5T_NO_CLASS;
  const hid_t type =
      (cls == H5T_INTEGER || cls == H5T_FLOAT) ? H5Tget_native_type(file_type, H5T_DIR_ASCEND) : -1;
  const hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
  const size_t size = type >= 0 ? H5Tget_size(type) : 0;
  const uint64_t stored = H5Dget_storage_size(d);
  if (n > 0 && size > 0 && size <= 16 && static_cast<uint64_t>(n) <= kVetBytes / size &&
      static_cast<uint64_t>(n) * size <= max_value_bytes(stored, chunked)) {
    std::vector<unsigned char> buf(static_cast<size_t>(n) * size);
    (void)H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
  }
  for (const hid_t t : {type, file_type}) {
    if (t >= 0) H5Tclose(t);
  }
  if (space >= 0) H5Sclose(space);
}

// A group's links by index, as Group::children lists them.
void vet_group(hid_t g) {
  H5G_info_t info{};
  if (H5Gget_info(g, &info) < 0) return;
  char name[256];
  for (hsize_t i = 0; i < info.nlinks && i < (hsize_t{1} << 16); ++i)
    (void)H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
}

#if H5_VERSION_GE(1, 12, 0)
herr_t vet_object(hid_t loc, const char* name, const H5O_info2_t*, void*) {
#else
herr_t vet_object(hid_t loc, const char* name, const H5O_info_t*, void*) {
#endif
  (void)H5Lexists(loc, name, H5P_DEFAULT);  // Group::exists
  const hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
  if (o < 0) return 0;
  (void)H5Aexists(o, "kvq");  // a name that is absent: the lookup's other path
  H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_NATIVE, nullptr, vet_attribute, nullptr);
  if (H5Iget_type(o) == H5I_DATASET) vet_dataset(o);
  if (H5Iget_type(o) == H5I_GROUP) vet_group(o);
  H5Oclose(o);
  return 0;
}

thread_local int t_isolated = 0;  // IsolatedScope depth: this thread's reads were vetted

// The generic walk File::open does outside read_isolated (inside, the reader's own run in the
// child replaces it): the child opens the file through `fapl` (a copy of the parent's, so an
// in-memory image too) and reads it as above.
void vet_file(const std::string& path, hid_t fapl) {
  if (t_isolated > 0) return;
  detail::run_isolated(path, [&] {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl);
    if (f < 0) return;
#if H5_VERSION_GE(1, 12, 0)
    H5Ovisit3(f, H5_INDEX_NAME, H5_ITER_NATIVE, vet_object, nullptr, H5O_INFO_BASIC);
#else
    H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_NATIVE, vet_object, nullptr, H5O_INFO_BASIC);
#endif
    H5Fclose(f);
  });
}
#if KVQ_SANITIZED
// The sanitizer build (scripts/fuzz.sh): the child's stderr goes to an unnamed file, so that its
// report can be told apart. libhdf5 is not instrumented, so UBSan's reports and ASan's frames in
// kvq's code are kvq's defects, which the fuzzer must see; a fault first met in libhdf5 (directly
// or through an interceptor it called) is the file's, refused as in the release build.
int open_child_log() {
  const char* dir = std::getenv("TMPDIR");
  return ::open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

std::string read_child_log(int fd) {
  std::string text;
  if (fd < 0 || ::lseek(fd, 0, SEEK_SET) < 0) return text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  return text;
}

#endif

// Whether a stack frame's source location ("PATH:LINE[:COLUMN]") is a file of kvq's source
// folders, not a system header inlined into kvq's code (/usr/...) or a binary ("(PATH+0x...)").
bool in_kvq_source(const std::string& frame) {
  for (size_t at = 0; at < frame.size();) {
    const size_t end = std::min(frame.find(' ', at), frame.size());
    const std::string word = frame.substr(at, end - at);
    at = end + 1;
    const size_t colon = word.find(':');
    if (word.empty() || word[0] != '/' || word.compare(0, 5, "/usr/") == 0 ||
        colon == std::string::npos || colon + 1 >= word.size() ||
        !std::isdigit(static_cast<unsigned char>(word[colon + 1]))) {
      continue;
    }
    for (const char* dir : {"/lib/kvq/", "/apps/", "/kernels/", "/fuzz/", "/bench/", "/tests/"})
      if (word.find(dir) < colon) return true;
  }
  return false;
}

}  // namespace

namespace detail {

// Whether the first report in `log` blames kvq's code: UBSan's, or else the first stack frame that
// is either libhdf5's (the file's fault) or in kvq's sources (kvq's). Frames that are neither are
// passed over: the sanitizer's runtime and interceptors (an ASan interceptor such as strdup sits
// in kvq's binary without a source line, and reports a fault met in the libhdf5 function that
// called it), libc, libstdc++, the fuzzer: none has a source line in kvq's folders.
// scripts/fuzz.sh's first_frame skips nearly the same frames to name a finding (also libhdf5's
// H5MM_): change both together.
bool blames_kvq(const std::string& log) {
  if (log.find("runtime error:") != std::string::npos) return true;
  const size_t error = log.find("ERROR: ");
  if (error == std::string::npos) return false;
  for (size_t at = error; at < log.size();) {
    const size_t end = std::min(log.find('\n', at), log.size());
    const std::string line = log.substr(at, end - at);
    at = end + 1;
    const size_t hash = line.find_first_not_of(' ');
    if (hash == std::string::npos || line[hash] != '#') continue;
    if (line.find("libhdf5") != std::string::npos || line.find(" in H5") != std::string::npos)
      return false;
    if (in_kvq_source(line)) return true;
  }
  return false;
}

IsolatedScope::IsolatedScope() { ++t_isolated; }
IsolatedScope::~IsolatedScope() { --t_isolated; }

// Forks; the child runs `read` in an IsolatedScope (as the caller's own run will be), saying
// nothing and leaving without atexit handlers, whatever `read` throws.
void run_isolated(const std::string& path, const std::function<void()>& read) {
  struct stat st {};
  const uint64_t bytes = ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  const uint64_t limit_ms = (kVetSeconds + bytes / kVetBytesPerSecond) * 1000;
#if KVQ_SANITIZED
  struct ChildLog {  // closed on every way out (fork failing, a refusal)
    int fd = open_child_log();
    ~ChildLog() {
      if (fd >= 0) ::close(fd);
    }
  } child_log;
  const int log_fd = child_log.fd;
#endif
  std::fflush(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return;
  if (pid == 0) {
    // A parent killed while it waits (SIGTERM, SIGKILL) takes the child with it: a file that
    // would keep libhdf5 reading forever leaves no orphan behind.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
#if KVQ_SANITIZED
    // A sanitizer's report in the child is this function's answer, not the process's crash:
    // no death callback (libFuzzer's would save the input as a crash of the parent).
    __sanitizer_set_death_callback(nullptr);
    if (log_fd >= 0) ::dup2(log_fd, STDERR_FILENO);
#endif
    try {
      const IsolatedScope scope;
      read();
    } catch (...) {
    }
    ::_exit(0);
  }
  int status = 0;
  for (uint64_t waited_ms = 0;; ++waited_ms) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      status = 0;
      break;
    }
    if (waited_ms >= limit_ms) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      fail("{}: corrupt HDF5 file: reading it did not finish within {} s", path, limit_ms / 1000);
    }
    ::usleep(1000);
  }
#if KVQ_SANITIZED
  // Nothing is allocated here when the child succeeded: this process then reads from the state
  // the child started in.
  if (status != 0) {
    const std::string log = read_child_log(log_fd);
    std::fwrite(log.data(), 1, log.size(), stderr);
    if (blames_kvq(log)) {
      std::fprintf(stderr, "kvq: the report above is kvq's, from a child reading %s\n",
                   path.c_str());
      std::abort();
    }
  }
#endif
  if (WIFSIGNALED(status)) {
    fail("{}: corrupt HDF5 file: reading it crashed the HDF5 library ({})", path,
         ::strsignal(WTERMSIG(status)));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    fail("{}: corrupt HDF5 file: the HDF5 library faulted reading it (a sanitizer's exit {})", path,
         WEXITSTATUS(status));
  }
}

}  // namespace detail

File File::create(const std::string& path) {
  quiet();
  Handle fcpl = untimed(H5P_FILE_CREATE, path);  // the root group's times
  Handle fapl = strong_close_fapl(path);
  return File(path, checked(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), path,
                            "cannot create HDF5 file"));
}

File File::open(const std::string& path) {
  quiet();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) fail("{}: cannot open ({})", path, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("{}: expected an HDF5 file, found a directory", path);
  // A FIFO would block HDF5's open; a device (/dev/zero) is read without end.
  if (!S_ISREG(st.st_mode))
    fail("{}: expected an HDF5 file, found {}", path, file_kind(st.st_mode));
#if H5_VERSION_GE(1, 12, 0)
  const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);  // H5Fis_hdf5 is deprecated
#else
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
  if (is_hdf5 == 0) fail("{}: not an HDF5 file", path);
  if (is_hdf5 < 0) fail_h5(path, "cannot open HDF5 file");
  check_global_heaps(path, st);
  Handle fapl = strong_close_fapl(path);
  vet_file(path, fapl.get());
  return File(path, checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), path,
                            "cannot open HDF5 file"));
}

File File::open_image(const std::string& name, const void* data, size_t size) {
  quiet();
  Handle fapl = strong_close_fapl(name);
  check(H5Pset_fapl_core(fapl.get(), /*increment=*/size_t{1} << 16, /*backing_store=*/false), name,
        "cannot set the core driver");
  // An empty image would make the core driver create a file: refuse it as open() would.
  if (size == 0) fail("{}: not an HDF5 file", name);
  check_global_heaps(name, static_cast<const uint8_t*>(data), size);
  check(H5Pset_file_image(fapl.get(), const_cast<void*>(data), size), name,
        "cannot set the file image");
  vet_file(name, fapl.get());
  return File(name, checked(H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl.get()), name,
                            "cannot open HDF5 file"));
}

File::~File() = default;

void File::close() {
  if (id_.get() < 0) return;
  quiet();
  check(H5Fclose(id_.release()), path_, "cannot close HDF5 file");
}

Group File::root() const {
  quiet();
  return Group(path_, "/", checked(H5Gopen2(id_.get(), "/", H5P_DEFAULT), path_, "cannot open /"));
}

// ---- Group: structure ----

Hid Group::id() const {
  quiet();  // per thread in thread-safe HDF5 builds
  KVQ_CHECK(H5Iis_valid(id_.get()) > 0, "{} used after its file was closed", where());
  return id_.get();
}

std::string Group::child_path(const std::string& name) const {
  if (name.empty() || name.front() == '/') return name.empty() ? path_ : name;
  return path_ == "/" ? "/" + name : path_ + "/" + name;
}

std::string Group::where(const std::string& name) const {
  return file_path_ + ":" + child_path(name);
}

bool Group::exists(const std::string& name) const {
  // H5Lexists fails, rather than answering false, when a parent of the last component is missing.
  for (size_t slash = name.find('/', 1);; slash = name.find('/', slash + 1)) {
    const std::string prefix = name.substr(0, slash);
    if (H5Lexists(id(), prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (slash == std::string::npos) return true;
  }
}

Handle Group::open_object(const std::string& name, bool want_group) const {
  const std::string w = where(name);
  if (!exists(name)) fail("{}: missing {}", w, want_group ? "group" : "dataset");
  Handle obj = checked(H5Oopen(id(), name.c_str(), H5P_DEFAULT), w, "cannot open");
  const H5I_type_t type = H5Iget_type(obj.get());
  const H5I_type_t wanted = want_group ? H5I_GROUP : H5I_DATASET;
  if (type != wanted)
    fail("{}: expected a {}, found a {}", w, want_group ? "group" : "dataset",
         type == H5I_GROUP     ? "group"
         : type == H5I_DATASET ? "dataset"
                               : "named datatype");
  return obj;
}

Group Group::open_group(const std::string& name) const {
  return Group(file_path_, child_path(name), open_object(name, /*want_group=*/true));
}

Group Group::create_group(const std::string& name) const {
  Handle gcpl = untimed(H5P_GROUP_CREATE, where(name));
  for (size_t slash = name.find('/', 1);; slash = name.find('/', slash + 1)) {
    const std::string prefix = name.substr(0, slash);
    if (!exists(prefix))
      checked(H5Gcreate2(id(), prefix.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), where(prefix),
              "cannot create group");
    if (slash == std::string::npos) break;
  }
  return open_group(name);
}

std::vector<std::string> Group::children() const {
  H5G_info_t info{};
  check(H5Gget_info(id(), &info), where(), "cannot list group");
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len =
        H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail_h5(where(), "cannot list group");
    std::vector<char> buf(len + 1);
    H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, buf.data(), buf.size(),
                       H5P_DEFAULT);
    names.emplace_back(buf.data(), len);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// ---- Group: datasets ----

template <typename T>
void Group::write(const std::string& name, const std::vector<T>& values,
                  const std::vector<int64_t>& shape) const {
  const bool shape_ok = std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d >= 0; });
  if (shape_ok && static_cast<int64_t>(values.size()) != numel(shape))
    fail("{}: expected {} values for shape {}, found {}", where(name), numel(shape),
         shape_string(shape), values.size());
  write(name, values.data(), shape);
}

template <typename T>
void Group::write(const std::string& name, const T* values,
                  const std::vector<int64_t>& shape) const {
  const std::string w = where(name);
  if (shape.size() > 4) fail("{}: expected rank 0 to 4, found shape {}", w, shape_string(shape));
  for (int64_t d : shape)
    if (d < 0) fail("{}: expected non-negative dimensions, found shape {}", w, shape_string(shape));
  if (exists(name)) fail("{}: already exists", w);

  const int rank = static_cast<int>(shape.size());
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  Handle space =
      checked(rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims.data(), nullptr), w,
              "cannot create dataspace");
  Handle dcpl = untimed(H5P_DATASET_CREATE, w);
  const size_t n = static_cast<size_t>(numel(shape));
  if (rank > 0 && n * sizeof(T) > kChunkThresholdBytes) {
    // Halve the outermost dimension that is still split-able until a chunk fits the target.
    std::vector<hsize_t> chunk = dims;
    auto chunk_bytes = [&] {
      size_t b = sizeof(T);
      for (hsize_t c : chunk) b *= c;
      return b;
    };
    for (int d = 0; d < rank && chunk_bytes() > kChunkTargetBytes;)
      if (chunk[d] > 1)
        chunk[d] = (chunk[d] + 1) / 2;
      else
        ++d;
    check(H5Pset_chunk(dcpl.get(), rank, chunk.data()), w, "cannot set chunking");
    check(H5Pset_shuffle(dcpl.get()), w, "cannot set shuffle filter");
    if (deflate_available()) check(H5Pset_deflate(dcpl.get(), 1), w, "cannot set deflate filter");
    // HDF5 checksums its metadata but not raw data; this makes a corrupted chunk a read error.
    check(H5Pset_fletcher32(dcpl.get()), w, "cannot set checksum filter");
  }
  Handle dset = checked(H5Dcreate2(id(), name.c_str(), Traits<T>::file(), space.get(), H5P_DEFAULT,
                                   dcpl.get(), H5P_DEFAULT),
                        w, "cannot create dataset");
  if (n > 0)
    check(H5Dwrite(dset.get(), Traits<T>::mem(), H5S_ALL, H5S_ALL, H5P_DEFAULT, values), w,
          "cannot write dataset");
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the checksum hashes memory as stored");
  Checksum64 sum;
  sum.update(values, n * sizeof(T));
  const std::string hex = sum.hex();
  Handle type = checked(H5Tcopy(H5T_C_S1), w, "cannot create string type");
  check(H5Tset_size(type.get(), kChecksumDigits), w, "cannot set string size");
  check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), w, "cannot set padding");
  Handle scalar = checked(H5Screate(H5S_SCALAR), w, "cannot create dataspace");
  write_attr(dset.get(), w, kChecksumAttr, type.get(), type.get(), scalar.get(), hex.data());
}

namespace {
// Compares a dataset's values with its checksum attribute, when it has one (files written before
// the checksum was added carry none; schemas/). A wrong-typed attribute is an error, not a skip.
void verify_checksum(hid_t dset, const std::string& w, const void* values, size_t bytes) {
  const htri_t has = H5Aexists(dset, kChecksumAttr);
  if (has < 0) fail_h5(w, "cannot look up the checksum");
  if (has == 0) return;
  const std::string aw = w + "@" + kChecksumAttr;
  Handle attr = checked(H5Aopen(dset, kChecksumAttr, H5P_DEFAULT), aw, "cannot open attribute");
  Handle type = checked(H5Aget_type(attr.get()), aw, "cannot read attribute type");
  Handle space = checked(H5Aget_space(attr.get()), aw, "cannot read attribute shape");
  if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) != 0 ||
      H5Tget_size(type.get()) != kChecksumDigits ||
      H5Sget_simple_extent_type(space.get()) != H5S_SCALAR)
    fail("{}: expected a string of {} hex digits, found {}", aw, kChecksumDigits,
         describe_type(type.get()));
  Handle mem = checked(H5Tcopy(H5T_C_S1), aw, "cannot create string type");
  H5Tset_size(mem.get(), kChecksumDigits);
  H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);
  char stored[kChecksumDigits + 1] = {};
  check(H5Aread(attr.get(), mem.get(), stored), aw, "cannot read attribute");
  Checksum64 sum;
  sum.update(values, bytes);
  if (sum.hex() != stored)
    fail("{}: checksum mismatch: the values hash to {}, the file says {} (the file is corrupt)", w,
         sum.hex(), std::string(stored, strnlen(stored, kChecksumDigits)));
}
}  // namespace

template <typename T>
Array<T> Group::read_impl(const std::string& name,
                          const std::vector<int64_t>* expected_shape) const {
  const std::string w = where(name);
  DatasetInfo info = dataset_info(name);
  if (info.dtype != Traits<T>::kName)
    fail("{}: expected {}, found {}", w, Traits<T>::kName, info.dtype);
  if (expected_shape) require_shape(w, *expected_shape, info.shape);
  Handle dset = open_object(name, /*want_group=*/false);
  // The shape is only a claim: bound the bytes it implies by what the file stores before
  // allocating.
  std::vector<uint64_t> dims;
  for (int64_t d : info.shape) dims.push_back(static_cast<uint64_t>(d));
  const uint64_t n_bytes = checked_product(dims, sizeof(T), w);
  const uint64_t stored = H5Dget_storage_size(dset.get());
  if (n_bytes > max_value_bytes(stored, info.chunked) && n_bytes > 0)
    fail("{}: shape [{}] needs {} bytes, the file stores {}", w, fmt::join(dims, ", "), n_bytes,
         stored);
  Array<T> out{std::vector<T>(static_cast<size_t>(n_bytes / sizeof(T))), std::move(info.shape)};
  if (!out.values.empty())
    check(H5Dread(dset.get(), Traits<T>::mem(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.values.data()),
          w, "cannot read dataset");
  verify_checksum(dset.get(), w, out.values.data(), out.values.size() * sizeof(T));
  return out;
}

template <typename T>
Array<T> Group::read(const std::string& name) const {
  return read_impl<T>(name, nullptr);
}

template <typename T>
Array<T> Group::read(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  return read_impl<T>(name, &expected_shape);
}

DatasetInfo Group::dataset_info(const std::string& name) const {
  const std::string w = where(name);
  Handle dset = open_object(name, /*want_group=*/false);
  Handle type = checked(H5Dget_type(dset.get()), w, "cannot read dataset type");
  Handle space = checked(H5Dget_space(dset.get()), w, "cannot read dataset shape");
  Handle dcpl = checked(H5Dget_create_plist(dset.get()), w, "cannot read dataset layout");
  DatasetInfo info;
  info.dtype = describe_type(type.get());
  if (!read_shape(space.get(), &info.shape)) info.dtype = "empty (null dataspace)";
  info.chunked = H5Pget_layout(dcpl.get()) == H5D_CHUNKED;
  return info;
}

// ---- Group: attributes ----

bool Group::has_attr(const std::string& name) const { return H5Aexists(id(), name.c_str()) > 0; }

Handle Group::open_attr(const std::string& name) const {
  const std::string w = where() + "@" + name;
  const htri_t exists = H5Aexists(id(), name.c_str());
  if (exists < 0) fail_h5(w, "cannot open attribute");
  if (exists == 0) fail("{}: missing attribute", w);
  return checked(H5Aopen(id(), name.c_str(), H5P_DEFAULT), w, "cannot open attribute");
}

void Group::set_string_attr(const std::string& name, const std::string& value,
                            bool fixed_length) const {
  const std::string w = where() + "@" + name;
  // HDF5 strings end at the first NUL, so one inside would silently truncate the value.
  if (value.find('\0') != std::string::npos) fail("{}: expected a string without NUL bytes", w);
  Handle type = checked(H5Tcopy(H5T_C_S1), w, "cannot create string type");
  check(H5Tset_size(type.get(), fixed_length ? std::max<size_t>(value.size(), 1) : H5T_VARIABLE), w,
        "cannot set string size");
  check(H5Tset_cset(type.get(), H5T_CSET_UTF8), w, "cannot set string encoding");
  if (fixed_length) check(H5Tset_strpad(type.get(), H5T_STR_NULLPAD), w, "cannot set padding");
  Handle space = checked(H5Screate(H5S_SCALAR), w, "cannot create dataspace");
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  const char* pointer = value.c_str();
  write_attr(id(), where(), name, type.get(), type.get(), space.get(),
             fixed_length ? static_cast<const void*>(padded.data()) : &pointer);
}

void Group::set_int_attr(const std::string& name, int64_t value) const {
  write_numeric_attr<int64_t>(id(), where(), name, {value}, /*scalar=*/true);
}
void Group::set_double_attr(const std::string& name, double value) const {
  write_numeric_attr<double>(id(), where(), name, {value}, /*scalar=*/true);
}
void Group::set_int_array_attr(const std::string& name, const std::vector<int64_t>& values) const {
  write_numeric_attr(id(), where(), name, values, /*scalar=*/false);
}
void Group::set_double_array_attr(const std::string& name,
                                  const std::vector<double>& values) const {
  write_numeric_attr(id(), where(), name, values, /*scalar=*/false);
}

std::string Group::string_attr(const std::string& name) const {
  const std::string w = where() + "@" + name;
  Handle attr = open_attr(name);
  Handle type = checked(H5Aget_type(attr.get()), w, "cannot read attribute type");
  if (H5Tget_class(type.get()) != H5T_STRING)
    fail("{}: expected string, found {}", w, describe_type(type.get()));
  Handle space = checked(H5Aget_space(attr.get()), w, "cannot read attribute shape");
  std::vector<int64_t> shape;
  if (!read_shape(space.get(), &shape) || numel(shape) != 1)
    fail("{}: expected a single value, found shape {}", w, shape_string(shape));
  Handle mem = checked(H5Tcopy(H5T_C_S1), w, "cannot create string type");
  H5Tset_cset(mem.get(), H5Tget_cset(type.get()));  // HDF5 does not convert between encodings
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Tset_size(mem.get(), H5T_VARIABLE);
    char* p = nullptr;
    check(H5Aread(attr.get(), mem.get(), &p), w, "cannot read attribute");
    std::string value = p ? p : "";
    H5free_memory(p);
    return value;
  }
  const size_t size = H5Tget_size(type.get());
  H5Tset_size(mem.get(), size);
  H5Tset_strpad(mem.get(), H5T_STR_NULLPAD);
  std::vector<char> buf(size + 1, '\0');
  check(H5Aread(attr.get(), mem.get(), buf.data()), w, "cannot read attribute");
  return std::string(buf.data(), strnlen(buf.data(), size));
}

int64_t Group::int_attr(const std::string& name) const {
  return read_numeric_attr<int64_t>(open_attr(name).get(), where() + "@" + name, true)[0];
}
double Group::double_attr(const std::string& name) const {
  return read_numeric_attr<double>(open_attr(name).get(), where() + "@" + name, true)[0];
}
std::vector<int64_t> Group::int_array_attr(const std::string& name) const {
  return read_numeric_attr<int64_t>(open_attr(name).get(), where() + "@" + name, false);
}
std::vector<double> Group::double_array_attr(const std::string& name) const {
  return read_numeric_attr<double>(open_attr(name).get(), where() + "@" + name, false);
}

#define KVQ_H5_INSTANTIATE(T)                                                                     \
  template const char* dtype_name<T>();                                                           \
  template void Group::write<T>(const std::string&, const std::vector<T>&,                        \
                                const std::vector<int64_t>&) const;                               \
  template void Group::write<T>(const std::string&, const T*, const std::vector<int64_t>&) const; \
  template Array<T> Group::read<T>(const std::string&) const;                                     \
  template Array<T> Group::read<T>(const std::string&, const std::vector<int64_t>&) const;
KVQ_H5_INSTANTIATE(double)
KVQ_H5_INSTANTIATE(float)
KVQ_H5_INSTANTIATE(int64_t)
KVQ_H5_INSTANTIATE(int32_t)
KVQ_H5_INSTANTIATE(uint8_t)
KVQ_H5_INSTANTIATE(uint32_t)
#undef KVQ_H5_INSTANTIATE

}  // namespace kvq::artifact
