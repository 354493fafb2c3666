// Tokenizers: SentencePiece against the reference token ids in ../shared/data/README.md, the
// llama2.c tokenizer.bin against SentencePiece (encode and decode) and against a literal port of
// run.c's O(n^2) merge loop, the model-path lookup, and malformed tokenizer files.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kvq/common/error.h"
#include "kvq/model/io/tokenizer.h"
#include "support/test_support.h"
#include "unit/tokenizer_reference.h"

namespace kvq::model {
namespace {

using ::kvq::test::error_of;

namespace fs = std::filesystem;
using test_reference::Ids;
using test_reference::naive_encode;
using test_reference::parse_bin;
using test_reference::read_model_proto;
using test_reference::serialize;
using test_reference::Vocab;

const char kWt2Model[] = "models/wt2-llama-1m/tokenizer.model";
const char kWt2Bin[] = "models/wt2-llama-1m/tokenizer.bin";
const char kLlama2Model[] = "tokenizers/llama2-tokenizer.model";
const char kWikiTest[] = "wikitext-2/wiki.test.tokens";

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// llama2.c's tokenizer.py export: BOS/EOS become "\n<s>\n"/"\n</s>\n", U+2581 becomes " ".
std::string export_llama2c(const std::string& model_path) {
  const auto sp = load_sentencepiece_tokenizer(model_path);
  Vocab v = read_model_proto(test::read_file(model_path));
  EXPECT_EQ(static_cast<int32_t>(v.pieces.size()), sp->vocab_size());
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    std::string& piece = v.pieces[i];
    if (static_cast<int32_t>(i) == sp->bos_id()) piece = "\n<s>\n";
    if (static_cast<int32_t>(i) == sp->eos_id()) piece = "\n</s>\n";
    for (size_t at; (at = piece.find("\xE2\x96\x81")) != std::string::npos;)
      piece.replace(at, 3, " ");
  }
  return serialize(v);
}

// The test split and the wt2 SentencePiece tokenizer, shared across tests; the encoding of the
// whole split (a second) is made once, by the first test that asks for it.
class TokenizerData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_data(kWikiTest) || !test::have_data(kWt2Model)) return;
    wiki_ = test::read_file(test::data_path(kWikiTest));
    wt2_ = load_sentencepiece_tokenizer(test::data_path(kWt2Model)).release();
  }
  static void TearDownTestSuite() { delete wt2_; }
  void SetUp() override {
    KVQ_REQUIRE_DATA(kWikiTest);
    KVQ_REQUIRE_DATA(kWt2Model);
  }
  static const Ids& wiki_ids() {
    if (wiki_ids_.empty()) wiki_ids_ = wt2_->encode(wiki_, /*add_bos=*/true);
    return wiki_ids_;
  }
  static inline std::string wiki_;
  static inline Tokenizer* wt2_ = nullptr;

 private:
  static inline Ids wiki_ids_;
};

