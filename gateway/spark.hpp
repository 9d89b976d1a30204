#pragma once
// One spark as the main loop sees it: its state, the single-flight wake that every connection
// shares, and the sleep the reaper asks for. Lives on the main loop; blocking backend
// calls go to the control-plane pool.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "activity/activity_tracker.hpp"
#include "config/config.hpp"
#include "gateway/asio.hpp"
#include "gateway/async_event.hpp"
#include "gateway/backend/backend.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/observability/spark_status.hpp"
#include "gateway/outcomes.hpp"

namespace spark::gateway {

class RunningCap;

enum class SparkState { sleeping, waking, running, stopping, failed };
std::string_view to_string(SparkState s);

// Why a connection could not be given an upstream; what() is the reason for the log.
class WakeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// The spark woke (or was running) but its sshd could not be reached.
class UpstreamError : public WakeError {
 public:
  using WakeError::WakeError;
};
// The spark is awake, but the dev port a connection asked for does not answer (its dev server
// is not running, or did not start within wake_timeout). Not the spark's failure.
class PortClosedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a spark needs from the gateway around it.
struct SparkEnvironment {
  asio::any_io_executor executor;  // the main loop (spark state lives there)
  asio::thread_pool& control_pool;
  activity::ActivityTracker& activity;
  Metrics* metrics = nullptr;  // nullptr: counted, but nobody scrapes them
  // activity.flush_interval: how stale activity recorded for other gateways may get at most.
  std::chrono::milliseconds activity_flush_interval{30000};
  // limits.max_running: where a wake asks for its place (nullptr: no cap, as in unit tests).
  RunningCap* cap = nullptr;
};

class Spark : public std::enable_shared_from_this<Spark> {
 public:
  Spark(SparkEnvironment env, config::SparkConfig cfg, std::unique_ptr<Backend> backend);

  const std::string& name() const { return cfg_.name; }
  const config::SparkConfig& config() const { return cfg_; }
  SparkState state() const { return state_; }
  int open_connections() const { return open_connections_; }
  // Connections inside connect_upstream(): waiting for a wake (or a sleep) to finish; and those
  // still reading their client's greeting before a wake (they count against the same caps).
  int waiting_connections() const { return waiting_connections_ + greeting_connections_; }
  std::uint64_t wakes_started() const { return wakes_started_; }
  // Since when it sleeps (meaningful while sleeping): for "waking X (asleep for 3h12m)".
  std::chrono::system_clock::time_point asleep_since() const { return asleep_since_; }
  // Counts against limits.max_running: awake, waking (past the line), stopping, or failed with
  // something still running (the backend does not show it asleep).
  bool holds_place() const;
  // The backend shows it running or starting, whatever this gateway thinks (another replica
  // woke it): a wake in line for it needs no place of its own.
  bool seen_running() const { return backend_->observe().state != Observation::State::asleep; }
  // Takes its place under limits.max_running where other gateways count it too
  // (Backend::claim_place); true at once for sparks no other gateway serves. False also when
  // the backend cannot tell (logged; the line asks again).
  awaitable<bool> claim_place(int max_running);
  // Process children stop with the gateway; sparks managed elsewhere keep running.
  bool stops_with_gateway() const { return !backend_->may_run_without_us(); }
  // Other gateway replicas serve it too (Kubernetes): only the elected one reaps it.
  bool shared_with_other_gateways() const { return backend_->shares_activity(); }

  SparkMetrics& metrics() { return metrics_; }
  PortMetrics& port_metrics(const std::string& port) const {
    return (env_.metrics ? *env_.metrics : unscraped_metrics()).port(name(), port);
  }
  // A view for the API, CLI, status page and metrics.
  SparkStatus status(activity::TimePoint now) const;

  // A connection opened/closed: counts as activity and keeps the spark awake while open.
  void connection_opened();
  void connection_closed();
  // Who opened the latest connection ("100.101.102.103", a jump login's address, key and
  // name): the status view's last_client, so an operator sees who keeps a spark awake. Kept with
  // the activity, so it outlives a restart.
  void connection_from(std::string client);
  // A connection reading its client's greeting (client_greeting.hpp): not activity yet.
  void greeting_started() { ++greeting_connections_; }
  void greeting_ended() { --greeting_connections_; }

