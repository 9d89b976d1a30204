#pragma once
// manage_services: keeps one tailnet Service per discovered spark, so `ssh <spark>` reaches the
// gateway from the whole tailnet (deploy/tailscale/, docs/deploy.md). Each Service is a
// LoadBalancer of the Tailscale operator's class with hostname <spark>, selecting the gateway's
// own pods, port 22 -> the spark's gateway port. Services of sparks that are gone are deleted;
// hand edits to the fields the gateway owns are put back. An existing `<spark>-ssh` is adopted only
// if it is the gateway's (its managed-by label) or the spark CLI's (spark_cli_service_mismatch);
// anyone else's is left alone and reported (a ServiceConflict Warning Event, logged once). Runs
// on its own thread.
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <stop_token>
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
  void run(std::stop_token stop);
  // One pass; false if some call failed (retried soon).
  bool reconcile();
  bool ensure(const std::string& spark, int port, const std::map<std::string, Service>& managed,
              const std::map<std::string, Service>& all);
  // `current` holds the name the spark's Service needs and is not labelled as the gateway's:
  // takes it over if it is the spark CLI's, else reports the conflict. False if a call failed.
  bool take_over_or_report(const std::string& spark, const std::optional<Deployment>& deployment,
                           const json& current, const json& desired);
  // Writes `desired` over the Service `name` (merge patch; selector keys not desired are removed).
  void overwrite(const std::string& name, const json& current, const json& desired);
  void warn_once(const std::string& spark, const std::string& reason, const std::string& message);
  void forget_warnings(const std::string& spark);  // its Service is fine now: warn again next time

  Cluster& cluster_;
  std::set<std::string> warned_;
  // Services the API refused to change (422: e.g. another loadBalancerClass), by name, with the
  // resourceVersion refused: not patched again until someone changes them.
  std::map<std::string, std::string> refused_;

  std::mutex mu_;
  std::condition_variable_any wake_;  // set_sparks(), services_changed() or stop()
  std::map<std::string, int> ports_;
  bool have_sparks_ = false;
  bool dirty_ = true;
  std::jthread thread_;
};

// True when every field of `desired` is in `actual` with the same value (objects: subset;
// arrays: same length, element-wise). Fields the API server adds do not count as drift.
bool json_contains(const json& actual, const json& desired);

// Why the existing Service `service` is not the spark CLI's Service for `spark`, or "" if it is.
// The CLI's Service points a tailnet name straight at the spark's pod: a LoadBalancer whose
// selector is `app: <spark>` or the spark Deployment's own matchLabels, with no tailnet hostname
// other than <spark>, no managed-by label of another manager, and no owner but the spark's
// Deployment. Anything else is someone else's and is not taken over (docs/deploy.md).
std::string spark_cli_service_mismatch(const json& service, const std::string& spark,
                                       const std::optional<Deployment>& deployment);

}  // namespace spark::k8s
