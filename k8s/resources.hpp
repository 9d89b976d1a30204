#pragma once
// The parts of Deployments, ReplicaSets, Pods and Services the gateway reads, parsed from API
// payloads. Missing fields take their API defaults: the API omits zero values (`spec.replicas` at
// 0, `readyReplicas`).
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace spark::k8s {

using Labels = std::map<std::string, std::string>;

// One of metadata.ownerReferences. Ownership is by UID: a name can be reused by a new object.
struct OwnerReference {
  std::string kind;
  std::string name;
  std::string uid;
  friend bool operator==(const OwnerReference&, const OwnerReference&) = default;
};

// metadata.ownerReferences' entry with controller: true (the API allows at most one); nullopt if
// none (an orphan, or an object someone made by hand).
std::optional<OwnerReference> controller_of(const nlohmann::json& metadata);

struct Deployment {
  std::string name;
  std::string uid;
  std::string resource_version;
  std::string creation_timestamp;  // RFC 3339; orders port claims (older wins)
  Labels annotations;
  Labels match_labels;  // spec.selector.matchLabels: which pods are this spark's
  int replicas = 0;     // spec.replicas (omitted = 0 as the API serializes it; see docs)
  int ready_replicas = 0;
  std::optional<std::string> annotation(const std::string& key) const;
};

// A Deployment's controller makes one ReplicaSet per pod template; the ReplicaSet makes the pods.
struct ReplicaSet {
  std::string name;
  std::string uid;
  std::optional<OwnerReference> controller;  // the Deployment, for a Deployment's ReplicaSet
};

struct Pod {
  std::string name;
  std::string resource_version;
  std::string creation_timestamp;  // RFC 3339: about when someone scaled its Deployment up
  Labels labels;
  std::optional<OwnerReference> controller;  // its ReplicaSet, for a Deployment's pod
  std::string phase;  // Pending, Running, Succeeded, Failed, Unknown
  std::string pod_ip;
  bool terminating = false;  // metadata.deletionTimestamp is set
  bool ready = false;        // condition Ready=True
  // The first container that cannot start, e.g. "ImagePullBackOff: Back-off pulling image ...".
  std::string stuck_reason;
};

// A Service of the spark namespace (manage_services), kept whole: the reconciler compares the
// fields it owns and leaves the rest (clusterIP, nodePorts, status) to the API server.
struct Service {
  std::string name;
  Labels labels;
  nlohmann::json object;
};

Deployment parse_deployment(const nlohmann::json& object);
Service parse_service(const nlohmann::json& object);
Pod parse_pod(const nlohmann::json& object);
ReplicaSet parse_replica_set(const nlohmann::json& object);

// True if `d` owns `pod`: the pod's controller is a ReplicaSet (matched by name and UID in
// `replica_set`, the one the pod names) whose controller is the Deployment `d` (by UID). A pod
// that only carries the Deployment's labels is not its pod. `replica_set` is looked up by the
// pod's controller name; nullopt (not known) means not owned.
bool owned_by(const Pod& pod, const std::optional<ReplicaSet>& replica_set, const Deployment& d);

// True if every key=value of `selector` is in `labels` (an empty selector matches nothing, the
// safe reading for a Deployment without matchLabels).
bool selector_matches(const Labels& selector, const Labels& labels);

// Reasons a container waits that will not clear by themselves soon: a wake fails early on them.
bool is_stuck_waiting_reason(const std::string& reason);

// resourceVersions are opaque strings; etcd's are increasing integers. Returns true when `a` is
// known to be newer than `b` (false when either is not a number).
bool newer_resource_version(const std::string& a, const std::string& b);

}  // namespace spark::k8s
