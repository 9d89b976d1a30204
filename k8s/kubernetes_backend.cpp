#include "k8s/kubernetes_backend.hpp"

#include <spdlog/spdlog.h>

#include "activity/time_format.hpp"
#include "config/duration.hpp"
#include "config/plural.hpp"
#include "k8s/api_client.hpp"

namespace spark::k8s {
namespace {

using gateway::BackendError;
using gateway::Observation;
using gateway::SleepDeclined;
using TimePoint = std::chrono::system_clock::time_point;

// What an annotation holds of a time: RFC 3339 with milliseconds, truncated. Replicas compare
// activity at that precision, exactly: any slack here would let a follower's session look idle
// to the leader by as much (idle timeouts of a few seconds are legitimate).
TimePoint as_recorded(TimePoint t) { return std::chrono::floor<std::chrono::milliseconds>(t); }
// Only for the "asleep for" shown to people: a `slept-at` this close before the recorded
// activity is still the current sleep's (replicas' clocks differ a little).
constexpr std::chrono::seconds kClockSlack{1};
// A write conflicts when the Deployment changed since we read it (an annotation write, another
// replica's scale): re-read and decide again a few times.
constexpr int kWriteAttempts = 4;

// An API failure as the gateway sees it: transient ones (no answer, 429, 5xx) are retried.
BackendError backend_error(const std::string& doing, const ApiError& e) {
  return BackendError(doing + ": " + e.what(), e.is_transient(),
                      std::chrono::duration_cast<std::chrono::milliseconds>(e.retry_after()));
}

TimePoint recorded_activity(const DeploymentStore& cluster, const Deployment& d) {
  if (auto text = d.annotation(cluster.annotation("last-activity")))
    if (auto t = activity::parse_rfc3339(*text)) return *t;
  return {};
}

}  // namespace

KubernetesBackend::KubernetesBackend(DeploymentStore& cluster, config::KubernetesBackendConfig cfg)
    : cluster_(cluster), cfg_(std::move(cfg)) {}

std::optional<Deployment> KubernetesBackend::read(const std::string& doing) const {
  try {
    return cluster_.read_deployment(cfg_.deployment);
  } catch (const ApiError& e) {
    throw backend_error(doing, e);
  }
}

std::optional<Deployment> KubernetesBackend::decide_on(const std::string& doing) const {
  auto cached = cluster_.deployment(cfg_.deployment);
  bool cache_behind = !cluster_.deployments_current();
  if (cached) {
    std::lock_guard lock(mu_);
    cache_behind = cache_behind || newer_resource_version(woken_at_version_, cached->resource_version) ||
                   newer_resource_version(slept_at_version_, cached->resource_version);
  }
  if (cached && !cache_behind) return cached;
  return read(doing);
}

void KubernetesBackend::wake(const gateway::WakeRequest& request) {
  const std::string doing = "waking Deployment " + cfg_.deployment;
  // Read afresh: after an outage (or behind a lagging watch) the cache may still show the
  // replica another gateway has just put to sleep.
  auto d = read(doing);
  if (!d) throw BackendError("Deployment " + cfg_.deployment + " does not exist (any more)");
  bool scaled_by_us = false;
  // One write, conditional on what we read: of several gateway replicas waking the spark at
  // once exactly one scales it; the others get 409, re-read, and only record their activity.
  for (int attempt = 0;; ++attempt) {
    json annotations = json::object();
    if (as_recorded(request.activity_at) > recorded_activity(cluster_, *d))
      annotations[cluster_.annotation("last-activity")] = activity::format_rfc3339(request.activity_at);
    const bool scale_up = d->replicas < 1;
    if (!scale_up && annotations.empty()) break;
    json patch = {{"metadata", {{"resourceVersion", d->resource_version}}}};
    if (!annotations.empty()) patch["metadata"]["annotations"] = annotations;
    if (scale_up) patch["spec"] = {{"replicas", 1}};
    try {
      const auto written = cluster_.patch_deployment(d->name, patch);
      d->resource_version = written.value("/metadata/resourceVersion"_json_pointer, d->resource_version);
      scaled_by_us = scale_up;
      break;
    } catch (const ApiError& e) {
      if (!e.is_conflict() || attempt + 1 == kWriteAttempts)
        throw backend_error(scale_up ? "scaling Deployment " + d->name + " to 1" : doing, e);
    }
    d = read(doing);  // changed meanwhile: decide again on what it says now
    if (!d) throw BackendError("Deployment " + cfg_.deployment + " was deleted while waking it");
  }
  if (scaled_by_us)
    spdlog::info("spark {}: scaled Deployment to 1 replica", d->name);
  else
    spdlog::info("spark {}: Deployment already has {}; waiting for its pod", d->name,
                 config::counted(d->replicas, "replica"));
  {
    std::lock_guard lock(mu_);
    woken_at_version_ = d->resource_version;
    slept_at_version_.clear();
  }
  if (scaled_by_us) cluster_.record_event(*d, "Normal", "Woken", "Woken by " + request.cause);
}

bool KubernetesBackend::share_activity(TimePoint at) {
  const std::string doing = "recording activity on Deployment " + cfg_.deployment;
  // The cached version is enough to write against (if it is stale the write gets 409 and we
  // read), unless it lags behind our own wake or an outage: then its replica count says nothing.
  auto d = decide_on(doing);
  for (int attempt = 0; d; ++attempt) {
    if (d->replicas < 1) return false;  // put to sleep (or going): the caller wakes it
    if (recorded_activity(cluster_, *d) >= as_recorded(at)) return true;  // already says so
    try {
      cluster_.patch_deployment(
          d->name,
          json{{"metadata",
                {{"resourceVersion", d->resource_version},
                 {"annotations", {{cluster_.annotation("last-activity"), activity::format_rfc3339(at)}}}}}});
      return true;
    } catch (const ApiError& e) {
      if (!e.is_conflict() || attempt + 1 == kWriteAttempts) throw backend_error(doing, e);
    }
    d = read(doing);
  }
  return false;  // deleted
}

bool KubernetesBackend::claim_place(int max_running) {
  try {
    return cluster_.claim_running_place(cfg_.deployment, max_running,
                                        std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.wake_timeout));
  } catch (const ApiError& e) {
    // A Lease that kept changing (409 after every attempt) is as transient as a 5xx.
    throw BackendError("claiming a running place for Deployment " + cfg_.deployment + ": " + e.what(),
                       e.is_transient() || e.is_conflict(),
                       std::chrono::duration_cast<std::chrono::milliseconds>(e.retry_after()));
  }
}