// encode_up_to gives exactly the first N tokens of the whole encoding, for both tokenizers and
// sizes around its prefix steps, and a long single-line text costs only the prefix it needs.
TEST_F(TokenizerData, EncodeUpToIsAPrefixOfTheWholeEncoding) {
  const auto bin = load_llama2c_tokenizer(test::data_path(kWt2Bin), 4096);
  const std::string_view part(wiki_.data(), 400000);  // llama2.c's merge is slower; 400 kB
  const Ids bin_ids = bin->encode(part, /*add_bos=*/true);
  for (const int64_t n : {1, 17, 4096, 20000, 60000}) {
    const Ids head(wiki_ids().begin(), wiki_ids().begin() + n);
    EXPECT_EQ(encode_up_to(*wt2_, wiki_, /*add_bos=*/true, n), head) << n;
    const Ids bin_head(bin_ids.begin(), bin_ids.begin() + std::min<int64_t>(n, bin_ids.size()));
    EXPECT_EQ(encode_up_to(*bin, part, /*add_bos=*/true, n), bin_head) << n;
  }
  EXPECT_EQ(encode_up_to(*wt2_, wiki_, true, 0), wiki_ids());
  EXPECT_EQ(encode_up_to(*wt2_, wiki_, true, 100000000), wiki_ids());

  std::string line;  // 50 MB on one line
  while (line.size() < (size_t{50} << 20)) line += "the quick brown fox jumps over the lazy dog ";
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(encode_up_to(*wt2_, line, true, 4096).size(), 4096u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
}

TEST_F(TokenizerData, SentencePieceWholeTestSplit) {
  EXPECT_EQ(wt2_->kind(), "sentencepiece");
  EXPECT_EQ(wt2_->vocab_size(), 4096);
  EXPECT_EQ(wt2_->bos_id(), 1);
  EXPECT_EQ(wt2_->eos_id(), 2);
  ASSERT_EQ(wiki_ids().size(), 397781u);
  const Ids head = {1,    299, 13,   315, 2287, 3941, 4080, 3074,
                    4090, 315, 3941, 13,  3941, 13,   2287, 3941};
  EXPECT_EQ(Ids(wiki_ids().begin(), wiki_ids().begin() + 16), head);
  EXPECT_EQ(wt2_->decode(wiki_ids()), wiki_);  // identity normalization: lossless
}

TEST(Tokenizer, Llama2ReferencePrompts) {
  KVQ_REQUIRE_DATA(kLlama2Model);
  const auto tok = load_sentencepiece_tokenizer(test::data_path(kLlama2Model));
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->encode("Hello world", true), (Ids{1, 15043, 3186}));
  EXPECT_EQ(tok->encode("The quick brown fox jumps over the lazy dog.", true),
            (Ids{1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889}));
  EXPECT_EQ(tok->encode("KV cache: 3-bit, 1% outliers!", true),
            (Ids{1, 476, 29963, 7090, 29901, 29871, 29941, 29899, 2966, 29892, 29871, 29896, 29995,
                 714, 27801, 29991}));
  EXPECT_EQ(tok->encode("Hello world", false), (Ids{15043, 3186}));
  EXPECT_EQ(tok->decode({1, 15043, 3186, 2}), "Hello world");
}

TEST_F(TokenizerData, Llama2cBinIsTheExportOfTheModel) {
  KVQ_REQUIRE_DATA(kWt2Bin);
  EXPECT_EQ(export_llama2c(test::data_path(kWt2Model)), test::read_file(test::data_path(kWt2Bin)));
}

TEST_F(TokenizerData, Llama2cEncodesLikeSentencePiece) {
  KVQ_REQUIRE_DATA(kWt2Bin);
  const auto bin = load_llama2c_tokenizer(test::data_path(kWt2Bin), 4096);
  EXPECT_EQ(bin->kind(), "llama2c");
  const std::string head = wiki_.substr(0, 20000);
  EXPECT_EQ(bin->encode(head, true), wt2_->encode(head, true));
  // The whole split as one string (1.26 MB), literal "<unk>" words included.
  const Ids ids = bin->encode(wiki_, true);
  ASSERT_EQ(ids.size(), wiki_ids().size());
  EXPECT_TRUE(ids == wiki_ids());
  EXPECT_EQ(bin->decode(ids), wiki_);
  EXPECT_EQ(bin->encode("", true), Ids{1});
  EXPECT_EQ(wt2_->encode("", true), Ids{1});
}

