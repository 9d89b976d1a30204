// Unit tests for gateway/front_door.hpp: the per-spark listeners. Claiming addresses (a clash
// with another spark or another socket names the spark), a reload that keeps an address keeping
// its very listener (re-pointed at the spark now serving it), a dropped address closing, an
// accepted connection spliced end to end, and the caps closing a connection before any wake.
//
// Everything real but the spark's backend: FrontDoor, SessionCore and a DataPlane (0 data
// workers: the main loop splices; 1: a worker thread does) on the test's io_context, run on this
// thread by run_until; clients are plain blocking loopback sockets (127.0.0.1); each spark's
// "sshd" is the FakeBackend's loopback acceptor (fake_backend.hpp), read with non-blocking
// syscalls. Waits poll a condition with a deadline; nothing sleeps.
//
// GCC 12 coroutine rules followed here (see gateway/asio.hpp): coroutines are free functions
// taking their arguments by value, spawned with named variables; no temporaries with
// non-trivial destructors inside a co_await expression; no capturing lambda coroutines.
#include "gateway/front_door.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
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
#include "gateway/asio.hpp"
#include "gateway/data_plane.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/session_core.hpp"
#include "gateway/spark.hpp"
#include "run_until.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// ---------------------------------------------------------------------------
// Plain sockets for the test's side: clients and the fake sshd's accepted connections
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

// A blocking connect to 127.0.0.1:port; the errno on failure.
Fd connect_to(std::uint16_t port, int* error = nullptr) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    if (error) *error = errno;
    return Fd();
  }
  if (error) *error = 0;
  return fd;
}

