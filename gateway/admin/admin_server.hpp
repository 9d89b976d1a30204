#pragma once
// The admin HTTP server: health, readiness, metrics, the JSON API and the status page.
// Boost.Beast on an io_context and thread of its own, so nothing here can block the main loop
// and no client of the admin port can block the probes (docs/admin-server.md). It reaches
// sparks only through GatewayControl, whose blocking calls run on two small pools.
#include <memory>

#include "config/config.hpp"
#include "gateway/admin/admin_router.hpp"
#include "gateway/admin/gateway_control.hpp"
#include "gateway/observability/metrics.hpp"

namespace spark::gateway {

class AdminServer {
 public:
  // Reads the token file now: an unreadable or empty token file is an error (thrown), never a
  // silently open API.
  AdminServer(const config::AdminConfig& cfg, GatewayControl& control, const Metrics& metrics);
  ~AdminServer();

  // Binds the listen address (throws if it cannot) and serves in the background.
  void start();
  // Closes the listener and every connection, lets GatewayControl calls in progress finish
  // (queued ones are dropped) and stops the thread. After it returns no GatewayControl call is
  // made. Idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace spark::gateway
