#pragma once
// The admin HTTP server: health, readiness, metrics, the JSON API and the status page.
// Runs on its own threads (cpp-httplib's pool); it reaches sparks only through GatewayControl.
#include <memory>
#include <string>
#include <thread>

#include "config/config.hpp"
#include "gateway/admin/gateway_control.hpp"
#include "gateway/observability/metrics.hpp"

namespace httplib {
class Server;
}

namespace spark::gateway {

class AdminServer {
 public:
  // Reads the token file now: an unreadable or empty token file is an error (thrown), never a
  // silently open API.
  AdminServer(const config::AdminConfig& cfg, GatewayControl& control, const Metrics& metrics);
  ~AdminServer();

  // Binds the listen address (throws if it cannot) and serves in the background.
  void start();
  void stop();

 private:
  void install_routes();
  bool authorized(const std::string& authorization_header) const;

  config::AdminConfig cfg_;
  GatewayControl& control_;
  const Metrics& metrics_;
  std::string token_;  // empty: no token configured (loopback only)
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
};

// Compares without an early exit, so response timing says nothing about the token.
bool constant_time_equals(const std::string& a, const std::string& b);

}  // namespace spark::gateway
