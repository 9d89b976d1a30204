#pragma once
// Keeps the activity where it outlives this process and reaches the other gateway replicas: the
// state file (state_dir) at every activity flush and at shutdown, and, for the sparks shared
// with other replicas, their Deployments' annotations. Runs on the main loop; the blocking
// writes go to the control pool.
#include <chrono>
#include <filesystem>
#include <functional>
#include <set>
#include <string>

#include "activity/activity_store.hpp"
#include "activity/activity_tracker.hpp"
#include "gateway/asio.hpp"
#include "gateway/observability/metrics.hpp"
#include "k8s/activity_annotations.hpp"

namespace spark::gateway {

class ActivityFlusher {
 public:
  ActivityFlusher(asio::thread_pool& control_pool, activity::ActivityTracker& activity, Metrics& metrics,
                  const std::filesystem::path& state_dir);

  // At start-up: what the state file holds goes into the tracker (an unreadable file is logged
  // and left for the next flush to replace).
  void restore();
  // From now on the sparks `shared()` names are also written to their Deployments.
  void share_through(k8s::ActivityAnnotations& annotations, std::function<std::set<std::string>()> shared);

  // Flushes every `interval()` until stop(). Sparks shared with other replicas refresh their
  // open sessions' activity themselves (Spark::share_activity_if_due), at their own pace.
  awaitable<void> run(std::function<std::chrono::milliseconds()> interval);
  void stop() { stopping_ = true; }
  // Once more, blocking, at shutdown.
  void flush_now();
  // A keep-awake hold set here, written to the spark's Deployment now (blocking; any thread but
  // the main loop): the replica that reaps honours only what it reads there. False if it failed.
  bool share_hold_now(const activity::ActivitySnapshot& snapshot, const std::string& spark);

 private:
  asio::thread_pool& control_pool_;
  activity::ActivityTracker& activity_;
  Metrics& metrics_;
  activity::ActivityStore store_;
  k8s::ActivityAnnotations* annotations_ = nullptr;
  std::function<std::set<std::string>()> shared_;
  bool annotations_behind_ = false;  // some annotations could not be written: retry even if unchanged
  bool stopping_ = false;
};

}  // namespace spark::gateway
