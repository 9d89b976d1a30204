#include "k8s/spark_discovery.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <utility>

#include "config/port_list.hpp"
#include "config/spark_name.hpp"
#include "k8s/activity_annotations.hpp"

namespace spark::k8s {
namespace {

using namespace std::chrono_literals;

// Changes come in bursts (a list, a rollout): gather them before recomputing.
constexpr auto kSettle = 50ms;
// Recompute now and then even without changes, to retry port write-backs that failed.
constexpr auto kRetryEvery = 30s;

std::optional<int> parse_port(const std::string& text) {
  int port = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size() || port < 1 || port > 65535) return std::nullopt;
  return port;
}

}  // namespace

SparkDiscovery::SparkDiscovery(Cluster& cluster, const config::Config& defaults, Publish publish)
    : cluster_(cluster),
      default_idle_timeout_(defaults.default_idle_timeout),
      default_wake_timeout_(defaults.default_wake_timeout),
      reaper_interval_(std::chrono::duration_cast<std::chrono::milliseconds>(defaults.reaper_interval)),
      default_keepalive_(defaults.default_keepalive),
      default_clients_(defaults.default_clients),
      default_port_grace_(defaults.default_port_grace),
      publish_(std::move(publish)) {}

SparkDiscovery::~SparkDiscovery() { stop(); }

void SparkDiscovery::start() {
  thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
}

void SparkDiscovery::stop() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void SparkDiscovery::changed() {
  {
    std::lock_guard lock(mu_);
    dirty_ = true;
  }
  wake_.notify_all();
}

void SparkDiscovery::run(std::stop_token stop) {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      wake_.wait_for(lock, stop, kRetryEvery, [this] { return dirty_; });
      // Let a burst of changes settle.
      wake_.wait_for(lock, stop, kSettle, [] { return false; });
      if (stop.stop_requested()) return;
      dirty_ = false;
    }
    if (!cluster_.synced()) {
      // A partial list would close listeners of sparks not yet seen: look again shortly (the
      // other cache's list may end without a Deployment change to wake us).
      std::lock_guard lock(mu_);
      dirty_ = true;
      continue;
    }
    try {
      publish_(compute());
    } catch (const std::exception& e) {
      spdlog::error("kubernetes: discovering sparks: {}", e.what());
    }
  }
}

void SparkDiscovery::warn(const Deployment& d, const std::string& reason, const std::string& message) {
  const auto key = d.name + "\n" + reason + "\n" + message;
  this_pass_.insert(key);
  if (!warned_.contains(key)) spdlog::warn("spark {}: {}", d.name, message);
  warned_.insert(key);
  cluster_.record_event(d, "Warning", reason, message);
}

DiscoveredSparks SparkDiscovery::compute() {
  // A problem that went away and comes back is news again.
  struct PassEnd {
    SparkDiscovery& d;
    ~PassEnd() { d.warned_ = std::exchange(d.this_pass_, {}); }
  } pass_end{*this};
  auto deployments = cluster_.deployments();
  apply_recorded_ports(deployments);
  // Older claims win a port: sort by creation time, then name.
  std::sort(deployments.begin(), deployments.end(), [](const Deployment& a, const Deployment& b) {
    return std::tie(a.creation_timestamp, a.name) < std::tie(b.creation_timestamp, b.name);
  });

  // First every port already recorded (older Deployments first), then fresh ports for what is
  // missing, so a recorded port is never handed to another spark.
  std::map<int, std::string> port_owner;
  std::vector<PortPlan> plans;
  for (const auto& d : deployments) {
    if (!config::is_valid_spark_name(d.name)) {
      warn(d, "InvalidName", "\"" + d.name + "\" is not an RFC 1123 label; not served");
      continue;
    }
    PortPlan plan{&d, annotated_port(d, "port"), dev_ports_of(d), {}, {}};
    if (plan.ssh) {
      if (auto [owner, fresh] = port_owner.emplace(*plan.ssh, d.name); !fresh) {
        warn(d, "PortConflict",
             "port " + std::to_string(*plan.ssh) + " is already served for " + owner->second + "; not served");
        continue;
      }
    }
    for (const auto& dev : plan.dev) {
      const auto recorded = annotated_port(d, "port." + dev.name);
      if (recorded && port_owner.emplace(*recorded, d.name + " (" + dev.name + ")").second)
        plan.gateway_ports[dev.name] = *recorded;
    }
    // A dev port removed since: its recorded port stays reserved until the annotation is gone
    // (removed with the next write), so it never goes to another spark while it still names it.
    const auto dev_prefix = cluster_.annotation("port.");
    for (const auto& [key, value] : d.annotations) {
      if (!key.starts_with(dev_prefix)) continue;
      const auto name = key.substr(dev_prefix.size());
      if (std::any_of(plan.dev.begin(), plan.dev.end(), [&](const auto& dev) { return dev.name == name; }))
        continue;
      plan.stale.push_back(key);
      if (const auto port = parse_port(value)) port_owner.emplace(*port, d.name + " (" + name + ", removed)");
    }
    plans.push_back(std::move(plan));
  }
  DiscoveredSparks found;
  int next = cluster_.config().port_min;
  for (auto& plan : plans) {
    if (!assign_missing_ports(plan, port_owner, next)) continue;
    serve(plan, found);
  }
  return found;
}

