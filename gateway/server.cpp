#include "gateway/server.hpp"

#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>

#include <set>
#include <thread>

#include "config/duration.hpp"
#include "config/plural.hpp"
#include "gateway/make_backend.hpp"
#include "gateway/observability/rate_limited_log.hpp"
#include "version.hpp"

namespace spark::gateway {
namespace {

using std::chrono::milliseconds;

// How long accept() waits after running out of file descriptors before trying again, so a
// full fd table makes the gateway back off instead of spinning.
constexpr milliseconds kAcceptBackoff{100};
// After the drain timeout, how long closed connections get to unwind.
constexpr milliseconds kCloseGrace{2000};

}  // namespace

Server::Server(config::Config cfg) : metrics_(kVersion), cfg_(std::move(cfg)) {}

int Server::data_threads() const {
  if (cfg_.data_threads) return *cfg_.data_threads;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return cores > 1 ? cores : 0;
}

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
  listeners_.clear();
  sparks_.clear();
  control_pool_.join();
  if (kubernetes_) kubernetes_->stop_cluster();
}

std::shared_ptr<Server::Listener> Server::open_listener(const config::Address& address) {
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

void Server::apply_config(config::Config next, bool from_discovery) {
  // Listeners first: nothing changes if one cannot be opened (throws).
  auto plan = plan_listeners(next);
  const auto changes = update_sparks(plan, next);
  // Close the listeners no longer wanted; start accepting on the new ones.
  for (auto& [key, listener] : listeners_) {
    if (plan.listeners.contains(key)) continue;
    error_code ignored;
    listener->acceptor.close(ignored);
  }
  for (auto& l : plan.opened) asio::co_spawn(io_, accept_loop(l), asio::detached);
  listeners_ = std::move(plan.listeners);
  log_changes(changes, next, from_discovery);
  adopt_config(std::move(next));
}

Server::ListenerPlan Server::plan_listeners(const config::Config& next) {
  ListenerPlan plan;
  for (const auto& s : next.sparks) {
    claim_listener(plan, s);
    plan.sparks.push_back(s);
  }
  // Discovered sparks: one that cannot listen is left out (and said so once), not fatal.
  for (const auto& s : discovered_) {
    if (next.find_spark(s.name)) {
      if (unbindable_.insert(s.name + " (name)").second)
        spdlog::error("spark {}: a Deployment and a configured spark have this name; serving the configured one", s.name);
      continue;
    }
    try {
      claim_listener(plan, s);
      plan.sparks.push_back(s);
      unbindable_.erase(s.name);
    } catch (const std::exception& e) {
      if (unbindable_.insert(s.name).second) report_unbindable(s, e.what());
    }
  }
  return plan;
}

void Server::claim_listener(ListenerPlan& plan, const config::SparkConfig& s) {
  const std::string key = s.listen.to_string();
  if (plan.listeners.contains(key))
    throw std::runtime_error("spark " + s.name + ": " + key + " is already in use by another spark");
  if (auto it = listeners_.find(key); it != listeners_.end()) {
    plan.listeners[key] = it->second;  // the address stays: so does its listener
    return;
  }
  try {
    plan.listeners[key] = open_listener(s.listen);
  } catch (const std::exception& e) {
    throw std::runtime_error("spark " + s.name + ": " + e.what());
  }
  plan.opened.push_back(plan.listeners[key]);
}

void Server::report_unbindable(const config::SparkConfig& s, std::string why) {
  spdlog::error("{}; not served", why);
  if (!kubernetes_) return;
  // Said on the Deployment too (kubectl describe), where whoever set the port looks.
  if (const auto prefix = "spark " + s.name + ": "; why.starts_with(prefix)) why.erase(0, prefix.size());
  asio::post(control_pool_, [cluster = &kubernetes_->cluster(), name = s.name, port = s.listen.port, why] {
    if (const auto d = cluster->deployment(name))
      cluster->record_event(*d, "Warning", "PortUnavailable",
                            cluster->annotation("port") + " \"" + std::to_string(port) + "\": " + why + "; not served");
  });
}

Server::SparkChanges Server::update_sparks(const ListenerPlan& plan, const config::Config& next) {
  const auto now = std::chrono::system_clock::now();
  k8s::Cluster* cluster = kubernetes_ ? &kubernetes_->cluster() : nullptr;
  std::map<std::string, std::shared_ptr<Spark>> sparks;
  SparkChanges changes;
  for (const auto& s : plan.sparks) {
    activity_.ensure(s.name, now);
    if (auto it = sparks_.find(s.name); it != sparks_.end()) {
      if (!(it->second->config() == s)) changes.changed.push_back(s.name);
      it->second->update(s, make_backend(s, next, cluster));
      sparks[s.name] = it->second;
    } else {
      sparks[s.name] = std::make_shared<Spark>(
          SparkEnvironment{io_.get_executor(), control_pool_, activity_, &metrics_,
                           std::chrono::duration_cast<milliseconds>(next.activity_flush_interval)},
          s, make_backend(s, next, cluster));
      changes.added.push_back(s.name);
      asio::co_spawn(io_, sparks[s.name]->adopt_if_running(), asio::detached);
    }
    plan.listeners.at(s.listen.to_string())->spark = sparks[s.name];
  }
  for (auto& [name, spark] : sparks_) {
    if (sparks.contains(name)) continue;
    changes.removed.push_back(name);
    spark->retire();  // open sessions finish; then it is stopped
  }
  sparks_ = std::move(sparks);
  return changes;
}

void Server::log_changes(const SparkChanges& changes, const config::Config& next, bool from_discovery) const {
  for (const auto& name : changes.added) {
    const auto& s = sparks_.at(name)->config();
    spdlog::info("spark {}: listening on {} ({} backend, target {}, idle timeout {})", name,
                 s.listen.to_string(), s.backend_kind(), s.target().to_string(),
                 s.idle_timeout.is_never() ? "never" : config::format_duration(*s.idle_timeout.value));
  }
  const auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
    return out.empty() ? "-" : out;
  };
  // Discovery passes run on every Deployment change (annotation writes too): said only when
  // something changed.
  const bool changed = !changes.added.empty() || !changes.changed.empty() || !changes.removed.empty();
  if (from_discovery && !changed) return;
  const auto summary = config::counted(sparks_.size(), "spark") + " (added " + join(changes.added) + ", changed " +
                       join(changes.changed) + ", removed " + join(changes.removed) + ")";
  if (from_discovery)
    spdlog::info("kubernetes: discovered sparks changed: serving {}", summary);
  else
    spdlog::info("config {}: {}", next.source.string(), summary);
}

