// A client of kvq serve (client.h).
#include "kvq/serve/client.h"

#include <chrono>
#include <cstdlib>

#include <httplib.h>

namespace kvq::serve {
namespace {

using Clock = std::chrono::steady_clock;

std::unique_ptr<httplib::Client> connect(const Endpoint& e) {
  auto c = std::make_unique<httplib::Client>(e.host, e.port);
  const auto sec = static_cast<time_t>(e.timeout_s);
  const auto usec = static_cast<time_t>((e.timeout_s - static_cast<double>(sec)) * 1e6);
  c->set_connection_timeout(sec, usec);
  c->set_read_timeout(sec, usec);
  c->set_write_timeout(sec, usec);
  if (!e.api_key.empty()) c->set_bearer_token_auth(e.api_key);
  return c;
}

HttpResult result_of(const httplib::Result& r) {
  HttpResult out;
  if (!r) {
    out.error = httplib::to_string(r.error());
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  return out;
}

}  // namespace

Endpoint parse_url(const std::string& url, const std::string& flag) {
  static const std::string kScheme = "http://";
  const auto bad = [&](const char* why) {
    fail("{}: expected http://HOST:PORT, found '{}' ({})", flag, url, why);
  };
  if (url.compare(0, kScheme.size(), kScheme) != 0) bad("only plain http");
  std::string rest = url.substr(kScheme.size());
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) bad("no port");
  if (rest.find('/') != std::string::npos) bad("no path after the port");
  Endpoint e;
  e.host = rest.substr(0, colon);
  const std::string port = rest.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 1 || p > 65535) bad("port not in 1..65535");
  e.port = static_cast<int>(p);
  return e;
}

HttpResult http_get(const Endpoint& e, const std::string& path) {
  return result_of(connect(e)->Get(path.c_str()));
}

HttpResult http_post_json(const Endpoint& e, const std::string& path, const std::string& body) {
  return result_of(connect(e)->Post(path.c_str(), body, "application/json"));
}

void SseParser::feed(std::string_view bytes,
                     const std::function<void(const std::string& data)>& on_data) {
  buffer_.append(bytes.data(), bytes.size());
  size_t at = 0;
  for (;;) {
    const size_t end = buffer_.find('\n', at);
    if (end == std::string::npos) break;
    std::string line = buffer_.substr(at, end - at);
    at = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {  // the blank line ends an event
      if (has_data_) on_data(data_);
      data_.clear();
      has_data_ = false;
    } else if (line.compare(0, 5, "data:") == 0) {
      std::string value = line.substr(5);
      if (!value.empty() && value[0] == ' ') value.erase(0, 1);
      if (has_data_) data_ += '\n';
      data_ += value;
      has_data_ = true;
    }  // comments (":") and other fields are not data
  }
  buffer_.erase(0, at);
}

StreamResult stream_completion(const Endpoint& e, nlohmann::json body,
                               const std::function<bool(const StreamResult&)>& keep_reading) {
  body["stream"] = true;
  StreamResult out;
  const Clock::time_point t0 = Clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  SseParser parser;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.set_header("Accept", "text/event-stream");
  req.response_handler = [&](const httplib::Response& r) {
    out.status = r.status;
    return true;
  };
  const auto on_data = [&](const std::string& data) {
    if (data == "[DONE]") {
      out.done = true;
      return;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(data);
    } catch (const nlohmann::json::exception&) {
      out.error = "not JSON: " + data.substr(0, 80);
      return;
    }
    if (j.contains("error")) {
      out.error = j["error"].value("message", j.dump());
      return;
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      out.has_usage = true;
      out.usage = {j["usage"].value("prompt_tokens", int64_t{-1}),
                   j["usage"].value("completion_tokens", int64_t{-1})};
    }
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return;
    const nlohmann::json& c = j["choices"][0];
    if (c.contains("text") && c["text"].is_string() && !c["text"].get<std::string>().empty()) {
      if (out.ttft_s < 0) out.ttft_s = elapsed();
      out.pieces.push_back(c["text"].get<std::string>());
      out.text += out.pieces.back();
    }
    if (c.contains("finish_reason") && c["finish_reason"].is_string()) {
      out.finish_reason = c["finish_reason"].get<std::string>();
    }
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (out.status != 200) {
      out.body.append(data, n);
      return true;
    }
    const size_t pieces = out.pieces.size();
    parser.feed(std::string_view(data, n), on_data);
    if (keep_reading && out.pieces.size() > pieces && !keep_reading(out)) {
      out.stopped = true;
      return false;
    }
    return true;
  };
  auto client = connect(e);
  const httplib::Result r = client->send(req);
  out.total_s = elapsed();
  if (!r && !out.stopped) out.error = httplib::to_string(r.error());
  if (out.status != 200 && out.status != -1) {
    try {
      out.error = nlohmann::json::parse(out.body).at("error").at("message").get<std::string>();
    } catch (const nlohmann::json::exception&) {
      out.error = out.body;
    }
  }
  return out;
}

double metric_value(const std::string& text, const std::string& name) {
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = std::min(text.find('\n', at), text.size());
    if (text.compare(at, name.size(), name) == 0 && at + name.size() < end &&
        text[at + name.size()] == ' ') {
      return std::strtod(text.c_str() + at + name.size() + 1, nullptr);
    }
    at = end + 1;
  }
  return -1;
}

}  // namespace kvq::serve
