#include "gateway/kubernetes_link.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include "k8s/credentials.hpp"

namespace spark::gateway {

KubernetesLink::KubernetesLink(const config::Config& cfg, Metrics& metrics,
                               std::function<void(k8s::DiscoveredSparks)> on_discovered) {
  const auto& k = *cfg.kubernetes;
  auto endpoint = k8s::resolve_endpoint(k, cfg.state_dir / "kubernetes");
  spdlog::info("kubernetes: namespace {}, Deployments matching \"{}\", API server {}", k.namespace_name,
               k.selector, endpoint.describe());
  cluster_ = std::make_unique<k8s::Cluster>(k, std::move(endpoint));
  cluster_->api().set_observer([&metrics](std::string_view verb, int code, double seconds) {
    metrics.count_kubernetes_request(verb, code, seconds);
  });
  annotations_ = std::make_unique<k8s::ActivityAnnotations>(*cluster_);
  metrics.expose_persist_store("kubernetes");
  discovery_ = std::make_unique<k8s::SparkDiscovery>(*cluster_, cfg, std::move(on_discovered));
  if (k.manage_services) services_ = std::make_unique<k8s::ServiceReconciler>(*cluster_);
  cluster_->start([this] { discovery_->changed(); },
                  [this] {
                    if (services_) services_->services_changed();
                  });
  discovery_->start();
  if (services_) services_->start();
  if (k.leader_election.enabled) {
    auto election = k.leader_election;
    if (election.identity.empty()) election.identity = default_identity();
    metrics.set_leader(false);
    elector_ = std::make_unique<k8s::LeaderElector>(cluster_->api(), k.namespace_name, std::move(election),
                                                    [&metrics](bool leading) { metrics.set_leader(leading); });
    elector_->start();
  }
}

KubernetesLink::~KubernetesLink() {
  stop_workers();
  stop_cluster();
}

// The Lease holder name: the pod's name (downward API, deploy/), else the host name (which is
// the pod's name in a pod too).
std::string KubernetesLink::default_identity() {
  if (const char* pod = std::getenv("POD_NAME"); pod && *pod) return pod;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

void KubernetesLink::serve(const std::vector<config::SparkConfig>& sparks) {
  if (!services_) return;
  std::map<std::string, k8s::ServedSpark> served;
  for (const auto& s : sparks) served.emplace(s.name, k8s::served_spark(s));
  services_->set_sparks(std::move(served));
}

void KubernetesLink::report_port_unavailable(const std::string& spark, int port, const std::string& why) {
  if (const auto d = cluster_->deployment(spark))
    cluster_->record_event(*d, "Warning", "PortUnavailable",
                           cluster_->annotation("port") + " \"" + std::to_string(port) + "\": " + why +
                               "; not served");
}

void KubernetesLink::release_lease() {
  if (elector_) elector_->stop();
}

void KubernetesLink::stop_workers() {
  discovery_->stop();
  if (services_) services_->stop();
  if (elector_) elector_->stop();
}

void KubernetesLink::stop_cluster() { cluster_->stop(); }

}  // namespace spark::gateway
