#include "gateway/running_cap.hpp"

#include <spdlog/spdlog.h>

#include "config/plural.hpp"
#include "gateway/spark.hpp"

namespace spark::gateway {
namespace {

using std::chrono::steady_clock;

// How often a wake in line looks whether anyone still waits for it.
constexpr std::chrono::seconds kWantedCheck{1};
// How long a spark whose eviction was declined is left alone.
constexpr std::chrono::seconds kDeclinedPause{30};
// How long after a refused claim the front of the line claims again.
constexpr std::chrono::seconds kClaimPause{1};

std::string ordinal(int n) {
  const int tens = n % 100;
  const char* suffix = (tens >= 11 && tens <= 13) ? "th"
                       : n % 10 == 1              ? "st"
                       : n % 10 == 2              ? "nd"
                       : n % 10 == 3              ? "rd"
                                                  : "th";
  return std::to_string(n) + suffix;
}

// "2 sparks are running", "1 spark is running".
std::string running_words(int n) { return config::counted(n, "spark") + (n == 1 ? " is" : " are") + " running"; }

}  // namespace

RunningCap::RunningCap(asio::any_io_executor main, const Sparks& sparks, activity::ActivityTracker& activity,
                       Metrics& metrics)
    : main_(std::move(main)), sparks_(sparks), activity_(activity), metrics_(metrics) {}

void RunningCap::configure(std::optional<int> max_running, std::optional<config::Duration> evict_idle_after) {
  max_running_ = max_running;
  evict_idle_after_ = max_running ? evict_idle_after : std::nullopt;
  if (!max_running_)
    for (const auto& waiter : line_) waiter->wakeup.cancel();  // no cap any more: everyone in line goes
  changed();
}

int RunningCap::running() const {
  int n = 0;
  for (const auto& [name, spark] : sparks_)
    if (spark->holds_place()) ++n;  // (a spark in line sleeps: it holds none, unless failed and still up)
  return n;
}

std::optional<int> RunningCap::position(const std::string& spark) const {
  for (std::size_t i = 0; i < line_.size(); ++i)
    if (line_[i]->spark == spark) return static_cast<int>(i) + 1;
  return std::nullopt;
}

std::string RunningCap::describe_place(const std::string& spark) const {
  const auto place = position(spark);
  if (!place || !max_running_) return {};
  return running_words(running()) + " (the limit is " + std::to_string(*max_running_) + "); " + spark + " is " +
         ordinal(*place) + " in line";
}

awaitable<RunningCap::Admission> RunningCap::admit(std::shared_ptr<Spark> spark, steady_clock::time_point deadline,
                                                   std::function<bool()> wanted) {
  if (!max_running_) co_return Admission{true, {}};
  const std::string name = spark->name();
  auto waiter = std::make_shared<Waiter>(main_, name);
  line_.push_back(waiter);
  bool admitted = false;
  bool told = false;
  bool waited = false;
  while (max_running_) {
    if (co_await take_place(waiter, *spark)) {
      admitted = true;
      break;
    }
    if (!told) {
      spdlog::info("spark {}: waiting in line to wake: {}", name, describe_place(name));
      told = true;
      changed();  // makes room at once if it may
    }
    // (Not before the first wait: the callers that keep the wake wanted are still joining it.)
    const auto now = steady_clock::now();
    if (now >= deadline || (waited && !wanted())) break;
    waited = true;
    waiter->wakeup.expires_at(std::min(deadline, now + kWantedCheck));
    error_code ec;  // cancelled: something changed, look again
    co_await waiter->wakeup.async_wait(asio::redirect_error(use_awaitable, ec));
  }
  const auto place = position(name).value_or(1);
  const int others_running = running();
  std::erase(line_, waiter);
  if (!max_running_) admitted = true;  // the cap was lifted meanwhile
  if (told) {
    metrics_.observe_wake_queue(std::chrono::duration<double>(steady_clock::now() - waiter->since).count(),
                                admitted);
    if (admitted)
      spdlog::info("spark {}: its turn to wake after {} in line", name,
                   config::format_duration(steady_clock::now() - waiter->since));
  }
  std::string note = admitted ? waiter->note : std::string();
  if (!admitted) {
    note = running_words(others_running) + " (limits.max_running " +
           std::to_string(max_running_.value_or(others_running)) + "); it was " + ordinal(place) + " in line";
  }
  changed();  // the next in line looks (at room left, or at the front now)
  co_return Admission{admitted, note};
}

awaitable<bool> RunningCap::take_place(const std::shared_ptr<Waiter>& waiter, Spark& spark) {
  if (spark.holds_place() || spark.seen_running()) {  // it runs already: it takes no new place
    std::erase(line_, waiter);
    co_return true;
  }
  if (claiming_ || line_.empty() || line_.front() != waiter || running() >= *max_running_ ||
      steady_clock::now() < next_claim_)
    co_return false;
  claiming_ = true;
  const int max_running = *max_running_;
  const bool claimed = co_await spark.claim_place(max_running);
  claiming_ = false;
  if (!claimed) {
    next_claim_ = steady_clock::now() + kClaimPause;
    co_return false;
  }
  std::erase(line_, waiter);  // counted as running from here (the spark is waking)
  co_return true;
}

void RunningCap::changed() {
  if (max_running_ && !line_.empty()) {
    line_.front()->wakeup.cancel();  // it looks again
    if (running() >= *max_running_) make_room();
  }
  update_gauges();
}

void RunningCap::make_room() {
  if (!evict_idle_after_ || evicting_) return;
  const auto now = std::chrono::system_clock::now();
  const config::MaybeNever idle_enough{*evict_idle_after_};
  std::shared_ptr<Spark> idlest;
  activity::TimePoint idlest_since{};
  std::erase_if(declined_, [](const auto& d) { return steady_clock::now() - d.second > kDeclinedPause; });
  for (const auto& [name, spark] : sparks_) {
    if (declined_.contains(name)) continue;
    // Only a spark this replica sees running (or failed, still holding a place) with no
    // connection of its own; a session through another replica shows as recent activity
    // (recorded at least every share period).
    const bool holds = spark->state() == SparkState::running ||
                       (spark->state() == SparkState::failed && spark->holds_place());
    if (!holds || spark->open_connections() > 0 || spark->waiting_connections() > 0) continue;
    if (!activity_.is_idle(name, idle_enough, now)) continue;  // also false under a keep-awake
    const auto since = activity_.get(name).last_activity;
    if (!idlest || since < idlest_since) {
      idlest = spark;
      idlest_since = since;
    }
  }
  const std::string& front = line_.front()->spark;
  if (!idlest) {
    if (no_room_said_ != front)
      spdlog::info(
          "spark {}: no running spark may be put to sleep to make room (each has a session, a keep-awake, "
          "or was active within evict_idle_after {})",
          front, config::format_duration(*evict_idle_after_));
    no_room_said_ = front;
    return;
  }
  evicting_ = true;
  asio::co_spawn(main_, evict(std::move(idlest), front), asio::detached);
}

awaitable<void> RunningCap::evict(std::shared_ptr<Spark> idle, std::string for_whom) {
  spdlog::info("spark {}: putting it to sleep to make room for {} (limits.max_running {})", idle->name(), for_whom,
               max_running_.value_or(0));
  co_await idle->sleep(SleepReason::evicted, false, "to make room for " + for_whom);
  evicting_ = false;
  if (idle->state() == SparkState::sleeping) {
    metrics_.count_eviction();
    // The room is for the wake it was made for, if it still waits (not for whoever comes next).
    for (const auto& waiter : line_)
      if (waiter->spark == for_whom) waiter->note = "after " + idle->name() + " was put to sleep to make room";
  } else {
    declined_[idle->name()] = steady_clock::now();
  }
  changed();
}

void RunningCap::update_gauges() {
  metrics_.set_running_sparks(running(), max_running_, static_cast<int>(line_.size()));
}

}  // namespace spark::gateway
