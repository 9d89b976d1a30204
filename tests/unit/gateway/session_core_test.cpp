// Unit tests for gateway/session_core.hpp: what every way into a spark shares. The caps and their
// refusals (counted as `rejected`), the drain's refusal, the open/closed accounting, the forced
// closes (one spark's sessions, or all), and reach(): the spark's upstream through its wake, a
// failure counted by its outcome.
//
// Sparks are real Spark objects on the test's io_context (run on this thread by run_until) with a
// control pool and a FakeBackend whose "sshd" is a real loopback acceptor (fake_backend.hpp).
// Sessions are plain LiveSessions: the core does not care which way in they came.
//
// GCC 12 coroutine rules followed here (see gateway/asio.hpp): coroutines are free functions
// taking their arguments by value, spawned with named variables; no temporaries with
// non-trivial destructors inside a co_await expression; no capturing lambda coroutines.
#include "gateway/session_core.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "activity/activity_tracker.hpp"
#include "config/config.hpp"
#include "fake_backend.hpp"
#include "gateway/asio.hpp"
#include "gateway/backend/backend.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/spark.hpp"
#include "run_until.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using ::testing::HasSubstr;

// A session of any kind (a TCP connection, a jump session): the core only sees LiveSession.
// With `core`, force_close() ends it at once (as a session that never spliced does), which is
// what close_all()/close_spark() must survive while they walk the registry.
class TestSession final : public LiveSession {
 public:
  explicit TestSession(std::shared_ptr<Spark> spark, SessionCore* core = nullptr)
      : LiveSession(std::move(spark)), core_(core) {}
  void force_close() override {
    ++force_closed;
    if (core_) core_->close(*this, ConnectionEnd::error);
  }
  int force_closed = 0;

 private:
  SessionCore* core_;
};

// A backend whose sshd answers the wake's probe and is gone right after: the first observe()
// after each wake() shows the target, every later one shows the spark started but with no
// sshd to reach (a spark crash-looping right after each start). Single-threaded use on the
// main loop apart from wake()/sleep() on the pool, hence the atomics.
class AnswersOnlyTheProbe final : public Backend {
 public:
  explicit AnswersOnlyTheProbe(config::Address target) : target_(std::move(target)) {}
  std::string_view kind() const override { return "fake"; }
  void wake(const WakeRequest&) override {
    ++wakes;
    fresh_ = true;
    started_ = true;
  }
  void sleep(const SleepRequest&) override { started_ = false; }
  Observation observe() const override {
    if (!started_) return {Observation::State::asleep, std::nullopt, {}};
    if (fresh_.exchange(false)) return {Observation::State::started, target_, {}};
    return {Observation::State::started, std::nullopt, "sshd is not answering"};
  }
  bool may_run_without_us() const override { return false; }

  std::atomic<int> wakes{0};

 private:
  config::Address target_;
  mutable std::atomic<bool> fresh_{false};
  std::atomic<bool> started_{false};
};

struct Reaches {
  std::vector<Reached> results;
};

awaitable<void> reach_spark(std::shared_ptr<Spark> spark, std::shared_ptr<Reaches> out) {
  std::string cause = "a connection from 100.64.0.1";
  Reached r = co_await SessionCore::reach(*spark, std::move(cause));
  out->results.push_back(std::move(r));
}

class SessionCoreTest : public ::testing::Test {
 protected:
  // One fake spark: its backend's control and its sshd's acceptor (bound, listening once woken).
  struct Fake {
    std::shared_ptr<FakeControl> control = std::make_shared<FakeControl>();
    std::unique_ptr<tcp::acceptor> sshd;
    std::shared_ptr<Spark> spark;
  };

  void TearDown() override {
    // Let what is still in flight (a wake's probes, a failed wake's stop) finish, bounded.
    work_.reset();
    io_.restart();
    io_.run_for(5s);
    pool_.join();
  }

  config::SparkConfig spark_config(const std::string& name, std::optional<int> max_connections,
                                   std::optional<int> max_waiting, std::chrono::milliseconds wake_timeout,
                                   const config::Address& target) {
    config::SparkConfig cfg;
    cfg.name = name;
    cfg.listen = config::Address{"127.0.0.1", 0};
    cfg.idle_timeout = config::MaybeNever{std::chrono::hours(2)};
    cfg.wake_timeout = wake_timeout;
    cfg.max_connections = max_connections;
    cfg.max_waiting = max_waiting;
    config::ProcessBackendConfig backend;
    backend.command = {"/bin/false"};
    backend.target = target;
    cfg.backend = backend;
    return cfg;
  }

