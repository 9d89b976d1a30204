// Unit tests for gateway/control_bridge.hpp: the admin API's and the jump host's way onto the
// main loop. As the admin API sees it (GatewayControl): the spark views, wake, sleep (refused
// with a session open unless forced, which ends the sessions), keep-awake, unknown names. As
// the jump host sees it (JumpGateway): a jump session admitted through the same session core as
// a TCP connection (the caps count both kinds), woken, handed a socket connected to the spark's
// sshd, closed by upstream_ended(); refused by a cap with the reason; and, while it waits for
// its wake, open in the core and ended by close_all() without ever being delivered.
//
// The parts are wired as Server wires them (SparkSet, FrontDoor, SessionCore, ActivityFlusher
// with its state dir in a temp dir, a DataPlane whose main loop splices), with the main loop
// run by a thread of the test: the bridge's calls block until the main loop answers. Each spark
// is served through SparkSet::apply (so its listener is real) and then given a FakeBackend
// (fake_backend.hpp), whose "sshd" is a loopback acceptor. Everything the test reads of the
// main loop's state it reads on the main loop (on_loop). Waits poll a condition with a
// deadline; nothing sleeps to let something happen.
#include "gateway/control_bridge.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "activity/activity_tracker.hpp"
#include "config/config.hpp"
#include "fake_backend.hpp"
#include "gateway/activity_flusher.hpp"
#include "gateway/asio.hpp"
#include "gateway/data_plane.hpp"
#include "gateway/front_door.hpp"
#include "gateway/jump/jump_gateway.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/session_core.hpp"
#include "gateway/spark.hpp"
#include "gateway/spark_set.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using ::testing::HasSubstr;
using Kind = ControlOutcome::Kind;

// ---------------------------------------------------------------------------
// Plain sockets for the test's side
// ---------------------------------------------------------------------------

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    reset();
    fd_ = std::exchange(o.fd_, -1);
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// What an SSH client sends first.
const std::string kHello = "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";

Fd connect_to(std::uint16_t port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return Fd();
  return fd;
}

bool send_all(int fd, const std::string& data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const auto n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

// Waits (poll(2), bounded) for `fd` to have `n` bytes or end; what it got.
struct Received {
  std::string bytes;
  bool eof = false;
  int error = 0;
  bool ended() const { return eof || error != 0; }
};
Received receive(int fd, std::size_t n, std::chrono::milliseconds limit = 10s) {
  Received r;
  const auto deadline = steady_clock::now() + limit;
  char buf[4096];
  while (r.bytes.size() < n && !r.ended()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
    if (left <= 0ms) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) != 1) continue;
    const auto got = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (got > 0)
      r.bytes.append(buf, static_cast<std::size_t>(got));
    else if (got == 0)
      r.eof = true;
    else if (errno != EAGAIN && errno != EWOULDBLOCK)
      r.error = errno;
  }
  return r;
}
Received receive_until_end(int fd) { return receive(fd, static_cast<std::size_t>(-1)); }

// The next connection on `listener` (an acceptor's native handle), waited for (bounded). The
// fake sshd listens only once woken; before that its socket polls as hung up, and accept fails.
Fd accept_within(int listener, std::chrono::milliseconds limit = 10s) {
  const auto deadline = steady_clock::now() + limit;
  do {
    pollfd p{listener, POLLIN, 0};
    if (::poll(&p, 1, 10) == 1 && (p.revents & POLLIN)) {
      Fd fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (fd) return fd;
    }
  } while (steady_clock::now() < deadline);
  return Fd();
}

// A port on 127.0.0.1 nobody is bound to right now, never one handed out before in this process,
// and outside the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default): a
// port from bind(0) may be given again at once to the next bind(0) (a fake sshd) or to an
// outgoing connection's local end, and the listener would then fail to bind.
std::uint16_t free_port() {
  static std::set<std::uint16_t> handed_out;
  static std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<int> pick(20000, 32000);
  asio::io_context io;
  for (int i = 0; i < 1000; ++i) {
    const auto port = static_cast<std::uint16_t>(pick(rng));
    if (handed_out.contains(port)) continue;
    tcp::acceptor probe(io);
    error_code ec;
    probe.open(tcp::v4(), ec);
    if (!ec) probe.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) probe.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
    if (ec) continue;
    handed_out.insert(port);
    return port;
  }
  throw std::runtime_error("no free port on 127.0.0.1");
}

