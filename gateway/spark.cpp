#include "gateway/spark.hpp"

#include <spdlog/spdlog.h>

#include "config/duration.hpp"
#include "config/plural.hpp"
#include "gateway/running_cap.hpp"

namespace spark::gateway {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Readiness probing: fast at first (a local sshd is up in tens of milliseconds, and every
// probe interval is added to the wake as measured in docs/benchmarks.md; a refused connect is
// one SYN and one RST), then backing off so a slow start does not hammer the target.
milliseconds probe_interval(steady_clock::duration since_start) {
  if (since_start < std::chrono::seconds(2)) return milliseconds(10);
  if (since_start < std::chrono::seconds(10)) return milliseconds(50);
  return milliseconds(250);
}
constexpr milliseconds kProbeConnectTimeout{1000};
constexpr milliseconds kWarmConnectTimeout{2000};
// How often a dev port still starting is tried again.
constexpr milliseconds kPortRetry{250};
// How long a connection retries recording its activity before it is spliced when the API keeps
// failing (rule 3). Then it goes on: an API down for everyone cannot sleep the spark either,
// and sessions to a running spark outlive API outages.
constexpr milliseconds kRecordBeforeSpliceBudget{2000};

// When the run the backend shows began, as far as it can tell: its start (a pod's creation)
// when that is known to be after the last sleep, else now (the moment it is seen). Never
// earlier than the truth, so a spark is not slept sooner than its idle timeout after it started.
activity::TimePoint run_began(const Observation& obs, activity::TimePoint now) {
  if (!obs.running_since) return now;
  if (obs.last_slept_at && *obs.running_since < *obs.last_slept_at) return now;
  return std::min(*obs.running_since, now);
}

// Counts a caller as waiting (for max_waiting) for as long as it is in a scope.
struct WaitingGuard {
  int& n;
  explicit WaitingGuard(int& count) : n(count) { ++n; }
  ~WaitingGuard() { --n; }
  WaitingGuard(const WaitingGuard&) = delete;
  WaitingGuard& operator=(const WaitingGuard&) = delete;
};

// How people reach the spark's SSH and dev ports: its tailnet name when the gateway keeps its
// Service, else the gateway's own addresses.
void describe_reach(const config::SparkConfig& cfg, SparkStatus& s) {
  const auto& at = cfg.tailnet_name;
  const int ssh_port = at.empty() ? int{cfg.listen.port} : cfg.tailnet_ssh_port;
  const std::string port_suffix = ssh_port == 22 ? "" : ":" + std::to_string(ssh_port);
  s.ssh = "ssh " + (ssh_port == 22 ? std::string() : "-p " + std::to_string(ssh_port) + " ") +
          (at.empty() ? cfg.listen.host : at);
  s.ssh_url = "ssh://" + (at.empty() ? cfg.listen.to_string() : at + port_suffix);
  for (const auto& port : cfg.ports) {
    const auto url = at.empty() ? "http://" + port.listen.to_string() + "/"
                                : "http://" + at + ":" + std::to_string(port.port) + "/";
    s.ports.push_back({port.name, port.port, port.listen.to_string(), url});
  }
}

}  // namespace

std::string_view to_string(SparkState s) {
  switch (s) {
    case SparkState::sleeping: return "sleeping";
    case SparkState::waking: return "waking";
    case SparkState::running: return "running";
    case SparkState::stopping: return "stopping";
    case SparkState::failed: return "failed";
  }
  return "unknown";
}

Spark::Spark(SparkEnvironment env, config::SparkConfig cfg, std::unique_ptr<Backend> backend)
    : env_(env),
      metrics_((env.metrics ? *env.metrics : unscraped_metrics()).spark(cfg.name)),
      cfg_(std::move(cfg)),
      backend_(std::move(backend)) {}

SparkStatus Spark::status(activity::TimePoint now) const {
  (void)now;
  const auto a = env_.activity.get(name());
  SparkStatus s;
  s.name = name();
  s.state = std::string(to_string(state_));
  if (env_.cap) s.queue_position = env_.cap->position(name());
  if (s.queue_position) s.state = "queued";
  s.backend = std::string(backend_->kind());
  s.listen = cfg_.listen.to_string();
  s.target = cfg_.target().to_string();
  s.open_connections = open_connections_;
  if (a.last_activity != activity::TimePoint{}) s.last_activity = a.last_activity;  // the epoch: none
  if (!cfg_.idle_timeout.is_never())
    s.idle_timeout_seconds = std::chrono::duration<double>(*cfg_.idle_timeout.value).count();
  if (state_ == SparkState::running) s.sleeps_at = activity::sleeps_at(a, cfg_.idle_timeout);
  if (a.keep_awake_until && *a.keep_awake_until > now) s.keep_awake_until = a.keep_awake_until;
  s.wakes = wakes_started_;
  s.last_wake_error = last_wake_error_;
  s.turned_away = metrics_.turned_away();
  s.last_client = env_.activity.last_client(name());
  const auto awake = awake_before_ + (state_ == SparkState::sleeping ? steady_clock::duration{}
                                                                     : steady_clock::now() - awake_since_);
  s.awake_seconds = std::chrono::duration<double>(awake).count();
  const auto& history = env_.activity.history(name());
  const auto day = history.totals(now - std::chrono::hours(24), now);
  const auto week = history.totals(now - activity::kHistoryWindow, now);
  s.awake_24h_seconds = day.awake_seconds;
  s.awake_7d_seconds = week.awake_seconds;
  s.slept_share_24h = day.slept_share();
  s.slept_share_7d = week.slept_share();
  describe_reach(cfg_, s);
  return s;
}

void Spark::set_state(SparkState s) {
  if (s == state_) return;
  if (s == SparkState::sleeping) recorded_in_this_run_ = false;
  if (s == SparkState::running) running_since_ = steady_clock::now();
  if (state_ == SparkState::sleeping) awake_since_ = steady_clock::now();  // waking up
  if (s == SparkState::sleeping) awake_before_ += steady_clock::now() - awake_since_;
  // The history counts what the awake counter counts: any state but sleeping.
  if ((state_ == SparkState::sleeping) != (s == SparkState::sleeping))
    env_.activity.record_awake(name(), s != SparkState::sleeping, std::chrono::system_clock::now());
  spdlog::debug("spark {}: {} -> {}", name(), to_string(state_), to_string(s));
  state_ = s;
}

bool Spark::holds_place() const {
  switch (state_) {
    case SparkState::sleeping: return false;
    case SparkState::waking:
    case SparkState::running:
    case SparkState::stopping: return true;
    case SparkState::failed: return backend_->observe().state != Observation::State::asleep;
  }
  return false;
}

awaitable<bool> Spark::claim_place(int max_running) {
  if (!backend_->shares_activity()) co_return true;
  auto backend = backend_;
  try {
    const auto claim = [backend, max_running] { return backend->claim_place(max_running); };
    co_return co_await run_blocking(env_.control_pool, claim);
  } catch (const std::exception& e) {
    spdlog::warn("spark {}: cannot take its place under limits.max_running: {}", name(), e.what());
  }
  co_return false;
}

void Spark::connection_from(std::string client) {
  env_.activity.connection_from(name(), std::move(client), std::chrono::system_clock::now());
}

void Spark::connection_opened() {
  ++open_connections_;
  env_.activity.connection_opened(name(), std::chrono::system_clock::now());
}

void Spark::connection_closed() {
  --open_connections_;
  env_.activity.connection_closed(name(), std::chrono::system_clock::now());
  if (retired_ && open_connections_ == 0) {
    asio::co_spawn(env_.executor, sleep(SleepReason::removed), asio::detached);
  }
}

awaitable<std::optional<tcp::socket>> Spark::try_connect(const config::Address& target, milliseconds timeout,
                                                         std::string& error,
                                                         asio::any_io_executor socket_executor) {
  error_code ec;
  const auto address = asio::ip::make_address(target.host, ec);
  if (ec) {
    error = "no address to connect to (" + target.to_string() + ")";
    co_return std::nullopt;
  }
  const tcp::endpoint endpoint(address, target.port);
  tcp::socket socket(socket_executor ? socket_executor : env_.executor);
  asio::steady_timer timer(env_.executor, timeout);
  auto result = co_await (socket.async_connect(endpoint, asio::redirect_error(use_awaitable, ec)) ||
                          timer.async_wait(use_awaitable));
  if (result.index() == 1) {
    error = "connect to " + target.to_string() + " timed out";
    co_return std::nullopt;
  }
  if (ec) {
    error = "connect to " + target.to_string() + ": " + ec.message();
    co_return std::nullopt;
  }
  co_return std::optional<tcp::socket>(std::move(socket));
}

awaitable<tcp::socket> Spark::connect_upstream(std::string cause, asio::any_io_executor socket_executor,
                                               std::function<bool()> client_gone) {
  const WaitingGuard waiting(waiting_connections_);
  // Bounded: a spark that keeps dying between its wake and our connect is reported, not chased.
  std::string last_error = "the spark did not stay up";
  for (int round = 0; round < 3; ++round) {
    if (state_ == SparkState::stopping) {
      auto finished = sleep_finished_;
      co_await finished->wait();  // a sleep in progress finishes first, then we wake it again
      continue;
    }
    if (state_ == SparkState::running && share_due(std::chrono::system_clock::now())) {
      // Another replica may be about to sleep it on the activity it last read: record ours
      // first, and learn if that replica was faster.
      if (!co_await record_before_splice()) {
        if (state_ == SparkState::running) {
          spdlog::info("spark {}: put to sleep elsewhere meanwhile; waking it again", name());
          set_state(SparkState::sleeping);
          asleep_since_ = std::chrono::system_clock::now();
        }
        continue;
      }
    }
    if (state_ == SparkState::running) {
      const auto obs = backend_->observe();
      if (obs.state == Observation::State::started && obs.upstream) {
        if (auto s = co_await try_connect(*obs.upstream, kWarmConnectTimeout, last_error, socket_executor))
          co_return std::move(*s);
      } else if (!obs.reason.empty()) {
        last_error = obs.reason;
      }
      if (state_ != SparkState::running) continue;  // something changed while we tried
      spdlog::warn("spark {}: was running but {}; waking it again", name(), last_error);
      set_state(SparkState::sleeping);
    }
    auto attempt = join_or_start_wake(cause);
    co_await wait_for_wake(attempt, client_gone);
    if (attempt->error) throw WakeError(*attempt->error);
    if (attempt->probe_socket) {
      tcp::socket s = std::move(*attempt->probe_socket);
      attempt->probe_socket.reset();
      co_return s;
    }
  }
  throw UpstreamError(last_error);
}

awaitable<tcp::socket> Spark::connect_port(int port, std::string cause, asio::any_io_executor socket_executor,
                                           std::function<bool()> client_gone) {
  const auto deadline = steady_clock::now() + cfg_.wake_timeout;
  const bool was_running = state_ == SparkState::running;
  const WaitingGuard waiting(waiting_connections_);
  // Awake as for SSH (its sshd answering is what "awake" means, and the wake is the spark's
  // one wake), but without a connection to its sshd of our own: that would be an
  // unauthenticated sshd connection per page load, counted against sshd's MaxStartups.
  if (auto failed = co_await ensure_awake(cause)) throw WakeError(*failed);
  const auto young = [&] { return !was_running || steady_clock::now() - running_since_ < cfg_.port_grace; };
  const auto obs = backend_->observe();
  if (!obs.upstream) throw UpstreamError(obs.reason.empty() ? "the spark has no address" : obs.reason);
  const config::Address target{obs.upstream->host, static_cast<std::uint16_t>(port)};
  std::string error;
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
    if (auto s = co_await try_connect(target, std::min(left, kWarmConnectTimeout), error, socket_executor))
      co_return std::move(*s);
    if (!young()) throw PortClosedError(error);
    if (steady_clock::now() + kPortRetry >= deadline)
      throw PortClosedError(error + " (still, after wake_timeout " + config::format_duration(cfg_.wake_timeout) +
                            ")");
    asio::steady_timer pause(env_.executor, kPortRetry);
    co_await pause.async_wait(use_awaitable);
    if (client_gone && client_gone())
      throw std::runtime_error("the client left while port " + std::to_string(port) + " was awaited (" + error +
                               ")");
    if (state_ != SparkState::running)
      throw UpstreamError("the spark stopped while its port " + std::to_string(port) + " was awaited");
  }
}

