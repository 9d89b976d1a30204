#pragma once
// A spark that is a Deployment. wake = one conditional merge patch of the Deployment setting
// replicas 1 and recording the wake's activity; observe = the pods the watch shows; sleep = a
// conditional merge patch to replicas 0 that declines if someone recorded activity since the
// gateway decided. Every write carries the resourceVersion it was decided on, so gateway
// replicas never act on each other's stale news: a 409 re-reads and decides again.
#include <mutex>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "gateway/backend/backend.hpp"
#include "k8s/deployment_store.hpp"

namespace spark::k8s {

class KubernetesBackend final : public gateway::Backend {
 public:
  KubernetesBackend(DeploymentStore& cluster, config::KubernetesBackendConfig cfg);

  std::string_view kind() const override { return "kubernetes"; }
  void wake(const gateway::WakeRequest& request) override;
  void sleep(const gateway::SleepRequest& request) override;
  gateway::Observation observe() const override;
  // Others scale Deployments too (kubectl, the spark CLI, other gateway replicas).
  bool may_run_without_us() const override { return true; }
  // Other replicas reap it on what its annotations say.
  bool shares_activity() const override { return true; }
  bool share_activity(std::chrono::system_clock::time_point at) override;
  // A claim in the Lease every replica counts running places in (k8s/running_places.hpp).
  bool claim_place(int max_running) override;

 private:
  // The Deployment as the API server has it now; nullopt if it does not exist. Throws BackendError.
  std::optional<Deployment> read(const std::string& doing) const;
  // The cached Deployment when the cache can be trusted for a decision (it follows the server
  // and has seen our own last write), else read(). nullopt if it does not exist.
  std::optional<Deployment> decide_on(const std::string& doing) const;
  // Patches replicas to 0 if `d` records no newer activity than `request` knew of; returns the
  // new resourceVersion. Throws ApiError (409 included) or SleepDeclined.
  std::string scale_down(const Deployment& d, const gateway::SleepRequest& request);
  void record_sleep_event(const Deployment& d, const gateway::SleepRequest& request);

  DeploymentStore& cluster_;
  config::KubernetesBackendConfig cfg_;
  mutable std::mutex mu_;
  // The resourceVersions our last scale-up and our last scale-down produced: until the watch
  // has caught up with them, the cache's replica count is old news.
  std::string woken_at_version_;
  std::string slept_at_version_;
  std::chrono::system_clock::time_point slept_at_{};  // when our last scale-down was applied
};

}  // namespace spark::k8s
