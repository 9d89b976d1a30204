#pragma once
// A spark that is a Deployment: wake = scale 0->1 (the scale subresource), observe = the pods
// the watch shows, sleep = merge-patch replicas 0 with a resourceVersion precondition, so a
// Deployment someone touched since we looked is never put to sleep on stale information.
#include <mutex>
#include <string>

#include "config/config.hpp"
#include "gateway/backend/backend.hpp"
#include "k8s/cluster.hpp"

namespace spark::k8s {

class KubernetesBackend final : public gateway::Backend {
 public:
  KubernetesBackend(Cluster& cluster, config::KubernetesBackendConfig cfg);

  std::string_view kind() const override { return "kubernetes"; }
  void wake(const gateway::WakeRequest& request) override;
  void sleep(const gateway::SleepRequest& request) override;
  gateway::Observation observe() const override;
  // Others scale Deployments too (kubectl, the spark CLI, other gateway replicas).
  bool may_run_without_us() const override { return true; }

 private:
  Deployment current() const;  // from the cache, or read from the API; throws BackendError
  // Patches replicas to 0 if `d` still holds no newer activity than `request` knew of.
  void scale_down(const Deployment& d, const gateway::SleepRequest& request);

  Cluster& cluster_;
  config::KubernetesBackendConfig cfg_;
  mutable std::mutex mu_;
  // The resourceVersion our scale-up produced: until the watch has caught up with it, the
  // cache's "replicas 0" is old news, not a sleep.
  std::string woken_at_version_;
};

}  // namespace spark::k8s
