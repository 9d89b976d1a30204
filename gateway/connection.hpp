#pragma once
// One client connection: wait for the spark, splice, account. The registry lets shutdown close
// whatever is still open when the drain timeout ends.
#include <memory>
#include <set>

#include "gateway/asio.hpp"
#include "gateway/data_plane.hpp"
#include "gateway/splice.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {

class ConnectionRegistry;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `client` was accepted onto `worker`'s io_context; run() itself runs on the main one.
  Connection(std::shared_ptr<Spark> spark, tcp::socket client, tcp::endpoint peer,
             ConnectionRegistry& registry, DataWorker& worker);

  awaitable<void> run();
  void force_close();  // drain timeout, forced sleep: end it now (main thread)
  const Spark& spark() const { return *spark_; }

 private:
  // Shared with what is posted to the worker, so a late close finds them even after run().
  struct Sockets {
    explicit Sockets(tcp::socket c) : client(std::move(c)) {}
    void close();
    tcp::socket client;
    std::optional<tcp::socket> upstream;
  };
  std::shared_ptr<Spark> spark_;
  std::shared_ptr<Sockets> sockets_;
  tcp::endpoint peer_;
  ConnectionRegistry& registry_;
  DataWorker& worker_;
  bool on_worker_ = false;  // the sockets now belong to worker_'s thread
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
