#include "gateway/spark.hpp"

#include <spdlog/spdlog.h>

#include "config/duration.hpp"

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


std::string ms_text(steady_clock::duration d) {
  return config::format_duration(std::chrono::duration_cast<milliseconds>(d));
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
  s.backend = std::string(backend_->kind());
  s.listen = cfg_.listen.to_string();
  s.target = cfg_.target().to_string();
  s.open_connections = open_connections_;
  s.last_activity = a.last_activity;
  if (!cfg_.idle_timeout.is_never())
    s.idle_timeout_seconds = std::chrono::duration<double>(*cfg_.idle_timeout.value).count();
  if (state_ == SparkState::running) s.sleeps_at = activity::sleeps_at(a, cfg_.idle_timeout);
  if (a.keep_awake_until && *a.keep_awake_until > now) s.keep_awake_until = a.keep_awake_until;
  s.wakes = wakes_started_;
  s.last_wake_error = last_wake_error_;
  return s;
}

void Spark::set_state(SparkState s) {
  if (s == state_) return;
  spdlog::debug("spark {}: {} -> {}", name(), to_string(state_), to_string(s));
  state_ = s;
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

awaitable<std::optional<tcp::socket>> Spark::try_connect(const config::Address& target,
                                                         milliseconds timeout,
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
  auto result = co_await (socket.async_connect(endpoint,
                                               asio::redirect_error(use_awaitable, ec)) ||
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

awaitable<tcp::socket> Spark::connect_upstream(std::string cause,
                                               asio::any_io_executor socket_executor) {
  struct WaitingGuard {  // counts this caller as waiting for as long as it is in here
    int& n;
    explicit WaitingGuard(int& count) : n(count) { ++n; }
    ~WaitingGuard() { --n; }
  } waiting(waiting_connections_);
  // Bounded: a spark that keeps dying between its wake and our connect is reported, not chased.
  std::string last_error = "the spark did not stay up";
  for (int round = 0; round < 3; ++round) {
    if (state_ == SparkState::stopping) {
      auto finished = sleep_finished_;
      co_await finished->wait();  // a sleep in progress finishes first, then we wake it again
      continue;
    }
    if (state_ == SparkState::running) {
      const auto obs = backend_->observe();
      if (obs.state == Observation::State::started && obs.upstream) {
        if (auto s = co_await try_connect(*obs.upstream, kWarmConnectTimeout, last_error,
                                         socket_executor))
          co_return std::move(*s);
      } else if (!obs.reason.empty()) {
        last_error = obs.reason;
      }
      if (state_ != SparkState::running) continue;  // something changed while we tried
      spdlog::warn("spark {}: was running but {}; waking it again", name(), last_error);
      set_state(SparkState::sleeping);
    }
    auto attempt = join_or_start_wake(cause);
    co_await attempt->done.wait();
    if (attempt->error) throw WakeError(*attempt->error);
    if (attempt->probe_socket) {
      tcp::socket s = std::move(*attempt->probe_socket);
      attempt->probe_socket.reset();
      co_return s;
    }
  }
  throw UpstreamError(last_error);
}

awaitable<std::optional<std::string>> Spark::ensure_awake(std::string cause) {
  env_.activity.touch(name(), std::chrono::system_clock::now());
  for (int round = 0; round < 3; ++round) {
    if (state_ == SparkState::stopping) {
      auto finished = sleep_finished_;
      co_await finished->wait();
      continue;
    }
    if (state_ == SparkState::running) co_return std::nullopt;
    auto attempt = join_or_start_wake(cause);
    co_await attempt->done.wait();
    co_return attempt->error;
  }
  co_return std::optional<std::string>("the spark kept being put to sleep");
}

std::shared_ptr<Spark::WakeAttempt> Spark::join_or_start_wake(const std::string& cause) {
  if (state_ == SparkState::waking && wake_) return wake_;
  wake_ = std::make_shared<WakeAttempt>(env_.executor);
  set_state(SparkState::waking);
  ++wakes_started_;
  asio::co_spawn(env_.executor, run_wake(wake_, cause), asio::detached);
  return wake_;
}

awaitable<void> Spark::run_wake(std::shared_ptr<WakeAttempt> attempt, std::string cause) {
  auto self = shared_from_this();  // a reload may drop the spark; the wake still finishes
  auto backend = backend_;
  const auto started = steady_clock::now();
  const auto deadline = started + cfg_.wake_timeout;
  const auto asleep_for = std::chrono::duration_cast<milliseconds>(
      std::chrono::system_clock::now() - asleep_since_);
  spdlog::info("spark {}: waking for {} (asleep for {}, {} backend)", name(), cause,
               config::format_duration(asleep_for), backend->kind());

  try {
    const WakeRequest request{cfg_.wake_timeout, cause};
    const auto start = [backend, request] { backend->wake(request); };
    co_await run_blocking(env_.control_pool, start);
  } catch (const std::exception& e) {
    finish_wake(attempt, std::string(e.what()), started);
    co_return;
  }

  asio::steady_timer timer(env_.executor);
  std::string last_error = "no probe was made";
  for (;;) {
    const auto obs = backend->observe();
    if (obs.state == Observation::State::failed) {
      finish_wake(attempt, obs.reason, started);
      co_return;
    }
    if (obs.state == Observation::State::asleep) {
      finish_wake(attempt, "the spark was stopped while waking", started);
      co_return;
    }
    if (obs.upstream) {
      const auto remaining =
          std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
      if (auto s = co_await try_connect(*obs.upstream,
                                        std::max(milliseconds(1), std::min(remaining, kProbeConnectTimeout)),
                                        last_error)) {
        attempt->probe_socket = std::move(*s);
        finish_wake(attempt, std::nullopt, started);
        co_return;
      }
    }
    const auto now = steady_clock::now();
    if (now >= deadline) break;
    timer.expires_after(std::min<steady_clock::duration>(probe_interval(now - started),
                                                         deadline - now));
    co_await timer.async_wait(use_awaitable);
  }

  finish_wake(attempt,
              "not ready within wake_timeout " + config::format_duration(cfg_.wake_timeout) +
                  " (last probe: " + last_error + ")",
              started);
  // Whatever was started must not linger half-alive, so stop it. Until the stop is done the spark
  // is `stopping`: a connection arriving meanwhile waits for it and then wakes afresh, instead of
  // starting a wake that this stop would undo.
  set_state(SparkState::stopping);
  auto stopped = std::make_shared<AsyncEvent>(env_.executor);
  sleep_finished_ = stopped;
  try {
    const SleepRequest request{"wake_failed", "the wake failed", {}};
    const auto stop = [backend, request] { backend->sleep(request); };
    co_await run_blocking(env_.control_pool, stop);
  } catch (const std::exception& e) {
    spdlog::error("spark {}: stopping after the failed wake also failed: {}", name(), e.what());
  }
  if (state_ == SparkState::stopping) set_state(SparkState::failed);
  sleep_finished_.reset();
  stopped->set();
}

void Spark::finish_wake(const std::shared_ptr<WakeAttempt>& attempt,
                        std::optional<std::string> error, steady_clock::time_point started) {
  attempt->error = std::move(error);
  if (wake_ == attempt) wake_.reset();
  const auto took = ms_text(steady_clock::now() - started);
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

awaitable<void> Spark::sleep(SleepReason why) {
  if (state_ != SparkState::running && state_ != SparkState::failed) co_return;
  SleepRequest request{std::string(to_string(why)), std::string(to_string(why)),
                       env_.activity.get(name()).last_activity};
  if (why == SleepReason::idle) {
    if (request.last_activity == activity::TimePoint{}) {
      request.description = "idle, no activity recorded";
    } else {
      const auto idle_for = std::chrono::duration_cast<milliseconds>(
          std::chrono::system_clock::now() - request.last_activity);
      request.description = "idle for " + config::format_duration(idle_for);
    }
  } else if (why == SleepReason::api) {
    request.description = "an operator (admin API)";
  }
  const std::string& reason = request.description;
  auto self = shared_from_this();
  auto backend = backend_;
  set_state(SparkState::stopping);
  auto finished = std::make_shared<AsyncEvent>(env_.executor);
  sleep_finished_ = finished;
  const auto started = steady_clock::now();
  spdlog::info("spark {}: going to sleep ({})", name(), reason);
  bool stopped = true;
  try {
    const auto stop = [backend, request] { backend->sleep(request); };
    co_await run_blocking(env_.control_pool, stop);
  } catch (const std::exception& e) {
    stopped = false;
    spdlog::error("spark {}: sleep failed ({}), it stays awake: {}", name(), reason, e.what());
  }
  if (stopped) {
    spdlog::info("spark {}: asleep after {} ({})", name(), ms_text(steady_clock::now() - started),
                 reason);
    asleep_since_ = std::chrono::system_clock::now();
    metrics_.count_sleep(why);
    set_state(SparkState::sleeping);
    apply_pending_backend();
  } else {
    set_state(SparkState::running);
  }
  sleep_finished_.reset();
  finished->set();
}

void Spark::reap_if_idle(activity::TimePoint now) {
  if (state_ == SparkState::sleeping && backend_->may_run_without_us()) {
    // Started by someone else (kubectl, another gateway): adopt it, so it is shown running
    // and its idle clock runs.
    asio::co_spawn(env_.executor, adopt_if_running(), asio::detached);
    return;
  }
  if (state_ == SparkState::running) {
    const auto obs = backend_->observe();
    if (obs.state != Observation::State::started) {
      spdlog::warn("spark {}: stopped on its own ({}); marked asleep", name(),
                   obs.reason.empty() ? "the backend reports it asleep" : obs.reason);
      set_state(SparkState::sleeping);
      asleep_since_ = std::chrono::system_clock::now();
      apply_pending_backend();
      return;
    }
  }
  if (state_ != SparkState::running || open_connections_ > 0) return;
  if (!env_.activity.is_idle(name(), cfg_.idle_timeout, now)) return;
  asio::co_spawn(env_.executor, sleep(SleepReason::idle), asio::detached);
}

awaitable<void> Spark::adopt_if_running() {
  if (!backend_->may_run_without_us() || state_ != SparkState::sleeping) co_return;
  const auto obs = backend_->observe();
  const config::Address target = obs.upstream ? *obs.upstream : cfg_.target();
  std::string error;
  if (auto s = co_await try_connect(target, kProbeConnectTimeout, error)) {
    if (state_ != SparkState::sleeping) co_return;  // a wake or a sleep began meanwhile
    backend_->adopt_running();
    set_state(SparkState::running);
    env_.activity.ensure(name(), std::chrono::system_clock::now());
    spdlog::info("spark {}: already running at {}; adopted", name(), target.to_string());
  }
}

void Spark::update(config::SparkConfig cfg, std::unique_ptr<Backend> backend) {
  const bool backend_changed = cfg.backend != cfg_.backend;
  cfg_ = std::move(cfg);
  if (!backend_changed) return;
  pending_backend_ = std::move(backend);
  if (state_ == SparkState::sleeping || state_ == SparkState::failed) apply_pending_backend();
  else spdlog::info("spark {}: backend changed; the new one takes over after its next sleep", name());
}

void Spark::apply_pending_backend() {
  if (pending_backend_) backend_ = std::move(pending_backend_);
}

void Spark::retire() {
  retired_ = true;
  if (open_connections_ == 0)
    asio::co_spawn(env_.executor, sleep(SleepReason::removed), asio::detached);
}

}  // namespace spark::gateway
