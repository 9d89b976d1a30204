#include "gateway/front_door.hpp"

#include <spdlog/spdlog.h>

#include "gateway/connection.hpp"

namespace spark::gateway {
namespace {

// How long accept() waits after running out of file descriptors before trying again, so a
// full fd table makes the gateway back off instead of spinning.
constexpr std::chrono::milliseconds kAcceptBackoff{100};

}  // namespace

struct FrontDoor::Listener {
  explicit Listener(tcp::acceptor a) : acceptor(std::move(a)) {}
  tcp::acceptor acceptor;
  // Re-pointed by a reload that keeps the address.
  std::shared_ptr<Spark> spark;
  std::optional<config::SparkPort> port;  // one of its dev ports; none: its SSH port
};

std::shared_ptr<FrontDoor::Listener> FrontDoor::open_listener(const config::Address& address) const {
  tcp::acceptor acceptor(io_);
  const tcp::endpoint ep(asio::ip::make_address(address.host), address.port);
  error_code ec;
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + address.to_string() + ": " + ec.message());
  return std::make_shared<Listener>(std::move(acceptor));
}

void FrontDoor::claim(Plan& plan, const config::SparkConfig& spark) const {
  claim_address(plan, spark.name, spark.listen);
  for (const auto& port : spark.ports) claim_address(plan, spark.name + " (port " + port.name + ")", port.listen);
}

void FrontDoor::claim_address(Plan& plan, const std::string& whose, const config::Address& address) const {
  const std::string key = address.to_string();
  if (plan.listeners.contains(key))
    throw std::runtime_error("spark " + whose + ": " + key + " is already in use by another spark");
  if (auto it = listeners_.find(key); it != listeners_.end()) {
    plan.listeners[key] = it->second;  // the address stays: so does its listener
    return;
  }
  try {
    plan.listeners[key] = open_listener(address);
  } catch (const std::exception& e) {
    throw std::runtime_error("spark " + whose + ": " + e.what());
  }
  plan.opened.push_back(plan.listeners[key]);
}

void FrontDoor::adopt(Plan plan, const std::vector<config::SparkConfig>& served,
                      const std::map<std::string, std::shared_ptr<Spark>>& sparks) {
  for (const auto& s : served) {
    auto& ssh = *plan.listeners.at(s.listen.to_string());
    ssh.spark = sparks.at(s.name);
    ssh.port.reset();
    for (const auto& port : s.ports) {
      auto& listener = *plan.listeners.at(port.listen.to_string());
      listener.spark = ssh.spark;
      listener.port = port;
    }
  }
  for (auto& [key, listener] : listeners_) {
    if (plan.listeners.contains(key)) continue;
    error_code ignored;
    listener->acceptor.close(ignored);
  }
  for (auto& l : plan.opened) asio::co_spawn(io_, accept_loop(l), asio::detached);
  listeners_ = std::move(plan.listeners);
}

void FrontDoor::close() {
  for (auto& [key, listener] : listeners_) {
    error_code ignored;
    listener->acceptor.close(ignored);
  }
}

awaitable<void> FrontDoor::accept_loop(std::shared_ptr<Listener> listener) {
  for (;;) {
    // Accepted straight onto the data worker that will splice it; the peer's address comes
    // with the accept (no getpeername per connection).
    DataWorker& worker = data_plane_.next();
    tcp::endpoint peer;
    auto [ec, socket] = co_await listener->acceptor.async_accept(worker.executor(), peer,
                                                                 asio::as_tuple(use_awaitable));
    if (ec == asio::error::operation_aborted || !listener->acceptor.is_open()) co_return;
    if (ec) {
      spdlog::error("spark {}: accept failed: {}; retrying in {} ms", listener->spark->name(), ec.message(),
                    kAcceptBackoff.count());
      asio::steady_timer t(io_, kAcceptBackoff);
      co_await t.async_wait(use_awaitable);
      continue;
    }
    if (sessions_.refuse(*listener->spark, peer.address().to_string())) continue;  // the socket closes here
    auto connection = std::make_shared<Connection>(listener->spark, listener->port, std::move(socket), peer,
                                                   sessions_, worker);
    asio::co_spawn(io_, connection->run(), asio::detached);
  }
}

}  // namespace spark::gateway
