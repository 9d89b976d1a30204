#include "gateway/connection.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <functional>
#include <string>
#include <utility>

#include "config/duration.hpp"
#include "config/plural.hpp"
#include "gateway/observability/rate_limited_log.hpp"
#include "gateway/splice.hpp"
#include "gateway/tcp_keepalive.hpp"

namespace spark::gateway {
namespace {

std::string address_of(const tcp::endpoint& ep) {
  const auto a = ep.address();
  return a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
}

// Keepalive on one socket of the connection. A failure only costs dead-peer detection on it,
// so the connection goes on (and the log says why a dead peer might not be found).
void apply_keepalive(tcp::socket& socket, const config::TcpKeepalive& keepalive, std::string_view spark,
                     std::string_view side) {
  if (const auto ec = set_tcp_keepalive(socket.native_handle(), keepalive))
    spdlog::warn("spark {}: cannot set TCP keepalive on the {} socket: {}", spark, side, ec.message());
}

// How a splice ended: the metric's outcome and the close's words for the log.
std::pair<ConnectionEnd, std::string> describe_end(const std::exception_ptr& error,
                                                   const config::TcpKeepalive& keepalive) {
  if (!error) return {ConnectionEnd::closed, "closed"};
  try {
    std::rethrow_exception(error);
  } catch (const SpliceError& e) {
    if (!is_peer_unreachable(e.code())) return {ConnectionEnd::error, "closed: " + e.code().message()};
    const auto end = e.side() == SpliceSide::client ? ConnectionEnd::client_unreachable
                                                    : ConnectionEnd::spark_unreachable;
    const auto bound = std::chrono::duration_cast<std::chrono::milliseconds>(keepalive.bound());
    return {end, unreachable_words(end, bound) + " (" + e.code().message() + ")"};
  } catch (const boost::system::system_error& e) {
    return {ConnectionEnd::error, "closed: " + e.code().message()};
  } catch (const std::exception& e) {
    return {ConnectionEnd::error, "closed: " + std::string(e.what())};
  }
}

// Whether the peer has closed its side (or the socket failed), without taking a byte and even
// with bytes of its still unread (POLLRDHUP): for a connection still waiting to be spliced.
bool peer_closed(tcp::socket& socket) {
  pollfd p{socket.native_handle(), POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// A socket opened on another io_context (a wake's probe) moves to `executor`'s.
tcp::socket on_executor(tcp::socket s, const asio::any_io_executor& executor) {
  if (s.get_executor() == executor) return s;
  error_code ec;
  const auto local = s.local_endpoint(ec);
  if (ec) throw boost::system::system_error(ec);
  return tcp::socket(executor, local.protocol(), s.release());
}

}  // namespace

Connection::Connection(std::shared_ptr<Spark> spark, std::optional<config::SparkPort> port, tcp::socket client,
                       tcp::endpoint peer, SessionCore& sessions, DataWorker& worker)
    : LiveSession(std::move(spark)),
      port_(std::move(port)),
      port_metrics_(port_ ? &spark_->port_metrics(port_->name) : nullptr),
      client_(std::move(client)),
      peer_(std::move(peer)),
      sessions_(sessions),
      worker_(worker) {}

prometheus::Counter& Connection::bytes_in_counter() const {
  return port_metrics_ ? port_metrics_->bytes_client_to_spark : spark_->metrics().bytes_client_to_spark;
}

prometheus::Counter& Connection::bytes_out_counter() const {
  return port_metrics_ ? port_metrics_->bytes_spark_to_client : spark_->metrics().bytes_spark_to_client;
}

void Connection::count_spliced() {
  if (port_metrics_)
    port_metrics_->connections_spliced.Increment();
  else
    SessionCore::spliced(*this);
}

std::string Connection::port_words() const { return port_ ? " to port " + port_->name : std::string(); }

void Connection::close_sockets() {
  error_code ignored;
  client_.close(ignored);
  if (upstream_) upstream_->close(ignored);
}

void Connection::force_close() {
  if (!on_worker_) {
    close_sockets();
    return;
  }
  // On the sockets' own thread; `self` keeps them alive until then (the splice may be ending).
  asio::post(worker_.executor(), [self = shared_from_this()] { self->close_sockets(); });
}

awaitable<void> Connection::run() {
  auto self = shared_from_this();
  sessions_.track(*this);
  opened_ = std::chrono::steady_clock::now();
  error_code ignored;
  client_.set_option(tcp::no_delay(true), ignored);
  // Set once, at accept: a reload changes it for new connections only (like every socket option).
  keepalive_ = spark_->config().keepalive;
  apply_keepalive(client_, keepalive_, spark_->name(), "client");

  // Before anything counts as activity: is this a person's client, and who (a PROXY header)?
  Greeting greeting = co_await read_client_greeting();
  if (greeting.turned_away) {
    turn_away(greeting);
    co_return;
  }
  if (greeting.client) peer_ = *greeting.client;
  sessions_.open(*this);
  spark_->connection_from(peer_.address().to_string() + port_words());
  spdlog::info("spark {}: connection from {}:{}{} ({})", spark_->name(), address_of(peer_), peer_.port(),
               port_words(), to_string(spark_->state()));

  // "woken by a connection from 100.101.102.103": an Event needs no client port.
  std::string cause = "a connection from " + peer_.address().to_string() + port_words();
  const asio::any_io_executor data_executor = worker_.executor();
  const std::optional<int> spark_port = port_ ? std::optional<int>(port_->port) : std::nullopt;
  // A dev port may be waited for a while (a dev server starting), and a wake may wait in line
  // (limits.max_running): a client that leaves ends the wait.
  std::function<bool()> client_gone = [this] { return peer_closed(client_); };
  Reached reached = co_await SessionCore::reach(*spark_, std::move(cause), data_executor, spark_port,
                                                std::move(client_gone));
  std::string outcome;
  if (reached.socket) {
    try {
      reached.socket->set_option(tcp::no_delay(true), ignored);
      apply_keepalive(*reached.socket, keepalive_, spark_->name(), "upstream");
      upstream_.emplace(on_executor(std::move(*reached.socket), data_executor));
    } catch (const boost::system::system_error& e) {
      reached.error = e.code().message();
    }
  }
  if (upstream_ && client_.is_open() && !greeting.bytes.empty()) {
    // The client's first bytes, read before the wake, go first and unchanged.
    auto [ec, n] = co_await asio::async_write(*upstream_, asio::buffer(greeting.bytes),
                                              asio::as_tuple(use_awaitable));
    bytes_in_ += n;
    bytes_in_counter().Increment(static_cast<double>(n));
    if (ec) reached.error = ec.message(), upstream_.reset();
  }
  if (upstream_ && client_.is_open()) {
    count_spliced();
    start_splice(co_await asio::this_coro::executor);
    co_return;
  }
  if (upstream_)
    outcome = "closed during shutdown";
  else if (reached.failure == ConnectionOutcome::upstream_failed)
    outcome = "closed: upstream unreachable: " + reached.error;
  else if (reached.failure == ConnectionOutcome::wake_failed)
    outcome = "closed: wake failed: " + reached.error;
  else if (reached.failure == ConnectionOutcome::port_closed)
    outcome = "closed: port " + std::to_string(port_->port) + " does not answer in the spark (" + reached.error +
              ")";
  else
    outcome = "closed: " + reached.error;
  if (reached.failure == ConnectionOutcome::port_closed) port_metrics_->connections_port_closed.Increment();
  close_sockets();
  finish(outcome, std::nullopt);
}

awaitable<Greeting> Connection::read_client_greeting() {
  const auto& rules = spark_->config().clients;
  GreetingRules read;
  read.proxy = rules.proxy_protocol;
  read.proxy_trusted = sessions_.trusted_proxy(peer_.address());
  // A running spark needs no wake: its sshd answers at once (and a client that waits for the
  // server's banner is not kept waiting for wake_grace).
  read.wait_for_data = rules.wake_on == config::WakeOn::data && spark_->state() != SparkState::running;
  read.wake_grace = std::chrono::duration_cast<std::chrono::milliseconds>(rules.wake_grace);
  read.expect_ssh = !port_;
  spark_->greeting_started();  // counts against max_waiting, but is not activity
  Greeting greeting = co_await read_greeting(client_, read);
  spark_->greeting_ended();
  co_return greeting;
}

void Connection::turn_away(const Greeting& greeting) {
  const bool closed_by_gateway = !client_.is_open();  // a drain or forced sleep, meanwhile
  close_sockets();
  sessions_.close(*this, std::nullopt);
  if (closed_by_gateway) return;
  spark_->metrics().count_turned_away(*greeting.turned_away);
  log_turned_away("spark " + spark_->name(), address_of(greeting.client.value_or(peer_)), greeting.reason);
}

// Nothing waits on the splice: an idle session costs only the splice's own frames, not this
// coroutine's as well (docs/benchmarks.md, idle connections). The completion handler runs on
// the worker once the splice has closed both sockets, and posts the bookkeeping home.
void Connection::start_splice(asio::any_io_executor main) {
  on_worker_ = true;
  asio::co_spawn(worker_.executor(),
                 splice(client_, *upstream_, {bytes_in_counter(), bytes_out_counter()}, worker_.pipes()),
                 [self = shared_from_this(), main = std::move(main)](std::exception_ptr error,
                                                                     SpliceResult moved) {
                   auto ended = describe_end(error ? error : moved.error, self->keepalive_);
                   asio::post(main, [self, moved, end = ended.first, outcome = std::move(ended.second)] {
                     self->bytes_in_ += moved.client_to_upstream;
                     self->bytes_out_ += moved.upstream_to_client;
                     self->finish(outcome, end);
                   });
                 });
}

void Connection::finish(std::string_view outcome, std::optional<ConnectionEnd> end) {
  sessions_.close(*this, end);
  const auto lasted = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                            opened_);
  spdlog::info("spark {}: connection from {}:{}{} {} after {}, {} in, {} out", spark_->name(), address_of(peer_),
               peer_.port(), port_words(), outcome, config::format_duration(lasted),
               config::counted(bytes_in_, "byte"), config::counted(bytes_out_, "byte"));
}

}  // namespace spark::gateway
