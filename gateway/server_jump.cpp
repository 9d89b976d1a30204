// Server's JumpGateway: how jump-host sessions (libssh threads) reach sparks (find_spark is in
// server_control.cpp, beside the other blocking data-plane calls). Every spark access hops onto
// the main loop; the upstream connection comes from the same single-flight
// wake as the TCP path and is handed over as a file descriptor.
#include <unistd.h>

#include "gateway/server.hpp"

namespace spark::gateway {

void Server::connect_upstream(const std::string& name, std::string cause, std::shared_ptr<UpstreamHandoff> handoff) {
  asio::post(io_, [this, name, cause = std::move(cause), handoff = std::move(handoff)]() mutable {
    asio::co_spawn(io_, jump_connect(name, std::move(cause), std::move(handoff)), asio::detached);
  });
}

awaitable<void> Server::jump_connect(std::string name, std::string cause, std::shared_ptr<UpstreamHandoff> handoff) {
  const auto spark = find(name);
  if (!spark) {
    handoff->deliver(-1, "no spark named " + name);
    co_return;
  }
  spark->connection_opened();  // like a TCP connection: activity, and awake while it is open
  std::optional<tcp::socket> upstream;
  std::string error;
  try {
    upstream.emplace(co_await spark->connect_upstream(std::move(cause)));
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!upstream) {
    spark->metrics().count_connection(ConnectionOutcome::wake_failed);
    spark->connection_closed();
    handoff->deliver(-1, error);
    co_return;
  }
  spark->metrics().count_connection(ConnectionOutcome::spliced);
  const int fd = upstream->release();
  if (!handoff->deliver(fd, {})) {  // the login went away meanwhile
    ::close(fd);
    spark->connection_closed();
  }
}

void Server::upstream_closed(const std::string& name, std::uint64_t client_to_spark, std::uint64_t spark_to_client) {
  upstream_ended(name, client_to_spark, spark_to_client, ConnectionEnd::closed);
}

void Server::upstream_ended(const std::string& name, std::uint64_t client_to_spark,
                            std::uint64_t spark_to_client, ConnectionEnd end) {
  asio::post(io_, [this, name, client_to_spark, spark_to_client, end] {
    const auto spark = find(name);
    if (!spark) return;
    spark->metrics().bytes_client_to_spark.Increment(static_cast<double>(client_to_spark));
    spark->metrics().bytes_spark_to_client.Increment(static_cast<double>(spark_to_client));
    spark->metrics().count_end(end);
    spark->connection_closed();
  });
}

}  // namespace spark::gateway
