// Unit tests for gateway/connection.hpp: one client connection, from admitted to closed. A
// sleeping spark is woken (once) and the connection spliced both ways; a failed wake closes the
// client and is counted; the gateway ending a session (drain, forced sleep) ends both sockets,
// spliced or still waiting; a client that half-closes still gets the spark's answer.
//
// Real loopback sockets on both sides: the test's client is a plain blocking socket (127.0.0.1)
// whose other end is accepted onto the data worker, as FrontDoor does; the spark is a real Spark
// with a FakeBackend whose "sshd" is a loopback acceptor (fake_backend.hpp). The main loop runs
// on this thread (run_until); the data plane has 0 workers (the main loop splices) or 1 (a
// thread does). Waits poll a condition with a deadline; nothing sleeps.
//
// GCC 12 coroutine rules followed here (see gateway/asio.hpp): the only coroutine is
// Connection::run(), spawned from the main loop as FrontDoor does; no temporaries with
// non-trivial destructors inside a co_await expression; no capturing lambda coroutines.
#include "gateway/connection.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
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

Fd connect_to(std::uint16_t port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return Fd();
  return fd;
}

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

struct Received {
  std::string bytes;
  bool eof = false;
  int error = 0;

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

// What an SSH client sends first.
const std::string kHello = "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";

struct MainLoop : asio::io_context {
  using asio::io_context::shutdown;
};

// ---------------------------------------------------------------------------
// Fixture: parameterized by the number of data workers
// ---------------------------------------------------------------------------

class ConnectionTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    sshd_.open(tcp::v4());
    sshd_.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));  // refused until woken
    fake_->acceptor = &sshd_;
    fake_->address = config::Address{"127.0.0.1", sshd_.local_endpoint().port()};
  }

  void TearDown() override {
    core_.close_all();
    run_until([&] { return core_.open_sessions() == 0; }, 5s);
    work_.reset();
    io_.restart();
    io_.run_for(5s);
    io_.shutdown();
    data_plane_.reset();
    pool_.join();
  }

  std::shared_ptr<Spark> make_spark(std::chrono::milliseconds wake_timeout = 10s) {
    config::SparkConfig cfg;
    cfg.name = "brave-dolphin";
    cfg.listen = config::Address{"127.0.0.1", 0};
    cfg.idle_timeout = config::MaybeNever{std::chrono::hours(2)};
    cfg.wake_timeout = wake_timeout;
    config::ProcessBackendConfig backend;
    backend.command = {"/bin/false"};
    backend.target = fake_->address;
    cfg.backend = backend;
    spark_ = std::make_shared<Spark>(SparkEnvironment{io_.get_executor(), pool_, tracker_, &metrics_}, cfg,
                                     std::make_unique<FakeBackend>(fake_));
    return spark_;
  }

  // A client connected and accepted onto the next data worker, its Connection admitted and
  // started on the main loop, as the front door does. Like an SSH client, it speaks first: its
  // identification line (kHello). Returns the client's end.
  Fd connect_client() {
    Fd client = connect_to(front_.local_endpoint().port());
    EXPECT_TRUE(send_all(client.get(), kHello));
    DataWorker& worker = data_plane_->next();
    tcp::endpoint peer;
    tcp::socket accepted = front_.accept(worker.executor(), peer);
    EXPECT_EQ(core_.refuse(*spark_, peer.address().to_string()), std::nullopt);
    auto connection = std::make_shared<Connection>(spark_, std::nullopt, std::move(accepted), peer, core_, worker);
    // Started from the main loop, as FrontDoor::accept_loop does: run() takes its own reference
    // before co_spawn returns.
    asio::post(io_, [this, connection] { asio::co_spawn(io_, connection->run(), asio::detached); });
    return client;
  }

  bool run_until(const std::function<bool()>& done, steady_clock::duration limit = 10s) {
    return test::run_until(io_, done, limit);
  }

  Fd accept_upstream() {
    Fd upstream;
    run_until([&] {
      if (!upstream) upstream = accept_ready(sshd_.native_handle());
      return static_cast<bool>(upstream);
    });
    return upstream;
  }

  // Runs until `fd` has received `n` bytes or its stream ended.
  Received receive(int fd, std::size_t n) {
    Received r;
    run_until([&] {
      r.poll(fd);
      return r.bytes.size() >= n || r.ended();
    });
    return r;
  }
  Received receive_until_end(int fd) {
    Received r;
    run_until([&] {
      r.poll(fd);
      return r.ended();
    });
    return r;
  }

  // A client spliced to the spark's sshd, its identification line passed on: {client, upstream}.
  std::pair<Fd, Fd> spliced_pair() {
    Fd client = connect_client();
    Fd upstream = accept_upstream();
    EXPECT_TRUE(upstream) << "the connection never reached the spark's sshd";
    if (upstream) {
      EXPECT_EQ(receive(upstream.get(), kHello.size()).bytes, kHello);
    }
    EXPECT_TRUE(run_until([&] { return spark_->metrics().connections_spliced.Value() == 1; }));
    return {std::move(client), std::move(upstream)};
  }

  MainLoop io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  asio::thread_pool pool_{2};
  activity::ActivityTracker tracker_;
  Metrics metrics_{"test"};
  config::Config cfg_;
  tcp::acceptor sshd_{io_};
  std::shared_ptr<FakeControl> fake_ = std::make_shared<FakeControl>();
  // The gateway's listener, as far as this test needs one.
  tcp::acceptor front_{io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::shared_ptr<Spark> spark_;
  std::unique_ptr<DataPlane> data_plane_ = std::make_unique<DataPlane>(io_, GetParam(), 16);
  SessionCore core_{cfg_, [this] { return spark_ ? spark_->waiting_connections() : 0; }};
};

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