void SparkDiscovery::apply_recorded_ports(std::vector<Deployment>& deployments) {
  std::map<std::string, RecordedPorts> still_lagging;
  for (auto& d : deployments) {
    const auto recorded = recorded_.find(d.name);
    if (recorded == recorded_.end() || !newer_resource_version(recorded->second.produced, d.resource_version))
      continue;
    d.resource_version = recorded->second.produced;  // what a further write is conditional on
    for (const auto& [key, port] : recorded->second.ports) {
      if (port) {
        d.annotations[key] = std::to_string(*port);
      } else {
        d.annotations.erase(key);
      }
    }
    still_lagging.insert(recorded_.extract(recorded));
  }
  recorded_ = std::move(still_lagging);  // the rest: the watch has shown a newer version (or it is gone)
}

std::vector<config::NamedPort> SparkDiscovery::wanted_dev_ports(const Deployment& d) {
  // kubernetes.ports for every spark; the annotation adds its own and wins for a name both give.
  std::vector<config::NamedPort> ports = cluster_.config().ports;
  const auto text = d.annotation(cluster_.annotation("ports"));
  if (!text) return ports;
  std::string why;
  const auto own = config::parse_port_list(*text, &why);
  if (!own) {
    warn(d, "InvalidAnnotation",
         cluster_.annotation("ports") + " " + why + " (expected \"web=3000,api=8080\" or \"3000,8080\"); " +
             "serving only kubernetes.ports");
    return ports;
  }
  for (const auto& port : *own) {
    std::erase_if(ports, [&](const config::NamedPort& p) { return p.name == port.name || p.port == port.port; });
    ports.push_back(port);
  }
  return ports;
}

std::vector<config::NamedPort> SparkDiscovery::dev_ports_of(const Deployment& d) {
  auto ports = wanted_dev_ports(d);
  // SSH is no dev port: its own target port (target_port_of warns about a bad annotation).
  const auto text = d.annotation(cluster_.annotation("target-port"));
  const int ssh = (text ? parse_port(*text) : std::nullopt).value_or(cluster_.config().target_port);
  if (std::erase_if(ports, [&](const config::NamedPort& p) { return p.port == ssh; }) > 0)
    warn(d, "InvalidAnnotation",
         "dev port " + std::to_string(ssh) + " is the spark's SSH port; not served as a dev port");
  return ports;
}

std::optional<int> SparkDiscovery::annotated_port(const Deployment& d, const std::string& key) {
  const auto& k = cluster_.config();
  const auto annotated = d.annotation(cluster_.annotation(key));
  if (!annotated) return std::nullopt;
  // Whoever can annotate a Deployment must not pick any port of the gateway's host (another
  // service's, a privileged one, the admin or jump port): only port_range is handed out. A
  // port outside it is replaced by one from the range, written back like a new spark's.
  const auto port = parse_port(*annotated);
  if (!port || *port < k.port_min || *port > k.port_max) {
    warn(d, "InvalidPort",
         cluster_.annotation(key) + " \"" + *annotated + "\" is " +
             (port ? "outside kubernetes.port_range " : "not a port of kubernetes.port_range ") +
             std::to_string(k.port_min) + "-" + std::to_string(k.port_max) +
             "; giving it a port from the range instead");
    return std::nullopt;
  }
  return port;
}

// The ports a plan still lacks: the lowest free ones of the range (from `next` on), claimed by
// writing them back in one conditional patch with the removal of stale ones (two gateway
// replicas racing for one port: the second gets a 409 and looks again when the watch brings the
// new version). False only when the spark cannot be served: no SSH port. A dev port that gets
// none this pass (no free port, or the write failed) is left out until a later pass.
bool SparkDiscovery::assign_missing_ports(PortPlan& plan, std::map<int, std::string>& port_owner, int& next) {
  const auto& k = cluster_.config();
  const Deployment& d = *plan.deployment;
  const auto range = std::to_string(k.port_min) + "-" + std::to_string(k.port_max);
  std::map<std::string, std::optional<int>> patch;  // annotation key -> port (nullopt: remove)
  const auto take = [&](const std::string& key, const std::string& whose) -> std::optional<int> {
    while (next <= k.port_max && port_owner.contains(next)) ++next;
    if (next > k.port_max) return std::nullopt;
    port_owner.emplace(next, whose);
    patch[cluster_.annotation(key)] = next;
    return next;
  };
  const bool ssh_fresh = !plan.ssh;
  if (ssh_fresh && !(plan.ssh = take("port", d.name))) {
    warn(d, "NoFreePort", "no free port left in " + range + "; not served");
    return false;
  }
  std::vector<std::string> fresh_dev;
  for (const auto& dev : plan.dev) {
    if (plan.gateway_ports.contains(dev.name)) continue;
    if (const auto port = take("port." + dev.name, d.name + " (" + dev.name + ")")) {
      plan.gateway_ports[dev.name] = *port;
      fresh_dev.push_back(dev.name);
    } else {
      warn(d, "NoFreePort", "no free port left in " + range + " for dev port " + dev.name + "; not served");
    }
  }
  for (const auto& key : plan.stale) patch[key] = std::nullopt;
  const bool written = patch.empty() || claim_ports(d, patch);
  if (!written) {
    if (ssh_fresh) return false;
    for (const auto& name : fresh_dev) plan.gateway_ports.erase(name);
  } else {
    for (const auto& [key, port] : patch)
      if (port) spdlog::info("spark {}: given port {} ({})", d.name, *port, key);
  }
  // Served: SSH and the dev ports that have a port.
  std::erase_if(plan.dev, [&](const auto& dev) { return !plan.gateway_ports.contains(dev.name); });
  return true;
}