  Fake& make_spark(const std::string& name, std::optional<int> max_connections = std::nullopt,
                   std::optional<int> max_waiting = std::nullopt, std::chrono::milliseconds wake_timeout = 5s) {
    auto f = std::make_unique<Fake>();
    f->sshd = std::make_unique<tcp::acceptor>(io_);
    f->sshd->open(tcp::v4());
    f->sshd->bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // refused until woken
    f->control->acceptor = f->sshd.get();
    f->control->address = config::Address{"127.0.0.1", f->sshd->local_endpoint().port()};
    f->spark = std::make_shared<Spark>(SparkEnvironment{io_.get_executor(), pool_, tracker_, &metrics_},
                                       spark_config(name, max_connections, max_waiting, wake_timeout,
                                                    f->control->address),
                                       std::make_unique<FakeBackend>(f->control));
    fakes_.push_back(std::move(f));
    return *fakes_.back();
  }

  // Runs the main loop until `done()` holds or `limit` passes; returns done().
  bool run_until(const std::function<bool()>& done, steady_clock::duration limit = 10s) {
    return test::run_until(io_, done, limit);
  }

  std::shared_ptr<Reaches> spawn_reach(const std::shared_ptr<Spark>& spark) {
    auto out = std::make_shared<Reaches>();
    asio::co_spawn(io_, reach_spark(spark, out), asio::detached);
    return out;
  }