TEST_P(ConnectionTest, ASleepingSparkIsWokenOnceAndTheConnectionSplicedBothWays) {
  auto spark = make_spark();
  Fd client = connect_client();
  EXPECT_TRUE(run_until([&] { return spark->open_connections() == 1; }));
  EXPECT_EQ(core_.open_sessions(), 1u);

  Fd upstream = accept_upstream();
  ASSERT_TRUE(upstream) << "the connection never reached the spark's sshd";
  EXPECT_EQ(receive(upstream.get(), kHello.size()).bytes, kHello);
  ASSERT_TRUE(run_until([&] { return spark->metrics().connections_spliced.Value() == 1; }));
  EXPECT_EQ(fake_->wakes.load(), 1);
  EXPECT_EQ(spark->state(), SparkState::running);

  const std::string banner = "SSH-2.0-OpenSSH_9.2 Debian-2\r\n";
  ASSERT_TRUE(send_all(upstream.get(), banner));
  EXPECT_EQ(receive(client.get(), banner.size()).bytes, banner);
  const std::string more = "key exchange, and so on";
  ASSERT_TRUE(send_all(client.get(), more));
  EXPECT_EQ(receive(upstream.get(), more.size()).bytes, more);

  // Both leave: the session closes, counted once, with its bytes.
  client.reset();
  EXPECT_TRUE(receive_until_end(upstream.get()).eof);
  upstream.reset();
  ASSERT_TRUE(run_until([&] { return core_.open_sessions() == 0; }));
  EXPECT_EQ(spark->open_connections(), 0);
  EXPECT_EQ(core_.closed(), 1u);
  EXPECT_EQ(spark->metrics().ended_closed.Value(), 1);
  EXPECT_EQ(spark->metrics().bytes_client_to_spark.Value(), static_cast<double>(kHello.size() + more.size()));
  EXPECT_EQ(spark->metrics().bytes_spark_to_client.Value(), static_cast<double>(banner.size()));
  EXPECT_EQ(spark->metrics().connections_wake_failed.Value(), 0);
  EXPECT_EQ(fake_->wakes.load(), 1);
}

TEST_P(ConnectionTest, TwoConnectionsDuringOneWakeShareItAndAreBothSpliced) {
  auto spark = make_spark();
  Fd first = connect_client();
  Fd second = connect_client();
  Fd up1 = accept_upstream();
  Fd up2 = accept_upstream();
  ASSERT_TRUE(up1 && up2);
  ASSERT_TRUE(run_until([&] { return spark->metrics().connections_spliced.Value() == 2; }));
  EXPECT_EQ(fake_->wakes.load(), 1) << "two connections woke the spark twice";
  EXPECT_EQ(spark->open_connections(), 2);
}

TEST_P(ConnectionTest, AFailedWakeClosesTheClientAndIsCountedAsWakeFailed) {
  fake_->wake_throws_times = 1;
  fake_->wake_error = "no GPU free on the node";
  auto spark = make_spark();
  Fd client = connect_client();

  const auto got = receive_until_end(client.get());
  EXPECT_TRUE(got.ended()) << "the client was left open after the wake failed";
  EXPECT_TRUE(got.bytes.empty());
  ASSERT_TRUE(run_until([&] { return core_.open_sessions() == 0; }));
  EXPECT_EQ(spark->open_connections(), 0);
  EXPECT_EQ(core_.closed(), 1u);
  EXPECT_EQ(spark->metrics().connections_wake_failed.Value(), 1);
  EXPECT_EQ(spark->metrics().connections_spliced.Value(), 0);
  EXPECT_EQ(spark->metrics().ended_closed.Value() + spark->metrics().ended_error.Value(), 0)
      << "a connection that never spliced has no end outcome";
}

