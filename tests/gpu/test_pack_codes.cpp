// kernels/pack_codes against its CPU twin (kernels/pack_codes_ref.cpp) on fresh seeded random
// inputs: every bits, odd row lengths, outputs poisoned before each run and checked fully
// written with nothing past the end. Without a usable GPU these tests skip, saying why; the
// argument checks need no GPU and always run.
#include "pack_codes.h"

#include <cstdint>
#include <ios>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvq/quant/pack.h"
#include "support/gpu.h"

namespace kvq::kernels {
namespace {

using test::DeviceBuffer;

constexpr int kAllBits[] = {2, 3, 4};
constexpr int64_t kRows[] = {1, 7, 97, 4097};
constexpr int64_t kCols[] = {1, 17, 97, 4097};
constexpr size_t kGuard = 67;  // poisoned elements past each output; a write there is a bug
constexpr uint32_t kPoisonWord = 0xFFFFFFFFu;
constexpr uint8_t kPoisonCode = 0xFF;  // never a valid code, so an unwritten code shows

struct Case {
  int bits;
  int64_t n_rows;
  int64_t n_cols;
  uint32_t seed;

  std::string str() const {
    std::ostringstream s;
    s << "bits " << bits << ", n_rows " << n_rows << ", n_cols " << n_cols << ", seed " << seed;
    return s.str();
  }
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const int bits : kAllBits) {
    for (const int64_t n_rows : kRows) {
      for (const int64_t n_cols : kCols) {
        const auto seed = static_cast<uint32_t>(1000003 * bits + 4099 * n_rows + n_cols);
        cases.push_back({bits, n_rows, n_cols, seed});
      }
    }
  }
  return cases;
}

class Stream {
 public:
  Stream() { created_ = cudaStreamCreate(&stream_); }
  ~Stream() {
    if (created_ == cudaSuccess) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaError_t created() const { return created_; }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
  cudaError_t created_ = cudaErrorUnknown;
};

// got = [want..., guard...]: every element matches the reference and the guard is still poison.
template <typename T>
::testing::AssertionResult matches_ref(const std::vector<T>& got, const std::vector<T>& want,
                                       T poison, int64_t row_len) {
  int64_t n_bad = 0, n_unwritten = 0, n_past_end = 0;
  std::ostringstream first;
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] == want[i]) continue;
    if (got[i] == poison) ++n_unwritten;
    if (n_bad++ < 5) {
      first << std::hex << " [row " << std::dec << i / row_len << ", " << i % row_len
            << "] got 0x" << std::hex << uint64_t{got[i]} << ", want 0x" << uint64_t{want[i]}
            << std::dec << ";";
    }
  }
  for (size_t i = want.size(); i < got.size(); ++i) n_past_end += got[i] != poison;
  if (n_bad == 0 && n_past_end == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << n_bad << " of " << want.size() << " differ from the reference (" << n_unwritten
         << " still poison), " << n_past_end << " written past the end;" << first.str();
}

std::vector<uint8_t> random_codes(const Case& c) {
  std::mt19937 rng(c.seed);
  std::uniform_int_distribution<int> dist(0, (1 << c.bits) - 1);
  std::vector<uint8_t> codes(static_cast<size_t>(c.n_rows * c.n_cols));
  for (auto& code : codes) code = static_cast<uint8_t>(dist(rng));
  return codes;
}

TEST(PackCodes, PackMatchesRef) {
  KVQ_REQUIRE_GPU();
  Stream stream;
  KVQ_CUDA_CHECK(stream.created());
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(c.str());
    const std::vector<uint8_t> codes = random_codes(c);
    const int64_t per_row = quant::packed_words(c.n_cols, c.bits);
    std::vector<uint32_t> want(static_cast<size_t>(c.n_rows * per_row));
    pack_codes_ref(codes.data(), c.n_rows, c.n_cols, c.bits, want.data());

    DeviceBuffer<uint8_t> d_codes(codes.size());
    DeviceBuffer<uint32_t> d_words(want.size() + kGuard);
    KVQ_CUDA_CHECK(
        cudaMemcpy(d_codes.data(), codes.data(), d_codes.bytes(), cudaMemcpyHostToDevice));
    KVQ_CUDA_CHECK(cudaMemset(d_words.data(), 0xFF, d_words.bytes()));
    KVQ_CUDA_CHECK(launch_pack_codes(d_codes.data(), c.n_rows, c.n_cols, c.bits, d_words.data(),
                                     stream.get()));
    KVQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    std::vector<uint32_t> got(d_words.size());
    KVQ_CUDA_CHECK(cudaMemcpy(got.data(), d_words.data(), d_words.bytes(), cudaMemcpyDeviceToHost));
    ASSERT_TRUE(matches_ref(got, want, kPoisonWord, per_row)) << c.str();
  }
}