  // Returns a connected socket to the spark's sshd, waking the spark first if needed. Every
  // caller during one wake shares it (one backend start); the probe's first successful
  // connection goes to the first caller. Throws WakeError with the reason.
  // `cause` says who asked ("a connection from 1.2.3.4") for the wake's record. A warm
  // connect opens the socket on `socket_executor` (a data worker; empty: the spark's own), so
  // it need not move there afterwards; a socket from a wake's probe may be on either.
  // `client_gone` is asked while the wake waits in line (limits.max_running): a client that
  // left stops waiting (a runtime_error), so a wake nobody waits for gives its place up.
  awaitable<tcp::socket> connect_upstream(std::string cause, asio::any_io_executor socket_executor = {},
                                          std::function<bool()> client_gone = {});

  // The same for one of the spark's dev ports (`port` on the host of its SSH target): wakes the
  // spark as for SSH, then connects to the port. While the spark is young (asleep, waking, or
  // running for less than port_grace) a port that refuses is a dev server still starting and is
  // retried within wake_timeout; on an older spark it throws PortClosedError at once.
  // `client_gone` is asked between tries: a client that left ends the wait (a runtime_error).
  awaitable<tcp::socket> connect_port(int port, std::string cause, asio::any_io_executor socket_executor = {},
                                      std::function<bool()> client_gone = {});

  // Wakes the spark if needed (joining a wake in progress) and returns once it is running, or
  // the reason it could not be woken. An operator's wake counts as activity. `keep_in_line`: a
  // wake waiting under limits.max_running keeps its place even with no connection waiting for
  // it (an operator asked for it); else it gives its place up once nobody waits.
  awaitable<std::optional<std::string>> ensure_awake(std::string cause, bool keep_in_line = false);

  // Puts the spark to sleep if it is running (or failed, to clean up). An operator's sleep that
  // is not `forced` leaves it awake if other gateway replicas may have sessions to it. `why`
  // replaces the reason's own words in the log and the record ("to make room for calm-otter").
  // An eviction, like an idle sleep, is declined by a backend that knows of newer activity.
  awaitable<void> sleep(SleepReason reason, bool forced = false, std::string why = {});

  // Reaper tick (the reaping replica only): sleeps the spark if it is idle; a running or failed
  // spark with no session is idle after its idle timeout. A sleeping spark the backend cannot
  // observe (exec) is probed, in case someone started it by hand.
  void reap_if_idle(activity::TimePoint now);

  // Every few hundred milliseconds, on every replica: follows what the backend shows (a spark
  // started or stopped by someone else: another gateway replica, kubectl), and keeps the
  // activity of this replica's open sessions recorded where the other replicas read it.
  void follow_backend(activity::TimePoint now);
  void share_activity_if_due(activity::TimePoint now);

  // At start-up, for backends that can run without us: adopt a spark already running.
  awaitable<void> adopt_if_running();

  // How stale the activity other replicas read may get while this one has a session open:
  // well inside the idle timeout, so another replica's reaper always finds it fresh.
  std::chrono::milliseconds share_period() const;

  // A reload changed this spark's settings. Timeouts apply at once; a changed backend is swapped
  // in now if the spark is asleep, else after its next sleep (the running one is not disturbed).
  void update(config::SparkConfig cfg, std::unique_ptr<Backend> backend);

  // Removed from the config: once its last connection closes, stop it.
  void retire();

 private:
  struct WakeAttempt {
    explicit WakeAttempt(asio::any_io_executor ex) : done(ex) {}
    AsyncEvent done;
    std::optional<std::string> error;
    std::optional<tcp::socket> probe_socket;  // the first connection that succeeded
    bool keep_in_line = false;                // asked by an operator (ensure_awake)
  };

  enum class ShareOutcome { recorded, asleep, failed };
  struct ShareAttempt {
    explicit ShareAttempt(asio::any_io_executor ex) : done(ex) {}
    AsyncEvent done;
    ShareOutcome outcome = ShareOutcome::failed;
  };

