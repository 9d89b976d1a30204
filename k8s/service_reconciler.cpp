#include "k8s/service_reconciler.hpp"

#include <spdlog/spdlog.h>

namespace spark::k8s {
namespace {

using namespace std::chrono_literals;

constexpr auto kSettle = 100ms;    // gather a burst of changes
constexpr auto kRetryAfter = 5s;   // after a failed call
constexpr auto kResyncEvery = 5min;  // a full pass now and then, like a controller's resync

// object[key] as a string, `fallback` when absent or not a string (foreign objects may be odd).
std::string str(const json& object, const char* key, const std::string& fallback = {}) {
  if (!object.is_object()) return fallback;
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// object[key] if it is an object, else an empty one.
json obj(const json& object, const char* key) {
  if (!object.is_object()) return json::object();
  const auto it = object.find(key);
  return it != object.end() && it->is_object() ? *it : json::object();
}

}  // namespace

bool json_contains(const json& actual, const json& desired) {
  if (desired.is_object()) {
    if (!actual.is_object()) return false;
    for (const auto& [key, value] : desired.items()) {
      const auto it = actual.find(key);
      if (it == actual.end() || !json_contains(*it, value)) return false;
    }
    return true;
  }
  if (desired.is_array()) {
    if (!actual.is_array() || actual.size() != desired.size()) return false;
    for (std::size_t i = 0; i < desired.size(); ++i)
      if (!json_contains(actual[i], desired[i])) return false;
    return true;
  }
  return actual == desired;
}

std::string spark_cli_service_mismatch(const json& service, const std::string& spark,
                                       const std::optional<Deployment>& deployment) {
  if (!service.is_object() || !service.contains("metadata") || !service["metadata"].is_object())
    return "it is not a Service object";
  const auto meta = obj(service, "metadata");
  const auto spec = obj(service, "spec");
  const auto labels = obj(meta, "labels");
  if (labels.contains(Cluster::kManagedBy) && labels[Cluster::kManagedBy] != Cluster::kManagerName)
    return "it is managed by " + labels[Cluster::kManagedBy].dump();
  if (const auto owners = meta.find("ownerReferences"); owners != meta.end() && owners->is_array())
    for (const auto& o : *owners)
      if (!deployment || deployment->uid.empty() || str(o, "uid") != deployment->uid)
        return "it is owned by " + str(o, "kind", "?") + " " + str(o, "name", "?");
  if (const auto type = str(spec, "type", "ClusterIP"); type != "LoadBalancer")
    return "it is a " + type + " Service, not a tailnet LoadBalancer";
  const auto selector = obj(spec, "selector");
  const bool cli_selector = selector == json{{"app", spark}};
  const bool deployment_selector = deployment && !deployment->match_labels.empty() &&
                                   selector == json(deployment->match_labels);
  if (!cli_selector && !deployment_selector)
    return "its selector " + selector.dump() + " does not pick the spark's pods";
  const auto annotations = obj(meta, "annotations");
  if (annotations.contains("tailscale.com/hostname") && annotations["tailscale.com/hostname"] != spark)
    return "its tailnet hostname is " + annotations["tailscale.com/hostname"].dump();
  return {};
}

ServiceReconciler::ServiceReconciler(Cluster& cluster) : cluster_(cluster) {}

ServiceReconciler::~ServiceReconciler() { stop(); }

void ServiceReconciler::start() { thread_ = std::jthread([this](std::stop_token stop) { run(stop); }); }

void ServiceReconciler::stop() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void ServiceReconciler::set_sparks(std::map<std::string, int> ports) {
  {
    std::lock_guard lock(mu_);
    if (have_sparks_ && ports == ports_) return;
    ports_ = std::move(ports);
    have_sparks_ = true;
    dirty_ = true;
  }
  wake_.notify_all();
}

void ServiceReconciler::services_changed() {
  {
    std::lock_guard lock(mu_);
    dirty_ = true;
  }
  wake_.notify_all();
}

std::string ServiceReconciler::service_name(const std::string& spark) const {
  return spark + cluster_.config().services.name_suffix;
}

json ServiceReconciler::desired_service(const std::string& spark, int port,
                                        const std::string& deployment_uid) const {
  const auto& k = cluster_.config();
  const auto& s = k.services;
  json annotations = {{"tailscale.com/hostname", spark}};
  if (!s.tailscale_tags.empty()) annotations["tailscale.com/tags"] = s.tailscale_tags;
  json metadata = {
      {"name", service_name(spark)},
      {"namespace", k.namespace_name},
      {"labels", {{Cluster::kManagedBy, Cluster::kManagerName}, {cluster_.annotation("spark"), spark}}},
      {"annotations", annotations},
  };
  // Owned by the spark's Deployment: the garbage collector removes the Service with it even
  // when no gateway runs. Not a controller reference (the gateway is not the Deployment's).
  if (!deployment_uid.empty())
    metadata["ownerReferences"] = json::array(
        {{{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"name", spark}, {"uid", deployment_uid}}});
  json spec = {
      {"type", "LoadBalancer"},
      {"selector", s.gateway_selector},
      {"ports", json::array({{{"name", "ssh"}, {"port", s.port}, {"targetPort", port}, {"protocol", "TCP"}}})},
  };
  if (!s.load_balancer_class.empty()) spec["loadBalancerClass"] = s.load_balancer_class;
  return {{"apiVersion", "v1"}, {"kind", "Service"}, {"metadata", metadata}, {"spec", spec}};
}

void ServiceReconciler::run(std::stop_token stop) {
  bool retry_soon = false;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      wake_.wait_for(lock, stop,
                     retry_soon ? std::chrono::duration_cast<std::chrono::milliseconds>(kRetryAfter)
                                : std::chrono::duration_cast<std::chrono::milliseconds>(kResyncEvery),
                     [this] { return dirty_; });
      wake_.wait_for(lock, stop, kSettle, [] { return false; });  // let a burst of changes settle
      if (stop.stop_requested()) return;
      dirty_ = false;
      if (!have_sparks_) continue;
    }
    if (!cluster_.synced()) {
      retry_soon = true;
      continue;
    }
    retry_soon = !reconcile();
  }
}