void Server::adopt_config(config::Config next) {
  // Settings read once at start-up keep their first value until a restart.
  const auto state_dir = cfg_.state_dir.empty() ? next.state_dir : cfg_.state_dir;
  if (!cfg_.state_dir.empty() && next.state_dir != cfg_.state_dir)
    spdlog::warn("state_dir changes take effect after a restart; still using {}", state_dir.string());
  if (data_plane_ && next.data_threads != cfg_.data_threads)
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
  discovered_ = std::move(found.sparks);
  try {
    apply_config(cfg_, /*from_discovery=*/true);
  } catch (const std::exception& e) {
    spdlog::error("kubernetes: applying discovered sparks: {}", e.what());
  }
  // Tailnet Services for the discovered sparks actually served (not those a configured spark
  // of the same name shadows, nor those that could not listen).
  std::map<std::string, int> ports;
  for (const auto& s : discovered_)
    if (const auto it = sparks_.find(s.name); it != sparks_.end() && it->second->config() == s)
      ports[s.name] = s.listen.port;
  kubernetes_->serve(std::move(ports));
  discovered_once_ = true;
}

awaitable<void> Server::accept_loop(std::shared_ptr<Listener> listener) {
  for (;;) {
    // Accepted straight onto the data worker that will splice it; the peer's address comes
    // with the accept (no getpeername per connection).
    DataWorker& worker = data_plane_->next();
    tcp::endpoint peer;
    auto [ec, socket] = co_await listener->acceptor.async_accept(worker.executor(), peer,
                                                                 asio::as_tuple(use_awaitable));
    if (ec == asio::error::operation_aborted || !listener->acceptor.is_open()) co_return;
    if (ec) {
      spdlog::error("spark {}: accept failed: {}; retrying in {} ms", listener->spark->name(),
                    ec.message(), kAcceptBackoff.count());
      asio::steady_timer t(io_, kAcceptBackoff);
      co_await t.async_wait(use_awaitable);
      continue;
    }
    if (admission_.refuse(*listener->spark, peer.address().to_string())) continue;  // the socket closes here
    auto connection = std::make_shared<Connection>(listener->spark, std::move(socket), peer, connections_, worker);
    asio::co_spawn(io_, connection->run(), asio::detached);
  }
}

int Server::waiting_for_wakes() const {
  int waiting = 0;
  for (const auto& [name, s] : sparks_) waiting += s->waiting_connections();
  return waiting;
}

awaitable<void> Server::reaper_loop() {
  asio::steady_timer timer(io_);
  while (!stopping_) {
    timer.expires_after(cfg_.reaper_interval);
    co_await timer.async_wait(use_awaitable);
    if (stopping_) co_return;
    const auto now = std::chrono::system_clock::now();
    // With leader election only the leader reaps the sparks other replicas serve too; the
    // sparks this replica runs itself (process, exec) are its own to reap.
    const bool leading = leads();
    for (auto& [name, spark] : sparks_) {
      if (!leading && spark->shared_with_other_gateways()) continue;
      spark->reap_if_idle(now);
    }
  }
}