Observation KubernetesBackend::observe() const {
  const auto d = cluster_.deployment(cfg_.deployment);
  if (!d)
    return {Observation::State::failed, std::nullopt,
            "the Deployment is no longer among the sparks (deleted, or its labels no longer match the selector)"};
  bool scale_up_in_flight = false, scale_down_in_flight = false;
  {
    std::lock_guard lock(mu_);
    scale_up_in_flight = newer_resource_version(woken_at_version_, d->resource_version);
    scale_down_in_flight = newer_resource_version(slept_at_version_, d->resource_version);
  }
  if (scale_down_in_flight || (d->replicas < 1 && !scale_up_in_flight)) {
    Observation asleep{Observation::State::asleep, std::nullopt, {}};
    // Whichever gateway put it to sleep recorded when: "asleep for" counts from then, not from
    // when this replica started or noticed. Unless activity came after it (woken since, then
    // scaled down by hand: that `slept-at` is an older sleep's), or our own scale-down is still
    // on its way to the cache (the cached one is the previous sleep's).
    if (auto text = d->annotation(cluster_.annotation("slept-at")); text && !scale_down_in_flight) {
      const auto slept = activity::parse_rfc3339(*text);
      if (slept && *slept + kClockSlack >= recorded_activity(cluster_, *d)) asleep.asleep_since = slept;
      asleep.last_slept_at = slept;
    }
    return asleep;
  }

  // A pod created before the spark last slept belongs to that earlier run: it is going away,
  // whatever a pod watch still reconnecting after an outage says of it (creation times are whole
  // seconds: a pod of the sleep's own second is given the benefit of the doubt).
  TimePoint slept_at{};
  {
    std::lock_guard lock(mu_);
    slept_at = slept_at_;
  }
  std::optional<TimePoint> recorded_sleep;
  if (auto text = d->annotation(cluster_.annotation("slept-at")))
    if ((recorded_sleep = activity::parse_rfc3339(*text))) slept_at = std::max(slept_at, *recorded_sleep);
  const auto slept_second = std::chrono::floor<std::chrono::seconds>(slept_at);

  std::string waiting_for = "no pod yet";
  std::optional<std::chrono::system_clock::time_point> since;  // the newest live pod's creation
  for (const auto& pod : cluster_.pods_of(*d)) {
    if (pod.terminating) continue;
    const auto created = activity::parse_rfc3339(pod.creation_timestamp);
    if (created && *created < slept_second) continue;
    if (!since) since = created;
    if (!pod.stuck_reason.empty())
      return {Observation::State::failed,
              std::nullopt,
              "pod " + pod.name + ": " + pod.stuck_reason,
              since,
              std::nullopt,
              recorded_sleep};
    if (pod.phase == "Running" && !pod.pod_ip.empty())
      return {Observation::State::started,
              config::Address{pod.pod_ip, cfg_.target.port},
              {},
              since,
              std::nullopt,
              recorded_sleep};
    waiting_for = "pod " + pod.name + " is " + (pod.phase.empty() ? "Pending" : pod.phase);
  }
  return {Observation::State::started, std::nullopt, waiting_for, since, std::nullopt, recorded_sleep};
}

