// Unit tests for gateway/running_cap.hpp together with gateway/spark.hpp: limits.max_running (at
// most so many sparks awake or waking), its FIFO line for the wakes beyond it (within each
// spark's wake_timeout), limits.evict_idle_after (the spark idle longest, with no session and no
// keep-awake, is put to sleep to make room), claims where other gateways count places, a cap
// lifted by a reload, and the metrics. A small fleet of Sparks over FakeBackends (whose "sshd" is
// a real loopback acceptor, fake_backend.hpp) shares one RunningCap, one ActivityTracker and one
// Metrics of its own, on an io_context the test runs with deadlines.
//
// Nothing here runs SparkSet's follow loop, which calls RunningCap::changed() every few hundred
// milliseconds in the gateway: where a test needs the cap to look again as time passes, it
// runs follow_ticks (changed() every 50 ms) like that loop.
//
// GCC 12 coroutine rules followed here (see gateway/asio.hpp): coroutines are free functions
// taking their arguments by value, spawned with named variables; no temporaries with
// non-trivial destructors inside a co_await expression; no capturing lambda coroutines.
#include "gateway/running_cap.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
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
using std::chrono::system_clock;
using ::testing::HasSubstr;
using ::testing::Not;

// A wake_timeout long enough that no test here reaches it unless it means to.
constexpr std::chrono::milliseconds kLongWakeTimeout = 10s;

// ---------------------------------------------------------------------------
// Coroutines the tests spawn (free functions, arguments by value)
// ---------------------------------------------------------------------------

struct Outcome {
  bool done = false;
  std::optional<tcp::socket> socket;
  std::string wake_error;   // a WakeError's what()
  std::string other_error;  // anything else (a cancelled connection)
  steady_clock::time_point started = steady_clock::now();
  steady_clock::duration took{};
};

awaitable<void> connect_client(std::shared_ptr<Spark> spark, std::shared_ptr<Outcome> out) {
  try {
    std::string cause = "a test client";
    tcp::socket s = co_await spark->connect_upstream(std::move(cause));
    out->socket.emplace(std::move(s));
  } catch (const WakeError& e) {
    out->wake_error = e.what();
  } catch (const std::exception& e) {
    out->other_error = e.what();
  }
  out->took = steady_clock::now() - out->started;
  out->done = true;
}

awaitable<void> sleep_spark(std::shared_ptr<Spark> spark, std::shared_ptr<bool> done) {
  co_await spark->sleep(SleepReason::idle);
  *done = true;
}

// What SparkSet::follow does for the cap: RunningCap::changed() every tick.
awaitable<void> follow_ticks(RunningCap* cap, std::shared_ptr<bool> stop) {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  while (!*stop) {
    cap->changed();
    tick.expires_after(50ms);
    co_await tick.async_wait(use_awaitable);
  }
}

// ---------------------------------------------------------------------------
// Fixture: a fleet of sparks under one cap
// ---------------------------------------------------------------------------

class RunningCapTest : public ::testing::Test {
 protected:
  struct Member {
    std::shared_ptr<FakeControl> fake = std::make_shared<FakeControl>();
    std::unique_ptr<tcp::acceptor> acceptor;
    std::shared_ptr<Spark> spark;
  };

  void TearDown() override {
    *stop_ticks_ = true;
    for (auto& [name, m] : members_) release_gate(name);
    // Every wake still in line has a deadline (its wake_timeout): let them end, bounded.
    run_until([&] { return all_connects_done(); }, 15s);
    work_.reset();
    io_.restart();
    io_.run_for(3s);
    pool_.join();
  }

  // A spark of the fleet, last active at `last_active` (its idle clock, for eviction).
  std::shared_ptr<Spark> add_spark(const std::string& name,
                                   std::chrono::milliseconds wake_timeout = kLongWakeTimeout,
                                   activity::TimePoint last_active = system_clock::now()) {
    auto& m = members_[name];
    m.acceptor = std::make_unique<tcp::acceptor>(io_);
    m.acceptor->open(tcp::v4());
    m.acceptor->bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // listens once woken
    m.fake->acceptor = m.acceptor.get();
    m.fake->address = config::Address{"127.0.0.1", m.acceptor->local_endpoint().port()};
    config::SparkConfig cfg;
    cfg.name = name;
    cfg.listen = config::Address{"127.0.0.1", 0};
    cfg.idle_timeout = config::MaybeNever{std::chrono::hours(2)};
    cfg.wake_timeout = wake_timeout;
    config::ProcessBackendConfig backend;
    backend.command = {"/bin/false"};
    backend.target = m.fake->address;
    cfg.backend = backend;
    tracker_.ensure(name, last_active);  // as SparkSet does for every spark it serves
    SparkEnvironment env{io_.get_executor(), pool_, tracker_};
    env.metrics = &metrics_;
    env.cap = &cap_;
    m.spark = std::make_shared<Spark>(env, cfg, std::make_unique<FakeBackend>(m.fake));
    sparks_[name] = m.spark;
    return m.spark;
  }

