#pragma once
// Where the API server is and how to log in, from the "kubernetes" config section: an explicit
// api_server, a kubeconfig (current context; token or client certificate), or the in-cluster
// service account (KUBERNETES_SERVICE_HOST/PORT with the mounted token and CA).
#include <filesystem>
#include <stdexcept>

#include "config/config.hpp"
#include "k8s/api_client.hpp"

namespace spark::k8s {

class CredentialsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `private_dir` receives certificates and keys embedded in a kubeconfig (written 0600), since
// the HTTP client reads them from files. Throws CredentialsError with what to fix.
ApiEndpoint resolve_endpoint(const config::KubernetesConfig& cfg,
                             const std::filesystem::path& private_dir);

}  // namespace spark::k8s
