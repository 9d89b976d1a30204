#include "k8s/resources.hpp"

#include <charconv>

namespace spark::k8s {
namespace {

using nlohmann::json;

Labels string_map(const json& object, const char* key) {
  Labels out;
  const auto it = object.find(key);
  if (it == object.end() || !it->is_object()) return out;
  for (const auto& [k, v] : it->items())
    if (v.is_string()) out[k] = v.get<std::string>();
  return out;
}

const json& member(const json& object, const char* key) {
  static const json empty = json::object();
  const auto it = object.find(key);
  return it != object.end() && it->is_object() ? *it : empty;
}

std::string text(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

int number(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_number_integer() ? it->get<int>() : 0;
}

}  // namespace

std::optional<std::string> Deployment::annotation(const std::string& key) const {
  const auto it = annotations.find(key);
  if (it == annotations.end()) return std::nullopt;
  return it->second;
}

std::optional<OwnerReference> controller_of(const json& metadata) {
  const auto it = metadata.find("ownerReferences");
  if (it == metadata.end() || !it->is_array()) return std::nullopt;
  for (const auto& ref : *it) {
    if (!ref.is_object()) continue;
    const auto controller = ref.find("controller");
    if (controller == ref.end() || !controller->is_boolean() || !controller->get<bool>()) continue;
    return OwnerReference{text(ref, "kind"), text(ref, "name"), text(ref, "uid")};
  }
  return std::nullopt;
}

Service parse_service(const json& object) {
  const auto& meta = member(object, "metadata");
  return Service{text(meta, "name"), string_map(meta, "labels"), object};
}

Deployment parse_deployment(const json& object) {
  const auto& meta = member(object, "metadata");
  const auto& spec = member(object, "spec");
  const auto& status = member(object, "status");
  Deployment d;
  d.name = text(meta, "name");
  d.uid = text(meta, "uid");
  d.resource_version = text(meta, "resourceVersion");
  d.creation_timestamp = text(meta, "creationTimestamp");
  d.annotations = string_map(meta, "annotations");
  d.match_labels = string_map(member(spec, "selector"), "matchLabels");
  d.replicas = number(spec, "replicas");
  d.ready_replicas = number(status, "readyReplicas");
  return d;
}

Pod parse_pod(const json& object) {
  const auto& meta = member(object, "metadata");
  const auto& status = member(object, "status");
  Pod p;
  p.name = text(meta, "name");
  p.resource_version = text(meta, "resourceVersion");
  p.creation_timestamp = text(meta, "creationTimestamp");
  p.labels = string_map(meta, "labels");
  p.controller = controller_of(meta);
  p.terminating = meta.contains("deletionTimestamp") && !meta.at("deletionTimestamp").is_null();
  p.phase = text(status, "phase");
  p.pod_ip = text(status, "podIP");
  if (const auto it = status.find("conditions"); it != status.end() && it->is_array()) {
    for (const auto& c : *it)
      if (c.is_object() && text(c, "type") == "Ready") p.ready = text(c, "status") == "True";
  }
  for (const char* list : {"initContainerStatuses", "containerStatuses"}) {
    const auto it = status.find(list);
    if (it == status.end() || !it->is_array()) continue;
    for (const auto& c : *it) {
      if (!c.is_object()) continue;
      const auto& waiting = member(member(c, "state"), "waiting");
      const auto reason = text(waiting, "reason");
      if (!is_stuck_waiting_reason(reason)) continue;
      p.stuck_reason = "container " + text(c, "name") + ": " + reason;
      if (const auto message = text(waiting, "message"); !message.empty()) p.stuck_reason += ": " + message;
      break;
    }
    if (!p.stuck_reason.empty()) break;
  }
  return p;
}

ReplicaSet parse_replica_set(const json& object) {
  const auto& meta = member(object, "metadata");
  return ReplicaSet{text(meta, "name"), text(meta, "uid"), controller_of(meta)};
}

bool owned_by(const Pod& pod, const std::optional<ReplicaSet>& replica_set, const Deployment& d) {
  if (!pod.controller || pod.controller->kind != "ReplicaSet" || pod.controller->uid.empty()) return false;
  if (!replica_set || replica_set->name != pod.controller->name || replica_set->uid != pod.controller->uid)
    return false;
  const auto& owner = replica_set->controller;
  return owner && owner->kind == "Deployment" && !d.uid.empty() && owner->uid == d.uid;
}

bool selector_matches(const Labels& selector, const Labels& labels) {
  if (selector.empty()) return false;
  for (const auto& [k, v] : selector) {
    const auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

bool is_stuck_waiting_reason(const std::string& reason) {
  // kubelet's waiting reasons (pkg/kubelet/images/types.go, kuberuntime): these need a person.
  return reason == "ImagePullBackOff" || reason == "ErrImagePull" || reason == "InvalidImageName" ||
         reason == "ErrImageNeverPull" || reason == "CrashLoopBackOff" ||
         reason == "CreateContainerConfigError" || reason == "CreateContainerError" ||
         reason == "RunContainerError";
}

bool newer_resource_version(const std::string& a, const std::string& b) {
  unsigned long long x = 0, y = 0;
  const auto pa = std::from_chars(a.data(), a.data() + a.size(), x);
  const auto pb = std::from_chars(b.data(), b.data() + b.size(), y);
  if (pa.ec != std::errc() || pb.ec != std::errc() || pa.ptr != a.data() + a.size() ||
      pb.ptr != b.data() + b.size())
    return false;
  return x > y;
}

}  // namespace spark::k8s