  Spark& spark(const std::string& name) { return *members_.at(name).spark; }
  FakeControl& fake(const std::string& name) { return *members_.at(name).fake; }
  SparkStatus status(const std::string& name) { return spark(name).status(system_clock::now()); }

  // Runs the main loop until `done()` holds or `limit` passes; returns done().
  bool run_until(const std::function<bool()>& done, steady_clock::duration limit = 10s) {
    return test::run_until(io_, done, limit);
  }

  // A connection to `name` (Spark::connect_upstream), running from now on.
  std::shared_ptr<Outcome> connect(const std::string& name) {
    auto out = std::make_shared<Outcome>();
    outcomes_.push_back(out);
    asio::co_spawn(io_, connect_client(members_.at(name).spark, out), asio::detached);
    return out;
  }

  // The same, ended by `signal` (a client that leaves while it waits).
  std::shared_ptr<Outcome> connect_cancellable(const std::string& name, asio::cancellation_signal& signal) {
    auto out = std::make_shared<Outcome>();
    outcomes_.push_back(out);
    asio::co_spawn(io_, connect_client(members_.at(name).spark, out),
                   asio::bind_cancellation_slot(signal.slot(), asio::detached));
    return out;
  }

  bool all_connects_done() const {
    for (const auto& o : outcomes_)
      if (!o->done) return false;
    return true;
  }

  // Wakes `name` through a connection; it is running afterwards.
  void bring_up(const std::string& name) {
    auto out = connect(name);
    ASSERT_TRUE(run_until([&] { return out->done; })) << name << ": the connect did not finish";
    ASSERT_TRUE(out->socket) << name << ": " << out->wake_error << out->other_error;
    ASSERT_EQ(spark(name).state(), SparkState::running) << name;
  }

  // Puts `name` to sleep as the reaper would; returns once it is done.
  void put_to_sleep(const std::string& name) {
    auto done = std::make_shared<bool>(false);
    asio::co_spawn(io_, sleep_spark(members_.at(name).spark, done), asio::detached);
    ASSERT_TRUE(run_until([&] { return *done; })) << name << ": the sleep did not finish";
    ASSERT_EQ(spark(name).state(), SparkState::sleeping) << name;
  }

  // Waits until `name`'s wake stands in line at `position`.
  bool queued_at(const std::string& name, int position, steady_clock::duration limit = 5s) {
    return run_until(
        [&] {
          const auto s = status(name);
          return s.state == "queued" && s.queue_position == position;
        },
        limit);
  }

  void start_follow_ticks() { asio::co_spawn(io_, follow_ticks(&cap_, stop_ticks_), asio::detached); }

  // Blocks `name`'s backend sleep() until release_gate(name).
  void close_gate(const std::string& name) { fake(name).sleep_gate = gates_[name].get_future().share(); }
  void release_gate(const std::string& name) {
    auto it = gates_.find(name);
    if (it == gates_.end() || gates_released_.contains(name)) return;
    gates_released_.insert(name);
    it->second.set_value();
  }

  // The value of one sample line of the scrape ("name" or "name{labels}"); NaN if absent.
  double metric(const std::string& series) const {
    std::istringstream text(metrics_.scrape());
    std::string line;
    while (std::getline(text, line))
      if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
    return std::numeric_limits<double>::quiet_NaN();
  }
  // Whether the scrape has any sample of the family `name` (not only its HELP and TYPE).
  bool has_samples(const std::string& name) const {
    std::istringstream text(metrics_.scrape());
    std::string line;
    while (std::getline(text, line))
      if (line.rfind(name + " ", 0) == 0 || line.rfind(name + "{", 0) == 0) return true;
    return false;
  }

  std::vector<std::string> causes_seen(const std::string& name) {
    std::vector<std::string> out;
    for (const auto& w : fake(name).wakes_seen()) out.push_back(w.cause);
    return out;
  }

  activity::ActivityTracker tracker_;
  Metrics metrics_{"test"};
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  asio::thread_pool pool_{2};
  RunningCap::Sparks sparks_;
  RunningCap cap_{io_.get_executor(), sparks_, tracker_, metrics_};
  std::map<std::string, Member> members_;
  std::vector<std::shared_ptr<Outcome>> outcomes_;
  std::shared_ptr<bool> stop_ticks_ = std::make_shared<bool>(false);
  std::map<std::string, std::promise<void>> gates_;
  std::set<std::string> gates_released_;
};

// ---------------------------------------------------------------------------
// The cap and its line
// ---------------------------------------------------------------------------

