// kvq/common/hash: SHA-256 against the FIPS 180-2 vectors and the system sha256sum, XXH64
// against published values, split-independence of both, and Checksum64 throughput.
#include "kvq/common/hash.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace kvq {
namespace {

using test::error_of;
using test::TempDir;

std::string sha(const std::string& s) { return sha256_hex(s.data(), s.size()); }

std::string xxh(const std::string& s) {
  Checksum64 c;
  c.update(s.data(), s.size());
  return c.hex();
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = uint8_t(rng());
  return out;
}

TEST(Sha256, Fips180Vectors) {
  EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, SplitDoesNotMatterAndDigestDoesNotFinalize) {
  const auto bytes = random_bytes(10007, 1);
  const std::string whole = sha256_hex(bytes.data(), bytes.size());
  for (size_t piece : {1, 3, 63, 64, 65, 1000}) {
    Sha256 s;
    for (size_t i = 0; i < bytes.size(); i += piece) {
      s.update(bytes.data() + i, std::min(piece, bytes.size() - i));
      if (i == piece) (void)s.hex_digest();  // mid-stream peek must not disturb the state
    }
    EXPECT_EQ(s.hex_digest(), whole) << "piece " << piece;
  }
}

TEST(Sha256, FileMatchesSystemSha256sum) {
  TempDir tmp;
  const std::string path = tmp.file("data.bin");
  const auto bytes = random_bytes((3 << 20) + 12345, 2);  // spans several 1 MiB blocks
  test::write_file(path, std::string(bytes.begin(), bytes.end()));
  FILE* pipe = popen(("sha256sum '" + path + "'").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char line[256] = {};
  const bool got = std::fgets(line, sizeof line, pipe) != nullptr;
  const int status = pclose(pipe);
  if (!got || status != 0) GTEST_SKIP() << "sha256sum not available";
  EXPECT_EQ(sha256_file(path), std::string(line).substr(0, 64));
  EXPECT_EQ(sha256_file(path), sha256_hex(bytes.data(), bytes.size()));
}

TEST(Sha256, MissingFileNamesThePath) {
  TempDir tmp;
  EXPECT_EQ(error_of([&] { sha256_file(tmp.file("nope.txt")); }),
            tmp.file("nope.txt") + ": cannot open (No such file or directory)");
}

TEST(Checksum64, PublishedXxh64Values) {
  EXPECT_EQ(xxh(""), "ef46db3751d8e999");
  EXPECT_EQ(xxh("abc"), "44bc2cf5ad770999");
  EXPECT_EQ(xxh("Nobody inspects the spammish repetition"), "fbcea83c8a378bf1");
}

TEST(Checksum64, SplitDoesNotMatter) {
  const auto bytes = random_bytes(4099, 3);
  for (size_t n : {0, 1, 7, 31, 32, 33, 100, 4099}) {
    Checksum64 whole;
    whole.update(bytes.data(), n);
    for (size_t piece : {1, 5, 8, 31, 32, 33, 1000}) {
      Checksum64 c;
      for (size_t i = 0; i < n; i += piece) {
        c.update(bytes.data() + i, std::min(piece, n - i));
        (void)c.value();  // reading mid-stream must not disturb the state
      }
      EXPECT_EQ(c.hex(), whole.hex()) << "n " << n << ", piece " << piece;
    }
  }
}

TEST(Checksum64, DistinguishesLengthAndContent) {
  EXPECT_NE(xxh(std::string(32, '\0')), xxh(std::string(33, '\0')));
  EXPECT_NE(xxh("abcd"), xxh("abce"));
}

TEST(Checksum64, AtLeast3GBPerSecond) {
#ifndef NDEBUG
  GTEST_SKIP() << "throughput is only meaningful in a Release build";
#endif
  const auto bytes = random_bytes(32 << 20, 4);
  double best = 0;
  uint64_t sink = 0;
  for (int rep = 0; rep < 7; ++rep) {  // best of several: the machine is shared
    const auto t0 = std::chrono::steady_clock::now();
    Checksum64 c;
    for (size_t i = 0; i < bytes.size(); i += 1 << 20) c.update(bytes.data() + i, 1 << 20);
    sink ^= c.value();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, bytes.size() / s / 1e9);
  }
  std::printf("Checksum64: %.1f GB/s (checksum %016llx)\n", best, (unsigned long long)sink);
  EXPECT_GE(best, 3.0);
}

}  // namespace
}  // namespace kvq