awaitable<std::optional<std::string>> Spark::ensure_awake(std::string cause, bool keep_in_line) {
  env_.activity.touch(name(), std::chrono::system_clock::now());
  for (int round = 0; round < 3; ++round) {
    if (state_ == SparkState::stopping) {
      auto finished = sleep_finished_;
      co_await finished->wait();
      continue;
    }
    if (state_ == SparkState::running) {
      if (share_due(std::chrono::system_clock::now()) && !co_await record_before_splice()) {
        if (state_ == SparkState::running) set_state(SparkState::sleeping);
        continue;
      }
      co_return std::nullopt;
    }
    auto attempt = join_or_start_wake(cause);
    if (keep_in_line) attempt->keep_in_line = true;
    co_await attempt->done.wait();
    co_return attempt->error;
  }
  co_return std::optional<std::string>("the spark kept being put to sleep");
}

awaitable<void> Spark::wait_for_wake(std::shared_ptr<WakeAttempt> attempt,
                                     const std::function<bool()>& client_gone) const {
  if (!env_.cap || !client_gone) {
    co_await attempt->done.wait();
    co_return;
  }
  asio::steady_timer look(env_.executor);
  while (!attempt->done.is_set()) {
    if (env_.cap->position(name()) && client_gone())
      throw std::runtime_error("the client left while the wake waited in line (limits.max_running)");
    look.expires_after(std::chrono::milliseconds(500));
    co_await (attempt->done.wait() || look.async_wait(use_awaitable));
  }
}