TEST_F(RunningCapTest, WithoutACapEveryWakeStartsAtOnce) {
  cap_.configure(std::nullopt, std::nullopt);
  for (const char* name : {"alpha", "bravo", "charlie"}) add_spark(name);
  auto a = connect("alpha");
  auto b = connect("bravo");
  auto c = connect("charlie");
  ASSERT_TRUE(run_until([&] { return a->done && b->done && c->done; }));
  for (const char* name : {"alpha", "bravo", "charlie"}) {
    EXPECT_EQ(fake(name).wakes.load(), 1) << name;
    EXPECT_EQ(spark(name).state(), SparkState::running) << name;
    EXPECT_EQ(status(name).queue_position, std::nullopt) << name;
  }
  EXPECT_TRUE(a->socket && b->socket && c->socket);
  EXPECT_EQ(cap_.running(), 3);
  EXPECT_EQ(cap_.position("charlie"), std::nullopt);
  EXPECT_EQ(cap_.describe_place("charlie"), "");
}

TEST_F(RunningCapTest, BeyondTheCapAWakeWaitsInLineAndIsSplicedWhenARunningSparkSleeps) {
  cap_.configure(2, std::nullopt);
  for (const char* name : {"alpha", "bravo", "charlie"}) add_spark(name);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  ASSERT_NO_FATAL_FAILURE(bring_up("bravo"));

  auto c = connect("charlie");
  ASSERT_TRUE(queued_at("charlie", 1)) << "state " << status("charlie").state;
  EXPECT_EQ(cap_.position("charlie"), 1);
  EXPECT_EQ(cap_.running(), 2);
  EXPECT_THAT(cap_.describe_place("charlie"), HasSubstr("2 sparks are running"));
  EXPECT_THAT(cap_.describe_place("charlie"), HasSubstr("1st in line"));
  // It stays in line while both keep running: nothing is started for it.
  EXPECT_FALSE(run_until([&] { return c->done; }, 300ms));
  EXPECT_EQ(fake("charlie").wakes.load(), 0);
  EXPECT_EQ(status("charlie").state, "queued");

  ASSERT_NO_FATAL_FAILURE(put_to_sleep("alpha"));
  ASSERT_TRUE(run_until([&] { return c->done; }, 5s));
  ASSERT_TRUE(c->socket) << c->wake_error << c->other_error;
  EXPECT_EQ(c->socket->remote_endpoint().port(), fake("charlie").address.port);
  EXPECT_EQ(fake("charlie").wakes.load(), 1);
  EXPECT_EQ(spark("charlie").state(), SparkState::running);
  EXPECT_EQ(status("charlie").queue_position, std::nullopt);
  EXPECT_EQ(status("charlie").state, "running");
  // A sleep made the room, not an eviction: the cause says nothing of making room.
  ASSERT_EQ(causes_seen("charlie").size(), 1u);
  EXPECT_THAT(causes_seen("charlie")[0], Not(HasSubstr("make room")));
  EXPECT_EQ(fake("bravo").sleeps_begun.load(), 0);
  EXPECT_EQ(cap_.running(), 2);
}

TEST_F(RunningCapTest, WakesInLineGoInTheOrderTheyAsked) {
  cap_.configure(1, std::nullopt);
  // The first to ask sorts last by name, so the order cannot come from the fleet's map.
  for (const char* name : {"alpha", "zulu", "mike"}) add_spark(name);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));

  auto z = connect("zulu");
  ASSERT_TRUE(queued_at("zulu", 1));
  auto m = connect("mike");
  ASSERT_TRUE(queued_at("mike", 2));
  EXPECT_EQ(status("zulu").queue_position, 1);

  ASSERT_NO_FATAL_FAILURE(put_to_sleep("alpha"));
  ASSERT_TRUE(run_until([&] { return z->done; }, 5s));
  ASSERT_TRUE(z->socket) << z->wake_error << z->other_error;
  // The second in line moved up, and waits for the next place.
  EXPECT_TRUE(queued_at("mike", 1));
  EXPECT_FALSE(run_until([&] { return m->done; }, 200ms));
  EXPECT_EQ(fake("mike").wakes.load(), 0);

  ASSERT_NO_FATAL_FAILURE(put_to_sleep("zulu"));
  ASSERT_TRUE(run_until([&] { return m->done; }, 5s));
  ASSERT_TRUE(m->socket) << m->wake_error << m->other_error;
  EXPECT_EQ(fake("mike").wakes.load(), 1);
  EXPECT_EQ(spark("mike").state(), SparkState::running);
}

