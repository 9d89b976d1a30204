#pragma once
// The parts of Deployments and Pods the gateway reads, parsed from API payloads. Missing fields
// take their API defaults: the API omits zero values (`spec.replicas` at 0, `readyReplicas`).
#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace spark::k8s {

using Labels = std::map<std::string, std::string>;

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

struct Pod {
  std::string name;
  std::string resource_version;
  std::string creation_timestamp;  // RFC 3339: about when someone scaled its Deployment up
  Labels labels;
  std::string phase;  // Pending, Running, Succeeded, Failed, Unknown
  std::string pod_ip;
  bool terminating = false;  // metadata.deletionTimestamp is set
  bool ready = false;        // condition Ready=True
  // The first container that cannot start, e.g. "ImagePullBackOff: Back-off pulling image ...".
  std::string stuck_reason;
};

// A Service the gateway manages (manage_services), kept whole: the reconciler compares the fields
// it owns and leaves the rest (clusterIP, nodePorts, status) to the API server.
struct Service {
  std::string name;
  nlohmann::json object;
};

Deployment parse_deployment(const nlohmann::json& object);
Service parse_service(const nlohmann::json& object);
Pod parse_pod(const nlohmann::json& object);

// True if every key=value of `selector` is in `labels` (an empty selector matches nothing, the
// safe reading for a Deployment without matchLabels).
bool selector_matches(const Labels& selector, const Labels& labels);

// Reasons a container waits that will not clear by themselves soon: a wake fails early on them.
bool is_stuck_waiting_reason(const std::string& reason);

// resourceVersions are opaque strings; etcd's are increasing integers. Returns true when `a` is
// known to be newer than `b` (false when either is not a number).
bool newer_resource_version(const std::string& a, const std::string& b);

}  // namespace spark::k8s
