// kv_make_layout (kernels/kv_layout.h) on the CPU: the parts of a page follow one another without
// overlap, and every part, every head section, the token section and each page start on a 32-byte
// L2 sector, so that the loads the decode kernels make per block (a block's key rows, its 32
// bytes of each value channel row, its value scales and outlier index words) do too. Over every
// bit width, head size, page size, head count and outlier room the cache can be configured with.
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "kv_layout.h"

namespace kvq::kernels {
namespace {

struct Part {
  const char* name;
  int64_t offset, bytes;
};

// The parts of one head section (and of the token section, KVQuant), in their order.
std::vector<Part> head_parts(const KvLayout& l) {
  const int64_t P = l.page_size, D = l.head_dim;
  if (l.method == KvMethod::kNuq) {
    return {{"header", l.off_header, 4 + 2 * int64_t{l.blocks_per_page}},
            {"k_codes", l.off_k_codes, P * l.k_row_words * 4},
            {"v_codes", l.off_v_codes, D * l.v_row_words * 4},
            {"v_index", l.off_v_index, P * 4},
            {"k_out", l.off_k_out, int64_t{l.k_out_capacity} * 4}};
  }
  return {{"k_codes", l.off_k_codes, P * l.k_row_words * 4},
          {"k_params", l.off_k_params, P / l.group * (D / 2) * 8},
          {"v_codes", l.off_v_codes, D * l.v_row_words * 4},
          {"v_params", l.off_v_params, P * (D / l.group) * 4}};
}

void expect_sector_parts(const std::vector<Part>& parts, int64_t section_bytes) {
  int64_t end = 0;
  for (const Part& p : parts) {
    SCOPED_TRACE(p.name);
    EXPECT_EQ(p.offset % kKvPartAlign, 0);
    EXPECT_GE(p.offset, end);                 // after the part before it
    EXPECT_LT(p.offset - end, kKvPartAlign);  // and no more padding than a sector's
    end = p.offset + p.bytes;
  }
  EXPECT_EQ(section_bytes % kKvPartAlign, 0);
  EXPECT_GE(section_bytes, end);
  EXPECT_LT(section_bytes - end, kKvPartAlign);
}

TEST(KvLayout, PartsStartOnSectors) {
  int checked = 0;
  for (const KvMethod method : {KvMethod::kNuq, KvMethod::kKivi}) {
    for (const int bits : {2, 3, 4}) {
      if (method == KvMethod::kKivi && bits == 3) continue;  // KIVI pages: 2 or 4 bits
      for (const int D : {64, 128}) {
        const int bt = kv_block_tokens(bits);
        for (int page = bt; page * D < 65536; page += bt) {
          for (const int H : {1, 3, 8, 32}) {
            for (const int room : {0, 1, 7, 37, 100}) {
              const int group = method == KvMethod::kKivi ? 32 : 1;
              if (page % group != 0) continue;
              const bool per_head = room % 2 == 1;  // -vhead's v_vectors alike
              const int v_vectors = per_head ? H : 1;
              const KvLayout l = kv_make_layout(method, bits, D, page, group, H, v_vectors,
                                                v_vectors * 2 * room, room * 5 + 3);
              SCOPED_TRACE(::testing::Message()
                           << "method " << static_cast<int>(method) << " bits " << bits << " D "
                           << D << " page " << page << " heads " << H << " room " << room);
              expect_sector_parts(head_parts(l), l.head_bytes);
              if (method == KvMethod::kNuq) {
                expect_sector_parts({{"v_scales", l.off_v_scales, int64_t{l.v_vectors} * page * 4},
                                     {"v_out", l.off_v_out, int64_t{page} * l.v_out_per_row * 4}},
                                    l.token_bytes);
              } else {
                EXPECT_EQ(l.token_bytes, 0);
              }
              EXPECT_EQ(l.page_bytes, int64_t{H} * l.head_bytes + l.token_bytes);
              // A block's loads: its key rows, and its 8 words of each value channel row.
              for (int bi = 0; bi < l.blocks_per_page; ++bi) {
                const int64_t k_rows = l.off_k_codes + int64_t{bi} * bt * l.k_row_words * 4;
                EXPECT_EQ(k_rows % kKvPartAlign, 0) << "block " << bi;
                for (int ch = 0; ch < D; ch += 17) {
                  const int64_t v_words =
                      l.off_v_codes + (int64_t{ch} * l.v_row_words + 8 * bi) * 4;
                  EXPECT_EQ(v_words % kKvPartAlign, 0) << "block " << bi << " channel " << ch;
                }
              }
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

}  // namespace
}  // namespace kvq::kernels