TEST_F(RunningCapTest, AWakeInLinePastItsWakeTimeoutFailsNamingTheCapAndItsPlace) {
  constexpr auto kShortWakeTimeout = 400ms;
  cap_.configure(1, std::nullopt);
  add_spark("alpha");
  add_spark("bravo");                       // first in line, patient
  add_spark("charlie", kShortWakeTimeout);  // second in line
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  auto b = connect("bravo");
  ASSERT_TRUE(queued_at("bravo", 1));
  auto c = connect("charlie");
  ASSERT_TRUE(queued_at("charlie", 2));

  ASSERT_TRUE(run_until([&] { return c->done; }, 5s));
  EXPECT_FALSE(c->socket);
  EXPECT_THAT(c->wake_error, HasSubstr("limits.max_running 1"));
  // Only alpha runs: bravo waits in line, and charlie itself (waking, in line) is not counted.
  EXPECT_THAT(c->wake_error, HasSubstr("1 spark is running"));
  EXPECT_THAT(c->wake_error, HasSubstr("2nd in line"));
  EXPECT_THAT(c->wake_error, HasSubstr("wake_timeout 400ms"));
  EXPECT_GE(c->took, kShortWakeTimeout - 20ms);
  EXPECT_LT(c->took, kShortWakeTimeout + 1500ms);
  // Nothing was started for it; it sleeps on, out of the line, and says why.
  EXPECT_EQ(fake("charlie").wakes.load(), 0);
  EXPECT_EQ(fake("charlie").sleeps_begun.load(), 0);
  EXPECT_EQ(spark("charlie").state(), SparkState::sleeping);
  EXPECT_EQ(status("charlie").state, "sleeping");
  EXPECT_EQ(status("charlie").queue_position, std::nullopt);
  EXPECT_THAT(status("charlie").last_wake_error, HasSubstr("limits.max_running"));
  // The patient one is still first in line, and goes when there is room.
  EXPECT_EQ(status("bravo").queue_position, 1);
  EXPECT_FALSE(b->done);
  ASSERT_NO_FATAL_FAILURE(put_to_sleep("alpha"));
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  EXPECT_TRUE(b->socket) << b->wake_error << b->other_error;
}

TEST_F(RunningCapTest, AWakeInLineWhoseOnlyConnectionLeftGivesUpItsPlace) {
  cap_.configure(1, std::nullopt);
  for (const char* name : {"alpha", "bravo", "charlie"}) add_spark(name);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  asio::cancellation_signal leave;
  auto b = connect_cancellable("bravo", leave);
  ASSERT_TRUE(queued_at("bravo", 1));
  auto c = connect("charlie");
  ASSERT_TRUE(queued_at("charlie", 2));
  ASSERT_EQ(spark("bravo").waiting_connections(), 1);

  const auto left_at = steady_clock::now();
  leave.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(run_until([&] { return b->done; }, 2s)) << "the cancelled connection did not end";
  EXPECT_FALSE(b->socket);
  EXPECT_EQ(spark("bravo").waiting_connections(), 0);

  // Its wake leaves the line well before its wake_timeout (10 s), and the next moves up.
  ASSERT_TRUE(run_until([&] { return !status("bravo").queue_position.has_value(); }, 3s))
      << "the wake nobody waits for kept its place";
  EXPECT_LT(steady_clock::now() - left_at, 3s);
  EXPECT_TRUE(queued_at("charlie", 1, 1s));
  EXPECT_TRUE(run_until([&] { return spark("bravo").state() == SparkState::sleeping; }, 1s));
  EXPECT_EQ(fake("bravo").wakes.load(), 0) << "woken for nobody";

  ASSERT_NO_FATAL_FAILURE(put_to_sleep("alpha"));
  ASSERT_TRUE(run_until([&] { return c->done; }, 5s));
  EXPECT_TRUE(c->socket) << c->wake_error << c->other_error;
  EXPECT_EQ(fake("bravo").wakes.load(), 0);
  EXPECT_EQ(spark("bravo").state(), SparkState::sleeping);
}

TEST_F(RunningCapTest, LiftingTheCapLetsEveryWaitingWakeGo) {
  cap_.configure(1, std::nullopt);
  for (const char* name : {"alpha", "bravo", "charlie"}) add_spark(name);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  auto b = connect("bravo");
  ASSERT_TRUE(queued_at("bravo", 1));
  auto c = connect("charlie");
  ASSERT_TRUE(queued_at("charlie", 2));

  cap_.configure(std::nullopt, std::nullopt);  // a reload took limits.max_running out
  ASSERT_TRUE(run_until([&] { return b->done && c->done; }, 5s));
  EXPECT_TRUE(b->socket) << b->wake_error << b->other_error;
  EXPECT_TRUE(c->socket) << c->wake_error << c->other_error;
  for (const char* name : {"alpha", "bravo", "charlie"}) {
    EXPECT_EQ(fake(name).wakes.load(), 1) << name;
    EXPECT_EQ(spark(name).state(), SparkState::running) << name;
    EXPECT_EQ(status(name).queue_position, std::nullopt) << name;
  }
  EXPECT_EQ(fake("alpha").sleeps_begun.load(), 0);
  cap_.changed();
  EXPECT_EQ(metric("spark_gateway_running_sparks"), 3);
  EXPECT_EQ(metric("spark_gateway_wake_queue_length"), 0);
  EXPECT_FALSE(has_samples("spark_gateway_running_sparks_limit"));
}

// ---------------------------------------------------------------------------
// Eviction (limits.evict_idle_after)
// ---------------------------------------------------------------------------