TEST_F(TokenizerData, Llama2cEncodesLikeSentencePieceLlama2) {
  KVQ_REQUIRE_DATA(kLlama2Model);
  test::TempDir tmp;
  test::write_file(tmp.file("tokenizer.bin"), export_llama2c(test::data_path(kLlama2Model)));
  const auto bin = load_llama2c_tokenizer(tmp.file("tokenizer.bin"), 32000);
  const auto sp = load_sentencepiece_tokenizer(test::data_path(kLlama2Model));
  for (const std::string text :
       {"Hello world", "The quick brown fox jumps over the lazy dog.",
        "KV cache: 3-bit, 1% outliers!", "  two  spaces\ttab\r\n",
        "h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 <unk> <s>"})
    EXPECT_EQ(bin->encode(text, true), sp->encode(text, true)) << text;
  EXPECT_EQ(bin->encode(wiki_.substr(0, 20000), true), sp->encode(wiki_.substr(0, 20000), true));
}

// Where the two differ, and why: SentencePiece first normalizes the text (U+2581 is its own
// space symbol; each byte of invalid UTF-8 becomes U+FFFD), run.c looks bytes up as they are.
TEST_F(TokenizerData, Llama2cDiffersOnlyWhereSentencePieceNormalizes) {
  KVQ_REQUIRE_DATA(kWt2Bin);
  const auto bin = load_llama2c_tokenizer(test::data_path(kWt2Bin), 4096);
  const int32_t space = 3941;  // " " (the dummy prefix)
  const std::string lower_one_eighth_block = "a \xE2\x96\x81 b";
  EXPECT_EQ(wt2_->encode(lower_one_eighth_block, false), wt2_->encode("a   b", false));
  EXPECT_EQ(bin->encode(lower_one_eighth_block, false),
            (Ids{261, space, 0xE2 + 3, 0x96 + 3, 0x81 + 3, 283}));
  EXPECT_EQ(bin->encode("\xFF", false), (Ids{space, 0xFF + 3}));
  EXPECT_EQ(wt2_->encode("\xFF", false), (Ids{space, 0xEF + 3, 0xBF + 3, 0xBD + 3}));
}

// Every id decodes alike, except <unk> (run.c prints the piece, SentencePiece " \u2047 ") and
// lone bytes 0x80..0xFF (run.c emits the raw byte for streaming, SentencePiece U+FFFD).
TEST_F(TokenizerData, Llama2cDecodesLikeSentencePiece) {
  KVQ_REQUIRE_DATA(kWt2Bin);
  const auto bin = load_llama2c_tokenizer(test::data_path(kWt2Bin), 4096);
  for (int32_t id = 1; id < 4096; ++id) {
    if (id >= 3 + 0x80 && id < 3 + 0x100) {
      EXPECT_EQ(bin->decode({id}), std::string(1, static_cast<char>(id - 3))) << id;
      EXPECT_EQ(wt2_->decode({id}), "\xEF\xBF\xBD") << id;
    } else {
      EXPECT_EQ(bin->decode({id}), wt2_->decode({id})) << id;
      EXPECT_EQ(bin->decode({1, id, id}), wt2_->decode({1, id, id})) << id;
    }
  }
  EXPECT_EQ(bin->decode({0}), "<unk>");
  EXPECT_EQ(wt2_->decode({0}), " \xE2\x81\x87 ");
  const Ids window(wiki_ids().begin() + 1000, wiki_ids().begin() + 3000);
  EXPECT_EQ(bin->decode(window), wt2_->decode(window));
  EXPECT_NE(error_of([&] { bin->decode({4096}); }).find("token id 4096 outside the vocabulary"),
            std::string::npos);
}

