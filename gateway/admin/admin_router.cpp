#include "gateway/admin/admin_router.hpp"

#include <charconv>

#include <nlohmann/json.hpp>

#include "config/spark_name.hpp"
#include "gateway/admin/keep_awake_body.hpp"
#include "gateway/admin/spark_json.hpp"
#include "gateway/admin/status_page.hpp"

namespace spark::gateway {
namespace {

using nlohmann::json;
using Endpoint = AdminCall::Endpoint;
// The history kept (activity::kHistoryWindow), in hours: the longest window one may ask for.
constexpr int kHistoryHours = static_cast<int>(activity::kHistoryWindow.count());

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

ApiResponse reply_outcome(const std::string& name, const ControlOutcome& out) {
  const int status = http_status(out.kind);
  if (status >= 400) {
    json body = {{"error", out.error}, {"spark", name}};
    if (out.spark) body["status"] = to_json(*out.spark);
    return json_response(status, body);
  }
  return json_response(status, out.spark ? to_json(*out.spark) : json{{"spark", name}});
}

// A request a web page can make a browser send to any address without a CORS preflight (which
// this server never grants): a POST with no Authorization or custom header and a form or
// text content type, or none. DELETE always needs a preflight.
bool forgeable_by_a_browser(const RequestHead& head) {
  if (head.method != "POST") return false;
  if (head.authorization || head.x_requested_with) return false;
  return !(head.content_type && is_json_media_type(*head.content_type));
}

// "true", "false", or absent/empty (false); anything else is a 400.
std::optional<bool> flag(const RequestTarget& target, std::string_view key) {
  const auto value = target.param(key);
  if (!value || value->empty() || *value == "false") return false;
  if (*value == "true") return true;
  return std::nullopt;
}

// history?hours=N: a whole number of hours from 1 to a week; absent is `fallback`.
std::optional<int> window_hours(const RequestTarget& target, int fallback) {
  const auto value = target.param("hours");
  if (!value || value->empty()) return fallback;
  int hours = 0;
  const auto* end = value->data() + value->size();
  const auto [ptr, ec] = std::from_chars(value->data(), end, hours);
  if (ec != std::errc() || ptr != end || hours < 1 || hours > kHistoryHours) return std::nullopt;
  return hours;
}

// The endpoint a method and path name, if any.
std::optional<Endpoint> route(const std::vector<std::string>& seg, const std::string& method) {
  const bool read = method == "GET" || method == "HEAD";
  const bool api = seg.size() >= 3 && seg[0] == "api" && seg[1] == "v1";
  const bool spark_api = api && seg[2] == "sparks";
  if (seg.size() == 1 && read) {
    if (seg[0].empty()) return Endpoint::status_page;
    if (seg[0] == "healthz") return Endpoint::healthz;
    if (seg[0] == "readyz") return Endpoint::readyz;
    if (seg[0] == "metrics") return Endpoint::metrics;
    return std::nullopt;
  }
  if (spark_api && seg.size() == 3 && read) return Endpoint::list;
  if (api && seg.size() == 3 && seg[2] == "history" && read) return Endpoint::fleet_history;
  if (!spark_api || seg.size() < 4 || seg[3].empty()) return std::nullopt;
  if (seg.size() == 4 && read) return Endpoint::spark;
  if (seg.size() != 5) return std::nullopt;
  const std::string& action = seg[4];
  if (action == "history" && read) return Endpoint::history;
  if (action == "wake" && method == "POST") return Endpoint::wake;
  if (action == "sleep" && method == "POST") return Endpoint::sleep;
  if (action == "keep-awake" && method == "POST") return Endpoint::keep_awake;
  if (action == "keep-awake" && method == "DELETE") return Endpoint::clear_keep_awake;
  return std::nullopt;
}

// The query parameters of the endpoint `call` is for, into `call`; a 400 for a bad one.
std::optional<ApiResponse> read_parameters(const RequestTarget& target, AdminCall& call) {
  if (call.endpoint == Endpoint::wake) {
    const auto wait = flag(target, "wait");
    if (!wait) return json_error(400, "wait must be true or false", call.spark);
    call.wait = *wait;
  }
  if (call.endpoint == Endpoint::sleep) {
    const auto force = flag(target, "force");
    if (!force) return json_error(400, "force must be true or false", call.spark);
    call.force = *force;
  }
  if (call.endpoint == Endpoint::history || call.endpoint == Endpoint::fleet_history) {
    const auto hours = window_hours(target, call.endpoint == Endpoint::history ? kHistoryHours : 24);
    if (!hours)
      return json_error(400, "hours must be a whole number from 1 to " + std::to_string(kHistoryHours),
                        call.spark);
    call.hours = *hours;
  }
  return std::nullopt;
}

}  // namespace

bool AdminCall::inline_safe() const {
  return endpoint == Endpoint::healthz || endpoint == Endpoint::readyz || endpoint == Endpoint::status_page;
}

bool AdminCall::long_running() const {
  return (endpoint == Endpoint::wake && wait) || endpoint == Endpoint::sleep;
}

ApiResponse json_response(int status, const json& body) {
  ApiResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  return r;
}

ApiResponse json_error(int status, const std::string& message, const std::string& spark) {
  json body = {{"error", message}};
  if (!spark.empty()) body["spark"] = spark;
  return json_response(status, body);
}

bool constant_time_equals(std::string_view a, std::string_view b) {
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

AdminRouter::AdminRouter(std::string token, GatewayControl& control, const Metrics& metrics)
    : token_(std::move(token)), control_(control), metrics_(metrics) {}

bool AdminRouter::authorized(const RequestHead& head) const {
  if (token_.empty()) return true;  // loopback-only admin without a token (config enforces it)
  if (!head.authorization) return false;
  const auto credentials = bearer_credentials(*head.authorization);
  return credentials && constant_time_equals(*credentials, token_);
}

Admission AdminRouter::admit(const RequestHead& head) const {
  std::string why;
  const auto target = parse_request_target(head.target, &why);
  if (!target) return json_error(400, why);
  if (token_.empty() && head.host && !is_loopback_host(*head.host))
    return json_error(403,
                      "this admin listener has no token, so it answers only requests addressed to a loopback "
                      "name, not Host \"" +
                          printable(*head.host) +
                          "\" (a web page could otherwise reach it by rebinding its DNS name to 127.0.0.1)");

  const auto& seg = target->segments;
  const bool spark_api = seg.size() >= 3 && seg[0] == "api" && seg[1] == "v1" && seg[2] == "sparks";
  AdminCall call;
  const auto endpoint = route(seg, head.method);
  if (!endpoint) return json_error(404, "no such endpoint: " + head.method + " " + target->path);
  call.endpoint = *endpoint;

  if (spark_api && seg.size() >= 4) {
    call.spark = seg[3];
    const bool mutating = seg.size() == 5 && call.endpoint != Endpoint::history;
    if (mutating && !authorized(head)) {
      auto refusal = json_error(401, "a valid Authorization: Bearer token is required", call.spark);
      refusal.headers.emplace_back("WWW-Authenticate", "Bearer");
      return refusal;
    }
    if (mutating && token_.empty() && forgeable_by_a_browser(head))
      return json_error(403,
                        "any web page could make a browser send this request: without an admin token, "
                        "changes need Content-Type: application/json or an X-Requested-With header "
                        "(the CLI sends the former)",
                        call.spark);
    if (!config::is_valid_spark_name(call.spark))
      return json_error(400, "not a valid spark name (an RFC 1123 label)", call.spark);
  }
  if (auto refusal = read_parameters(*target, call)) return *refusal;
  if (head.content_length && *head.content_length > kAdminMaxBodyBytes)
    return json_error(413, "request body too large");
  return call;
}

ApiResponse AdminRouter::serve(const AdminCall& call, std::string_view body) const {
  switch (call.endpoint) {
    case Endpoint::healthz: return json_response(200, {{"status", "ok"}});
    case Endpoint::readyz: {
      const bool leader = control_.leads_reaper();
      if (control_.ready()) return json_response(200, {{"status", "ready"}, {"leader", leader}});
      return json_response(503, {{"status", "not ready"},
                                 {"leader", leader},
                                 {"error", "listeners are not up or the gateway is shutting down"}});
    }
    case Endpoint::status_page:
      return {200, "text/html; charset=utf-8", kStatusPageHtml, {{"Cache-Control", "no-store"}}};
    case Endpoint::metrics: return {200, "text/plain; version=0.0.4; charset=utf-8", metrics_.scrape(), {}};
    case Endpoint::list: {
      json list = json::array();
      for (const auto& s : control_.sparks()) list.push_back(to_json(s));
      return json_response(200, {{"sparks", list}});
    }
    case Endpoint::spark:
      if (auto s = control_.spark(call.spark)) return json_response(200, to_json(*s));
      return json_error(404, "no such spark", call.spark);
    case Endpoint::history:
      if (auto h = control_.history(call.spark))
        return json_response(200, history_to_json(*h, std::chrono::hours(call.hours)));
      return json_error(404, "no such spark", call.spark);
    case Endpoint::fleet_history:
      return json_response(200, fleet_history_to_json(control_.histories(), std::chrono::hours(call.hours)));
    case Endpoint::wake: return reply_outcome(call.spark, control_.wake(call.spark, call.wait));
    case Endpoint::sleep: return reply_outcome(call.spark, control_.sleep(call.spark, call.force));
    case Endpoint::keep_awake: {
      const auto parsed = parse_keep_awake_body(body);
      if (const auto* why = std::get_if<std::string>(&parsed)) return json_error(400, *why, call.spark);
      return reply_outcome(call.spark, control_.keep_awake(call.spark, std::get<config::Duration>(parsed)));
    }
    case Endpoint::clear_keep_awake:
      return reply_outcome(call.spark, control_.keep_awake(call.spark, std::nullopt));
  }
  return json_error(500, "internal error: unknown endpoint");
}

}  // namespace spark::gateway
