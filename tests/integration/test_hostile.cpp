// The hostile-input catalogue (docs/hostile-inputs.md): every subcommand run against files and
// flags crafted from the real wt2-llama-1m to do harm of one of four kinds (issue 16):
//   a  unbounded work from a tiny input (huge counts, /dev/zero, FIFOs that never end)
//   b  outputs that damage (devices, FIFOs, inputs as outputs, files left by a failed run)
//   c  silent acceptance of something else (fewer layers, duplicate keys, values out of range)
//   d  errors in the wrong form (library messages, overflow, 2^63 printed negative, usage)
// Each entry must
//   - exit with its code (1 error, 2 usage), with exactly one line "kvq <cmd>: error: ..." on
//     stderr that names the file or flag at fault, and nothing on stdout (kvq inspect: only its
//     "problem: <file>:<path>: ..." lines);
//   - finish within kMaxSeconds, with a peak RSS (the child's ru_maxrss from wait4) under
//     kMaxRssMiB;
//   - leave the input and output folders as they were (names, kinds, sizes, mtimes, contents).
// kvq serve logs to stderr while it starts (it listens before the model loads), so its entries
// pass --quiet. To add an entry: craft its input in Hostile::craft() (or reuse one), add a row to
// kCatalogue with its kind, and list it in docs/hostile-inputs.md.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/h5_edit.h"
#include "support/test_support.h"

