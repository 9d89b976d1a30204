#pragma once
// manage_services: keeps one tailnet Service per discovered spark, so `ssh <spark>` reaches the
// gateway from the whole tailnet (deploy/tailscale/, docs/deploy.md). Each Service is a
// LoadBalancer of the Tailscale operator's class with hostname <spark>, selecting the gateway's
// own pods, port 22 -> the spark's gateway port. Services of sparks that are gone are deleted;
// hand edits to the fields the gateway owns are put back. Runs on its own thread.
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "k8s/cluster.hpp"

namespace spark::k8s {

class ServiceReconciler {
 public:
  explicit ServiceReconciler(Cluster& cluster);
  ~ServiceReconciler();

  void start();
  void stop();
  // The sparks served now: name -> gateway port (any thread). Until the first call nothing is
  // deleted: an empty set before discovery ran must not remove every Service.
  void set_sparks(std::map<std::string, int> ports);
  void services_changed();  // the managed Services changed (any thread)

  // The Service `spark` should have (exposed for tests and docs).
  json desired_service(const std::string& spark, int port, const std::string& deployment_uid) const;
  std::string service_name(const std::string& spark) const;

 private:
  void run();
  // One pass; false if some call failed (retried soon).
  bool reconcile();
  bool ensure(const std::string& spark, int port, const std::map<std::string, Service>& existing);
  // Writes `desired` over the Service `name` (merge patch; selector keys not desired are removed).
  void overwrite(const std::string& name, const json& current, const json& desired);
  void warn_once(const std::string& spark, const std::string& reason, const std::string& message);

  Cluster& cluster_;
  std::set<std::string> warned_;

  std::mutex mu_;
  std::condition_variable wake_;
  std::map<std::string, int> ports_;
  bool have_sparks_ = false;
  bool dirty_ = true;
  bool stopping_ = false;
  std::thread thread_;
};

// True when every field of `desired` is in `actual` with the same value (objects: subset;
// arrays: same length, element-wise). Fields the API server adds do not count as drift.
bool json_contains(const json& actual, const json& desired);

}  // namespace spark::k8s