TEST_F(RunningCapTest, EvictionPutsTheSparkIdleLongestToSleepAndWakesTheOneInLine) {
  const auto now = system_clock::now();
  cap_.configure(2, config::Duration{1min});
  add_spark("alpha", kLongWakeTimeout, now - 10min);  // idle longest
  add_spark("bravo", kLongWakeTimeout, now - 5min);
  add_spark("charlie");
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  ASSERT_NO_FATAL_FAILURE(bring_up("bravo"));

  auto c = connect("charlie");
  ASSERT_TRUE(run_until([&] { return c->done; }, 5s)) << "no room was made";
  ASSERT_TRUE(c->socket) << c->wake_error << c->other_error;
  EXPECT_EQ(spark("alpha").state(), SparkState::sleeping);
  EXPECT_EQ(fake("alpha").sleeps_done.load(), 1);
  const auto asked = fake("alpha").sleeps_seen();
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].reason, "evicted");
  EXPECT_THAT(asked[0].description, HasSubstr("to make room for charlie"));
  EXPECT_EQ(fake("bravo").sleeps_begun.load(), 0);
  EXPECT_EQ(spark("bravo").state(), SparkState::running);
  ASSERT_EQ(causes_seen("charlie").size(), 1u);
  EXPECT_EQ(causes_seen("charlie")[0], "a test client after alpha was put to sleep to make room");
  EXPECT_EQ(metric("spark_gateway_evictions_total"), 1);
  EXPECT_EQ(cap_.running(), 2);
}

TEST_F(RunningCapTest, EvictionPassesOverSessionsRecentActivityAndKeepAwake) {
  const auto now = system_clock::now();
  cap_.configure(4, config::Duration{1min});
  add_spark("session", kLongWakeTimeout, now - 30min);
  add_spark("recent", kLongWakeTimeout, now - 10s);
  add_spark("held", kLongWakeTimeout, now - 20min);
  add_spark("idle", kLongWakeTimeout, now - 5min);  // the only one that may go
  add_spark("newcomer");
  for (const char* name : {"session", "recent", "held", "idle"}) ASSERT_NO_FATAL_FAILURE(bring_up(name));
  spark("session").connection_opened();
  tracker_.set_keep_awake("held", now + 1h, now);

  auto n = connect("newcomer");
  ASSERT_TRUE(run_until([&] { return n->done; }, 5s)) << "no room was made";
  ASSERT_TRUE(n->socket) << n->wake_error << n->other_error;
  EXPECT_EQ(spark("idle").state(), SparkState::sleeping);
  for (const char* name : {"session", "recent", "held"}) {
    EXPECT_EQ(fake(name).sleeps_seen().size(), 0u) << name << " was asked to sleep";
    EXPECT_EQ(spark(name).state(), SparkState::running) << name;
  }
  ASSERT_EQ(causes_seen("newcomer").size(), 1u);
  EXPECT_THAT(causes_seen("newcomer")[0], HasSubstr("after idle was put to sleep to make room"));
  spark("session").connection_closed();
}

TEST_F(RunningCapTest, ASparkWithAnOpenConnectionIsNeverEvicted) {
  // evict_idle_after is short, so the spark's last activity soon is older than that; only its
  // open connection keeps it. The cap looks again every tick while the wake waits.
  constexpr auto kShortWakeTimeout = 800ms;
  cap_.configure(1, config::Duration{100ms});
  add_spark("alpha", kLongWakeTimeout, system_clock::now() - 1h);
  add_spark("bravo", kShortWakeTimeout);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  spark("alpha").connection_opened();
  start_follow_ticks();

  auto b = connect("bravo");
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  EXPECT_FALSE(b->socket);
  EXPECT_THAT(b->wake_error, HasSubstr("limits.max_running 1"));
  EXPECT_THAT(b->wake_error, HasSubstr("1st in line"));
  EXPECT_EQ(fake("alpha").sleeps_seen().size(), 0u);
  EXPECT_EQ(spark("alpha").state(), SparkState::running);
  EXPECT_EQ(fake("bravo").wakes.load(), 0);
  EXPECT_EQ(metric("spark_gateway_evictions_total"), 0);
  spark("alpha").connection_closed();
}

TEST_F(RunningCapTest, ASparkActiveWithinEvictIdleAfterIsNotEvicted) {
  constexpr auto kShortWakeTimeout = 500ms;
  cap_.configure(1, config::Duration{1min});
  add_spark("alpha", kLongWakeTimeout, system_clock::now() - 10s);
  add_spark("bravo", kShortWakeTimeout);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  start_follow_ticks();
  auto b = connect("bravo");
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  EXPECT_FALSE(b->socket);
  EXPECT_THAT(b->wake_error, HasSubstr("limits.max_running"));
  EXPECT_EQ(fake("alpha").sleeps_seen().size(), 0u);
  EXPECT_EQ(spark("alpha").state(), SparkState::running);
}