// The heap merge against run.c's loop on random vocabularies built to merge a lot, with tied
// scores (leftmost wins), unmergeable scores (<= -1e10), multi-byte characters, and both the
// word-by-word and the whole-text path.
TEST(Tokenizer, FastMergeMatchesRunC) {
  std::mt19937_64 rng(7);
  const std::vector<std::string> alphabet = {"a", "b", "c", " ", "\xC3\xA9", "\xE2\x82\xAC", "\n"};
  test::TempDir tmp;
  for (int trial = 0; trial < 60; ++trial) {
    Vocab v;
    v.pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
    for (int b = 0; b < 256; ++b) v.pieces.push_back(fmt::format("<0x{:02X}>", b));
    v.scores.assign(v.pieces.size(), 0.0f);
    std::map<std::string, bool> seen;
    for (const auto& p : v.pieces) seen[p] = true;
    // Odd trials keep pieces word-like (no space after a non-space, as SentencePiece builds
    // them), which lets the fast path merge word by word; even trials force one heap.
    const bool word_like = trial % 2 == 1;
    auto add = [&](const std::string& piece) {
      for (size_t k = 1; word_like && k < piece.size(); ++k)
        if (piece[k] == ' ' && piece[k - 1] != ' ') return;
      if (seen[piece]) return;
      seen[piece] = true;
      v.pieces.push_back(piece);
      const int kind = static_cast<int>(rng() % 10);
      v.scores.push_back(kind == 0 ? -2e10f : static_cast<float>(-static_cast<int>(rng() % 4)));
    };
    for (const auto& s : alphabet)
      if (rng() % 5 != 0 || s == " ") add(s);
    for (int i = 0; i < 60; ++i) {
      const auto& a = v.pieces[259 + rng() % (v.pieces.size() - 259)];
      const auto& b = v.pieces[259 + rng() % (v.pieces.size() - 259)];
      if (a.size() + b.size() <= 8) add(a + b);
    }
    const std::string path = tmp.file(fmt::format("t{}.bin", trial));
    test::write_file(path, serialize(v));
    const auto tok = load_llama2c_tokenizer(path, static_cast<int32_t>(v.pieces.size()));
    for (int n = 0; n < 25; ++n) {
      std::string text;
      const size_t len = rng() % 40;
      for (size_t i = 0; i < len; ++i) text += alphabet[rng() % alphabet.size()];
      EXPECT_EQ(tok->encode(text, true), naive_encode(v, text, true))
          << "trial " << trial << ": " << text;
    }
  }
}

TEST_F(TokenizerData, FastMergeMatchesRunCOnRealVocabulary) {
  KVQ_REQUIRE_DATA(kWt2Bin);
  const std::string path = test::data_path(kWt2Bin);
  const Vocab v = parse_bin(test::read_file(path), 4096);
  const auto tok = load_llama2c_tokenizer(path, 4096);
  std::mt19937_64 rng(11);
  for (int n = 0; n < 50; ++n) {
    const std::string text = wiki_.substr(rng() % (wiki_.size() - 400), 1 + rng() % 300);
    EXPECT_EQ(tok->encode(text, true), naive_encode(v, text, true)) << text;
  }
}

