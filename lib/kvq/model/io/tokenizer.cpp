// llama2.c's tokenizer.bin with its own score-driven BPE (run.c `encode`/`decode`), made
// O(n log n) so whole data files encode in seconds, and the choice of tokenizer for a model
// path. SentencePiece is in sentencepiece_tokenizer.cpp. Not here: training, special-token
// parsing in text.
#include "kvq/model/io/tokenizer.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <unordered_map>

#include "kvq/common/error.h"
#include "kvq/common/progress.h"

namespace kvq::model {
namespace {

namespace fs = std::filesystem;

// llama2.c fixes these ids (run.c) and puts byte pieces <0x00>..<0xFF> at 3..258.
constexpr int32_t kLlama2cBos = 1;
constexpr int32_t kLlama2cEos = 2;
constexpr int32_t kByteOffset = 3;
// run.c starts its best score at -1e10 and merges only on a strictly higher score.
constexpr float kNoMergeScore = -1e10f;

// "<0xHH>" -> HH, else -1. run.c's sscanf("<0x%02hhX>") also accepts looser spellings no real
// vocabulary contains; exact matching keeps ordinary pieces such as "<0x" + text as text.
int byte_piece_value(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(const std::string& path, int32_t vocab_size) {
    path_ = path;
    if (vocab_size <= 0) fail("{}: vocab_size must be positive, found {}", path, vocab_size);
    if (!fs::is_regular_file(path)) fail("{}: tokenizer file not found", path);
    std::ifstream in(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in || in.bad()) fail("{}: cannot read tokenizer file", path);
    parse(bytes, vocab_size);
    index();
  }
  // piece_id_ views the strings in vocab_.
  Llama2cTokenizer(const Llama2cTokenizer&) = delete;
  Llama2cTokenizer& operator=(const Llama2cTokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    // The text starts as if right after BOS, so a leading dummy-prefix space is dropped as
    // SentencePiece does; BOS and EOS themselves print nothing (run.c would print "\n<s>\n").
    int32_t prev = kLlama2cBos;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size())
        fail("{}: token id {} outside the vocabulary (size {})", path_, id, vocab_size());
      if (id != kLlama2cBos && id != kLlama2cEos) {
        std::string_view piece = vocab_[id];
        if (prev == kLlama2cBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
        if (byte_value_[id] >= 0)
          text.push_back(static_cast<char>(byte_value_[id]));
        else
          text.append(piece);
      }
      prev = id;
    }
    return text;
  }

  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.size()); }
  int32_t bos_id() const override { return kLlama2cBos; }
  int32_t eos_id() const override { return kLlama2cEos; }
  std::string kind() const override { return "llama2c"; }

 private:
  void parse(const std::string& bytes, int32_t vocab_size) {
    size_t pos = 0;
    // `what` names the field for the message: "the header", "score of token 7", ...
    auto need = [&](size_t n, const auto& what) {
      if (bytes.size() - pos < n)
        fail(
            "{}: truncated: {} needs {} bytes at offset {}, file has {} bytes (expected {} "
            "tokens, the model's vocab_size)",
            path_, what(), n, pos, bytes.size(), vocab_size);
    };
    auto take = [&](void* dst, size_t n, const auto& what) {
      need(n, what);
      std::memcpy(dst, bytes.data() + pos, n);
      pos += n;
    };
    int32_t max_token_length = 0;
    take(&max_token_length, 4, [] { return std::string("the header"); });
    // Sizes are checked against the file before anything is allocated: each token takes at least
    // 8 bytes (score, length), and a piece's text must be there before its string is sized.
    need(size_t{8} * static_cast<size_t>(vocab_size),
         [] { return std::string("the scores and lengths of all tokens"); });
    vocab_.resize(vocab_size);
    scores_.resize(vocab_size);
    for (int32_t i = 0; i < vocab_size; ++i) {
      int32_t len = 0;
      take(&scores_[i], 4, [i] { return fmt::format("score of token {}", i); });
      take(&len, 4, [i] { return fmt::format("length of token {}", i); });
      // run.c sizes its buffers by max_token_length; a longer piece means this is no tokenizer.bin.
      if (len < 0 || len > max_token_length)
        fail(
            "{}: token {} has length {}, outside [0, {}] (max_token_length); not a llama2.c "
            "tokenizer.bin",
            path_, i, len, max_token_length);
      need(static_cast<size_t>(len), [i] { return fmt::format("text of token {}", i); });
      vocab_[i].resize(static_cast<size_t>(len));
      take(vocab_[i].data(), static_cast<size_t>(len),
           [i] { return fmt::format("text of token {}", i); });
    }
    // Extra bytes mean the file holds more tokens than the model: a mismatched tokenizer.
    if (pos != bytes.size())
      fail(
          "{}: {} bytes left after {} tokens (the model's vocab_size); tokenizer does not "
          "belong to this model",
          path_, bytes.size() - pos, vocab_size);
  }

  void index() {
    piece_id_.reserve(vocab_.size() * 2);
    byte_value_.resize(vocab_.size());
    single_byte_id_.fill(-1);
    for (int32_t i = 0; i < vocab_size(); ++i) {
      // run.c bsearches a qsorted copy, so which duplicate wins is unspecified there; the
      // lowest id wins here.
      piece_id_.emplace(vocab_[i], i);
      byte_value_[i] = byte_piece_value(vocab_[i]);
      if (vocab_[i].size() == 1 && single_byte_id_[static_cast<unsigned char>(vocab_[i][0])] < 0)
        single_byte_id_[static_cast<unsigned char>(vocab_[i][0])] = i;
    }
    space_id_ = lookup(" ");
    space_bounds_merges_ = space_id_ >= 0;
    for (const auto& piece : vocab_)
      for (size_t k = 1; k < piece.size() && space_bounds_merges_; ++k)
        if (piece[k] == ' ' && piece[k - 1] != ' ') space_bounds_merges_ = false;
  }

  int32_t lookup(std::string_view piece) const {
    if (piece.size() == 1) return single_byte_id_[static_cast<unsigned char>(piece[0])];
    const auto it = piece_id_.find(piece);
    return it == piece_id_.end() ? -1 : it->second;
  }

  int32_t byte_fallback(unsigned char byte) const {
    const int32_t id = byte + kByteOffset;
    if (id >= vocab_size())
      fail("{}: byte fallback token {} for byte 0x{:02X} is outside the vocabulary (size {})",
           path_, id, byte, vocab_size());
    return id;
  }

  // A mergeable adjacent pair in merge_pairs' heap.
  struct Candidate {
    float score;
    int32_t left;      // node (initial position) of the pair's left token
    uint32_t version;  // version[left] when pushed
    int32_t merged;    // id of the merged piece
  };
  static bool lower_priority(const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
  // Scratch space of merge_pairs, reused across the words of one encode call.
  struct MergeState {
    std::vector<int32_t> prev, next;
    std::vector<uint32_t> version;
    std::vector<Candidate> heap;
    // The merged piece of each (left id, right id) seen, -1 for none: pairs repeat constantly.
    std::unordered_map<uint64_t, int32_t> pair_cache;
    std::string buffer;
  };

  void split_codepoints(std::string_view text, std::vector<int32_t>& out) const;
  void merge_pairs(int32_t* ids, int32_t n_ids, MergeState& st, std::vector<int32_t>& out) const;

  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::vector<int> byte_value_;  // per id: the byte of a <0xHH> piece, else -1
  std::unordered_map<std::string_view, int32_t> piece_id_;  // views into vocab_
  std::array<int32_t, 256> single_byte_id_{};
  int32_t space_id_ = -1;  // the " " piece
  // True when no piece holds a non-space byte followed by a space: then no merge can join a
  // token ending in a non-space with a following " " token, and those spaces split the work.
  bool space_bounds_merges_ = false;
};

