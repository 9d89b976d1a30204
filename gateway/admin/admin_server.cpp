#include "gateway/admin/admin_server.hpp"

#include <spdlog/spdlog.h>

#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "gateway/admin/admin_listener.hpp"
#include "gateway/asio.hpp"

namespace spark::gateway {
namespace {

// Quick GatewayControl calls (reads, metrics, keep-awake, a wake that does not wait) hop onto
// the main loop and back: bounded by its 5 s answer time.
constexpr int kQuickCallThreads = 4;
// Calls that wait for a wake or a sleep to finish (minutes at most), apart so that a few
// operators waiting cannot hold up a Prometheus scrape; more of them queue.
constexpr int kLongCallThreads = 8;

std::string read_token(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("admin.token_file " + file.string() + " cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.front()))) token.erase(0, 1);
  if (token.empty()) throw std::runtime_error("admin.token_file " + file.string() + " is empty");
  return token;
}

}  // namespace

// Declaration order is destruction order, reversed: the pools' and the listener's leftovers
// (coroutine frames holding sockets) are destroyed while the io_context they belong to lives.
struct AdminServer::Impl {
  Impl(const config::AdminConfig& c, GatewayControl& control, const Metrics& metrics)
      : cfg(c),
        token(cfg.token_file ? read_token(*cfg.token_file) : std::string()),
        router(token, control, metrics),
        context{router, quick_calls, long_calls,
                std::chrono::duration_cast<std::chrono::milliseconds>(cfg.request_timeout)} {}

  config::AdminConfig cfg;
  std::string token;  // empty: no token configured (loopback only)
  AdminRouter router;
  asio::io_context io{1};
  asio::thread_pool quick_calls{kQuickCallThreads};
  asio::thread_pool long_calls{kLongCallThreads};
  AdminSessionContext context;
  std::unique_ptr<AdminListener> listener;
  std::thread thread;
  bool stopped = false;
};

AdminServer::AdminServer(const config::AdminConfig& cfg, GatewayControl& control, const Metrics& metrics)
    : impl_(std::make_unique<Impl>(cfg, control, metrics)) {}

AdminServer::~AdminServer() { stop(); }

void AdminServer::start() {
  auto& s = *impl_;
  s.listener = std::make_unique<AdminListener>(s.io, s.cfg.listen, s.context,
                                               static_cast<std::size_t>(s.cfg.max_connections));
  asio::co_spawn(s.io, s.listener->run(), asio::detached);
  s.thread = std::thread([&s] {
    for (;;) {
      try {
        s.io.run();
        return;
      } catch (const std::exception& e) {  // a bug in a handler: log it, keep serving
        spdlog::error("admin: {}", e.what());
      }
    }
  });
  spdlog::info("admin: serving API, metrics and status page on http://{}/ ({})", s.cfg.listen.to_string(),
               s.token.empty() ? "no token: loopback only" : "token required for changes");
}

void AdminServer::stop() {
  if (!impl_ || impl_->stopped) return;
  auto& s = *impl_;
  s.stopped = true;
  if (s.thread.joinable()) {
    // The admin loop never blocks, so this runs at once; the bound only guards against a bug.
    auto closed = std::make_shared<std::promise<void>>();
    auto done = closed->get_future();
    asio::post(s.io, [&s, closed] {
      s.listener->close();
      closed->set_value();
    });
    done.wait_for(std::chrono::seconds(5));
  }
  s.quick_calls.stop();
  s.long_calls.stop();
  s.quick_calls.join();
  s.long_calls.join();
  s.io.stop();
  if (s.thread.joinable()) s.thread.join();
}

}  // namespace spark::gateway
