#include "k8s/cluster.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <random>

#include "activity/time_format.hpp"

namespace spark::k8s {

// A name -> object map one reflector fills; read from any thread.
template <typename Object, Object (*Parse)(const json&)>
class ObjectCache : public WatchHandler {
 public:
  void replace(const std::vector<json>& items) override {
    std::map<std::string, Object> fresh;
    for (const auto& item : items) {
      auto o = Parse(item);
      fresh[o.name] = std::move(o);
    }
    {
      std::lock_guard lock(mu_);
      objects_ = std::move(fresh);
    }
    changed();
  }
  void apply(std::string_view type, const json& object) override {
    auto o = Parse(object);
    {
      std::lock_guard lock(mu_);
      if (type == "DELETED")
        objects_.erase(o.name);
      else
        objects_[o.name] = std::move(o);
    }
    changed();
  }
  std::vector<Object> all() const {
    std::lock_guard lock(mu_);
    std::vector<Object> out;
    for (const auto& [name, o] : objects_) out.push_back(o);
    return out;
  }
  std::optional<Object> find(const std::string& name) const {
    std::lock_guard lock(mu_);
    const auto it = objects_.find(name);
    if (it == objects_.end()) return std::nullopt;
    return it->second;
  }
  std::function<void()> on_change;

 private:
  void changed() {
    if (on_change) on_change();
  }
  mutable std::mutex mu_;
  std::map<std::string, Object> objects_;
};

class Cluster::DeploymentCache : public ObjectCache<Deployment, parse_deployment> {};
class Cluster::PodCache : public ObjectCache<Pod, parse_pod> {};
class Cluster::ReplicaSetCache : public ObjectCache<ReplicaSet, parse_replica_set> {};
class Cluster::ServiceCache : public ObjectCache<Service, parse_service> {};

Cluster::Cluster(config::KubernetesConfig cfg, ApiEndpoint endpoint)
    : cfg_(std::move(cfg)),
      api_(std::move(endpoint), std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.request_timeout)),
      deployments_(std::make_unique<DeploymentCache>()),
      pods_(std::make_unique<PodCache>()),
      replica_sets_(std::make_unique<ReplicaSetCache>()),
      services_(std::make_unique<ServiceCache>()),
      events_(EventRecorder::Writer{
          [this](const json& event) { api_.post("/api/v1/namespaces/" + cfg_.namespace_name + "/events", event); },
          [this](const std::string& name, const json& patch) {
            api_.merge_patch("/api/v1/namespaces/" + cfg_.namespace_name + "/events/" + name, patch);
          }}) {
  api_.set_permissions(required_rules(cfg_));
  const std::string ns = "/namespaces/" + cfg_.namespace_name;
  deployment_reflector_ = std::make_unique<Reflector>(api_, "deployments", "/apis/apps/v1" + ns + "/deployments",
                                                      cfg_.selector, *deployments_);
  // One watch for the namespace's pods, matched to Deployments by their matchLabels here: one
  // stream instead of one per spark.
  pod_reflector_ = std::make_unique<Reflector>(api_, "pods", "/api/v1" + ns + "/pods", "", *pods_);
  // The ReplicaSets link pods to their Deployment (pod -> ReplicaSet -> Deployment, by UID). All
  // of the namespace's: a ReplicaSet carries its template's labels, not the Deployment's.
  replica_set_reflector_ = std::make_unique<Reflector>(api_, "replicasets", "/apis/apps/v1" + ns + "/replicasets",
                                                       "", *replica_sets_);
  // Every Service of the namespace, not only the gateway's: a `<spark>-ssh` made by someone else
  // must be seen (to be left alone and reported), and its deletion too (to make ours then).
  if (cfg_.manage_services)
    service_reflector_ = std::make_unique<Reflector>(api_, "services", services_path(), "", *services_);
  if (cfg_.leader_election.enabled) {
    const std::string leases = "/apis/coordination.k8s.io/v1" + ns + "/leases";
    const std::string lease = leases + "/" + cfg_.leader_election.running_lease;
    running_places_ = std::make_unique<RunningPlaces>(
        RunningPlaces::LeaseApi{[this, lease] { return api_.get(lease); },
                                [this, leases](const json& body) { return api_.post(leases, body); },
                                [this, lease](const json& body) { return api_.put(lease, body); }},
        cfg_.namespace_name, cfg_.leader_election.running_lease, annotation("running-claims"),
        [this] { return place_views(); });
  }
}

