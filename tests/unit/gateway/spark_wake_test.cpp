// Unit tests for gateway/spark.hpp: the single-flight wake every connection shares, wake
// failures, and sleeping. A fake backend stands in for the spark; its "sshd" is a real loopback
// acceptor that only starts listening when the fake is woken.
//
// GCC 12 coroutine rules followed here (see gateway/asio.hpp): coroutines are free functions
// taking their arguments by value, spawned with named variables; no temporaries with
// non-trivial destructors inside a co_await expression; no capturing lambda coroutines.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "activity/activity_tracker.hpp"
#include "config/config.hpp"
#include "fake_backend.hpp"
#include "gateway/asio.hpp"
#include "gateway/backend/backend.hpp"
#include "gateway/spark.hpp"
#include "run_until.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// Coroutines the tests spawn (free functions, arguments by value)
// ---------------------------------------------------------------------------

struct Outcomes {
  int done = 0;
  std::vector<tcp::socket> sockets;
  std::vector<std::string> wake_errors;
  std::vector<std::string> other_errors;
  std::vector<steady_clock::duration> took;
};

awaitable<void> connect_client(std::shared_ptr<Spark> spark, std::shared_ptr<Outcomes> out) {
  const auto started = steady_clock::now();
  try {
    std::string cause = "a test client";
    tcp::socket s = co_await spark->connect_upstream(std::move(cause));
    out->sockets.push_back(std::move(s));
  } catch (const WakeError& e) {
    out->wake_errors.emplace_back(e.what());
  } catch (const std::exception& e) {
    out->other_errors.emplace_back(e.what());
  }
  out->took.push_back(steady_clock::now() - started);
  ++out->done;
}

awaitable<void> sleep_spark(std::shared_ptr<Spark> spark, SleepReason reason, std::shared_ptr<bool> done) {
  co_await spark->sleep(reason);
  *done = true;
}

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

class SparkWakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto loopback = asio::ip::make_address("127.0.0.1");
    acceptor_.open(tcp::v4());
    acceptor_.bind(tcp::endpoint(loopback, 0));  // bound, not listening: connects are refused
    target_ = acceptor_.local_endpoint();
    fake_->acceptor = &acceptor_;
    fake_->address = config::Address{"127.0.0.1", target_.port()};
  }

  void TearDown() override {
    release_gate();
    // Let every coroutine still in flight (e.g. a background stop) finish, bounded.
    work_.reset();
    io_.restart();
    io_.run_for(5s);
    pool_.join();
  }

  std::shared_ptr<Spark> make_spark(std::chrono::milliseconds wake_timeout = 5s) {
    config::SparkConfig cfg;
    cfg.name = "test-spark";
    cfg.listen = config::Address{"127.0.0.1", 0};
    cfg.idle_timeout = config::MaybeNever{std::chrono::hours(2)};
    cfg.wake_timeout = wake_timeout;
    config::ProcessBackendConfig backend;
    backend.command = {"/bin/false"};
    backend.target = fake_->address;
    cfg.backend = backend;
    return std::make_shared<Spark>(SparkEnvironment{io_.get_executor(), pool_, tracker_}, cfg,
                                   std::make_unique<FakeBackend>(fake_));
  }

  // Runs the data plane until `done()` holds or `limit` passes; returns done().
  bool run_until(const std::function<bool()>& done, steady_clock::duration limit = 10s) {
    return test::run_until(io_, done, limit);
  }

  void spawn_clients(const std::shared_ptr<Spark>& spark, const std::shared_ptr<Outcomes>& out, int n) {
    for (int i = 0; i < n; ++i) asio::co_spawn(io_, connect_client(spark, out), asio::detached);
  }

  // Blocks the fake's sleep() until release_gate().
  void close_gate() { fake_->sleep_gate = gate_.get_future().share(); }
  void release_gate() {
    if (!gate_released_) {
      gate_released_ = true;
      gate_.set_value();
    }
  }

  // Wakes the spark once through a connection, so it is running.
  void bring_up(const std::shared_ptr<Spark>& spark) {
    auto out = std::make_shared<Outcomes>();
    spawn_clients(spark, out, 1);
    ASSERT_TRUE(run_until([&] { return out->done == 1; })) << "first connect did not finish";
    ASSERT_EQ(out->sockets.size(), 1u) << (out->wake_errors.empty() ? "" : out->wake_errors[0]);
    ASSERT_EQ(spark->state(), SparkState::running);
  }

  activity::ActivityTracker tracker_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  asio::thread_pool pool_{2};
  tcp::acceptor acceptor_{io_};
  tcp::endpoint target_;
  std::shared_ptr<FakeControl> fake_ = std::make_shared<FakeControl>();
  std::promise<void> gate_;
  bool gate_released_ = false;
};

