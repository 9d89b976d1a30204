#include "k8s/service_reconciler.hpp"

#include <spdlog/spdlog.h>

namespace spark::k8s {
namespace {

using namespace std::chrono_literals;

constexpr auto kSettle = 100ms;      // gather a burst of changes
constexpr auto kRetryAfter = 5s;     // after a failed call
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

// "standalone" or "ProxyGroup NAME", for log lines and Events.
std::string mode_name(const std::string& group) { return group.empty() ? "standalone" : "ProxyGroup " + group; }

bool terminating(const json& service) { return !str(obj(service, "metadata"), "deletionTimestamp").empty(); }

}  // namespace

ServedSpark served_spark(const config::SparkConfig& spark) {
  ServedSpark served{spark.listen.port, {}};
  for (const auto& p : spark.ports) served.ports.push_back({p.name, p.port, p.listen.port});
  return served;
}

std::string proxy_group_of(const json& service) {
  return str(obj(obj(service, "metadata"), "annotations"), kProxyGroupAnnotation);
}

json desired_tailnet_service(const config::KubernetesConfig& k, const std::string& spark,
                             const ServedSpark& served, const std::string& deployment_uid,
                             std::vector<std::string>* left_out) {
  const auto& s = k.services;
  json annotations = {{"tailscale.com/hostname", spark}};
  if (!s.tailscale_tags.empty()) annotations["tailscale.com/tags"] = s.tailscale_tags;
  // An L3 ingress Service joins a ProxyGroup by this annotation alone; it stays a LoadBalancer
  // of class tailscale and keeps its tailscale.com/hostname (docs/deploy.md, "Two modes").
  if (!s.proxy_group.empty()) annotations[kProxyGroupAnnotation] = s.proxy_group;
  json metadata = {
      {"name", spark + s.name_suffix},
      {"namespace", k.namespace_name},
      {"labels", {{Cluster::kManagedBy, Cluster::kManagerName}, {k.annotation_prefix + "spark", spark}}},
      {"annotations", annotations},
  };
  // Owned by the spark's Deployment: the garbage collector removes the Service with it even
  // when no gateway runs. Not a controller reference (the gateway is not the Deployment's).
  if (!deployment_uid.empty())
    metadata["ownerReferences"] = json::array(
        {{{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"name", spark}, {"uid", deployment_uid}}});
  json ports = json::array(
      {{{"name", "ssh"}, {"port", s.port}, {"targetPort", served.ssh_port}, {"protocol", "TCP"}}});
  // The API refuses a Service whose ports repeat a port or a name (422): such a dev port is left
  // out rather than losing the whole Service. Discovery already keeps names and ports unique and
  // off the SSH target port, so this is only services.port (when it differs from target_port).
  std::set<int> taken_ports{s.port};
  std::set<std::string> taken_names{"ssh"};
  for (const auto& p : served.ports) {
    std::string why;
    if (taken_ports.contains(p.port))
      why = "port " + std::to_string(p.port) + " is already a port of Service " + spark + s.name_suffix +
            (p.port == s.port ? " (kubernetes.services.port, ssh)" : "");
    else if (taken_names.contains(p.name))
      why = "the name " + p.name + " is already a port of Service " + spark + s.name_suffix;
    if (!why.empty()) {
      if (left_out) left_out->push_back("dev port " + p.name + " (" + std::to_string(p.port) + "): " + why);
      continue;
    }
    taken_ports.insert(p.port);
    taken_names.insert(p.name);
    ports.push_back({{"name", p.name}, {"port", p.port}, {"targetPort", p.gateway_port}, {"protocol", "TCP"}});
  }
  json spec = {{"type", "LoadBalancer"}, {"selector", s.gateway_selector}, {"ports", ports}};
  if (!s.load_balancer_class.empty()) spec["loadBalancerClass"] = s.load_balancer_class;
  return {{"apiVersion", "v1"}, {"kind", "Service"}, {"metadata", metadata}, {"spec", spec}};
}

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

void ServiceReconciler::start() {
  thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
}

void ServiceReconciler::stop() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void ServiceReconciler::set_sparks(std::map<std::string, ServedSpark> sparks) {
  {
    std::lock_guard lock(mu_);
    if (have_sparks_ && sparks == sparks_) return;
    sparks_ = std::move(sparks);
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

json ServiceReconciler::desired_service(const std::string& spark, const ServedSpark& served,
                                        const std::string& deployment_uid,
                                        std::vector<std::string>* left_out) const {
  return desired_tailnet_service(cluster_.config(), spark, served, deployment_uid, left_out);
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
    // A replacement waiting for its turn is looked at again soon too, should a watch event be missed.
    retry_soon = !reconcile() || deferred_;
  }
}

bool ServiceReconciler::reconcile() {
  std::map<std::string, ServedSpark> sparks;
  {
    std::lock_guard lock(mu_);
    sparks = sparks_;
  }
  std::map<std::string, Service> all, managed;
  for (auto& s : cluster_.services()) {
    if (Cluster::is_managed(s)) managed[s.name] = s;
    all[s.name] = std::move(s);
  }

  bool ok = true;
  std::set<std::string> wanted;
  for (const auto& [spark, served] : sparks) wanted.insert(service_name(spark));
  // A replacement is over when its spark is gone or its Service is back in the desired mode.
  std::erase_if(replacing_, [&](const std::string& name) {
    const auto it = managed.find(name);
    return !wanted.contains(name) || (it != managed.end() && !terminating(it->second.object) &&
                                      proxy_group_of(it->second.object) == cluster_.config().services.proxy_group);
  });
  deferred_ = false;
  for (const auto& [spark, served] : sparks) ok = ensure(spark, served, managed, all) && ok;
  for (const auto& [name, service] : managed) {
    if (wanted.contains(name) || terminating(service.object)) continue;
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

bool ServiceReconciler::ensure(const std::string& spark, const ServedSpark& served,
                               const std::map<std::string, Service>& managed,
                               const std::map<std::string, Service>& all) {
  const auto deployment = cluster_.deployment(spark);
  std::vector<std::string> left_out;
  const auto desired = desired_service(spark, served, deployment ? deployment->uid : "", &left_out);
  for (const auto& why : left_out)
    warn_once(spark, "ServicePortLeftOut", "Service " + service_name(spark) + ": " + why);
  const auto name = service_name(spark);
  const auto& group = cluster_.config().services.proxy_group;
  const auto ports = [&] {
    std::string text = std::to_string(cluster_.config().services.port) + " -> gateway port " +
                       std::to_string(served.ssh_port);
    for (const auto& p : desired["spec"]["ports"])
      if (p["name"] != "ssh")
        text += ", " + p["name"].get<std::string>() + " " + std::to_string(p["port"].get<int>()) + " -> " +
                std::to_string(p["targetPort"].get<int>());
    return text;
  };
  try {
    if (const auto it = managed.find(name); it != managed.end()) {
      const auto& current = it->second.object;
      // Being deleted (the Tailscale operator's finalizer holds it until its proxy is gone):
      // created again once the watch sees it go.
      if (terminating(current)) return true;
      if (proxy_group_of(current) != group) return replace(spark, deployment, current, desired);
      replacing_.erase(name);
      // The owned fields only: a LIST's items carry no kind or apiVersion (a watch event's do),
      // and a restarted gateway must not take every Service it lists for a hand-edited one.
      if (json_contains(current, {{"metadata", desired["metadata"]}, {"spec", desired["spec"]}})) return true;
      overwrite(name, current, desired);
      spdlog::info("spark {}: Service {} put back (port {})", spark, name, ports());
      return true;
    }
    // Someone else's Service holds the name (the watch has it): decide without a call.
    if (const auto it = all.find(name); it != all.end())
      return terminating(it->second.object) || take_over_or_report(spark, deployment, it->second.object, desired);
    try {
      cluster_.api().post(cluster_.services_path(), desired);
      forget_warnings(spark);
      spdlog::info("spark {}: created Service {} (tailnet name {}, {}, port {})", spark, name, spark,
                   mode_name(group), ports());
      return true;
    } catch (const ApiError& e) {
      if (e.code() != 409) throw;
    }
    // Made meanwhile, before the watch told us (or still being deleted).
    const auto current = cluster_.api().get(cluster_.services_path() + "/" + name);
    if (terminating(current)) return true;
    return take_over_or_report(spark, deployment, current, desired);
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
      replacing_.erase(name);  // not ours to wait for
      warn_once(spark, "ServiceConflict",
                "Service " + name + " exists and is neither spark-gateway's nor the spark CLI's (" + why +
                    "); left alone, so " + spark +
                    " has no tailnet Service: delete or rename it and the gateway "
                    "creates its own");
      return true;
    }
  }
  if (proxy_group_of(current) != cluster_.config().services.proxy_group)
    return replace(spark, deployment, current, desired);  // the spark CLI's, in the wrong mode
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
    cluster_.record_event(*deployment, "Normal", "ServiceAdopted",
                          "Service " + name + " now points at spark-gateway");
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

bool ServiceReconciler::replace(const std::string& spark, const std::optional<Deployment>& deployment,
                                const json& current, const json& desired) {
  const auto name = service_name(spark);
  if (!replacing_.empty() && !replacing_.contains(name)) {
    deferred_ = true;  // one at a time: its turn comes when the one being replaced is back
    return true;
  }
  const auto path = cluster_.services_path() + "/" + name;
  const auto from = proxy_group_of(current);
  const auto& to = cluster_.config().services.proxy_group;
  // Decided on the watch's copy: read it afresh (another replica may have replaced it already)
  // and go on only if it is still the Service the decision was made on.
  json fresh;
  try {
    fresh = cluster_.api().get(path);
  } catch (const ApiError& e) {
    if (!e.is_not_found()) throw;
    replacing_.insert(name);  // gone meanwhile: created by the next pass, the others wait for it
    return true;
  }
  const auto uid = str(obj(fresh, "metadata"), "uid");
  if (terminating(fresh) || proxy_group_of(fresh) == to || uid != str(obj(current, "metadata"), "uid")) {
    replacing_.insert(name);  // someone else is at it: wait for it to come back
    return true;
  }
  const std::string why = to.empty() ? "to take it out of ProxyGroup " + from +
                                           " (kubernetes.services.proxy_group is unset)"
                          : from.empty() ? "to move it into ProxyGroup " + to
                                         : "to move it from ProxyGroup " + from + " into ProxyGroup " + to;
  spdlog::info(
      "spark {}: replacing Service {} {}: the Tailscale operator cannot change a Service's mode in place, so "
      "it is deleted and created again under the same name ({} is unreachable on the tailnet meanwhile)",
      spark, name, why, spark);
  try {
    cluster_.api().remove(path);
  } catch (const ApiError& e) {
    if (!e.is_not_found()) throw;
  }
  replacing_.insert(name);
  // Gone at once unless a finalizer holds it (the Tailscale operator puts one on every Service
  // it serves, and removes it once the old proxy is torn down): then the next pass after the
  // watch sees it go creates it.
  bool created = false;
  try {
    cluster_.api().post(cluster_.services_path(), desired);
    created = true;
    spdlog::info("spark {}: created Service {} again ({})", spark, name, mode_name(to));
  } catch (const ApiError& e) {
    if (e.code() != 409) throw;
    spdlog::info("spark {}: Service {} is still being deleted; created again once it is gone", spark, name);
  }
  if (deployment)
    cluster_.record_event(*deployment, "Normal", "ServiceReplaced",
                          "Replaced the tailnet Service " + name + " " + why +
                              ": deleted, and created again under the same name " +
                              (created ? "at once" : "once the old one is gone") +
                              " (the Tailscale operator cannot move a Service between a proxy of its own and "
                              "a ProxyGroup)");
  return true;
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