// Polls `done` until it holds or `limit` passes (what it watches changes on other threads).
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
  const auto deadline = steady_clock::now() + limit;
  while (!done()) {
    if (steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

struct MainLoop : asio::io_context {
  using asio::io_context::shutdown;
};

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

class ControlBridgeTest : public ::testing::Test {
 protected:
  struct SparkSpec {
    std::string name;
    std::optional<int> max_connections = std::nullopt;
    std::chrono::milliseconds wake_timeout = 10s;
  };
  struct Fake {
    std::shared_ptr<FakeControl> control = std::make_shared<FakeControl>();
    std::unique_ptr<tcp::acceptor> sshd;
    std::uint16_t port = 0;  // its listener (FrontDoor)
  };

  void SetUp() override {
    char dir[] = "/tmp/control-bridge-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    state_dir_ = dir;
    flusher_ = std::make_unique<ActivityFlusher>(pool_, tracker_, metrics_, state_dir_);
    data_plane_ = std::make_unique<DataPlane>(io_, 0, 16);
    core_ = std::make_unique<SessionCore>(cfg_, [this] { return sparks_->waiting_for_wakes(); });
    door_ = std::make_unique<FrontDoor>(io_, *data_plane_, *core_);
    sparks_ = std::make_unique<SparkSet>(io_, pool_, tracker_, metrics_, *door_);
    bridge_ = std::make_unique<ControlBridge>(ControlBridge::Parts{io_, *sparks_, *core_, tracker_, *flusher_,
                                                                   [] { return true; }, [] { return true; }});
  }

  void TearDown() override {
    if (loop_.joinable()) {
      try {
        on_loop([this] {
          door_->close();
          core_->close_all();
          return 0;
        });
      } catch (const std::exception&) {
      }
      // Jump sessions waiting for a wake end when it does; delivered ones need upstream_ended.
      eventually([this] { return on_loop([this] { return core_->open_sessions(); }) == 0; }, 3s);
      work_.reset();
      io_.stop();
      loop_.join();
    }
    // What is still queued on the main loop goes before the parts it refers to (as in Server).
    io_.shutdown();
    bridge_.reset();
    sparks_.reset();
    door_.reset();
    core_.reset();
    data_plane_.reset();
    flusher_.reset();
    pool_.join();
    std::error_code ignored;
    std::filesystem::remove_all(state_dir_, ignored);
  }

  // Serves `specs` (SparkSet::apply, listeners on free ports), gives each spark a FakeBackend,
  // and starts the main loop's thread.
  void start(const std::vector<SparkSpec>& specs) {
    for (const auto& spec : specs) {
      auto f = std::make_unique<Fake>();
      f->sshd = std::make_unique<tcp::acceptor>(io_);
      f->sshd->open(tcp::v4());
      f->sshd->bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // refused until woken
      f->control->acceptor = f->sshd.get();
      f->control->address = config::Address{"127.0.0.1", f->sshd->local_endpoint().port()};
      f->port = free_port();
      config::SparkConfig s;
      s.name = spec.name;
      s.listen = config::Address{"127.0.0.1", f->port};
      s.idle_timeout = config::MaybeNever{std::chrono::hours(2)};
      s.wake_timeout = spec.wake_timeout;
      s.max_connections = spec.max_connections;
      config::ProcessBackendConfig backend;
      backend.command = {"/bin/false"};
      backend.target = f->control->address;
      s.backend = backend;
      cfg_.sparks.push_back(s);
      fakes_[spec.name] = std::move(f);
    }
    sparks_->apply(cfg_);
    // The backend SparkSet made from the config, swapped for the fake while the spark sleeps.
    for (const auto& s : cfg_.sparks) {
      auto fake_cfg = s;
      std::get<config::ProcessBackendConfig>(fake_cfg.backend).command = {"/bin/false", "fake"};
      sparks_->find(s.name)->update(fake_cfg, std::make_unique<FakeBackend>(fakes_.at(s.name)->control));
    }
    loop_ = std::thread([this] { io_.run(); });
  }

  // Runs `f` on the main loop and returns its result (bounded).
  template <typename F>
  auto on_loop(F f) -> decltype(f()) {
    using Result = decltype(f());
    auto promise = std::make_shared<std::promise<Result>>();
    auto future = promise->get_future();
    asio::post(io_, [promise, f = std::move(f)]() mutable {
      try {
        promise->set_value(f());
      } catch (...) {
        promise->set_exception(std::current_exception());
      }
    });
    if (future.wait_for(10s) != std::future_status::ready)
      throw std::runtime_error("the main loop did not answer");
    return future.get();
  }

  std::size_t open_sessions() {
    return on_loop([this] { return core_->open_sessions(); });
  }
  int open_connections(const std::string& name) {
    return on_loop([this, name] { return sparks_->find(name)->open_connections(); });
  }
  // Counters are atomic; the handles live as long as metrics_.
  SparkMetrics& metrics_of(const std::string& name) {
    return *on_loop([this, name] { return &sparks_->find(name)->metrics(); });
  }
  std::string state_of(const std::string& name) {
    const auto status = bridge_->spark(name);
    return status ? status->state : "(none)";
  }
  Fake& fake(const std::string& name) { return *fakes_.at(name); }
  int sshd_fd(const std::string& name) { return fake(name).sshd->native_handle(); }

  // A jump session for `name`, delivered: {handoff, the upstream fd, the sshd's end}.
  struct Jump {
    std::shared_ptr<UpstreamHandoff> handoff = std::make_shared<UpstreamHandoff>();
    Fd upstream;  // the jump session's socket to the spark
    Fd at_sshd;   // the spark's end of it
  };
  Jump jump_delivered(const std::string& name) {
    Jump j;
    bridge_->connect_upstream(name, "100.64.0.7", j.handoff);
    EXPECT_TRUE(j.handoff->wait_for(10s)) << "nothing delivered";
    j.upstream = Fd(j.handoff->take_fd());
    EXPECT_TRUE(j.upstream) << j.handoff->error();
    j.at_sshd = accept_within(sshd_fd(name));
    EXPECT_TRUE(j.at_sshd);
    return j;
  }

  MainLoop io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  asio::thread_pool pool_{2};
  activity::ActivityTracker tracker_;
  Metrics metrics_{"test"};
  config::Config cfg_;
  std::filesystem::path state_dir_;
  std::map<std::string, std::unique_ptr<Fake>> fakes_;
  std::unique_ptr<ActivityFlusher> flusher_;
  std::unique_ptr<DataPlane> data_plane_;
  std::unique_ptr<SessionCore> core_;
  std::unique_ptr<FrontDoor> door_;
  std::unique_ptr<SparkSet> sparks_;
  std::unique_ptr<ControlBridge> bridge_;
  std::thread loop_;
};

// ---------------------------------------------------------------------------
// GatewayControl: the admin API
// ---------------------------------------------------------------------------

TEST_F(ControlBridgeTest, SparksAndSparkShowEveryServedSpark) {
  start({{"brave-dolphin"}, {"calm-otter"}});
  const auto all = bridge_->sparks();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "brave-dolphin");
  EXPECT_EQ(all[1].name, "calm-otter");
  for (const auto& s : all) {
    EXPECT_EQ(s.state, "sleeping");
    EXPECT_EQ(s.backend, "fake");
    EXPECT_EQ(s.open_connections, 0);
  }
  const auto one = bridge_->spark("calm-otter");
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(one->name, "calm-otter");
  EXPECT_EQ(one->listen, "127.0.0.1:" + std::to_string(fake("calm-otter").port));
  EXPECT_EQ(one->target, "127.0.0.1:" + std::to_string(fake("calm-otter").control->address.port));
  EXPECT_EQ(bridge_->spark("nobody"), std::nullopt);
}

TEST_F(ControlBridgeTest, WakeWithWaitReturnsOnceTheSparkRuns) {
  start({{"brave-dolphin"}, {"calm-otter"}});
  const auto outcome = bridge_->wake("brave-dolphin", /*wait=*/true);
  EXPECT_EQ(outcome.kind, Kind::ok) << outcome.error;
  ASSERT_TRUE(outcome.spark.has_value());
  EXPECT_EQ(outcome.spark->state, "running");
  EXPECT_EQ(outcome.spark->wakes, 1u);
  EXPECT_EQ(fake("brave-dolphin").control->wakes.load(), 1);
  EXPECT_EQ(fake("calm-otter").control->wakes.load(), 0);
  EXPECT_EQ(state_of("calm-otter"), "sleeping");
  // Waking a running spark again starts nothing.
  EXPECT_EQ(bridge_->wake("brave-dolphin", true).kind, Kind::ok);
  EXPECT_EQ(fake("brave-dolphin").control->wakes.load(), 1);
}

TEST_F(ControlBridgeTest, AFailedWakeIsReportedWithItsReason) {
  start({{"brave-dolphin"}});
  fake("brave-dolphin").control->wake_throws_times = 1;
  fake("brave-dolphin").control->wake_error = "no GPU free on the node";
  const auto outcome = bridge_->wake("brave-dolphin", true);
  EXPECT_EQ(outcome.kind, Kind::failed);
  EXPECT_EQ(outcome.error, "wake failed: no GPU free on the node");
}

TEST_F(ControlBridgeTest, SleepWithAnOpenConnectionIsAConflictUnlessForcedWhichEndsIt) {
  start({{"brave-dolphin"}});
  // A real TCP connection through the spark's listener: it wakes the spark and is spliced.
  Fd client = connect_to(fake("brave-dolphin").port);
  ASSERT_TRUE(client);
  ASSERT_TRUE(send_all(client.get(), kHello));
  Fd at_sshd = accept_within(sshd_fd("brave-dolphin"));
  ASSERT_TRUE(at_sshd) << "the connection never reached the spark";
  ASSERT_TRUE(eventually([&] { return metrics_of("brave-dolphin").connections_spliced.Value() == 1; }));

  const auto refused = bridge_->sleep("brave-dolphin", /*force=*/false);
  EXPECT_EQ(refused.kind, Kind::conflict);
  EXPECT_EQ(refused.error, "spark has 1 open connection; use force to sleep it anyway");
  EXPECT_EQ(state_of("brave-dolphin"), "running");
  EXPECT_EQ(fake("brave-dolphin").control->sleeps_begun.load(), 0);

  const auto forced = bridge_->sleep("brave-dolphin", /*force=*/true);
  EXPECT_EQ(forced.kind, Kind::ok) << forced.error;
  EXPECT_EQ(state_of("brave-dolphin"), "sleeping");
  EXPECT_EQ(fake("brave-dolphin").control->sleeps_done.load(), 1);
  EXPECT_TRUE(receive_until_end(client.get()).ended()) << "the forced sleep left the client's connection open";
  EXPECT_TRUE(eventually([&] { return open_sessions() == 0; }));
}

TEST_F(ControlBridgeTest, KeepAwakeSetsAndClearsTheHold) {
  start({{"brave-dolphin"}});
  const auto before = std::chrono::system_clock::now();
  const auto set = bridge_->keep_awake("brave-dolphin", config::Duration{std::chrono::hours(1)});
  const auto after = std::chrono::system_clock::now();
  EXPECT_EQ(set.kind, Kind::ok) << set.error;
  ASSERT_TRUE(set.spark.has_value());
  ASSERT_TRUE(set.spark->keep_awake_until.has_value());
  EXPECT_GE(*set.spark->keep_awake_until, before + std::chrono::hours(1));
  EXPECT_LE(*set.spark->keep_awake_until, after + std::chrono::hours(1));
  // Held: the idle rule keeps it awake past any idle timeout.
  EXPECT_FALSE(on_loop([this] {
    return tracker_.is_idle("brave-dolphin", config::MaybeNever{std::chrono::seconds(1)},
                            std::chrono::system_clock::now() + std::chrono::minutes(30));
  }));
  const auto shown = bridge_->spark("brave-dolphin");
  ASSERT_TRUE(shown.has_value());
  EXPECT_EQ(shown->keep_awake_until, set.spark->keep_awake_until);

  const auto cleared = bridge_->keep_awake("brave-dolphin", std::nullopt);
  EXPECT_EQ(cleared.kind, Kind::ok) << cleared.error;
  ASSERT_TRUE(cleared.spark.has_value());
  EXPECT_EQ(cleared.spark->keep_awake_until, std::nullopt);
  EXPECT_EQ(bridge_->spark("brave-dolphin")->keep_awake_until, std::nullopt);
  EXPECT_TRUE(on_loop([this] {
    return tracker_.is_idle("brave-dolphin", config::MaybeNever{std::chrono::seconds(1)},
                            std::chrono::system_clock::now() + std::chrono::minutes(30));
  }));
}

TEST_F(ControlBridgeTest, HistoryShowsWhatTheSparkDidAsOfTheMainLoopsNow) {
  const auto served = std::chrono::system_clock::now();
  start({{"brave-dolphin"}, {"calm-otter"}});
  const auto woken = std::chrono::system_clock::now();
  ASSERT_EQ(bridge_->wake("brave-dolphin", true).kind, Kind::ok);
  const auto running = std::chrono::system_clock::now();
  ASSERT_EQ(bridge_->sleep("brave-dolphin", false).kind, Kind::ok);
  const auto slept = std::chrono::system_clock::now();

  const auto h = bridge_->history("brave-dolphin");
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->name, "brave-dolphin");
  EXPECT_GE(h->now, slept);
  // Asleep since served, awake from the wake until the sleep finished, asleep since.
  const auto& intervals = h->history.intervals();
  ASSERT_EQ(intervals.size(), 2u);
  EXPECT_FALSE(intervals[0].awake);
  EXPECT_GE(intervals[0].from, served);
  EXPECT_TRUE(intervals[1].awake);
  EXPECT_GE(intervals[1].from, woken);
  EXPECT_LE(intervals[1].from, running);
  EXPECT_GE(intervals[1].to, running);
  EXPECT_LE(intervals[1].to, slept);
  ASSERT_TRUE(h->history.current());
  EXPECT_FALSE(h->history.current()->awake);
  ASSERT_EQ(h->history.wakes().size(), 1u);
  EXPECT_EQ(h->history.wakes()[0].cause, "an operator (admin API)");
  // The status view's totals come from the same history.
  const auto status = bridge_->spark("brave-dolphin");
  const double awake = std::chrono::duration<double>(intervals[1].to - intervals[1].from).count();
  EXPECT_DOUBLE_EQ(status->awake_24h_seconds, awake);
  ASSERT_TRUE(status->slept_share_24h.has_value());
  EXPECT_GT(*status->slept_share_24h, 0.0);
  EXPECT_LT(*status->slept_share_24h, 1.0);

  const auto all = bridge_->histories();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].name, "calm-otter");
  EXPECT_EQ(all[0].now, all[1].now) << "the fleet's histories are read at one moment";
  EXPECT_TRUE(all[1].history.intervals().empty());
  EXPECT_TRUE(all[1].history.wakes().empty());
  EXPECT_EQ(bridge_->history("nobody"), std::nullopt);
}