// ---------------------------------------------------------------------------
// Single flight
// ---------------------------------------------------------------------------

TEST_F(SparkWakeTest, TwentyConcurrentConnectsShareOneWake) {
  auto spark = make_spark();
  ASSERT_EQ(spark->state(), SparkState::sleeping);
  auto out = std::make_shared<Outcomes>();
  constexpr int kClients = 20;
  spawn_clients(spark, out, kClients);

  ASSERT_TRUE(run_until([&] { return out->done == kClients; }))
      << out->done << " of " << kClients << " connects finished";

  EXPECT_THAT(out->wake_errors, ::testing::IsEmpty());
  EXPECT_THAT(out->other_errors, ::testing::IsEmpty());
  ASSERT_EQ(out->sockets.size(), static_cast<std::size_t>(kClients));
  std::set<unsigned short> local_ports;
  for (auto& s : out->sockets) {
    ASSERT_TRUE(s.is_open());
    error_code ec;
    const auto remote = s.remote_endpoint(ec);
    ASSERT_FALSE(ec) << "socket not connected: " << ec.message();
    EXPECT_EQ(remote, target_);
    local_ports.insert(s.local_endpoint().port());
  }
  EXPECT_EQ(local_ports.size(), static_cast<std::size_t>(kClients))
      << "two callers were handed the same connection";
  EXPECT_EQ(fake_->wakes.load(), 1);
  EXPECT_EQ(spark->wakes_started(), 1u);
  EXPECT_EQ(spark->state(), SparkState::running);
  EXPECT_EQ(fake_->sleeps_begun.load(), 0);
}

TEST_F(SparkWakeTest, ConnectWhileRunningDoesNotWakeAgain) {
  auto spark = make_spark();
  ASSERT_NO_FATAL_FAILURE(bring_up(spark));
  auto out = std::make_shared<Outcomes>();
  spawn_clients(spark, out, 3);
  ASSERT_TRUE(run_until([&] { return out->done == 3; }));
  ASSERT_EQ(out->sockets.size(), 3u);
  for (auto& s : out->sockets) EXPECT_EQ(s.remote_endpoint(), target_);
  EXPECT_EQ(fake_->wakes.load(), 1);
  EXPECT_EQ(spark->state(), SparkState::running);
}

// ---------------------------------------------------------------------------
// Wake failures
// ---------------------------------------------------------------------------

TEST_F(SparkWakeTest, BackendWakeErrorReachesEveryWaiterAndALaterConnectRetries) {
  fake_->wake_throws_times = 1;
  fake_->wake_error = "boom";
  auto spark = make_spark();
  auto out = std::make_shared<Outcomes>();
  constexpr int kClients = 5;
  spawn_clients(spark, out, kClients);

  ASSERT_TRUE(run_until([&] { return out->done == kClients; }));
  EXPECT_TRUE(out->sockets.empty());
  EXPECT_THAT(out->other_errors, ::testing::IsEmpty());
  ASSERT_EQ(out->wake_errors.size(), static_cast<std::size_t>(kClients));
  for (const auto& e : out->wake_errors) EXPECT_THAT(e, HasSubstr("boom"));
  EXPECT_EQ(fake_->wakes.load(), 1);
  // A failed wake leaves nothing running: whatever the start did is stopped, then it shows failed.
  EXPECT_TRUE(run_until([&] { return fake_->sleeps_done.load() == 1; }, 5s));
  EXPECT_TRUE(run_until([&] { return spark->state() == SparkState::failed; }, 5s));

  // A failed wake is not sticky: the next connection tries again (and here it works).
  auto retry = std::make_shared<Outcomes>();
  spawn_clients(spark, retry, 1);
  ASSERT_TRUE(run_until([&] { return retry->done == 1; }));
  EXPECT_EQ(fake_->wakes.load(), 2);
  ASSERT_EQ(retry->sockets.size(), 1u) << (retry->wake_errors.empty() ? "" : retry->wake_errors[0]);
  EXPECT_EQ(retry->sockets[0].remote_endpoint(), target_);
  EXPECT_EQ(spark->state(), SparkState::running);
}