PlaceViews Cluster::place_views() {
  // While the watch reconnects after an outage it may have missed scale-ups whose claims have
  // expired meanwhile: count from a fresh list then.
  std::vector<Deployment> found;
  if (deployments_current()) {
    found = deployments_->all();
  } else {
    std::string path = "/apis/apps/v1/namespaces/" + cfg_.namespace_name + "/deployments";
    if (!cfg_.selector.empty()) path += "?labelSelector=" + url_encode(cfg_.selector);
    const auto list = api_.list(path);
    for (const auto& item : list.value("items", json::array())) found.push_back(parse_deployment(item));
  }
  PlaceViews out;
  for (const auto& d : found) {
    PlaceView view{d.replicas, std::nullopt};
    if (auto text = d.annotation(annotation("slept-at"))) view.slept_at = activity::parse_rfc3339(*text);
    out[d.name] = view;
  }
  return out;
}

bool Cluster::claim_running_place(const std::string& name, int max_running,
                                  std::chrono::milliseconds wake_timeout) {
  if (!running_places_) return true;
  // The scale-up may be applied up to a request_timeout after the wake gave up on it; give the
  // watches of the other replicas a moment more to show it.
  const auto hold = wake_timeout + std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.request_timeout) +
                    std::chrono::milliseconds(kClaimMargin);
  return running_places_->claim(name, max_running, hold);
}

Cluster::~Cluster() { stop(); }

void Cluster::start(std::function<void()> on_change, std::function<void()> on_services_change) {
  deployments_->on_change = std::move(on_change);
  services_->on_change = std::move(on_services_change);
  // Pod and ReplicaSet changes need no reaction: a wake polls the cache while it waits for its pod.
  deployment_reflector_->start();
  pod_reflector_->start();
  replica_set_reflector_->start();
  if (service_reflector_) service_reflector_->start();
}

void Cluster::stop() {
  api_.cancel_streams();
  deployment_reflector_->stop();
  pod_reflector_->stop();
  replica_set_reflector_->stop();
  if (service_reflector_) service_reflector_->stop();
}

bool Cluster::synced() const {
  return deployment_reflector_->synced() && pod_reflector_->synced() && replica_set_reflector_->synced() &&
         (!service_reflector_ || service_reflector_->synced());
}

bool Cluster::deployments_current() const { return deployment_reflector_->current(); }

std::optional<Deployment> Cluster::read_deployment(const std::string& name) {
  try {
    return parse_deployment(api_.get(deployment_path(name)));
  } catch (const ApiError& e) {
    if (e.is_not_found()) return std::nullopt;
    throw;
  }
}

json Cluster::patch_deployment(const std::string& name, const json& patch) {
  return api_.merge_patch(deployment_path(name), patch);
}

std::vector<Service> Cluster::services() const { return services_->all(); }

bool Cluster::is_managed(const Service& s) {
  const auto it = s.labels.find(kManagedBy);
  return it != s.labels.end() && it->second == kManagerName;
}

std::vector<Service> Cluster::managed_services() const {
  auto all = services_->all();
  std::erase_if(all, [](const Service& s) { return !is_managed(s); });
  return all;
}

std::string Cluster::services_path() const { return "/api/v1/namespaces/" + cfg_.namespace_name + "/services"; }

std::vector<Deployment> Cluster::deployments() const { return deployments_->all(); }

std::optional<Deployment> Cluster::deployment(const std::string& name) const { return deployments_->find(name); }

std::vector<Pod> Cluster::pods_of(const Deployment& d) const {
  std::vector<Pod> out;
  for (auto& p : pods_->all()) {
    if (!selector_matches(d.match_labels, p.labels) || !p.controller) continue;
    if (owned_by(p, replica_sets_->find(p.controller->name), d)) out.push_back(std::move(p));
  }
  std::sort(out.begin(), out.end(), [](const Pod& a, const Pod& b) {
    return newer_resource_version(a.resource_version, b.resource_version);
  });
  return out;
}

std::string Cluster::deployment_path(const std::string& name) const {
  return "/apis/apps/v1/namespaces/" + cfg_.namespace_name + "/deployments/" + name;
}

void Cluster::record_event(const Deployment& d, const std::string& type, const std::string& reason,
                           const std::string& message) {
  static const std::string instance = [] {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    return std::string(host);
  }();
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(rng()));
  const auto now = activity::format_rfc3339(std::chrono::system_clock::now());
  // core/v1 Event: firstTimestamp/lastTimestamp/count are what `kubectl describe` shows.
  const json event = {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"name", d.name + "." + suffix}, {"namespace", cfg_.namespace_name}}},
      {"involvedObject",
       {{"apiVersion", "apps/v1"},
        {"kind", "Deployment"},
        {"name", d.name},
        {"namespace", cfg_.namespace_name},
        {"uid", d.uid},
        {"resourceVersion", d.resource_version}}},
      {"reason", reason},
      {"message", message},
      {"type", type},
      {"count", 1},
      {"firstTimestamp", now},
      {"lastTimestamp", now},
      {"source", {{"component", "spark-gateway"}, {"host", instance}}},
      {"reportingComponent", "spark-gateway"},
      {"reportingInstance", instance},
  };
  events_.record(event, now);
}

}  // namespace spark::k8s