// run.c's first pass: each UTF-8 codepoint (a lead byte and up to 3 continuation bytes) becomes
// its piece if the vocabulary has one, else one byte-fallback token per byte.
void Llama2cTokenizer::split_codepoints(std::string_view text, std::vector<int32_t>& out) const {
  auto is_continuation = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; };
  size_t start = 0;
  size_t len = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!is_continuation(text[i])) {
      start = i;
      len = 0;
    }
    ++len;
    if (i + 1 < text.size() && is_continuation(text[i + 1]) && len < 4) continue;
    const std::string_view cp = text.substr(start, len);
    const int32_t id = lookup(cp);
    if (id >= 0) {
      out.push_back(id);
    } else {
      for (char c : cp) out.push_back(byte_fallback(static_cast<unsigned char>(c)));
    }
    // A stray run of continuation bytes continues after the flushed ones, as in run.c.
    start = i + 1;
    len = 0;
  }
}

// run.c's merge loop repeatedly merges the adjacent pair whose concatenation is the piece with
// the highest score, the leftmost on ties; that is O(n^2) on a whole data file. Same order here
// with a doubly linked list and a max-heap keyed (score, -position). A node's position is its
// index in the initial split, which stays in list order because a merge keeps the left node.
// Heap entries are validated lazily: version[i] changes whenever the pair starting at node i
// (its id, its successor, or the successor's id) changes, so stale entries are skipped on pop.
void Llama2cTokenizer::merge_pairs(int32_t* ids, int32_t n_ids, MergeState& st,
                                   std::vector<int32_t>& out) const {
  st.prev.resize(n_ids);
  st.next.resize(n_ids);
  st.version.assign(n_ids, 0);
  st.heap.clear();
  for (int32_t i = 0; i < n_ids; ++i) {
    st.prev[i] = i - 1;
    st.next[i] = i + 1 < n_ids ? i + 1 : -1;
  }
  auto merged_id = [&](int32_t a, int32_t b) {
    const uint64_t key = (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
    const auto [it, inserted] = st.pair_cache.try_emplace(key, -1);
    if (inserted) {
      st.buffer.assign(vocab_[a]).append(vocab_[b]);
      it->second = lookup(st.buffer);
    }
    return it->second;
  };
  auto push = [&](int32_t left) {
    const int32_t right = st.next[left];
    if (right < 0) return;
    const int32_t merged = merged_id(ids[left], ids[right]);
    if (merged < 0 || !(scores_[merged] > kNoMergeScore)) return;
    st.heap.push_back({scores_[merged], left, st.version[left], merged});
    std::push_heap(st.heap.begin(), st.heap.end(), lower_priority);
  };
  for (int32_t i = 0; i + 1 < n_ids; ++i) push(i);
  while (!st.heap.empty()) {
    std::pop_heap(st.heap.begin(), st.heap.end(), lower_priority);
    const Candidate c = st.heap.back();
    st.heap.pop_back();
    if (c.version != st.version[c.left]) continue;
    const int32_t left = c.left, right = st.next[left], after = st.next[right];
    const int32_t before = st.prev[left];
    ids[left] = c.merged;
    st.next[left] = after;
    if (after >= 0) st.prev[after] = left;
    ++st.version[left];
    ++st.version[right];  // dead: its own pending pair is void
    if (before >= 0) {
      ++st.version[before];
      push(before);
    }
    push(left);
  }
  for (int32_t i = n_ids > 0 ? 0 : -1; i >= 0; i = st.next[i]) out.push_back(ids[i]);
}

std::vector<int32_t> Llama2cTokenizer::encode(std::string_view text, bool add_bos) const {
  if (text.size() >= static_cast<size_t>(std::numeric_limits<int32_t>::max()) - 1)
    fail("{}: text of {} bytes is too long to encode at once", path_, text.size());
  std::vector<int32_t> initial;
  initial.reserve(text.size() + 1);
  // run.c's dummy prefix; it would push -1 when the vocabulary has no " " piece, a byte
  // fallback is the sane reading.
  if (!text.empty()) initial.push_back(space_id_ >= 0 ? space_id_ : byte_fallback(' '));
  split_codepoints(text, initial);
  // run.c also lets BOS take part in merges; that matters only for a piece that starts with
  // the BOS text "\n<s>\n" and goes on, which llama2.c's export never has. Leaving BOS out
  // keeps it first whatever the vocabulary.
  std::vector<int32_t> out;
  out.reserve(initial.size() / 2 + 2);
  if (add_bos) out.push_back(kLlama2cBos);
  MergeState state;
  if (!space_bounds_merges_) {
    merge_pairs(initial.data(), static_cast<int32_t>(initial.size()), state, out);
    return out;
  }
  // No merge crosses a " " that follows a non-space (see space_bounds_merges_), so the words
  // between such spaces merge alone, in the same order: small heaps, far fewer cache misses.
  size_t begin = 0;
  for (size_t j = 1; j <= initial.size(); ++j) {
    if (j < initial.size() && (initial[j] != space_id_ || vocab_[initial[j - 1]].empty() ||
                               vocab_[initial[j - 1]].back() == ' '))
      continue;
    merge_pairs(initial.data() + begin, static_cast<int32_t>(j - begin), state, out);
    begin = j;
  }
  return out;
}

std::string lower_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext;
}

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int32_t vocab_size) {
  return std::make_unique<Llama2cTokenizer>(path, vocab_size);
}