TEST_F(ControlBridgeTest, AnUnknownSparkIsNotFoundForEveryCall) {
  start({{"brave-dolphin"}});
  EXPECT_EQ(bridge_->wake("nobody", true).kind, Kind::not_found);
  EXPECT_EQ(bridge_->wake("nobody", false).kind, Kind::not_found);
  EXPECT_EQ(bridge_->sleep("nobody", false).kind, Kind::not_found);
  EXPECT_EQ(bridge_->sleep("nobody", true).kind, Kind::not_found);
  EXPECT_EQ(bridge_->keep_awake("nobody", config::Duration{std::chrono::hours(1)}).kind, Kind::not_found);
  EXPECT_EQ(bridge_->keep_awake("nobody", std::nullopt).kind, Kind::not_found);
  EXPECT_EQ(bridge_->spark("nobody"), std::nullopt);
  EXPECT_FALSE(bridge_->find_spark("nobody").has_value());

  auto handoff = std::make_shared<UpstreamHandoff>();
  bridge_->connect_upstream("nobody", "100.64.0.7", handoff);
  ASSERT_TRUE(handoff->wait_for(10s));
  EXPECT_EQ(handoff->take_fd(), -1);
  EXPECT_EQ(handoff->error(), "no spark named nobody");
  EXPECT_FALSE(handoff->refused());
  EXPECT_EQ(open_sessions(), 0u);
  EXPECT_EQ(fake("brave-dolphin").control->wakes.load(), 0);
}

