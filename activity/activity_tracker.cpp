#include "activity/activity_tracker.hpp"

#include <algorithm>

namespace spark::activity {

void ActivityTracker::restore(const ActivitySnapshot& persisted) {
  for (const auto& [name, p] : persisted) entries_[name].persisted = p;
}

ActivityTracker::Entry& ActivityTracker::entry(const std::string& spark, TimePoint now) {
  auto [it, fresh] = entries_.try_emplace(spark);
  if (fresh) {
    it->second.persisted.last_activity = now;
    dirty_ = true;
  }
  return it->second;
}

void ActivityTracker::ensure(const std::string& spark, TimePoint now) {
  auto& history = entry(spark, now).persisted.history;
  if (history.current()) return;
  history.begin_if_unknown(now, /*awake=*/false);
  dirty_ = true;
}

void ActivityTracker::touch(const std::string& spark, TimePoint now) {
  auto& e = entry(spark, now);
  // Activity only moves forward: a clock step back must not make a spark look idle longer.
  e.persisted.last_activity = std::max(e.persisted.last_activity, now);
  dirty_ = true;
}

void ActivityTracker::seen_running_since(const std::string& spark, TimePoint at) {
  auto& e = entry(spark, at);
  e.seen_running_since = std::max(e.seen_running_since, at);
}

void ActivityTracker::connection_opened(const std::string& spark, TimePoint now) {
  touch(spark, now);
  auto& e = entry(spark, now);
  if (++e.open_connections == 1) e.persisted.history.in_use_began(now);
}

void ActivityTracker::connection_closed(const std::string& spark, TimePoint now) {
  auto& e = entry(spark, now);
  if (e.open_connections > 0 && --e.open_connections == 0) e.persisted.history.in_use_ended(now);
  touch(spark, now);
}

void ActivityTracker::record_awake(const std::string& spark, bool awake, TimePoint at) {
  entry(spark, at).persisted.history.record_state(at, awake);
  dirty_ = true;
}

void ActivityTracker::record_wake(const std::string& spark, std::string_view cause, TimePoint at) {
  entry(spark, at).persisted.history.record_wake(at, cause);
  dirty_ = true;
}

const SparkHistory& ActivityTracker::history(const std::string& spark) const {
  static const SparkHistory kNone;
  const auto it = entries_.find(spark);
  return it == entries_.end() ? kNone : it->second.persisted.history;
}

void ActivityTracker::set_keep_awake(const std::string& spark, std::optional<TimePoint> until, TimePoint now) {
  auto& e = entry(spark, now);
  e.persisted.keep_awake_until = until;
  e.hold_unconfirmed = true;
  dirty_ = true;
}

void ActivityTracker::merge_remote(const std::string& spark, const PersistedActivity& remote) {
  auto [it, fresh] = entries_.try_emplace(spark);
  auto& p = it->second.persisted;
  p.last_activity = std::max(p.last_activity, remote.last_activity);
  it->second.shared = std::max(it->second.shared, remote.last_activity);
  // A hold is a setting, not a time that only moves forward: the recorded one is the truth
  // (another replica may have cleared it), except while ours is not recorded yet.
  const auto ms = [](const std::optional<TimePoint>& t) {
    return t ? std::optional(std::chrono::floor<std::chrono::milliseconds>(*t)) : std::nullopt;
  };
  if (it->second.hold_unconfirmed && ms(remote.keep_awake_until) == ms(p.keep_awake_until))
    it->second.hold_unconfirmed = false;
  if (!it->second.hold_unconfirmed) p.keep_awake_until = remote.keep_awake_until;
  if (fresh) dirty_ = true;  // new to the local state file
}

TimePoint ActivityTracker::shared_last_activity(const std::string& spark) const {
  const auto it = entries_.find(spark);
  return it == entries_.end() ? TimePoint{} : it->second.shared;
}

void ActivityTracker::mark_shared(const std::string& spark, TimePoint at) {
  auto& e = entry(spark, at);
  e.shared = std::max(e.shared, at);
}

void ActivityTracker::refresh_open(TimePoint now, const std::set<std::string>& except) {
  for (auto& [name, e] : entries_) {
    if (e.open_connections > 0 && !except.contains(name)) touch(name, now);
  }
  // A current state is only as good as the last file that recorded it going on (a crash
  // closes it there): record it again now and then, even if nothing else changed.
  if (now - history_checkpoint_ < kHistoryCheckpoint && now >= history_checkpoint_) return;
  history_checkpoint_ = now;
  for (const auto& [name, e] : entries_)
    if (e.persisted.history.current()) dirty_ = true;
}

void ActivityTracker::connection_from(const std::string& spark, std::string client, TimePoint now) {
  auto& e = entry(spark, now);
  if (e.persisted.last_client == client) return;
  e.persisted.last_client = std::move(client);
  dirty_ = true;
}

std::string ActivityTracker::last_client(const std::string& spark) const {
  const auto it = entries_.find(spark);
  return it == entries_.end() ? std::string() : it->second.persisted.last_client;
}

SparkActivity ActivityTracker::get(const std::string& spark) const {
  auto it = entries_.find(spark);
  if (it == entries_.end()) return {};
  const auto& e = it->second;
  return {std::max(e.persisted.last_activity, e.seen_running_since), e.persisted.keep_awake_until,
          e.open_connections};
}

bool ActivityTracker::is_idle(const std::string& spark, const config::MaybeNever& idle_timeout,
                              TimePoint now) const {
  if (!entries_.contains(spark)) return false;  // never seen: nothing to judge yet
  return activity::is_idle(get(spark), idle_timeout, now);
}

ActivitySnapshot ActivityTracker::snapshot() const {
  ActivitySnapshot out;
  for (const auto& [name, e] : entries_) out.emplace(name, e.persisted);
  return out;
}

void ActivityTracker::mark_persisted(const ActivitySnapshot& written) {
  dirty_ = false;
  for (const auto& [name, e] : entries_) {
    auto it = written.find(name);
    if (it == written.end() || !(it->second == e.persisted)) dirty_ = true;
  }
}

}  // namespace spark::activity
