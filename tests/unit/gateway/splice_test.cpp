// Unit tests for gateway/splice.hpp: the data path between a client and its spark.
//
// Every test builds two loopback socket pairs:
//
//   test client  <->  gw_client_ ==splice()== gw_upstream_  <->  test server
//
// splice() runs on one single-threaded io_context (the test's main thread). The test client and
// test server are driven by plain blocking code on std::threads, with raw syscalls on their own
// fds only; the gateway sockets are touched by the main thread alone. Every run is bounded
// (io_context::run_for with a deadline, then bounded waits for the peer threads); nothing sleeps.
//
// Data is a deterministic byte stream (a function of its offset), so the receiver checks every
// byte where it lands and reports the first wrong offset; both ends also keep an FNV-1a of what
// they actually sent / received.
//
// GCC 12 coroutine rules followed here (see gateway/asio.hpp): the only coroutines are free
// functions taking references to objects that outlive them, spawned with named variables; no
// temporaries with non-trivial destructors inside a co_await expression; no lambda coroutines.
#include "gateway/splice.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <future>
#include <initializer_list>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gateway/asio.hpp"
#include "gateway/pipe_pool.hpp"
#include "gateway/tcp_keepalive.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr auto kDeadline = 30s;
constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();

// ---------------------------------------------------------------------------
// Test data: a deterministic stream, checked byte by byte, plus FNV-1a on both ends
// ---------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Byte i of the stream depends only on (seed, i): any chunking on either end yields the same
// bytes, and a lost, duplicated, reordered or foreign chunk is caught at its first byte.
struct Pattern {
  std::uint64_t seed;

  std::uint64_t word(std::uint64_t index) const { return splitmix64((seed << 40) ^ index); }

  void fill(std::uint64_t offset, char* p, std::size_t n) const {
    std::uint64_t w = word(offset >> 3);
    for (std::size_t k = 0; k < n; ++k) {
      const std::uint64_t i = offset + k;
      if ((i & 7) == 0) w = word(i >> 3);
      p[k] = static_cast<char>(w >> ((i & 7) * 8));
    }
  }

  // Offset of the first byte of p[0..n) (stream offset `offset`) that is not the stream's.
  std::optional<std::uint64_t> first_mismatch(std::uint64_t offset, const char* p,
                                              std::size_t n) const {
    std::uint64_t w = word(offset >> 3);
    for (std::size_t k = 0; k < n; ++k) {
      const std::uint64_t i = offset + k;
      if ((i & 7) == 0) w = word(i >> 3);
      if (p[k] != static_cast<char>(w >> ((i & 7) * 8))) return i;
    }
    return std::nullopt;
  }
};

constexpr std::uint64_t kFnvBasis = 0xcbf29ce484222325ull;

std::uint64_t fnv1a(std::uint64_t h, const char* p, std::size_t n) {
  for (std::size_t k = 0; k < n; ++k) {
    h ^= static_cast<unsigned char>(p[k]);
    h *= 0x100000001b3ull;
  }
  return h;
}

struct SendResult {
  std::uint64_t bytes = 0;  // accepted by the kernel
  std::uint64_t fnv = kFnvBasis;
  int err = 0;  // errno that stopped the sender, 0 if it sent everything
};

struct RecvResult {
  std::uint64_t bytes = 0;
  std::uint64_t fnv = kFnvBasis;
  std::optional<std::uint64_t> first_bad;  // stream offset of the first wrong byte
  bool eof = false;                        // recv() returned 0
  int err = 0;                             // errno of a failed recv()
};

std::string describe(const RecvResult& r) {
  std::string s = std::to_string(r.bytes) + " bytes, ";
  s += r.eof ? "EOF" : (r.err ? std::string("error: ") + std::strerror(r.err) : "still open");
  if (r.first_bad) s += ", first wrong byte at offset " + std::to_string(*r.first_bad);
  return s;
}

// Sends `total` bytes of `pat` in chunks of varied sizes (so boundaries land everywhere).
// Blocking; stops at the first error.
SendResult send_stream(int fd, const Pattern& pat, std::uint64_t total) {
  static constexpr std::size_t kSizes[] = {256 * KiB, 65537, 131071, 4093, 200 * KiB};
  SendResult r;
  std::vector<char> buf(256 * KiB);
  std::size_t turn = 0;
  while (r.bytes < total) {
    const std::size_t n = static_cast<std::size_t>(
        std::min<std::uint64_t>(kSizes[turn++ % std::size(kSizes)], total - r.bytes));
    pat.fill(r.bytes, buf.data(), n);
    std::size_t off = 0;
    while (off < n) {
      const ssize_t w = ::send(fd, buf.data() + off, n - off, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        r.err = errno;
        return r;
      }
      r.fnv = fnv1a(r.fnv, buf.data() + off, static_cast<std::size_t>(w));
      off += static_cast<std::size_t>(w);
      r.bytes += static_cast<std::uint64_t>(w);
    }
  }
  return r;
}

// Receives into `r` (continuing its offset and checksum) until it holds `limit` bytes, or EOF,
// or an error; every byte is checked against `pat`.
void recv_into(int fd, const Pattern& pat, RecvResult& r, std::uint64_t limit,
               std::size_t read_size) {
  std::vector<char> buf(read_size);
  while (r.bytes < limit && !r.eof && r.err == 0) {
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(read_size, limit - r.bytes));
    const ssize_t n = ::recv(fd, buf.data(), want, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      r.err = errno;
      break;
    }
    if (n == 0) {
      r.eof = true;
      break;
    }
    const auto got = static_cast<std::size_t>(n);
    if (!r.first_bad) r.first_bad = pat.first_mismatch(r.bytes, buf.data(), got);
    r.fnv = fnv1a(r.fnv, buf.data(), got);
    r.bytes += got;
  }
}

