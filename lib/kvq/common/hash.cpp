// SHA-256 (FIPS 180-4 section 6.2) and XXH64 in portable C++. Not here: SIMD or SHA-NI paths;
// sha256 only fingerprints data files, and XXH64 already runs at memory speed in plain C++.
#include "kvq/common/hash.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "kvq/common/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "XXH64 words are read little-endian");

namespace kvq {

namespace {

constexpr std::array<uint32_t, 64> kSha256K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
inline uint64_t rotl64(uint64_t x, int n) { return (x << n) | (x >> (64 - n)); }

std::string to_hex(const uint8_t* bytes, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ULL;

inline uint64_t load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline uint64_t xxh_round(uint64_t acc, uint64_t word) {
  acc += word * kP2;
  acc = rotl64(acc, 31);
  return acc * kP1;
}

inline uint64_t xxh_merge(uint64_t h, uint64_t lane) {
  h ^= xxh_round(0, lane);
  return h * kP1 + kP4;
}

// Streams n bytes through a one-block buffer: completes a partly filled block first, hands whole
// blocks to blocks(ptr, count) straight from the input, and keeps the tail for the next call.
template <size_t N, typename Blocks>
void stream_blocks(std::array<uint8_t, N>& buffer, size_t& buffered, const uint8_t* p, size_t n,
                   Blocks blocks) {
  if (n == 0) return;  // p may be null (an empty vector's data()), which memcpy must not get
  if (buffered > 0) {
    const size_t take = std::min(n, N - buffered);
    std::memcpy(buffer.data() + buffered, p, take);
    buffered += take;
    p += take;
    n -= take;
    if (buffered < N) return;
    blocks(buffer.data(), 1);
    buffered = 0;
  }
  const size_t whole = n / N;
  if (whole > 0) blocks(p, whole);
  std::memcpy(buffer.data(), p + whole * N, n - whole * N);
  buffered = n - whole * N;
}

}  // namespace

Sha256::Sha256()
    : state_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::compress(const uint8_t* block) {
  uint32_t w[64];
  for (int t = 0; t < 16; ++t)
    w[t] = (uint32_t(block[4 * t]) << 24) | (uint32_t(block[4 * t + 1]) << 16) |
           (uint32_t(block[4 * t + 2]) << 8) | uint32_t(block[4 * t + 3]);
  for (int t = 16; t < 64; ++t) {
    const uint32_t s0 = rotr32(w[t - 15], 7) ^ rotr32(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const uint32_t s1 = rotr32(w[t - 2], 17) ^ rotr32(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
  uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
  for (int t = 0; t < 64; ++t) {
    const uint32_t t1 = h + (rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)) + ((e & f) ^ (~e & g)) +
                        kSha256K[t] + w[t];
    const uint32_t t2 =
        (rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  state_[0] += a;
  state_[1] += b;
  state_[2] += c;
  state_[3] += d;
  state_[4] += e;
  state_[5] += f;
  state_[6] += g;
  state_[7] += h;
}

void Sha256::update(const void* data, size_t n) {
  total_bytes_ += n;
  stream_blocks(buffer_, buffered_, static_cast<const uint8_t*>(data), n,
                [this](const uint8_t* blocks, size_t count) {
                  for (size_t i = 0; i < count; ++i) compress(blocks + 64 * i);
                });
}

std::array<uint8_t, 32> Sha256::digest() const {
  Sha256 s = *this;  // padding finalizes a copy, so this object can keep streaming
  const uint64_t bits = total_bytes_ * 8;
  const uint8_t one = 0x80, zero = 0;
  s.update(&one, 1);
  while (s.buffered_ != 56) s.update(&zero, 1);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = uint8_t(bits >> (56 - 8 * i));
  s.update(length, 8);
  std::array<uint8_t, 32> out{};
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 4; ++j) out[4 * i + j] = uint8_t(s.state_[i] >> (24 - 8 * j));
  return out;
}

std::string Sha256::hex_digest() const {
  const auto d = digest();
  return to_hex(d.data(), d.size());
}

std::string sha256_hex(const void* data, size_t n) {
  Sha256 s;
  s.update(data, n);
  return s.hex_digest();
}

std::string sha256_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail("{}: cannot open ({})", path, std::strerror(errno));
  std::vector<uint8_t> block(1 << 20);
  Sha256 s;
  for (;;) {
    const size_t got = std::fread(block.data(), 1, block.size(), f.get());
    s.update(block.data(), got);
    if (got < block.size()) break;
  }
  if (std::ferror(f.get())) fail("{}: read error ({})", path, std::strerror(errno));
  return s.hex_digest();
}

std::array<uint64_t, 4> Checksum64::initial_lanes() { return {kP1 + kP2, kP2, 0, 0 - kP1}; }

void Checksum64::update(const void* data, size_t n) {
  total_bytes_ += n;
  stream_blocks(buffer_, buffered_, static_cast<const uint8_t*>(data), n,
                [this](const uint8_t* p, size_t count) {
                  // Locals rather than lanes_ so the four independent chains stay in registers.
                  uint64_t v0 = lanes_[0], v1 = lanes_[1], v2 = lanes_[2], v3 = lanes_[3];
                  for (const uint8_t* end = p + 32 * count; p < end; p += 32) {
                    v0 = xxh_round(v0, load64(p));
                    v1 = xxh_round(v1, load64(p + 8));
                    v2 = xxh_round(v2, load64(p + 16));
                    v3 = xxh_round(v3, load64(p + 24));
                  }
                  lanes_ = {v0, v1, v2, v3};
                });
}

uint64_t Checksum64::value() const {
  uint64_t h;
  if (total_bytes_ >= 32) {
    h = rotl64(lanes_[0], 1) + rotl64(lanes_[1], 7) + rotl64(lanes_[2], 12) + rotl64(lanes_[3], 18);
    for (uint64_t lane : lanes_) h = xxh_merge(h, lane);
  } else {
    h = kP5;  // seed 0
  }
  h += total_bytes_;
  const uint8_t* p = buffer_.data();
  size_t n = buffered_;
  for (; n >= 8; p += 8, n -= 8) h = rotl64(h ^ xxh_round(0, load64(p)), 27) * kP1 + kP4;
  if (n >= 4) {
    h = rotl64(h ^ (uint64_t(load32(p)) * kP1), 23) * kP2 + kP3;
    p += 4;
    n -= 4;
  }
  for (; n > 0; ++p, --n) h = rotl64(h ^ (*p * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

std::string Checksum64::hex() const {
  const uint64_t v = value();
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = uint8_t(v >> (56 - 8 * i));
  return to_hex(bytes, 8);
}

}  // namespace kvq
