#include "gateway/connection.hpp"

#include <spdlog/spdlog.h>

#include "config/duration.hpp"
#include "gateway/splice.hpp"

namespace spark::gateway {
namespace {

std::string address_of(const tcp::endpoint& ep) {
  const auto a = ep.address();
  return a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
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

Connection::Connection(std::shared_ptr<Spark> spark, tcp::socket client, tcp::endpoint peer,
                       ConnectionRegistry& registry, DataWorker& worker)
    : spark_(std::move(spark)),
      sockets_(std::make_shared<Sockets>(std::move(client))),
      peer_(std::move(peer)),
      registry_(registry),
      worker_(worker) {}

void Connection::Sockets::close() {
  error_code ignored;
  client.close(ignored);
  if (upstream) upstream->close(ignored);
}

void Connection::force_close() {
  if (!on_worker_) {
    sockets_->close();
    return;
  }
  asio::post(worker_.executor(), [sockets = sockets_] { sockets->close(); });
}

awaitable<void> Connection::run() {
  auto self = shared_from_this();
  registry_.add(this);
  const std::string peer = address_of(peer_) + ":" + std::to_string(peer_.port());
  const auto opened = std::chrono::steady_clock::now();
  spark_->connection_opened();
  spdlog::info("spark {}: connection from {} ({})", spark_->name(), peer, to_string(spark_->state()));
  error_code ignored;
  sockets_->client.set_option(tcp::no_delay(true), ignored);

  std::uint64_t up = 0, down = 0;
  std::string outcome = "closed";
  auto& metrics = spark_->metrics();
  try {
    // "woken by a connection from 100.101.102.103": an Event needs no port.
    std::string cause = "a connection from " + peer_.address().to_string();
    const asio::any_io_executor data_executor = worker_.executor();
    auto upstream = co_await spark_->connect_upstream(std::move(cause), data_executor);
    upstream.set_option(tcp::no_delay(true), ignored);
    sockets_->upstream.emplace(on_executor(std::move(upstream), data_executor));
    if (sockets_->client.is_open()) {
      metrics.count_connection(ConnectionOutcome::spliced);
      on_worker_ = true;
      const SpliceCounters counters{up, down, metrics.bytes_client_to_spark, metrics.bytes_spark_to_client};
      // On the worker's thread, which also closes both sockets (data_plane.hpp's rule).
      auto spliced = splice(sockets_->client, *sockets_->upstream, counters, worker_.pipes());
      co_await asio::co_spawn(data_executor, std::move(spliced), use_awaitable);
    } else {
      outcome = "closed during shutdown";
    }
  } catch (const UpstreamError& e) {
    metrics.count_connection(ConnectionOutcome::upstream_failed);
    outcome = std::string("closed: upstream unreachable: ") + e.what();
  } catch (const WakeError& e) {
    metrics.count_connection(ConnectionOutcome::wake_failed);
    outcome = std::string("closed: wake failed: ") + e.what();
  } catch (const boost::system::system_error& e) {
    outcome = std::string("closed: ") + e.code().message();
  }
  if (!on_worker_) sockets_->close();
  spark_->connection_closed();
  registry_.remove(this);
  const auto lasted = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - opened);
  spdlog::info("spark {}: connection from {} {} after {}, {} bytes in, {} bytes out",
               spark_->name(), peer, outcome, config::format_duration(lasted), up, down);
}

}  // namespace spark::gateway
