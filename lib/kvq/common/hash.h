// Hashes for fingerprints: SHA-256 (FIPS 180-4) for data files named in artifacts, and a fast
// non-cryptographic 64-bit checksum (the XXH64 algorithm, seed 0) for model weights, which are
// too large to SHA on every load. Both stream: the result never depends on how the input is split
// into update() calls. Not here: HMAC, other SHA sizes, hardware SHA instructions.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace kvq {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  // The digest of everything so far; the object is left as it was, so updates may continue.
  std::array<uint8_t, 32> digest() const;
  std::string hex_digest() const;  // 64 lowercase hex digits

 private:
  void compress(const uint8_t* block);  // one 64-byte block into state_

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// SHA-256 of a whole file, read in 1 MiB blocks; errors name the path.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const void* data, size_t n);

// XXH64 with seed 0: four independent 64-bit lanes over 32-byte stripes (multiply, rotate,
// multiply), then a tail and length finalizer. Same value as `xxh64sum` / python xxhash.xxh64.
class Checksum64 {
 public:
  void update(const void* data, size_t n);
  uint64_t value() const;   // of everything so far; updates may continue
  std::string hex() const;  // 16 lowercase hex digits, most significant first

 private:
  std::array<uint64_t, 4> lanes_ = initial_lanes();
  std::array<uint8_t, 32> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;

  static std::array<uint64_t, 4> initial_lanes();
};

}  // namespace kvq
