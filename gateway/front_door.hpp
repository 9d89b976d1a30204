#pragma once
// The front door: one listener per spark address (its SSH port and each dev port). Each accepts straight onto the
// data worker that will splice the connection, asks the session core whether it may open, and starts its
// Connection. A reload that keeps an address keeps its listener (re-pointed at the spark), so
// no connection is refused while the config changes. Main loop only.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "gateway/asio.hpp"
#include "gateway/data_plane.hpp"
#include "gateway/session_core.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {

class FrontDoor {
 public:
  FrontDoor(asio::io_context& main, DataPlane& data_plane, SessionCore& sessions)
      : io_(main), data_plane_(data_plane), sessions_(sessions) {}

  struct Listener;
  // The listeners a new config needs, gathered before anything changes: those kept (same
  // address) and those newly opened.
  struct Plan {
    std::map<std::string, std::shared_ptr<Listener>> listeners;  // by listen address
    std::vector<std::shared_ptr<Listener>> opened;
  };
  // Adds `spark`'s listeners (SSH and dev ports) to `plan`: the one already open on each
  // address, or a new one. Throws (naming the spark) if an address is another's or cannot be bound.
  void claim(Plan& plan, const config::SparkConfig& spark) const;
  // Makes `plan` the listeners: each serves the spark of its address in `sparks` (by name),
  // listeners no longer wanted close, new ones start accepting.
  void adopt(Plan plan, const std::vector<config::SparkConfig>& served,
             const std::map<std::string, std::shared_ptr<Spark>>& sparks);
  // The drain: no new connections.
  void close();

 private:
  void claim_address(Plan& plan, const std::string& whose, const config::Address& address) const;
  std::shared_ptr<Listener> open_listener(const config::Address& address) const;
  awaitable<void> accept_loop(std::shared_ptr<Listener> listener);

  asio::io_context& io_;
  DataPlane& data_plane_;
  SessionCore& sessions_;
  std::map<std::string, std::shared_ptr<Listener>> listeners_;  // by listen address
};

}  // namespace spark::gateway
