// kvq/eval/table: the exact markdown, CSV and JSON kvq eval prints (alignment, rounding, the
// signed delta, escaping and RFC 4180 quoting).
#include "kvq/eval/table.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvq::eval {
namespace {

TEST(MarkdownTable, AlignedRoundedSignedAndEscaped) {
  const std::vector<ResultRow> rows = {
      {"fp16", 16, 5.6789, 0, 1.7368, 1000, 2.5, "baseline", 0, 100},
      {"uniform:k4v4", 4.25, 5.81234, 2.35, 1.76, 1000, 3.0, "g=128", 0.0123456, 97.126},
      {"kmeans:k2|v2", 2.126, 7.00006, 23.26666, 1.95, 1000, 3.5, "", 0.31999, 81.5},
      {"x", 3, 6, -0.004, 1.79, 1000, 1.0, "a\nb", 1.23456e-5, 99.995},
      {"better", 3, 5.5, -3.14159, 1.70, 1000, 1.0, "", 1.5, 60.004},
  };
  EXPECT_EQ(
      markdown_table(rows),
      "| method        | bits/elem |    ppl | Δ vs fp16 |        KL | top-1 % | note     |\n"
      "| ------------- | --------: | -----: | --------: | --------: | ------: | -------- |\n"
      "| fp16          |     16.00 | 5.6789 |    +0.00% |         0 |  100.00 | baseline |\n"
      "| uniform:k4v4  |      4.25 | 5.8123 |    +2.35% |   0.01235 |   97.13 | g=128    |\n"
      "| kmeans:k2\\|v2 |      2.13 | 7.0001 |   +23.27% |      0.32 |   81.50 |          |\n"
      "| x             |      3.00 | 6.0000 |    +0.00% | 1.235e-05 |  100.00 | a b      |\n"
      "| better        |      3.00 | 5.5000 |    -3.14% |       1.5 |   60.00 |          |\n");
}

TEST(MarkdownTable, EmptyGivesHeaderAndRule) {
  EXPECT_EQ(markdown_table({}),
            "| method | bits/elem | ppl | Δ vs fp16 |  KL | top-1 % | note |\n"
            "| ------ | --------: | --: | --------: | --: | ------: | ---- |\n");
}

TEST(CsvTable, FullPrecisionAndRfc4180Quoting) {
  const std::vector<ResultRow> rows = {
      {"fp16", 16, 5.6789, 0, 1.7368, 1000, 2.5, "baseline", 0, 100},
      {"a,b", 0.1 + 0.2, 5.0, -1.5, 1.75, 7, 0.25, "say \"hi\"", 0.012345678901234, 97.5},
      {"x", 4.25, 6.125, 2.0, 1.8, 10, 1e-3, "line\nbreak", 1e-17, 99.99},
      {"plain \"inner\" quotes", 1, 2, 3, 4, 5, 6, "cr\r", 7, 8},
  };
  EXPECT_EQ(csv_table(rows),
            "method,bits_per_element,ppl,delta_pct,kl,top1_pct,mean_loss,n_tokens,seconds,note\n"
            "fp16,16,5.6789,0,0,100,1.7368,1000,2.5,baseline\n"
            "\"a,b\",0.30000000000000004,5,-1.5,0.012345678901234,97.5,1.75,7,0.25,"
            "\"say \"\"hi\"\"\"\n"
            "x,4.25,6.125,2,1e-17,99.99,1.8,10,0.001,\"line\nbreak\"\n"
            "\"plain \"\"inner\"\" quotes\",1,2,3,7,8,4,5,6,\"cr\r\"\n");
  EXPECT_EQ(csv_table({}),
            "method,bits_per_element,ppl,delta_pct,kl,top1_pct,mean_loss,n_tokens,seconds,note\n");
}

TEST(JsonRows, KeysValuesAndNullForNonFinite) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const nlohmann::json j =
      json_rows({{"fp16", 16, 5.6789, 0, 1.7368, 1000, 2.5, "baseline", 0, 100},
                 {"bad", 2, nan, INFINITY, nan, 0, 0.5, "", nan, 12.5}});
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0].dump(),
            R"({"bits_per_element":16.0,"delta_pct":0.0,"kl":0.0,"mean_loss":1.7368,)"
            R"("method":"fp16","n_tokens":1000,"note":"baseline","ppl":5.6789,"seconds":2.5,)"
            R"("top1_pct":100.0})");
  EXPECT_TRUE(j[1]["ppl"].is_null());
  EXPECT_TRUE(j[1]["kl"].is_null());
  EXPECT_EQ(j[1]["top1_pct"].get<double>(), 12.5);
  EXPECT_TRUE(j[1]["delta_pct"].is_null());
  EXPECT_EQ(j[1]["n_tokens"].get<int64_t>(), 0);
  // Parses back: the document is valid JSON even with the non-finite values.
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);
}

}  // namespace
}  // namespace kvq::eval
