// Unit tests for gateway/admin/admin_router.hpp: what the admin API decides from a request head
// alone (before any body byte is read) and what each admitted call answers, against a fake
// GatewayControl that records what it was asked.
#include "gateway/admin/admin_router.hpp"

#include <gtest/gtest.h>

#include <chrono>

#include <nlohmann/json.hpp>

namespace spark::gateway {
namespace {

using nlohmann::json;
using Endpoint = AdminCall::Endpoint;

class FakeControl : public GatewayControl {
 public:
  std::vector<std::string> calls;

  std::vector<SparkStatus> sparks() override {
    calls.push_back("sparks");
    return {status("brave-dolphin")};
  }
  std::optional<SparkStatus> spark(const std::string& name) override {
    calls.push_back("spark " + name);
    if (name != "brave-dolphin") return std::nullopt;
    return status(name);
  }
  ControlOutcome wake(const std::string& name, bool wait) override {
    calls.push_back("wake " + name + (wait ? " wait" : ""));
    return {wait ? ControlOutcome::Kind::ok : ControlOutcome::Kind::accepted, {}, status(name)};
  }
  ControlOutcome sleep(const std::string& name, bool force) override {
    calls.push_back("sleep " + name + (force ? " force" : ""));
    return {ControlOutcome::Kind::conflict, "spark has 1 open connection", status(name)};
  }
  ControlOutcome keep_awake(const std::string& name, std::optional<config::Duration> hold) override {
    calls.push_back("keep-awake " + name + (hold ? " " + std::to_string(hold->count()) : " clear"));
    return {ControlOutcome::Kind::ok, {}, status(name)};
  }
  std::optional<SparkHistoryView> history(const std::string& name) override {
    calls.push_back("history " + name);
    if (name != "brave-dolphin") return std::nullopt;
    return SparkHistoryView{name, kNow, awake_an_hour_ago()};
  }
  std::vector<SparkHistoryView> histories() override {
    calls.push_back("histories");
    activity::SparkHistory asleep_all_day;
    asleep_all_day.begin_if_unknown(kNow - std::chrono::hours(48), false);
    return {{"brave-dolphin", kNow, awake_an_hour_ago()}, {"calm-otter", kNow, asleep_all_day}};
  }
  bool ready() override { return is_ready; }
  bool leads_reaper() override { return true; }
  bool is_ready = true;

