#include "gateway/session_core.hpp"

#include "gateway/proxy_protocol.hpp"

namespace spark::gateway {

SessionCore::SessionCore(const config::Config& cfg, std::function<int()> waiting_for_wakes)
    : cfg_(cfg), admission_(cfg, {[this] { return live_.size(); }, std::move(waiting_for_wakes)}) {}

std::optional<std::string> SessionCore::refuse(Spark& spark, const std::string& from) {
  if (stopping_) return "the gateway is shutting down";
  return admission_.refuse(spark, from);
}

bool SessionCore::trusted_proxy(const asio::ip::address& peer) const {
  return is_trusted_proxy(cfg_.trusted_proxies, peer);
}

void SessionCore::track(LiveSession& session) { live_.insert(&session); }

void SessionCore::open(LiveSession& session) {
  track(session);
  if (session.counted_open_) return;
  session.counted_open_ = true;
  session.opened_at_ = std::chrono::steady_clock::now();
  session.spark().connection_opened();  // activity, and awake while it is open
}

awaitable<Reached> SessionCore::reach(Spark& spark, std::string cause, asio::any_io_executor socket_executor,
                                      std::optional<int> port, std::function<bool()> client_gone) {
  Reached reached;
  try {
    if (port)
      reached.socket.emplace(co_await spark.connect_port(*port, std::move(cause), std::move(socket_executor),
                                                         std::move(client_gone)));
    else
      reached.socket.emplace(
          co_await spark.connect_upstream(std::move(cause), std::move(socket_executor), std::move(client_gone)));
    co_return reached;
  } catch (const PortClosedError& e) {
    reached.failure = ConnectionOutcome::port_closed;
    reached.error = e.what();
  } catch (const UpstreamError& e) {  // before WakeError: it is one
    reached.failure = ConnectionOutcome::upstream_failed;
    reached.error = e.what();
  } catch (const WakeError& e) {
    reached.failure = ConnectionOutcome::wake_failed;
    reached.error = e.what();
  } catch (const boost::system::system_error& e) {
    reached.error = e.code().message();
  } catch (const std::exception& e) {
    reached.error = e.what();
  }
  if (reached.failure) spark.metrics().count_connection(*reached.failure);
  co_return reached;
}

void SessionCore::spliced(LiveSession& session) {
  session.spark().metrics().count_connection(ConnectionOutcome::spliced);
}

void SessionCore::close(LiveSession& session, std::optional<ConnectionEnd> end) {
  if (end) {
    auto& metrics = session.spark().metrics();
    metrics.count_end(*end);
    // How long people stay: a session that reached its spark, from its open to its end.
    metrics.connection_duration.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - session.opened_at_).count());
  }
  if (session.counted_open_) session.spark().connection_closed();
  live_.erase(&session);
  ++closed_;
}

void SessionCore::close_all() {
  const auto copy = live_;  // force_close may end a session at once
  for (auto* s : copy) s->force_close();
}

void SessionCore::close_spark(const Spark& spark) {
  const auto copy = live_;
  for (auto* s : copy)
    if (&s->spark() == &spark) s->force_close();
}

}  // namespace spark::gateway
