#pragma once
// The gateway process: builds the parts, runs the main loop, handles signals and the drain.
//
//   FrontDoor      the per-spark listeners (accept, admit, start a Connection)
//   SessionCore    admission and accounting shared by TCP connections and jump sessions
//   SparkSet       the sparks and the reload diff
//   ActivityFlusher, KubernetesLink, ControlBridge (admin API and jump host)
//
// The main io_context (sparks, listeners, timers) runs on one thread; the data workers splice
// established connections; the control pool runs blocking backend calls.
#include <atomic>
#include <csignal>
#include <memory>

#include "activity/activity_tracker.hpp"
#include "config/config.hpp"
#include "gateway/activity_flusher.hpp"
#include "gateway/admin/admin_server.hpp"
#include "gateway/asio.hpp"
#include "gateway/control_bridge.hpp"
#include "gateway/data_plane.hpp"
#include "gateway/front_door.hpp"
#include "gateway/jump/jump_server.hpp"
#include "gateway/kubernetes_link.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/session_core.hpp"
#include "gateway/spark_set.hpp"

namespace spark::gateway {

class Server {
 public:
  explicit Server(config::Config cfg);
  ~Server();

  // Binds every listener and serves until SIGTERM/SIGINT has drained. Returns the exit code.
  // Throws std::runtime_error if it cannot start (e.g. a listen address is taken).
  int run();

 private:
  // A new config (start-up, SIGHUP) or discovered set becomes the running one (throws if a
  // configured listener cannot bind: nothing changes then).
  void apply_config(config::Config next, bool from_discovery = false);
  void adopt_config(config::Config next);  // settings read once at start-up keep their value
  void apply_discovered(k8s::DiscoveredSparks found);
  void start_kubernetes();
  void reload();
  awaitable<void> signal_loop();
  awaitable<void> shut_down();
  awaitable<void> trim_memory();
  bool leads() const { return !kubernetes_ || kubernetes_->leads(); }
  bool ready() const;

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
  // Reset first on destruction (joins its threads): no splice may outlive the sparks it counts for.
  std::unique_ptr<DataPlane> data_plane_;
  SessionCore sessions_{cfg_, [this] { return sparks_.waiting_for_wakes(); }};
  FrontDoor front_door_{io_, *data_plane_, sessions_};
  SparkSet sparks_{io_, control_pool_, activity_, metrics_, front_door_};
  ControlBridge bridge_{{io_, sparks_, sessions_, activity_, flusher_, [this] { return ready(); },
                         [this] { return leads(); }}};
  asio::signal_set signals_{io_, SIGINT, SIGTERM, SIGHUP};  // installed before "ready"
  bool stopping_ = false;
  std::atomic<bool> ready_{false};
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<JumpServer> jump_;  // only with a "jump" section
  std::unique_ptr<KubernetesLink> kubernetes_;  // only with a "kubernetes" section
  std::atomic<bool> discovered_once_{false};  // the first discovered set has been applied
};

}  // namespace spark::gateway
