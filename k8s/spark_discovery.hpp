#pragma once
// Turns the spark Deployments the cluster cache holds into spark configs the gateway serves:
// each gets a listen port (its `port` annotation when that is in port_range, else a free one from
// port_range written back as that annotation so it stays stable), the same for each dev port
// (`ports` annotation and kubernetes.ports; recorded as `port.NAME`), its idle timeout and its
// target port. Runs on its own thread, woken by cache changes; hands each new set to `publish`.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "activity/activity_tracker.hpp"
#include "config/config.hpp"
#include "k8s/cluster.hpp"

namespace spark::k8s {

// What one pass found: the sparks to serve, and the activity their Deployments record.
struct DiscoveredSparks {
  std::vector<config::SparkConfig> sparks;
  activity::ActivitySnapshot activity;
};

class SparkDiscovery {
 public:
  using Publish = std::function<void(DiscoveredSparks)>;

  // `defaults` gives idle/wake timeouts to sparks whose annotations do not set them.
  SparkDiscovery(Cluster& cluster, const config::Config& defaults, Publish publish);
  ~SparkDiscovery();

  void start();
  void stop();
  void changed();  // the cache changed: recompute soon (cheap; any thread)

  // One pass, synchronously (also used by tests).
  DiscoveredSparks compute();

 private:
  void run(std::stop_token stop);
  // The steps of compute(). One Deployment's ports: its SSH port and each dev port's gateway
  // port, as recorded in its annotations or still to be given.
  struct PortPlan {
    const Deployment* deployment;
    std::optional<int> ssh;
    std::vector<config::NamedPort> dev;
    std::map<std::string, int> gateway_ports;  // dev port name -> gateway port
    std::vector<std::string> stale;            // port.NAME annotations of dev ports removed since
  };
  // kubernetes.ports and its `ports` annotation (which wins for a name both give), but SSH's.
  std::vector<config::NamedPort> dev_ports_of(const Deployment& d);
  std::vector<config::NamedPort> wanted_dev_ports(const Deployment& d);
  // The port its annotation `key` ("port", "port.web") records, if that is one of port_range
  // (else nullopt, with a warning if it has the annotation at all).
  std::optional<int> annotated_port(const Deployment& d, const std::string& key);
  // Gives the plan's missing ports the lowest free ones and records them on its Deployment
  // (removing stale ones); false if it cannot be served this pass (no SSH port).
  bool assign_missing_ports(PortPlan& plan, std::map<int, std::string>& port_owner, int& next);
  // Writes `ports` (annotation key -> port; nullopt removes it); false if it failed (logged).
  bool claim_ports(const Deployment& d, const std::map<std::string, std::optional<int>>& ports);
  void serve(const PortPlan& plan, DiscoveredSparks& found);
  // Its annotation's values, or the defaults (with a warning for one that cannot be used).
  config::MaybeNever idle_timeout_of(const Deployment& d);
  std::uint16_t target_port_of(const Deployment& d);
  // A problem this pass found: a Warning Event every pass (one Event whose count grows: the
  // cluster aggregates them), a log line only when it is new (not seen by the previous pass).
  void warn(const Deployment& d, const std::string& reason, const std::string& message);

  Cluster& cluster_;
  config::MaybeNever default_idle_timeout_;
  config::Duration default_wake_timeout_;
  std::chrono::milliseconds reaper_interval_;  // the shortest idle timeout that can be kept
  config::TcpKeepalive default_keepalive_;
  config::ClientRules default_clients_;  // wake_on, wake_grace, proxy_protocol from `defaults`
  config::Duration default_port_grace_;
  Publish publish_;
  // The port annotations this replica wrote that the watched copy may not show yet, by
  // Deployment: the resourceVersion the write produced and what was written. While the cache
  // shows an older version, a pass reads the Deployment as written (a lagging watch would
  // otherwise show a spark just given its port without one: it would be given one again, with
  // a precondition bound to fail, and be dropped for the pass).
  struct RecordedPorts {
    std::string produced;
    std::map<std::string, std::optional<int>> ports;  // annotation key -> port (nullopt: removed)
  };
  std::map<std::string, RecordedPorts> recorded_;
  void apply_recorded_ports(std::vector<Deployment>& deployments);
  std::set<std::string> warned_;     // the problems the previous pass found (logged)
  std::set<std::string> this_pass_;  // those this pass has found so far

  std::mutex mu_;
  std::condition_variable_any wake_;  // changed() or stop()
  bool dirty_ = true;
  std::jthread thread_;
};

}  // namespace spark::k8s
