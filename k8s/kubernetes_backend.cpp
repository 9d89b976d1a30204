#include "k8s/kubernetes_backend.hpp"

#include <spdlog/spdlog.h>

#include "activity/time_format.hpp"
#include "config/duration.hpp"

namespace spark::k8s {
namespace {

using gateway::BackendError;
using gateway::Observation;

// Activity another gateway recorded counts only if clearly newer: clocks and RFC 3339
// millisecond rounding differ a little between replicas.
constexpr std::chrono::seconds kActivitySlack{1};

}  // namespace

namespace {
// A scale conflicts when the Deployment changed since we read it (an annotation write, another
// replica's scale): re-read and try again a few times.
constexpr int kScaleAttempts = 4;
}  // namespace

KubernetesBackend::KubernetesBackend(Cluster& cluster, config::KubernetesBackendConfig cfg)
    : cluster_(cluster), cfg_(std::move(cfg)) {}

Deployment KubernetesBackend::current() const {
  if (auto d = cluster_.deployment(cfg_.deployment)) return *d;
  try {
    return parse_deployment(cluster_.api().get(cluster_.deployment_path(cfg_.deployment)));
  } catch (const ApiError& e) {
    throw BackendError("Deployment " + cluster_.config().namespace_name + "/" + cfg_.deployment +
                       ": " + e.what());
  }
}

void KubernetesBackend::wake(const gateway::WakeRequest& request) {
  Deployment d = current();
  std::string version = d.resource_version;
  bool scaled_by_us = false;
  // Conditional on the resourceVersion we saw, so that of several gateway replicas waking the
  // spark at once exactly one scales it; the others get 409, re-read, and see replicas 1.
  for (int attempt = 0; d.replicas < 1 && attempt < kScaleAttempts; ++attempt) {
    try {
      // The scale subresource: the one call that needs only `deployments/scale` rights.
      const auto scale = cluster_.api().merge_patch(
          cluster_.deployment_path(d.name) + "/scale",
          json{{"metadata", {{"resourceVersion", d.resource_version}}}, {"spec", {{"replicas", 1}}}});
      version = scale.value("/metadata/resourceVersion"_json_pointer, version);
      scaled_by_us = true;
      break;
    } catch (const ApiError& e) {
      if (!e.is_conflict() || attempt + 1 == kScaleAttempts)
        throw BackendError("scaling Deployment " + d.name + " to 1: " + e.what());
    }
    try {
      d = parse_deployment(cluster_.api().get(cluster_.deployment_path(d.name)));  // changed meanwhile
      version = d.resource_version;
    } catch (const ApiError& e) {
      throw BackendError("Deployment " + d.name + ": " + e.what());
    }
  }
  if (scaled_by_us)
    spdlog::info("spark {}: scaled Deployment to 1 replica", d.name);
  else
    spdlog::info("spark {}: Deployment already has {} replica(s); waiting for its pod", d.name, d.replicas);
  {
    std::lock_guard lock(mu_);
    woken_at_version_ = version;
  }
  if (scaled_by_us) cluster_.record_event(d, "Normal", "Woken", "Woken by " + request.cause);
}

Observation KubernetesBackend::observe() const {
  const auto d = cluster_.deployment(cfg_.deployment);
  if (!d) return {Observation::State::failed, std::nullopt, "the Deployment does not exist (any more)"};
  bool scale_up_in_flight = false;
  {
    std::lock_guard lock(mu_);
    scale_up_in_flight = newer_resource_version(woken_at_version_, d->resource_version);
  }
  if (d->replicas < 1 && !scale_up_in_flight) return {Observation::State::asleep, std::nullopt, {}};

  std::string waiting_for = "no pod yet";
  for (const auto& pod : cluster_.pods_of(*d)) {
    if (pod.terminating) continue;
    if (!pod.stuck_reason.empty())
      return {Observation::State::failed, std::nullopt, "pod " + pod.name + ": " + pod.stuck_reason};
    if (pod.phase == "Running" && !pod.pod_ip.empty())
      return {Observation::State::started, config::Address{pod.pod_ip, cfg_.target.port}, {}};
    waiting_for = "pod " + pod.name + " is " + (pod.phase.empty() ? "Pending" : pod.phase);
  }
  return {Observation::State::started, std::nullopt, waiting_for};
}

void KubernetesBackend::sleep(const gateway::SleepRequest& request) {
  if (!cluster_.deployment(cfg_.deployment)) {
    // Deleted (the spark is being retired): nothing left to scale.
    spdlog::info("spark {}: its Deployment is gone; nothing to put to sleep", cfg_.deployment);
    return;
  }
  Deployment d = current();
  for (int attempt = 0;; ++attempt) {
    if (d.replicas < 1) return;  // already asleep (someone else scaled it down)
    try {
      scale_down(d, request);
      break;
    } catch (const ApiError& e) {
      if (!e.is_conflict() || attempt == 2)
        throw BackendError("scaling Deployment " + d.name + " to 0: " + e.what());
      // Changed since we looked: read it again and decide again on what it says now.
      try {
        d = parse_deployment(cluster_.api().get(cluster_.deployment_path(d.name)));
      } catch (const ApiError& again) {
        throw BackendError("re-reading Deployment " + d.name + " after a conflict: " + again.what());
      }
    }
  }
  {
    std::lock_guard lock(mu_);
    woken_at_version_.clear();
  }
  std::string message = "Put to sleep (" + request.description + ")";
  if (request.reason == "idle" && request.last_activity != std::chrono::system_clock::time_point{}) {
    const auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now() - request.last_activity);
    message = "Put to sleep after " + config::format_duration(std::chrono::floor<std::chrono::seconds>(idle)) + " idle";
  } else if (request.reason == "api") {
    message = "Put to sleep by " + request.description;
  }
  cluster_.record_event(d, "Normal", "Slept", message);
}

void KubernetesBackend::scale_down(const Deployment& d, const gateway::SleepRequest& request) {
  const auto now = std::chrono::system_clock::now();
  if (request.reason == "idle") {
    // Another gateway replica (or a person) may have recorded activity we have not merged yet.
    if (auto text = d.annotation(cluster_.annotation("last-activity"))) {
      const auto theirs = activity::parse_rfc3339(*text);
      if (theirs && *theirs > request.last_activity + kActivitySlack)
        throw BackendError("not idle: the Deployment records activity at " + *text);
    }
    if (auto text = d.annotation(cluster_.annotation("keep-awake-until"))) {
      const auto until = activity::parse_rfc3339(*text);
      if (until && *until > now) throw BackendError("kept awake until " + *text);
    }
  }
  // One patch: replicas and the record of why, conditional on the version we decided on.
  const json patch = {
      {"metadata",
       {{"resourceVersion", d.resource_version},
        {"annotations",
         {{cluster_.annotation("slept-at"), activity::format_rfc3339(now)},
          {cluster_.annotation("sleep-reason"), request.reason}}}}},
      {"spec", {{"replicas", 0}}},
  };
  cluster_.api().merge_patch(cluster_.deployment_path(d.name), patch);
}

}  // namespace spark::k8s