RecvResult recv_stream(int fd, const Pattern& pat, std::uint64_t limit = kUnlimited,
                       std::size_t read_size = 128 * KiB) {
  RecvResult r;
  recv_into(fd, pat, r, limit, read_size);
  return r;
}

// Both ends agree: every byte sent arrived, intact, followed by EOF.
void expect_intact(const SendResult& sent, const RecvResult& got, std::uint64_t total,
                   const char* what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(sent.err, 0) << "sender stopped: " << std::strerror(sent.err);
  EXPECT_EQ(sent.bytes, total);
  EXPECT_EQ(got.bytes, total) << describe(got);
  EXPECT_FALSE(got.first_bad.has_value()) << describe(got);
  EXPECT_TRUE(got.eof) << describe(got);
  EXPECT_EQ(got.fnv, sent.fnv) << "checksums differ";
}

// ---------------------------------------------------------------------------
// Peer threads and the test ends of the sockets
// ---------------------------------------------------------------------------

// A blocking peer. Only the test's own sockets are used in it.
class Peer {
 public:
  template <typename F>
  explicit Peer(F body)
      : finished_(done_.get_future()), thread_([this, body]() mutable {
          body();
          done_.set_value();
        }) {}
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() {
    if (thread_.joinable()) thread_.join();
  }

  bool wait_until(steady_clock::time_point deadline) {
    return finished_.wait_until(deadline) == std::future_status::ready;
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::promise<void> done_;
  std::future<void> finished_;
  std::thread thread_;
};

// One test end (test client or test server). Its fd is used with raw blocking syscalls by the
// peer threads; closing is under a lock so that the main thread can, if a peer is stuck, shut
// the socket down (which wakes a blocked recv/send/poll) without racing a close.
struct PeerEnd {
  explicit PeerEnd(asio::io_context& io) : socket(io) {}

  void close(bool abortive) {
    std::lock_guard lock(mu);
    if (closed) return;
    error_code ignored;
    if (abortive) socket.set_option(asio::socket_base::linger(true, 0), ignored);  // RST
    socket.close(ignored);
    closed = true;
  }
  void unblock() {
    std::lock_guard lock(mu);
    if (!closed) ::shutdown(fd, SHUT_RDWR);
  }

  tcp::socket socket;
  int fd = -1;
  std::mutex mu;
  bool closed = false;
};

// The writer of a bulk flow: sends, half-closes, then expects nothing back but EOF.
void send_then_drain(PeerEnd& me, Pattern pat, std::uint64_t total, SendResult& sent,
                     RecvResult& back) {
  sent = send_stream(me.fd, pat, total);
  ::shutdown(me.fd, SHUT_WR);
  back = recv_stream(me.fd, Pattern{0});
}

// The reader of a bulk flow: reads to EOF, then half-closes its own side.
void read_then_end(PeerEnd& me, Pattern pat, RecvResult& got) {
  got = recv_stream(me.fd, pat);
  ::shutdown(me.fd, SHUT_WR);
}

// ---------------------------------------------------------------------------
// Watching the pool from the io thread
// ---------------------------------------------------------------------------

// Samples pool.in_use() on the io thread (the only thread that touches the pool) between the
// gateway's handlers, until `stop`.
awaitable<void> watch_pool(const PipePool& pool, const bool& stop, std::size_t& max_in_use) {
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor);
  for (;;) {
    max_in_use = std::max(max_in_use, pool.in_use());
    if (stop) co_return;
    timer.expires_after(std::chrono::microseconds(250));
    co_await timer.async_wait(use_awaitable);
  }
}

// ---------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------

class SpliceTest : public ::testing::Test {
 protected:
  SpliceTest()
      : family_(prometheus::BuildCounter()
                    .Name("splice_test_bytes_total")
                    .Help("Bytes moved by splice() in the test.")
                    .Register(registry_)),
        c2u_total_(family_.Add({{"direction", "client_to_spark"}})),
        u2c_total_(family_.Add({{"direction", "spark_to_client"}})) {}

  void SetUp() override {
    pool_.emplace(16, 256 * KiB);  // a test may replace it before start()
    const tcp::endpoint loopback(asio::ip::address_v4::loopback(), 0);
    tcp::acceptor front(io_, loopback);
    client_.socket.connect(front.local_endpoint());
    front.accept(gw_client_);
    tcp::acceptor back(peer_io_, loopback);
    gw_upstream_.connect(back.local_endpoint());
    back.accept(server_.socket);
    // As connection.cpp does for the gateway's sockets; on the test ends it keeps ping-pong
    // free of Nagle / delayed-ACK stalls.
    for (tcp::socket* s : {&gw_client_, &gw_upstream_, &client_.socket, &server_.socket}) {
      s->set_option(tcp::no_delay(true));
    }
    client_.fd = client_.socket.native_handle();
    server_.fd = server_.socket.native_handle();
  }

  void start() {
    auto on_done = [this](std::exception_ptr e, SpliceResult result) {
      done_ = true;
      error_ = e ? e : result.error;  // splice() itself never throws: e would be a bug
      c2u_ = result.client_to_upstream;
      u2c_ = result.upstream_to_client;
    };
    asio::co_spawn(io_, splice(gw_client_, gw_upstream_, {c2u_total_, u2c_total_}, *pool_), on_done);
    asio::co_spawn(io_, watch_pool(*pool_, done_, max_in_use_), asio::detached);
  }

  // Runs the gateway until splice() completes (bounded), closes the gateway's sockets as its
  // caller does, then waits (bounded) for the peers. A stuck peer is a failure and is unblocked.
  void finish(std::initializer_list<Peer*> peers) {
    io_.run_for(kDeadline);
    EXPECT_TRUE(done_) << "splice() did not complete within the deadline";
    error_code ignored;
    gw_client_.close(ignored);
    gw_upstream_.close(ignored);
    if (!done_) {  // let the aborted coroutines unwind before anything is destroyed
      io_.restart();
      io_.run_for(5s);
    }
    const auto deadline = steady_clock::now() + kDeadline;
    bool stuck = false;
    for (Peer* p : peers) {
      if (!p->wait_until(deadline)) stuck = true;
    }
    if (stuck) {
      ADD_FAILURE() << "a peer thread did not finish within the deadline; unblocking it";
      client_.unblock();
      server_.unblock();
    }
    for (Peer* p : peers) p->join();
  }