std::unique_ptr<Tokenizer> open_tokenizer_for_model(const std::string& model_path,
                                                    int32_t vocab_size) {
  const fs::path model(model_path);
  if (!fs::exists(model)) fail("{}: model path not found", model_path);
  const bool is_dir = fs::is_directory(model);
  const fs::path dir = is_dir ? model : model.parent_path();
  // A llama2.c checkpoint ships with tokenizer.bin; a Hugging Face directory with
  // tokenizer.model. Each prefers its own kind and falls back to the other.
  const bool prefer_bin = !is_dir && lower_extension(model) == ".bin";
  const fs::path sp_path = dir / "tokenizer.model", bin_path = dir / "tokenizer.bin";
  const fs::path first = prefer_bin ? bin_path : sp_path;
  const fs::path second = prefer_bin ? sp_path : bin_path;
  const fs::path* chosen = fs::is_regular_file(first)    ? &first
                           : fs::is_regular_file(second) ? &second
                                                         : nullptr;
  if (!chosen)
    fail("{}: no tokenizer found (tried {} and {})", model_path, first.string(), second.string());
  if (*chosen == bin_path) return load_llama2c_tokenizer(bin_path.string(), vocab_size);
  auto tokenizer = load_sentencepiece_tokenizer(sp_path.string());
  // A model may pad its vocabulary, but a tokenizer id past the model's rows is a wrong pairing.
  if (vocab_size > 0 && tokenizer->vocab_size() > vocab_size)
    fail("{}: {} pieces, more than the model's vocab_size {}", sp_path.string(),
         tokenizer->vocab_size(), vocab_size);
  return tokenizer;
}