// ---------------------------------------------------------------------------
// JumpGateway: the jump host
// ---------------------------------------------------------------------------

TEST_F(ControlBridgeTest, AJumpSessionIsAdmittedWokenAndHandedASocketToTheSparksSshd) {
  start({{"brave-dolphin"}});
  const auto info = bridge_->find_spark("brave-dolphin");
  ASSERT_TRUE(info.has_value());
  EXPECT_FALSE(info->running);
  EXPECT_EQ(info->target_port, fake("brave-dolphin").control->address.port);

  auto handoff = std::make_shared<UpstreamHandoff>();
  bridge_->connect_upstream("brave-dolphin", "100.64.0.7", handoff);
  ASSERT_TRUE(handoff->wait_for_admission(10s)) << "no admission answer";
  EXPECT_FALSE(handoff->refused()) << handoff->error();
  ASSERT_TRUE(handoff->wait_for(10s)) << "the upstream was never delivered";
  Fd upstream(handoff->take_fd());
  ASSERT_TRUE(upstream) << handoff->error();
  EXPECT_EQ(handoff->error(), "");
  Fd at_sshd = accept_within(sshd_fd("brave-dolphin"));
  ASSERT_TRUE(at_sshd) << "the delivered socket is not connected to the spark's sshd";

  // Bytes both ways over the delivered socket.
  ASSERT_TRUE(send_all(upstream.get(), "SSH-2.0-jump\r\n"));
  EXPECT_EQ(receive(at_sshd.get(), 14).bytes, "SSH-2.0-jump\r\n");
  ASSERT_TRUE(send_all(at_sshd.get(), "SSH-2.0-spark\r\n"));
  EXPECT_EQ(receive(upstream.get(), 15).bytes, "SSH-2.0-spark\r\n");

  EXPECT_EQ(fake("brave-dolphin").control->wakes.load(), 1);
  EXPECT_EQ(state_of("brave-dolphin"), "running");
  EXPECT_EQ(open_sessions(), 1u);
  EXPECT_EQ(open_connections("brave-dolphin"), 1);
  EXPECT_EQ(metrics_of("brave-dolphin").connections_spliced.Value(), 1);
  EXPECT_TRUE(bridge_->find_spark("brave-dolphin")->running);
  bridge_->upstream_ended(handoff, 14, 15, ConnectionEnd::closed);
}