TEST_F(SparkWakeTest, RepeatedBackendErrorFailsAgainWithSecondWake) {
  fake_->wake_throws_times = 100;
  fake_->wake_error = "boom";
  auto spark = make_spark();
  auto first = std::make_shared<Outcomes>();
  spawn_clients(spark, first, 1);
  ASSERT_TRUE(run_until([&] { return first->done == 1; }));
  ASSERT_EQ(first->wake_errors.size(), 1u);

  auto second = std::make_shared<Outcomes>();
  spawn_clients(spark, second, 1);
  ASSERT_TRUE(run_until([&] { return second->done == 1; }));
  ASSERT_EQ(second->wake_errors.size(), 1u);
  EXPECT_THAT(second->wake_errors[0], HasSubstr("boom"));
  EXPECT_EQ(fake_->wakes.load(), 2);
  EXPECT_TRUE(run_until([&] { return fake_->sleeps_done.load() == 2; }, 5s)) << "one stop per failed wake";
  EXPECT_TRUE(run_until([&] { return spark->state() == SparkState::failed; }, 5s));
}

TEST_F(SparkWakeTest, TargetThatNeverListensFailsWithinWakeTimeout) {
  fake_->listen_on_wake = false;
  constexpr auto kWakeTimeout = 300ms;
  auto spark = make_spark(kWakeTimeout);
  auto out = std::make_shared<Outcomes>();
  constexpr int kClients = 3;
  spawn_clients(spark, out, kClients);

  ASSERT_TRUE(run_until([&] { return out->done == kClients; }, 10s));
  EXPECT_TRUE(out->sockets.empty());
  ASSERT_EQ(out->wake_errors.size(), static_cast<std::size_t>(kClients));
  for (const auto& e : out->wake_errors) {
    EXPECT_THAT(e, HasSubstr("wake_timeout"));
    EXPECT_THAT(e, HasSubstr("300ms"));
  }
  for (const auto took : out->took) {
    EXPECT_GE(took, kWakeTimeout - 10ms);    // it kept probing until the deadline...
    EXPECT_LT(took, kWakeTimeout + 1500ms);  // ...and gave up promptly after it
  }
  EXPECT_EQ(fake_->wakes.load(), 1);
  // What was started is being stopped (not left half-alive); the spark then shows as failed.
  EXPECT_THAT(spark->state(), ::testing::AnyOf(SparkState::stopping, SparkState::failed));
  EXPECT_TRUE(run_until([&] { return fake_->sleeps_done.load() == 1; }, 5s));
  EXPECT_TRUE(run_until([&] { return spark->state() == SparkState::failed; }, 5s));
  EXPECT_FALSE(fake_->started.load());
}

TEST_F(SparkWakeTest, BackendReportingFailedWhileWakingGivesItsReason) {
  fake_->failed_reason = "process pid 4242 exited with status 255";
  auto spark = make_spark();
  auto out = std::make_shared<Outcomes>();
  spawn_clients(spark, out, 2);

  ASSERT_TRUE(run_until([&] { return out->done == 2; }));
  EXPECT_TRUE(out->sockets.empty());
  ASSERT_EQ(out->wake_errors.size(), 2u);
  for (const auto& e : out->wake_errors) EXPECT_THAT(e, HasSubstr("process pid 4242 exited with status 255"));
  EXPECT_EQ(fake_->wakes.load(), 1);
  // Not only a timeout: any failed wake stops what it started.
  EXPECT_TRUE(run_until([&] { return fake_->sleeps_done.load() == 1; }, 5s));
  EXPECT_TRUE(run_until([&] { return spark->state() == SparkState::failed; }, 5s));
  EXPECT_FALSE(fake_->started.load());
}

// ---------------------------------------------------------------------------
// Sleep
// ---------------------------------------------------------------------------

TEST_F(SparkWakeTest, SleepStopsTheBackendOnce) {
  auto spark = make_spark();
  ASSERT_NO_FATAL_FAILURE(bring_up(spark));

  auto slept = std::make_shared<bool>(false);
  SleepReason reason = SleepReason::idle;
  asio::co_spawn(io_, sleep_spark(spark, reason, slept), asio::detached);
  ASSERT_TRUE(run_until([&] { return *slept; }));
  EXPECT_EQ(spark->state(), SparkState::sleeping);
  EXPECT_EQ(fake_->sleeps_done.load(), 1);
  EXPECT_FALSE(fake_->started.load());

  // Sleeping an asleep spark does nothing.
  auto again = std::make_shared<bool>(false);
  SleepReason reason2 = SleepReason::api;
  asio::co_spawn(io_, sleep_spark(spark, reason2, again), asio::detached);
  ASSERT_TRUE(run_until([&] { return *again; }));
  EXPECT_EQ(fake_->sleeps_begun.load(), 1);
  EXPECT_EQ(spark->state(), SparkState::sleeping);
}

