#pragma once
// The one list of what the gateway may ask of the API server. Every request the ApiClient makes
// is checked against it (a request not listed here fails at once, so tests catch it), and
// `spark-gateway rbac` prints it as the Role the deployment needs: the code and deploy/ cannot
// drift apart.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace spark::k8s {

// What RBAC authorizes a request by (k8s.io/apiserver's RequestInfo): API group, resource
// (with "/subresource"), verb (get, list, watch, create, update, patch, delete).
struct RequestAttributes {
  std::string api_group;
  std::string resource;
  std::string verb;
};

// Derives the attributes of a namespaced resource request, as the API server's RequestInfoFactory
// does: GET of a collection is "list", with watch=1/true "watch"; GET of an object "get"; POST
// "create"; PUT "update"; PATCH "patch"; DELETE "delete". nullopt for paths outside that shape.
std::optional<RequestAttributes> request_attributes(std::string_view method, std::string_view path);

struct PolicyRule {
  std::string api_group;
  std::string resource;
  std::vector<std::string> verbs;
  std::string why;  // the calls that need it (docs, and a comment in the printed Role)
};

// The rules the gateway needs with this configuration (services only with manage_services).
std::vector<PolicyRule> required_rules(const config::KubernetesConfig& cfg);

bool permits(const std::vector<PolicyRule>& rules, const RequestAttributes& request);

// A Role manifest (YAML) granting exactly `rules` in `namespace_name`.
std::string role_yaml(const std::vector<PolicyRule>& rules, const std::string& namespace_name,
                      const std::string& role_name);

}  // namespace spark::k8s
