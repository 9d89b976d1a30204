#pragma once
// A small, blocking Kubernetes API client over cpp-httplib. It runs only on control-plane
// threads (the watch threads and the control pool), never on the main loop.
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8s/rbac.hpp"

namespace httplib {
class Client;
}

namespace spark::k8s {

using nlohmann::json;

// Where the API server is and how to authenticate. Resolved from the config by credentials.hpp.
struct ApiEndpoint {
  std::string server;     // "https://10.0.0.1:443" or "http://127.0.0.1:8001"; no trailing slash
  std::string base_path;  // a path prefix some proxies put in front of /api ("" usually)
  std::optional<std::filesystem::path> ca_file;      // verifies the server (https)
  bool insecure_skip_tls_verify = false;
  std::optional<std::filesystem::path> token_file;   // re-read when it changes (bound tokens rotate)
  std::optional<std::string> token;                  // a fixed token (kubeconfig)
  std::optional<std::filesystem::path> client_cert_file;  // client certificate auth (kubeconfig)
  std::optional<std::filesystem::path> client_key_file;
  std::string describe() const;  // for logs: the server and the kind of auth, never secrets
};

// An answer other than 2xx, or no answer. `code` is the HTTP status (0: transport error),
// `reason` the Status reason (e.g. "Conflict", "Expired"); what() carries the Status message.
class ApiError : public std::runtime_error {
 public:
  ApiError(int code, std::string reason, const std::string& message)
      : std::runtime_error(message), code_(code), reason_(std::move(reason)) {}
  int code() const { return code_; }
  const std::string& reason() const { return reason_; }
  bool is_conflict() const { return code_ == 409; }
  bool is_not_found() const { return code_ == 404; }
  bool is_expired() const { return code_ == 410; }
  // Worth trying again shortly: no answer (refused, reset, timed out), 429 Too Many Requests,
  // or a 5xx the API server answers while it is overloaded, restarting or behind a flaky proxy.
  bool is_transient() const { return code_ == 0 || code_ == 429 || code_ >= 500; }
  // How long the server asked us to wait (a Retry-After header), if it said.
  std::chrono::seconds retry_after() const { return retry_after_; }
  void set_retry_after(std::chrono::seconds s) { retry_after_ = s; }

 private:
  int code_;
  std::string reason_;
  std::chrono::seconds retry_after_{0};
};

// Why a request got no answer, in words an operator can act on: "timed out after 10s",
// "connection refused", "connection reset by peer", "TLS handshake failed", ...
// `error` is the HTTP client's error, `sys_errno` the errno it left, `waited` how long it took.
std::string describe_transport_error(int error, int sys_errno, std::chrono::milliseconds waited,
                                     std::chrono::milliseconds timeout);

// Turns an error answer into an ApiError, using the Status body when there is one.
ApiError error_from_response(int http_status, std::string_view body, const std::string& what);

class ApiClient {
 public:
  ApiClient(ApiEndpoint endpoint, std::chrono::milliseconds timeout);
  ~ApiClient();

  const ApiEndpoint& endpoint() const { return endpoint_; }

  // Sees every request once it ended: verb (GET, LIST, WATCH, PATCH, POST, PUT, DELETE), HTTP
  // status (0: no answer) and how long it took. Set before the client is shared.
  using Observer = std::function<void(std::string_view verb, int code, double seconds)>;
  void set_observer(Observer observer) { observer_ = std::move(observer); }
  // Requests outside these rules fail before they are sent (k8s/rbac.hpp). Set before sharing.
  void set_permissions(std::vector<PolicyRule> rules) { permissions_ = std::move(rules); }

  json get(const std::string& path);
  json list(const std::string& path);  // GET of a collection
  json post(const std::string& path, const json& body);
  json put(const std::string& path, const json& body);
  // RFC 7386 JSON merge patch (Content-Type: application/merge-patch+json).
  json merge_patch(const std::string& path, const json& patch);
  void remove(const std::string& path);

  // Streams a watch: calls `on_line` for each newline-terminated line until the server ends the
  // stream, `on_line` returns false, or cancel_streams() is called. Throws ApiError when the
  // answer is not 200 or the connection fails (code 0). `idle_timeout` bounds the wait for the
  // next bytes (watches should ask the server for a shorter timeoutSeconds).
  void stream(const std::string& path, const std::function<bool(std::string_view)>& on_line,
              std::chrono::seconds idle_timeout);

  // Ends every stream in progress (shutdown); later streams end at once.
  void cancel_streams();

 private:
  std::unique_ptr<httplib::Client> connect(std::chrono::milliseconds read_timeout) const;
  std::string bearer_token();
  json call(const std::string& method, const std::string& path, const json* body,
            const char* content_type, std::string_view verb);
  void observe(std::string_view verb, int code, std::chrono::steady_clock::time_point started) const;
  void check_permitted(const std::string& method, const std::string& path) const;

  ApiEndpoint endpoint_;
  std::chrono::milliseconds timeout_;
  Observer observer_;
  std::optional<std::vector<PolicyRule>> permissions_;

  std::mutex token_mu_;
  std::string token_;
  std::filesystem::file_time_type token_mtime_{};

  std::mutex streams_mu_;
  bool cancelled_ = false;
  std::vector<httplib::Client*> streams_;
};

// Percent-encodes a query parameter value (label selectors contain '=' and ',').
std::string url_encode(std::string_view value);

}  // namespace spark::k8s
