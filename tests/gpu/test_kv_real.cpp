// The compressed KV cache on real keys and values: wt2-llama-18m's pre-RoPE K and V of every
// layer (reference.safetensors, layers.{i}.k/v [64 tokens, 2 KV heads x 128]), appended and
// attended on the GPU and compared with the CPU reference, for KVQuant 2, 3 and 4 bits with
// outliers (values per token and head, and per token over both KV heads as kvq fit's nuq3-1%)
// and KIVI-2, 4 query heads on 2 KV heads (its GQA shape), RoPE theta 10000.
// Queries are the model's own keys of the last tokens (realistic magnitudes and directions).
// Skips without a GPU or without the model (set KVQ_DATA_DIR).
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kv_test_support.h"
#include "kvq/model/io/safetensors.h"
#include "support/test_support.h"

namespace kvq::kernels {
namespace {

using test::DeviceBuffer;

constexpr const char* kModel = "models/wt2-llama-18m";

struct RealCase {
  KvMethod method;
  int bits, page_size, n_sink, n_recent;
  bool bf16;
  quant::ValueVector values = quant::ValueVector::kTokenHead;  // KVQuant
};

TEST(KvReal, Wt2Llama18mLayers) {
  KVQ_REQUIRE_GPU();
  KVQ_REQUIRE_DATA(kModel);
  const model::SafetensorsFile file(
      ::kvq::test::data_path(std::string(kModel) + "/reference.safetensors"));
  const RealCase cases[] = {
      {KvMethod::kNuq, 3, 80, 1, 4, false},
      {KvMethod::kNuq, 4, 64, 0, 0, true},
      {KvMethod::kNuq, 3, 320, 0, 0, false, quant::ValueVector::kToken},  // nuq3-1%, kvq fit's
      {KvMethod::kNuq, 2, 256, 1, 4, true, quant::ValueVector::kToken},
      {KvMethod::kKivi, 2, 256, 0, 0, false},
  };
  const int n_layers = test::sanitizer_run() ? 1 : 6;
  for (int layer = 0; layer < n_layers; ++layer) {
    const auto& tk = file.get("layers." + std::to_string(layer) + ".k");
    const auto& tv = file.get("layers." + std::to_string(layer) + ".v");
    ASSERT_EQ(tk.shape, (std::vector<int64_t>{64, 256}));
    ASSERT_EQ(tv.shape, (std::vector<int64_t>{64, 256}));
    test::History hist;
    hist.k.emplace_back(64 * 256);
    hist.v.emplace_back(64 * 256);
    const float* kf = reinterpret_cast<const float*>(tk.data);
    const float* vf = reinterpret_cast<const float*>(tv.data);
    for (int i = 0; i < 64 * 256; ++i) {  // [token][head * 128 + ch] is [token][head][ch]
      hist.k[0][i] = kv_half_bits(kf[i]);
      hist.v[0][i] = kv_half_bits(vf[i]);
    }
    for (const RealCase& rc : cases) {
      KvCacheConfig c;
      c.format = rc.method == KvMethod::kNuq
                     ? test::nuq_format(rc.bits, rc.n_sink, rc.n_recent, 0.01, rc.values)
                     : test::kivi_format(rc.bits, 32, rc.n_sink, rc.n_recent, 32);
      c.head_dim = 128;
      c.n_kv_heads = 2;
      c.n_q_heads = 4;
      c.page_size = rc.page_size;
      c.max_batch = 1;
      c.max_seq_len = 64;
      const std::string name =
          "layer " + std::to_string(layer) + " " + (rc.method == KvMethod::kNuq ? "nuq" : "kivi") +
          std::to_string(rc.bits) +
          (rc.method == KvMethod::kNuq ? std::string(" ") + test::values_name(rc.values)
                                       : std::string());
      SCOPED_TRACE(name);
      const quant::KvTables q = test::random_quantizer(hist, rc.bits, 2, 128, 0.01, 100 + layer);
      const quant::KvTables* qp = rc.method == KvMethod::kNuq ? &q : nullptr;
      KvCache cache(c, qp);
      test::build(&cache, hist, 8);
      std::vector<std::string> problems;
      const KvState got = kv_parse_image(cache.config(), cache.snapshot(), &problems);
      EXPECT_TRUE(problems.empty()) << (problems.empty() ? "" : problems.front());
      const KvState want = kv_quantize_ref(cache.config(), qp, hist.k, hist.v);
      EXPECT_EQ(kv_compare(want, got), "");

      std::vector<uint16_t> q_bits(4 * 128);
      std::vector<float> qf(4 * 128);
      for (int qh = 0; qh < 4; ++qh) {
        for (int ch = 0; ch < 128; ++ch) {
          const float x = kf[(63 - qh) * 256 + (qh / 2) * 128 + ch];
          q_bits[qh * 128 + ch] = rc.bf16 ? kv_bf16_bits(x) : kv_half_bits(x);
          qf[qh * 128 + ch] =
              rc.bf16 ? kv_bf16_float(q_bits[qh * 128 + ch]) : kv_half_float(q_bits[qh * 128 + ch]);
        }
      }
      const std::vector<float> inv_freq = rope_inv_freq(10000.0, 128);
      const std::vector<double> ref = kv_attention_ref(want, qp, qf, inv_freq);
      const DeviceBuffer<uint16_t> dq = test::to_device(q_bits);
      const DeviceBuffer<float> df = test::to_device(inv_freq);
      DeviceBuffer<uint16_t> dout(q_bits.size());
      for (const auto version :
           {KvAttentionKernel::kSimple, KvAttentionKernel::kMma, KvAttentionKernel::kTwoPhase}) {
        if (!kv_attention_serves(cache.config().layout(), version)) continue;
        ASSERT_EQ(cudaMemset(dout.data(), 0xFF, dout.bytes()), cudaSuccess);
        cache.attend(dq.data(), rc.bf16, dout.data(), df.data(), version, nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<uint16_t> out(q_bits.size());
        ASSERT_EQ(cudaMemcpy(out.data(), dout.data(), dout.bytes(), cudaMemcpyDeviceToHost),
                  cudaSuccess);
        const test::ErrorStats s = test::compare_out(out, rc.bf16, ref, 4, 128);
        std::printf("[ kv real ] %s v%d: worst rel %.2e, max abs %.2e\n", name.c_str(),
                    static_cast<int>(version), s.worst_rel, s.max_abs);
        EXPECT_EQ(s.n_bad, 0);
        EXPECT_LE(s.worst_rel, rc.bf16 ? 2.5e-2 : 1e-2) << s.worst;
      }
    }
  }
}

}  // namespace
}  // namespace kvq::kernels
