#include "gateway/control_bridge.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>

#include "config/duration.hpp"
#include "config/plural.hpp"

namespace spark::gateway {
namespace {

// An admin call that cannot get a turn on the main loop this fast means the gateway is wedged
// or shutting down; say so instead of hanging the HTTP client.
constexpr std::chrono::seconds kMainLoopTimeout{5};
// A sleep is bounded by the backend's own stop timeouts; this only guards the HTTP request.
constexpr std::chrono::minutes kSleepTimeout{6};

ControlOutcome not_found() { return {ControlOutcome::Kind::not_found, "no such spark", std::nullopt}; }

}  // namespace

// A jump session as the main loop sees it, in the session core beside TCP connections: admitted,
// waiting for its upstream, then relayed by a jump host thread, which owns the socket and closes
// it when the session ends. This holds a duplicate of the descriptor, so shutting the socket
// down from here (drain timeout, forced sleep) can never hit a descriptor number the session
// has closed and the process reused. The session sees its upstream end and reports
// upstream_ended() as usual.
class ControlBridge::JumpSession final : public LiveSession {
 public:
  using LiveSession::LiveSession;

  // Duplicates `fd` now: call before the session may own (and close) it. If dup fails (out of
  // descriptors), only the session itself can end it.
  void attach(int fd) { fd_.reset(::dup(fd)); }
  // Ended by the gateway while still waiting for its upstream: it must not be delivered.
  bool closed_by_gateway() const { return closed_; }
  void force_close() override {
    closed_ = true;
    if (fd_) ::shutdown(fd_.get(), SHUT_RDWR);
  }