std::shared_ptr<Spark::WakeAttempt> Spark::join_or_start_wake(const std::string& cause) {
  if (wake_) return wake_;  // waking, or waiting in line to
  wake_ = std::make_shared<WakeAttempt>(env_.executor);
  asio::co_spawn(env_.executor, run_wake(wake_, cause), asio::detached);
  return wake_;
}

awaitable<void> Spark::run_wake(std::shared_ptr<WakeAttempt> attempt, std::string cause) {
  auto self = shared_from_this();  // a reload may drop the spark; the wake still finishes
  // Under limits.max_running the wake may wait in line first: the spark sleeps on meanwhile (it
  // is neither awake in its history nor counted as running), and it is "queued" in its view.
  if (auto no_place = co_await wait_for_place(attempt, cause)) {
    // Nothing was started, and the people waiting are told why.
    spdlog::warn("spark {}: not woken for {}: {}", name(), cause, *no_place);
    attempt->error = *no_place;
    last_wake_error_ = *no_place;
    if (wake_ == attempt) wake_.reset();
    attempt->done.set();
    co_return;
  }
  if (state_ == SparkState::stopping) {
    auto finished = sleep_finished_;  // a failed wake's clean-up in flight: it finishes first
    co_await finished->wait();
  }
  env_.activity.record_wake(name(), cause, std::chrono::system_clock::now());
  set_state(SparkState::waking);
  ++wakes_started_;
  if (env_.cap) env_.cap->changed();  // it holds a place from here (the gauges say so at once)
  auto backend = backend_;            // read after the line: a reload may have swapped it meanwhile
  // The backend may know better than we do since when it sleeps (put to sleep by another
  // replica, or before this gateway started).
  if (const auto seen = backend->observe(); seen.state == Observation::State::asleep && seen.asleep_since)
    asleep_since_ = *seen.asleep_since;
  const auto asleep_for = std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now() -
                                                                   asleep_since_);
  spdlog::info("spark {}: waking for {} (asleep for {}, {} backend)", name(), cause,
               config::format_duration(asleep_for), backend->kind());

  // The wake is activity, recorded with the start itself where other replicas read it: none of
  // them may take the freshly woken spark for one idle since it last slept.
  // (Named arguments, passed by reference: GCC 12 may destroy temporaries in a co_await twice.)
  // Time in line is not the wake's: it has its whole wake_timeout from here.
  const auto woken_for = std::chrono::system_clock::now();
  const auto started = steady_clock::now();
  const auto deadline = started + cfg_.wake_timeout;
  const WakeRequest request{cfg_.wake_timeout, cause, woken_for};
  auto error = co_await start_backend(*backend, request, deadline);
  if (!error) {
    if (backend->shares_activity()) {
      env_.activity.mark_shared(name(), woken_for);
      recorded_in_this_run_ = true;
    }
    error = co_await wait_until_ready(*backend, *attempt, started, deadline);
  }
  finish_wake(attempt, error, started);
  if (error) co_await stop_after_failed_wake(*backend, *error, woken_for);
}