TEST_F(ControlBridgeTest, UpstreamEndedClosesTheJumpSessionAndCountsItsBytes) {
  start({{"brave-dolphin"}});
  auto j = jump_delivered("brave-dolphin");
  ASSERT_TRUE(j.upstream);
  ASSERT_EQ(open_sessions(), 1u);
  j.upstream.reset();  // the jump host closes its socket, then reports
  bridge_->upstream_ended(j.handoff, 1234, 5678, ConnectionEnd::client_unreachable);

  ASSERT_TRUE(eventually([&] { return open_sessions() == 0; })) << "the jump session stayed open";
  EXPECT_EQ(open_connections("brave-dolphin"), 0);
  auto& m = metrics_of("brave-dolphin");
  EXPECT_EQ(m.bytes_client_to_spark.Value(), 1234);
  EXPECT_EQ(m.bytes_spark_to_client.Value(), 5678);
  EXPECT_EQ(m.ended_client_unreachable.Value(), 1);
  EXPECT_EQ(on_loop([this] { return core_->closed(); }), 1u);
  // A second report of the same session changes nothing.
  bridge_->upstream_ended(j.handoff, 1, 1, ConnectionEnd::closed);
  EXPECT_EQ(on_loop([this] { return core_->closed(); }), 1u);
  EXPECT_EQ(m.bytes_client_to_spark.Value(), 1234);
}