bool SparkDiscovery::claim_ports(const Deployment& d, const std::map<std::string, std::optional<int>>& ports) {
  json annotations = json::object();
  for (const auto& [key, port] : ports) annotations[key] = port ? json(std::to_string(*port)) : json(nullptr);
  const json patch = {{"metadata", {{"resourceVersion", d.resource_version}, {"annotations", annotations}}}};
  json answer;
  try {
    answer = cluster_.api().merge_patch(cluster_.deployment_path(d.name), patch);
  } catch (const ApiError& e) {
    // A conflict means it changed (maybe another replica gave it a port): the watch brings
    // the new version and we look again.
    spdlog::warn("spark {}: cannot record its ports: {}", d.name, e.what());
    return false;
  }
  auto& recorded = recorded_[d.name];
  // Written on top of our own earlier write (the watch still lagging): keep what that one wrote.
  if (recorded.produced != d.resource_version) recorded.ports.clear();
  try {
    recorded.produced = parse_deployment(answer).resource_version;
  } catch (const std::exception&) {
    recorded.produced.clear();  // an answer without one: the next pass trusts the watch alone
  }
  for (const auto& [key, port] : ports) recorded.ports[key] = port;
  return true;
}

// The spark a Deployment is, served on its ports, and the activity its annotations record.
void SparkDiscovery::serve(const PortPlan& plan, DiscoveredSparks& found) {
  const Deployment& d = *plan.deployment;
  const auto& host = cluster_.config().listen_host;
  config::SparkConfig s;
  s.name = d.name;
  s.listen = config::Address{host, static_cast<std::uint16_t>(*plan.ssh)};
  s.idle_timeout = idle_timeout_of(d);
  s.keepalive = default_keepalive_;
  s.clients = default_clients_;
  s.wake_timeout = default_wake_timeout_;
  s.port_grace = default_port_grace_;
  if (cluster_.config().manage_services) {
    s.tailnet_name = d.name;  // the Service's tailscale.com/hostname
    s.tailnet_ssh_port = cluster_.config().services.port;
  }
  s.backend = config::KubernetesBackendConfig{d.name, config::Address{"pod", target_port_of(d)}, s.wake_timeout};
  for (const auto& dev : plan.dev) {
    s.ports.push_back(
        {dev.name, config::Address{host, static_cast<std::uint16_t>(plan.gateway_ports.at(dev.name))}, dev.port});
  }
  found.sparks.push_back(std::move(s));
  std::vector<std::string> unusable;
  found.activity[d.name] = read_activity(cluster_, d, &unusable);
  for (const auto& why : unusable) warn(d, "InvalidAnnotation", why);
}

config::MaybeNever SparkDiscovery::idle_timeout_of(const Deployment& d) {
  const auto text = d.annotation(cluster_.annotation("idle-timeout"));
  if (!text) return default_idle_timeout_;
  std::string why;
  auto t = config::parse_duration_or_never(*text, &why);
  if (t && !t->is_never() && *t->value < reaper_interval_) {
    // The reaper looks only every reaper.interval: a shorter idle timeout cannot be kept
    // (and other replicas could not keep its sessions' activity fresh in time).
    warn(d, "InvalidAnnotation",
         cluster_.annotation("idle-timeout") + " \"" + *text + "\" is shorter than reaper.interval " +
             config::format_duration(reaper_interval_) + "; using " + config::format_duration(reaper_interval_));
    return config::MaybeNever{reaper_interval_};
  }
  if (t) return *t;
  warn(d, "InvalidAnnotation",
       cluster_.annotation("idle-timeout") + " \"" + *text + "\": " + why + "; using the default");
  return default_idle_timeout_;
}

std::uint16_t SparkDiscovery::target_port_of(const Deployment& d) {
  const int fallback = cluster_.config().target_port;
  const auto text = d.annotation(cluster_.annotation("target-port"));
  if (!text) return static_cast<std::uint16_t>(fallback);
  if (auto p = parse_port(*text)) return static_cast<std::uint16_t>(*p);
  warn(d, "InvalidAnnotation",
       cluster_.annotation("target-port") + " \"" + *text + "\" is not a port; using " + std::to_string(fallback));
  return static_cast<std::uint16_t>(fallback);
}

}  // namespace spark::k8s
