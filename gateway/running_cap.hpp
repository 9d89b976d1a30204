#pragma once
// limits.max_running: at most so many sparks awake or waking at once, so that everyone waking
// their spark at 9 am cannot overrun a small cluster. A wake beyond the cap waits in one FIFO
// line (within its spark's wake_timeout) until a running spark goes to sleep; with
// limits.evict_idle_after, the running spark idle longest (no session, no keep-awake, idle at
// least that long) is put to sleep to make room instead. Main loop only.
//
// What counts as running is each spark's own state (Spark::holds_place): this gateway's wakes,
// and, for Kubernetes sparks, what the Deployments show in the watch cache, so a spark another
// replica woke counts here too once the watch shows it.
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "activity/activity_tracker.hpp"
#include "config/duration.hpp"
#include "gateway/asio.hpp"
#include "gateway/observability/metrics.hpp"

namespace spark::gateway {

class Spark;

class RunningCap {
 public:
  using Sparks = std::map<std::string, std::shared_ptr<Spark>>;

  RunningCap(asio::any_io_executor main, const Sparks& sparks, activity::ActivityTracker& activity,
             Metrics& metrics);

  // From the config (and every reload). No cap: every wake starts at once, the line empties.
  void configure(std::optional<int> max_running, std::optional<config::Duration> evict_idle_after);

  // The answer to a wake asking for a place: admitted (`note` says how, for the wake's cause:
  // "after calm-otter was put to sleep to make room"), or not within the deadline (`note` says
  // why, for the people waiting).
  struct Admission {
    bool admitted = false;
    std::string note;
  };
  // Returns at once while there is room and nobody is in line; else waits in line until there
  // is room, `deadline`, or `wanted` turns false (nobody waits for the wake any more: it gives
  // its place up rather than wake a spark for no one). Only the front of the line is admitted,
  // once its place is also claimed where other gateways count (Spark::claim_place).
  awaitable<Admission> admit(std::shared_ptr<Spark> spark, std::chrono::steady_clock::time_point deadline,
                             std::function<bool()> wanted);

  // The spark's place in line (1: next), nullopt if it is not in line.
  std::optional<int> position(const std::string& spark) const;
  // For a person waiting: "2 sparks are running (the limit); you are 2nd in line".
  std::string describe_place(const std::string& spark) const;

  // Something changed (a spark slept, the backends show another replica's wakes): the front of
  // the line looks again, room is made if it may be, and the gauges are refreshed. Cheap while
  // nobody is in line.
  void changed();

  int running() const;  // sparks holding a place (not those in line)
  // limits.evict_idle_after while a cap is set: sparks other replicas may evict re-record their
  // sessions' activity well within it (Spark::share_period).
  std::optional<config::Duration> evict_idle_after() const { return evict_idle_after_; }

 private:
  struct Waiter {
    explicit Waiter(asio::any_io_executor ex, std::string name)
        : spark(std::move(name)), wakeup(ex), since(std::chrono::steady_clock::now()) {}
    std::string spark;
    asio::steady_timer wakeup;  // cancelled when it should look again
    std::chrono::steady_clock::time_point since;
    std::string note;  // how room was made for it, for its wake's cause
  };

  // The front of the line (`waiter`) may go: there is room here, and it claimed its place.
  awaitable<bool> take_place(const std::shared_ptr<Waiter>& waiter, Spark& spark);
  void make_room();
  awaitable<void> evict(std::shared_ptr<Spark> idle, std::string for_whom);
  void update_gauges();

  asio::any_io_executor main_;
  const Sparks& sparks_;
  activity::ActivityTracker& activity_;
  Metrics& metrics_;
  std::optional<int> max_running_;
  std::optional<config::Duration> evict_idle_after_;
  std::deque<std::shared_ptr<Waiter>> line_;
  bool evicting_ = false;  // one eviction at a time: each makes room for the one at the front
  bool claiming_ = false;  // the front is claiming its place (its backend is asked)
  // After a claim other gateways' places refused: not asked again before this (their wakes may
  // not show in this replica's watch yet, and each claim is an API write).
  std::chrono::steady_clock::time_point next_claim_{};
  std::string no_room_said_;  // the front of the line already told nothing can be evicted
  // Sparks whose eviction was declined (a session through another replica, found at the last
  // moment), and when: not asked again for a while, so a refusal is not retried in a loop.
  std::map<std::string, std::chrono::steady_clock::time_point> declined_;
};

}  // namespace spark::gateway