TEST_F(RunningCapTest, AKeepAwakeHoldsAgainstEvictionUntilItIsCleared) {
  constexpr auto kShortWakeTimeout = 500ms;
  const auto now = system_clock::now();
  cap_.configure(1, config::Duration{1min});
  add_spark("alpha", kLongWakeTimeout, now - 10min);
  add_spark("bravo", kShortWakeTimeout);
  add_spark("charlie");
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  tracker_.set_keep_awake("alpha", now + 1h, now);
  start_follow_ticks();

  auto b = connect("bravo");
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  EXPECT_FALSE(b->socket);
  EXPECT_EQ(fake("alpha").sleeps_seen().size(), 0u);
  EXPECT_EQ(spark("alpha").state(), SparkState::running);

  // The same spark, once the hold is gone, is the one put to sleep.
  tracker_.set_keep_awake("alpha", std::nullopt, system_clock::now());
  auto c = connect("charlie");
  ASSERT_TRUE(run_until([&] { return c->done; }, 5s));
  ASSERT_TRUE(c->socket) << c->wake_error << c->other_error;
  EXPECT_EQ(spark("alpha").state(), SparkState::sleeping);
  ASSERT_EQ(causes_seen("charlie").size(), 1u);
  EXPECT_THAT(causes_seen("charlie")[0], HasSubstr("after alpha was put to sleep to make room"));
}

TEST_F(RunningCapTest, ADeclinedEvictionIsNotRetriedAtOnceAgainstTheSameSpark) {
  constexpr auto kShortWakeTimeout = 1s;
  cap_.configure(1, config::Duration{1min});
  add_spark("alpha", kLongWakeTimeout, system_clock::now() - 10min);
  add_spark("bravo", kShortWakeTimeout);
  fake("alpha").sleep_declines_times = 1000;  // a session through another replica
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  start_follow_ticks();  // the cap looks again every 50 ms while bravo waits

  auto b = connect("bravo");
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  EXPECT_FALSE(b->socket);
  EXPECT_EQ(fake("alpha").sleeps_seen().size(), 1u) << "the declined eviction was asked again at once";
  EXPECT_EQ(fake("alpha").sleeps_declined.load(), 1);
  EXPECT_EQ(spark("alpha").state(), SparkState::running);
  EXPECT_EQ(metric("spark_gateway_evictions_total"), 0);
}

TEST_F(RunningCapTest, ADeclinedEvictionTurnsToTheNextIdlest) {
  const auto now = system_clock::now();
  cap_.configure(2, config::Duration{1min});
  add_spark("alpha", kLongWakeTimeout, now - 10min);
  add_spark("bravo", kLongWakeTimeout, now - 5min);
  add_spark("charlie");
  fake("alpha").sleep_declines_times = 1000;
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  ASSERT_NO_FATAL_FAILURE(bring_up("bravo"));

  auto c = connect("charlie");
  ASSERT_TRUE(run_until([&] { return c->done; }, 5s));
  ASSERT_TRUE(c->socket) << c->wake_error << c->other_error;
  EXPECT_EQ(fake("alpha").sleeps_seen().size(), 1u);
  EXPECT_EQ(spark("alpha").state(), SparkState::running);
  EXPECT_EQ(spark("bravo").state(), SparkState::sleeping);
  ASSERT_EQ(causes_seen("charlie").size(), 1u);
  EXPECT_THAT(causes_seen("charlie")[0], HasSubstr("after bravo was put to sleep to make room"));
  EXPECT_EQ(metric("spark_gateway_evictions_total"), 1);
}

// A failed spark whose backend still shows something running holds a place
// (Spark::holds_place); idle, with no session and no keep-awake, it may make room like a
// running one (the reaper treats it as idle too).
TEST_F(RunningCapTest, AFailedSparkHoldingAPlaceMayBeEvicted) {
  constexpr auto kShortWakeTimeout = 1s;
  cap_.configure(1, config::Duration{1min});
  add_spark("alpha", kLongWakeTimeout, system_clock::now() - 10min);
  add_spark("bravo", kShortWakeTimeout);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  fake("alpha").failed_reason = "sshd exited";
  spark("alpha").follow_backend(system_clock::now());
  ASSERT_EQ(spark("alpha").state(), SparkState::failed);
  ASSERT_TRUE(spark("alpha").holds_place());
  start_follow_ticks();

  auto b = connect("bravo");
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  EXPECT_TRUE(b->socket) << "the idle failed spark kept its place: " << b->wake_error;
  EXPECT_EQ(fake("alpha").sleeps_seen().size(), 1u);
}

// The room an eviction made for a wake that gave up meanwhile is not that wake's story to
// tell: a later wake that never stood in line is not "woken after X was put to sleep".
TEST_F(RunningCapTest, AnEvictionForAWakeThatGaveUpIsNotCreditedToALaterWake) {
  constexpr auto kShortWakeTimeout = 300ms;
  cap_.configure(1, config::Duration{1min});
  add_spark("alpha", kLongWakeTimeout, system_clock::now() - 10min);
  add_spark("bravo", kShortWakeTimeout);
  add_spark("charlie");
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  close_gate("alpha");  // its eviction takes longer than bravo waits

  auto b = connect("bravo");
  ASSERT_TRUE(run_until([&] { return fake("alpha").sleeps_begun.load() == 1; }, 5s)) << "no eviction began";
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  EXPECT_FALSE(b->socket);
  release_gate("alpha");
  ASSERT_TRUE(run_until([&] { return spark("alpha").state() == SparkState::sleeping; }, 5s));

  auto c = connect("charlie");
  ASSERT_TRUE(run_until([&] { return c->done; }, 5s));
  ASSERT_TRUE(c->socket) << c->wake_error << c->other_error;
  ASSERT_EQ(causes_seen("charlie").size(), 1u);
  EXPECT_EQ(causes_seen("charlie")[0], "a test client");
}

