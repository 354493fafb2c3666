// kv_split_plan (kernels/kv_attention.cu), the split count of the decode attention for a device
// shape, on the CPU: the shapes the H200 profiles of issue 14 ran (bench/kernels_notes.md) and
// the invariants of every plan (every chunk in exactly one split, whole waves, the block count).
// What a split costs on the GPU is not tested here: the lead's benchmarks measure it. Also the
// parts a launch computes (kv_attention_parts): the fp16 part only where a cache can hold fp16
// tokens, against a count of them at every length.
#include <cstdint>

#include <gtest/gtest.h>

#include "kv_attention.h"

namespace kvq::kernels {
namespace {

// 128K tokens in pages of 320 (nuq3: 4 blocks of 80 tokens a page); an H200 has 132 SMs.
constexpr int64_t kPages = (131072 + 319) / 320;
constexpr int kBlocksPerPage = 4, kSms = 132;

void expect_plan(const KvSplitPlan& p, int n_splits, int64_t chunks_per_split, int64_t blocks) {
  EXPECT_EQ(p.n_splits, n_splits);
  EXPECT_EQ(p.chunks_per_split, chunks_per_split);
  EXPECT_EQ(p.blocks, blocks);
}

TEST(KvSplitPlan, ProfiledShapes) {
  // MHA, batch 1: 32 KV heads, 2 blocks of 8 warps per SM (ncu: grid 256).
  KvSplitPlan p = kv_split_plan(kPages, 32, 8, 2 * kSms, kBlocksPerPage, true);
  expect_plan(p, 59, 7, 256);
  // GQA (8 KV heads) before issue 14's change: 1 block of 8 warps per SM (ncu: grid 104).
  p = kv_split_plan(kPages, 8, 8, kSms, kBlocksPerPage, true);
  expect_plan(p, 103, 4, 104);
  // GQA after it: 2 blocks of 7 warps per SM: splits of 2 pages, 240 blocks on 264 slots.
  p = kv_split_plan(kPages, 8, 7, 2 * kSms, kBlocksPerPage, true);
  expect_plan(p, 205, 2, 240);
}

// v3 splits at its 80-token blocks (kv_attention_split_unit), so short contexts fill the
// device (here for a cache without fp16 tokens; the page rows as v2 plans them): 4K tokens
// (52 blocks) at MHA, batch 1, was 13 splits of one page (4 blocks) each in 64 blocks of 8 warps;
// GQA at 32K (410 blocks), was 103 splits of one page in 120 blocks of 7 warps, now 205 of 2 blocks
// in 240.
TEST(KvSplitPlan, BlockChunksFillShortContexts) {
  KvSplitPlan p = kv_split_plan((4096 + 79) / 80, 32, 8, 2 * kSms, 1, false);
  expect_plan(p, 52, 1, 224);
  p = kv_split_plan((4096 + 319) / 320, 32, 8, 2 * kSms, kBlocksPerPage, true);  // in pages
  EXPECT_EQ(p.n_splits, 13);
  EXPECT_EQ(p.blocks, 64);
  p = kv_split_plan((32768 + 79) / 80, 8, 7, 2 * kSms, 1, false);
  expect_plan(p, 205, 2, 240);
  p = kv_split_plan((32768 + 319) / 320, 8, 7, 2 * kSms, kBlocksPerPage, true);  // in pages
  EXPECT_EQ(p.n_splits, 103);
  EXPECT_EQ(p.blocks, 120);
}

// A cache without fp16 tokens gives the fp16 part no warp (kv_attention_parts), so a unit's
// splits may fill whole blocks of warps: MHA batch 8 (256 units, one block each on 264 slots) at
// 32K is 15 splits of 28 blocks in two waves of blocks with a warp for the fp16 part, one warp
// of 8 in each doing only that (predicted cost 2 x 29 = 58), and 8 splits of 52 in one wave
// without (53); nuq4 (64-token blocks) at MHA 4K, batch 1, 32 splits of 2 blocks in 160 blocks
// with and 64 of one block in 256 without.
TEST(KvSplitPlan, NoFp16WarpFillsEveryWarp) {
  KvSplitPlan p = kv_split_plan((32768 + 79) / 80, 256, 8, 2 * kSms, 1, true);
  expect_plan(p, 15, 28, 512);
  p = kv_split_plan((32768 + 79) / 80, 256, 8, 2 * kSms, 1, false);
  expect_plan(p, 8, 52, 256);
  p = kv_split_plan(4096 / 64, 32, 8, 2 * kSms, 1, true);
  expect_plan(p, 32, 2, 160);
  p = kv_split_plan(4096 / 64, 32, 8, 2 * kSms, 1, false);
  expect_plan(p, 64, 1, 256);
}

// has_fp16_tokens() against its definition: some length leaves a token out of the quantized
// ones (a sink, the recent window, or tokens waiting for a flush of F > 1); the launch's parts
// follow it.
TEST(KvSplitPlan, Fp16PartOnlyWhereACacheHoldsFp16Tokens) {
  for (const int n_sink : {0, 1, 4}) {
    for (const int n_recent : {0, 3, 128}) {
      for (const int flush : {1, 32, 128}) {
        KvAttentionParams p;
        p.cache.n_sink = n_sink;
        p.cache.n_recent = n_recent;
        p.cache.flush = flush;
        p.cache.ring_size = n_recent + flush;
        p.n_splits = 7;
        bool fp16 = false;
        for (int64_t n = 1; n <= 600 && !fp16; ++n) fp16 = p.cache.n_quant(n) < n;
        SCOPED_TRACE(::testing::Message()
                     << "sink " << n_sink << " recent " << n_recent << " flush " << flush);
        EXPECT_EQ(p.cache.has_fp16_tokens(), fp16);
        EXPECT_EQ(kv_attention_parts(p), fp16 ? 8 : 7);
      }
    }
  }
}

TEST(KvSplitPlan, EveryChunkInOneSplit) {
  for (const int64_t chunks :
       {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{97}, kPages, int64_t{4097}}) {
    for (const int64_t units : {1, 8, 32, 256}) {
      for (const int warps : {1, 2, 7, 8}) {
        for (const int64_t slots : {int64_t{1}, int64_t{kSms}, int64_t{2 * kSms}}) {
          for (const bool fp16_warp : {false, true}) {
            const KvSplitPlan p =
                kv_split_plan(chunks, units, warps, slots, kBlocksPerPage, fp16_warp);
            SCOPED_TRACE(::testing::Message()
                         << "chunks " << chunks << " units " << units << " warps " << warps
                         << " slots " << slots << " fp16 warp " << fp16_warp);
            ASSERT_GE(p.n_splits, 1);
            ASSERT_GE(p.chunks_per_split, 1);
            EXPECT_GE(int64_t{p.n_splits} * p.chunks_per_split, chunks);
            EXPECT_LT(int64_t{p.n_splits - 1} * p.chunks_per_split, chunks);  // none empty
            const int warps_needed = p.n_splits + (fp16_warp ? 1 : 0);
            EXPECT_EQ(p.blocks, units * ((warps_needed + warps - 1) / warps));
            EXPECT_LE(p.n_splits, 65535 * 4 - 1);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvq::kernels