void KubernetesBackend::sleep(const gateway::SleepRequest& request) {
  const std::string doing = "scaling Deployment " + cfg_.deployment + " to 0";
  std::optional<Deployment> d;
  if (!cluster_.deployment(cfg_.deployment) && request.reason != "wake_failed") {
    // Deleted, or no longer a spark (labels changed): not ours to scale any more.
    spdlog::info("spark {}: its Deployment is no longer among the sparks; left as it is", cfg_.deployment);
    return;
  }
  // After a failed wake the Deployment is put back as the wake found it, even if it stopped
  // matching the selector meanwhile (its absence from the cache says nothing then).
  d = request.reason == "wake_failed" ? read(doing) : decide_on(doing);
  for (int attempt = 0;; ++attempt) {
    if (!d || d->replicas < 1) return;  // gone, or already asleep (someone else scaled it down)
    try {
      const auto version = scale_down(*d, request);
      std::lock_guard lock(mu_);
      slept_at_version_ = version;
      slept_at_ = std::chrono::system_clock::now();
      woken_at_version_.clear();
      break;
    } catch (const ApiError& e) {
      if (!e.is_conflict() || attempt + 1 == kWriteAttempts) throw backend_error(doing, e);
    }
    d = read(doing);  // changed since we looked: decide again on what it says now
  }
  record_sleep_event(*d, request);
}

std::string KubernetesBackend::scale_down(const Deployment& d, const gateway::SleepRequest& request) {
  const auto now = std::chrono::system_clock::now();
  const auto recorded = recorded_activity(cluster_, d);
  const auto judged = as_recorded(request.last_activity);
  // An eviction (limits.evict_idle_after) is an idle sleep made early: judged the same way.
  const bool idle_sleep = request.reason == "idle" || request.reason == "evicted";
  if (idle_sleep || request.reason == "wake_failed") {
    // Another gateway replica (or a person) may have recorded activity we have not merged yet.
    if (recorded > judged)
      throw SleepDeclined("not idle: the Deployment records activity at " + activity::format_rfc3339(recorded));
  }
  if (request.unless_active_after && recorded > as_recorded(*request.unless_active_after))
    throw SleepDeclined("activity recorded at " + activity::format_rfc3339(recorded) +
                        " may be a session through another gateway replica (force puts it to sleep anyway)");
  if (idle_sleep) {
    // Put to sleep after the activity this was judged on, and started again since: a run the
    // deciding replica never saw begin. It follows the new run first (Spark::follow_backend).
    if (auto text = d.annotation(cluster_.annotation("slept-at"))) {
      const auto slept = activity::parse_rfc3339(*text);
      if (slept && *slept > judged)
        throw SleepDeclined("started again since it slept at " + *text +
                            ", after the activity this was judged on");
    }
    if (auto text = d.annotation(cluster_.annotation("keep-awake-until"))) {
      const auto until = activity::parse_rfc3339(*text);
      if (until && *until > now) throw SleepDeclined("kept awake until " + *text);
    }
  }
  // One patch: replicas, the record of why, and the activity the decision was based on (so a
  // restarted gateway knows it), conditional on the version we decided on.
  json annotations = {{cluster_.annotation("slept-at"), activity::format_rfc3339(now)},
                      {cluster_.annotation("sleep-reason"), request.reason}};
  if (judged > recorded)
    annotations[cluster_.annotation("last-activity")] = activity::format_rfc3339(request.last_activity);
  const json patch = {
      {"metadata", {{"resourceVersion", d.resource_version}, {"annotations", annotations}}},
      {"spec", {{"replicas", 0}}},
  };
  const auto written = cluster_.patch_deployment(d.name, patch);
  return written.value("/metadata/resourceVersion"_json_pointer, std::string());
}

void KubernetesBackend::record_sleep_event(const Deployment& d, const gateway::SleepRequest& request) {
  std::string type = "Normal", reason = "Slept";
  std::string message = "Put to sleep (" + request.description + ")";
  if (request.reason == "idle" && request.last_activity != TimePoint{}) {
    const auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now() -
                                                                            request.last_activity);
    message = "Put to sleep after " + config::format_duration(std::chrono::floor<std::chrono::seconds>(idle)) +
              " idle";
  } else if (request.reason == "api") {
    message = "Put to sleep by " + request.description;
  } else if (request.reason == "evicted") {
    message = "Put to sleep " + request.description;  // "to make room for brave-dolphin"
  } else if (request.reason == "wake_failed") {
    type = "Warning";
    reason = "WakeFailed";
    message = "Scaled back to 0 after " + request.description;
  }
  cluster_.record_event(d, type, reason, message);
}

}  // namespace spark::k8s