  // "" when splice() ended cleanly, else the error it returned.
  std::string splice_error() const { return describe_exception(error_); }
  static std::string describe_exception(const std::exception_ptr& error) {
    if (!error) return "";
    try {
      std::rethrow_exception(error);
    } catch (const boost::system::system_error& e) {
      return "system_error: " + e.code().message();
    } catch (const asio::multiple_exceptions& e) {
      return "asio::multiple_exceptions (not a system_error), first: " +
             describe_exception(e.first_exception());
    } catch (const std::exception& e) {
      return std::string("exception: ") + e.what();
    } catch (...) {
      return "unknown exception";
    }
  }
  std::optional<error_code> splice_error_code() const {
    if (!error_) return std::nullopt;
    try {
      std::rethrow_exception(error_);
    } catch (const boost::system::system_error& e) {
      return e.code();
    } catch (...) {
      return std::nullopt;
    }
  }

  void expect_counters(std::uint64_t client_to_upstream, std::uint64_t upstream_to_client) {
    EXPECT_EQ(c2u_, client_to_upstream);
    EXPECT_EQ(u2c_, upstream_to_client);
    EXPECT_EQ(c2u_total_.Value(), static_cast<double>(client_to_upstream));
    EXPECT_EQ(u2c_total_.Value(), static_cast<double>(upstream_to_client));
  }

  // Declaration order matters: the io_context (and any coroutine frame still in it) goes
  // before the pool, counters and flags those frames refer to.
  prometheus::Registry registry_;
  prometheus::Family<prometheus::Counter>& family_;
  prometheus::Counter& c2u_total_;
  prometheus::Counter& u2c_total_;
  std::uint64_t c2u_ = 0;
  std::uint64_t u2c_ = 0;
  std::optional<PipePool> pool_;
  bool done_ = false;
  std::exception_ptr error_;
  std::size_t max_in_use_ = 0;

  asio::io_context io_;       // the gateway's; run by the test's main thread only
  asio::io_context peer_io_;  // owns the test ends; never run (they are used synchronously)
  tcp::socket gw_client_{io_};
  tcp::socket gw_upstream_{io_};
  PeerEnd client_{peer_io_};
  PeerEnd server_{peer_io_};
};

const Pattern kUp{0xC1};    // client -> server data
const Pattern kDown{0x5E};  // server -> client data

// ---------------------------------------------------------------------------
// 1. Interactive traffic
// ---------------------------------------------------------------------------

struct PingPongResult {
  std::uint64_t client_bytes = 0;  // client -> server
  std::uint64_t server_bytes = 0;  // server -> client
  std::string failure;             // empty if everything arrived as sent
};