bool ServiceReconciler::reconcile() {
  std::map<std::string, int> ports;
  {
    std::lock_guard lock(mu_);
    ports = ports_;
  }
  std::map<std::string, Service> all, managed;
  for (auto& s : cluster_.services()) {
    if (Cluster::is_managed(s)) managed[s.name] = s;
    all[s.name] = std::move(s);
  }

  bool ok = true;
  std::set<std::string> wanted;
  for (const auto& [spark, port] : ports) {
    wanted.insert(service_name(spark));
    ok = ensure(spark, port, managed, all) && ok;
  }
  for (const auto& [name, service] : managed) {
    if (wanted.contains(name)) continue;
    try {
      cluster_.api().remove(cluster_.services_path() + "/" + name);
      spdlog::info("kubernetes: deleted Service {} (its spark is gone)", name);
    } catch (const ApiError& e) {
      if (e.is_not_found()) continue;
      spdlog::warn("kubernetes: cannot delete Service {}: {}", name, e.what());
      ok = false;
    }
  }
  return ok;
}

bool ServiceReconciler::ensure(const std::string& spark, int port, const std::map<std::string, Service>& managed,
                               const std::map<std::string, Service>& all) {
  const auto deployment = cluster_.deployment(spark);
  const auto desired = desired_service(spark, port, deployment ? deployment->uid : "");
  const auto name = service_name(spark);
  try {
    if (const auto it = managed.find(name); it != managed.end()) {
      if (json_contains(it->second.object, desired)) return true;
      overwrite(name, it->second.object, desired);
      spdlog::info("spark {}: Service {} put back (port {} -> gateway port {})", spark, name,
                   cluster_.config().services.port, port);
      return true;
    }
    // Someone else's Service holds the name (the watch has it): decide without a call.
    if (const auto it = all.find(name); it != all.end())
      return take_over_or_report(spark, deployment, it->second.object, desired);
    try {
      cluster_.api().post(cluster_.services_path(), desired);
      forget_warnings(spark);
      spdlog::info("spark {}: created Service {} (tailnet name {}, port {} -> gateway port {})", spark, name,
                   spark, cluster_.config().services.port, port);
      return true;
    } catch (const ApiError& e) {
      if (e.code() != 409) throw;
    }
    // Made meanwhile, before the watch told us.
    return take_over_or_report(spark, deployment, cluster_.api().get(cluster_.services_path() + "/" + name),
                               desired);
  } catch (const ApiError& e) {
    // 422 when an immutable field differs (e.g. another loadBalancerClass): needs a human.
    warn_once(spark, "ServiceNotManaged", "cannot manage Service " + name + ": " + e.what());
    return e.code() == 422;  // retrying cannot fix an invalid change; a later edit will wake us
  }
}