// ---------------------------------------------------------------------------
// Claims where other gateways count places (Backend::claim_place)
// ---------------------------------------------------------------------------

TEST_F(RunningCapTest, ARefusedClaimKeepsTheWakeInLineAndItIsAskedAgain) {
  cap_.configure(2, std::nullopt);
  add_spark("alpha");
  fake("alpha").shares_activity = true;
  fake("alpha").claim_refuses_times = 1;  // another replica's wake took the last place, for now

  auto a = connect("alpha");
  ASSERT_TRUE(run_until([&] { return fake("alpha").claims.load() == 1; }, 2s));
  EXPECT_TRUE(queued_at("alpha", 1, 500ms)) << "state " << status("alpha").state;
  EXPECT_EQ(fake("alpha").wakes.load(), 0);
  EXPECT_FALSE(a->done);

  ASSERT_TRUE(run_until([&] { return a->done; }, 5s));
  ASSERT_TRUE(a->socket) << a->wake_error << a->other_error;
  EXPECT_EQ(fake("alpha").claims.load(), 2);
  EXPECT_EQ(fake("alpha").claim_max_running.load(), 2);
  EXPECT_EQ(fake("alpha").wakes.load(), 1);
  EXPECT_EQ(status("alpha").queue_position, std::nullopt);
}

TEST_F(RunningCapTest, AGrantedClaimLetsTheWakeGoAtOnce) {
  cap_.configure(3, std::nullopt);
  add_spark("alpha");
  fake("alpha").shares_activity = true;
  auto a = connect("alpha");
  ASSERT_TRUE(run_until([&] { return a->done; }, 5s));
  ASSERT_TRUE(a->socket) << a->wake_error << a->other_error;
  EXPECT_EQ(fake("alpha").claims.load(), 1);
  EXPECT_EQ(fake("alpha").claim_max_running.load(), 3);
  EXPECT_LT(a->took, 900ms) << "a granted claim waited as if refused";
}