  int waiting_everywhere() const {
    int n = 0;
    for (const auto& f : fakes_) n += f->spark->waiting_connections();
    return n;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  asio::thread_pool pool_{2};
  activity::ActivityTracker tracker_;
  Metrics metrics_{"test"};  // this test's own: counts never leak between tests
  config::Config cfg_;
  std::vector<std::unique_ptr<Fake>> fakes_;
  SessionCore core_{cfg_, [this] { return waiting_everywhere(); }};
};

// ---------------------------------------------------------------------------
// refuse(): the caps
// ---------------------------------------------------------------------------

TEST_F(SessionCoreTest, PerSparkMaxConnectionsCountsEveryOpenSessionAndRejectsTheNext) {
  auto& a = make_spark("brave-dolphin", /*max_connections=*/2);
  auto& b = make_spark("calm-otter", /*max_connections=*/2);
  TestSession first(a.spark), second(a.spark), elsewhere(b.spark);

  ASSERT_EQ(core_.refuse(*a.spark, "100.64.0.1"), std::nullopt);
  core_.open(first);
  ASSERT_EQ(core_.refuse(*a.spark, "100.64.0.1"), std::nullopt);
  core_.open(second);
  core_.open(elsewhere);

  const auto why = core_.refuse(*a.spark, "100.64.0.3");
  ASSERT_TRUE(why.has_value()) << "a third session was admitted to a spark capped at 2";
  EXPECT_EQ(*why, "2 connections open (sparks[].max_connections 2)");
  EXPECT_EQ(a.spark->metrics().connections_rejected.Value(), 1);
  // The cap is the spark's own: the other spark (1 of 2 open) still admits, and nothing is
  // counted against it.
  EXPECT_EQ(core_.refuse(*b.spark, "100.64.0.3"), std::nullopt);
  EXPECT_EQ(b.spark->metrics().connections_rejected.Value(), 0);

  // A session closing frees its slot.
  core_.close(first, ConnectionEnd::closed);
  EXPECT_EQ(core_.refuse(*a.spark, "100.64.0.3"), std::nullopt);
  EXPECT_EQ(a.spark->metrics().connections_rejected.Value(), 1);
  core_.close(second, std::nullopt);
  core_.close(elsewhere, std::nullopt);
}

TEST_F(SessionCoreTest, DefaultMaxConnectionsAppliesToASparkWithoutItsOwn) {
  cfg_.default_max_connections = 1;
  auto& a = make_spark("brave-dolphin");
  TestSession s(a.spark);
  core_.open(s);
  const auto why = core_.refuse(*a.spark, "100.64.0.1");
  ASSERT_TRUE(why.has_value());
  EXPECT_EQ(*why, "1 connection open (defaults.max_connections 1)");
  EXPECT_EQ(a.spark->metrics().connections_rejected.Value(), 1);
  core_.close(s, std::nullopt);
}

TEST_F(SessionCoreTest, GatewayWideMaxConnectionsCountsTheCoresSessionsOfEverySpark) {
  cfg_.max_connections = 2;
  auto& a = make_spark("brave-dolphin");
  auto& b = make_spark("calm-otter");
  TestSession s1(a.spark), s2(a.spark);
  core_.open(s1);
  core_.open(s2);
  const auto why = core_.refuse(*b.spark, "100.64.0.1");
  ASSERT_TRUE(why.has_value()) << "the gateway-wide cap did not count the core's open sessions";
  EXPECT_EQ(*why, "2 connections open in the gateway (limits.max_connections 2)");
  EXPECT_EQ(b.spark->metrics().connections_rejected.Value(), 1);
  EXPECT_EQ(a.spark->metrics().connections_rejected.Value(), 0);
  core_.close(s1, std::nullopt);
  EXPECT_EQ(core_.refuse(*b.spark, "100.64.0.1"), std::nullopt);
  core_.close(s2, std::nullopt);
}

TEST_F(SessionCoreTest, MaxWaitingRefusesWhileTheWakeIsPendingAndNotOnceTheSparkRuns) {
  auto& a = make_spark("brave-dolphin", std::nullopt, /*max_waiting=*/1, /*wake_timeout=*/10s);
  auto& b = make_spark("calm-otter", std::nullopt, /*max_waiting=*/1);
  a.control->listen_on_wake = false;  // its sshd does not answer yet: the connection waits

  TestSession waiting(a.spark);
  ASSERT_EQ(core_.refuse(*a.spark, "100.64.0.1"), std::nullopt);
  core_.open(waiting);
  auto reached = spawn_reach(a.spark);
  ASSERT_TRUE(run_until([&] { return a.spark->waiting_connections() == 1 && a.control->started.load(); }));

  const auto why = core_.refuse(*a.spark, "100.64.0.2");
  ASSERT_TRUE(why.has_value()) << "a second connection was admitted to wait for a spark capped at 1 waiting";
  EXPECT_EQ(*why, "1 connection waiting for its wake (sparks[].max_waiting 1)");
  EXPECT_EQ(a.spark->metrics().connections_rejected.Value(), 1);
  // Another sleeping spark has its own waiting cap.
  EXPECT_EQ(core_.refuse(*b.spark, "100.64.0.2"), std::nullopt);

  // The gateway-wide cap counts every spark's waiting connections.
  cfg_.max_waiting = 1;
  const auto gateway_wide = core_.refuse(*b.spark, "100.64.0.2");
  ASSERT_TRUE(gateway_wide.has_value());
  EXPECT_EQ(*gateway_wide, "1 connection waiting for wakes in the gateway (limits.max_waiting 1)");
  EXPECT_EQ(b.spark->metrics().connections_rejected.Value(), 1);
  cfg_.max_waiting = 1024;

  // The sshd comes up: the waiting connection gets its socket, and a running spark is not
  // capped by waiting connections (nobody waits for it).
  {
    std::lock_guard lock(a.control->mu);
    a.sshd->listen();
  }
  ASSERT_TRUE(run_until([&] { return reached->results.size() == 1; }));
  ASSERT_TRUE(reached->results[0].socket.has_value()) << reached->results[0].error;
  ASSERT_EQ(a.spark->state(), SparkState::running);
  EXPECT_EQ(core_.refuse(*a.spark, "100.64.0.2"), std::nullopt);
  EXPECT_EQ(a.spark->metrics().connections_rejected.Value(), 1);
  core_.close(waiting, std::nullopt);
}

TEST_F(SessionCoreTest, AfterStopAdmittingEverySessionIsRefusedAsShuttingDown) {
  auto& a = make_spark("brave-dolphin");
  ASSERT_EQ(core_.refuse(*a.spark, "100.64.0.1"), std::nullopt);
  core_.stop_admitting();
  const auto why = core_.refuse(*a.spark, "100.64.0.1");
  ASSERT_TRUE(why.has_value()) << "a session was admitted during the drain";
  EXPECT_EQ(*why, "the gateway is shutting down");
}

// ---------------------------------------------------------------------------
// open() / close(): the accounting
// ---------------------------------------------------------------------------

TEST_F(SessionCoreTest, OpenAndCloseKeepSessionsClosedAndTheSparksConnectionsRight) {
  auto& a = make_spark("brave-dolphin");
  auto& b = make_spark("calm-otter");
  TestSession a1(a.spark), a2(a.spark), b1(b.spark);
  core_.open(a1);
  core_.open(a2);
  core_.open(b1);
  EXPECT_EQ(core_.open_sessions(), 3u);
  EXPECT_EQ(core_.closed(), 0u);
  EXPECT_EQ(a.spark->open_connections(), 2);
  EXPECT_EQ(b.spark->open_connections(), 1);
  // An open session is activity that keeps the spark awake (the idle rule sees it).
  EXPECT_EQ(tracker_.get("brave-dolphin").open_connections, 2);
  EXPECT_FALSE(tracker_.is_idle("brave-dolphin", config::MaybeNever{std::chrono::seconds(0)},
                                std::chrono::system_clock::now() + std::chrono::hours(24)));

  core_.close(a1, ConnectionEnd::closed);
  EXPECT_EQ(core_.open_sessions(), 2u);
  EXPECT_EQ(core_.closed(), 1u);
  EXPECT_EQ(a.spark->open_connections(), 1);
  EXPECT_EQ(b.spark->open_connections(), 1);
  EXPECT_EQ(a.spark->metrics().ended_closed.Value(), 1);

  // A session that never spliced ends without an end outcome.
  core_.close(b1, std::nullopt);
  EXPECT_EQ(b.spark->open_connections(), 0);
  EXPECT_EQ(b.spark->metrics().ended_closed.Value() + b.spark->metrics().ended_error.Value(), 0);

  core_.close(a2, ConnectionEnd::client_unreachable);
  EXPECT_EQ(core_.open_sessions(), 0u);
  EXPECT_EQ(core_.closed(), 3u);
  EXPECT_EQ(a.spark->open_connections(), 0);
  EXPECT_EQ(a.spark->metrics().ended_client_unreachable.Value(), 1);
  EXPECT_EQ(tracker_.get("brave-dolphin").open_connections, 0);
}

// ---------------------------------------------------------------------------
// close_spark() / close_all(): forced ends
// ---------------------------------------------------------------------------

TEST_F(SessionCoreTest, CloseSparkForceClosesOnlyThatSparksSessions) {
  auto& a = make_spark("brave-dolphin");
  auto& b = make_spark("calm-otter");
  TestSession a1(a.spark), a2(a.spark, &core_), b1(b.spark);  // a2 ends at once when forced
  core_.open(a1);
  core_.open(a2);
  core_.open(b1);

  core_.close_spark(*a.spark);
  EXPECT_EQ(a1.force_closed, 1);
  EXPECT_EQ(a2.force_closed, 1);
  EXPECT_EQ(b1.force_closed, 0) << "another spark's session was ended by a forced sleep";
  EXPECT_EQ(core_.open_sessions(), 2u);  // a2 closed itself; a1 ends when its I/O does
  EXPECT_EQ(a.spark->open_connections(), 1);
  EXPECT_EQ(b.spark->open_connections(), 1);
  core_.close(a1, ConnectionEnd::error);
  core_.close(b1, std::nullopt);
}

TEST_F(SessionCoreTest, CloseAllForceClosesEverySessionEvenThoseEndingAtOnce) {
  auto& a = make_spark("brave-dolphin");
  auto& b = make_spark("calm-otter");
  // Every one ends inside force_close(): the registry changes while close_all() walks it.
  std::vector<std::unique_ptr<TestSession>> sessions;
  for (int i = 0; i < 6; ++i) sessions.push_back(std::make_unique<TestSession>(i % 2 ? a.spark : b.spark, &core_));
  for (auto& s : sessions) core_.open(*s);
  ASSERT_EQ(core_.open_sessions(), 6u);

  core_.close_all();
  for (std::size_t i = 0; i < sessions.size(); ++i) EXPECT_EQ(sessions[i]->force_closed, 1) << "session " << i;
  EXPECT_EQ(core_.open_sessions(), 0u);
  EXPECT_EQ(core_.closed(), 6u);
  EXPECT_EQ(a.spark->open_connections(), 0);
  EXPECT_EQ(b.spark->open_connections(), 0);
  EXPECT_EQ(a.spark->metrics().ended_error.Value() + b.spark->metrics().ended_error.Value(), 6);
}

// ---------------------------------------------------------------------------
// reach(): the upstream, a failure counted by its outcome
// ---------------------------------------------------------------------------

TEST_F(SessionCoreTest, ReachWakesASleepingSparkAndGivesAConnectedSocket) {
  auto& a = make_spark("brave-dolphin");
  auto reached = spawn_reach(a.spark);
  ASSERT_TRUE(run_until([&] { return reached->results.size() == 1; }));
  auto& r = reached->results[0];
  ASSERT_TRUE(r.socket.has_value()) << r.error;
  EXPECT_EQ(r.failure, std::nullopt);
  EXPECT_EQ(r.socket->remote_endpoint().port(), a.control->address.port);
  EXPECT_EQ(a.control->wakes.load(), 1);
  EXPECT_EQ(a.spark->metrics().connections_wake_failed.Value(), 0);
  EXPECT_EQ(a.spark->metrics().connections_upstream_failed.Value(), 0);
}

TEST_F(SessionCoreTest, ReachOnAFailingWakeGivesWakeFailedWithTheReasonAndCountsIt) {
  auto& a = make_spark("brave-dolphin");
  a.control->wake_throws_times = 1;
  a.control->wake_error = "no GPU free on the node";
  auto reached = spawn_reach(a.spark);
  ASSERT_TRUE(run_until([&] { return reached->results.size() == 1; }));
  auto& r = reached->results[0];
  EXPECT_FALSE(r.socket.has_value());
  ASSERT_EQ(r.failure, ConnectionOutcome::wake_failed);
  EXPECT_THAT(r.error, HasSubstr("no GPU free on the node"));
  EXPECT_EQ(a.spark->metrics().connections_wake_failed.Value(), 1);
  EXPECT_EQ(a.spark->metrics().connections_upstream_failed.Value(), 0);
}

// A target that never answers during the wake is the wake's failure (the probe times out with
// a WakeError), not an upstream failure: Spark throws UpstreamError only when the spark woke
// and its sshd could then not be reached.
TEST_F(SessionCoreTest, ReachToATargetThatNeverAnswersIsAWakeFailureWithTheTimeout) {
  auto& a = make_spark("brave-dolphin", std::nullopt, std::nullopt, /*wake_timeout=*/300ms);
  a.control->listen_on_wake = false;
  auto reached = spawn_reach(a.spark);
  ASSERT_TRUE(run_until([&] { return reached->results.size() == 1; }));
  auto& r = reached->results[0];
  EXPECT_FALSE(r.socket.has_value());
  ASSERT_EQ(r.failure, ConnectionOutcome::wake_failed);
  EXPECT_THAT(r.error, HasSubstr("not ready within wake_timeout 300ms"));
  EXPECT_EQ(a.spark->metrics().connections_wake_failed.Value(), 1);
  EXPECT_EQ(a.spark->metrics().connections_upstream_failed.Value(), 0);
}

// The spark wakes, but its sshd is gone again by the time a connection that joined the wake
// (and did not get the wake's probe connection) tries for its own: each such connection
// starts a new wake, and one that has used up its rounds is an upstream failure. Four
// connections to a sleeping spark: every wake's probe goes to the first in line, the
// fourth never gets one.
TEST_F(SessionCoreTest, ReachToASparkThatWokeButCannotBeReachedCountsUpstreamFailed) {
  tcp::acceptor sshd(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // listening
  const config::Address target{"127.0.0.1", sshd.local_endpoint().port()};
  auto backend = std::make_unique<AnswersOnlyTheProbe>(target);
  auto* probe_only = backend.get();
  auto spark = std::make_shared<Spark>(SparkEnvironment{io_.get_executor(), pool_, tracker_, &metrics_},
                                       spark_config("brave-dolphin", std::nullopt, std::nullopt, 5s, target),
                                       std::move(backend));
  std::vector<std::shared_ptr<Reaches>> reached;
  for (int i = 0; i < 4; ++i) reached.push_back(spawn_reach(spark));
  ASSERT_TRUE(run_until([&] {
    for (auto& r : reached)
      if (r->results.empty()) return false;
    return true;
  }));

  int sockets = 0;
  std::vector<Reached*> failed;
  for (auto& r : reached) {
    if (r->results[0].socket)
      ++sockets;
    else
      failed.push_back(&r->results[0]);
  }
  EXPECT_EQ(sockets, 3);
  ASSERT_EQ(failed.size(), 1u);
  ASSERT_EQ(failed[0]->failure, ConnectionOutcome::upstream_failed) << failed[0]->error;
  EXPECT_EQ(failed[0]->error, "the spark did not stay up");
  EXPECT_EQ(spark->metrics().connections_upstream_failed.Value(), 1);
  EXPECT_EQ(spark->metrics().connections_wake_failed.Value(), 0);
  EXPECT_EQ(probe_only->wakes.load(), 3);
}

}  // namespace
}  // namespace spark::gateway