awaitable<std::optional<std::string>> Spark::wait_for_place(const std::shared_ptr<WakeAttempt>& attempt,
                                                            std::string& cause) {
  if (!env_.cap) co_return std::nullopt;
  const auto deadline = steady_clock::now() + cfg_.wake_timeout;
  auto wanted = [this, attempt] { return attempt->keep_in_line || waiting_connections_ > 0; };
  const auto admission = co_await env_.cap->admit(shared_from_this(), deadline, wanted);
  if (admission.admitted) {
    if (!admission.note.empty()) cause += " " + admission.note;
    co_return std::nullopt;
  }
  if (!wanted()) co_return "nobody waits for it any more (" + admission.note + ")";
  co_return "not woken within wake_timeout " + config::format_duration(cfg_.wake_timeout) + ": " + admission.note;
}

awaitable<std::optional<std::string>> Spark::start_backend(Backend& backend, const WakeRequest& request,
                                                           steady_clock::time_point deadline) {
  Backend* const target = &backend;
  asio::steady_timer timer(env_.executor);
  milliseconds backoff{250};
  for (;;) {
    milliseconds wait{};
    try {
      const auto start = [target, request] { target->wake(request); };
      co_await run_blocking(env_.control_pool, start);
      co_return std::nullopt;
    } catch (const BackendError& e) {
      wait = e.retry_after() > milliseconds::zero() ? e.retry_after() : backoff;
      if (!e.transient() || steady_clock::now() + wait >= deadline) co_return std::string(e.what());
      spdlog::warn("spark {}: {}; retrying in {}", name(), e.what(), config::format_duration(wait));
    } catch (const std::exception& e) {
      co_return std::string(e.what());
    }
    timer.expires_after(wait);
    co_await timer.async_wait(use_awaitable);
    backoff = std::min(backoff * 2, milliseconds(5000));
  }
}

