// Parsing and printing method strings (grammar in method.h). The string is split at '-'; the
// first token names the family, every later token is one option, in any order, each at most
// once. Errors name the string, the token and the valid forms, on one line.
#include "kvq/methods/method.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "kvq/common/error.h"

namespace kvq::methods {
namespace {

constexpr const char* kForms =
    "fp16, fp8-e4m3, fp8-e5m2, intB[-token|-channel|-gG] (B 1..8), "
    "nuqB[-P%][-sink[N]][-vhead][-qnorm] (B 2..4), kiviB[-gG][-rR] (B 1..8), "
    "skvq-kB-vB-gG-wW[-sS]; each may end in -post";

[[noreturn]] void bad(const std::string& text, const std::string& what) {
  fail("method '{}': {} (valid: {})", text, what, kForms);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dash = s.find('-', start);
    parts.push_back(s.substr(start, dash == std::string::npos ? std::string::npos : dash - start));
    if (dash == std::string::npos) return parts;
    start = dash + 1;
  }
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 9 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A decimal number without sign or exponent after `prefix` in `token`, or -1.
int64_t number_after(const std::string& token, const std::string& prefix) {
  if (token.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = token.substr(prefix.size());
  if (!all_digits(digits) || (digits.size() > 1 && digits[0] == '0')) return -1;
  return std::stoll(digits);
}

bool is_number_after(const std::string& token, const std::string& prefix) {
  return number_after(token, prefix) >= 0;
}

int check_bits(const std::string& text, const char* what, int64_t bits, int lo, int hi) {
  if (bits < lo || bits > hi)
    bad(text, fmt::format("{} bits: expected {}..{}, found {}", what, lo, hi, bits));
  return static_cast<int>(bits);
}

// "1%", "0.5%": the percent, or -1.
double percent_of(const std::string& token) {
  if (token.size() < 2 || token.back() != '%') return -1;
  const std::string num = token.substr(0, token.size() - 1);
  const size_t dot = num.find('.');
  const std::string whole = num.substr(0, dot);
  if (!all_digits(whole)) return -1;
  if (dot != std::string::npos && !all_digits(num.substr(dot + 1))) return -1;
  return std::stod(num);
}

std::string percent_string(double p) { return fmt::format("{}%", p); }

}  // namespace

const char* method_forms() { return kForms; }

const char* kind_name(MethodKind kind) {
  switch (kind) {
    case MethodKind::kFp16: return "fp16";
    case MethodKind::kFp8: return "fp8";
    case MethodKind::kInt: return "int";
    case MethodKind::kNuq: return "nuq";
    case MethodKind::kKivi: return "kivi";
    case MethodKind::kSkvq: return "skvq";
  }
  return "?";
}

MethodSpec parse_method(const std::string& text) {
  if (text.empty()) bad(text, "empty method string");
  std::vector<std::string> tokens = split(text);
  for (const std::string& t : tokens) {
    if (t.empty()) bad(text, "empty part between '-'");
  }
  MethodSpec s;
  // -post is accepted in any position after the family.
  const auto post = std::find(tokens.begin() + 1, tokens.end(), "post");
  if (post != tokens.end()) {
    s.post_rope = true;
    tokens.erase(post);
    if (std::find(tokens.begin() + 1, tokens.end(), "post") != tokens.end())
      bad(text, "'post' given twice");
  }
  const std::string family = tokens[0];
  std::set<std::string> seen;  // option kinds already given
  auto once = [&](const std::string& kind, const std::string& token) {
    if (!seen.insert(kind).second)
      bad(text, fmt::format("'{}' repeats the {} option", token, kind));
  };
  auto unknown = [&](const std::string& token) {
    bad(text, fmt::format("unknown option '{}' for {}", token, family));
  };

  if (family == "fp16") {
    s.kind = MethodKind::kFp16;
    if (tokens.size() > 1) unknown(tokens[1]);
  } else if (family == "fp8") {
    s.kind = MethodKind::kFp8;
    s.key_bits = s.value_bits = 8;
    if (tokens.size() < 2) bad(text, "fp8 needs a format: e4m3 or e5m2");
    if (tokens[1] == "e4m3") {
      s.fp8 = Fp8Format::kE4M3;
    } else if (tokens[1] == "e5m2") {
      s.fp8 = Fp8Format::kE5M2;
    } else {
      bad(text, fmt::format("fp8 format: expected e4m3 or e5m2, found '{}'", tokens[1]));
    }
    if (tokens.size() > 2) unknown(tokens[2]);
  } else if (is_number_after(family, "int")) {
    s.kind = MethodKind::kInt;
    s.key_bits = s.value_bits = check_bits(text, "int", number_after(family, "int"), 1, 8);
    for (size_t i = 1; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      once("granularity", t);
      if (t == "token") {
        s.granularity = IntGranularity::kToken;
      } else if (t == "channel") {
        s.granularity = IntGranularity::kChannel;
      } else if (is_number_after(t, "g")) {
        s.granularity = IntGranularity::kGroup;
        s.group = number_after(t, "g");
        if (s.group < 1) bad(text, fmt::format("group: expected >= 1 channels, found {}", s.group));
      } else {
        unknown(t);
      }
    }
  } else if (is_number_after(family, "nuq")) {
    s.kind = MethodKind::kNuq;
    s.key_bits = s.value_bits = check_bits(text, "nuq", number_after(family, "nuq"), 2, 4);
    for (size_t i = 1; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      if (percent_of(t) >= 0) {
        once("outlier", t);
        s.outlier_percent = percent_of(t);
        if (!(s.outlier_percent < 100))
          bad(text, fmt::format("outliers: expected 0 <= P < 100 percent, found {}", t));
      } else if (t == "sink" || is_number_after(t, "sink")) {
        once("sink", t);
        s.n_sink = t == "sink" ? 1 : number_after(t, "sink");
      } else if (t == "vhead") {
        once("vhead", t);
        s.value_per_head = true;
      } else if (t == "qnorm") {
        once("qnorm", t);
        s.qnorm = true;
      } else {
        unknown(t);
      }
    }
  } else if (is_number_after(family, "kivi")) {
    s.kind = MethodKind::kKivi;
    s.key_bits = s.value_bits = check_bits(text, "kivi", number_after(family, "kivi"), 1, 8);
    s.group = 32;
    s.window = 128;
    for (size_t i = 1; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      if (is_number_after(t, "g")) {
        once("group", t);
        s.group = number_after(t, "g");
      } else if (is_number_after(t, "r")) {
        once("residual", t);
        s.window = number_after(t, "r");
      } else {
        unknown(t);
      }
    }
    if (s.group < 1) bad(text, fmt::format("group: expected >= 1, found {}", s.group));
    if (s.window % s.group != 0) {
      bad(text, fmt::format("residual: expected a multiple of the group size {}, found {}", s.group,
                            s.window));
    }
  } else if (family == "skvq") {
    s.kind = MethodKind::kSkvq;
    s.n_sink = kSkvqDefaultSink;
    int64_t k = -1, v = -1, g = -1, w = -1;
    for (size_t i = 1; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      int64_t* into = is_number_after(t, "k")   ? &k
                      : is_number_after(t, "v") ? &v
                      : is_number_after(t, "g") ? &g
                      : is_number_after(t, "w") ? &w
                      : is_number_after(t, "s") ? &s.n_sink
                                                : nullptr;
      if (!into) unknown(t);
      once(t.substr(0, 1), t);
      *into = number_after(t, t.substr(0, 1));
    }
    for (const auto& [name, value] :
         {std::pair{"k", k}, std::pair{"v", v}, std::pair{"g", g}, std::pair{"w", w}}) {
      if (value < 0) bad(text, fmt::format("skvq needs -{}N", name));
    }
    s.key_bits = check_bits(text, "key", k, 1, 8);
    s.value_bits = check_bits(text, "value", v, 1, 8);
    if (g < 1) bad(text, fmt::format("group: expected >= 1 channels, found {}", g));
    s.group = g;
    s.window = w;
  } else {
    bad(text, fmt::format("unknown method family '{}'", family));
  }
  return s;
}

std::vector<MethodSpec> parse_methods(const std::vector<std::string>& items, const char* flag) {
  std::vector<MethodSpec> specs;
  std::map<std::string, const std::string*> item_of;  // canonical name -> the item that gave it
  for (const std::string& item : items) {
    MethodSpec spec = parse_method(item);
    const auto [at, added] = item_of.emplace(spec.name(), &item);
    if (!added) {
      if (*at->second == item) fail("{}: '{}' is given twice", flag, item);
      fail("{}: '{}' and '{}' are the same method ({})", flag, *at->second, item, at->first);
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

std::string MethodSpec::name() const {
  std::string n;
  switch (kind) {
    case MethodKind::kFp16: n = "fp16"; break;
    case MethodKind::kFp8: n = fp8 == Fp8Format::kE4M3 ? "fp8-e4m3" : "fp8-e5m2"; break;
    case MethodKind::kInt:
      n = fmt::format("int{}", key_bits);
      n += granularity == IntGranularity::kToken     ? "-token"
           : granularity == IntGranularity::kChannel ? "-channel"
                                                     : fmt::format("-g{}", group);
      break;
    case MethodKind::kNuq:
      n = fmt::format("nuq{}", key_bits);
      if (outlier_percent > 0) n += "-" + percent_string(outlier_percent);
      if (n_sink == 1) n += "-sink";
      if (n_sink > 1) n += fmt::format("-sink{}", n_sink);
      if (value_per_head) n += "-vhead";
      if (qnorm) n += "-qnorm";
      break;
    case MethodKind::kKivi: n = fmt::format("kivi{}-g{}-r{}", key_bits, group, window); break;
    case MethodKind::kSkvq:
      n = fmt::format("skvq-k{}-v{}-g{}-w{}", key_bits, value_bits, group, window);
      if (n_sink != kSkvqDefaultSink) n += fmt::format("-s{}", n_sink);
      break;
  }
  if (post_rope) n += "-post";
  return n;
}

quant::KvCacheFormat MethodSpec::kv_format() const {
  quant::KvCacheFormat f;
  f.method = name();
  f.key_bits = key_bits;
  f.value_bits = value_bits;
  f.pre_rope = !post_rope;
  f.n_sink = n_sink;
  switch (kind) {
    case MethodKind::kFp16: f.codec = quant::KvCodec::kNone; break;
    case MethodKind::kFp8: f.codec = quant::KvCodec::kFp8; break;
    case MethodKind::kInt:
      f.codec = quant::KvCodec::kInt;
      if (granularity == IntGranularity::kChannel) f.key_time_group = kIntChannelTokens;
      if (granularity == IntGranularity::kGroup) f.channel_group = group;
      break;
    case MethodKind::kNuq:
      f.codec = quant::KvCodec::kNuq;
      f.value_vector = value_per_head ? quant::ValueVector::kTokenHead : quant::ValueVector::kToken;
      f.outlier_fraction = outlier_fraction();
      f.qnorm = qnorm;
      break;
    case MethodKind::kKivi:  // the residual: R tokens in fp16 until all R are quantized at once
      f.codec = quant::KvCodec::kKivi;
      f.flush = window > 0 ? window : 1;  // -r0: every token quantized at once
      f.key_time_group = group;
      f.channel_group = group;
      break;
    case MethodKind::kSkvq:  // a sliding window of the W latest tokens
      f.codec = quant::KvCodec::kSkvq;
      f.n_recent = window;
      f.channel_group = group;
      break;
  }
  return f;
}

WindowKind MethodSpec::window_kind() const {
  if (kind == MethodKind::kSkvq) return WindowKind::kSliding;
  if (kind == MethodKind::kKivi) return WindowKind::kResidual;
  return WindowKind::kNone;
}

int64_t MethodSpec::key_time_group() const { return kv_format().key_time_group; }

int64_t MethodSpec::fp16_tail(int64_t n_tokens) const {
  return kind == MethodKind::kFp16 ? 0 : kv_format().fp16_tail(n_tokens);
}

int64_t MethodSpec::fp16_tokens(int64_t n_tokens) const {
  return std::min(std::max<int64_t>(n_tokens, 0), n_sink) + fp16_tail(n_tokens);
}

bool MethodSpec::operator==(const MethodSpec& o) const {
  return kind == o.kind && key_bits == o.key_bits && value_bits == o.value_bits &&
         granularity == o.granularity && group == o.group && window == o.window &&
         n_sink == o.n_sink && outlier_percent == o.outlier_percent && qnorm == o.qnorm &&
         value_per_head == o.value_per_head && fp8 == o.fp8 && post_rope == o.post_rope;
}

}  // namespace kvq::methods
