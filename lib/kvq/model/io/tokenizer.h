// Tokenizers: SentencePiece `tokenizer.model` (through libsentencepiece) and llama2.c's
// `tokenizer.bin` (its own score-driven BPE merge, byte fallback). Both encode a whole text as
// one string, optionally with BOS first, which is the protocol every reference in
// ../shared/data/README.md uses.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvq::model {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual std::string kind() const = 0;  // "sentencepiece" or "llama2c"
  const std::string& path() const { return path_; }

 protected:
  std::string path_;
};

// The first `max_tokens` tokens of encode(text, add_bos) (all of them for max_tokens <= 0)
// without encoding more of the text than that needs: prefixes cut at whitespace, doubled until
// they yield max_tokens plus a margin, so a 50 MB text costs what its first pages cost. A cut
// changes only the tokens next to it, which the margin keeps out of the result. Progress over
// the bytes encoded goes to stderr when `progress` is set and the text is long.
std::vector<int32_t> encode_up_to(const Tokenizer& tokenizer, std::string_view text, bool add_bos,
                                  int64_t max_tokens, bool progress = false);

// Throws kvq::Error naming the file if it is missing or not a SentencePiece model.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);
// llama2.c's tokenizer.bin has no vocabulary size of its own; it comes from the model header.
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int32_t vocab_size);
// The tokenizer that belongs to a model path: for a directory, tokenizer.model in it, else
// tokenizer.bin; for a llama2.c .bin checkpoint, tokenizer.bin beside it, else tokenizer.model.
// `vocab_size` is the model's (tokenizer.bin needs it; a tokenizer.model with more pieces is an
// error). Throws kvq::Error naming the paths tried when neither exists.
std::unique_ptr<Tokenizer> open_tokenizer_for_model(const std::string& model_path,
                                                    int32_t vocab_size);

}  // namespace kvq::model