awaitable<std::optional<std::string>> Spark::wait_until_ready(Backend& backend, WakeAttempt& attempt,
                                                              steady_clock::time_point started,
                                                              steady_clock::time_point deadline) {
  asio::steady_timer timer(env_.executor);
  std::string last_error = "no probe was made";
  for (;;) {
    const auto obs = backend.observe();
    if (obs.state == Observation::State::failed) co_return obs.reason;
    if (obs.state == Observation::State::asleep) co_return "the spark was stopped while waking";
    if (obs.upstream) {
      const auto remaining = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
      if (auto s = co_await try_connect(*obs.upstream,
                                        std::max(milliseconds(1), std::min(remaining, kProbeConnectTimeout)),
                                        last_error)) {
        attempt.probe_socket = std::move(*s);
        co_return std::nullopt;
      }
    } else if (!obs.reason.empty()) {
      last_error = obs.reason;
    }
    const auto now = steady_clock::now();
    if (now >= deadline) break;
    timer.expires_after(std::min<steady_clock::duration>(probe_interval(now - started), deadline - now));
    co_await timer.async_wait(use_awaitable);
  }
  co_return "not ready within wake_timeout " + config::format_duration(cfg_.wake_timeout) +
      " (last probe: " + last_error + ")";
}

awaitable<void> Spark::stop_after_failed_wake(Backend& backend, const std::string& why,
                                              activity::TimePoint woken_for) {
  Backend* const target = &backend;
  // A new wake (a user trying again) takes over from this clean-up; its own failure, if any,
  // cleans up after itself.
  const auto wake_generation = wakes_started_;
  asio::steady_timer timer(env_.executor);
  milliseconds backoff{1000};
  for (;;) {
    // While the stop is in flight the spark is `stopping`: a connection arriving meanwhile
    // waits for it and then wakes the spark afresh, instead of starting a wake this stop undoes.
    set_state(SparkState::stopping);
    auto stopped = std::make_shared<AsyncEvent>(env_.executor);
    sleep_finished_ = stopped;
    std::optional<std::string> error;
    bool in_use_elsewhere = false;
    try {
      // `woken_for`: a backend shared with other gateways leaves the spark up if someone
      // recorded activity after this wake began (their session works; ours did not).
      const SleepRequest request{"wake_failed", "the wake failed: " + why, woken_for};
      const auto stop = [target, request] { target->sleep(request); };
      co_await run_blocking(env_.control_pool, stop);
    } catch (const SleepDeclined& e) {
      in_use_elsewhere = true;
      spdlog::info("spark {}: left running after the failed wake: {}", name(), e.what());
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (state_ == SparkState::stopping) set_state(SparkState::failed);
    sleep_finished_.reset();
    stopped->set();
    if (!error) {
      if (!in_use_elsewhere) spdlog::info("spark {}: stopped after the failed wake", name());
      co_return;
    }
    spdlog::warn("spark {}: stopping after the failed wake failed ({}); retrying in {}", name(), *error,
                 config::format_duration(backoff));
    timer.expires_after(backoff);
    co_await timer.async_wait(use_awaitable);
    backoff = std::min(backoff * 2, milliseconds(30000));
    // Given up only for a new wake, or a session now using the spark. Not because the spark
    // reads asleep meanwhile: a watch lagging behind the wake's own scale-up shows it asleep,
    // then running ("adopted") once it catches up, and the clean-up must still happen (seen in
    // test_lifecycle case 5 under load: the Deployment stayed at 1).
    if (wakes_started_ != wake_generation || state_ == SparkState::waking || open_connections_ > 0) co_return;
  }
}

void Spark::finish_wake(const std::shared_ptr<WakeAttempt>& attempt, std::optional<std::string> error,
                        steady_clock::time_point started) {
  attempt->error = std::move(error);
  if (wake_ == attempt) wake_.reset();
  const auto took = config::format_duration(steady_clock::now() - started);
  if (attempt->error) {
    spdlog::error("spark {}: wake failed after {}: {}", name(), took, *attempt->error);
    metrics_.wakes_failure.Increment();
    last_wake_error_ = *attempt->error;
    set_state(SparkState::failed);
  } else {
    spdlog::info("spark {}: ready in {}", name(), took);
    metrics_.wakes_success.Increment();
    metrics_.wake_duration.Observe(std::chrono::duration<double>(steady_clock::now() - started).count());
    last_wake_error_.clear();
    set_state(SparkState::running);
  }
  attempt->done.set();
}

std::chrono::milliseconds Spark::share_period() const {
  auto period = env_.activity_flush_interval;
  if (!cfg_.idle_timeout.is_never())
    period = std::min(period, std::chrono::duration_cast<milliseconds>(*cfg_.idle_timeout.value / 3));
  // Another replica may evict a spark idle for evict_idle_after: a session here keeps it fresher.
  if (const auto evict = env_.cap ? env_.cap->evict_idle_after() : std::nullopt)
    period = std::min(period, std::chrono::duration_cast<milliseconds>(*evict / 3));
  return std::max(period, milliseconds(1));
}

bool Spark::share_due(activity::TimePoint now) const {
  if (!backend_->shares_activity()) return false;
  // The first session of a run records itself even on fresh activity: the replica whose wake
  // fails stops the spark unless someone recorded activity after its wake began.
  return !recorded_in_this_run_ || env_.activity.shared_last_activity(name()) + share_period() <= now;
}

awaitable<Spark::ShareOutcome> Spark::share_activity(activity::TimePoint at) {
  if (!share_) {
    share_ = std::make_shared<ShareAttempt>(env_.executor);
    asio::co_spawn(env_.executor, run_share(share_, at), asio::detached);
  }
  auto attempt = share_;
  co_await attempt->done.wait();
  co_return attempt->outcome;
}

awaitable<void> Spark::run_share(std::shared_ptr<ShareAttempt> attempt, activity::TimePoint at) {
  auto self = shared_from_this();
  auto backend = backend_;
  try {
    const auto share = [backend, at] { return backend->share_activity(at); };
    const bool awake = co_await run_blocking(env_.control_pool, share);
    attempt->outcome = awake ? ShareOutcome::recorded : ShareOutcome::asleep;
    if (awake) {
      env_.activity.mark_shared(name(), at);
      recorded_in_this_run_ = true;
    }
  } catch (const std::exception& e) {
    // Not recorded: still due, so retried (by the caller, or at the next follow tick).
    attempt->outcome = ShareOutcome::failed;
    spdlog::warn("spark {}: cannot record activity for the other gateway replicas: {}", name(), e.what());
  }
  if (share_ == attempt) share_.reset();
  attempt->done.set();
}

awaitable<bool> Spark::record_before_splice() {
  asio::steady_timer timer(env_.executor);
  const auto give_up = steady_clock::now() + std::min<milliseconds>(cfg_.wake_timeout, kRecordBeforeSpliceBudget);
  milliseconds backoff{250};
  for (;;) {
    const auto outcome = co_await share_activity(std::chrono::system_clock::now());
    if (outcome != ShareOutcome::failed) co_return outcome == ShareOutcome::recorded;
    if (steady_clock::now() + backoff >= give_up) {
      spdlog::warn(
          "spark {}: spliced without recording its activity for the other gateway replicas (the API "
          "keeps failing); retried while the session lasts",
          name());
      co_return true;
    }
    timer.expires_after(backoff);
    co_await timer.async_wait(use_awaitable);
    backoff *= 2;
    if (state_ != SparkState::running) co_return true;  // the caller looks at the state again
  }
}

void Spark::share_activity_if_due(activity::TimePoint now) {
  // Open sessions are activity, and so are connections waiting for a wake: a wake slower than
  // the idle timeout must not look idle to the reaping replica either.
  const bool in_use = (state_ == SparkState::running && open_connections_ > 0) ||
                      (state_ == SparkState::waking && waiting_connections_ > 0);
  if (!in_use || share_ || !share_due(now)) return;
  env_.activity.touch(name(), now);
  asio::co_spawn(env_.executor, refresh_shared_activity(now), asio::detached);
}

awaitable<void> Spark::refresh_shared_activity(activity::TimePoint now) {
  auto self = shared_from_this();
  const auto outcome = co_await share_activity(now);
  if (outcome == ShareOutcome::asleep && state_ == SparkState::running)
    spdlog::warn("spark {}: put to sleep elsewhere while {} {} open here", name(),
                 config::counted(open_connections_, "connection"), open_connections_ == 1 ? "was" : "were");
}

awaitable<void> Spark::sleep(SleepReason reason, bool forced, std::string why_override) {
  if (state_ != SparkState::running && state_ != SparkState::failed) co_return;
  SleepRequest request{std::string(to_string(reason)), std::string(to_string(reason)),
                       env_.activity.get(name()).last_activity};
  if (reason == SleepReason::idle) {
    if (request.last_activity == activity::TimePoint{}) {
      request.description = "idle, no activity recorded";
    } else {
      const auto idle_for = std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now() -
                                                                     request.last_activity);
      request.description = "idle for " + config::format_duration(idle_for);
    }
  } else if (reason == SleepReason::api) {
    request.description = "an operator (admin API)";
    if (!forced && backend_->shares_activity())
      request.unless_active_after = std::chrono::system_clock::now() - share_period();
  }
  if (!why_override.empty()) request.description = std::move(why_override);
  const std::string& why = request.description;
  auto self = shared_from_this();
  auto backend = backend_;
  const auto was = state_;
  set_state(SparkState::stopping);
  auto finished = std::make_shared<AsyncEvent>(env_.executor);
  sleep_finished_ = finished;
  const auto started = steady_clock::now();
  spdlog::info("spark {}: going to sleep ({})", name(), why);
  bool stopped = false;
  try {
    const auto stop = [backend, request] { backend->sleep(request); };
    co_await run_blocking(env_.control_pool, stop);
    stopped = true;
  } catch (const SleepDeclined& e) {
    // Another replica's session or a keep-awake: the normal way replicas agree, not an error.
    spdlog::info("spark {}: stays awake: {}", name(), e.what());
  } catch (const std::exception& e) {
    spdlog::error("spark {}: sleep failed ({}), it stays awake: {}", name(), why, e.what());
  }
  if (stopped) {
    spdlog::info("spark {}: asleep after {} ({})", name(), config::format_duration(steady_clock::now() - started),
                 why);
    asleep_since_ = std::chrono::system_clock::now();
    metrics_.count_sleep(reason);
    set_state(SparkState::sleeping);
    apply_pending_backend();
    if (env_.cap) env_.cap->changed();  // a place is free: the next wake in line goes
  } else if (state_ == SparkState::stopping) {
    set_state(was);
  }
  sleep_finished_.reset();
  finished->set();
}

