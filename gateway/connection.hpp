#pragma once
// One client connection: wait for the spark, splice, account. The registry lets shutdown close
// whatever is still open when the drain timeout ends.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string_view>

#include "gateway/asio.hpp"
#include "gateway/data_plane.hpp"
#include "gateway/splice.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {

class ConnectionRegistry;

// A session the main loop can end: a TCP connection, or a jump session's upstream.
class LiveSession {
 public:
  virtual ~LiveSession() = default;
  virtual const Spark& spark() const = 0;
  virtual void force_close() = 0;  // drain timeout, forced sleep: end it now (main thread)
};

class Connection final : public std::enable_shared_from_this<Connection>, public LiveSession {
 public:
  // `client` was accepted onto `worker`'s io_context; run() itself runs on the main one.
  Connection(std::shared_ptr<Spark> spark, tcp::socket client, tcp::endpoint peer,
             ConnectionRegistry& registry, DataWorker& worker);

  // Waits for the spark and connects to it, then hands the pair to the worker and returns:
  // the splice ends the connection on its own (finish()). A failure ends it here.
  awaitable<void> run();
  void force_close() override;
  const Spark& spark() const override { return *spark_; }

 private:
  void start_splice(asio::any_io_executor main);
  void close_sockets();
  void finish(std::string_view outcome);  // main thread, once

  std::shared_ptr<Spark> spark_;
  tcp::socket client_;
  std::optional<tcp::socket> upstream_;
  tcp::endpoint peer_;
  ConnectionRegistry& registry_;
  DataWorker& worker_;
  std::chrono::steady_clock::time_point opened_;
  config::TcpKeepalive keepalive_;  // as set on both sockets
  bool on_worker_ = false;  // the sockets now belong to worker_'s thread
  // Written on the worker while spliced, read by finish() after the splice has posted it.
  std::uint64_t bytes_in_ = 0, bytes_out_ = 0;
};

class ConnectionRegistry {
 public:
  void add(LiveSession* c) { live_.insert(c); }
  void remove(LiveSession* c) {
    live_.erase(c);
    ++closed_;
  }
  std::size_t size() const { return live_.size(); }
  std::uint64_t closed() const { return closed_; }  // ever, for Server::trim_loop
  void close_all() {
    auto copy = live_;  // force_close may remove entries later, not now, but stay safe
    for (auto* c : copy) c->force_close();
  }
  // A forced sleep: the spark's sessions end with it, whatever its backend does to them.
  void close_spark(const Spark& spark) {
    auto copy = live_;
    for (auto* c : copy)
      if (&c->spark() == &spark) c->force_close();
  }

 private:
  std::set<LiveSession*> live_;
  std::uint64_t closed_ = 0;
};

}  // namespace spark::gateway
