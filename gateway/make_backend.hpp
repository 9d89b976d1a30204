#pragma once
#include <memory>

#include "config/config.hpp"
#include "gateway/backend/backend.hpp"

namespace spark::k8s {
class Cluster;
}

namespace spark::gateway {

// The backend a spark's config asks for. Children and commands run in the config's directory,
// so relative paths in them mean what they meant to whoever wrote the config.
// Kubernetes sparks use `cluster` (nullptr when there is no kubernetes section).
std::unique_ptr<Backend> make_backend(const config::SparkConfig& spark, const config::Config& cfg,
                                      k8s::Cluster* cluster);

}  // namespace spark::gateway