// Sends n bytes of `pat` at stream offset `offset` on `from`, reads exactly n on `to` and checks
// them. Returns "" or what went wrong.
std::string one_message(int from, int to, const Pattern& pat, std::uint64_t offset,
                        std::size_t n) {
  std::vector<char> buf(n);
  pat.fill(offset, buf.data(), n);
  std::size_t off = 0;
  while (off < n) {
    const ssize_t w = ::send(from, buf.data() + off, n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return std::string("send: ") + std::strerror(errno);
    off += static_cast<std::size_t>(w);
  }
  std::fill(buf.begin(), buf.end(), '\0');
  off = 0;
  while (off < n) {
    const ssize_t r = ::recv(to, buf.data() + off, n - off, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return std::string("recv: ") + std::strerror(errno);
    if (r == 0) return "unexpected EOF after " + std::to_string(off) + " of " + std::to_string(n);
    off += static_cast<std::size_t>(r);
  }
  if (auto bad = pat.first_mismatch(offset, buf.data(), n)) {
    return "wrong byte at stream offset " + std::to_string(*bad);
  }
  return "";
}

// Lock-step request/response, then an orderly close: client half-closes, server sees EOF and
// half-closes, client sees EOF. One message in flight per direction, so no read can fill the
// gateway's 16 KiB buffer, even with the 16383-byte messages.
void ping_pong(int client, int server, int rounds, PingPongResult& r) {
  for (int i = 0; i < rounds && r.failure.empty(); ++i) {
    const std::size_t ask = (i % 50 == 49) ? 16383 : 1 + static_cast<std::size_t>(i * 37) % 1500;
    r.failure = one_message(client, server, kUp, r.client_bytes, ask);
    if (!r.failure.empty()) {
      r.failure = "round " + std::to_string(i) + " client->server: " + r.failure;
      return;
    }
    r.client_bytes += ask;
    const std::size_t answer = (i % 50 == 24) ? 16383 : 1 + static_cast<std::size_t>(i * 53) % 3000;
    r.failure = one_message(server, client, kDown, r.server_bytes, answer);
    if (!r.failure.empty()) {
      r.failure = "round " + std::to_string(i) + " server->client: " + r.failure;
      return;
    }
    r.server_bytes += answer;
  }
  char c;
  ::shutdown(client, SHUT_WR);
  if (::recv(server, &c, 1, 0) != 0) {
    r.failure = "server did not see EOF after the client's half-close";
    return;
  }
  ::shutdown(server, SHUT_WR);
  if (::recv(client, &c, 1, 0) != 0) r.failure = "client did not see EOF after the server's";
}

TEST_F(SpliceTest, InteractivePingPongBothWays) {
  start();
  PingPongResult r;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer peer([&] { ping_pong(client.fd, server.fd, 300, r); });
  finish({&peer});

  EXPECT_EQ(r.failure, "");
  EXPECT_EQ(splice_error(), "");
  EXPECT_GT(r.client_bytes, 0u);
  expect_counters(r.client_bytes, r.server_bytes);
  EXPECT_EQ(max_in_use_, 0u) << "interactive traffic must not take a pipe";
  EXPECT_EQ(pool_->in_use(), 0u);
}

TEST_F(SpliceTest, EmptyConnectionEndsCleanly) {
  start();
  RecvResult at_server, at_client;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer peer([&] {
    ::shutdown(client.fd, SHUT_WR);
    at_server = recv_stream(server.fd, kUp);
    ::shutdown(server.fd, SHUT_WR);
    at_client = recv_stream(client.fd, kDown);
  });
  finish({&peer});

  EXPECT_EQ(splice_error(), "");
  EXPECT_TRUE(at_server.eof && at_server.bytes == 0) << describe(at_server);
  EXPECT_TRUE(at_client.eof && at_client.bytes == 0) << describe(at_client);
  expect_counters(0, 0);
}

// ---------------------------------------------------------------------------
// 2. Bulk, one direction at a time
// ---------------------------------------------------------------------------

TEST_F(SpliceTest, Bulk64MiBClientToServer) {
  constexpr std::uint64_t kTotal = 64 * MiB;
  start();
  SendResult sent;
  RecvResult got, back;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer writer([&] { send_then_drain(client, kUp, kTotal, sent, back); });
  Peer reader([&] { read_then_end(server, kUp, got); });
  finish({&writer, &reader});

  EXPECT_EQ(splice_error(), "");
  expect_intact(sent, got, kTotal, "client -> server");
  EXPECT_TRUE(back.eof && back.bytes == 0) << describe(back);
  expect_counters(kTotal, 0);
  EXPECT_GE(max_in_use_, 1u) << "a 64 MiB flow never took a pipe (never went bulk)";
  EXPECT_LE(max_in_use_, 1u) << "one bulk direction holds at most one pipe";
  EXPECT_EQ(pool_->in_use(), 0u);
}

TEST_F(SpliceTest, Bulk64MiBServerToClient) {
  constexpr std::uint64_t kTotal = 64 * MiB;
  start();
  SendResult sent;
  RecvResult got, back;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer writer([&] { send_then_drain(server, kDown, kTotal, sent, back); });
  Peer reader([&] { read_then_end(client, kDown, got); });
  finish({&writer, &reader});

  EXPECT_EQ(splice_error(), "");
  expect_intact(sent, got, kTotal, "server -> client");
  EXPECT_TRUE(back.eof && back.bytes == 0) << describe(back);
  expect_counters(0, kTotal);
  EXPECT_GE(max_in_use_, 1u) << "a 64 MiB flow never took a pipe (never went bulk)";
  EXPECT_LE(max_in_use_, 1u);
  EXPECT_EQ(pool_->in_use(), 0u);
}

// Bulk, then interactive on the same connection: after the bulk phase the flow must give its
// pipe back. Checked from the io thread at a moment the connection is provably quiet: the
// client has its pong, so the gateway already handled the ping that preceded it (and with it,
// the small splice that ends bulk mode) and is waiting for more.
TEST_F(SpliceTest, BulkThenInteractiveGivesThePipeBack) {
  constexpr std::uint64_t kBulk = 8 * MiB;
  start();
  std::string failure;
  std::optional<std::size_t> in_use_when_quiet;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  asio::io_context& io = io_;
  const PipePool& pool = *pool_;
  Peer peer([&] {
    // Bulk client -> server, written and read concurrently.
    SendResult sent;
    std::thread bulk_writer([&] { sent = send_stream(client.fd, kUp, kBulk); });
    RecvResult got = recv_stream(server.fd, kUp, kBulk);
    bulk_writer.join();
    if (sent.bytes != kBulk || got.bytes != kBulk || got.first_bad) {
      failure = "bulk phase: sent " + std::to_string(sent.bytes) + ", got " + describe(got);
      return;
    }
    // Interactive phase, continuing both streams.
    std::uint64_t up = kBulk, down = 0;
    for (int i = 0; i < 20 && failure.empty(); ++i) {
      failure = one_message(client.fd, server.fd, kUp, up, 100);
      up += 100;
      if (failure.empty()) failure = one_message(server.fd, client.fd, kDown, down, 100);
      down += 100;
    }
    if (!failure.empty()) return;
    auto answer = std::make_shared<std::promise<std::size_t>>();
    std::future<std::size_t> value = answer->get_future();
    asio::post(io, [answer, &pool] { answer->set_value(pool.in_use()); });  // read on io thread
    if (value.wait_for(kDeadline) == std::future_status::ready) in_use_when_quiet = value.get();
    ::shutdown(client.fd, SHUT_WR);
    RecvResult end_at_server = recv_stream(server.fd, kUp);
    ::shutdown(server.fd, SHUT_WR);
    RecvResult end_at_client = recv_stream(client.fd, kDown);
    if (!end_at_server.eof || end_at_server.bytes || !end_at_client.eof || end_at_client.bytes) {
      failure = "close: server " + describe(end_at_server) + "; client " + describe(end_at_client);
    }
  });
  finish({&peer});

  EXPECT_EQ(failure, "");
  EXPECT_EQ(splice_error(), "");
  EXPECT_GE(max_in_use_, 1u) << "the bulk phase never took a pipe";
  ASSERT_TRUE(in_use_when_quiet.has_value());
  EXPECT_EQ(*in_use_when_quiet, 0u) << "the pipe was kept after the flow turned interactive";
  expect_counters(kBulk + 20 * 100, 20 * 100);
  EXPECT_EQ(pool_->in_use(), 0u);
}

// Both directions bulk at the same time, with room for two pipes, one pipe, or none.
class FullDuplexTest : public SpliceTest, public ::testing::WithParamInterface<std::size_t> {};

TEST_P(FullDuplexTest, BothDirectionsAtOnceArriveIntact) {
  constexpr std::uint64_t kTotal = 16 * MiB;
  pool_.emplace(GetParam(), 256 * KiB);
  start();
  SendResult up_sent, down_sent;
  RecvResult up_got, down_got;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer client_writer([&] {
    up_sent = send_stream(client.fd, kUp, kTotal);
    ::shutdown(client.fd, SHUT_WR);
  });
  Peer server_writer([&] {
    down_sent = send_stream(server.fd, kDown, kTotal);
    ::shutdown(server.fd, SHUT_WR);
  });
  Peer client_reader([&] { down_got = recv_stream(client.fd, kDown); });
  Peer server_reader([&] { up_got = recv_stream(server.fd, kUp); });
  finish({&client_writer, &server_writer, &client_reader, &server_reader});

  EXPECT_EQ(splice_error(), "");
  expect_intact(up_sent, up_got, kTotal, "client -> server");
  expect_intact(down_sent, down_got, kTotal, "server -> client");
  expect_counters(kTotal, kTotal);
  EXPECT_LE(max_in_use_, std::min<std::size_t>(GetParam(), 2));
  EXPECT_EQ(pool_->in_use(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Pipes, FullDuplexTest, ::testing::Values(16, 1, 0),
                         [](const ::testing::TestParamInfo<std::size_t>& tp) {
                           return "max_pipes_" + std::to_string(tp.param);
                         });

// ---------------------------------------------------------------------------
// 3. Half-close
// ---------------------------------------------------------------------------

struct HalfCloseCase {
  const char* name;
  bool server_first;              // false: the client speaks first
  std::uint64_t first_bytes;      // sent by the side that speaks first, then it half-closes
  std::uint64_t reply_bytes;      // sent by the other side after it saw EOF, then it closes
};

class HalfCloseTest : public SpliceTest, public ::testing::WithParamInterface<HalfCloseCase> {};

// The side that speaks first: send, half-close, then read the whole reply to EOF.
void speak_then_listen(PeerEnd& me, Pattern out, std::uint64_t n, Pattern in, SendResult& sent,
                       RecvResult& reply) {
  sent = send_stream(me.fd, out, n);
  ::shutdown(me.fd, SHUT_WR);
  reply = recv_stream(me.fd, in);
}

// The other side: read to EOF first, only THEN reply, then close the socket entirely.
void listen_then_reply(PeerEnd& me, Pattern in, Pattern out, std::uint64_t n, RecvResult& request,
                       SendResult& sent) {
  request = recv_stream(me.fd, in);
  if (!request.eof) return;  // reported by the test; replying would prove nothing
  sent = send_stream(me.fd, out, n);
  me.close(/*abortive=*/false);
}

TEST_P(HalfCloseTest, OtherDirectionKeepsFlowingUntilItEnds) {
  const HalfCloseCase& c = GetParam();
  start();
  SendResult first_sent, reply_sent;
  RecvResult first_got, reply_got;
  PeerEnd& first = c.server_first ? server_ : client_;
  PeerEnd& second = c.server_first ? client_ : server_;
  const Pattern first_pat = c.server_first ? kDown : kUp;
  const Pattern reply_pat = c.server_first ? kUp : kDown;
  Peer speaker([&] {
    speak_then_listen(first, first_pat, c.first_bytes, reply_pat, first_sent, reply_got);
  });
  Peer listener([&] {
    listen_then_reply(second, first_pat, reply_pat, c.reply_bytes, first_got, reply_sent);
  });
  finish({&speaker, &listener});

  EXPECT_EQ(splice_error(), "") << "a half-close must not end the connection with an error";
  expect_intact(first_sent, first_got, c.first_bytes, "first message, before its EOF");
  expect_intact(reply_sent, reply_got, c.reply_bytes, "reply, sent after that EOF");
  if (c.server_first) {
    expect_counters(c.reply_bytes, c.first_bytes);
  } else {
    expect_counters(c.first_bytes, c.reply_bytes);
  }
  EXPECT_EQ(pool_->in_use(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, HalfCloseTest,
    ::testing::Values(HalfCloseCase{"ClientFirstSmall", false, 100, 200},
                      HalfCloseCase{"ClientFirstNothing", false, 0, 1000},
                      HalfCloseCase{"ClientFirstBulk", false, 4 * MiB, 3 * MiB + 1},
                      HalfCloseCase{"ServerFirstSmall", true, 100, 200},
                      HalfCloseCase{"ServerFirstNothing", true, 0, 1000},
                      HalfCloseCase{"ServerFirstBulk", true, 4 * MiB, 3 * MiB + 1}),
    [](const ::testing::TestParamInfo<HalfCloseCase>& tp) { return tp.param.name; });

// ---------------------------------------------------------------------------
// 4. Peer reset mid-transfer
// ---------------------------------------------------------------------------

bool is_reset_error(const std::optional<error_code>& ec) {
  if (!ec) return false;
  return *ec == error_code(ECONNRESET, boost::system::system_category()) ||
         *ec == error_code(EPIPE, boost::system::system_category());
}

TEST_F(SpliceTest, ServerResetDuringUploadEndsSpliceWithAnError) {
  constexpr std::uint64_t kTotal = 64 * MiB;
  constexpr std::uint64_t kBeforeReset = 1 * MiB;
  start();
  SendResult sent;
  RecvResult at_client, at_server;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer writer([&] {
    sent = send_stream(client.fd, kUp, kTotal);  // fails once the gateway drops the connection
    at_client = recv_stream(client.fd, kDown);   // must end (EOF or error), not hang
  });
  Peer reader([&] {
    at_server = recv_stream(server.fd, kUp, kBeforeReset);
    server.close(/*abortive=*/true);
  });
  finish({&writer, &reader});

  EXPECT_TRUE(is_reset_error(splice_error_code()))
      << "splice() should end with ECONNRESET/EPIPE, got: \"" << splice_error() << "\"";
  EXPECT_EQ(at_server.bytes, kBeforeReset) << describe(at_server);
  EXPECT_FALSE(at_server.first_bad.has_value()) << describe(at_server);
  EXPECT_LT(sent.bytes, kTotal);
  EXPECT_NE(sent.err, 0) << "the client's writes should fail after the gateway closed";
  EXPECT_TRUE(at_client.eof || at_client.err != 0) << describe(at_client);
  EXPECT_GE(c2u_, kBeforeReset);
  EXPECT_LE(c2u_, sent.bytes);
  EXPECT_EQ(c2u_total_.Value(), static_cast<double>(c2u_));
  EXPECT_EQ(u2c_, 0u);
  EXPECT_EQ(pool_->in_use(), 0u) << "a pipe leaked its pool slot on the error path";
}

TEST_F(SpliceTest, ServerResetDuringDownloadEndsSpliceWithAnError) {
  constexpr std::uint64_t kBeforeReset = 4 * MiB;
  start();
  SendResult sent;
  RecvResult at_client;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer writer([&] {
    sent = send_stream(server.fd, kDown, kBeforeReset);
    server.close(/*abortive=*/true);  // RST; whatever was still unsent is discarded
  });
  Peer reader([&] { at_client = recv_stream(client.fd, kDown); });
  finish({&writer, &reader});

  EXPECT_TRUE(is_reset_error(splice_error_code()))
      << "splice() should end with ECONNRESET/EPIPE, got: \"" << splice_error() << "\"";
  EXPECT_EQ(sent.bytes, kBeforeReset);
  EXPECT_TRUE(at_client.eof || at_client.err != 0) << describe(at_client);
  EXPECT_LE(at_client.bytes, kBeforeReset) << describe(at_client);
  EXPECT_FALSE(at_client.first_bad.has_value()) << describe(at_client);
  EXPECT_EQ(u2c_, at_client.bytes) << "counted bytes the client never got, or missed some";
  EXPECT_EQ(u2c_total_.Value(), static_cast<double>(u2c_));
  EXPECT_EQ(pool_->in_use(), 0u) << "a pipe leaked its pool slot on the error path";
}

// The same reset, but after the client already half-closed: only one direction is still
// running when the error comes.
TEST_F(SpliceTest, ServerResetAfterClientHalfCloseEndsSpliceWithAnError) {
  constexpr std::uint64_t kBeforeReset = 4 * MiB;
  start();
  SendResult sent;
  RecvResult at_client, at_server;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer reader([&] {
    ::shutdown(client.fd, SHUT_WR);
    at_client = recv_stream(client.fd, kDown);
  });
  Peer writer([&] {
    at_server = recv_stream(server.fd, kUp);  // EOF: the client's half-close went through
    sent = send_stream(server.fd, kDown, kBeforeReset);
    server.close(/*abortive=*/true);
  });
  finish({&reader, &writer});

  EXPECT_TRUE(at_server.eof && at_server.bytes == 0) << describe(at_server);
  EXPECT_TRUE(is_reset_error(splice_error_code()))
      << "splice() should end with ECONNRESET/EPIPE, got: \"" << splice_error() << "\"";
  EXPECT_EQ(sent.bytes, kBeforeReset);
  EXPECT_TRUE(at_client.eof || at_client.err != 0) << describe(at_client);
  EXPECT_FALSE(at_client.first_bad.has_value()) << describe(at_client);
  EXPECT_EQ(u2c_, at_client.bytes);
  EXPECT_EQ(pool_->in_use(), 0u);
}

// ---------------------------------------------------------------------------
// 5. A slow reader
// ---------------------------------------------------------------------------

// The writer reports when its socket would block (everything between it and the reader is full)
// and when it can go on; the reader paces itself on those reports, never on wall-clock time.
class Stalls {
 public:
  void blocked() {
    {
      std::lock_guard lock(mu_);
      ++count_;
      blocked_ = true;
    }
    cv_.notify_all();
  }
  void resumed() {
    std::lock_guard lock(mu_);
    blocked_ = false;
  }
  void writer_done() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
  }
  std::uint64_t count() {
    std::lock_guard lock(mu_);
    return count_;
  }
  // Until the writer is blocked (still, or again) or has finished; false on the deadline.
  // Note that reading some bytes need not unblock the writer: the gateway's receive buffer
  // may refill the reader's side without the writer's send buffer draining at all.
  bool wait_blocked(steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return blocked_ || done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t count_ = 0;
  bool blocked_ = false;
  bool done_ = false;
};

// Like send_stream, but non-blocking sends: each EAGAIN is reported, then it waits (bounded)
// for room.
SendResult send_stream_reporting_stalls(int fd, const Pattern& pat, std::uint64_t total,
                                        Stalls& stalls) {
  SendResult r;
  std::vector<char> buf(256 * KiB);
  while (r.bytes < total && r.err == 0) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - r.bytes));
    pat.fill(r.bytes, buf.data(), n);
    std::size_t off = 0;
    while (off < n) {
      const ssize_t w = ::send(fd, buf.data() + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        stalls.blocked();
        pollfd p{fd, POLLOUT, 0};
        const int ready = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kDeadline).count()));
        if (ready == 0) r.err = ETIMEDOUT;
        if (ready < 0 && errno != EINTR) r.err = errno;
        if (r.err) break;
        stalls.resumed();
        continue;
      }
      if (w < 0) {
        r.err = errno;
        break;
      }
      r.fnv = fnv1a(r.fnv, buf.data() + off, static_cast<std::size_t>(w));
      off += static_cast<std::size_t>(w);
      r.bytes += static_cast<std::uint64_t>(w);
    }
  }
  return r;
}

