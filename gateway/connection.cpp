#include "gateway/connection.hpp"

#include <spdlog/spdlog.h>

#include "config/duration.hpp"
#include "gateway/splice.hpp"

namespace spark::gateway {
namespace {

std::string peer_of(const tcp::socket& s) {
  error_code ec;
  const auto ep = s.remote_endpoint(ec);
  if (ec) return "unknown peer";
  const auto a = ep.address();
  return (a.is_v6() ? "[" + a.to_string() + "]" : a.to_string()) + ":" + std::to_string(ep.port());
}

// Just the address: an Event saying "woken by a connection from 100.101.102.103" needs no port.
std::string peer_address(const tcp::socket& s) {
  error_code ec;
  const auto ep = s.remote_endpoint(ec);
  return ec ? "an unknown peer" : ep.address().to_string();
}

}  // namespace

Connection::Connection(std::shared_ptr<Spark> spark, tcp::socket client,
                       ConnectionRegistry& registry, PipePool& pipes)
    : spark_(std::move(spark)), client_(std::move(client)), registry_(registry), pipes_(pipes) {}

void Connection::force_close() {
  error_code ignored;
  client_.close(ignored);
  if (upstream_) upstream_->close(ignored);
}

awaitable<void> Connection::run() {
  auto self = shared_from_this();
  registry_.add(this);
  const std::string peer = peer_of(client_);
  const auto opened = std::chrono::steady_clock::now();
  spark_->connection_opened();
  spdlog::info("spark {}: connection from {} ({})", spark_->name(), peer, to_string(spark_->state()));
  error_code ignored;
  client_.set_option(tcp::no_delay(true), ignored);

  std::uint64_t up = 0, down = 0;
  std::string outcome = "closed";
  auto& metrics = spark_->metrics();
  try {
    std::string cause = "a connection from " + peer_address(client_);
    upstream_.emplace(co_await spark_->connect_upstream(std::move(cause)));
    upstream_->set_option(tcp::no_delay(true), ignored);
    if (client_.is_open()) {
      metrics.count_connection(ConnectionOutcome::spliced);
      co_await splice(client_, *upstream_,
                      {up, down, metrics.bytes_client_to_spark, metrics.bytes_spark_to_client},
                      pipes_);
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
  force_close();
  spark_->connection_closed();
  registry_.remove(this);
  const auto lasted = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - opened);
  spdlog::info("spark {}: connection from {} {} after {}, {} bytes in, {} bytes out",
               spark_->name(), peer, outcome, config::format_duration(lasted), up, down);
}

}  // namespace spark::gateway
