#pragma once
// The admin API's endpoints, in two steps:
//   admit()  decides from the request head alone, before any body byte is read: the endpoint,
//            the token, the Host and CSRF rules of a tokenless admin, the spark name, the query,
//            the declared body length. A refusal is answered without reading the body.
//   serve()  does the admitted call, with the body; it may block on GatewayControl (so the
//            session runs it on a pool unless the call is `inline_safe`).
// No sockets here (docs/admin-server.md); tests/unit/gateway/admin/admin_router_test.cpp drives it directly.
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "gateway/admin/gateway_control.hpp"
#include "gateway/admin/request_head.hpp"
#include "gateway/observability/metrics.hpp"

namespace spark::gateway {

// What the server sends back; the session turns it into HTTP.
struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type/Length
};

// The largest request body accepted, whatever its framing (the largest valid one is a few
// dozen bytes).
inline constexpr std::size_t kAdminMaxBodyBytes = 16 * 1024;

// An admitted request: what serve() is to do.
struct AdminCall {
  enum class Endpoint {
    status_page,
    healthz,
    readyz,
    metrics,
    list,
    spark,
    history,        // GET /api/v1/sparks/NAME/history
    fleet_history,  // GET /api/v1/history
    wake,
    sleep,
    keep_awake,
    clear_keep_awake
  };
  Endpoint endpoint = Endpoint::healthz;
  std::string spark;   // per-spark endpoints: a valid name
  bool wait = false;   // wake?wait=true
  bool force = false;  // sleep?force=true
  // history?hours=N: how far back the intervals, wakes and spans go (1 to 168; the totals
  // always cover 24 h and 7 d). Default: the whole week for one spark, a day for the fleet.
  int hours = 0;

  // Answered on the admin event loop itself: never blocks (no GatewayControl call that waits
  // for the main loop). The probes are, so nothing queued on a pool can delay them.
  bool inline_safe() const;
  // Waits for a wake or a sleep to finish (minutes at most): run apart from quick calls.
  bool long_running() const;
  bool is_probe() const { return endpoint == Endpoint::healthz || endpoint == Endpoint::readyz; }
};

using Admission = std::variant<AdminCall, ApiResponse>;  // the call, or the refusal to send

class AdminRouter {
 public:
  // `token` empty: no token configured (the config allows that on loopback only); then the
  // Host header is checked and mutations must be requests a browser cannot forge.
  AdminRouter(std::string token, GatewayControl& control, const Metrics& metrics);

  Admission admit(const RequestHead& head) const;
  // Blocks on GatewayControl for every call that is not inline_safe(). Throws only if
  // GatewayControl does (a wedged main loop); the session answers that with a 500.
  ApiResponse serve(const AdminCall& call, std::string_view body) const;

 private:
  bool authorized(const RequestHead& head) const;

  std::string token_;
  GatewayControl& control_;
  const Metrics& metrics_;
};

// A JSON answer (invalid UTF-8 in it, such as a bad spark name echoed back, is replaced, never
// an exception).
ApiResponse json_response(int status, const nlohmann::json& body);
// {"error": message, "spark": spark (if not empty)}
ApiResponse json_error(int status, const std::string& message, const std::string& spark = {});

// Compares without an early exit, so response timing says nothing about the token.
bool constant_time_equals(std::string_view a, std::string_view b);

}  // namespace spark::gateway
