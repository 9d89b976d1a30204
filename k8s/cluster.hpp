#pragma once
// The gateway's view of one namespace: the spark Deployments, their ReplicaSets and Pods (and,
// with manage_services, the Services), kept current by reflectors (list+watch), plus the API
// client and the Events the gateway records. Thread-safe; the main loop only reads the cache (a
// short lock, no I/O).
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "k8s/api_client.hpp"
#include "k8s/deployment_store.hpp"
#include "k8s/event_recorder.hpp"
#include "k8s/reflector.hpp"
#include "k8s/resources.hpp"
#include "k8s/running_places.hpp"

namespace spark::k8s {

class Cluster final : public DeploymentStore {
 public:
  Cluster(config::KubernetesConfig cfg, ApiEndpoint endpoint);
  ~Cluster() override;

  // `on_change` runs on a watch thread after every Deployment change (keep it short);
  // `on_services_change` after every change of a Service in the namespace (manage_services only).
  void start(std::function<void()> on_change, std::function<void()> on_services_change = {});
  void stop();
  bool synced() const;  // every cache has been listed once
  // The Deployment cache follows the server now (not reconnecting after an outage). Even then
  // a watch can lag behind a write: decisions that act on one Deployment read it afresh.
  bool deployments_current() const override;

  const config::KubernetesConfig& config() const { return cfg_; }
  ApiClient& api() { return api_; }

  std::vector<Deployment> deployments() const;
  std::optional<Deployment> deployment(const std::string& name) const override;
  // The Deployment as the API server has it now (GET); nullopt if it does not exist. Throws ApiError.
  std::optional<Deployment> read_deployment(const std::string& name) override;
  nlohmann::json patch_deployment(const std::string& name, const nlohmann::json& patch) override;
  // The pods the Deployment owns (through its ReplicaSets, by UID) that its selector picks,
  // newest first. A pod that only carries the labels is not the spark's: it could be anyone's.
  std::vector<Pod> pods_of(const Deployment& d) const override;
  // The namespace's Services (empty unless manage_services): the gateway's own, and others that
  // may hold a name the gateway wants.
  std::vector<Service> services() const;
  // Those labelled as managed by the gateway.
  std::vector<Service> managed_services() const;
  static bool is_managed(const Service& s);
  // The label every managed Service carries, as a selector: "app.kubernetes.io/managed-by=spark-gateway".
  static constexpr const char* kManagedBy = "app.kubernetes.io/managed-by";
  static constexpr const char* kManagerName = "spark-gateway";

  std::string deployment_path(const std::string& name) const;
  std::string services_path() const;
  std::string annotation(const std::string& key) const override { return cfg_.annotation_prefix + key; }

  // Records a core/v1 Event on the Deployment (what `kubectl describe` shows). The same
  // (Deployment, type, reason, message) again updates that Event's count and lastTimestamp,
  // rate-limited (EventRecorder). Never throws: an Event that cannot be written is logged, it
  // must not fail a wake or a sleep.
  void record_event(const Deployment& d, const std::string& type, const std::string& reason,
                    const std::string& message) override;

  // With leader_election (several replicas): a claim in the Lease leader_election.running_lease
  // (RunningPlaces), held for the wake_timeout, the request_timeout of the scale call still in
  // flight then, and the watch's delay. Without it this gateway is the only one: true.
  bool claim_running_place(const std::string& name, int max_running,
                           std::chrono::milliseconds wake_timeout) override;

 private:
  // What the spark Deployments show, for counting running places.
  PlaceViews place_views();
  // Beyond wake_timeout + request_timeout, how long a claim holds (for watches to catch up).
  static constexpr std::chrono::milliseconds kClaimMargin{30'000};

  class DeploymentCache;
  class PodCache;
  class ReplicaSetCache;
  class ServiceCache;

  config::KubernetesConfig cfg_;
  ApiClient api_;
  std::unique_ptr<DeploymentCache> deployments_;
  std::unique_ptr<PodCache> pods_;
  std::unique_ptr<ReplicaSetCache> replica_sets_;
  std::unique_ptr<Reflector> deployment_reflector_;
  std::unique_ptr<Reflector> pod_reflector_;
  std::unique_ptr<Reflector> replica_set_reflector_;
  std::unique_ptr<ServiceCache> services_;
  std::unique_ptr<Reflector> service_reflector_;  // only with manage_services: all the namespace's
  EventRecorder events_;
  std::unique_ptr<RunningPlaces> running_places_;  // only with leader_election
};

}  // namespace spark::k8s