// A connection waiting on `listener` (an acceptor's native handle), or none yet.
Fd accept_ready(int listener) {
  pollfd p{listener, POLLIN, 0};
  // Not listening yet (a fake sshd before its wake) polls as hung up: nothing to accept.
  if (::poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) return Fd();
  return Fd(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
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

// What one end has received so far, read without blocking.
struct Received {
  std::string bytes;
  bool eof = false;
  int error = 0;  // errno of a failed read (a reset)

  void poll(int fd) {
    char buf[4096];
    while (!eof && error == 0) {
      const auto n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0)
        bytes.append(buf, static_cast<std::size_t>(n));
      else if (n == 0)
        eof = true;
      else if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      else
        error = errno;
    }
  }
  bool ended() const { return eof || error != 0; }
};

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

// A session of another kind (a jump session, say): it fills a slot like any other, and ends
// when the gateway ends it.
class TestSession final : public LiveSession {
 public:
  TestSession(std::shared_ptr<Spark> spark, SessionCore& core) : LiveSession(std::move(spark)), core_(core) {}
  void force_close() override { core_.close(*this, std::nullopt); }

 private:
  SessionCore& core_;
};

awaitable<void> reach_spark(std::shared_ptr<Spark> spark, std::shared_ptr<std::optional<Reached>> out) {
  std::string cause = "the test's bring-up";
  Reached r = co_await SessionCore::reach(*spark, std::move(cause));
  out->emplace(std::move(r));
}

// The main loop, with Asio's shutdown() callable before the members it refers to go (as
// Server does): what is still queued owns sockets of the data workers.
struct MainLoop : asio::io_context {
  using asio::io_context::shutdown;
};

// ---------------------------------------------------------------------------
// Fixture: parameterized by the number of data workers (0: the main loop splices too)
// ---------------------------------------------------------------------------

class FrontDoorTest : public ::testing::TestWithParam<int> {
 protected:
  struct Fake {
    std::shared_ptr<FakeControl> control = std::make_shared<FakeControl>();
    std::unique_ptr<tcp::acceptor> sshd;
    std::shared_ptr<Spark> spark;
  };

  void TearDown() override {
    door_.close();
    core_.close_all();
    run_until([&] { return core_.open_sessions() == 0; }, 5s);
    work_.reset();
    io_.restart();
    io_.run_for(5s);
    io_.shutdown();
    data_plane_.reset();
    pool_.join();
  }

  config::SparkConfig spark_config(const std::string& name, std::uint16_t port, const config::Address& target,
                                   std::optional<int> max_connections = std::nullopt) {
    config::SparkConfig cfg;
    cfg.name = name;
    cfg.listen = config::Address{"127.0.0.1", port};
    cfg.idle_timeout = config::MaybeNever{std::chrono::hours(2)};
    cfg.wake_timeout = 10s;
    cfg.max_connections = max_connections;
    config::ProcessBackendConfig backend;
    backend.command = {"/bin/false"};
    backend.target = target;
    cfg.backend = backend;
    return cfg;
  }

  // A sleeping fake spark served on `port`; its config is returned for claim().
  config::SparkConfig make_spark(const std::string& name, std::uint16_t port,
                                 std::optional<int> max_connections = std::nullopt) {
    auto f = std::make_unique<Fake>();
    f->sshd = std::make_unique<tcp::acceptor>(io_);
    f->sshd->open(tcp::v4());
    f->sshd->bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // refused until woken
    f->control->acceptor = f->sshd.get();
    f->control->address = config::Address{"127.0.0.1", f->sshd->local_endpoint().port()};
    auto cfg = spark_config(name, port, f->control->address, max_connections);
    f->spark = std::make_shared<Spark>(SparkEnvironment{io_.get_executor(), pool_, tracker_, &metrics_}, cfg,
                                       std::make_unique<FakeBackend>(f->control));
    sparks_[name] = f->spark;
    fakes_[name] = std::move(f);
    return cfg;
  }
  Fake& fake(const std::string& name) { return *fakes_.at(name); }
  int sshd_fd(const std::string& name) { return fake(name).sshd->native_handle(); }

  // Claims every address, then adopts the plan (what SparkSet::apply does).
  void serve(const std::vector<config::SparkConfig>& served) {
    FrontDoor::Plan plan;
    for (const auto& s : served) door_.claim(plan, s);
    door_.adopt(std::move(plan), served, sparks_);
  }

  // Runs the main loop until `done()` holds or `limit` passes; returns done().
  bool run_until(const std::function<bool()>& done, steady_clock::duration limit = 10s) {
    return test::run_until(io_, done, limit);
  }

  // The next connection the fake sshd of `name` accepts, within the deadline.
  Fd accept_upstream(const std::string& name) {
    Fd upstream;
    run_until([&] {
      if (!upstream) upstream = accept_ready(sshd_fd(name));
      return static_cast<bool>(upstream);
    });
    return upstream;
  }

  // Brings `name` up through a connection of its own (then closed on both ends), so the spark
  // is running and its sshd has nothing waiting.
  void bring_up(const std::string& name) {
    auto out = std::make_shared<std::optional<Reached>>();
    asio::co_spawn(io_, reach_spark(fake(name).spark, out), asio::detached);
    ASSERT_TRUE(run_until([&] { return out->has_value(); }));
    ASSERT_TRUE((*out)->socket.has_value()) << (*out)->error;
    Fd probe = accept_upstream(name);
    ASSERT_TRUE(probe);
    ASSERT_EQ(fake(name).spark->state(), SparkState::running);
  }

  std::string what_claim_throws(const config::SparkConfig& s, FrontDoor::Plan& plan) {
    try {
      door_.claim(plan, s);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "(nothing thrown)";
  }

  int waiting_everywhere() const {
    int n = 0;
    for (const auto& [name, f] : fakes_) n += f->spark->waiting_connections();
    return n;
  }

  MainLoop io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  asio::thread_pool pool_{2};
  activity::ActivityTracker tracker_;
  Metrics metrics_{"test"};
  config::Config cfg_;
  std::map<std::string, std::unique_ptr<Fake>> fakes_;
  std::map<std::string, std::shared_ptr<Spark>> sparks_;
  std::unique_ptr<DataPlane> data_plane_ = std::make_unique<DataPlane>(io_, GetParam(), 16);
  SessionCore core_{cfg_, [this] { return waiting_everywhere(); }};
  FrontDoor door_{io_, *data_plane_, core_};
  std::vector<std::unique_ptr<TestSession>> sessions_;  // ended by TearDown's close_all()
};

// ---------------------------------------------------------------------------
// claim()
// ---------------------------------------------------------------------------

TEST_P(FrontDoorTest, ClaimNamesTheSparkWhenTwoSparksShareAnAddress) {
  const auto port = free_port();
  const auto a = make_spark("brave-dolphin", port);
  const auto b = make_spark("calm-otter", port);
  FrontDoor::Plan plan;
  door_.claim(plan, a);
  EXPECT_EQ(what_claim_throws(b, plan),
            "spark calm-otter: 127.0.0.1:" + std::to_string(port) + " is already in use by another spark");
}

TEST_P(FrontDoorTest, ClaimNamesTheSparkWhenAnotherSocketHoldsTheAddress) {
  tcp::acceptor squatter(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // listening
  const auto port = squatter.local_endpoint().port();
  const auto a = make_spark("brave-dolphin", port);
  FrontDoor::Plan plan;
  const auto what = what_claim_throws(a, plan);
  EXPECT_THAT(what, StartsWith("spark brave-dolphin: cannot listen on 127.0.0.1:" + std::to_string(port) + ": "));
  EXPECT_THAT(what, HasSubstr("in use"));
}

// ---------------------------------------------------------------------------
// adopt(): a reload
// ---------------------------------------------------------------------------

// A client that connected before the reload sits in the listener's backlog, not yet accepted. A
// reload that closed and re-opened the address would reset it; the kept listener accepts it
// after the reload, for the spark that serves the address now.
TEST_P(FrontDoorTest, AReloadKeepingAnAddressKeepsItsListenerAndRepointsIt) {
  const auto port = free_port();
  const auto before = make_spark("brave-dolphin", port);
  serve({before});
  ASSERT_TRUE(run_until([&] { return io_.poll() == 0; }, 1s));  // the accept loop is waiting

  Fd client = connect_to(port);
  ASSERT_TRUE(client) << "the listener refused a connection before the reload";
  const auto after = make_spark("calm-otter", port);  // the address now serves another spark
  serve({after});

  // The connection accepted after the reload reaches the spark serving the address now.
  ASSERT_TRUE(send_all(client.get(), "SSH-2.0-OpenSSH_9.2\r\n"));
  Fd upstream = accept_upstream("calm-otter");
  ASSERT_TRUE(upstream) << "the client that connected before the reload never reached calm-otter's sshd";
  Received at_sshd;
  ASSERT_TRUE(run_until([&] {
    at_sshd.poll(upstream.get());
    return at_sshd.bytes.size() >= 21 || at_sshd.ended();
  }));
  EXPECT_EQ(at_sshd.bytes, "SSH-2.0-OpenSSH_9.2\r\n");
  ASSERT_TRUE(send_all(upstream.get(), "SSH-2.0-spark\r\n"));
  Received at_client;
  ASSERT_TRUE(run_until([&] {
    at_client.poll(client.get());
    return at_client.bytes.size() >= 15 || at_client.ended();
  }));
  EXPECT_EQ(at_client.bytes, "SSH-2.0-spark\r\n");
  EXPECT_EQ(at_client.error, 0);
  EXPECT_EQ(fake("brave-dolphin").control->wakes.load(), 0);
  EXPECT_EQ(fake("calm-otter").control->wakes.load(), 1);

  // And the address goes on accepting new clients.
  Fd another = connect_to(port);
  EXPECT_TRUE(another);
}

// Clients connecting in a loop on another thread while reloads keep the address: none refused.
// (Every connection is refused by the gateway itself, max_connections 0, so none wakes anything.)
TEST_P(FrontDoorTest, AReloadKeepingAnAddressNeverRefusesAConnection) {
  const auto port = free_port();
  const auto a = make_spark("brave-dolphin", port, /*max_connections=*/0);
  serve({a});
  std::atomic<bool> stop{false};
  std::atomic<int> connected{0}, refused{0};
  std::thread clients([&] {
    while (!stop) {
      int error = 0;
      Fd c = connect_to(port, &error);
      if (c)
        ++connected;
      else if (error == ECONNREFUSED)
        ++refused;
    }
  });
  const auto deadline = steady_clock::now() + 10s;
  int reloads = 0;
  while ((reloads < 200 || connected.load() < 200) && steady_clock::now() < deadline) {
    serve({a});
    ++reloads;
    io_.poll();  // accepts (and closes) what came in meanwhile
  }
  stop = true;
  clients.join();
  EXPECT_EQ(refused.load(), 0) << "refused during " << reloads << " reloads";
  EXPECT_GE(connected.load(), 200);
}

TEST_P(FrontDoorTest, AnAddressNoLongerInThePlanIsClosed) {
  const auto kept_port = free_port();
  const auto dropped_port = free_port();
  ASSERT_NE(kept_port, dropped_port);
  const auto a = make_spark("brave-dolphin", kept_port);
  const auto b = make_spark("calm-otter", dropped_port);
  serve({a, b});
  {
    Fd probe = connect_to(dropped_port);
    ASSERT_TRUE(probe) << "calm-otter's listener was not open to begin with";
  }
  serve({a});
  io_.poll();

  int error = 0;
  Fd refused = connect_to(dropped_port, &error);
  EXPECT_FALSE(refused) << "the dropped address still accepts connections";
  EXPECT_EQ(error, ECONNREFUSED);
  Fd kept = connect_to(kept_port, &error);
  EXPECT_TRUE(kept) << "the kept address refused: " << std::strerror(error);
}

// ---------------------------------------------------------------------------
// Accept: admitted and spliced, or refused by the caps
// ---------------------------------------------------------------------------

TEST_P(FrontDoorTest, AnAcceptedConnectionToARunningSparkIsSplicedBothWays) {
  const auto port = free_port();
  const auto a = make_spark("brave-dolphin", port);
  serve({a});
  ASSERT_NO_FATAL_FAILURE(bring_up("brave-dolphin"));
  auto& spark = *fake("brave-dolphin").spark;

  // As an SSH client does, it speaks first: its identification line.
  const std::string request = "SSH-2.0-OpenSSH_9.2 client\r\n";
  const std::string reply = "SSH-2.0-OpenSSH_9.2 spark, and a few more bytes back\r\n";
  Fd client = connect_to(port);
  ASSERT_TRUE(client);
  ASSERT_TRUE(send_all(client.get(), request));
  Fd upstream = accept_upstream("brave-dolphin");
  ASSERT_TRUE(upstream) << "the gateway never connected to the spark's sshd";
  Received at_sshd;
  ASSERT_TRUE(run_until([&] {
    at_sshd.poll(upstream.get());
    return at_sshd.bytes.size() >= request.size() || at_sshd.ended();
  }));
  EXPECT_EQ(at_sshd.bytes, request);
  EXPECT_TRUE(run_until([&] { return spark.metrics().connections_spliced.Value() == 1; }));
  EXPECT_EQ(core_.open_sessions(), 1u);
  EXPECT_EQ(spark.open_connections(), 1);

  ASSERT_TRUE(send_all(upstream.get(), reply));
  Received at_client;
  ASSERT_TRUE(run_until([&] {
    at_client.poll(client.get());
    return at_client.bytes.size() >= reply.size() || at_client.ended();
  }));
  EXPECT_EQ(at_client.bytes, reply);

  // The client leaves: the spark's side sees it, the session closes and its bytes are counted.
  client.reset();
  ASSERT_TRUE(run_until([&] {
    at_sshd.poll(upstream.get());
    return at_sshd.ended();
  }));
  upstream.reset();
  ASSERT_TRUE(run_until([&] { return core_.open_sessions() == 0; }));
  EXPECT_EQ(spark.open_connections(), 0);
  EXPECT_EQ(spark.metrics().ended_closed.Value(), 1);
  EXPECT_EQ(spark.metrics().bytes_client_to_spark.Value(), static_cast<double>(request.size()));
  EXPECT_EQ(spark.metrics().bytes_spark_to_client.Value(), static_cast<double>(reply.size()));
  EXPECT_EQ(fake("brave-dolphin").control->wakes.load(), 1) << "a running spark was woken again";
}

TEST_P(FrontDoorTest, AConnectionBeyondMaxConnectionsIsClosedWithoutAWake) {
  const auto port = free_port();
  const auto a = make_spark("brave-dolphin", port, /*max_connections=*/1);
  serve({a});
  auto& spark = *fake("brave-dolphin").spark;
  // One session open already, of another kind.
  auto& occupant = *sessions_.emplace_back(std::make_unique<TestSession>(fake("brave-dolphin").spark, core_));
  core_.open(occupant);

  Fd client = connect_to(port);
  ASSERT_TRUE(client);
  Received at_client;
  ASSERT_TRUE(run_until([&] {
    at_client.poll(client.get());
    return at_client.ended();
  })) << "the gateway kept a connection beyond max_connections open";
  EXPECT_TRUE(at_client.bytes.empty());
  EXPECT_EQ(spark.metrics().connections_rejected.Value(), 1);
  EXPECT_EQ(fake("brave-dolphin").control->wakes.load(), 0) << "a refused connection woke the spark";
  EXPECT_EQ(spark.wakes_started(), 0u);
  EXPECT_EQ(spark.state(), SparkState::sleeping);
  EXPECT_EQ(core_.open_sessions(), 1u);
  EXPECT_EQ(spark.open_connections(), 1);
}

INSTANTIATE_TEST_SUITE_P(DataWorkers, FrontDoorTest, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& param) {
                           return param.param == 0 ? std::string("MainLoopSplices")
                                                   : std::to_string(param.param) + "DataWorker";
                         });

}  // namespace
}  // namespace spark::gateway
