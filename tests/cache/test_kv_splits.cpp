// kv_split_plan (kernels/kv_attention.cu), the split count of the decode attention for a device
// shape, on the CPU: the shapes the H200 profiles of issue 14 ran (bench/kernels_notes.md) and
// the invariants of every plan (every page in exactly one split, whole waves, the block count).
// What a split costs on the GPU is not tested here: the lead's benchmarks measure it.
#include <cstdint>

#include <gtest/gtest.h>

#include "kv_attention.h"

namespace kvq::kernels {
namespace {

// 128K tokens in pages of 320 (nuq3: 4 blocks of 80 tokens a page); an H200 has 132 SMs.
constexpr int64_t kPages = (131072 + 319) / 320;
constexpr int kBlocksPerPage = 4, kSms = 132;

TEST(KvSplitPlan, ProfiledShapes) {
  // MHA, batch 1: 32 KV heads, 2 blocks of 8 warps per SM (ncu: grid 256).
  KvSplitPlan p = kv_split_plan(kPages, 32, 8, 2 * kSms, kBlocksPerPage);
  EXPECT_EQ(p.n_splits, 59);
  EXPECT_EQ(p.pages_per_split, 7);
  EXPECT_EQ(p.blocks, 256);
  // GQA (8 KV heads) before issue 14's change: 1 block of 8 warps per SM (ncu: grid 104).
  p = kv_split_plan(kPages, 8, 8, kSms, kBlocksPerPage);
  EXPECT_EQ(p.n_splits, 103);
  EXPECT_EQ(p.pages_per_split, 4);
  EXPECT_EQ(p.blocks, 104);
  // GQA after it: 2 blocks of 7 warps per SM: splits of 2 pages, 240 blocks on 264 slots.
  p = kv_split_plan(kPages, 8, 7, 2 * kSms, kBlocksPerPage);
  EXPECT_EQ(p.n_splits, 205);
  EXPECT_EQ(p.pages_per_split, 2);
  EXPECT_EQ(p.blocks, 240);
}

TEST(KvSplitPlan, EveryPageInOneSplit) {
  for (const int64_t pages :
       {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{97}, kPages, int64_t{4097}}) {
    for (const int64_t units : {1, 8, 32, 256}) {
      for (const int warps : {1, 2, 7, 8}) {
        for (const int64_t slots : {int64_t{1}, int64_t{kSms}, int64_t{2 * kSms}}) {
          const KvSplitPlan p = kv_split_plan(pages, units, warps, slots, kBlocksPerPage);
          SCOPED_TRACE(::testing::Message() << "pages " << pages << " units " << units << " warps "
                                            << warps << " slots " << slots);
          ASSERT_GE(p.n_splits, 1);
          ASSERT_GE(p.pages_per_split, 1);
          EXPECT_GE(int64_t{p.n_splits} * p.pages_per_split, pages);
          EXPECT_LT(int64_t{p.n_splits - 1} * p.pages_per_split, pages);  // none empty
          EXPECT_EQ(p.blocks, units * ((p.n_splits + 1 + warps - 1) / warps));
          EXPECT_LE(p.n_splits, 65535 * 4 - 1);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvq::kernels
