// Server's GatewayControl: how admin threads reach sparks. Every call hops onto the data-plane
// thread (sparks are never touched from anywhere else) and the admin thread waits, bounded.
#include <spdlog/spdlog.h>

#include <future>

#include "config/duration.hpp"
#include "config/plural.hpp"
#include "gateway/server.hpp"

namespace spark::gateway {
namespace {

// An admin call that cannot get a turn on the main loop this fast means the gateway is wedged
// or shutting down; say so instead of hanging the HTTP client.
constexpr std::chrono::seconds kDataPlaneTimeout{5};
// A sleep is bounded by the backend's own stop timeouts; this only guards the HTTP request.
constexpr std::chrono::minutes kSleepTimeout{6};

ControlOutcome not_found() { return {ControlOutcome::Kind::not_found, "no such spark", std::nullopt}; }

}  // namespace

template <typename F>
auto Server::on_main_loop(F f) -> decltype(f()) {
  using Result = decltype(f());
  auto promise = std::make_shared<std::promise<Result>>();
  auto future = promise->get_future();
  asio::post(io_, [promise, f = std::move(f)]() mutable {
    try {
      promise->set_value(f());
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  if (future.wait_for(kDataPlaneTimeout) != std::future_status::ready)
    throw std::runtime_error("the gateway's main loop did not answer within 5s");
  return future.get();
}

std::shared_ptr<Spark> Server::find(const std::string& name) {
  auto it = sparks_.find(name);
  return it == sparks_.end() ? nullptr : it->second;
}

std::vector<SparkStatus> Server::sparks() {
  return on_main_loop([this] {
    std::vector<SparkStatus> out;
    const auto now = std::chrono::system_clock::now();
    for (const auto& [name, spark] : sparks_) out.push_back(spark->status(now));
    return out;
  });
}

std::optional<SparkStatus> Server::spark(const std::string& name) {
  return on_main_loop([this, name]() -> std::optional<SparkStatus> {
    auto s = find(name);
    if (!s) return std::nullopt;
    return s->status(std::chrono::system_clock::now());
  });
}

ControlOutcome Server::wake(const std::string& name, bool wait) {
  using Done = std::optional<std::string>;  // the wake's error, if any
  auto done = std::make_shared<std::promise<Done>>();
  auto finished = done->get_future();
  const auto started = on_main_loop([this, name, done]() -> std::optional<config::Duration> {
    auto s = find(name);
    if (!s) return std::nullopt;
    spdlog::info("spark {}: wake requested through the admin API", name);
    asio::co_spawn(io_, s->ensure_awake("an operator (admin API)"), [done](std::exception_ptr e, Done error) {
      if (e) error = "internal error while waking";
      done->set_value(std::move(error));
    });
    return s->config().wake_timeout;
  });
  if (!started) return not_found();
  if (!wait) return {ControlOutcome::Kind::accepted, {}, spark(name)};
  if (finished.wait_for(*started + kDataPlaneTimeout) != std::future_status::ready)
    return {ControlOutcome::Kind::failed, "the wake did not finish in time", spark(name)};
  if (auto error = finished.get())
    return {ControlOutcome::Kind::failed, "wake failed: " + *error, spark(name)};
  return {ControlOutcome::Kind::ok, {}, spark(name)};
}

ControlOutcome Server::sleep(const std::string& name, bool force) {
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  const auto refusal = on_main_loop([this, name, force, done]() -> std::optional<ControlOutcome> {
    auto s = find(name);
    if (!s) return not_found();
    if (s->open_connections() > 0 && !force)
      return ControlOutcome{ControlOutcome::Kind::conflict,
                            "spark has " + config::counted(s->open_connections(), "open connection") +
                                "; use force to sleep it anyway",
                            s->status(std::chrono::system_clock::now())};
    if (s->state() == SparkState::waking) {
      // Sleeping it now would undo a wake someone is waiting for; the wake finishes first.
      spdlog::info("spark {}: sleep requested through the admin API while it is waking; not put to sleep", name);
      return ControlOutcome{ControlOutcome::Kind::conflict,
                            "the spark is waking (a wake is in progress); try again once it runs",
                            s->status(std::chrono::system_clock::now())};
    }
    spdlog::info("spark {}: sleep requested through the admin API{}", name, force ? " (forced)" : "");
    // Its sessions end now: a process backend's sshd may leave session processes behind it, and
    // "forced" must mean the same for every backend.
    if (force) connections_.close_spark(*s);
    asio::co_spawn(io_, s->sleep(SleepReason::api, force), [done](std::exception_ptr) { done->set_value(); });
    return std::nullopt;
  });
  if (refusal) return *refusal;
  if (finished.wait_for(kSleepTimeout) != std::future_status::ready)
    return {ControlOutcome::Kind::failed, "the sleep did not finish in time", spark(name)};
  auto after = spark(name);
  if (after && after->state != "sleeping") {
    // Declined or failed (the spark's own log line says why), or a connection woke it again
    // the moment it slept.
    const std::string why = after->state == "waking"
                                ? "it was woken again right away (a connection or wake came in)"
                                : "it is " + after->state + " (the sleep was declined or failed; see the gateway log)";
    spdlog::warn("spark {}: the sleep requested through the admin API did not leave it asleep: {}", name, why);
    return {ControlOutcome::Kind::failed, "the spark did not go to sleep: " + why, after};
  }
  return {ControlOutcome::Kind::ok, {}, after};
}

ControlOutcome Server::keep_awake(const std::string& name, std::optional<config::Duration> hold) {
  std::optional<activity::ActivitySnapshot> to_share;  // a Kubernetes spark's: the leader reads it there
  auto outcome = on_main_loop([this, name, hold, &to_share]() -> ControlOutcome {
    auto s = find(name);
    if (!s) return not_found();
    const auto now = std::chrono::system_clock::now();
    std::optional<activity::TimePoint> until;
    if (hold) until = activity::saturating_add(now, *hold);  // durations are bounded; time is too
    activity_.set_keep_awake(name, until, now);
    spdlog::info("spark {}: keep-awake {}", name,
                 hold ? "for " + config::format_duration(*hold) : std::string("cleared"));
    if (s->shared_with_other_gateways()) to_share = activity_.snapshot();
    return {ControlOutcome::Kind::ok, {}, s->status(now)};
  });
  // Written now, not at the next flush: the replica that reaps may be another one, and it
  // honours only the hold it reads on the Deployment.
  if (to_share && !flusher_.share_hold_now(*to_share, name))
    return {ControlOutcome::Kind::failed,
            "the hold is kept here but could not be recorded on the Deployment yet (retried at the next "
            "activity flush); another gateway replica may put the spark to sleep meanwhile",
            outcome.spark};
  return outcome;
}

// Listeners up and, with Kubernetes, both caches listed (before that, sparks may be missing).
// With Kubernetes: once the caches are listed and the listeners of the sparks found there are
// open (a connection routed here before that would be refused).
bool Server::ready() { return ready_ && (!kubernetes_ || (kubernetes_->synced() && discovered_once_)); }

bool Server::leads_reaper() { return leads(); }

std::optional<JumpGateway::SparkInfo> Server::find_spark(const std::string& name) {
  try {
    return on_main_loop([this, name] { return spark_info(name); });
  } catch (const std::exception&) {
    return std::nullopt;  // the main loop is shutting down
  }
}

}  // namespace spark::gateway
