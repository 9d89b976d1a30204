// Kubernetes answers: watch lines, Deployment/Pod/Service objects, Status error bodies and
// request paths never crash the parsers, whatever the API server (or a proxy) sends.
#include <cstdint>
#include <string>
#include <string_view>

#include "k8s/api_client.hpp"
#include "k8s/rbac.hpp"
#include "k8s/resources.hpp"
#include "k8s/watch_event.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto event = spark::k8s::parse_watch_event(text);
    (void)event.resource_version();
    (void)spark::k8s::parse_deployment(event.object);
    (void)spark::k8s::parse_pod(event.object);
  } catch (const std::invalid_argument&) {
  }
  const auto json = nlohmann::json::parse(text, nullptr, false);
  if (!json.is_discarded()) {
    const auto d = spark::k8s::parse_deployment(json);
    (void)spark::k8s::selector_matches(d.match_labels, spark::k8s::parse_pod(json).labels);
    (void)spark::k8s::parse_service(json);
  }
  (void)spark::k8s::error_from_response(500, text, "fuzz");
  (void)spark::k8s::request_attributes("GET", text);
  (void)spark::k8s::newer_resource_version(std::string(text), "100");
  return 0;
}