struct SlowReadResult {
  RecvResult got;
  std::uint64_t stalls_before_first_read = 0;
  bool paced_in_time = true;  // every wait for the writer ended before the deadline
};

// Reads nothing until the writer has blocked; then 1000 bytes per read, pausing after every
// 2 MiB until the writer is blocked (or finished); then the rest at full speed.
void slow_read(int fd, const Pattern& pat, Stalls& stalls, SlowReadResult& out) {
  const auto deadline = steady_clock::now() + kDeadline;
  out.paced_in_time &= stalls.wait_blocked(deadline);
  out.stalls_before_first_read = stalls.count();
  for (int pause = 0; pause < 4 && !out.got.eof && out.got.err == 0; ++pause) {
    recv_into(fd, pat, out.got, out.got.bytes + 2 * MiB, 1000);
    out.paced_in_time &= stalls.wait_blocked(deadline);
  }
  recv_into(fd, pat, out.got, kUnlimited, 256 * KiB);
  ::shutdown(fd, SHUT_WR);
}

TEST_F(SpliceTest, SlowReaderGetsEverythingWithBoundedPipes) {
  constexpr std::uint64_t kTotal = 32 * MiB;
  start();
  Stalls stalls;
  SendResult sent;
  RecvResult back;
  SlowReadResult slow;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer writer([&] {
    sent = send_stream_reporting_stalls(client.fd, kUp, kTotal, stalls);
    stalls.writer_done();
    ::shutdown(client.fd, SHUT_WR);
    back = recv_stream(client.fd, kDown);
  });
  Peer reader([&] { slow_read(server.fd, kUp, stalls, slow); });
  finish({&writer, &reader});

  EXPECT_EQ(splice_error(), "");
  EXPECT_GE(slow.stalls_before_first_read, 1u)
      << "the writer never blocked while nobody read: the test did not exercise back-pressure";
  EXPECT_TRUE(slow.paced_in_time);
  expect_intact(sent, slow.got, kTotal, "client -> slow server");
  EXPECT_TRUE(back.eof && back.bytes == 0) << describe(back);
  expect_counters(kTotal, 0);
  EXPECT_LE(max_in_use_, 2u) << "pipe use must stay bounded while the reader lags";
  EXPECT_EQ(pool_->in_use(), 0u);
}

