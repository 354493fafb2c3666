// Grouped uniform fake quantization of a matrix: the intB baselines, KIVI's per-channel keys and
// per-token values, and SKVQ's clipped groups (DESIGN.md section 3) all reduce to it.
//
// Layout: x and out are row-major float [n_rows, n_cols] (rows = tokens, columns = channels).
// A group is `group` consecutive elements sharing one scale (and zero):
//   GroupAxis::kRow     along a row: columns [g*group, (g+1)*group) of one row
//                       (group == n_cols: per token);
//   GroupAxis::kColumn  down a column: rows [g*group, (g+1)*group) of one column
//                       (group == n_rows: per channel over all tokens).
// The last group of a row or column is short when group does not divide it.
// Coding per group:
//   kAsymmetric  uniform_params_ref / uniform_encode / uniform_decode of kv_format.h; a clip
//                ratio r < 1 multiplies the scale and the zero by r (zero = r*min,
//                max' = r*max: SKVQ's clipping).
//   kSymmetric   scale = (max|x| * r) / (2^(B-1) - 1),
//                q = clamp(nearbyint(x / scale), -(2^(B-1) - 1), 2^(B-1) - 1), x' = q * scale;
//                scale == 0 gives x' = 0. Needs bits >= 2 (one bit has no nonzero level).
// Values the clipped range leaves out are clamped by the coding. All arithmetic is float, in
// the order written, so kernels can match it bit for bit.
// Not here: channel reordering (SKVQ), fp16 windows and sinks (methods/), packing (pack.h).
#pragma once

#include <cstdint>

namespace kvq::quant {

enum class UniformMode { kAsymmetric, kSymmetric };
enum class GroupAxis { kRow, kColumn };

struct UniformConfig {
  int bits = 4;  // 1..8 (2..8 symmetric)
  UniformMode mode = UniformMode::kAsymmetric;
  GroupAxis axis = GroupAxis::kRow;
  int64_t group = 128;  // elements per group, >= 1
  float clip = 1.0f;    // clip ratio r in (0, 1]
};

// Throws kvq::Error naming the field for bits, group or clip out of range.
void check_uniform_config(const UniformConfig& config);

// Symmetric scale of the n values at x[0], x[stride], ... (formula above); throws on bits
// outside 2..8, n < 1, stride < 1, clip outside (0, 1] or a non-finite value.
float symmetric_scale_ref(const float* x, int64_t n, int64_t stride, int bits, float clip);
// -(2^(B-1) - 1) .. 2^(B-1) - 1; NaN codes as 0, infinities clamp.
int symmetric_encode(float x, float scale, int bits);
inline float symmetric_decode(int code, float scale) { return static_cast<float>(code) * scale; }

// Fake-quantizes x into out (both [n_rows, n_cols]; they may alias). Throws on a bad config,
// negative sizes, or a non-finite element (naming its row and column) before writing anything.
void uniform_fake_quant_ref(const float* x, int64_t n_rows, int64_t n_cols,
                            const UniformConfig& config, float* out);

// Storage cost of a configuration in bits per element: bits + 16 / group for each fp16
// per-group parameter (scale and zero when asymmetric: +32 / group; scale only when
// symmetric: +16 / group). Nominal: it counts every group as full.
double uniform_bits_per_element(const UniformConfig& config);

}  // namespace kvq::quant