TEST(Tokenizer, BadFiles) {
  test::TempDir tmp;
  const std::string missing = tmp.file("missing.model");
  EXPECT_EQ(error_of([&] { load_sentencepiece_tokenizer(missing); }),
            missing + ": tokenizer file not found");
  EXPECT_EQ(error_of([&] { load_llama2c_tokenizer(tmp.file("none.bin"), 10); }),
            tmp.file("none.bin") + ": tokenizer file not found");
  const std::string garbage = tmp.file("garbage.model");
  test::write_file(garbage, "this is not a protobuf \xFF\xFE\x01");
  std::string error = error_of([&] { load_sentencepiece_tokenizer(garbage); });
  EXPECT_TRUE(starts_with(error, garbage + ": not a SentencePiece model (")) << error;

  KVQ_REQUIRE_DATA(kWt2Bin);
  const std::string bin = test::data_path(kWt2Bin), model = test::data_path(kWt2Model);
  const std::string bytes = test::read_file(bin);
  const std::string cut = tmp.file("cut.bin");
  test::write_file(cut, bytes.substr(0, bytes.size() - 3));
  error = error_of([&] { load_llama2c_tokenizer(cut, 4096); });
  EXPECT_TRUE(starts_with(error, cut + ": truncated: text of token 4095 needs")) << error;
  test::write_file(cut, bytes.substr(0, 2));
  error = error_of([&] { load_llama2c_tokenizer(cut, 4096); });
  EXPECT_TRUE(starts_with(error, cut + ": truncated: the header needs 4 bytes")) << error;
  // A SentencePiece model read as tokenizer.bin: its bytes make no sense as lengths.
  EXPECT_EQ(error_of([&] { load_llama2c_tokenizer(model, 4096); }),
            model +
                ": token 2 has length 1852795251, outside [0, 84545034] (max_token_length); "
                "not a llama2.c tokenizer.bin");
  // Lengths are checked against the file before a string is sized: a 2 GB max_token_length and a
  // piece claiming 2 GB in a 20-byte file fail at once, allocating nothing.
  std::string huge;
  for (int32_t v : {0x7a7a7a7a, 0, 0x7a000000}) huge.append(reinterpret_cast<const char*>(&v), 4);
  huge += "abcdefgh";
  test::write_file(cut, huge);
  EXPECT_EQ(error_of([&] { load_llama2c_tokenizer(cut, 1); }),
            cut +
                ": truncated: text of token 0 needs 2046820352 bytes at offset 12, file has 20 "
                "bytes (expected 1 tokens, the model's vocab_size)");
  EXPECT_EQ(error_of([&] { load_llama2c_tokenizer(cut, 1000000); }),
            cut +
                ": truncated: the scores and lengths of all tokens needs 8000000 bytes at offset "
                "4, file has 20 bytes (expected 1000000 tokens, the model's vocab_size)");
  error = error_of([&] { load_llama2c_tokenizer(bin, 4000); });
  EXPECT_TRUE(starts_with(error, bin + ": ")) << error;
  EXPECT_NE(error.find("tokenizer does not belong to this model"), std::string::npos) << error;
  EXPECT_EQ(error_of([&] { load_llama2c_tokenizer(bin, 0); }),
            bin + ": vocab_size must be positive, found 0");
}

TEST(Tokenizer, OpenForModel) {
  KVQ_REQUIRE_DATA(kWt2Bin);
  test::TempDir tmp;
  const fs::path both = fs::path(tmp.path()) / "both", bin_only = fs::path(tmp.path()) / "bin_only",
                 none = fs::path(tmp.path()) / "none";
  for (const auto& d : {both, bin_only, none}) fs::create_directory(d);
  fs::copy_file(test::data_path(kWt2Model), both / "tokenizer.model");
  fs::copy_file(test::data_path(kWt2Bin), both / "tokenizer.bin");
  fs::copy_file(test::data_path(kWt2Bin), bin_only / "tokenizer.bin");
  test::write_file((both / "model.bin").string(), "");
  test::write_file((none / "model.bin").string(), "");
  EXPECT_EQ(open_tokenizer_for_model(both.string(), 4096)->kind(), "sentencepiece");
  EXPECT_EQ(open_tokenizer_for_model((both / "model.bin").string(), 4096)->kind(), "llama2c");
  EXPECT_EQ(open_tokenizer_for_model(bin_only.string(), 4096)->kind(), "llama2c");
  fs::remove(both / "tokenizer.bin");
  EXPECT_EQ(open_tokenizer_for_model((both / "model.bin").string(), 4096)->kind(), "sentencepiece");
  EXPECT_EQ(
      error_of([&] { open_tokenizer_for_model(both.string(), 4000); }),
      (both / "tokenizer.model").string() + ": 4096 pieces, more than the model's vocab_size 4000");
  const std::string none_bin = (none / "model.bin").string();
  EXPECT_EQ(error_of([&] { open_tokenizer_for_model(none_bin, 4096); }),
            none_bin + ": no tokenizer found (tried " + (none / "tokenizer.bin").string() +
                " and " + (none / "tokenizer.model").string() + ")");
  EXPECT_EQ(error_of([&] { open_tokenizer_for_model(tmp.file("nope"), 4096); }),
            tmp.file("nope") + ": model path not found");
}

}  // namespace
}  // namespace kvq::model