// Every replica, often: notice sparks started or stopped elsewhere, and keep the activity of
// this replica's sessions where the reaping replica reads it (each spark at its own period,
// Spark::share_period). In-memory checks; a write only when one is due.
awaitable<void> Server::follow_loop() {
  constexpr milliseconds kFollowInterval{250};
  asio::steady_timer timer(io_);
  while (!stopping_) {
    timer.expires_after(kFollowInterval);
    co_await timer.async_wait(use_awaitable);
    if (stopping_) co_return;
    const auto now = std::chrono::system_clock::now();
    for (auto& [name, spark] : sparks_) {
      spark->follow_backend(now);
      spark->share_activity_if_due(now);
    }
  }
}

// glibc keeps the heap a burst of connections grew, for reuse: after 8,000 idle connections
// closed, RSS stayed 50 MiB up (bench/). Once many have closed and the closing has settled,
// the free pages go back to the system, so memory follows the load down.
awaitable<void> Server::trim_loop() {
  constexpr std::uint64_t kTrimAfterClosed = 1024;
  asio::steady_timer timer(io_);
  std::uint64_t trimmed_at = 0, seen = 0;
  while (!stopping_) {
    timer.expires_after(std::chrono::seconds(1));
    co_await timer.async_wait(use_awaitable);
    const auto closed = connections_.closed();
    if (closed - trimmed_at >= kTrimAfterClosed && closed == seen) {
      ::malloc_trim(0);
      trimmed_at = closed;
    }
    seen = closed;
  }
}

std::set<std::string> Server::kubernetes_sparks() const {
  std::set<std::string> names;
  for (const auto& s : discovered_) names.insert(s.name);
  return names;
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
                   config::counted(connections_.size(), "open connection"));
      connections_.close_all();
      continue;
    }
    spdlog::info("{}: shutting down", ::strsignal(sig));
    asio::co_spawn(io_, shut_down(), asio::detached);
  }
}

awaitable<void> Server::shut_down() {
  stopping_ = true;
  ready_ = false;  // fail readiness first, so a load balancer stops sending new connections
  if (jump_) jump_->stop_accepting();
  // Hand the reaper to another replica now (releasing the Lease is a blocking API call).
  if (kubernetes_) asio::post(control_pool_, [this] { kubernetes_->release_lease(); });
  for (auto& [key, listener] : listeners_) {
    error_code ignored;
    listener->acceptor.close(ignored);
  }
  asio::steady_timer timer(io_);
  const auto drain_until = std::chrono::steady_clock::now() + cfg_.drain_timeout;
  if (connections_.size() > 0)
    spdlog::info("draining {} (up to {})", config::counted(connections_.size(), "open connection"),
                 config::format_duration(cfg_.drain_timeout));
  while (connections_.size() > 0 && std::chrono::steady_clock::now() < drain_until) {
    timer.expires_after(milliseconds(50));
    co_await timer.async_wait(use_awaitable);
  }
  if (connections_.size() > 0) {
    spdlog::warn("drain timeout: closing {} still open", config::counted(connections_.size(), "connection"));
    connections_.close_all();
    const auto close_until = std::chrono::steady_clock::now() + kCloseGrace;
    while (connections_.size() > 0 && std::chrono::steady_clock::now() < close_until) {
      timer.expires_after(milliseconds(10));
      co_await timer.async_wait(use_awaitable);
    }
  }
  // Children never outlive the gateway; sparks managed elsewhere (exec) keep running.
  for (auto& [name, spark] : sparks_) {
    if (spark->stops_with_gateway()) co_await spark->sleep(SleepReason::shutdown);
  }
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
  data_plane_ = std::make_unique<DataPlane>(io_, data_threads(), kMaxPipes);
  apply_config(cfg_);
  if (cfg_.kubernetes) {
    kubernetes_ = std::make_unique<KubernetesLink>(cfg_, metrics_, [this](k8s::DiscoveredSparks found) {
      asio::post(io_, [this, found = std::move(found)]() mutable { apply_discovered(std::move(found)); });
    });
    flusher_.share_through(kubernetes_->annotations(), [this] { return kubernetes_sparks(); });
  }
  if (cfg_.admin) {
    metrics_.set_snapshot_source([this] { return sparks(); });
    admin_ = std::make_unique<AdminServer>(*cfg_.admin, *this, metrics_);
    admin_->start();
  }
  if (cfg_.jump) {
    jump_ = std::make_unique<JumpServer>(*cfg_.jump, cfg_.state_dir, *this);
    jump_->start();
  }
  asio::co_spawn(io_, signal_loop(), asio::detached);
  asio::co_spawn(io_, reaper_loop(), asio::detached);
  asio::co_spawn(io_, follow_loop(), asio::detached);
  asio::co_spawn(io_, flusher_.run([this] { return cfg_.activity_flush_interval; }), asio::detached);
  asio::co_spawn(io_, trim_loop(), asio::detached);
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
