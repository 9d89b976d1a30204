#pragma once
// The sparks the gateway serves, by name, and the reload diff: a new config (SIGHUP) or a new
// set of discovered Deployments becomes the running set: sparks updated in place, created, or
// retired, each behind its listener. Main loop only.
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "activity/activity_tracker.hpp"
#include "config/config.hpp"
#include "gateway/asio.hpp"
#include "gateway/front_door.hpp"
#include "gateway/observability/metrics.hpp"
#include "gateway/running_cap.hpp"
#include "gateway/spark.hpp"
#include "k8s/cluster.hpp"

namespace spark::gateway {

class SparkSet {
 public:
  // A discovered spark that cannot listen: (spark, why). Said once per spark until it can.
  using UnbindableReport = std::function<void(const config::SparkConfig&, const std::string&)>;

  SparkSet(asio::io_context& main, asio::thread_pool& control_pool, activity::ActivityTracker& activity,
           Metrics& metrics, FrontDoor& front_door)
      : io_(main),
        control_pool_(control_pool),
        activity_(activity),
        metrics_(metrics),
        front_door_(front_door),
        cap_(main.get_executor(), sparks_, activity, metrics) {}

  // Kubernetes: the cluster the sparks' backends use, and where a discovered spark that
  // cannot listen is reported (its Deployment's Events).
  void use_cluster(k8s::Cluster* cluster, UnbindableReport report) {
    cluster_ = cluster;
    report_unbindable_ = std::move(report);
  }
  // The Deployments discovery found, served from the next apply() on.
  void set_discovered(std::vector<config::SparkConfig> found) { discovered_ = std::move(found); }

  // Makes the running sparks and listeners match `next` plus the discovered sparks. Listeners
  // are opened before anything changes, so a config that cannot bind leaves everything as it
  // was (throws); a discovered spark that cannot bind is left out. The summary line is logged
  // for every config load; for a pass of discovery (`from_discovery`: Deployments change on
  // every annotation write) only when sparks were added, changed or removed.
  void apply(const config::Config& next, bool from_discovery = false);

  std::shared_ptr<Spark> find(const std::string& name) const;
  const std::map<std::string, std::shared_ptr<Spark>>& all() const { return sparks_; }
  std::size_t size() const { return sparks_.size(); }
  int waiting_for_wakes() const;  // every spark's connections waiting for a wake
  // limits.max_running's line: where a spark's wake stands in it.
  const RunningCap& running_cap() const { return cap_; }
  // The discovered sparks served (not those a configured spark of the same name shadows, nor
  // those that could not listen), as served: their tailnet Services follow (SSH and dev ports).
  std::vector<config::SparkConfig> discovered_served() const;
  std::set<std::string> discovered_names() const;

  // The reaper's tick: sparks idle past their timeout sleep. Without the lead, only the
  // sparks this replica runs itself (process, exec) are its own to reap.
  void reap(activity::TimePoint now, bool leading);
  // Every replica, often: notice sparks started or stopped elsewhere, and keep this replica's
  // sessions' activity where the reaping replica reads it (each spark at its own period); then
  // let wakes in line go if that made room (limits.max_running).
  void follow(activity::TimePoint now);
  // At shutdown: the sparks whose children never outlive the gateway, put to sleep.
  awaitable<void> stop_children();
  void clear() { sparks_.clear(); }

 private:
  struct Changes {
    std::vector<std::string> added, changed, removed;
    bool any() const { return !added.empty() || !changed.empty() || !removed.empty(); }
  };
  // The sparks `next` serves, with their listeners claimed in `listeners`.
  std::vector<config::SparkConfig> plan(const config::Config& next, FrontDoor::Plan& listeners);
  Changes update(const std::vector<config::SparkConfig>& served, const config::Config& next);
  void log_changes(const Changes& changes, const config::Config& next, bool from_discovery) const;

  asio::io_context& io_;
  asio::thread_pool& control_pool_;
  activity::ActivityTracker& activity_;
  Metrics& metrics_;
  FrontDoor& front_door_;
  k8s::Cluster* cluster_ = nullptr;
  UnbindableReport report_unbindable_;
  std::map<std::string, std::shared_ptr<Spark>> sparks_;  // by name
  RunningCap cap_;                                        // counts sparks_: declared after it
  std::vector<config::SparkConfig> discovered_;
  std::set<std::string> unbindable_;  // discovered sparks already reported as unable to listen
};

}  // namespace spark::gateway
