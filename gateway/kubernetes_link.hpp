#pragma once
// The gateway's link to its cluster (the config's "kubernetes" section): the API client and the
// watches, the discovery of spark Deployments, their activity annotations, the tailnet Services
// and the reaper's Lease. Each part runs on threads of its own; what they find reaches the main
// loop through `on_discovered`.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "gateway/observability/metrics.hpp"
#include "k8s/activity_annotations.hpp"
#include "k8s/cluster.hpp"
#include "k8s/leader_election.hpp"
#include "k8s/service_reconciler.hpp"
#include "k8s/spark_discovery.hpp"

namespace spark::gateway {

class KubernetesLink {
 public:
  // Connects and starts watching (discovery calls `on_discovered` on its own thread with every
  // new set of sparks). Throws if the cluster cannot be reached or configured.
  KubernetesLink(const config::Config& cfg, Metrics& metrics,
                 std::function<void(k8s::DiscoveredSparks)> on_discovered);
  ~KubernetesLink();

  k8s::Cluster& cluster() { return *cluster_; }
  k8s::ActivityAnnotations& annotations() { return *annotations_; }
  // Both caches listed: before that, sparks may be missing.
  bool synced() const { return cluster_->synced(); }
  // This replica reaps the sparks the replicas share (always, without leader election).
  bool leads() const { return !elector_ || elector_->is_leader(); }
  // The discovered sparks served: their tailnet Services follow, SSH and dev ports (with
  // manage_services).
  void serve(const std::vector<config::SparkConfig>& sparks);
  // A discovered spark's annotated port cannot be served: said on its Deployment too (a
  // PortUnavailable Warning Event, for kubectl describe), where whoever set the port looks.
  // Blocking: an API call.
  void report_port_unavailable(const std::string& spark, int port, const std::string& why);
  // Hands the Lease to another replica now (blocking: an API call).
  void release_lease();
  // Stops discovery, the Services and the election (before the sparks go); the cluster's
  // watches stop with stop_cluster(), after every backend that reads them is gone.
  void stop_workers();
  void stop_cluster();

 private:
  static std::string default_identity();

  std::unique_ptr<k8s::Cluster> cluster_;
  std::unique_ptr<k8s::ActivityAnnotations> annotations_;
  std::unique_ptr<k8s::SparkDiscovery> discovery_;
  std::unique_ptr<k8s::ServiceReconciler> services_;  // only with manage_services
  std::unique_ptr<k8s::LeaderElector> elector_;       // only with leader_election
};

}  // namespace spark::gateway
