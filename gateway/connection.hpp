#pragma once
// One client connection: wait for the spark, splice, account. The registry lets shutdown close
// whatever is still open when the drain timeout ends.
#include <memory>
#include <set>

#include "gateway/asio.hpp"
#include "gateway/pipe_pool.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {

class ConnectionRegistry;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Spark> spark, tcp::socket client, ConnectionRegistry& registry,
             PipePool& pipes);

  awaitable<void> run();
  void force_close();  // drain timeout, forced sleep: end it now
  const Spark& spark() const { return *spark_; }

 private:
  std::shared_ptr<Spark> spark_;
  tcp::socket client_;
  std::optional<tcp::socket> upstream_;
  ConnectionRegistry& registry_;
  PipePool& pipes_;
};

class ConnectionRegistry {
 public:
  void add(Connection* c) { live_.insert(c); }
  void remove(Connection* c) { live_.erase(c); }
  std::size_t size() const { return live_.size(); }
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
  std::set<Connection*> live_;
};

}  // namespace spark::gateway