  // 2026-11-22T15:04:05Z
  static inline const activity::TimePoint kNow{std::chrono::seconds(1'795'359'845)};
  // Served 3 hours ago (asleep), woken 1 hour ago, in use for the first half hour of it.
  static activity::SparkHistory awake_an_hour_ago() {
    using namespace std::chrono_literals;
    activity::SparkHistory h;
    h.begin_if_unknown(kNow - 3h, false);
    h.record_wake(kNow - 1h, "a connection from 100.101.102.103");
    h.record_state(kNow - 1h, true);
    h.in_use_began(kNow - 1h);
    h.in_use_ended(kNow - 30min);
    return h;
  }

 private:
  static SparkStatus status(const std::string& name) {
    SparkStatus s;
    s.name = name;
    s.state = "sleeping";
    s.backend = "process";
    return s;
  }
};

RequestHead head(std::string method, std::string target) {
  RequestHead h;
  h.method = std::move(method);
  h.target = std::move(target);
  h.host = "127.0.0.1:9090";
  return h;
}

RequestHead with_token(RequestHead h, std::string token = "s3cret") {
  h.authorization = "Bearer " + token;
  return h;
}

json body_of(const ApiResponse& r) { return json::parse(r.body); }

AdminCall call(Endpoint endpoint, std::string spark = "", bool wait = false) {
  AdminCall c;
  c.endpoint = endpoint;
  c.spark = std::move(spark);
  c.wait = wait;
  return c;
}

class AdminRouterTest : public ::testing::Test {
 protected:
  FakeControl control;
  AdminRouter with_token_router{"s3cret", control, unscraped_metrics()};
  AdminRouter tokenless{"", control, unscraped_metrics()};

  // The refusal admit() gave; fails the test if the request was admitted.
  ApiResponse refusal(const AdminRouter& router, const RequestHead& h) {
    auto a = router.admit(h);
    if (auto* r = std::get_if<ApiResponse>(&a)) return *r;
    ADD_FAILURE() << h.method << " " << h.target << " was admitted";
    return {};
  }
  AdminCall admitted(const AdminRouter& router, const RequestHead& h) {
    auto a = router.admit(h);
    if (auto* c = std::get_if<AdminCall>(&a)) return *c;
    ADD_FAILURE() << h.method << " " << h.target << " was refused: " << std::get<ApiResponse>(a).body;
    return {};
  }
};

TEST_F(AdminRouterTest, RoutesEveryEndpoint) {
  struct Case {
    const char* method;
    const char* target;
    Endpoint endpoint;
  };
  for (const Case& c : {Case{"GET", "/", Endpoint::status_page}, Case{"GET", "/healthz", Endpoint::healthz},
                        Case{"HEAD", "/healthz", Endpoint::healthz}, Case{"GET", "/readyz", Endpoint::readyz},
                        Case{"GET", "/metrics", Endpoint::metrics}, Case{"GET", "/api/v1/sparks", Endpoint::list},
                        Case{"GET", "/api/v1/sparks/brave-dolphin", Endpoint::spark},
                        Case{"GET", "/api/v1/sparks/brave-dolphin/history", Endpoint::history},
                        Case{"GET", "/api/v1/history", Endpoint::fleet_history},
                        Case{"POST", "/api/v1/sparks/brave-dolphin/wake", Endpoint::wake},
                        Case{"POST", "/api/v1/sparks/brave-dolphin/sleep", Endpoint::sleep},
                        Case{"POST", "/api/v1/sparks/brave-dolphin/keep-awake", Endpoint::keep_awake},
                        Case{"DELETE", "/api/v1/sparks/brave-dolphin/keep-awake", Endpoint::clear_keep_awake}}) {
    const auto call = admitted(with_token_router, with_token(head(c.method, c.target)));
    EXPECT_EQ(call.endpoint, c.endpoint) << c.method << " " << c.target;
  }
  EXPECT_TRUE(control.calls.empty()) << "admission calls nothing";
}

TEST_F(AdminRouterTest, UnknownEndpointsAre404) {
  for (const auto& [method, target] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/nothing"},
                                                        {"POST", "/healthz"},
                                                        {"PUT", "/api/v1/sparks/brave-dolphin/wake"},
                                                        {"GET", "/api/v1/sparks/brave-dolphin/wake"},
                                                        {"GET", "/api/v1/sparks/"},
                                                        {"POST", "/api/v1/sparks/brave-dolphin/bogus"},
                                                        {"GET", "//healthz"},
                                                        {"OPTIONS", "/api/v1/sparks"},
                                                        {"GET", "/api/v1/sparks/brave-dolphin/"}}) {
    const auto r = refusal(with_token_router, with_token(head(method, target)));
    EXPECT_EQ(r.status, 404) << method << " " << target;
    EXPECT_EQ(body_of(r)["error"], "no such endpoint: " + method + " " + target.substr(0, target.find('?')));
  }
}

TEST_F(AdminRouterTest, MutationsNeedTheTokenBeforeAnythingElse) {
  for (const char* auth : {"", "Bearer wrong", "Bearer s3cre", "Bearer s3cretx", "Basic s3cret", "s3cret"}) {
    auto h = head("POST", "/api/v1/sparks/Not_Valid/wake?wait=maybe");
    if (*auth) h.authorization = auth;
    h.content_length = 1 << 30;
    const auto r = refusal(with_token_router, h);
    EXPECT_EQ(r.status, 401) << auth;
    EXPECT_EQ(body_of(r)["spark"], "Not_Valid");
    EXPECT_EQ(r.headers, (std::vector<std::pair<std::string, std::string>>{{"WWW-Authenticate", "Bearer"}}));
  }
  auto lower = head("DELETE", "/api/v1/sparks/brave-dolphin/keep-awake");
  lower.authorization = "bearer s3cret";
  EXPECT_EQ(admitted(with_token_router, lower).endpoint, Endpoint::clear_keep_awake);
  // Reads need no token.
  EXPECT_EQ(admitted(with_token_router, head("GET", "/api/v1/sparks/brave-dolphin")).endpoint, Endpoint::spark);
}

TEST_F(AdminRouterTest, BadNamesAndParametersAre400WithValidJson) {
  for (const char* target : {"/api/v1/sparks/%ff%fe", "/api/v1/sparks/Not_A_Name", "/api/v1/sparks/a%2Fb",
                             "/api/v1/sparks/..", "/api/v1/sparks/%00"}) {
    const auto r = refusal(with_token_router, head("GET", target));
    EXPECT_EQ(r.status, 400) << target;
    const auto body = body_of(r);  // parses: invalid UTF-8 was replaced, not thrown
    EXPECT_EQ(body["error"], "not a valid spark name (an RFC 1123 label)");
    EXPECT_TRUE(body["spark"].is_string());
  }
  for (const char* target :
       {"/api/v1/sparks/%zz", "/api/v1/sparks/x%", "/api/v1/sparks/brave-dolphin/wake?wait=%"}) {
    const auto r = refusal(with_token_router, with_token(head("POST", std::string(target) + "")));
    EXPECT_EQ(r.status, 400) << target;
    EXPECT_NE(body_of(r)["error"].get<std::string>().find("percent-encoding"), std::string::npos);
  }
  EXPECT_EQ(refusal(with_token_router, with_token(head("POST", "/api/v1/sparks/brave-dolphin/wake?wait=1"))).body,
            "{\"error\":\"wait must be true or false\",\"spark\":\"brave-dolphin\"}\n");
  EXPECT_EQ(
      refusal(with_token_router, with_token(head("POST", "/api/v1/sparks/brave-dolphin/sleep?force=yes"))).status,
      400);
  const auto wake = admitted(with_token_router,
                             with_token(head("POST", "/api/v1/sparks/brave-dolphin/wake?wait=true")));
  EXPECT_TRUE(wake.wait);
  EXPECT_TRUE(wake.long_running());
  const auto quick = admitted(with_token_router,
                              with_token(head("POST", "/api/v1/sparks/brave-dolphin/wake?wait=")));
  EXPECT_FALSE(quick.wait);
  EXPECT_FALSE(quick.long_running());
  EXPECT_TRUE(
      admitted(with_token_router, with_token(head("POST", "/api/v1/sparks/brave-dolphin/sleep?force=true")))
          .force);
}

TEST_F(AdminRouterTest, DeclaredBodiesOverTheLimitAre413BeforeReading) {
  auto h = with_token(head("POST", "/api/v1/sparks/brave-dolphin/keep-awake"));
  h.content_length = kAdminMaxBodyBytes + 1;
  EXPECT_EQ(refusal(with_token_router, h).status, 413);
  h.content_length = kAdminMaxBodyBytes;
  EXPECT_EQ(admitted(with_token_router, h).endpoint, Endpoint::keep_awake);
  // Chunked: the length is not known yet; the session reads it under the same limit.
  h.content_length.reset();
  h.chunked = true;
  EXPECT_EQ(admitted(with_token_router, h).endpoint, Endpoint::keep_awake);
  auto probe = head("GET", "/healthz");
  probe.content_length = uint64_t{1} << 40;
  EXPECT_EQ(refusal(with_token_router, probe).status, 413);
}

TEST_F(AdminRouterTest, TokenlessAdminRefusesForeignHosts) {
  auto h = head("GET", "/api/v1/sparks");
  h.host = "evil.example:9090";
  const auto r = refusal(tokenless, h);
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(body_of(r)["error"].get<std::string>().find("evil.example:9090"), std::string::npos);
  h.host = "localhost:9090";
  EXPECT_EQ(admitted(tokenless, h).endpoint, Endpoint::list);
  h.host.reset();  // HTTP/1.0 without Host: not a browser
  EXPECT_EQ(admitted(tokenless, h).endpoint, Endpoint::list);
  // With a token the Host is not checked (a pod IP, a Service name, a port-forward).
  h.host = "spark-gateway-metrics.spark.svc:9090";
  EXPECT_EQ(admitted(with_token_router, h).endpoint, Endpoint::list);
}

TEST_F(AdminRouterTest, TokenlessAdminRefusesMutationsABrowserCouldForge) {
  const std::string wake = "/api/v1/sparks/brave-dolphin/wake";
  for (const char* type :
       {"", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"}) {
    auto h = head("POST", wake);
    if (*type) h.content_type = type;
    EXPECT_EQ(refusal(tokenless, h).status, 403) << type;
  }
  auto json_post = head("POST", wake);
  json_post.content_type = "application/json";
  EXPECT_EQ(admitted(tokenless, json_post).endpoint, Endpoint::wake);
  auto custom = head("POST", wake);
  custom.x_requested_with = true;
  EXPECT_EQ(admitted(tokenless, custom).endpoint, Endpoint::wake);
  auto bearer = head("POST", wake);
  bearer.authorization = "Bearer anything";
  EXPECT_EQ(admitted(tokenless, bearer).endpoint, Endpoint::wake);
  EXPECT_EQ(admitted(tokenless, head("DELETE", "/api/v1/sparks/brave-dolphin/keep-awake")).endpoint,
            Endpoint::clear_keep_awake)
      << "a DELETE always needs a CORS preflight";
  // With a token the token is the protection.
  EXPECT_EQ(admitted(with_token_router, with_token(head("POST", wake))).endpoint, Endpoint::wake);
}

TEST_F(AdminRouterTest, ServeAnswersAsTheApiAlwaysHas) {
  const auto health = with_token_router.serve(call(Endpoint::healthz), "");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "{\"status\":\"ok\"}\n");
  EXPECT_EQ(health.content_type, "application/json");
  EXPECT_EQ(body_of(with_token_router.serve(call(Endpoint::readyz), "")),
            (json{{"status", "ready"}, {"leader", true}}));
  control.is_ready = false;
  const auto unready = with_token_router.serve(call(Endpoint::readyz), "");
  EXPECT_EQ(unready.status, 503);
  EXPECT_EQ(body_of(unready)["status"], "not ready");
  const auto page = with_token_router.serve(call(Endpoint::status_page), "");
  EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
  EXPECT_EQ(page.headers, (std::vector<std::pair<std::string, std::string>>{{"Cache-Control", "no-store"}}));
  EXPECT_EQ(with_token_router.serve(call(Endpoint::metrics), "").content_type,
            "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_TRUE(control.calls.empty()) << "probes, the page and metrics make no GatewayControl call";

  EXPECT_EQ(body_of(with_token_router.serve(call(Endpoint::list), ""))["sparks"][0]["name"], "brave-dolphin");
  const auto ghost = with_token_router.serve(call(Endpoint::spark, "ghost-gnu"), "");
  EXPECT_EQ(ghost.body, "{\"error\":\"no such spark\",\"spark\":\"ghost-gnu\"}\n");
  EXPECT_EQ(ghost.status, 404);
  EXPECT_EQ(with_token_router.serve(call(Endpoint::wake, "brave-dolphin"), "").status, 202);
  EXPECT_EQ(with_token_router.serve(call(Endpoint::wake, "brave-dolphin", true), "").status, 200);
  const auto busy = with_token_router.serve(call(Endpoint::sleep, "brave-dolphin"), "");
  EXPECT_EQ(busy.status, 409);
  EXPECT_EQ(body_of(busy)["status"]["name"], "brave-dolphin");
  EXPECT_EQ(with_token_router.serve(call(Endpoint::keep_awake, "brave-dolphin"), "{\"for\": \"4h\"}").status, 200);
  EXPECT_EQ(with_token_router.serve(call(Endpoint::keep_awake, "brave-dolphin"), "{not json").status, 400);
  EXPECT_EQ(with_token_router.serve(call(Endpoint::clear_keep_awake, "brave-dolphin"), "").status, 200);
  EXPECT_EQ(control.calls,
            (std::vector<std::string>{"sparks", "spark ghost-gnu", "wake brave-dolphin", "wake brave-dolphin wait",
                                      "sleep brave-dolphin", "keep-awake brave-dolphin 14400000",
                                      "keep-awake brave-dolphin clear"}));
}

TEST_F(AdminRouterTest, HistoryIsReadWithoutATokenOverTheHoursAsked) {
  const auto one = admitted(with_token_router, head("GET", "/api/v1/sparks/brave-dolphin/history"));
  EXPECT_EQ(one.endpoint, Endpoint::history);
  EXPECT_EQ(one.spark, "brave-dolphin");
  EXPECT_EQ(one.hours, 168);  // the whole week kept
  EXPECT_EQ(admitted(with_token_router, head("GET", "/api/v1/history")).hours, 24);
  EXPECT_EQ(admitted(with_token_router, head("GET", "/api/v1/history?hours=168")).hours, 168);
  EXPECT_EQ(admitted(tokenless, head("GET", "/api/v1/sparks/brave-dolphin/history?hours=1")).hours, 1);
  for (const char* bad : {"0", "169", "-1", "2h", "1.5", "99999999999"}) {
    const auto r = refusal(with_token_router, head("GET", std::string("/api/v1/history?hours=") + bad));
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_EQ(body_of(r)["error"], "hours must be a whole number from 1 to 168") << bad;
  }
  EXPECT_EQ(refusal(with_token_router, head("GET", "/api/v1/sparks/Bad_Name/history")).status, 400);
  EXPECT_EQ(refusal(with_token_router, with_token(head("POST", "/api/v1/sparks/brave-dolphin/history"))).status,
            404);
  EXPECT_TRUE(control.calls.empty());
}

TEST_F(AdminRouterTest, HistoryAnswersIntervalsWakesSpansAndTotals) {
  auto c = call(Endpoint::history, "brave-dolphin");
  c.hours = 4;
  const auto r = with_token_router.serve(c, "");
  ASSERT_EQ(r.status, 200);
  const auto body = body_of(r);
  EXPECT_EQ(body["name"], "brave-dolphin");
  EXPECT_EQ(body["now"], "2026-11-22T15:04:05.000Z");
  EXPECT_EQ(body["from"], "2026-11-22T11:04:05.000Z");
  // Four hours back: one unknown before it was served, two asleep, one awake (still going).
  EXPECT_EQ(body["intervals"], json::parse(R"([
    {"from": "2026-11-22T11:04:05.000Z", "to": "2026-11-22T12:04:05.000Z", "state": "unknown"},
    {"from": "2026-11-22T12:04:05.000Z", "to": "2026-11-22T14:04:05.000Z", "state": "asleep"},
    {"from": "2026-11-22T14:04:05.000Z", "to": null, "state": "awake"}])"));
  EXPECT_EQ(body["wakes"], json::parse(R"([{"at": "2026-11-22T14:04:05.000Z",
                                             "cause": "a connection from 100.101.102.103"}])"));
  EXPECT_EQ(body["in_use"],
            json::parse(R"([{"from": "2026-11-22T14:04:05.000Z", "to": "2026-11-22T14:34:05.000Z"}])"));
  const auto day = body["totals"]["24h"];
  EXPECT_DOUBLE_EQ(day["awake_seconds"].get<double>(), 3600);
  EXPECT_DOUBLE_EQ(day["asleep_seconds"].get<double>(), 7200);
  EXPECT_DOUBLE_EQ(day["unknown_seconds"].get<double>(), 21 * 3600);
  EXPECT_DOUBLE_EQ(day["slept_share"].get<double>(), 2.0 / 3.0);

  EXPECT_EQ(with_token_router.serve(call(Endpoint::history, "ghost-gnu"), "").status, 404);
}

TEST_F(AdminRouterTest, FleetHistorySumsSparkHours) {
  auto c = call(Endpoint::fleet_history);
  c.hours = 24;
  const auto body = body_of(with_token_router.serve(c, ""));
  ASSERT_EQ(body["sparks"].size(), 2u);
  EXPECT_EQ(body["sparks"][1]["name"], "calm-otter");
  // brave-dolphin: 1 h awake, 2 h asleep of the day; calm-otter: 24 h asleep.
  const auto day = body["totals"]["24h"];
  EXPECT_DOUBLE_EQ(day["awake_seconds"].get<double>(), 3600);
  EXPECT_DOUBLE_EQ(day["asleep_seconds"].get<double>(), 26 * 3600);
  EXPECT_DOUBLE_EQ(day["slept_share"].get<double>(), 26.0 / 27.0);
  const auto week = body["totals"]["7d"];
  EXPECT_DOUBLE_EQ(week["asleep_seconds"].get<double>(), 50 * 3600);
  EXPECT_EQ(control.calls, (std::vector<std::string>{"histories"}));
}

TEST_F(AdminRouterTest, OnlyProbesAndThePageAreServedInline) {
  for (auto e : {Endpoint::healthz, Endpoint::readyz, Endpoint::status_page}) EXPECT_TRUE(call(e).inline_safe());
  for (auto e : {Endpoint::metrics, Endpoint::list, Endpoint::spark, Endpoint::history, Endpoint::fleet_history,
                 Endpoint::wake, Endpoint::sleep, Endpoint::keep_awake, Endpoint::clear_keep_awake})
    EXPECT_FALSE(call(e).inline_safe());
}

TEST(ConstantTimeEquals, ComparesWholeStrings) {
  EXPECT_TRUE(constant_time_equals("abc", "abc"));
  EXPECT_FALSE(constant_time_equals("abc", "abd"));
  EXPECT_FALSE(constant_time_equals("abc", "ab"));
  EXPECT_FALSE(constant_time_equals("", "a"));
  EXPECT_TRUE(constant_time_equals("", ""));
}

}  // namespace
}  // namespace spark::gateway
