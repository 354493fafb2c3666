// kv_split_plan (kernels/kv_attention.cu), the split count of the decode attention for a device
// shape, on the CPU: the shapes the H200 profiles of issue 14 ran (bench/kernels_notes.md) and
// the invariants of every plan (every chunk in exactly one split, whole waves, the block count).
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
  EXPECT_EQ(p.chunks_per_split, 7);
  EXPECT_EQ(p.blocks, 256);
  // GQA (8 KV heads) before issue 14's change: 1 block of 8 warps per SM (ncu: grid 104).
  p = kv_split_plan(kPages, 8, 8, kSms, kBlocksPerPage);
  EXPECT_EQ(p.n_splits, 103);
  EXPECT_EQ(p.chunks_per_split, 4);
  EXPECT_EQ(p.blocks, 104);
  // GQA after it: 2 blocks of 7 warps per SM: splits of 2 pages, 240 blocks on 264 slots.
  p = kv_split_plan(kPages, 8, 7, 2 * kSms, kBlocksPerPage);
  EXPECT_EQ(p.n_splits, 205);
  EXPECT_EQ(p.chunks_per_split, 2);
  EXPECT_EQ(p.blocks, 240);
}

// v3 splits at its 80-token blocks (kv_attention_split_unit), so short contexts fill the
// device: 4K tokens (52 blocks) at MHA, batch 1, was 13 splits of one page (4 blocks) each in
// 64 blocks of 8 warps; GQA at 32K (410 blocks), was 103 splits of one page in 120 blocks of 7
// warps, now 205 of 2 blocks in 240.
TEST(KvSplitPlan, BlockChunksFillShortContexts) {
  KvSplitPlan p = kv_split_plan((4096 + 79) / 80, 32, 8, 2 * kSms, 1);
  EXPECT_EQ(p.n_splits, 52);
  EXPECT_EQ(p.chunks_per_split, 1);
  EXPECT_EQ(p.blocks, 224);
  p = kv_split_plan((4096 + 319) / 320, 32, 8, 2 * kSms, kBlocksPerPage);  // in pages
  EXPECT_EQ(p.n_splits, 13);
  EXPECT_EQ(p.blocks, 64);
  p = kv_split_plan((32768 + 79) / 80, 8, 7, 2 * kSms, 1);
  EXPECT_EQ(p.n_splits, 205);
  EXPECT_EQ(p.chunks_per_split, 2);
  EXPECT_EQ(p.blocks, 240);
  p = kv_split_plan((32768 + 319) / 320, 8, 7, 2 * kSms, kBlocksPerPage);  // in pages
  EXPECT_EQ(p.n_splits, 103);
  EXPECT_EQ(p.blocks, 120);
}

TEST(KvSplitPlan, EveryChunkInOneSplit) {
  for (const int64_t chunks :
       {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{97}, kPages, int64_t{4097}}) {
    for (const int64_t units : {1, 8, 32, 256}) {
      for (const int warps : {1, 2, 7, 8}) {
        for (const int64_t slots : {int64_t{1}, int64_t{kSms}, int64_t{2 * kSms}}) {
          const KvSplitPlan p = kv_split_plan(chunks, units, warps, slots, kBlocksPerPage);
          SCOPED_TRACE(::testing::Message() << "chunks " << chunks << " units " << units
                                            << " warps " << warps << " slots " << slots);
          ASSERT_GE(p.n_splits, 1);
          ASSERT_GE(p.chunks_per_split, 1);
          EXPECT_GE(int64_t{p.n_splits} * p.chunks_per_split, chunks);
          EXPECT_LT(int64_t{p.n_splits - 1} * p.chunks_per_split, chunks);  // none empty
          EXPECT_EQ(p.blocks, units * ((p.n_splits + 1 + warps - 1) / warps));
          EXPECT_LE(p.n_splits, 65535 * 4 - 1);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvq::kernels
