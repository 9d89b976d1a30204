#include "gateway/make_backend.hpp"

#include "gateway/backend/exec_backend.hpp"
#include "gateway/backend/process_backend.hpp"
#include "k8s/cluster.hpp"
#include "k8s/kubernetes_backend.hpp"

namespace spark::gateway {

std::unique_ptr<Backend> make_backend(const config::SparkConfig& spark, const config::Config& cfg,
                                      k8s::Cluster* cluster) {
  if (const auto* p = std::get_if<config::ProcessBackendConfig>(&spark.backend))
    return std::make_unique<ProcessBackend>(spark.name, *p, cfg.base_dir);
  if (const auto* e = std::get_if<config::ExecBackendConfig>(&spark.backend))
    return std::make_unique<ExecBackend>(spark.name, *e, cfg.base_dir);
  const auto& k = std::get<config::KubernetesBackendConfig>(spark.backend);
  if (!cluster) throw std::logic_error("spark " + spark.name + ": a Kubernetes spark without a cluster");
  return std::make_unique<k8s::KubernetesBackend>(*cluster, k);
}

}  // namespace spark::gateway
