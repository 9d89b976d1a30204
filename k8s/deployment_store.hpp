#pragma once
// What a spark's Kubernetes backend needs of the cluster: the watch's copy of its Deployment and
// pods (which may lag behind the API server), a fresh read, and conditional writes. Cluster is
// the real one; tests put several backends (gateway replicas) over one in-memory store with
// resourceVersions and 409 Conflicts, to check what they decide together.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8s/resources.hpp"

namespace spark::k8s {

class DeploymentStore {
 public:
  virtual ~DeploymentStore() = default;

  // The watched copy (nullopt: not among the sparks, as far as the watch has told).
  virtual std::optional<Deployment> deployment(const std::string& name) const = 0;
  // The watched copy follows the server now (not reconnecting after an outage).
  virtual bool deployments_current() const = 0;
  // The watched pods the Deployment owns (through its ReplicaSets, by UID), newest first.
  virtual std::vector<Pod> pods_of(const Deployment& d) const = 0;
  // The Deployment as the API server has it now; nullopt if it does not exist. Throws ApiError.
  virtual std::optional<Deployment> read_deployment(const std::string& name) = 0;
  // An RFC 7386 merge patch of the Deployment; returns the object written. Throws ApiError
  // (409 when the patch carries a resourceVersion that is no longer current).
  virtual nlohmann::json patch_deployment(const std::string& name, const nlohmann::json& patch) = 0;
  // The full name of one of the gateway's annotations ("spark-gateway/" + key by default).
  virtual std::string annotation(const std::string& key) const = 0;
  // Records an Event on the Deployment; never throws.
  virtual void record_event(const Deployment& d, const std::string& type, const std::string& reason,
                            const std::string& message) = 0;
  // limits.max_running across gateway replicas: claims one of `max_running` places for Deployment
  // `name`, where every replica counts them (k8s/running_places.hpp), for a wake that takes up to
  // `wake_timeout`. True: the place is its own; false: every place is taken. Throws ApiError
  // when it cannot tell. The default: no other replica counts (this gateway's count decides).
  virtual bool claim_running_place(const std::string& name, int max_running,
                                   std::chrono::milliseconds wake_timeout) {
    (void)name;
    (void)max_running;
    (void)wake_timeout;
    return true;
  }
};

}  // namespace spark::k8s