// The caps count every kind of session: a TCP connection open through the spark's listener fills
// a spark capped at one, and a jump session is refused with the cap as the reason.
TEST_F(ControlBridgeTest, AJumpSessionBeyondACapIsRefusedWithTheReason) {
  start({{"brave-dolphin", /*max_connections=*/1}});
  Fd client = connect_to(fake("brave-dolphin").port);
  ASSERT_TRUE(client);
  ASSERT_TRUE(send_all(client.get(), kHello));
  Fd at_sshd = accept_within(sshd_fd("brave-dolphin"));
  ASSERT_TRUE(at_sshd);
  ASSERT_TRUE(eventually([&] { return open_sessions() == 1; }));

  auto handoff = std::make_shared<UpstreamHandoff>();
  bridge_->connect_upstream("brave-dolphin", "100.64.0.7", handoff);
  ASSERT_TRUE(handoff->wait_for_admission(10s));
  EXPECT_TRUE(handoff->refused()) << "a jump session was admitted past max_connections";
  EXPECT_EQ(handoff->error(), "1 connection open (sparks[].max_connections 1)");
  EXPECT_EQ(handoff->take_fd(), -1);
  EXPECT_EQ(metrics_of("brave-dolphin").connections_rejected.Value(), 1);
  EXPECT_EQ(open_sessions(), 1u);
  EXPECT_EQ(open_connections("brave-dolphin"), 1);
}