 private:
  UniqueFd fd_;
  bool closed_ = false;
};

ControlBridge::ControlBridge(Parts parts) : p_(std::move(parts)) {}
ControlBridge::~ControlBridge() = default;

template <typename F>
auto ControlBridge::on_main_loop(F f) -> decltype(f()) {
  using Result = decltype(f());
  auto promise = std::make_shared<std::promise<Result>>();
  auto future = promise->get_future();
  asio::post(p_.main, [promise, f = std::move(f)]() mutable {
    try {
      promise->set_value(f());
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  });
  if (future.wait_for(kMainLoopTimeout) != std::future_status::ready)
    throw std::runtime_error("the gateway's main loop did not answer within 5s");
  return future.get();
}

std::vector<SparkStatus> ControlBridge::sparks() {
  return on_main_loop([this] {
    std::vector<SparkStatus> out;
    const auto now = std::chrono::system_clock::now();
    for (const auto& [name, spark] : p_.sparks.all()) out.push_back(spark->status(now));
    return out;
  });
}

std::optional<SparkStatus> ControlBridge::spark(const std::string& name) {
  return on_main_loop([this, name]() -> std::optional<SparkStatus> {
    auto s = p_.sparks.find(name);
    if (!s) return std::nullopt;
    return s->status(std::chrono::system_clock::now());
  });
}

std::optional<SparkHistoryView> ControlBridge::history(const std::string& name) {
  return on_main_loop([this, name]() -> std::optional<SparkHistoryView> {
    if (!p_.sparks.find(name)) return std::nullopt;
    return SparkHistoryView{name, std::chrono::system_clock::now(), p_.activity.history(name)};
  });
}

std::vector<SparkHistoryView> ControlBridge::histories() {
  // Copied on the main loop and shaped on the admin thread: the main loop only copies.
  return on_main_loop([this] {
    std::vector<SparkHistoryView> out;
    const auto now = std::chrono::system_clock::now();
    for (const auto& [name, spark] : p_.sparks.all()) out.push_back({name, now, p_.activity.history(name)});
    return out;
  });
}

ControlOutcome ControlBridge::wake(const std::string& name, bool wait) {
  using Done = std::optional<std::string>;  // the wake's error, if any
  auto done = std::make_shared<std::promise<Done>>();
  auto finished = done->get_future();
  const auto started = on_main_loop([this, name, done]() -> std::optional<config::Duration> {
    auto s = p_.sparks.find(name);
    if (!s) return std::nullopt;
    spdlog::info("spark {}: wake requested through the admin API", name);
    // An operator's wake keeps its place in line (limits.max_running) with nobody connected.
    asio::co_spawn(p_.main, s->ensure_awake("an operator (admin API)", true),
                   [done](std::exception_ptr e, Done error) {
                     if (e) error = "internal error while waking";
                     done->set_value(std::move(error));
                   });
    // In line for up to wake_timeout, then the wake's own wake_timeout.
    return s->config().wake_timeout * 2;
  });
  if (!started) return not_found();
  if (!wait) return {ControlOutcome::Kind::accepted, {}, spark(name)};
  if (finished.wait_for(*started + kMainLoopTimeout) != std::future_status::ready)
    return {ControlOutcome::Kind::failed, "the wake did not finish in time", spark(name)};
  if (auto error = finished.get()) return {ControlOutcome::Kind::failed, "wake failed: " + *error, spark(name)};
  return {ControlOutcome::Kind::ok, {}, spark(name)};
}

ControlOutcome ControlBridge::sleep(const std::string& name, bool force) {
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  const auto refusal = on_main_loop([this, name, force, done]() -> std::optional<ControlOutcome> {
    auto s = p_.sparks.find(name);
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
    if (force) p_.sessions.close_spark(*s);
    asio::co_spawn(p_.main, s->sleep(SleepReason::api, force), [done](std::exception_ptr) { done->set_value(); });
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
                                : "it is " + after->state +
                                      " (the sleep was declined or failed; see the gateway log)";
    spdlog::warn("spark {}: the sleep requested through the admin API did not leave it asleep: {}", name, why);
    return {ControlOutcome::Kind::failed, "the spark did not go to sleep: " + why, after};
  }
  return {ControlOutcome::Kind::ok, {}, after};
}

ControlOutcome ControlBridge::keep_awake(const std::string& name, std::optional<config::Duration> hold) {
  std::optional<activity::ActivitySnapshot> to_share;  // a Kubernetes spark's: the leader reads it there
  auto outcome = on_main_loop([this, name, hold, &to_share]() -> ControlOutcome {
    auto s = p_.sparks.find(name);
    if (!s) return not_found();
    const auto now = std::chrono::system_clock::now();
    std::optional<activity::TimePoint> until;
    if (hold) until = activity::saturating_add(now, *hold);  // durations are bounded; time is too
    p_.activity.set_keep_awake(name, until, now);
    spdlog::info("spark {}: keep-awake {}", name,
                 hold ? "for " + config::format_duration(*hold) : std::string("cleared"));
    if (s->shared_with_other_gateways()) to_share = p_.activity.snapshot();
    return {ControlOutcome::Kind::ok, {}, s->status(now)};
  });
  // Written now, not at the next flush: the replica that reaps may be another one, and it
  // honours only the hold it reads on the Deployment.
  if (to_share && !p_.flusher.share_hold_now(*to_share, name))
    return {ControlOutcome::Kind::failed,
            "the hold is kept here but could not be recorded on the Deployment yet (retried at the next "
            "activity flush); another gateway replica may put the spark to sleep meanwhile",
            outcome.spark};
  return outcome;
}

std::optional<JumpGateway::SparkInfo> ControlBridge::find_spark(const std::string& name) {
  try {
    return on_main_loop([this, name] { return spark_info(name); });
  } catch (const std::exception&) {
    return std::nullopt;  // the main loop is shutting down
  }
}

std::optional<JumpGateway::SparkInfo> ControlBridge::spark_info(const std::string& name) const {
  const auto spark = p_.sparks.find(name);
  if (!spark) return std::nullopt;
  SparkInfo info;
  info.target_port = spark->config().target().port;
  info.running = spark->state() == SparkState::running;
  info.keepalive = spark->config().keepalive;
  if (spark->state() == SparkState::sleeping)
    info.asleep_for = config::format_duration(std::chrono::system_clock::now() - spark->asleep_since());
  return info;
}

void ControlBridge::find_spark_async(const std::string& name, std::function<void(std::optional<SparkInfo>)> done) {
  asio::post(p_.main, [this, name, done = std::move(done)] { done(spark_info(name)); });
}

// Admitted and opened as the front door does a TCP connection, in one turn of the main loop
// (no other session can slip in between); then woken and connected through the same core,
// and the upstream handed over as a file descriptor.
void ControlBridge::connect_upstream(const std::string& name, const std::string& peer,
                                     std::shared_ptr<UpstreamHandoff> handoff) {
  asio::post(p_.main, [this, name, peer, handoff = std::move(handoff)]() mutable {
    const auto spark = p_.sparks.find(name);
    if (!spark) {
      handoff->deliver(-1, "no spark named " + name);
      return;
    }
    if (auto why = p_.sessions.refuse(*spark, peer)) {
      handoff->refuse(*why);
      return;
    }
    auto session = std::make_unique<JumpSession>(spark);
    p_.sessions.open(*session);
    spark->connection_from(peer);
    jump_sessions_[handoff.get()] = std::move(session);
    handoff->admit();
    asio::co_spawn(p_.main, tell_place_in_line(spark, handoff), asio::detached);
    asio::co_spawn(p_.main, jump_connect(spark, peer, std::move(handoff)), asio::detached);
  });
}

awaitable<void> ControlBridge::jump_connect(std::shared_ptr<Spark> spark, std::string peer,
                                            std::shared_ptr<UpstreamHandoff> handoff) {
  std::string cause = "a connection from " + peer;
  // A login that gave up while its spark's wake waited in line leaves the line.
  std::function<bool()> login_gone = [handoff] { return handoff->answered(); };
  Reached reached = co_await SessionCore::reach(*spark, std::move(cause), {}, std::nullopt, std::move(login_gone));
  // Still there: only upstream_ended() removes it, after a delivery.
  const auto it = jump_sessions_.find(handoff.get());
  JumpSession& session = *it->second;
  if (reached.socket && session.closed_by_gateway()) {
    reached.socket.reset();
    reached.error = "the gateway ended the connection (a forced sleep, or shutting down)";
  }
  if (reached.socket) {
    SessionCore::spliced(session);
    UniqueFd fd(reached.socket->release());
    session.attach(fd.get());
    if (handoff->deliver(fd.get(), {})) {
      (void)fd.release();  // the session owns it now; upstream_ended() ends it
      co_return;
    }
    // The login went away meanwhile: `fd` closes here.
  } else {
    handoff->deliver(-1, reached.error);
  }
  p_.sessions.close(session, std::nullopt);
  jump_sessions_.erase(it);
}

awaitable<void> ControlBridge::tell_place_in_line(std::shared_ptr<Spark> spark,
                                                  std::shared_ptr<UpstreamHandoff> handoff) {
  asio::steady_timer tick(p_.main);
  while (!handoff->answered()) {
    handoff->set_place(p_.sparks.running_cap().describe_place(spark->name()));
    tick.expires_after(std::chrono::milliseconds(500));
    co_await tick.async_wait(use_awaitable);
  }
}

void ControlBridge::upstream_ended(std::shared_ptr<UpstreamHandoff> handoff, std::uint64_t client_to_spark,
                                   std::uint64_t spark_to_client, ConnectionEnd end) {
  asio::post(p_.main, [this, handoff = std::move(handoff), client_to_spark, spark_to_client, end] {
    const auto it = jump_sessions_.find(handoff.get());
    if (it == jump_sessions_.end()) return;
    auto& metrics = it->second->spark().metrics();
    metrics.bytes_client_to_spark.Increment(static_cast<double>(client_to_spark));
    metrics.bytes_spark_to_client.Increment(static_cast<double>(spark_to_client));
    p_.sessions.close(*it->second, end);
    jump_sessions_.erase(it);
  });
}

}  // namespace spark::gateway
