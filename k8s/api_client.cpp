#include "k8s/api_client.hpp"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

namespace spark::k8s {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ApiError(0, "TokenUnreadable", "cannot read the token file " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trim(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

constexpr std::size_t kMaxEventBytes = 16 * 1024 * 1024;

}  // namespace

std::string ApiEndpoint::describe() const {
  std::string auth = "no credentials";
  if (client_cert_file) auth = "a client certificate";
  if (token) auth = "a token";
  if (token_file) auth = "the token in " + token_file->string();
  return server + base_path + " with " + auth;
}

std::string url_encode(std::string_view value) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

ApiError error_from_response(int http_status, std::string_view body, const std::string& what) {
  // The API answers errors with a Status object: {"kind":"Status","reason":"Conflict",
  // "message":"Operation cannot be fulfilled on ...","code":409}.
  std::string reason = "HTTP " + std::to_string(http_status);
  std::string message;
  try {
    const auto status = json::parse(body);
    if (status.is_object() && status.value("kind", "") == "Status") {
      reason = status.value("reason", reason);
      message = status.value("message", "");
    }
  } catch (const json::exception&) {
  }
  if (message.empty()) {
    message = std::string(body.substr(0, 200));
    if (message.empty()) message = "HTTP " + std::to_string(http_status);
  }
  return ApiError(http_status, reason, what + ": " + std::to_string(http_status) + " " + reason + ": " + message);
}

std::string describe_transport_error(int error, int sys_errno, std::chrono::milliseconds waited,
                                     std::chrono::milliseconds timeout) {
  using httplib::Error;
  const auto kind = static_cast<Error>(error);
  const bool timed_out = sys_errno == ETIMEDOUT || sys_errno == EAGAIN || sys_errno == EWOULDBLOCK ||
                         kind == Error::ConnectionTimeout || waited >= timeout - std::chrono::milliseconds(50);
  const std::string after = " after " + std::to_string(waited.count()) + " ms";
  switch (kind) {
    case Error::SSLConnection: return "TLS handshake failed";
    case Error::SSLLoadingCerts: return "cannot load the TLS certificates";
    case Error::SSLServerVerification: return "the server's TLS certificate does not verify";
    case Error::Canceled: return "cancelled";
    default: break;
  }
  if (timed_out) return "timed out" + after;
  if (sys_errno == ECONNREFUSED) return "connection refused";
  if (sys_errno == ECONNRESET || sys_errno == EPIPE) return "connection reset by peer" + after;
  if (sys_errno == EHOSTUNREACH || sys_errno == ENETUNREACH) return "no route to the API server";
  if (kind == Error::Connection) return "cannot connect";
  if (kind == Error::Read) return "the connection closed before an answer" + after;
  if (kind == Error::Write) return "the connection closed while sending" + after;
  return "no answer (" + httplib::to_string(kind) + ")" + after;
}

static std::chrono::seconds retry_after_of(const httplib::Response& res) {
  // Only the delta-seconds form: the API server sends "Retry-After: 1" with 429 and 503.
  const auto text = res.get_header_value("Retry-After");
  if (text.empty() || text.size() > 6 || !std::all_of(text.begin(), text.end(), ::isdigit)) return {};
  return std::chrono::seconds(std::stoi(text));
}

ApiClient::ApiClient(ApiEndpoint endpoint, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), timeout_(timeout) {}

ApiClient::~ApiClient() { cancel_streams(); }

std::unique_ptr<httplib::Client> ApiClient::connect(std::chrono::milliseconds read_timeout) const {
  std::unique_ptr<httplib::Client> client;
  if (endpoint_.client_cert_file && endpoint_.client_key_file)
    client = std::make_unique<httplib::Client>(endpoint_.server, endpoint_.client_cert_file->string(),
                                               endpoint_.client_key_file->string());
  else
    client = std::make_unique<httplib::Client>(endpoint_.server);
  if (!client->is_valid()) throw ApiError(0, "BadEndpoint", "cannot use API server " + endpoint_.server);
  client->set_connection_timeout(std::min(timeout_, std::chrono::milliseconds(5000)));
  client->set_read_timeout(read_timeout);
  client->set_write_timeout(timeout_);
  if (endpoint_.server.rfind("https://", 0) == 0) {
    if (endpoint_.ca_file) client->set_ca_cert_path(endpoint_.ca_file->string());
    client->enable_server_certificate_verification(!endpoint_.insecure_skip_tls_verify);
  }
  return client;
}

std::string ApiClient::bearer_token() {
  if (endpoint_.token) return *endpoint_.token;
  if (!endpoint_.token_file) return {};
  std::lock_guard lock(token_mu_);
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(*endpoint_.token_file, ec);
  if (token_.empty() || ec || mtime != token_mtime_) {
    token_ = trim(read_file(*endpoint_.token_file));
    token_mtime_ = mtime;
  }
  return token_;
}

void ApiClient::observe(std::string_view verb, int code,
                        std::chrono::steady_clock::time_point started) const {
  if (observer_)
    observer_(verb, code, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

void ApiClient::check_permitted(const std::string& method, const std::string& path) const {
  if (!permissions_) return;
  const auto request = request_attributes(method, path);
  if (request && permits(*permissions_, *request)) return;
  throw ApiError(0, "NotDeclared",
                 method + " " + path + ": not in the gateway's RBAC rules (k8s/rbac.cpp); "
                 "declare it there so the deployment's Role grants it");
}

json ApiClient::call(const std::string& method, const std::string& path, const json* body,
                     const char* content_type, std::string_view verb) {
  const std::string what = method + " " + path;
  check_permitted(method, path);
  for (int attempt = 0;; ++attempt) {
    const auto started = std::chrono::steady_clock::now();
    httplib::Request req;
    req.method = method;
    req.path = endpoint_.base_path + path;
    req.headers.emplace("Accept", "application/json");
    req.headers.emplace("User-Agent", "spark-gateway");
    if (const auto token = bearer_token(); !token.empty())
      req.headers.emplace("Authorization", "Bearer " + token);
    if (body) {
      req.body = body->dump();
      req.headers.emplace("Content-Type", content_type);
    }
    auto client = connect(timeout_);
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    errno = 0;
    const bool answered = client->send(req, res, error);
    const int sys_errno = errno;
    observe(verb, answered ? res.status : 0, started);
    if (!answered) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - started);
      throw ApiError(0, "Unreachable",
                     what + ": " + describe_transport_error(static_cast<int>(error), sys_errno, waited, timeout_));
    }
    if (res.status == 401 && attempt == 0 && endpoint_.token_file) {
      // A bound token may have just rotated: read the file again and retry once.
      std::lock_guard lock(token_mu_);
      token_.clear();
      continue;
    }
    if (res.status < 200 || res.status > 299) {
      auto e = error_from_response(res.status, res.body, what);
      e.set_retry_after(retry_after_of(res));
      throw e;
    }
    if (res.body.empty()) return json::object();
    try {
      return json::parse(res.body);
    } catch (const json::parse_error& e) {
      throw ApiError(res.status, "BadResponse", what + ": the answer is not JSON: " + e.what());
    }
  }
}

json ApiClient::get(const std::string& path) { return call("GET", path, nullptr, nullptr, "GET"); }
json ApiClient::list(const std::string& path) { return call("GET", path, nullptr, nullptr, "LIST"); }
json ApiClient::post(const std::string& path, const json& body) {
  return call("POST", path, &body, "application/json", "POST");
}
json ApiClient::put(const std::string& path, const json& body) {
  return call("PUT", path, &body, "application/json", "PUT");
}
json ApiClient::merge_patch(const std::string& path, const json& patch) {
  return call("PATCH", path, &patch, "application/merge-patch+json", "PATCH");
}
void ApiClient::remove(const std::string& path) { call("DELETE", path, nullptr, nullptr, "DELETE"); }

void ApiClient::stream(const std::string& path,
                       const std::function<bool(std::string_view)>& on_line,
                       std::chrono::seconds idle_timeout) {
  const std::string what = "GET " + path;
  check_permitted("GET", path);
  auto client = connect(std::chrono::duration_cast<std::chrono::milliseconds>(idle_timeout));
  {
    std::lock_guard lock(streams_mu_);
    if (cancelled_) return;
    streams_.push_back(client.get());
  }
  struct Unregister {
    ApiClient& self;
    httplib::Client* client;
    ~Unregister() {
      std::lock_guard lock(self.streams_mu_);
      std::erase(self.streams_, client);
    }
  } unregister{*this, client.get()};

  httplib::Request req;
  req.method = "GET";
  req.path = endpoint_.base_path + path;
  req.headers.emplace("Accept", "application/json");
  req.headers.emplace("User-Agent", "spark-gateway");
  if (const auto token = bearer_token(); !token.empty())
    req.headers.emplace("Authorization", "Bearer " + token);
  int status = 0;
  std::string error_body;
  std::string pending;  // a line not yet complete
  bool stopped_by_us = false;
  bool too_big = false;  // a bound on memory: no event is anywhere near this
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    if (status != 200) {
      if (error_body.size() < 64 * 1024) error_body.append(data, n);
      return true;
    }
    pending.append(data, n);
    std::size_t start = 0;
    for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      if (nl > start && !on_line(std::string_view(pending).substr(start, nl - start))) {
        stopped_by_us = true;
        return false;
      }
    }
    pending.erase(0, start);
    if (pending.size() > kMaxEventBytes) {
      too_big = true;
      return false;
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const auto started = std::chrono::steady_clock::now();
  const bool ok = client->send(req, res, error);
  observe("WATCH", status, started);
  if (stopped_by_us) return;
  if (too_big) throw ApiError(status, "BadResponse", what + ": a watch event larger than 16 MiB");
  {
    std::lock_guard lock(streams_mu_);
    if (cancelled_) return;
  }
  if (status != 0 && status != 200)
    throw error_from_response(status, error_body.empty() ? res.body : error_body, what);
  if (!ok)
    throw ApiError(0, "Unreachable",
                   what + ": " + describe_transport_error(static_cast<int>(error), 0, {}, std::chrono::milliseconds::max()));
}

void ApiClient::cancel_streams() {
  std::lock_guard lock(streams_mu_);
  cancelled_ = true;
  for (auto* c : streams_) c->stop();
}

}  // namespace spark::k8s
