#pragma once
// The gateway's configuration: schema, loading and validation.
// The key names are a contract with operators; see docs/configuration.md.
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "config/address.hpp"
#include "config/cidr.hpp"
#include "config/duration.hpp"
#include "config/port_list.hpp"

namespace spark::config {

// `process` backend: the gateway runs `command` as its own child on wake and stops it on sleep.
struct ProcessBackendConfig {
  std::vector<std::string> command;               // argv, no shell
  Address target;                                 // where the child's sshd listens
  Duration stop_grace{std::chrono::seconds(10)};  // SIGTERM, then SIGKILL after this
  friend bool operator==(const ProcessBackendConfig&, const ProcessBackendConfig&) = default;
};

// `exec` backend: user commands start and stop a spark that lives elsewhere (systemd, docker...).
struct ExecBackendConfig {
  std::vector<std::string> start;  // argv, no shell; non-zero exit = failed wake
  std::vector<std::string> stop;   // argv, no shell; non-zero exit = failed sleep
  Address target;
  friend bool operator==(const ExecBackendConfig&, const ExecBackendConfig&) = default;
};

// `kubernetes` backend: a Deployment scaled 0<->1. Not written in `sparks`: the gateway discovers
// these sparks from the cluster (see KubernetesConfig).
struct KubernetesBackendConfig {
  std::string deployment;
  // The pod's sshd. The pod IP is known only once it runs, so the host is a placeholder ("pod").
  Address target;
  // The spark's wake_timeout: how long its claim to a place under limits.max_running holds
  // before the wake it was taken for must show (k8s/running_places.hpp).
  Duration wake_timeout{std::chrono::minutes(5)};
  friend bool operator==(const KubernetesBackendConfig&, const KubernetesBackendConfig&) = default;
};

using BackendConfig = std::variant<ProcessBackendConfig, ExecBackendConfig, KubernetesBackendConfig>;

// TCP keepalive on both sockets of every relayed connection (docs/dead-peers.md). A laptop that
// vanished mid-session (lid closed, Wi-Fi gone) sends no FIN or RST: without probes its
// connection, and so its spark, would stay open forever. The kernel counts these in seconds.
struct TcpKeepalive {
  bool enabled = true;
  Duration idle{std::chrono::seconds(60)};      // silence before the first probe
  Duration interval{std::chrono::seconds(10)};  // between unanswered probes
  int count = 6;                                // unanswered probes that end the connection

  // The longest a dead peer goes unnoticed. Also the TCP_USER_TIMEOUT: data left unacknowledged
  // toward a dead peer (which stops keepalive probing) ends the connection in the same time, and
  // with it set the kernel ends a probed connection at this bound too.
  Duration bound() const { return idle + interval * count; }
  friend bool operator==(const TcpKeepalive&, const TcpKeepalive&) = default;
};

// When a connection wakes a sleeping spark (docs/configuration.md, "Who wakes a spark").
enum class WakeOn {
  data,     // once the client has sent its first bytes, or stayed silent for wake_grace
  connect,  // at the TCP connect, as soon as it is accepted
};
// A PROXY protocol header (v1 or v2) before the client's bytes, from a trusted proxy.
enum class ProxyProtocol { off, optional, required };

// How a spark's listener treats a new client before waking the spark for it.
struct ClientRules {
  WakeOn wake_on = WakeOn::data;
  // A client that sends nothing (one that waits for the server's banner first) wakes the spark
  // after this long; one that leaves before never wakes anything.
  Duration wake_grace{std::chrono::seconds(1)};
  ProxyProtocol proxy_protocol = ProxyProtocol::off;
  friend bool operator==(const ClientRules&, const ClientRules&) = default;
};

// A dev port of a spark beside SSH (docs/configuration.md, "Dev ports"): the gateway listens on
// `listen` and splices to the spark's own `port` on the host its SSH target is on.
struct SparkPort {
  std::string name;  // RFC 1123 label, not "ssh": "web", "api", "3000"
  Address listen;
  int port = 0;
  friend bool operator==(const SparkPort&, const SparkPort&) = default;
};

struct SparkConfig {
  std::string name;  // RFC 1123 label
  Address listen;
  // Effective values: the spark's own key if given, else `defaults`.
  MaybeNever idle_timeout;
  Duration wake_timeout{};
  BackendConfig backend;
  // Caps for this spark alone (the gateway-wide caps apply too); nullopt: the Config's
  // default_max_connections / default_max_waiting.
  std::optional<int> max_connections;  // open connections, waiting or spliced
  std::optional<int> max_waiting;      // connections waiting for a wake
  TcpKeepalive keepalive;              // effective: the spark's own, else `defaults`
  ClientRules clients;                 // effective: the spark's own keys, else `defaults`
  std::vector<SparkPort> ports;        // dev ports beside SSH
  // The spark's own tailnet name, when the gateway keeps a tailnet Service for it
  // (kubernetes.manage_services): SSH on `tailnet_ssh_port`, each dev port on its own number.
  std::string tailnet_name;
  int tailnet_ssh_port = 22;
  // A dev port of a spark asleep, waking or awake for less than this is waited for (its dev
  // server may still be starting); of an older spark, a port that refuses closes the connection.
  Duration port_grace{std::chrono::seconds(30)};  // effective: the spark's own, else `defaults`