void Spark::follow_backend(activity::TimePoint now) {
  // Ours in flight (a wake in line included: once admitted it looks at the backend itself).
  if (state_ == SparkState::waking || state_ == SparkState::stopping || wake_) return;
  const auto obs = backend_->observe();
  if (state_ == SparkState::sleeping) {
    if (obs.state == Observation::State::asleep) {
      if (obs.asleep_since) asleep_since_ = *obs.asleep_since;  // e.g. slept by another replica
      return;
    }
    // Only backends that know when a spark runs without us (Kubernetes) are followed here;
    // the others are probed by the reaper.
    if (backend_->may_run_without_us()) adopt(obs, now);
    return;
  }
  if (obs.state == Observation::State::asleep) {
    // A failed spark is asleep once its clean-up (or someone) stopped it: no news for the log.
    if (state_ == SparkState::running)
      spdlog::info("spark {}: stopped elsewhere ({}); marked asleep", name(),
                   obs.reason.empty() ? "the backend reports it asleep" : obs.reason);
    set_state(SparkState::sleeping);
    asleep_since_ = obs.asleep_since.value_or(now);
    apply_pending_backend();
    return;
  }
  if (obs.last_slept_at && *obs.last_slept_at > env_.activity.get(name()).last_activity) {
    // It slept after the newest activity we know of, and runs again: a run this replica never
    // saw begin (its watch skipped the 0, or our own sleep's answer was lost). Its idle clock
    // starts with that run, not with the previous one's activity.
    env_.activity.seen_running_since(name(), run_began(obs, now));
    recorded_in_this_run_ = false;
    spdlog::info("spark {}: slept at {} and started again elsewhere since; idle since {}", name(),
                 activity::format_rfc3339(*obs.last_slept_at),
                 activity::format_rfc3339(env_.activity.get(name()).last_activity));
  }
  if (obs.state == Observation::State::failed && state_ == SparkState::running) {
    spdlog::warn("spark {}: failing: {}", name(), obs.reason);
    last_wake_error_ = obs.reason;
    set_state(SparkState::failed);
  }
}

