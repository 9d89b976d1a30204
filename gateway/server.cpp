#include "gateway/server.hpp"

#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>

#include <thread>

#include "config/duration.hpp"
#include "config/plural.hpp"
#include "gateway/every.hpp"
#include "version.hpp"

namespace spark::gateway {
namespace {

using std::chrono::milliseconds;

// After the drain timeout, how long closed connections get to unwind.
constexpr milliseconds kCloseGrace{2000};
// Pipes for splice(2): 2 fds each, so bounded well below the fd limit; bulk flows beyond
// this many fall back to read/write.
constexpr std::size_t kMaxPipes = 256;

int data_threads(const config::Config& cfg) {  // limits.data_threads, or one per core
  if (cfg.data_threads) return *cfg.data_threads;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return cores > 1 ? cores : 0;
}

// Waits until `done()` or `until`, looking every `step`.
awaitable<void> wait_until(std::function<bool()> done, std::chrono::steady_clock::time_point until,
                           milliseconds step) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!done() && std::chrono::steady_clock::now() < until) {
    timer.expires_after(step);
    co_await timer.async_wait(use_awaitable);
  }
}

}  // namespace

Server::Server(config::Config cfg)
    : metrics_(kVersion),
      cfg_(std::move(cfg)),
      data_plane_(std::make_unique<DataPlane>(io_, data_threads(cfg_), kMaxPipes)) {}

Server::~Server() {
  if (admin_) admin_->stop();  // no admin call may reach a half-destroyed server
  if (jump_) jump_->stop();
  // Destroys what is still queued on the main loop (after the threads that post to it from the
  // gateway's side), while the data workers whose sockets it holds are alive.
  io_.shutdown();
  data_plane_.reset();  // no splice may outlive the sparks it counts bytes for
  if (kubernetes_) kubernetes_->stop_workers();
  // Sparks (and process children) go before the pool their backends may still be using, and
  // both before the cluster their Kubernetes backends use.
  front_door_.close();
  sparks_.clear();
  control_pool_.join();
  if (kubernetes_) kubernetes_->stop_cluster();
}

void Server::apply_config(config::Config next, bool from_discovery) {
  sparks_.apply(next, from_discovery);
  adopt_config(std::move(next));
}

void Server::adopt_config(config::Config next) {
  const auto state_dir = cfg_.state_dir.empty() ? next.state_dir : cfg_.state_dir;
  if (!cfg_.state_dir.empty() && next.state_dir != cfg_.state_dir)
    spdlog::warn("state_dir changes take effect after a restart; still using {}", state_dir.string());
  if (next.data_threads != cfg_.data_threads)
    spdlog::warn("limits.data_threads changes take effect after a restart; still using {}",
                 data_plane_->threads());
  next.data_threads = cfg_.data_threads;
  cfg_ = std::move(next);
  cfg_.state_dir = state_dir;
}

void Server::apply_discovered(k8s::DiscoveredSparks found) {
  if (stopping_) return;
  // Activity first: a spark seen for the first time must start from what its Deployment
  // records, not from "now" (a restart neither resets idle clocks nor forgets them).
  for (const auto& [name, recorded] : found.activity) activity_.merge_remote(name, recorded);
  sparks_.set_discovered(std::move(found.sparks));
  try {
    apply_config(cfg_, /*from_discovery=*/true);
  } catch (const std::exception& e) {
    spdlog::error("kubernetes: applying discovered sparks: {}", e.what());
  }
  kubernetes_->serve(sparks_.discovered_served());
  discovered_once_ = true;
}

void Server::start_kubernetes() {
  kubernetes_ = std::make_unique<KubernetesLink>(cfg_, metrics_, [this](k8s::DiscoveredSparks found) {
    asio::post(io_, [this, found = std::move(found)]() mutable { apply_discovered(std::move(found)); });
  });
  sparks_.use_cluster(&kubernetes_->cluster(), [this](const config::SparkConfig& s, std::string why) {
    if (const auto prefix = "spark " + s.name + ": "; why.starts_with(prefix)) why.erase(0, prefix.size());
    asio::post(control_pool_, [link = kubernetes_.get(), name = s.name, port = s.listen.port, why] {
      link->report_port_unavailable(name, port, why);
    });
  });
  flusher_.share_through(kubernetes_->annotations(), [this] { return sparks_.discovered_names(); });
}

// Listeners up and, with Kubernetes, both caches listed and the listeners of the sparks found
// there open (before that, a connection routed here would be refused).
bool Server::ready() const {
  return ready_ && (!kubernetes_ || (kubernetes_->synced() && discovered_once_));
}