  std::shared_ptr<WakeAttempt> join_or_start_wake(const std::string& cause);
  // Waits for the wake to finish; while it waits in line, a client that left ends the wait.
  awaitable<void> wait_for_wake(std::shared_ptr<WakeAttempt> attempt,
                                const std::function<bool()>& client_gone) const;
  awaitable<void> run_wake(std::shared_ptr<WakeAttempt> attempt, std::string cause);
  // Under limits.max_running: waits for the wake's place. The reason it got none, if it did not;
  // `cause` gains how it got one ("after calm-otter was put to sleep to make room").
  awaitable<std::optional<std::string>> wait_for_place(const std::shared_ptr<WakeAttempt>& attempt,
                                                       std::string& cause);
  // Issues the backend's start, retrying transient failures until `deadline`. Returns the
  // reason it could not.
  awaitable<std::optional<std::string>> start_backend(Backend& backend, const WakeRequest& request,
                                                      std::chrono::steady_clock::time_point deadline);
  // Waits for the started spark's sshd to answer; returns the reason it did not.
  awaitable<std::optional<std::string>> wait_until_ready(Backend& backend, WakeAttempt& attempt,
                                                         std::chrono::steady_clock::time_point started,
                                                         std::chrono::steady_clock::time_point deadline);
  // A failed wake leaves nothing running: stops the spark, retried until it is stopped or a
  // new wake takes over.
  awaitable<void> stop_after_failed_wake(Backend& backend, const std::string& why, activity::TimePoint woken_for);
  // Records this replica's activity for the others (Backend::share_activity), single-flight.
  awaitable<ShareOutcome> share_activity(activity::TimePoint at);
  // A connection's activity, recorded before it is spliced (retried a little while the API
  // fails). False: the spark turned out to be going to sleep.
  awaitable<bool> record_before_splice();
  awaitable<void> run_share(std::shared_ptr<ShareAttempt> attempt, activity::TimePoint at);
  awaitable<void> refresh_shared_activity(activity::TimePoint now);
  bool share_due(activity::TimePoint now) const;
  // Takes a spark the backend shows running (or failing) that this gateway did not wake.
  void adopt(const Observation& obs, activity::TimePoint now);
  // Ends a wake for everyone waiting on it. (A member, not a lambda in run_wake: GCC 12
  // miscompiles lambdas that capture coroutine parameters by reference.)
  void finish_wake(const std::shared_ptr<WakeAttempt>& attempt, std::optional<std::string> error,
                   std::chrono::steady_clock::time_point started);
  awaitable<std::optional<tcp::socket>> try_connect(const config::Address& target,
                                                    std::chrono::milliseconds timeout, std::string& error,
                                                    asio::any_io_executor socket_executor = {});
  void set_state(SparkState s);
  void apply_pending_backend();

  SparkEnvironment env_;
  SparkMetrics& metrics_;
  config::SparkConfig cfg_;
  std::shared_ptr<Backend> backend_;
  std::unique_ptr<Backend> pending_backend_;  // from a reload, waiting for the spark to sleep
  SparkState state_ = SparkState::sleeping;
  std::shared_ptr<WakeAttempt> wake_;           // set while waking
  std::shared_ptr<AsyncEvent> sleep_finished_;  // set while stopping
  std::shared_ptr<ShareAttempt> share_;         // set while activity is being recorded
  int open_connections_ = 0;
  int waiting_connections_ = 0;
  int greeting_connections_ = 0;
  std::uint64_t wakes_started_ = 0;
  bool retired_ = false;
  bool recorded_in_this_run_ = false;  // this replica wrote activity since the spark last started
  std::string last_wake_error_;
  std::chrono::system_clock::time_point asleep_since_ = std::chrono::system_clock::now();
  std::chrono::steady_clock::time_point running_since_{};  // when it last became running
  // Time not asleep, for spark_gateway_spark_awake_seconds_total: the closed stretches, and
  // since when the current one runs (while not sleeping).
  std::chrono::steady_clock::duration awake_before_{};
  std::chrono::steady_clock::time_point awake_since_{};
};

}  // namespace spark::gateway