TEST_F(SparkWakeTest, ConnectAfterSleepWakesAgain) {
  auto spark = make_spark();
  ASSERT_NO_FATAL_FAILURE(bring_up(spark));
  auto slept = std::make_shared<bool>(false);
  SleepReason reason = SleepReason::idle;
  asio::co_spawn(io_, sleep_spark(spark, reason, slept), asio::detached);
  ASSERT_TRUE(run_until([&] { return *slept; }));

  auto out = std::make_shared<Outcomes>();
  spawn_clients(spark, out, 1);
  ASSERT_TRUE(run_until([&] { return out->done == 1; }));
  ASSERT_EQ(out->sockets.size(), 1u);
  EXPECT_EQ(fake_->wakes.load(), 2);
  EXPECT_EQ(spark->state(), SparkState::running);
}

TEST_F(SparkWakeTest, ConnectDuringSleepWaitsForItThenWakesAgain) {
  auto spark = make_spark();
  ASSERT_NO_FATAL_FAILURE(bring_up(spark));
  ASSERT_EQ(fake_->wakes.load(), 1);

  close_gate();
  auto slept = std::make_shared<bool>(false);
  SleepReason reason = SleepReason::idle;
  asio::co_spawn(io_, sleep_spark(spark, reason, slept), asio::detached);
  ASSERT_TRUE(run_until([&] { return fake_->sleeps_begun.load() == 1; }));
  ASSERT_EQ(spark->state(), SparkState::stopping);

  auto out = std::make_shared<Outcomes>();
  spawn_clients(spark, out, 3);
  // While the backend is still stopping, nobody is woken or handed a socket.
  run_until([&] { return out->done > 0 || fake_->wakes.load() > 1; }, 300ms);
  EXPECT_EQ(out->done, 0) << "a connect finished while the spark was still stopping";
  EXPECT_EQ(fake_->wakes.load(), 1) << "woken while its sleep was still in progress";
  EXPECT_EQ(spark->state(), SparkState::stopping);

  release_gate();
  ASSERT_TRUE(run_until([&] { return out->done == 3 && *slept; }));
  EXPECT_THAT(out->wake_errors, ::testing::IsEmpty());
  ASSERT_EQ(out->sockets.size(), 3u);
  for (auto& s : out->sockets) EXPECT_EQ(s.remote_endpoint(), target_);
  EXPECT_EQ(fake_->wakes.load(), 2);
  EXPECT_EQ(fake_->sleeps_done.load(), 1);
  EXPECT_FALSE(fake_->wake_overlapped_sleep.load());
  EXPECT_THAT(fake_->events(), ElementsAre("wake", "sleep-begin", "sleep-end", "wake"));
  EXPECT_EQ(spark->state(), SparkState::running);
  EXPECT_TRUE(fake_->started.load());
}

// After a wake_timeout, the half-started spark is stopped in the background. A connection
// arriving during that stop must not get a wake the stop then undoes (like a connect during
// an ordinary sleep, it should wait for the stop and then wake the spark again).
TEST_F(SparkWakeTest, ConnectDuringCleanupAfterWakeTimeoutIsNotUndoneByIt) {
  fake_->listen_on_wake = false;
  auto spark = make_spark(300ms);
  auto first = std::make_shared<Outcomes>();
  close_gate();
  spawn_clients(spark, first, 1);
  ASSERT_TRUE(run_until([&] { return first->done == 1; }));
  ASSERT_EQ(first->wake_errors.size(), 1u);
  ASSERT_TRUE(run_until([&] { return fake_->sleeps_begun.load() == 1; }, 5s))
      << "no cleanup stop after the wake timeout";

  // The target can come up now; a new connection arrives while the cleanup stop is blocked.
  fake_->listen_on_wake = true;
  auto second = std::make_shared<Outcomes>();
  spawn_clients(spark, second, 1);
  run_until([&] { return second->done == 1; }, 1s);
  release_gate();
  ASSERT_TRUE(run_until([&] { return second->done == 1 && fake_->sleeps_done.load() == 1; }));

  EXPECT_FALSE(fake_->wake_overlapped_sleep.load())
      << "wake() ran while the cleanup sleep() was still stopping the spark; events: "
      << ::testing::PrintToString(fake_->events());
  ASSERT_EQ(second->sockets.size(), 1u) << (second->wake_errors.empty() ? "" : second->wake_errors[0]);
  EXPECT_EQ(spark->state(), SparkState::running);
  EXPECT_TRUE(fake_->started.load()) << "the spark handed to the connection was stopped by the cleanup; events: "
                                     << ::testing::PrintToString(fake_->events());
}

}  // namespace
}  // namespace spark::gateway