TEST_F(RunningCapTest, ABackendThatSharesNoActivityIsNeverAskedToClaim) {
  cap_.configure(1, std::nullopt);
  add_spark("alpha");
  add_spark("bravo");
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  auto b = connect("bravo");
  ASSERT_TRUE(queued_at("bravo", 1));
  ASSERT_NO_FATAL_FAILURE(put_to_sleep("alpha"));
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  ASSERT_TRUE(b->socket) << b->wake_error << b->other_error;
  EXPECT_EQ(fake("alpha").claims.load(), 0);
  EXPECT_EQ(fake("bravo").claims.load(), 0);
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

TEST_F(RunningCapTest, MetricsShowRunningTheLimitTheLineTimeInLineAndEvictions) {
  const auto now = system_clock::now();
  EXPECT_FALSE(has_samples("spark_gateway_running_sparks_limit")) << "a limit shown before any cap";
  cap_.configure(2, std::nullopt);
  add_spark("alpha", kLongWakeTimeout, now - 10min);
  add_spark("bravo", kLongWakeTimeout, now - 5min);
  add_spark("charlie");
  add_spark("delta");
  add_spark("echo", 300ms);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  ASSERT_NO_FATAL_FAILURE(bring_up("bravo"));

  auto c = connect("charlie");
  ASSERT_TRUE(queued_at("charlie", 1));
  auto d = connect("delta");
  ASSERT_TRUE(queued_at("delta", 2));
  cap_.changed();
  EXPECT_EQ(metric("spark_gateway_running_sparks"), 2);
  EXPECT_EQ(metric("spark_gateway_running_sparks_limit"), 2);
  EXPECT_EQ(metric("spark_gateway_wake_queue_length"), 2);
  EXPECT_EQ(metric("spark_gateway_evictions_total"), 0);

  // Time in line is measured: make charlie wait a little before its place comes.
  EXPECT_FALSE(run_until([&] { return c->done; }, 200ms));
  ASSERT_NO_FATAL_FAILURE(put_to_sleep("bravo"));
  ASSERT_TRUE(run_until([&] { return c->done; }, 5s));
  ASSERT_TRUE(c->socket) << c->wake_error;
  EXPECT_EQ(metric("spark_gateway_running_sparks"), 2);
  EXPECT_EQ(metric("spark_gateway_wake_queue_length"), 1);
  EXPECT_EQ(metric(R"(spark_gateway_wake_queue_seconds_count{outcome="admitted"})"), 1);
  EXPECT_GE(metric(R"(spark_gateway_wake_queue_seconds_sum{outcome="admitted"})"), 0.2);
  EXPECT_EQ(metric(R"(spark_gateway_wake_queue_seconds_count{outcome="gave_up"})"), 0);

  // Eviction turned on by a reload: alpha (idle longest, no session) makes room for delta.
  cap_.configure(2, config::Duration{1min});
  ASSERT_TRUE(run_until([&] { return d->done; }, 5s));
  ASSERT_TRUE(d->socket) << d->wake_error;
  EXPECT_EQ(spark("alpha").state(), SparkState::sleeping);
  EXPECT_EQ(metric("spark_gateway_evictions_total"), 1);
  EXPECT_EQ(metric(R"(spark_gateway_wake_queue_seconds_count{outcome="admitted"})"), 2);

  // A wake that gives up: charlie and delta have sessions, nothing can be evicted.
  spark("charlie").connection_opened();
  spark("delta").connection_opened();
  auto e = connect("echo");
  ASSERT_TRUE(queued_at("echo", 1));
  cap_.changed();
  EXPECT_EQ(metric("spark_gateway_wake_queue_length"), 1);
  ASSERT_TRUE(run_until([&] { return e->done; }, 5s));
  EXPECT_FALSE(e->socket);
  EXPECT_EQ(metric(R"(spark_gateway_wake_queue_seconds_count{outcome="gave_up"})"), 1);
  EXPECT_EQ(metric("spark_gateway_wake_queue_length"), 0);
  EXPECT_EQ(metric("spark_gateway_running_sparks"), 2);
  EXPECT_EQ(metric("spark_gateway_evictions_total"), 1);

  // No cap: no limit series.
  cap_.configure(std::nullopt, std::nullopt);
  EXPECT_FALSE(has_samples("spark_gateway_running_sparks_limit"));
  EXPECT_EQ(metric("spark_gateway_running_sparks"), 2);
  spark("charlie").connection_closed();
  spark("delta").connection_closed();
}

// ---------------------------------------------------------------------------
// Production defaults
// ---------------------------------------------------------------------------

// The config's defaults: no cap, so nobody waits in line however many sparks wake.
TEST_F(RunningCapTest, ByDefaultThereIsNoCap) {
  const auto cfg = config::parse_config(R"({"sparks": []})", "/tmp/running-cap-test/config.json");
  EXPECT_EQ(cfg.max_running, std::nullopt);
  EXPECT_EQ(cfg.evict_idle_after, std::nullopt);
  cap_.configure(cfg.max_running, cfg.evict_idle_after);
  constexpr int kSparks = 6;
  std::vector<std::shared_ptr<Outcome>> outs;
  for (int i = 0; i < kSparks; ++i) add_spark("spark-" + std::to_string(i), cfg.default_wake_timeout);
  for (int i = 0; i < kSparks; ++i) outs.push_back(connect("spark-" + std::to_string(i)));
  ASSERT_TRUE(run_until([&] { return all_connects_done(); }, 10s));
  for (const auto& o : outs) EXPECT_TRUE(o->socket) << o->wake_error << o->other_error;
  cap_.changed();
  EXPECT_EQ(metric("spark_gateway_running_sparks"), kSparks);
  EXPECT_FALSE(has_samples("spark_gateway_running_sparks_limit"));
  EXPECT_EQ(metric("spark_gateway_wake_queue_length"), 0);
}

// limits.max_running alone: eviction stays off, so a spark idle for hours keeps its place and
// the wake in line (at the default wake_timeout, 5 minutes) waits for a sleep.
TEST_F(RunningCapTest, WithMaxRunningAloneIdleSparksAreNotEvicted) {
  const auto cfg = config::parse_config(R"({"limits": {"max_running": 1}, "sparks": []})",
                                        "/tmp/running-cap-test/config.json");
  ASSERT_EQ(cfg.max_running, 1);
  EXPECT_EQ(cfg.evict_idle_after, std::nullopt);
  EXPECT_EQ(cfg.default_wake_timeout, config::Duration{5min});
  cap_.configure(cfg.max_running, cfg.evict_idle_after);
  add_spark("alpha", cfg.default_wake_timeout, system_clock::now() - 10h);
  add_spark("bravo", cfg.default_wake_timeout);
  ASSERT_NO_FATAL_FAILURE(bring_up("alpha"));
  start_follow_ticks();

  auto b = connect("bravo");
  ASSERT_TRUE(queued_at("bravo", 1));
  EXPECT_FALSE(run_until([&] { return b->done || !fake("alpha").sleeps_seen().empty(); }, 500ms));
  EXPECT_EQ(fake("alpha").sleeps_seen().size(), 0u) << "evicted without limits.evict_idle_after";
  EXPECT_EQ(status("bravo").state, "queued");

  ASSERT_NO_FATAL_FAILURE(put_to_sleep("alpha"));
  ASSERT_TRUE(run_until([&] { return b->done; }, 5s));
  EXPECT_TRUE(b->socket) << b->wake_error << b->other_error;
}

}  // namespace
}  // namespace spark::gateway