// And the other way round: an open jump session fills the slot, and a TCP connection to the
// spark's listener is closed by the gateway.
TEST_F(ControlBridgeTest, AnOpenJumpSessionCountsAgainstTheCapOfTcpConnections) {
  start({{"brave-dolphin", /*max_connections=*/1}});
  auto j = jump_delivered("brave-dolphin");
  ASSERT_TRUE(j.upstream);

  Fd client = connect_to(fake("brave-dolphin").port);
  ASSERT_TRUE(client);
  const auto got = receive_until_end(client.get());
  EXPECT_TRUE(got.ended()) << "a TCP connection was admitted past max_connections";
  EXPECT_TRUE(eventually([&] { return metrics_of("brave-dolphin").connections_rejected.Value() == 1; }));
  EXPECT_EQ(open_sessions(), 1u);
  bridge_->upstream_ended(j.handoff, 0, 0, ConnectionEnd::closed);
  EXPECT_TRUE(eventually([&] { return open_sessions() == 0; }));
}

TEST_F(ControlBridgeTest, AForcedSleepEndsAJumpSessionsUpstream) {
  start({{"brave-dolphin"}});
  auto j = jump_delivered("brave-dolphin");
  ASSERT_TRUE(j.upstream);

  EXPECT_EQ(bridge_->sleep("brave-dolphin", false).kind, Kind::conflict);
  const auto forced = bridge_->sleep("brave-dolphin", true);
  EXPECT_EQ(forced.kind, Kind::ok) << forced.error;
  // The jump session's socket ends (the relay then reports upstream_ended as usual).
  EXPECT_TRUE(receive_until_end(j.upstream.get()).ended())
      << "the forced sleep left the jump session's upstream open";
  bridge_->upstream_ended(j.handoff, 0, 0, ConnectionEnd::error);
  EXPECT_TRUE(eventually([&] { return open_sessions() == 0; }));
  EXPECT_EQ(state_of("brave-dolphin"), "sleeping");
}