  const Address& target() const;
  std::string backend_kind() const;  // "process", "exec" or "kubernetes"
  friend bool operator==(const SparkConfig&, const SparkConfig&) = default;
};

// The admin HTTP server (API, metrics, status page). Off unless configured.
struct AdminConfig {
  Address listen;
  std::optional<std::filesystem::path> token_file;  // absolute; required off loopback
  // Connections at once; beyond it the oldest one still waiting for its request is closed
  // (docs/admin-server.md), so a flood cannot keep the probes out.
  int max_connections = 64;
  // A request's header and body must arrive within this, counted from when the gateway starts
  // waiting for it: a client trickling bytes is cut, however often it sends one.
  Duration request_timeout{std::chrono::seconds(10)};
  friend bool operator==(const AdminConfig&, const AdminConfig&) = default;
};

// OpenSSH's MaxStartups for the jump host: from `start` unauthenticated connections on, a new
// one is refused with probability `rate`% rising linearly to 100% at `full` (docs/jump-host.md).
struct MaxStartups {
  int start = 10;
  int rate = 30;  // percent
  int full = 100;
  friend bool operator==(const MaxStartups&, const MaxStartups&) = default;
};

// OpenSSH's PerSourcePenalties: a source address whose connections fail to log in collects
// penalty time; once it holds more than `min`, its new connections are refused until the time
// runs out (at most `max` ahead).
struct SourcePenalties {
  bool enabled = true;
  Duration authfail{std::chrono::seconds(5)};         // a connection that failed to authenticate
  Duration noauth{std::chrono::seconds(1)};           // one that ended without trying
  Duration grace_exceeded{std::chrono::seconds(10)};  // one that outlived login_grace
  Duration min{std::chrono::seconds(15)};
  Duration max{std::chrono::minutes(10)};
  friend bool operator==(const SourcePenalties&, const SourcePenalties&) = default;
};

// The jump host (docs/jump-host.md): `ssh -J brave-dolphin@gw brave-dolphin`. Public keys only;
// a key opens the sparks of the global list plus those whose own list has it.
struct JumpConfig {
  Address listen;
  std::vector<std::filesystem::path> host_keys;                        // empty: one ed25519 key made in state_dir
  std::optional<std::filesystem::path> authorized_keys;                // keys allowed for every spark
  std::map<std::string, std::filesystem::path> spark_authorized_keys;  // per spark
  // Jump connections at once, logging in or logged in (a thread each only once logged in).
  int max_sessions = 256;
  Duration login_grace{std::chrono::seconds(30)};  // key exchange + authentication, wake excluded
  MaxStartups max_startups;                        // unauthenticated connections (all on one thread)
  SourcePenalties penalties;                       // "per_source_penalties"
  // A copy of `defaults.keepalive`, for the login's own connection (it names its spark only
  // after authentication), and for its upstream unless the gateway gives the spark's own.
  TcpKeepalive keepalive;
  // A PROXY header before the client's SSH bytes, believed only from `trusted_proxies` (a copy
  // of the top-level list).
  ProxyProtocol proxy_protocol = ProxyProtocol::off;
  std::vector<Cidr> trusted_proxies;
  friend bool operator==(const JumpConfig&, const JumpConfig&) = default;
};

// Sparks discovered from Deployments in one namespace. See docs/kubernetes.md.
// The per-spark Services the gateway keeps when kubernetes.manage_services is on: a Tailscale
// LoadBalancer named "<spark><name_suffix>" with tailnet hostname <spark>, selecting the gateway's
// own pods, port `port` -> the spark's gateway port.
struct ServicesConfig {
  std::map<std::string, std::string> gateway_selector{{"app.kubernetes.io/name", "spark-gateway"}};
  std::string name_suffix = "-ssh";  // the spark CLI's own Service name, taken over (docs/deploy.md)
  std::string load_balancer_class = "tailscale";
  std::string tailscale_tags;  // tailscale.com/tags, e.g. "tag:spark"; empty: the operator's default
  int port = 22;
  // A Tailscale ProxyGroup (type ingress) to serve every spark Service from its shared proxy
  // pods (`tailscale.com/proxy-group`) instead of one proxy pod per spark. Empty: standalone.
  std::string proxy_group;
  friend bool operator==(const ServicesConfig&, const ServicesConfig&) = default;
};

// One replica runs the idle reaper, elected with a coordination.k8s.io/v1 Lease (client-go's
// timings by default). lease_duration > renew_deadline > 1.2 x retry_period.
struct LeaderElectionConfig {
  bool enabled = false;
  std::string lease_name = "spark-gateway-reaper";
  // With limits.max_running: the Lease holding the replicas' claims to running places
  // (k8s/running_places.hpp), so that two replicas cannot both take the last one.
  std::string running_lease = "spark-gateway-running";
  std::string identity;  // empty: $POD_NAME, else the host name
  Duration lease_duration{std::chrono::seconds(15)};
  Duration renew_deadline{std::chrono::seconds(10)};
  Duration retry_period{std::chrono::seconds(2)};
  friend bool operator==(const LeaderElectionConfig&, const LeaderElectionConfig&) = default;
};

struct KubernetesConfig {
  std::string namespace_name = "spark";
  std::string selector = "app.kubernetes.io/part-of=spark";  // label selector for Deployments
  std::string listen_host = "0.0.0.0";
  int port_min = 22000;  // port_range: ports given to sparks without a port annotation
  int port_max = 22999;
  int target_port = 22;  // the pod's sshd, unless the spark's target-port annotation says otherwise
  // Dev ports every discovered spark has, beside those of its `ports` annotation (which wins
  // for a name both give). Each gets a port from port_range, recorded as `port.NAME`.
  std::vector<NamedPort> ports;
  std::string annotation_prefix = "spark-gateway/";
  // Where the API server is. None of api_server/kubeconfig: the in-cluster service account.
  std::optional<std::string> api_server;  // https://... or plain http://127.0.0.1:8001 (kubectl proxy)
  std::filesystem::path token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::filesystem::path ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  bool token_file_given = false;  // explicit in the config (else: only in-cluster uses it)
  bool ca_file_given = false;
  std::optional<std::filesystem::path> kubeconfig;
  Duration request_timeout{std::chrono::seconds(10)};
  // manage_services: a tailnet Service per spark pointing at the gateway (deploy/tailscale/).
  bool manage_services = false;
  ServicesConfig services;
  LeaderElectionConfig leader_election;
  friend bool operator==(const KubernetesConfig&, const KubernetesConfig&) = default;
};

struct Config {
  std::filesystem::path source;     // the file it was loaded from (absolute)
  std::filesystem::path base_dir;   // relative paths and child working dirs resolve here
  std::filesystem::path state_dir;  // absolute
  MaybeNever default_idle_timeout{std::chrono::hours(2)};
  Duration default_wake_timeout{std::chrono::minutes(5)};
  Duration default_port_grace{std::chrono::seconds(30)};
  Duration drain_timeout{std::chrono::seconds(30)};
  TcpKeepalive default_keepalive;
  ClientRules default_clients;
  // The peers whose PROXY protocol header is believed (proxy_protocol); from anyone else a
  // header refuses the connection.
  std::vector<Cidr> trusted_proxies;
  Duration reaper_interval{std::chrono::seconds(30)};
  Duration activity_flush_interval{std::chrono::seconds(30)};
  // Gateway-wide caps; a connection beyond them is refused (closed at once, logged, counted).
  int max_connections = 4096;
  int max_waiting = 1024;
  // Per-spark caps of every spark without its own (discovered sparks included):
  // defaults.max_connections / defaults.max_waiting, else a quarter of the gateway-wide cap (at
  // least 1), so one spark's connections cannot take every slot of the gateway.
  int default_max_connections = 1024;
  int default_max_waiting = 256;
  // At most this many sparks awake or waking at once (nullopt: no cap); a wake beyond it waits
  // in line (gateway/running_cap.hpp). Kubernetes sparks count across every replica.
  std::optional<int> max_running;
  // With max_running: a wake in line puts to sleep the spark idle longest, if idle this long
  // and without a session, instead of waiting for one to sleep.
  std::optional<Duration> evict_idle_after;
  // Threads that splice established connections (data_plane.hpp); nullopt: one per core (none
  // on a single core). 0: the main thread splices too. Read at start only.
  std::optional<int> data_threads;
  std::optional<AdminConfig> admin;
  std::optional<JumpConfig> jump;
  std::optional<KubernetesConfig> kubernetes;
  std::vector<SparkConfig> sparks;

  const SparkConfig* find_spark(std::string_view name) const;
};

// Every problem found in a config, each as "key.path: reason".
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Parses and validates a config from JSON text. `source` names the file (for messages and to
// resolve relative paths). Throws ConfigError listing every problem found.
Config parse_config(const std::string& json_text, const std::filesystem::path& source);

// Reads and parses a config file. Throws ConfigError (an unreadable file is a ConfigError too).
Config load_config(const std::filesystem::path& path);

}  // namespace spark::config
