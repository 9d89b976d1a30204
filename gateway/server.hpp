#pragma once
// The gateway process: one listener per spark, the reaper, activity persistence, signals.
// Owns the main io_context (sparks, listeners, timers: one thread), the data workers that
// splice established connections, and the control-plane pool for blocking work.
#include <atomic>
#include <csignal>
#include <map>
#include <set>
#include <memory>

#include "activity/activity_tracker.hpp"
#include "config/config.hpp"
#include "gateway/admin/admin_server.hpp"
#include "gateway/admin/gateway_control.hpp"
#include "gateway/activity_flusher.hpp"
#include "gateway/admission.hpp"
#include "gateway/asio.hpp"
#include "gateway/connection.hpp"
#include "gateway/data_plane.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/jump/jump_gateway.hpp"
#include "gateway/jump/jump_server.hpp"
#include "gateway/jump/jump_upstream.hpp"
#include "gateway/kubernetes_link.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {

class Server final : public GatewayControl, public JumpGateway {
 public:
  explicit Server(config::Config cfg);
  ~Server() override;

  // Binds every listener and serves until SIGTERM/SIGINT has drained. Returns the exit code.
  // Throws std::runtime_error if it cannot start (e.g. a listen address is taken).
  int run();

  // GatewayControl (server_control.cpp): called from admin threads.
  std::vector<SparkStatus> sparks() override;
  std::optional<SparkStatus> spark(const std::string& name) override;
  ControlOutcome wake(const std::string& name, bool wait) override;
  ControlOutcome sleep(const std::string& name, bool force) override;
  ControlOutcome keep_awake(const std::string& name, std::optional<config::Duration> hold) override;
  bool ready() override;
  bool leads_reaper() override;

  // JumpGateway (server_jump.cpp): called from the jump host's login and session threads.
  std::optional<SparkInfo> find_spark(const std::string& name) override;
  void find_spark_async(const std::string& name, std::function<void(std::optional<SparkInfo>)> done) override;
  void connect_upstream(const std::string& name, const std::string& peer,
                        std::shared_ptr<UpstreamHandoff> handoff) override;
  void upstream_ended(std::shared_ptr<UpstreamHandoff> handoff, std::uint64_t client_to_spark,
                      std::uint64_t spark_to_client, ConnectionEnd end) override;

 private:
  // Runs `f` on the main loop and returns its result to the calling (admin) thread.
  template <typename F>
  auto on_main_loop(F f) -> decltype(f());
  std::shared_ptr<Spark> find(const std::string& name);  // main loop only
  struct Listener {
    explicit Listener(tcp::acceptor a) : acceptor(std::move(a)) {}
    tcp::acceptor acceptor;
    std::shared_ptr<Spark> spark;  // re-pointed by a reload that keeps the address
  };

  // Makes the running set of sparks and listeners match `next` plus the sparks discovered in
  // Kubernetes. Listeners are opened before anything changes, so a reload that cannot bind
  // leaves everything as it was (throws); a discovered spark that cannot bind is left out.
  // The summary line is logged for every config load; for a pass of Kubernetes discovery
  // (`from_discovery`: Deployments change on every annotation write) only when sparks were
  // added, changed or removed, and as discovery, not as a config load.
  void apply_config(config::Config next, bool from_discovery = false);
  // The listeners a config needs: those kept (same address), those newly opened, and the
  // sparks they will serve (configured ones, then the discovered ones that could listen).
  struct ListenerPlan {
    std::map<std::string, std::shared_ptr<Listener>> listeners;  // by listen address
    std::vector<std::shared_ptr<Listener>> opened;
    std::vector<config::SparkConfig> sparks;
  };
  struct SparkChanges {
    std::vector<std::string> added, changed, removed;
  };
  ListenerPlan plan_listeners(const config::Config& next);
  void claim_listener(ListenerPlan& plan, const config::SparkConfig& s);  // throws
  void report_unbindable(const config::SparkConfig& s, std::string why);
  // Makes sparks_ the plan's: updated in place, created, or retired.
  SparkChanges update_sparks(const ListenerPlan& plan, const config::Config& next);
  void log_changes(const SparkChanges& changes, const config::Config& next, bool from_discovery) const;
  void adopt_config(config::Config next);
  awaitable<void> jump_connect(std::string name, std::string peer, std::shared_ptr<UpstreamHandoff> handoff);
  std::optional<SparkInfo> spark_info(const std::string& name);  // main loop only
  void apply_discovered(k8s::DiscoveredSparks found);
  std::shared_ptr<Listener> open_listener(const config::Address& address);
  int data_threads() const;  // limits.data_threads, or one per core

  awaitable<void> accept_loop(std::shared_ptr<Listener> listener);
  int waiting_for_wakes() const;  // every spark's connections waiting for a wake
  awaitable<void> reaper_loop();
  awaitable<void> follow_loop();
  awaitable<void> trim_loop();
  awaitable<void> signal_loop();
  awaitable<void> shut_down();
  void reload();
  std::set<std::string> kubernetes_sparks() const;
  bool leads() const { return !kubernetes_ || kubernetes_->leads(); }

  // The main loop, with Asio's shutdown() callable before its destructor: handlers still queued
  // when run() returns (an accept aborted by the drain, a connection waiting for a wake) own
  // sockets of the data workers and shared_ptrs to sparks, so ~Server destroys them first.
  struct MainLoop : asio::io_context {
    using asio::io_context::shutdown;
  };
  MainLoop io_;
  asio::thread_pool control_pool_{8};
  Metrics metrics_;
  config::Config cfg_;
  activity::ActivityTracker activity_;
  ActivityFlusher flusher_{control_pool_, activity_, metrics_, cfg_.state_dir};
  std::map<std::string, std::shared_ptr<Spark>> sparks_;         // by name
  std::map<std::string, std::shared_ptr<Listener>> listeners_;   // by listen address
  ConnectionRegistry connections_;
  std::size_t jump_open_ = 0;  // jump connections admitted and still waiting for their upstream
  // Jump sessions with their upstream, by the handoff that delivered it (also in connections_).
  std::map<const UpstreamHandoff*, std::unique_ptr<JumpUpstream>> jump_upstreams_;
  // One admission for both ways in (accept_loop, jump_connect).
  ConnectionAdmission admission_{cfg_, {[this] { return connections_.size() + jump_open_; },
                                        [this] { return waiting_for_wakes(); }}};
  // Pipes for splice(2): 2 fds each, so bounded well below the fd limit; bulk flows beyond
  // this many fall back to read/write. Reset first on destruction (joins its threads).
  static constexpr std::size_t kMaxPipes = 256;
  std::unique_ptr<DataPlane> data_plane_;
  asio::signal_set signals_{io_, SIGINT, SIGTERM, SIGHUP};  // installed before "ready"
  bool stopping_ = false;
  std::atomic<bool> ready_{false};
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<JumpServer> jump_;  // only with a "jump" section
  std::unique_ptr<KubernetesLink> kubernetes_;  // only with a "kubernetes" section
  std::vector<config::SparkConfig> discovered_;
  std::atomic<bool> discovered_once_{false};  // the first discovered set has been applied
  std::set<std::string> unbindable_;  // discovered sparks already reported as unable to listen
};

}  // namespace spark::gateway
