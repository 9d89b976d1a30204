#pragma once
// Activity kept on the Deployment itself, so it survives gateway restarts and is shared by
// gateway replicas: `last-activity` and `keep-awake-until` annotations (RFC 3339). Written in
// batches (the gateway's activity flush), only forward in time, conditionally on the
// resourceVersion read (a 409 re-reads and tries again).
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "activity/activity_tracker.hpp"
#include "k8s/cluster.hpp"

namespace spark::k8s {

// What a Deployment's annotations say (last_activity is the epoch when there is none). An
// annotation that is not a time is ignored; with `problems`, each such one is described there
// (for a Warning Event: discovery reports them).
activity::PersistedActivity read_activity(const Cluster& cluster, const Deployment& d,
                                          std::vector<std::string>* problems = nullptr);

class ActivityAnnotations {
 public:
  explicit ActivityAnnotations(Cluster& cluster) : cluster_(cluster) {}

  // Writes what changed for `sparks` since the last call. Blocking: the control pool calls it
  // (and the admin thread, for a keep-awake that must reach the other replicas now).
  // Failures are logged and retried at the next call; returns how many writes failed.
  int publish(const activity::ActivitySnapshot& snapshot, const std::set<std::string>& sparks);

 private:
  // Throws ApiError.
  void write(const std::string& name, const activity::PersistedActivity& ours);

  // What the annotations carry of a spark's activity (its history and last client stay local).
  struct Published {
    activity::TimePoint last_activity{};
    std::optional<activity::TimePoint> keep_awake_until;
    friend bool operator==(const Published&, const Published&) = default;
  };

  Cluster& cluster_;
  std::mutex mu_;  // one publish at a time: published_ is what they agree was written
  std::map<std::string, Published> published_;
};

}  // namespace spark::k8s
