#include "k8s/activity_annotations.hpp"

#include <spdlog/spdlog.h>

#include "activity/time_format.hpp"

namespace spark::k8s {
namespace {

// Newer by less than this is not worth a write (and absorbs RFC 3339 millisecond rounding).
constexpr std::chrono::seconds kWorthWriting{1};

// Annotations hold milliseconds: compare at that precision.
bool same_time(const std::optional<activity::TimePoint>& a, const std::optional<activity::TimePoint>& b) {
  if (!a || !b) return a.has_value() == b.has_value();
  return std::chrono::floor<std::chrono::milliseconds>(*a) == std::chrono::floor<std::chrono::milliseconds>(*b);
}

}  // namespace

activity::PersistedActivity read_activity(const Cluster& cluster, const Deployment& d,
                                          std::vector<std::string>* problems) {
  activity::PersistedActivity out;
  auto unusable = [&](const std::string& key, const std::string& text, const std::string& consequence) {
    if (problems)
      problems->push_back(cluster.annotation(key) + " \"" + text +
                          "\" is not an RFC 3339 time from 1970 to 2200 (e.g. 2026-11-22T15:04:05Z); " +
                          consequence);
  };
  if (auto text = d.annotation(cluster.annotation("last-activity"))) {
    if (auto t = activity::parse_rfc3339(*text))
      out.last_activity = *t;
    else
      unusable("last-activity", *text, "ignored, as if no activity were recorded (the next activity replaces it)");
  }
  if (auto text = d.annotation(cluster.annotation("keep-awake-until"))) {
    if (auto t = activity::parse_rfc3339(*text))
      out.keep_awake_until = *t;
    else
      unusable("keep-awake-until", *text, "ignored: no keep-awake hold");
  }
  return out;
}

int ActivityAnnotations::publish(const activity::ActivitySnapshot& snapshot, const std::set<std::string>& sparks) {
  std::lock_guard lock(mu_);
  int failed = 0;
  for (const auto& name : sparks) {
    const auto it = snapshot.find(name);
    if (it == snapshot.end()) continue;
    const Published now{it->second.last_activity, it->second.keep_awake_until};
    if (auto done = published_.find(name); done != published_.end() && done->second == now) continue;
    try {
      write(name, it->second);
      published_[name] = now;
    } catch (const std::exception& e) {
      ++failed;
      spdlog::warn("spark {}: cannot record activity on its Deployment (will retry): {}", name, e.what());
    }
  }
  return failed;
}

void ActivityAnnotations::write(const std::string& name, const activity::PersistedActivity& ours) {
  auto cached = cluster_.deployment(name);
  if (!cached) return;  // gone: nothing to record on
  Deployment d = *cached;
  for (int attempt = 0;; ++attempt) {
    const auto theirs = read_activity(cluster_, d);
    json annotations = json::object();
    if (ours.last_activity > theirs.last_activity + kWorthWriting)
      annotations[cluster_.annotation("last-activity")] = activity::format_rfc3339(ours.last_activity);
    if (!same_time(ours.keep_awake_until, theirs.keep_awake_until)) {
      if (ours.keep_awake_until)
        annotations[cluster_.annotation("keep-awake-until")] = activity::format_rfc3339(*ours.keep_awake_until);
      else
        annotations[cluster_.annotation("keep-awake-until")] = nullptr;  // merge patch: delete
    }
    if (annotations.empty()) return;  // the Deployment already says as much (or more)
    try {
      cluster_.api().merge_patch(cluster_.deployment_path(name),
                                 json{{"metadata",
                                       {{"resourceVersion", d.resource_version}, {"annotations", annotations}}}});
      return;
    } catch (const ApiError& e) {
      if (!e.is_conflict() || attempt == 2) throw;
      d = parse_deployment(cluster_.api().get(cluster_.deployment_path(name)));
    }
  }
}

}  // namespace spark::k8s
