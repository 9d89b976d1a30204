#pragma once
// Last activity and keep-awake holds of every spark, and which of them still need persisting.
// Not thread-safe: owned by the data-plane thread; timestamps are passed in so tests control time.
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include "activity/idle_policy.hpp"
#include "activity/spark_history.hpp"

namespace spark::activity {

struct PersistedActivity {
  TimePoint last_activity{};
  std::optional<TimePoint> keep_awake_until;
  // Who opened the spark's last connection through this gateway: "100.101.102.103",
  // "10.0.0.7 (jump login brave-dolphin, key SHA256:...)". Empty: nobody yet. Local only: other
  // replicas' activity (merge_remote) does not carry it.
  std::string last_client;
  // Its last week awake and asleep, its wakes and when it was in use (spark_history.hpp). Local
  // only, like last_client: other replicas keep their own.
  SparkHistory history;
  friend bool operator==(const PersistedActivity&, const PersistedActivity&) = default;
};

using ActivitySnapshot = std::map<std::string, PersistedActivity>;

// How often the histories' current states are written even when nothing else changed.
inline constexpr std::chrono::minutes kHistoryCheckpoint{5};

class ActivityTracker {
 public:
  // Seeds the tracker with what was persisted before a restart (histories as the store loads
  // them: closed at the moment the file was written, unknown since).
  void restore(const ActivitySnapshot& persisted);

  // The gateway serves the spark (at start-up, and at each reload). First sight of a spark
  // with no persisted activity: its idle clock starts at `now`. A spark the gateway starts
  // serving is asleep as far as the gateway knows (Spark starts sleeping; one found running
  // is adopted, which records it awake): its history says so from `now` unless it already
  // has a current state.
  void ensure(const std::string& spark, TimePoint now);

  void connection_opened(const std::string& spark, TimePoint now);
  void connection_closed(const std::string& spark, TimePoint now);
  void touch(const std::string& spark, TimePoint now);  // e.g. a wake by the API
  // The spark was seen running since `at`, started by someone else (another replica, a person):
  // its idle clock here starts no earlier (get() and is_idle() count it). It is not activity:
  // never persisted nor recorded for the other replicas (each adopts for itself), so it cannot
  // pass for a session and keep a failed wake's clean-up on another replica from stopping it.
  void seen_running_since(const std::string& spark, TimePoint at);
  // A connection from `client` (the spark view's last_client; persisted with the activity).
  void connection_from(const std::string& spark, std::string client, TimePoint now);
  std::string last_client(const std::string& spark) const;
  void set_keep_awake(const std::string& spark, std::optional<TimePoint> until, TimePoint now);

  // The spark's history (spark_history.hpp): it became awake (any state but sleeping) or
  // asleep at `at`; a wake began for `cause`. Sessions are recorded by connection_opened/closed
  // (its first opening and last closing bound a span of use).
  void record_awake(const std::string& spark, bool awake, TimePoint at);
  void record_wake(const std::string& spark, std::string_view cause, TimePoint at);
  // Empty for a spark never seen.
  const SparkHistory& history(const std::string& spark) const;

  // Activity recorded elsewhere (the Deployment's annotations, written by this or another
  // gateway): only ever moves last activity forward; its keep-awake hold replaces ours (set or
  // cleared on another replica) unless ours is newer than what was read (set here, and not yet
  // seen recorded). Not dirty: it is already stored where it came from.
  void merge_remote(const std::string& spark, const PersistedActivity& remote);

  // The newest last activity known to be recorded where other gateways read it (merged from
  // there, or written there by this one): what their reapers decide on. The epoch if none.
  TimePoint shared_last_activity(const std::string& spark) const;
  // This gateway recorded `at` where the others read it (a wake, a session's refresh).
  void mark_shared(const std::string& spark, TimePoint at);

  // Open connections count as activity: moves last_activity to `now` for every spark that has
  // any (but those in `except`), so a persisted timestamp never looks stale while a session is open.
  // Called before every flush: also makes the state file due every kHistoryCheckpoint, so that
  // after a crash the histories lose at most that much (plus a flush interval) to "unknown".
  void refresh_open(TimePoint now, const std::set<std::string>& except = {});

  SparkActivity get(const std::string& spark) const;
  bool is_idle(const std::string& spark, const config::MaybeNever& idle_timeout, TimePoint now) const;

  bool dirty() const { return dirty_; }
  // Everything known (also sparks no longer configured: nothing is forgotten).
  ActivitySnapshot snapshot() const;
  // Call after a snapshot was written successfully. `written` is that snapshot: entries changed
  // since then stay dirty.
  void mark_persisted(const ActivitySnapshot& written);

 private:
  struct Entry {
    PersistedActivity persisted;
    TimePoint shared{};
    int open_connections = 0;
    TimePoint seen_running_since{};  // local only (seen_running_since())
    bool hold_unconfirmed = false;   // set here; not yet seen in what merge_remote reads
  };
  Entry& entry(const std::string& spark, TimePoint now);

  std::map<std::string, Entry> entries_;
  bool dirty_ = false;
  TimePoint history_checkpoint_{};  // when refresh_open last made the histories due
};

}  // namespace spark::activity