void Spark::adopt(const Observation& obs, activity::TimePoint now) {
  backend_->adopt_running();
  // Seen running = active: whoever started it (another replica, a person) did so to use it, so
  // its idle clock starts no earlier than when it started (when the backend knows, else now),
  // whatever older activity says. Newer recorded activity still wins. Only here: seeing it run
  // is not using it, and must not read as activity to another replica whose wake of it failed
  // (its clean-up stops the spark unless someone used it since).
  env_.activity.seen_running_since(name(), run_began(obs, now));
  const auto idle_since = activity::format_rfc3339(env_.activity.get(name()).last_activity);
  if (obs.state == Observation::State::failed) {
    last_wake_error_ = obs.reason;
    set_state(SparkState::failed);
    spdlog::warn("spark {}: already running but failing ({}); adopted, reaped like an idle spark (idle since {})",
                 name(), obs.reason, idle_since);
    return;
  }
  set_state(SparkState::running);
  spdlog::info("spark {}: already running (started elsewhere); adopted, idle since {}", name(), idle_since);
}

void Spark::reap_if_idle(activity::TimePoint now) {
  if (state_ == SparkState::sleeping && backend_->may_run_without_us()) {
    asio::co_spawn(env_.executor, adopt_if_running(), asio::detached);
    return;
  }
  if ((state_ != SparkState::running && state_ != SparkState::failed) || open_connections_ > 0) return;
  if (!env_.activity.is_idle(name(), cfg_.idle_timeout, now)) return;
  asio::co_spawn(env_.executor, sleep(SleepReason::idle), asio::detached);
}