std::vector<int32_t> encode_up_to(const Tokenizer& tokenizer, std::string_view text, bool add_bos,
                                  int64_t max_tokens, bool progress) {
  if (max_tokens <= 0) return tokenizer.encode(text, add_bos);
  // Tokens past max_tokens that a prefix must yield: a cut moves at most the last few.
  constexpr int64_t kMargin = 256;
  constexpr size_t kLongText = size_t{16} << 20;  // progress only for texts above 16 MiB
  const bool show = progress && text.size() > kLongText;
  std::unique_ptr<Progress> bar;
  if (show)
    bar = std::make_unique<Progress>("encode", static_cast<int64_t>(text.size()), "B",
                                     /*quiet=*/false);
  size_t want = static_cast<size_t>(std::min<int64_t>(max_tokens + kMargin, INT64_MAX / 16)) * 8;
  size_t done = 0;
  for (;;) {
    size_t cut = text.size();
    if (want < text.size()) {
      // Cut before a whitespace character, so no token of the prefix spans the cut.
      const size_t ws = text.find_first_of(" \t\n\r", want);
      if (ws != std::string_view::npos) cut = ws;
    }
    std::vector<int32_t> ids = tokenizer.encode(text.substr(0, cut), add_bos);
    if (bar) bar->advance(static_cast<int64_t>(cut - done));
    done = cut;
    if (cut == text.size() || static_cast<int64_t>(ids.size()) >= max_tokens + kMargin) {
      if (static_cast<int64_t>(ids.size()) > max_tokens)
        ids.resize(static_cast<size_t>(max_tokens));
      return ids;
    }
    want = cut >= text.size() / 2 ? text.size() : cut * 2;
  }
}

}  // namespace kvq::model
