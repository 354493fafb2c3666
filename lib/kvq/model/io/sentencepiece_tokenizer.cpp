// SentencePiece `tokenizer.model` through libsentencepiece, loaded at run time in isolation.
//
// Why not link it: libsentencepiece.so as Debian builds it (with its bundled protobuf-lite)
// exports its own copy of the google::protobuf symbols. LibTorch loads the system
// libprotobuf.so.32; with both in one process the dynamic linker binds libprotobuf's static
// initializers to sentencepiece's copies and every kvq binary segfaults before main(). So this
// file references no sentencepiece symbol at link time: it dlopen()s the library with
// RTLD_LOCAL | RTLD_DEEPBIND (the library and its protobuf copy bind to each other, and stay out
// of everyone else's way), takes the three non-virtual functions it needs by their mangled
// names, and calls everything else through the class's vtable, whose layout
// <sentencepiece_processor.h> (same package as the library) describes.
// Not here: sampling encodings, n-best, the trainer.
#include <dlfcn.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <new>

#include "kvq/common/error.h"
#include "kvq/model/io/tokenizer.h"

namespace kvq::model {
namespace {

namespace spm = sentencepiece;

// The build may name the exact file (e.g. a full path from pkg-config); the soname otherwise.
#ifdef KVQ_SENTENCEPIECE_LIBRARY
constexpr char kLibrary[] = KVQ_SENTENCEPIECE_LIBRARY;
#else
constexpr char kLibrary[] = "libsentencepiece.so.0";
#endif

// The library's non-virtual entry points kvq needs (Itanium C++ ABI: `this` is the first
// argument). A placement-new'd Status is destroyed through `destroy_status`, so the compiler
// never needs the library's destructor symbol.
struct Api {
  void (*construct)(spm::SentencePieceProcessor*) = nullptr;
  void (*destroy_status)(spm::util::Status*) = nullptr;
  const char* (*error_message)(const spm::util::Status*) = nullptr;
  std::string error;  // why loading failed; empty when usable
};

#if defined(__SANITIZE_ADDRESS__)
#define KVQ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVQ_ASAN 1
#endif
#endif

const Api& api() {
  static const Api loaded = [] {
    Api a;
    int mode = RTLD_NOW | RTLD_LOCAL;
    // ASan refuses RTLD_DEEPBIND; its build (scripts/sanitize.sh) has no LibTorch to clash with.
#if defined(RTLD_DEEPBIND) && !defined(KVQ_ASAN)
    mode |= RTLD_DEEPBIND;
#endif
    void* handle = dlopen(kLibrary, mode);  // kept for the life of the process
    if (!handle) {
      const char* why = dlerror();
      a.error = fmt::format("cannot load {} ({})", kLibrary, why ? why : "unknown error");
      return a;
    }
    auto symbol = [&](const char* name) {
      void* p = dlsym(handle, name);
      if (!p && a.error.empty()) a.error = fmt::format("{} has no symbol {}", kLibrary, name);
      return p;
    };
    a.construct = reinterpret_cast<decltype(a.construct)>(
        symbol("_ZN13sentencepiece22SentencePieceProcessorC1Ev"));
    a.destroy_status =
        reinterpret_cast<decltype(a.destroy_status)>(symbol("_ZN13sentencepiece4util6StatusD1Ev"));
    a.error_message = reinterpret_cast<decltype(a.error_message)>(
        symbol("_ZNK13sentencepiece4util6Status13error_messageEv"));
    return a;
  }();
  return loaded;
}

// Runs a call returning util::Status; "" when it succeeded, else its message on one line.
template <typename Call>
std::string status_error(Call&& call) {
  alignas(spm::util::Status) unsigned char storage[sizeof(spm::util::Status)];
  auto* status = new (storage) spm::util::Status(call());
  std::string message;
  if (!status->ok()) {
    const char* text = api().error_message(status);
    message = text && *text ? text : "unknown error";
    std::replace(message.begin(), message.end(), '\n', ' ');
    message.erase(message.find_last_not_of(' ') + 1);
  }
  api().destroy_status(status);
  return message;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    path_ = path;
    if (!std::filesystem::is_regular_file(path)) fail("{}: tokenizer file not found", path);
    if (!api().error.empty()) fail("{}: {}", path, api().error);
    void* memory = ::operator new(sizeof(spm::SentencePieceProcessor));
    try {
      api().construct(static_cast<spm::SentencePieceProcessor*>(memory));
    } catch (...) {
      ::operator delete(memory);
      throw;
    }
    sp_.reset(static_cast<spm::SentencePieceProcessor*>(memory));
    const std::string error = status_error([&] { return sp_->Load(path); });
    if (!error.empty()) fail("{}: not a SentencePiece model ({})", path, error);
  }

  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    const std::string error = status_error([&] { return sp_->Encode(text, &ids); });
    if (!error.empty()) fail("{}: encoding failed ({})", path_, error);
    std::vector<int32_t> out;
    out.reserve(ids.size() + 1);
    if (add_bos) out.push_back(bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    for (int32_t id : ids)
      if (id < 0 || id >= vocab_size())
        fail("{}: token id {} outside the vocabulary (size {})", path_, id, vocab_size());
    std::string text;
    const std::vector<int> sp_ids(ids.begin(), ids.end());
    const std::string error = status_error([&] { return sp_->Decode(sp_ids, &text); });
    if (!error.empty()) fail("{}: decoding failed ({})", path_, error);
    return text;
  }

  int32_t vocab_size() const override { return sp_->GetPieceSize(); }
  int32_t bos_id() const override { return sp_->bos_id(); }
  int32_t eos_id() const override { return sp_->eos_id(); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  struct Destroy {
    void operator()(spm::SentencePieceProcessor* p) const {
      p->~SentencePieceProcessor();  // virtual: runs the library's destructor
      ::operator delete(p);
    }
  };
  std::unique_ptr<spm::SentencePieceProcessor, Destroy> sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace kvq::model
