// Reference pieces for the tokenizer tests: llama2.c's tokenizer.bin written and read back, a
// SentencePiece model's pieces read straight from its protobuf, and run.c's `encode` ported
// line for line (O(n^2)) as the oracle for kvq's heap-based merge.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace kvq::model::test_reference {

using Ids = std::vector<int32_t>;

struct Vocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
};

inline std::string serialize(const Vocab& v) {
  int32_t max_len = 0;
  for (const auto& p : v.pieces) max_len = std::max<int32_t>(max_len, p.size());
  std::string out(reinterpret_cast<const char*>(&max_len), 4);
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    const int32_t len = static_cast<int32_t>(v.pieces[i].size());
    out.append(reinterpret_cast<const char*>(&v.scores[i]), 4);
    out.append(reinterpret_cast<const char*>(&len), 4);
    out += v.pieces[i];
  }
  return out;
}

// The (piece, score) list of a SentencePiece model, read straight from its protobuf
// (ModelProto field 1: SentencePiece {1: piece, 2: score}); linking libsentencepiece into a
// test would clash with LibTorch's protobuf (see sentencepiece_tokenizer.cpp).
inline Vocab read_model_proto(const std::string& bytes) {
  size_t pos = 0;
  auto varint = [&](size_t end) {
    uint64_t v = 0;
    for (int shift = 0; pos < end; shift += 7) {
      const auto byte = static_cast<unsigned char>(bytes[pos++]);
      v |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if (!(byte & 0x80)) break;
    }
    return v;
  };
  // Calls fn(field, value_begin, value_end) for length-delimited fields, skips the others.
  auto fields = [&](size_t begin, size_t end, auto&& fn) {
    for (pos = begin; pos < end;) {
      const uint64_t key = varint(end);
      const int wire = static_cast<int>(key & 7);
      if (wire == 0) varint(end);
      if (wire == 1) pos += 8;
      if (wire == 5) fn(key >> 3, pos, pos + 4), pos += 4;
      if (wire == 2) {
        const size_t len = varint(end), start = pos;
        pos += len;
        fn(key >> 3, start, start + len);
        pos = start + len;
      }
    }
  };
  Vocab v;
  fields(0, bytes.size(), [&](uint64_t field, size_t b, size_t e) {
    if (field != 1) return;
    const size_t outer = pos;
    std::string piece;
    float score = 0;
    fields(b, e, [&](uint64_t f, size_t pb, size_t pe) {
      if (f == 1) piece = bytes.substr(pb, pe - pb);
      if (f == 2) std::memcpy(&score, bytes.data() + pb, 4);
    });
    v.pieces.push_back(piece);
    v.scores.push_back(score);
    pos = outer;
  });
  return v;
}

// run.c `encode`, line for line (BOS takes part in merges; O(n^2)): the reference the fast
// merge must reproduce.
inline Ids naive_encode(const Vocab& v, const std::string& text, bool bos) {
  std::map<std::string, int32_t> lookup;
  for (size_t i = 0; i < v.pieces.size(); ++i) lookup.emplace(v.pieces[i], static_cast<int32_t>(i));
  auto find = [&](const std::string& s) {
    const auto it = lookup.find(s);
    return it == lookup.end() ? -1 : it->second;
  };
  Ids t;
  if (bos) t.push_back(1);
  if (!text.empty()) t.push_back(find(" "));
  std::string buf;
  const char* c = text.c_str();
  for (; *c != '\0'; c++) {
    if ((*c & 0xC0) != 0x80) buf.clear();
    buf += *c;
    if ((*(c + 1) & 0xC0) == 0x80 && buf.size() < 4) continue;
    const int32_t id = find(buf);
    if (id != -1) {
      t.push_back(id);
    } else {
      for (char b : buf) t.push_back(static_cast<unsigned char>(b) + 3);
    }
    buf.clear();
  }
  for (;;) {
    float best_score = -1e10;
    int32_t best_id = -1, best_idx = -1;
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(t.size()); i++) {
      const int32_t id = find(v.pieces[t[i]] + v.pieces[t[i + 1]]);
      if (id != -1 && v.scores[id] > best_score) {
        best_score = v.scores[id];
        best_id = id;
        best_idx = i;
      }
    }
    if (best_idx == -1) break;
    t[best_idx] = best_id;
    t.erase(t.begin() + best_idx + 1);
  }
  return t;
}

inline Vocab parse_bin(const std::string& bytes, int32_t vocab_size) {
  Vocab v;
  size_t pos = 4;
  for (int32_t i = 0; i < vocab_size; ++i) {
    float score;
    int32_t len;
    std::memcpy(&score, bytes.data() + pos, 4);
    std::memcpy(&len, bytes.data() + pos + 4, 4);
    v.pieces.push_back(bytes.substr(pos + 8, len));
    v.scores.push_back(score);
    pos += 8 + len;
  }
  return v;
}

}  // namespace kvq::model::test_reference