awaitable<void> Spark::adopt_if_running() {
  if (!backend_->may_run_without_us() || state_ != SparkState::sleeping || wake_) co_return;
  const auto obs = backend_->observe();
  if (obs.state != Observation::State::asleep) {  // the backend knows (a Deployment's replicas)
    adopt(obs, std::chrono::system_clock::now());
    co_return;
  }
  // Only a probe can tell (a unit someone started by hand).
  std::string error;
  if (auto s = co_await try_connect(cfg_.target(), kProbeConnectTimeout, error)) {
    if (state_ != SparkState::sleeping) co_return;  // a wake or a sleep began meanwhile
    adopt({Observation::State::started, cfg_.target(), {}}, std::chrono::system_clock::now());
  }
}

void Spark::update(config::SparkConfig cfg, std::unique_ptr<Backend> backend) {
  const bool backend_changed = cfg.backend != cfg_.backend;
  cfg_ = std::move(cfg);
  if (!backend_changed) return;
  pending_backend_ = std::move(backend);
  if (state_ == SparkState::sleeping || state_ == SparkState::failed)
    apply_pending_backend();
  else
    spdlog::info("spark {}: backend changed; the new one takes over after its next sleep", name());
}

void Spark::apply_pending_backend() {
  if (pending_backend_) backend_ = std::move(pending_backend_);
}

void Spark::retire() {
  retired_ = true;
  if (open_connections_ == 0) asio::co_spawn(env_.executor, sleep(SleepReason::removed), asio::detached);
}

}  // namespace spark::gateway