// ---------------------------------------------------------------------------
// 6. No pipe available: read/write fallback
// ---------------------------------------------------------------------------

TEST_F(SpliceTest, ExhaustedPoolFallsBackToReadWrite) {
  constexpr std::uint64_t kTotal = 16 * MiB;
  pool_.emplace(0, 256 * KiB);
  start();
  SendResult sent;
  RecvResult got, back;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer writer([&] { send_then_drain(client, kUp, kTotal, sent, back); });
  Peer reader([&] { read_then_end(server, kUp, got); });
  finish({&writer, &reader});

  EXPECT_EQ(splice_error(), "");
  expect_intact(sent, got, kTotal, "client -> server without pipes");
  EXPECT_TRUE(back.eof && back.bytes == 0) << describe(back);
  expect_counters(kTotal, 0);
  EXPECT_EQ(max_in_use_, 0u);
  EXPECT_EQ(pool_->in_use(), 0u);
}

// A pool whose every pipe is already lent out behaves the same as an empty one.
TEST_F(SpliceTest, PoolInUseElsewhereFallsBackToReadWrite) {
  constexpr std::uint64_t kTotal = 16 * MiB;
  pool_.emplace(1, 256 * KiB);
  std::optional<Pipe> taken = pool_->acquire();
  ASSERT_TRUE(taken.has_value());
  start();
  SendResult sent;
  RecvResult got, back;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer writer([&] { send_then_drain(server, kDown, kTotal, sent, back); });
  Peer reader([&] { read_then_end(client, kDown, got); });
  finish({&writer, &reader});

  EXPECT_EQ(splice_error(), "");
  expect_intact(sent, got, kTotal, "server -> client without pipes");
  expect_counters(0, kTotal);
  EXPECT_EQ(pool_->in_use(), 1u) << "only the pipe the test holds";
  pool_->release(std::move(*taken));
  EXPECT_EQ(pool_->in_use(), 0u);
}