namespace kvq {
namespace {

namespace fs = std::filesystem;
using test::data_path;
using test::kModel1m;
using test::read_file;
using test::write_file;

constexpr double kMaxSeconds = 10;
constexpr long kMaxRssMiB = 2048;  // kvq itself needs ~400 MiB with wt2-llama-1m loaded

struct Entry {
  const char* name;    // unique, for the failure message
  char kind;           // a, b, c or d (see the header)
  const char* cmd;     // the subcommand: "calibrate", "bench kernels"
  const char* args;    // split at spaces after {M} (the model), {IN}, {OUT}, {DATA} are replaced
  int exit_code;       // 1 error, 2 usage
  const char* needle;  // in the error line (placeholders replaced): the file or flag at fault
};

// {M}: wt2-llama-1m (read-only); {IN}: the crafted inputs; {OUT}: a folder holding old.h5 and
// keep.txt, which no entry may change; {DATA}: a small plain text in {IN}.
const Entry kCatalogue[] = {
    // a: unbounded work
    {"data-dev-zero", 'a', "calibrate", "--model {M} --data /dev/zero --out {OUT}/c.h5", 1,
     "/dev/zero: expected a regular file, found a character device"},
    {"data-fifo", 'a', "eval", "--model {M} --data {IN}/fifo --methods int4", 1,
     "{IN}/fifo: expected a regular file, found a FIFO"},
    {"train-dev-zero", 'a', "reproduce",
     "--model {M} --train /dev/zero --data {DATA} --out-dir {OUT}/run", 1, "--train: /dev/zero"},
    {"prompt-file-dev-zero", 'a', "generate", "--model {M} --prompt-file /dev/zero", 1,
     "--prompt-file: /dev/zero: expected a regular file, found a character device"},
    {"prompts-fifo", 'a', "generate", "--model {M} --prompts {IN}/fifo", 1,
     "--prompts: {IN}/fifo: expected a regular file, found a FIFO"},
    {"inspect-fifo", 'a', "inspect", "{IN}/fifo", 1,
     "{IN}/fifo: expected an HDF5 file, found a FIFO"},
    {"calib-fifo", 'a', "fit", "--method nuq2 --calib {IN}/fifo --out {OUT}/q.h5", 1,
     "{IN}/fifo: expected an HDF5 file, found a FIFO"},
    {"quant-fifo-eval", 'a', "eval", "--model {M} --data {DATA} --quant {IN}/fifo", 1,
     "{IN}/fifo: expected an HDF5 file, found a FIFO"},
    {"quant-fifo-serve", 'a', "serve", "--model {M} --quant {IN}/fifo --port 0 --quiet", 1,
     "{IN}/fifo: expected an HDF5 file, found a FIFO"},
    {"config-fifo", 'a', "generate", "--model {IN}/m-config-fifo --prompt The", 1,
     "{IN}/m-config-fifo/config.json: expected a regular file, found a FIFO"},
    {"context-2^40", 'a', "generate", "--model {IN}/m-context --prompt The", 1,
     "{IN}/m-context/config.json: field 'max_position_embeddings' must be at most 16777216"},
    {"layers-10^15", 'a', "eval", "--model {IN}/m-layers --data {DATA}", 1,
     "{IN}/m-layers/config.json: field 'num_hidden_layers' must be at most 65536"},
    {"calib-layers-10^12", 'a', "fit",
     "--method nuq2 --calib {IN}/calib-layers.h5 --out {OUT}/q.h5", 1, "{IN}/calib-layers.h5"},
    {"key-bins", 'a', "calibrate",
     "--model {M} --data {DATA} --key-bins 100000000 --out {OUT}/c.h5", 1, "--key-bins"},
    {"samples-2^63", 'a', "reproduce",
     "--model {M} --train {DATA} --data {DATA} --samples 9223372036854775807 --out-dir {OUT}/run",
     1, "--samples: expected 1..1048576"},
    {"n-tokens-2^62", 'a', "generate", "--model {M} --prompt The -n 4611686018427387904", 1,
     "-n: expected 1..512"},
    {"llama2c-seq-len-2^31", 'a', "eval", "--model {IN}/seq-len.bin --data {DATA}", 1,
     "{IN}/seq-len.bin: header"},
    {"shape-2^40-small-file", 'a', "generate", "--model {IN}/m-st-big --prompt The", 1,
     "{IN}/m-st-big/model.safetensors"},

    // b: outputs that damage
    {"out-dev-null", 'b', "calibrate", "--model {M} --data {DATA} --out /dev/null", 1,
     "--out: /dev/null: expected a regular file or a new name, found a character device"},
    {"out-fifo", 'b', "fit", "--method int4-token --out {IN}/fifo", 1,
     "--out: {IN}/fifo: expected a regular file or a new name, found a FIFO"},
    {"out-is-calib", 'b', "fit", "--method nuq2 --calib {IN}/calib.h5 --out {IN}/calib.h5", 1,
     "--out: {IN}/calib.h5: is the input --calib"},
    {"out-links-to-model", 'b', "fit", "--method int4-token --model {M} --out {IN}/config-link", 1,
     "--out: {IN}/config-link: is the input --model"},
    {"csv-is-data", 'b', "eval", "--model {M} --data {DATA} --methods int4 --csv {DATA}", 1,
     "--csv: {DATA}: is the input --data"},
    {"plot-is-csv", 'b', "eval",
     "--model {M} --data {DATA} --methods int4 --csv {OUT}/r.csv.svg --plot {OUT}/r.csv.svg", 1,
     "--plot: {OUT}/r.csv.svg: is also the output of --csv"},
    {"out-dir-is-file", 'b', "reproduce",
     "--model {M} --train {DATA} --data {DATA} --out-dir {OUT}/keep.txt", 1,
     "--out-dir: {OUT}/keep.txt: expected a directory"},
    {"json-file-dir", 'b', "bench kernels", "--json-file {IN}/dir", 1,
     "--json-file: {IN}/dir: expected a regular file or a new name, found a directory"},
    {"fails-after-checks", 'b', "calibrate",
     "--model {M} --data {IN}/short.txt --seq-len 512 --quiet --out {OUT}/new.h5", 1,
     "fewer than one sequence of 512 tokens"},
    {"old-output-kept", 'b', "fit",
     "--method nuq2-1% --calib {IN}/calib-fraction.h5 --out {OUT}/old.h5", 1,
     "{IN}/calib-fraction.h5"},

    // c: silent acceptance of something else
    {"config-fewer-layers", 'c', "eval", "--model {IN}/m-fewer --data {DATA}", 1,
     "{IN}/m-fewer/model.safetensors: expected only the tensors of 3 layers"},
    {"config-duplicate-key", 'c', "generate", "--model {IN}/m-dup-key --prompt The", 1,
     "{IN}/m-dup-key/config.json: expected unique keys, found 'vocab_size' twice in /"},
    {"safetensors-duplicate-tensor", 'c', "generate", "--model {IN}/m-st-dup --prompt The", 1,
     "{IN}/m-st-dup/model.safetensors: header: expected unique keys, found 'model.norm.weight' "
     "twice in /"},
    {"index-escapes-folder", 'c', "generate", "--model {IN}/m-index --prompt The", 1,
     "{IN}/m-index/model.safetensors.index.json: weight_map entry"},
    {"tokenizer-garbage", 'c', "generate", "--model {IN}/m-tokenizer --prompt The", 1,
     "{IN}/m-tokenizer/tokenizer.model: not a SentencePiece model"},
    {"brown-without-tags", 'c', "eval", "--model {M} --data {DATA} --format brown", 1,
     "{DATA}: expected Brown corpus text of word/tag tokens, found none"},
    {"data-is-a-checkpoint", 'c', "calibrate",
     "--model {M} --data {M}/model.safetensors --out {OUT}/c.h5", 1,
     "{M}/model.safetensors: not UTF-8 text ("},
    {"methods-empty-item", 'c', "eval", "--model {M} --data {DATA} --methods int4,,nuq2", 1,
     "--methods: item 2 of 'int4,,nuq2' is empty"},
    {"prompt-file-latin1", 'c', "generate", "--model {M} --prompt-file {IN}/latin1.txt -n 2", 1,
     "--prompt-file: {IN}/latin1.txt: not UTF-8 text (invalid byte 0xe9 at byte 3)"},
    {"eval-batch-negative", 'c', "eval", "--model {M} --data {DATA} --batch-size -1", 1,
     "--batch-size: expected >= 0 windows"},
    {"jsonl-duplicate-key", 'c', "eval", "--model {M} --data {IN}/dup.jsonl --format jsonl", 1,
     "{IN}/dup.jsonl:1"},
    {"calib-fraction-2", 'c', "fit",
     "--method nuq2-1% --calib {IN}/calib-fraction.h5 --out {OUT}/q.h5", 1,
     "{IN}/calib-fraction.h5:/layers/00/value/token/outlier_fraction: expected values in [0, 1]"},
    {"calib-value-flipped", 'c', "fit",
     "--method nuq2-1% --calib {IN}/calib-flip.h5 --out {OUT}/q.h5", 1,
     "{IN}/calib-flip.h5:/layers/00/value/token/outlier_fraction: checksum mismatch"},
    {"quant-fisher-negative", 'c', "eval", "--model {M} --data {DATA} --quant {IN}/quant-fisher.h5",
     1, "{IN}/quant-fisher.h5:/layers/00/key@fisher_error: expected a finite value >= 0"},
    {"quant-hi-lo-overflow", 'c', "generate",
     "--model {M} --quant {IN}/quant-range.h5 --prompt The", 1,
     "{IN}/quant-range.h5:/layers/01/key/hi: expected lo + hi and hi - lo finite in fp32"},
    {"quant-other-model", 'c', "serve", "--model {M18} --quant {IN}/quant-int4.h5 --port 0 --quiet",
     1, "{IN}/quant-int4.h5: made for"},

    // d: errors in the wrong form
    {"n-past-2^64", 'd', "generate", "--model {M} --prompt The -n 99999999999999999999", 2,
     "--n-tokens: expected an integer in -2^63..2^63 - 1"},
    {"samples-float", 'd', "calibrate", "--model {M} --data {DATA} --samples 1e30 --out {OUT}/c.h5",
     2, "--samples: expected an integer, found 1e30"},
    {"seed-negative", 'd', "generate", "--model {M} --prompt The --seed -1", 2,
     "--seed: expected an integer >= 0, found -1"},
    {"port-past-int", 'd', "serve", "--model {M} --kv fp16 --port 99999999999", 2,
     "--port: expected an integer in -2^31..2^31 - 1 (a 32-bit flag), found 99999999999"},
    {"contexts-past-2^64", 'd', "bench e2e", "--preset tiny --device cpu --contexts 1,1e999", 2,
     "--contexts: expected an integer, found 1e999"},
    {"config-number-overflow", 'd', "generate", "--model {IN}/m-theta --prompt The", 1,
     "{IN}/m-theta/config.json: invalid JSON (number overflow parsing '1e400')"},
    {"config-not-json", 'd', "generate", "--model {IN}/m-not-json --prompt The", 1,
     "{IN}/m-not-json/config.json: expected JSON, found invalid JSON at byte"},
    {"config-wrong-type", 'd', "calibrate", "--model {IN}/m-type --data {DATA} --out {OUT}/c.h5", 1,
     "{IN}/m-type/config.json: field 'num_attention_heads' must be a positive integer, found "
     "\"4\""},
    {"safetensors-number-overflow", 'd', "generate", "--model {IN}/m-st-overflow --prompt The", 1,
     "{IN}/m-st-overflow/model.safetensors: header: invalid JSON (number overflow"},
    {"safetensors-shape-2^63", 'd', "generate", "--model {IN}/m-st-shape --prompt The", 1,
     "shape [9223372036854775808] has a dimension above 2^63 - 1"},
    {"safetensors-truncated", 'd', "eval", "--model {IN}/m-st-trunc --data {DATA}", 1,
     "{IN}/m-st-trunc/model.safetensors: header length"},
    {"calib-truncated", 'd', "inspect", "{IN}/calib-trunc.h5", 1, "{IN}/calib-trunc.h5"},
    {"calib-corrupt-bytes", 'd', "inspect", "{IN}/calib-corrupt.h5", 1, "{IN}/calib-corrupt.h5"},
    {"calib-is-quant", 'c', "fit", "--method nuq2 --calib {IN}/quant-nuq.h5 --out {OUT}/q.h5", 1,
     "{IN}/quant-nuq.h5:/: expected a kvq.calib artifact, found kvq.quant"},
    {"quant-is-calib", 'c', "generate", "--model {M} --quant {IN}/calib.h5 --prompt The", 1,
     "{IN}/calib.h5:/: expected a kvq.quant artifact, found kvq.calib"},
    {"calib-truncated-fit", 'd', "fit",
     "--method nuq2 --calib {IN}/calib-trunc.h5 --out {OUT}/q.h5", 1, "{IN}/calib-trunc.h5"},
    {"quant-is-text", 'd', "eval", "--model {M} --data {DATA} --quant {DATA}", 1,
     "{DATA}: not an HDF5 file"},
    {"quant-is-dir", 'd', "generate", "--model {M} --quant {IN}/dir --prompt The", 1,
     "{IN}/dir: expected an HDF5 file, found a directory"},
    {"prompts-bad-line", 'd', "generate", "--model {M} --prompts {IN}/bad.jsonl", 1,
     "--prompts: {IN}/bad.jsonl:2"},
};

// What a folder holds: relative path -> kind, size, mtime and (regular files) a content hash.
using Snapshot = std::map<std::string, std::string>;
Snapshot snapshot(const std::string& dir) {
  Snapshot out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    std::ostringstream s;
    s << (st.st_mode & S_IFMT) << " " << st.st_size << " " << st.st_mtim.tv_sec << "."
      << st.st_mtim.tv_nsec;
    if (S_ISREG(st.st_mode)) s << " " << std::hash<std::string>{}(read_file(e.path().string()));
    if (S_ISLNK(st.st_mode)) s << " -> " << fs::read_symlink(e.path()).string();
    out[fs::relative(e.path(), dir).string()] = s.str();
  }
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

struct ChildRun {
  int exit_code = -1;  // -1: killed by a signal (or by the timeout)
  std::string out, err;
  double seconds = 0;
  long max_rss_mib = 0;
};

// Runs kvq with `args` (no shell), stdin from /dev/null; killed after 3 * kMaxSeconds.
ChildRun run_child(const std::vector<std::string>& args, const test::TempDir& io) {
  const std::string out_path = io.file("stdout"), err_path = io.file("stderr");
  std::vector<std::string> argv_s = {test::kvq_bin()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ChildRun r;
  int status = 0;
  struct rusage usage {};
  while (::wait4(pid, &status, WNOHANG, &usage) == 0) {
    if (std::chrono::steady_clock::now() - t0 > std::chrono::duration<double>(3 * kMaxSeconds)) {
      ::kill(pid, SIGKILL);
      ::wait4(pid, &status, 0, &usage);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.max_rss_mib = usage.ru_maxrss / 1024;
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

class Hostile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::have_data(kModel1m)) return;
    dirs_ = std::make_unique<Dirs>();
    craft();
  }
  static void TearDownTestSuite() { dirs_.reset(); }
  void SetUp() override {
    KVQ_REQUIRE_DATA(kModel1m);
    KVQ_REQUIRE_DATA(test::kModel18m);
    ASSERT_TRUE(crafted_) << "crafting the inputs failed (see above)";
  }

  static std::string in(const std::string& name) { return dirs_->in.file(name); }
  static std::string out(const std::string& name) { return dirs_->out.file(name); }
  static std::string expand(const std::string& s) {
    std::string r = replace_all(s, "{M18}", data_path(test::kModel18m));
    r = replace_all(r, "{M}", data_path(kModel1m));
    r = replace_all(r, "{IN}", dirs_->in.path());
    r = replace_all(r, "{OUT}", dirs_->out.path());
    return replace_all(r, "{DATA}", in("data.txt"));
  }
  static void kvq_ok(const std::string& args) {
    const auto r = test::run_kvq(expand(args));
    ASSERT_EQ(r.exit_code, 0) << args << "\n" << r.err;
  }

  // A model folder {IN}/name: config.json edited by `edit` (or written as `config_text`), links to
  // the real tokenizer and, unless `weights` is given, the real weights.
  static void model_dir(const std::string& name, const std::function<void(nlohmann::json&)>& edit,
                        const std::string& weights = "", const std::string& config_text = "") {
    const std::string dir = in(name), m = data_path(kModel1m);
    fs::create_directory(dir);
    fs::create_symlink(m + "/tokenizer.model", dir + "/tokenizer.model");
    if (weights.empty())
      fs::create_symlink(m + "/model.safetensors", dir + "/model.safetensors");
    else
      write_file(dir + "/model.safetensors", weights);
    if (!config_text.empty()) return write_file(dir + "/config.json", config_text);
    nlohmann::json cfg = nlohmann::json::parse(read_file(m + "/config.json"));
    edit(cfg);
    write_file(dir + "/config.json", cfg.dump());
  }

  // The real model.safetensors with its header replaced by `edit(header text)`.
  static std::string safetensors_with(const std::function<std::string(const std::string&)>& edit) {
    const std::string bytes = read_file(data_path(kModel1m) + "/model.safetensors");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
    const std::string header = edit(bytes.substr(8, n));
    std::string len(8, '\0');
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return len + header + bytes.substr(8 + n);
  }

  // A copy of `src` named `dst` with one HDF5 edit applied.
  static void h5_copy_edit(const std::string& src, const std::string& dst,
                           const std::function<void(hid_t)>& edit) {
    fs::copy_file(in(src), in(dst));
    const hid_t f = H5Fopen(in(dst).c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0) << dst;
    edit(f);
    H5Fclose(f);
  }
  template <typename T>
  static void set_attr(hid_t f, const char* object, const char* name, T value) {
    const hid_t o = H5Oopen(f, object, H5P_DEFAULT);
    const hid_t a = H5Aopen(o, name, H5P_DEFAULT);
    ASSERT_GE(a, 0) << object << "@" << name;
    const hid_t type = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
    EXPECT_GE(H5Awrite(a, type, &value), 0);
    H5Aclose(a);
    H5Oclose(o);
  }
  static void craft() {
    std::string text;
    for (int i = 0; i < 40; ++i)
      text += "The cat sat on the mat . It was a sunny day in the park .\n";
    write_file(in("data.txt"), text);
    ASSERT_EQ(::mkfifo(in("fifo").c_str(), 0644), 0);
    fs::create_directory(in("dir"));
    fs::create_symlink(data_path(kModel1m) + "/config.json", in("config-link"));
    write_file(in("short.txt"), "The cat sat on the mat .\n");
    write_file(in("latin1.txt"), "caf\xe9 au lait\n");
    write_file(in("dup.jsonl"), "{\"text\": \"The cat\", \"text\": \"The dog\"}\n");
    write_file(in("bad.jsonl"), "{\"prompt\": \"The\"}\n{\"prompt\": \"The\"\n");

    // Artifacts made by kvq itself, then edited.
    kvq_ok("calibrate --model {M} --data {DATA} --samples 1 --seq-len 16 --quiet --out " +
           in("calib.h5"));
    kvq_ok("fit --method nuq2-1% --calib " + in("calib.h5") + " --out " + in("quant-nuq.h5"));
    kvq_ok("fit --method int4-token --model {M} --out " + in("quant-int4.h5"));
    h5_copy_edit("calib.h5", "calib-layers.h5",
                 [](hid_t f) { set_attr(f, "/", "model.n_layers", int64_t{1000000000000}); });
    h5_copy_edit("calib.h5", "calib-fraction.h5", [](hid_t f) {
      test::h5_set_element(f, "/layers/00/value/token/outlier_fraction", 1, 2.0);
    });
    h5_copy_edit("calib.h5", "calib-flip.h5", [](hid_t f) {  // in range: only the checksum says
      test::h5_set_element(f, "/layers/00/value/token/outlier_fraction", 1, 0.5,
                           /*keep_checksum=*/true);
    });
    h5_copy_edit("quant-nuq.h5", "quant-fisher.h5",
                 [](hid_t f) { set_attr(f, "/layers/00/key", "fisher_error", -1.0); });
    h5_copy_edit("quant-nuq.h5", "quant-range.h5", [](hid_t f) {
      test::h5_set_element(f, "/layers/01/key/lo", 0, -3e38f);
      test::h5_set_element(f, "/layers/01/key/hi", 0, 3e38f);
    });
    const std::string calib = read_file(in("calib.h5"));
    write_file(in("calib-trunc.h5"), calib.substr(0, calib.size() / 2));
    std::string corrupt = calib;  // 64 bytes inverted mid-file: inside a checksummed chunk
    for (size_t i = corrupt.size() / 2; i < corrupt.size() / 2 + 64; ++i) corrupt[i] = ~corrupt[i];
    write_file(in("calib-corrupt.h5"), corrupt);

    model_dir("m-context", [](auto& c) { c["max_position_embeddings"] = uint64_t{1} << 40; });
    model_dir("m-layers", [](auto& c) { c["num_hidden_layers"] = 1000000000000000; });
    model_dir("m-fewer", [](auto& c) { c["num_hidden_layers"] = 3; });
    model_dir("m-type", [](auto& c) { c["num_attention_heads"] = "4"; });
    model_dir("m-theta", nullptr, "", R"({"model_type": "llama", "rope_theta": 1e400})");
    model_dir("m-not-json", nullptr, "", "{\"model_type\": \"llama\",\n");
    const std::string config = read_file(data_path(kModel1m) + "/config.json");
    model_dir("m-dup-key", nullptr, "", "{\"vocab_size\": 4096," + config.substr(1));
    model_dir("m-config-fifo", [](auto&) {});
    fs::remove(in("m-config-fifo/config.json"));
    ASSERT_EQ(::mkfifo(in("m-config-fifo/config.json").c_str(), 0644), 0);

    model_dir(
        "m-st-dup", [](auto&) {}, safetensors_with([](const std::string& h) {
          const auto j = nlohmann::json::parse(h);
          return "{\"model.norm.weight\":" + j["model.norm.weight"].dump() + "," + h.substr(1);
        }));
    model_dir(
        "m-st-overflow", [](auto&) {},
        safetensors_with([](const std::string& h) { return "{\"x\":1e999," + h.substr(1); }));
    model_dir(
        "m-st-shape", [](auto&) {}, safetensors_with([](const std::string& h) {
          auto j = nlohmann::json::parse(h);
          j["model.norm.weight"]["shape"] = {uint64_t{1} << 63};
          return j.dump();
        }));
    model_dir(
        "m-st-big", [](auto&) {}, safetensors_with([](const std::string& h) {
          auto j = nlohmann::json::parse(h);
          j["model.norm.weight"]["shape"] = {uint64_t{1} << 40};
          return j.dump();
        }));
    model_dir("m-tokenizer", [](auto&) {});
    fs::remove(in("m-tokenizer/tokenizer.model"));
    write_file(in("m-tokenizer/tokenizer.model"), std::string(3000, '\x5a'));
    // llama2.c: seq_len, the header's last int32, set to 2^31 - 1.
    std::string bin = read_file(data_path(kModel1m) + "/model.bin");
    bin.replace(24, 4, std::string("\xff\xff\xff\x7f", 4));
    write_file(in("seq-len.bin"), bin);
    fs::create_symlink(data_path(kModel1m) + "/tokenizer.bin", in("tokenizer.bin"));
    const std::string st = read_file(data_path(kModel1m) + "/model.safetensors");
    model_dir(
        "m-st-trunc", [](auto&) {}, st.substr(0, 1000));
    model_dir("m-index", [](auto&) {});
    fs::remove(in("m-index/model.safetensors"));
    write_file(in("m-index/model.safetensors.index.json"),
               R"({"weight_map": {"model.norm.weight": "../m-fewer/model.safetensors"}})");

    fs::copy_file(in("quant-int4.h5"), out("old.h5"));
    write_file(out("keep.txt"), "a file the runs must leave alone\n");
    crafted_ = true;
  }

  // Runs every entry of `kind`, checking each against the rules in the header.
  void run_kind(char kind) {
    int n = 0;
    for (const Entry& e : kCatalogue) {
      if (e.kind != kind) continue;
      ++n;
      SCOPED_TRACE(std::string("catalogue entry ") + e.name + " (" + e.kind + "): kvq " + e.cmd +
                   " " + expand(e.args));
      const Snapshot in_before = snapshot(dirs_->in.path());
      const Snapshot out_before = snapshot(dirs_->out.path());
      std::vector<std::string> args;
      std::istringstream words(std::string(e.cmd) + " " + expand(e.args));
      for (std::string w; words >> w;) args.push_back(w);
      const ChildRun r = run_child(args, io_);
      EXPECT_EQ(r.exit_code, e.exit_code) << r.err;
      if (std::string(e.cmd) == "inspect") {
        // inspect lists an artifact's problems on stdout, one "problem: <file>:..." line each.
        std::istringstream lines(r.out);
        for (std::string line; std::getline(lines, line);)
          EXPECT_EQ(line.rfind("problem: " + expand(e.needle), 0), 0u) << line;
      } else {
        EXPECT_EQ(r.out, "");
      }
      const std::string prefix = std::string("kvq ") + e.cmd + ": error: ";
      EXPECT_EQ(r.err.rfind(prefix, 0), 0u) << r.err;
      EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not exactly one line: " << r.err;
      EXPECT_NE(r.err.find(expand(e.needle)), std::string::npos)
          << "expected '" << expand(e.needle) << "' in: " << r.err;
      EXPECT_LT(r.seconds, kMaxSeconds);
      EXPECT_LT(r.max_rss_mib, kMaxRssMiB);
      EXPECT_EQ(snapshot(dirs_->in.path()), in_before) << "the inputs changed";
      EXPECT_EQ(snapshot(dirs_->out.path()), out_before) << "the output folder changed";
    }
    EXPECT_GT(n, 0);
  }

  struct Dirs {
    test::TempDir in, out;
  };
  static std::unique_ptr<Dirs> dirs_;
  static bool crafted_;
  test::TempDir io_;  // the child's stdout and stderr, outside the folders compared
};

std::unique_ptr<Hostile::Dirs> Hostile::dirs_;
bool Hostile::crafted_ = false;

TEST_F(Hostile, UnboundedWorkFailsFast) { run_kind('a'); }
TEST_F(Hostile, OutputsAreNeverDamaged) { run_kind('b'); }
TEST_F(Hostile, SomethingElseIsNeverAccepted) { run_kind('c'); }
TEST_F(Hostile, ErrorsKeepTheirForm) { run_kind('d'); }

// Each entry has a unique name and a known kind, so the documentation can list them.
TEST(HostileCatalogue, EntriesAreNamedAndKinded) {
  std::map<std::string, int> names;
  for (const Entry& e : kCatalogue) {
    EXPECT_EQ(++names[e.name], 1) << e.name;
    EXPECT_NE(std::string("abcd").find(e.kind), std::string::npos) << e.name;
    EXPECT_TRUE(e.exit_code == 1 || e.exit_code == 2) << e.name;
  }
}

}  // namespace
}  // namespace kvq