// A jump session is in the session core from its admission, not from its delivery: while it
// waits for its wake it counts as open (the drain waits for it), and a close_all() (the drain
// timeout, a second SIGTERM) ends it: the socket its wake then brings is not delivered, the
// handoff gets an error instead.
TEST_F(ControlBridgeTest, AJumpSessionWaitingForItsWakeIsOpenAndNotDeliveredAfterCloseAll) {
  start({{"brave-dolphin"}});
  auto& f = fake("brave-dolphin");
  f.control->listen_on_wake = false;  // the sshd does not answer yet: the session waits

  auto handoff = std::make_shared<UpstreamHandoff>();
  bridge_->connect_upstream("brave-dolphin", "100.64.0.7", handoff);
  ASSERT_TRUE(handoff->wait_for_admission(10s));
  ASSERT_FALSE(handoff->refused()) << handoff->error();
  ASSERT_TRUE(eventually([&] { return f.control->started.load(); })) << "the jump session did not wake the spark";
  EXPECT_EQ(open_sessions(), 1u) << "a jump session waiting for its wake is not an open session";
  EXPECT_EQ(open_connections("brave-dolphin"), 1);
  EXPECT_FALSE(handoff->wait_for(0ms));

  on_loop([this] {
    core_->close_all();
    return 0;
  });
  {
    std::lock_guard lock(f.control->mu);
    f.sshd->listen();  // the sshd comes up: the wake succeeds with a connection
  }
  ASSERT_TRUE(handoff->wait_for(10s)) << "the handoff never got an answer";
  Fd delivered(handoff->take_fd());
  EXPECT_FALSE(delivered) << "a jump session the gateway ended was delivered its upstream";
  EXPECT_THAT(handoff->error(), HasSubstr("the gateway ended the connection"));
  EXPECT_TRUE(eventually([&] { return open_sessions() == 0; }));
  EXPECT_EQ(open_connections("brave-dolphin"), 0);
  EXPECT_EQ(metrics_of("brave-dolphin").connections_spliced.Value(), 0);
  // The connection the wake brought is closed, not leaked.
  Fd at_sshd = accept_within(sshd_fd("brave-dolphin"));
  ASSERT_TRUE(at_sshd);
  EXPECT_TRUE(receive_until_end(at_sshd.get()).ended());
}

// A login that went away while its spark woke: the upstream is closed and the session ends.
TEST_F(ControlBridgeTest, AJumpLoginThatLeftBeforeDeliveryIsClosed) {
  start({{"brave-dolphin"}});
  auto& f = fake("brave-dolphin");
  f.control->listen_on_wake = false;
  auto handoff = std::make_shared<UpstreamHandoff>();
  bridge_->connect_upstream("brave-dolphin", "100.64.0.7", handoff);
  ASSERT_TRUE(handoff->wait_for_admission(10s));
  ASSERT_TRUE(eventually([&] { return f.control->started.load(); }));
  EXPECT_FALSE(handoff->abandon());  // nothing arrived yet
  {
    std::lock_guard lock(f.control->mu);
    f.sshd->listen();
  }
  EXPECT_TRUE(eventually([&] { return open_sessions() == 0; })) << "an abandoned jump session stayed open";
  EXPECT_EQ(open_connections("brave-dolphin"), 0);
  Fd at_sshd = accept_within(sshd_fd("brave-dolphin"));
  ASSERT_TRUE(at_sshd);
  EXPECT_TRUE(receive_until_end(at_sshd.get()).ended()) << "the abandoned session's upstream was left open";
}

}  // namespace
}  // namespace spark::gateway
