#pragma once
// manage_services: keeps one tailnet Service per discovered spark, so `ssh <spark>` and
// `http://<spark>:3000` reach the gateway from the whole tailnet (deploy/tailscale/, docs/deploy.md).
// Each Service is a LoadBalancer of the Tailscale operator's class with hostname <spark>, selecting
// the gateway's own pods: `ssh` on services.port -> the spark's SSH gateway port, and one port per
// dev port (the spark's own port -> the gateway's port for it). With services.proxy_group it also
// carries `tailscale.com/proxy-group`, so the operator serves it from that ProxyGroup's shared
// proxies instead of a proxy pod of its own. Services of sparks that are gone are deleted; hand
// edits to the fields the gateway owns are put back. A Service in the wrong mode (standalone while a
// group is configured, another group, or a group while none is) cannot be moved in place: it is
// deleted and created again, one at a time. An existing `<spark>-ssh` is adopted only if it is the
// gateway's (its managed-by label) or the spark CLI's (spark_cli_service_mismatch); anyone else's
// is left alone and reported (a ServiceConflict Warning Event, logged once). Runs on its own thread.
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "k8s/cluster.hpp"

namespace spark::k8s {

// One port of a spark's tailnet Service besides SSH: a dev port.
struct TailnetPort {
  std::string name;      // the dev port's name ("web"), the Service port's name
  int port = 0;          // the spark's own port (3000): what the tailnet dials
  int gateway_port = 0;  // the gateway's port for it: the Service port's targetPort
  friend bool operator==(const TailnetPort&, const TailnetPort&) = default;
};

// What a served spark's tailnet Service carries.
struct ServedSpark {
  int ssh_port = 0;  // the spark's SSH gateway port
  std::vector<TailnetPort> ports;
  friend bool operator==(const ServedSpark&, const ServedSpark&) = default;
};

// The ports of a served spark's config: its listen port and each dev port's.
ServedSpark served_spark(const config::SparkConfig& spark);

// The annotation that puts a Service into a Tailscale ProxyGroup (an L3 ingress Service of the
// group's shared proxies), and the group a Service is in ("": standalone, a proxy of its own).
constexpr const char* kProxyGroupAnnotation = "tailscale.com/proxy-group";
std::string proxy_group_of(const json& service);

// The Service `spark` should have under `k` (the reconciler's desired_service, without a
// cluster): ssh first, then the dev ports in their order. A dev port that cannot be a port of the
// Service (its port is services.port, or another's port or name) is left out, with why in
// `left_out` when given.
json desired_tailnet_service(const config::KubernetesConfig& k, const std::string& spark,
                             const ServedSpark& served, const std::string& deployment_uid,
                             std::vector<std::string>* left_out = nullptr);

class ServiceReconciler {
 public:
  explicit ServiceReconciler(Cluster& cluster);
  ~ServiceReconciler();

  void start();
  void stop();
  // The sparks served now, by name, with their ports (any thread). Until the first call nothing
  // is deleted: an empty set before discovery ran must not remove every Service.
  void set_sparks(std::map<std::string, ServedSpark> sparks);
  void services_changed();  // the managed Services changed (any thread)

  // The Service `spark` should have (exposed for tests and docs).
  json desired_service(const std::string& spark, const ServedSpark& served, const std::string& deployment_uid,
                       std::vector<std::string>* left_out = nullptr) const;
  std::string service_name(const std::string& spark) const;

 private:
  void run(std::stop_token stop);
  // One pass; false if some call failed (retried soon).
  bool reconcile();
  bool ensure(const std::string& spark, const ServedSpark& served, const std::map<std::string, Service>& managed,
              const std::map<std::string, Service>& all);
  // `current` holds the name the spark's Service needs and is not labelled as the gateway's:
  // takes it over if it is the spark CLI's, else reports the conflict. False if a call failed.
  bool take_over_or_report(const std::string& spark, const std::optional<Deployment>& deployment,
                           const json& current, const json& desired);
  // Writes `desired` over the Service `name` (merge patch; selector keys not desired are removed).
  void overwrite(const std::string& name, const json& current, const json& desired);
  // `current` (the spark's Service, the gateway's or the spark CLI's) is in another mode than
  // `desired` (standalone or which ProxyGroup): the Tailscale operator cannot move it, so it is
  // deleted and created again under the same name, one Service at a time. False if a call failed.
  bool replace(const std::string& spark, const std::optional<Deployment>& deployment, const json& current,
               const json& desired);
  void warn_once(const std::string& spark, const std::string& reason, const std::string& message);
  void forget_warnings(const std::string& spark);  // its Service is fine now: warn again next time

  Cluster& cluster_;
  std::set<std::string> warned_;
  // Services the API refused to change (422: e.g. another loadBalancerClass), by name, with the
  // resourceVersion refused: not patched again until someone changes them.
  std::map<std::string, std::string> refused_;
  // Services being replaced (deleted to change mode, not yet back in the desired mode), by name:
  // while one is, no other replacement starts, so the sparks lose their tailnet names one at a
  // time. Emptied as each comes back, or its spark goes.
  std::set<std::string> replacing_;
  bool deferred_ = false;  // this pass left a replacement for later

  std::mutex mu_;
  std::condition_variable_any wake_;  // set_sparks(), services_changed() or stop()
  std::map<std::string, ServedSpark> sparks_;
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