bool ServiceReconciler::take_over_or_report(const std::string& spark, const std::optional<Deployment>& deployment,
                                            const json& current, const json& desired) {
  const auto name = service_name(spark);
  const auto meta = obj(current, "metadata");
  const auto version = str(meta, "resourceVersion");
  const bool ours = str(obj(meta, "labels"), Cluster::kManagedBy) == Cluster::kManagerName;
  if (!ours) {
    if (const auto why = spark_cli_service_mismatch(current, spark, deployment); !why.empty()) {
      // Not ours to rewrite: it may be another team's way in to something else. Say so where
      // `kubectl describe deployment` shows it, once.
      warn_once(spark, "ServiceConflict",
                "Service " + name + " exists and is neither spark-gateway's nor the spark CLI's (" + why +
                    "); left alone, so " + spark + " has no tailnet Service: delete or rename it and the gateway "
                    "creates its own");
      return true;
    }
  }
  if (const auto it = refused_.find(name); it != refused_.end() && !version.empty() && it->second == version)
    return true;  // refused as it is (422); wait for someone to change it
  try {
    overwrite(name, current, desired);
  } catch (const ApiError& e) {
    if (e.code() == 422 && !version.empty()) refused_[name] = version;
    throw;
  }
  refused_.erase(name);
  forget_warnings(spark);
  // The spark CLI's pod-pointing Service: taken over, so the tailnet name moves to the gateway
  // (docs/deploy.md, "Migrating").
  spdlog::info("spark {}: took over Service {}: it now points at the gateway", spark, name);
  if (deployment && !ours)
    cluster_.record_event(*deployment, "Normal", "ServiceAdopted", "Service " + name + " now points at spark-gateway");
  return true;
}

void ServiceReconciler::overwrite(const std::string& name, const json& current, const json& desired) {
  json patch = desired;
  // Merge patch merges maps: remove selector keys the gateway does not want (a pod-pointing
  // selector would otherwise survive beside the gateway's).
  const auto spec = current.find("spec");
  if (spec != current.end() && spec->contains("selector") && spec->at("selector").is_object())
    for (const auto& [key, value] : spec->at("selector").items())
      if (!patch["spec"]["selector"].contains(key)) patch["spec"]["selector"][key] = nullptr;
  cluster_.api().merge_patch(cluster_.services_path() + "/" + name, patch);
}

void ServiceReconciler::forget_warnings(const std::string& spark) {
  std::erase_if(warned_, [&](const std::string& key) { return key.starts_with(spark + "\n"); });
}

void ServiceReconciler::warn_once(const std::string& spark, const std::string& reason,
                                  const std::string& message) {
  if (!warned_.insert(spark + "\n" + message).second) return;
  spdlog::warn("spark {}: {}", spark, message);
  if (const auto d = cluster_.deployment(spark)) cluster_.record_event(*d, "Warning", reason, message);
}

}  // namespace spark::k8s
