// Server's JumpGateway: how jump-host sessions (libssh threads) reach sparks. Every spark access
// hops onto the main loop. A jump login passes the same admission as a TCP connection
// (Admission: the same caps, a refusal counted and logged the same way) and is then counted,
// woken and connected like one: the upstream comes from the same single-flight wake and is
// handed over as a file descriptor. From then on the session is in the same registry as TCP
// connections, so the drain waits for it and a forced sleep or the drain timeout ends it.
#include <unistd.h>

#include "config/duration.hpp"
#include "gateway/server.hpp"

namespace spark::gateway {

std::optional<JumpGateway::SparkInfo> Server::spark_info(const std::string& name) {
  const auto spark = find(name);
  if (!spark) return std::nullopt;
  SparkInfo info;
  info.target_port = spark->config().target().port;
  info.running = spark->state() == SparkState::running;
  info.keepalive = spark->config().keepalive;
  if (spark->state() == SparkState::sleeping) {
    const auto asleep = std::chrono::system_clock::now() - spark->asleep_since();
    info.asleep_for = config::format_duration(asleep);
  }
  return info;
}

void Server::find_spark_async(const std::string& name, std::function<void(std::optional<SparkInfo>)> done) {
  asio::post(io_, [this, name, done = std::move(done)] { done(spark_info(name)); });
}

void Server::connect_upstream(const std::string& name, const std::string& peer, std::shared_ptr<UpstreamHandoff> handoff) {
  asio::post(io_, [this, name, peer, handoff = std::move(handoff)]() mutable {
    asio::co_spawn(io_, jump_connect(name, peer, std::move(handoff)), asio::detached);
  });
}

awaitable<void> Server::jump_connect(std::string name, std::string peer, std::shared_ptr<UpstreamHandoff> handoff) {
  const auto spark = find(name);
  if (!spark) {
    handoff->deliver(-1, "no spark named " + name);
    co_return;
  }
  // Decided and counted in one turn of the main loop, as accept_loop does: no other connection
  // can slip in between.
  if (auto why = stopping_ ? std::optional<std::string>("the gateway is shutting down") : admission_.refuse(*spark, peer)) {
    handoff->refuse(*why);
    co_return;
  }
  ++jump_open_;
  spark->connection_opened();  // like a TCP connection: activity, and awake while it is open
  handoff->admit();
  std::optional<tcp::socket> upstream;
  std::string error;
  std::optional<ConnectionOutcome> failed;  // counted as Connection::run counts them
  try {
    upstream.emplace(co_await spark->connect_upstream("a jump login from " + peer));
  } catch (const UpstreamError& e) {
    failed = ConnectionOutcome::upstream_failed;
    error = e.what();
  } catch (const WakeError& e) {
    failed = ConnectionOutcome::wake_failed;
    error = e.what();
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (failed) spark->metrics().count_connection(*failed);
  if (upstream) {
    spark->metrics().count_connection(ConnectionOutcome::spliced);
    const int fd = upstream->release();
    // Its duplicate is taken before the session owns (and may close) the descriptor.
    auto live = std::make_unique<JumpUpstream>(spark, fd);
    if (handoff->deliver(fd, {})) {  // the session owns it now; upstream_ended() ends it
      --jump_open_;
      connections_.add(live.get());
      jump_upstreams_[handoff.get()] = std::move(live);
      co_return;
    }
    ::close(fd);  // the login went away meanwhile
  } else {
    handoff->deliver(-1, error);
  }
  --jump_open_;
  spark->connection_closed();
}

void Server::upstream_ended(std::shared_ptr<UpstreamHandoff> handoff, std::uint64_t client_to_spark,
                            std::uint64_t spark_to_client, ConnectionEnd end) {
  asio::post(io_, [this, handoff = std::move(handoff), client_to_spark, spark_to_client, end] {
    const auto it = jump_upstreams_.find(handoff.get());
    if (it == jump_upstreams_.end()) return;
    // The spark it was opened to, even if a reload has removed it since.
    Spark& spark = it->second->owner();
    spark.metrics().bytes_client_to_spark.Increment(static_cast<double>(client_to_spark));
    spark.metrics().bytes_spark_to_client.Increment(static_cast<double>(spark_to_client));
    spark.metrics().count_end(end);
    spark.connection_closed();
    connections_.remove(it->second.get());
    jump_upstreams_.erase(it);
  });
}

}  // namespace spark::gateway