// ---------------------------------------------------------------------------
// 7. Dead peers: keepalive and TCP_USER_TIMEOUT (tcp_keepalive.hpp, docs/dead-peers.md)
// ---------------------------------------------------------------------------

int int_option(int fd, int level, int name) {
  int value = -1;
  socklen_t len = sizeof value;
  EXPECT_EQ(::getsockopt(fd, level, name, &value, &len), 0) << std::strerror(errno);
  return value;
}

// What the kernel holds after set_tcp_keepalive(), read back option by option.
TEST(TcpKeepalive, TheKernelHoldsWhatTheConfigAsks) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  const config::TcpKeepalive defaults;  // 60s, 10s, 6
  EXPECT_FALSE(set_tcp_keepalive(fd, defaults));
  EXPECT_EQ(int_option(fd, SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE), 60);
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL), 10);
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_KEEPCNT), 6);
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 120'000) << "idle + interval x count, in ms";

  const config::TcpKeepalive quick{true, 3s, 2s, 4};
  EXPECT_FALSE(set_tcp_keepalive(fd, quick));
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE), 3);
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL), 2);
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_KEEPCNT), 4);
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 11'000);

  config::TcpKeepalive off = quick;
  off.enabled = false;
  EXPECT_FALSE(set_tcp_keepalive(fd, off));
  EXPECT_EQ(int_option(fd, SOL_SOCKET, SO_KEEPALIVE), 0);
  EXPECT_EQ(int_option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
  ::close(fd);
}

TEST(TcpKeepalive, AFailureIsReported) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);  // no TCP options here
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(set_tcp_keepalive(fd, config::TcpKeepalive{}));
  ::close(fd);
}