TEST(PackCodes, UnpackMatchesRef) {
  KVQ_REQUIRE_GPU();
  Stream stream;
  KVQ_CUDA_CHECK(stream.created());
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(c.str());
    // Whole random words: bits in unused slots are garbage that both sides must ignore.
    const int64_t per_row = quant::packed_words(c.n_cols, c.bits);
    std::vector<uint32_t> words(static_cast<size_t>(c.n_rows * per_row));
    std::mt19937 rng(c.seed);
    for (auto& w : words) w = static_cast<uint32_t>(rng());
    std::vector<uint8_t> want(static_cast<size_t>(c.n_rows * c.n_cols));
    unpack_codes_ref(words.data(), c.n_rows, c.n_cols, c.bits, want.data());

    DeviceBuffer<uint32_t> d_words(words.size());
    DeviceBuffer<uint8_t> d_codes(want.size() + kGuard);
    KVQ_CUDA_CHECK(
        cudaMemcpy(d_words.data(), words.data(), d_words.bytes(), cudaMemcpyHostToDevice));
    KVQ_CUDA_CHECK(cudaMemset(d_codes.data(), kPoisonCode, d_codes.bytes()));
    KVQ_CUDA_CHECK(launch_unpack_codes(d_words.data(), c.n_rows, c.n_cols, c.bits, d_codes.data(),
                                       stream.get()));
    KVQ_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    std::vector<uint8_t> got(d_codes.size());
    KVQ_CUDA_CHECK(cudaMemcpy(got.data(), d_codes.data(), d_codes.bytes(), cudaMemcpyDeviceToHost));
    ASSERT_TRUE(matches_ref(got, want, kPoisonCode, c.n_cols)) << c.str();
  }
}

TEST(PackCodes, RoundTripOnDevice) {
  KVQ_REQUIRE_GPU();
  for (const int bits : kAllBits) {
    const Case c{bits, /*n_rows=*/33, /*n_cols=*/1001, /*seed=*/static_cast<uint32_t>(77 + bits)};
    SCOPED_TRACE(c.str());
    const std::vector<uint8_t> codes = random_codes(c);
    DeviceBuffer<uint8_t> d_codes(codes.size());
    const int64_t per_row = quant::packed_words(c.n_cols, bits);
    DeviceBuffer<uint32_t> d_words(static_cast<size_t>(c.n_rows * per_row));
    DeviceBuffer<uint8_t> d_back(codes.size() + kGuard);
    KVQ_CUDA_CHECK(
        cudaMemcpy(d_codes.data(), codes.data(), d_codes.bytes(), cudaMemcpyHostToDevice));
    KVQ_CUDA_CHECK(cudaMemset(d_back.data(), kPoisonCode, d_back.bytes()));
    KVQ_CUDA_CHECK(launch_pack_codes(d_codes.data(), c.n_rows, c.n_cols, bits, d_words.data(),
                                     /*stream=*/nullptr));
    KVQ_CUDA_CHECK(launch_unpack_codes(d_words.data(), c.n_rows, c.n_cols, bits, d_back.data(),
                                       /*stream=*/nullptr));
    std::vector<uint8_t> got(d_back.size());
    KVQ_CUDA_CHECK(cudaMemcpy(got.data(), d_back.data(), d_back.bytes(), cudaMemcpyDeviceToHost));
    ASSERT_TRUE(matches_ref(got, codes, kPoisonCode, c.n_cols)) << c.str();
  }
}

// The launchers check their arguments before touching the GPU, so these run everywhere.
TEST(PackCodes, RejectsBadArgumentsWithoutLaunching) {
  uint8_t codes[1] = {0};
  uint32_t words[1] = {0};
  for (const int bits : {-1, 0, 1, 5, 8}) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    EXPECT_EQ(launch_pack_codes(codes, 1, 1, bits, words, nullptr), cudaErrorInvalidValue);
    EXPECT_EQ(launch_unpack_codes(words, 1, 1, bits, codes, nullptr), cudaErrorInvalidValue);
  }
  EXPECT_EQ(launch_pack_codes(codes, -1, 1, 3, words, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launch_unpack_codes(words, 1, -1, 3, codes, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launch_pack_codes(nullptr, 1, 1, 3, words, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launch_unpack_codes(words, 1, 1, 3, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(launch_pack_codes(codes, int64_t{1} << 40, int64_t{1} << 30, 2, words, nullptr),
            cudaErrorInvalidValue);
  // Nothing to do is success with nothing queued, null pointers included.
  EXPECT_EQ(launch_pack_codes(nullptr, 0, 17, 4, nullptr, nullptr), cudaSuccess);
  EXPECT_EQ(launch_unpack_codes(nullptr, 5, 0, 2, nullptr, nullptr), cudaSuccess);
}

}  // namespace
}  // namespace kvq::kernels
