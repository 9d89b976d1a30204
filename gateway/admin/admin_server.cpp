#include "gateway/admin/admin_server.hpp"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "config/duration.hpp"
#include "config/spark_name.hpp"
#include "gateway/admin/keep_awake_body.hpp"
#include "gateway/admin/spark_json.hpp"
#include "gateway/admin/status_page.hpp"

namespace spark::gateway {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxBodyBytes = 16 * 1024;  // the largest valid body is a few dozen bytes
constexpr int kRequestTimeoutSeconds = 10;

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump() + "\n", "application/json");
}

void error(httplib::Response& res, int status, const std::string& message,
           const std::string& spark = {}) {
  json body = {{"error", message}};
  if (!spark.empty()) body["spark"] = spark;
  reply(res, status, body);
}

std::string read_token(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("admin.token_file " + file.string() + " cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.front()))) token.erase(0, 1);
  if (token.empty()) throw std::runtime_error("admin.token_file " + file.string() + " is empty");
  return token;
}

int http_status(ControlOutcome::Kind kind) {
  switch (kind) {
    case ControlOutcome::Kind::ok: return 200;
    case ControlOutcome::Kind::accepted: return 202;
    case ControlOutcome::Kind::not_found: return 404;
    case ControlOutcome::Kind::conflict: return 409;
    case ControlOutcome::Kind::failed: return 503;
  }
  return 500;
}

void reply_outcome(httplib::Response& res, const std::string& name, const ControlOutcome& out) {
  const int status = http_status(out.kind);
  if (status >= 400) {
    json body = {{"error", out.error}, {"spark", name}};
    if (out.spark) body["status"] = to_json(*out.spark);
    reply(res, status, body);
    return;
  }
  reply(res, status, out.spark ? to_json(*out.spark) : json{{"spark", name}});
}

}  // namespace

bool constant_time_equals(const std::string& a, const std::string& b) {
  // Length is not secret (it is fixed per deployment); the contents are.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

AdminServer::AdminServer(const config::AdminConfig& cfg, GatewayControl& control,
                         const Metrics& metrics)
    : cfg_(cfg), control_(control), metrics_(metrics), http_(std::make_unique<httplib::Server>()) {
  if (cfg_.token_file) token_ = read_token(*cfg_.token_file);
  install_routes();
}

AdminServer::~AdminServer() { stop(); }

bool AdminServer::authorized(const std::string& header) const {
  if (token_.empty()) return true;  // loopback-only admin without a token (config enforces it)
  static const std::string kPrefix = "Bearer ";
  if (header.size() <= kPrefix.size() || header.compare(0, kPrefix.size(), kPrefix) != 0)
    return false;
  return constant_time_equals(header.substr(kPrefix.size()), token_);
}

void AdminServer::install_routes() {
  auto& http = *http_;
  http.set_payload_max_length(kMaxBodyBytes);
  http.set_read_timeout(kRequestTimeoutSeconds, 0);
  http.set_write_timeout(kRequestTimeoutSeconds, 0);
  http.set_keep_alive_timeout(5);
  http.set_keep_alive_max_count(100);

  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("admin: {}", what);
    error(res, 500, what);
  });
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler already explained itself
    if (res.status == 404) return error(res, 404, "no such endpoint: " + req.method + " " + req.path);
    if (res.status == 413) return error(res, 413, "request body too large");
    if (res.status == 400)
      return error(res, 400, "bad request (a POST needs a Content-Length header: curl -d '' ...)");
    error(res, res.status, "request failed with HTTP " + std::to_string(res.status));
  });

  http.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    reply(res, 200, {{"status", "ok"}});
  });
  http.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    const bool leader = control_.leads_reaper();
    if (control_.ready()) return reply(res, 200, {{"status", "ready"}, {"leader", leader}});
    reply(res, 503, {{"status", "not ready"}, {"leader", leader},
                     {"error", "listeners are not up or the gateway is shutting down"}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.scrape(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_content(kStatusPageHtml, "text/html; charset=utf-8");
  });
  http.Get("/api/v1/sparks", [this](const httplib::Request&, httplib::Response& res) {
    json list = json::array();
    for (const auto& s : control_.sparks()) list.push_back(to_json(s));
    reply(res, 200, {{"sparks", list}});
  });

  // Per-spark routes: the name is validated before anything else sees it.
  auto with_spark = [this](bool mutating, auto handler) {
    return [this, mutating, handler](const httplib::Request& req, httplib::Response& res) {
      const std::string name = req.matches[1];
      if (mutating && !authorized(req.get_header_value("Authorization"))) {
        res.set_header("WWW-Authenticate", "Bearer");
        return error(res, 401, "a valid Authorization: Bearer token is required", name);
      }
      if (!config::is_valid_spark_name(name))
        return error(res, 400, "not a valid spark name (an RFC 1123 label)", name);
      handler(name, req, res);
    };
  };
  const std::string spark_path = "/api/v1/sparks/([^/]+)";
  http.Get(spark_path, with_spark(false, [this](const std::string& name, const httplib::Request&,
                                                httplib::Response& res) {
             if (auto s = control_.spark(name)) return reply(res, 200, to_json(*s));
             error(res, 404, "no such spark", name);
           }));
  http.Post(spark_path + "/wake", with_spark(true, [this](const std::string& name,
                                                          const httplib::Request& req,
                                                          httplib::Response& res) {
              const std::string wait = req.get_param_value("wait");
              if (!wait.empty() && wait != "true" && wait != "false")
                return error(res, 400, "wait must be true or false", name);
              reply_outcome(res, name, control_.wake(name, wait == "true"));
            }));
  http.Post(spark_path + "/sleep", with_spark(true, [this](const std::string& name,
                                                           const httplib::Request& req,
                                                           httplib::Response& res) {
              const std::string force = req.get_param_value("force");
              if (!force.empty() && force != "true" && force != "false")
                return error(res, 400, "force must be true or false", name);
              reply_outcome(res, name, control_.sleep(name, force == "true"));
            }));
  http.Post(spark_path + "/keep-awake", with_spark(true, [this](const std::string& name,
                                                                const httplib::Request& req,
                                                                httplib::Response& res) {
              const auto parsed = parse_keep_awake_body(req.body);
              if (const auto* why = std::get_if<std::string>(&parsed)) return error(res, 400, *why, name);
              const auto hold = std::get<config::Duration>(parsed);
              reply_outcome(res, name, control_.keep_awake(name, hold));
            }));
  http.Delete(spark_path + "/keep-awake", with_spark(true, [this](const std::string& name,
                                                                  const httplib::Request&,
                                                                  httplib::Response& res) {
                reply_outcome(res, name, control_.keep_awake(name, std::nullopt));
              }));
}

void AdminServer::start() {
  if (!http_->bind_to_port(cfg_.listen.host, cfg_.listen.port))
    throw std::runtime_error("admin: cannot listen on " + cfg_.listen.to_string());
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  spdlog::info("admin: serving API, metrics and status page on http://{}/ ({})",
               cfg_.listen.to_string(), token_.empty() ? "no token: loopback only" : "token required for changes");
}

void AdminServer::stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace spark::gateway