TEST(TcpKeepalive, OnlyATimeoutMeansThePeerIsUnreachable) {
  auto sys = [](int e) { return error_code(e, boost::system::system_category()); };
  EXPECT_TRUE(is_peer_unreachable(sys(ETIMEDOUT)));
  EXPECT_TRUE(is_peer_unreachable(sys(EHOSTUNREACH)));
  EXPECT_TRUE(is_peer_unreachable(sys(ENETUNREACH)));
  EXPECT_FALSE(is_peer_unreachable(sys(ECONNRESET))) << "a reset is an answer";
  EXPECT_FALSE(is_peer_unreachable(sys(EPIPE)));
  EXPECT_FALSE(is_peer_unreachable(asio::error::operation_aborted));
  EXPECT_FALSE(is_peer_unreachable(error_code()));
}

// Short settings: bound() = 2 s. On loopback every probe is answered, so only the user timeout
// can end a connection: a peer that takes no data (its window stays shut) for 2 s looks, to the
// kernel, exactly like one whose acknowledgements never come back.
const config::TcpKeepalive kQuick{true, 1s, 1s, 1};

// Which side splice() named as unreachable, if it ended that way.
std::optional<SpliceSide> unreachable_side(const std::exception_ptr& error) {
  if (!error) return std::nullopt;
  try {
    std::rethrow_exception(error);
  } catch (const SpliceError& e) {
    if (is_peer_unreachable(e.code())) return e.side();
  } catch (...) {
  }
  return std::nullopt;
}

// The client stops taking data (its laptop is gone) while the spark keeps sending: the data
// toward the client stays unacknowledged, keepalive cannot probe, and TCP_USER_TIMEOUT ends it.
TEST_F(SpliceTest, AClientThatTakesNothingEndsTheSpliceAsUnreachable) {
  ASSERT_FALSE(set_tcp_keepalive(gw_client_.native_handle(), kQuick));
  ASSERT_FALSE(set_tcp_keepalive(gw_upstream_.native_handle(), kQuick));
  const auto started = steady_clock::now();
  start();
  SendResult sent;
  PeerEnd& server = server_;
  // Fails once the gateway drops the connection; never gets through all of it.
  Peer writer([&] { sent = send_stream(server.fd, kDown, 1024 * MiB); });
  finish({&writer});
  const auto took = steady_clock::now() - started;

  ASSERT_EQ(unreachable_side(error_), SpliceSide::client) << "splice() ended with: \"" << splice_error() << "\"";
  EXPECT_GE(took, kQuick.bound()) << "ended before the user timeout could have passed";
  EXPECT_NE(sent.err, 0) << "the spark's writes should fail once the gateway closed its side";
  EXPECT_EQ(pool_->in_use(), 0u);
}

// The reverse: the spark's side stops taking data while the client sends.
TEST_F(SpliceTest, ASparkThatTakesNothingEndsTheSpliceAsUnreachable) {
  ASSERT_FALSE(set_tcp_keepalive(gw_client_.native_handle(), kQuick));
  ASSERT_FALSE(set_tcp_keepalive(gw_upstream_.native_handle(), kQuick));
  start();
  SendResult sent;
  PeerEnd& client = client_;
  Peer writer([&] { sent = send_stream(client.fd, kUp, 1024 * MiB); });
  finish({&writer});

  ASSERT_EQ(unreachable_side(error_), SpliceSide::upstream) << "splice() ended with: \"" << splice_error() << "\"";
  EXPECT_NE(sent.err, 0) << "the client's writes should fail once the gateway closed its side";
  EXPECT_EQ(pool_->in_use(), 0u);
}

// A reset is an answer, not a dead peer: it ends the splice as an ordinary error.
TEST_F(SpliceTest, AResetIsNotAnUnreachablePeer) {
  ASSERT_FALSE(set_tcp_keepalive(gw_client_.native_handle(), kQuick));
  ASSERT_FALSE(set_tcp_keepalive(gw_upstream_.native_handle(), kQuick));
  start();
  PeerEnd& server = server_;
  Peer resetter([&] { server.close(/*abortive=*/true); });
  finish({&resetter});
  EXPECT_TRUE(is_reset_error(splice_error_code())) << splice_error();
  EXPECT_EQ(unreachable_side(error_), std::nullopt);
}

// A live connection with nothing to say is answered at every probe: keepalive never ends it,
// however long the silence (here more than twice the bound).
TEST_F(SpliceTest, ASilentLiveConnectionOutlivesItsKeepaliveBound) {
  ASSERT_FALSE(set_tcp_keepalive(gw_client_.native_handle(), kQuick));
  ASSERT_FALSE(set_tcp_keepalive(gw_upstream_.native_handle(), kQuick));
  start();
  // The property is "nothing happens during this span", so a fixed span is the test.
  io_.run_for(2 * kQuick.bound() + 1s);
  EXPECT_FALSE(done_) << "a silent live connection was ended: \"" << splice_error() << "\"";

  // Still a working connection: one round trip, then a clean end.
  RecvResult got;
  PeerEnd& client = client_;
  PeerEnd& server = server_;
  Peer writer([&] {
    const char hello[] = "still here";
    EXPECT_EQ(::send(client.fd, hello, sizeof hello, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof hello));
    ::shutdown(client.fd, SHUT_WR);
  });
  Peer reader([&] {
    char buf[64];
    std::size_t total = 0;
    for (ssize_t n; (n = ::recv(server.fd, buf, sizeof buf, 0)) > 0;) total += static_cast<std::size_t>(n);
    got.bytes = total;
    ::shutdown(server.fd, SHUT_WR);
  });
  finish({&writer, &reader});
  EXPECT_EQ(splice_error(), "");
  EXPECT_EQ(got.bytes, sizeof("still here"));
}

}  // namespace
}  // namespace spark::gateway