TEST_P(ConnectionTest, ForceCloseWhileSplicedEndsBothSocketsAndTheSession) {
  auto spark = make_spark();
  auto [client, upstream] = spliced_pair();
  ASSERT_TRUE(client && upstream);
  ASSERT_EQ(core_.open_sessions(), 1u);

  core_.close_all();  // the drain timeout (a forced sleep does the same for one spark)
  EXPECT_TRUE(receive_until_end(client.get()).ended()) << "the client's connection stayed open";
  EXPECT_TRUE(receive_until_end(upstream.get()).ended()) << "the spark's connection stayed open";
  ASSERT_TRUE(run_until([&] { return core_.open_sessions() == 0; })) << "the session never left the core";
  EXPECT_EQ(spark->open_connections(), 0);
  EXPECT_EQ(spark->metrics().ended_closed.Value() + spark->metrics().ended_error.Value(), 1);
}

// A session still waiting for its wake is ended at once for its client; it leaves the core when
// the wait does, and the upstream it then gets is closed, not spliced to nobody.
TEST_P(ConnectionTest, ForceCloseWhileWaitingForTheWakeClosesTheClientAndNeverSplices) {
  fake_->listen_on_wake = false;  // the sshd does not answer yet
  auto spark = make_spark();
  Fd client = connect_client();
  ASSERT_TRUE(run_until([&] { return spark->waiting_connections() == 1 && fake_->started.load(); }));

  core_.close_all();
  EXPECT_TRUE(receive_until_end(client.get()).ended()) << "the client waited on for a wake the gateway gave up";
  EXPECT_EQ(core_.open_sessions(), 1u) << "it leaves the core when its wait ends";

  {
    std::lock_guard lock(fake_->mu);
    sshd_.listen();  // the sshd comes up: the wake ends with a connection
  }
  ASSERT_TRUE(run_until([&] { return core_.open_sessions() == 0; }));
  EXPECT_EQ(spark->open_connections(), 0);
  EXPECT_EQ(spark->metrics().connections_spliced.Value(), 0);
  Fd upstream = accept_upstream();
  ASSERT_TRUE(upstream);
  EXPECT_TRUE(receive_until_end(upstream.get()).ended()) << "the upstream of a closed session was left open";
}

// `ssh spark cmd < file`: the client's input ends (shutdown of its write side), the spark sees
// EOF and answers, and the answer still reaches the client.
TEST_P(ConnectionTest, HalfCloseTheClientsInputEndsAndItStillGetsTheSparksReply) {
  auto spark = make_spark();
  auto [client, upstream] = spliced_pair();
  ASSERT_TRUE(client && upstream);

  const std::string input = "the whole input file\n";
  ASSERT_TRUE(send_all(client.get(), input));
  ASSERT_EQ(::shutdown(client.get(), SHUT_WR), 0);
  const auto at_spark = receive_until_end(upstream.get());
  EXPECT_EQ(at_spark.bytes, input);
  EXPECT_TRUE(at_spark.eof) << "the spark never saw the end of the client's input";

  const std::string output = "sha256 of the input: 1f2e3d\n";
  ASSERT_TRUE(send_all(upstream.get(), output));
  upstream.reset();
  const auto at_client = receive_until_end(client.get());
  EXPECT_EQ(at_client.bytes, output) << "the reply after the client's half-close was lost";
  EXPECT_TRUE(at_client.eof);
  EXPECT_EQ(at_client.error, 0);

  ASSERT_TRUE(run_until([&] { return core_.open_sessions() == 0; }));
  EXPECT_EQ(spark->metrics().ended_closed.Value(), 1);
  EXPECT_EQ(spark->metrics().bytes_spark_to_client.Value(), static_cast<double>(output.size()));
}

INSTANTIATE_TEST_SUITE_P(DataWorkers, ConnectionTest, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& param) {
                           return param.param == 0 ? std::string("MainLoopSplices")
                                                   : std::to_string(param.param) + "DataWorker";
                         });

}  // namespace
}  // namespace spark::gateway