// glibc keeps the heap a burst of connections grew, for reuse: after 8,000 idle connections
// closed, RSS stayed 50 MiB up (bench/). Once many have closed and the closing has settled,
// the free pages go back to the system, so memory follows the load down.
awaitable<void> Server::trim_memory() {
  constexpr std::uint64_t kTrimAfterClosed = 1024;
  std::uint64_t trimmed_at = 0, seen = 0;
  co_await every([] { return milliseconds(1000); }, [this, &trimmed_at, &seen] {
    const auto closed = sessions_.closed();
    if (closed - trimmed_at >= kTrimAfterClosed && closed == seen) {
      ::malloc_trim(0);
      trimmed_at = closed;
    }
    seen = closed;
    return !stopping_;
  });
}

void Server::reload() {
  spdlog::info("SIGHUP: reloading {}", cfg_.source.string());
  try {
    apply_config(config::load_config(cfg_.source));
    spdlog::info("reloaded {}", cfg_.source.string());
  } catch (const config::ConfigError& e) {
    for (const auto& p : e.problems()) spdlog::error("reload failed: {}", p);
    spdlog::error("reload failed; still serving the previous config");
  } catch (const std::exception& e) {
    spdlog::error("reload failed: {}; still serving the previous config", e.what());
  }
}

awaitable<void> Server::signal_loop() {
  for (;;) {
    const int sig = co_await signals_.async_wait(use_awaitable);
    if (sig == SIGHUP) {
      if (!stopping_) reload();
      continue;
    }
    if (stopping_) {
      spdlog::warn("second {}: closing {} now", ::strsignal(sig),
                   config::counted(sessions_.open_sessions(), "open connection"));
      sessions_.close_all();
      continue;
    }
    spdlog::info("{}: shutting down", ::strsignal(sig));
    asio::co_spawn(io_, shut_down(), asio::detached);
  }
}

awaitable<void> Server::shut_down() {
  stopping_ = true;
  ready_ = false;  // fail readiness first, so a load balancer stops sending new connections
  sessions_.stop_admitting();
  if (jump_) jump_->stop_accepting();
  // Hand the reaper to another replica now (releasing the Lease is a blocking API call).
  if (kubernetes_) asio::post(control_pool_, [this] { kubernetes_->release_lease(); });
  front_door_.close();
  const auto drained = [this] { return sessions_.open_sessions() == 0; };
  if (!drained())
    spdlog::info("draining {} (up to {})", config::counted(sessions_.open_sessions(), "open connection"),
                 config::format_duration(cfg_.drain_timeout));
  co_await wait_until(drained, std::chrono::steady_clock::now() + cfg_.drain_timeout, milliseconds(50));
  if (!drained()) {
    spdlog::warn("drain timeout: closing {} still open", config::counted(sessions_.open_sessions(), "connection"));
    sessions_.close_all();
    co_await wait_until(drained, std::chrono::steady_clock::now() + kCloseGrace, milliseconds(10));
  }
  co_await sparks_.stop_children();
  flusher_.stop();
  flusher_.flush_now();
  spdlog::info("stopped");
  io_.stop();
}

int Server::run() {
  ::signal(SIGPIPE, SIG_IGN);  // before any thread writes to a socket a peer may have closed
  // A proxy needs two fds per connection: use the whole hard limit, as HAProxy and nginx do.
  if (rlimit limit{}; ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  flusher_.restore();
  apply_config(cfg_);
  if (cfg_.kubernetes) start_kubernetes();
  if (cfg_.admin) {
    metrics_.set_snapshot_source([this] { return bridge_.sparks(); });
    admin_ = std::make_unique<AdminServer>(*cfg_.admin, bridge_, metrics_);
    admin_->start();
  }
  if (cfg_.jump) {
    jump_ = std::make_unique<JumpServer>(*cfg_.jump, cfg_.state_dir, bridge_);
    jump_->start();
  }
  asio::co_spawn(io_, signal_loop(), asio::detached);
  // The reaper: the replica that leads reaps the sparks the replicas share; each reaps its own.
  asio::co_spawn(io_, every([this] { return std::chrono::duration_cast<milliseconds>(cfg_.reaper_interval); },
                            [this] {
                              if (!stopping_) sparks_.reap(std::chrono::system_clock::now(), leads());
                              return !stopping_;
                            }),
                 asio::detached);
  // Every replica, often: in-memory checks; a write only when one is due.
  asio::co_spawn(io_, every([] { return milliseconds(250); },
                            [this] {
                              if (!stopping_) sparks_.follow(std::chrono::system_clock::now());
                              return !stopping_;
                            }),
                 asio::detached);
  asio::co_spawn(io_, flusher_.run([this] { return cfg_.activity_flush_interval; }), asio::detached);
  asio::co_spawn(io_, trim_memory(), asio::detached);
  spdlog::info("ready: serving {}, state in {}, {}", config::counted(sparks_.size(), "spark"),
               cfg_.state_dir.string(), config::counted(data_plane_->threads(), "data thread"));
  ready_ = true;
  io_.run();
  if (jump_) jump_->stop();  // jump sessions end with the gateway (they are not drained)
  if (admin_) admin_->stop();
  metrics_.set_snapshot_source(nullptr);
  return 0;
}

}  // namespace spark::gateway
