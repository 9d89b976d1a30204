#include "config/config.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config/spark_name.hpp"

namespace spark::config {
namespace {

using nlohmann::json;

// Walks a JSON document and collects every problem instead of stopping at the first, so an
// operator fixes a config in one round. Each reader notes the keys it consumed; whatever is left
// over in an object is an unknown key (typos must not pass silently).
class Reader {
 public:
  std::vector<std::string> problems;

  void problem(const std::string& path, const std::string& reason) { problems.push_back(path + ": " + reason); }

  // Returns the object at `path` or nullptr (after recording a problem if it has the wrong type).
  const json* object(const json& parent, const std::string& key, const std::string& path) {
    const json* v = member(parent, key);
    if (v && !v->is_object()) {
      problem(path, "expected an object");
      return nullptr;
    }
    return v;
  }

  std::optional<std::string> string(const json& parent, const std::string& key, const std::string& path,
                                    bool required) {
    const json* v = member(parent, key);
    if (!v) {
      if (required) problem(path, "is required");
      return std::nullopt;
    }
    if (!v->is_string()) {
      problem(path, "expected a string");
      return std::nullopt;
    }
    return v->get<std::string>();
  }

  std::optional<std::vector<std::string>> argv(const json& parent, const std::string& key,
                                               const std::string& path) {
    const json* v = member(parent, key);
    if (!v) {
      problem(path, "is required");
      return std::nullopt;
    }
    if (!v->is_array()) {
      problem(path, "expected an array of strings");
      return std::nullopt;
    }
    std::vector<std::string> out;
    for (const json& item : *v) {
      if (!item.is_string()) {
        problem(path, "expected an array of strings");
        return std::nullopt;
      }
      out.push_back(item.get<std::string>());
    }
    if (out.empty()) {
      problem(path, "must not be empty: give the program and its arguments");
      return std::nullopt;
    }
    if (out.front().empty()) {
      problem(path, "the program name must not be empty");
      return std::nullopt;
    }
    return out;
  }

  std::optional<bool> boolean(const json& parent, const std::string& key, const std::string& path) {
    const json* v = member(parent, key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) {
      problem(path, "expected true or false");
      return std::nullopt;
    }
    return v->get<bool>();
  }

  // A TCP port number.
  std::optional<int> port(const json& parent, const std::string& key, const std::string& path) {
    const json* v = member(parent, key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer() || v->get<long long>() < 1 || v->get<long long>() > 65535) {
      problem(path, "expected a port number from 1 to 65535");
      return std::nullopt;
    }
    return v->get<int>();
  }

  // A positive whole number.
  std::optional<int> count(const json& parent, const std::string& key, const std::string& path, int min = 1,
                           int max = 1'000'000) {
    const json* v = member(parent, key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer() || v->get<long long>() < min || v->get<long long>() > max) {
      problem(path, "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max));
      return std::nullopt;
    }
    return v->get<int>();
  }

  std::optional<Duration> duration(const json& parent, const std::string& key, const std::string& path) {
    auto text = string(parent, key, path, false);
    if (!text) return std::nullopt;
    std::string why;
    auto d = parse_duration(*text, &why);
    if (!d) problem(path, *text == "never" ? "\"never\" is only allowed for idle_timeout" : why);
    return d;
  }

  // wake_on, wake_grace, proxy_protocol in `parent` (a spark or `defaults`), over `inherited`.
  // A bad value is a problem (the config is refused) and keeps the inherited one.
  ClientRules client_rules(const json& parent, const std::string& path, ClientRules inherited) {
    if (auto text = string(parent, "wake_on", path + ".wake_on", false)) {
      if (*text == "data")
        inherited.wake_on = WakeOn::data;
      else if (*text == "connect")
        inherited.wake_on = WakeOn::connect;
      else
        problem(path + ".wake_on", "\"" + *text + "\" is not one of \"data\", \"connect\"");
    }
    if (parent.contains("wake_grace")) {
      auto grace = duration(parent, "wake_grace", path + ".wake_grace");
      if (grace && *grace > std::chrono::minutes(1))
        problem(path + ".wake_grace", "at most 1m (a silent client waits this long before its spark wakes)");
      else if (grace)
        inherited.wake_grace = *grace;
    }
    if (auto mode = proxy_protocol(parent, path + ".proxy_protocol")) inherited.proxy_protocol = *mode;
    return inherited;
  }

  // "proxy_protocol" in `parent` (a spark, `defaults` or `jump`), if given and valid.
  std::optional<ProxyProtocol> proxy_protocol(const json& parent, const std::string& path) {
    auto text = string(parent, "proxy_protocol", path, false);
    if (!text) return std::nullopt;
    if (*text == "off") return ProxyProtocol::off;
    if (*text == "optional") return ProxyProtocol::optional;
    if (*text == "required") return ProxyProtocol::required;
    problem(path, "\"" + *text + "\" is not one of \"off\", \"optional\", \"required\"");
    return std::nullopt;
  }

  std::optional<MaybeNever> idle_timeout(const json& parent, const std::string& key, const std::string& path) {
    auto text = string(parent, key, path, false);
    if (!text) return std::nullopt;
    std::string why;
    auto d = parse_duration_or_never(*text, &why);
    if (!d) problem(path, why);
    return d;
  }

  // "off", "on", or {"idle": "60s", "interval": "10s", "count": 6}. Keys left out keep the
  // values of `inherited` (a spark's from `defaults`, `defaults`' from the built-in ones); an
  // object or "on" turns keepalive on even where `inherited` has it off.
  std::optional<TcpKeepalive> keepalive(const json& parent, const std::string& key, const std::string& path,
                                        const TcpKeepalive& inherited) {
    const json* v = member(parent, key);
    if (!v) return std::nullopt;
    TcpKeepalive out = inherited;
    if (v->is_string() && (*v == "off" || *v == "on")) {
      out.enabled = *v == "on";
      return out;
    }
    if (!v->is_object()) {
      problem(path, R"(expected "off", "on" or an object like {"idle": "60s", "interval": "10s", "count": 6})");
      return std::nullopt;
    }
    reject_unknown_keys(*v, path, {"idle", "interval", "count"});
    const std::size_t problems_before = problems.size();
    out.enabled = true;
    if (auto d = keepalive_seconds(*v, "idle", path + ".idle")) out.idle = *d;
    if (auto d = keepalive_seconds(*v, "interval", path + ".interval")) out.interval = *d;
    // TCP_KEEPCNT's own limit.
    if (auto n = count(*v, "count", path + ".count", 1, 127)) out.count = *n;
    if (problems.size() != problems_before) return std::nullopt;
    // TCP_USER_TIMEOUT is an int of milliseconds.
    if (out.bound() > Duration(std::numeric_limits<int>::max())) {
      problem(path, "idle + interval x count is " + format_duration(out.bound()) +
                        ": it must stay under 24 days (the kernel's limit for TCP_USER_TIMEOUT)");
      return std::nullopt;
    }
    return out;
  }

  std::optional<Address> address(const json& parent, const std::string& key, const std::string& path) {
    auto text = string(parent, key, path, true);
    if (!text) return std::nullopt;
    std::string why;
    auto a = parse_address(*text, &why);
    if (!a) problem(path, why);
    return a;
  }

  // Reports keys of `object` that no reader asked for.
  void reject_unknown_keys(const json& object, const std::string& prefix,
                           std::initializer_list<std::string_view> known) {
    for (const auto& [key, value] : object.items()) {
      bool ok = false;
      for (auto k : known) ok = ok || key == k;
      if (!ok) problem(prefix.empty() ? key : prefix + "." + key, "unknown key");
    }
  }

 private:
  // A keepalive time: whole seconds (the kernel counts them so) up to TCP_KEEPIDLE's and
  // TCP_KEEPINTVL's limit of 32767 s.
  std::optional<Duration> keepalive_seconds(const json& parent, const std::string& key, const std::string& path) {
    auto d = duration(parent, key, path);
    if (!d) return std::nullopt;
    // Built with append: GCC 12 warns falsely (-Wrestrict, bug 105329) on "\"" + string.
    std::string quoted = "\"";
    quoted.append(format_duration(*d)).append("\"");
    if (d->count() % 1000 != 0) {
      problem(path, quoted + " is not whole seconds (the kernel counts keepalive in seconds)");
      return std::nullopt;
    }
    if (*d > std::chrono::seconds(32767)) {
      problem(path, quoted + " is longer than the kernel allows (32767s, about 9h)");
      return std::nullopt;
    }
    return d;
  }

  static const json* member(const json& parent, const std::string& key) {
    auto it = parent.find(key);
    return it == parent.end() ? nullptr : &*it;
  }
};

bool is_loopback(const Address& a) { return a.host.rfind("127.", 0) == 0 || a.host == "::1"; }

std::optional<BackendConfig> read_backend(Reader& r, const json& spark, const std::string& path) {
  const bool has_process = spark.contains("process");
  const bool has_exec = spark.contains("exec");
  if (has_process == has_exec) {
    r.problem(path, std::string("exactly one backend (\"process\" or \"exec\") is required, found ") +
                        (has_process ? "both" : "none"));
    return std::nullopt;
  }
  if (has_process) {
    const std::string p = path + ".process";
    const json* obj = r.object(spark, "process", p);
    if (!obj) return std::nullopt;
    r.reject_unknown_keys(*obj, p, {"command", "target", "stop_grace"});
    ProcessBackendConfig b;
    auto command = r.argv(*obj, "command", p + ".command");
    auto target = r.address(*obj, "target", p + ".target");
    if (auto grace = r.duration(*obj, "stop_grace", p + ".stop_grace")) b.stop_grace = *grace;
    if (!command || !target) return std::nullopt;
    b.command = std::move(*command);
    b.target = std::move(*target);
    return b;
  }
  const std::string p = path + ".exec";
  const json* obj = r.object(spark, "exec", p);
  if (!obj) return std::nullopt;
  r.reject_unknown_keys(*obj, p, {"start", "stop", "target"});
  auto start = r.argv(*obj, "start", p + ".start");
  auto stop = r.argv(*obj, "stop", p + ".stop");
  auto target = r.address(*obj, "target", p + ".target");
  if (!start || !stop || !target) return std::nullopt;
  return ExecBackendConfig{std::move(*start), std::move(*stop), std::move(*target)};
}

// "22000-22999" -> {22000, 22999}.
bool parse_port_range(const std::string& text, int& lo, int& hi) {
  const auto dash = text.find('-');
  if (dash == std::string::npos) return false;
  try {
    std::size_t used = 0;
    lo = std::stoi(text.substr(0, dash), &used);
    if (used != dash) return false;
    hi = std::stoi(text.substr(dash + 1), &used);
    if (used != text.size() - dash - 1) return false;
  } catch (const std::exception&) {
    return false;
  }
  return lo >= 1 && hi <= 65535 && lo <= hi;
}

std::filesystem::path expand_home(const std::string& path) {
  if (path.rfind("~/", 0) == 0) {
    if (const char* home = std::getenv("HOME")) return std::filesystem::path(home) / path.substr(2);
  }
  return path;
}

ServicesConfig read_services(Reader& r, const json& s, const std::string& p) {
  r.reject_unknown_keys(s, p,
                        {"gateway_selector", "name_suffix", "load_balancer_class", "tailscale_tags", "port",
                         "proxy_group"});
  ServicesConfig out;
  if (const json* sel = r.object(s, "gateway_selector", p + ".gateway_selector")) {
    out.gateway_selector.clear();
    for (const auto& [key, value] : sel->items()) {
      if (!value.is_string() || key.empty())
        r.problem(p + ".gateway_selector." + key, "expected a label value (a string)");
      else
        out.gateway_selector[key] = value.get<std::string>();
    }
    if (out.gateway_selector.empty())
      r.problem(p + ".gateway_selector", "must name at least one label of the gateway's pods");
  }
  if (auto suffix = r.string(s, "name_suffix", p + ".name_suffix", false)) {
    // The Service name is "<spark><suffix>": it must stay an RFC 1035 label.
    if (!suffix->empty() && !is_valid_spark_name("a" + *suffix))
      r.problem(p + ".name_suffix", "\"" + *suffix + "\" would not make a valid Service name");
    out.name_suffix = *suffix;
  }
  if (auto cls = r.string(s, "load_balancer_class", p + ".load_balancer_class", false))
    out.load_balancer_class = *cls;
  if (auto tags = r.string(s, "tailscale_tags", p + ".tailscale_tags", false)) out.tailscale_tags = *tags;
  if (auto port = r.port(s, "port", p + ".port")) out.port = *port;
  if (auto group = r.string(s, "proxy_group", p + ".proxy_group", false)) {
    // A ProxyGroup is a cluster-scoped object: its name is a DNS subdomain; an RFC 1123 label
    // covers every name the operator's examples use.
    if (!group->empty() && !is_valid_spark_name(*group))
      r.problem(p + ".proxy_group", "\"" + *group + "\" is not a ProxyGroup name (an RFC 1123 label)");
    out.proxy_group = *group;
  }
  return out;
}

// "10:30:100" (start:rate:full) or "10" (start and full: every connection beyond is refused), as
// OpenSSH's MaxStartups.
std::optional<MaxStartups> read_max_startups(Reader& r, const json& j, const std::string& path) {
  auto text = r.string(j, "max_startups", path, false);
  if (!text) return std::nullopt;
  const auto bad = [&](const std::string& why) {
    r.problem(path, "\"" + *text + "\": " + why);
    return std::nullopt;
  };
  std::vector<int> parts;
  for (std::size_t at = 0; at <= text->size();) {
    const auto colon = std::min(text->find(':', at), text->size());
    const auto part = text->substr(at, colon - at);
    if (part.empty() || part.size() > 6 || part.find_first_not_of("0123456789") != std::string::npos)
      return bad("expected start:rate:full (like \"10:30:100\") or one number");
    parts.push_back(std::stoi(part));
    at = colon + 1;
  }
  if (parts.size() != 1 && parts.size() != 3)
    return bad("expected start:rate:full (like \"10:30:100\") or one number");
  MaxStartups m{parts[0], 100, parts[0]};
  if (parts.size() == 3) m = MaxStartups{parts[0], parts[1], parts[2]};
  if (m.start < 1) return bad("start must be at least 1");
  if (m.rate < 1 || m.rate > 100) return bad("rate is a percentage from 1 to 100");
  if (m.full < m.start) return bad("full must be at least start");
  return m;
}

// false, or {"authfail": "5s", "noauth": "1s", "grace_exceeded": "10s", "min": "15s", "max": "10m"}
// (keys left out keep these defaults), as OpenSSH's PerSourcePenalties.
std::optional<SourcePenalties> read_penalties(Reader& r, const json& j, const std::string& path) {
  const json* v = j.contains("per_source_penalties") ? &j.at("per_source_penalties") : nullptr;
  if (!v) return std::nullopt;
  SourcePenalties out;
  if (v->is_boolean()) {
    out.enabled = v->get<bool>();
    return out;
  }
  if (!v->is_object()) {
    r.problem(
        path,
        R"(expected false, true or an object like {"authfail": "5s", "noauth": "1s", "grace_exceeded": "10s", "min": "15s", "max": "10m"})");
    return std::nullopt;
  }
  r.reject_unknown_keys(*v, path, {"authfail", "noauth", "grace_exceeded", "min", "max"});
  if (auto d = r.duration(*v, "authfail", path + ".authfail")) out.authfail = *d;
  if (auto d = r.duration(*v, "noauth", path + ".noauth")) out.noauth = *d;
  if (auto d = r.duration(*v, "grace_exceeded", path + ".grace_exceeded")) out.grace_exceeded = *d;
  if (auto d = r.duration(*v, "min", path + ".min")) out.min = *d;
  if (auto d = r.duration(*v, "max", path + ".max")) out.max = *d;
  if (out.max < out.min) r.problem(path + ".max", "must be at least min (" + format_duration(out.min) + ")");
  if (out.max > Duration(std::chrono::hours(24))) r.problem(path + ".max", "must be at most 24h");
  return out;
}

// A file named in the config: relative to the config file's folder, ~ expanded.
std::filesystem::path config_path(const Config& cfg, const std::string& text) {
  return (cfg.base_dir / expand_home(text)).lexically_normal();
}

// The jump host's keys: its own host keys, and who may log in (to every spark, or to one).
void read_jump_keys(Reader& r, const json& j, const std::string& p, const Config& cfg, JumpConfig& out) {
  if (j.contains("host_keys")) {
    const json& keys = j.at("host_keys");
    if (!keys.is_array()) r.problem(p + ".host_keys", "expected an array of private key files");
    for (const auto& k : keys.is_array() ? keys : json::array()) {
      if (!k.is_string() || k.get<std::string>().empty())
        r.problem(p + ".host_keys", "expected an array of private key files");
      else
        out.host_keys.push_back(config_path(cfg, k.get<std::string>()));
    }
  }
  if (auto f = r.string(j, "authorized_keys", p + ".authorized_keys", false))
    out.authorized_keys = config_path(cfg, *f);
  if (const json* sparks = r.object(j, "sparks", p + ".sparks")) {
    for (const auto& [name, entry] : sparks->items()) {
      const std::string sp = p + ".sparks." + name;
      if (!is_valid_spark_name(name)) r.problem(sp, "\"" + name + "\" is not a valid spark name");
      if (!entry.is_object()) {
        r.problem(sp, "expected an object like {\"authorized_keys\": \"FILE\"}");
        continue;
      }
      r.reject_unknown_keys(entry, sp, {"authorized_keys"});
      if (auto f = r.string(entry, "authorized_keys", sp + ".authorized_keys", true))
        out.spark_authorized_keys[name] = config_path(cfg, *f);
    }
  }
  if (!out.authorized_keys && out.spark_authorized_keys.empty())
    r.problem(p, "give authorized_keys and/or sparks.NAME.authorized_keys: nobody could log in");
}

std::optional<JumpConfig> read_jump(Reader& r, const json& j, const Config& cfg) {
  const std::string p = "jump";
  r.reject_unknown_keys(j, p,
                        {"listen", "host_keys", "authorized_keys", "sparks", "max_sessions", "login_grace",
                         "max_startups", "per_source_penalties", "proxy_protocol"});
  JumpConfig out;
  out.keepalive = cfg.default_keepalive;
  out.trusted_proxies = cfg.trusted_proxies;
  if (auto mode = r.proxy_protocol(j, p + ".proxy_protocol")) out.proxy_protocol = *mode;
  auto listen = r.address(j, "listen", p + ".listen");
  read_jump_keys(r, j, p, cfg, out);
  if (auto n = r.count(j, "max_sessions", p + ".max_sessions")) out.max_sessions = *n;
  if (auto d = r.duration(j, "login_grace", p + ".login_grace")) out.login_grace = *d;
  if (auto m = read_max_startups(r, j, p + ".max_startups")) out.max_startups = *m;
  if (auto penalties = read_penalties(r, j, p + ".per_source_penalties")) out.penalties = *penalties;
  if (!listen) return std::nullopt;
  out.listen = *listen;
  return out;
}

LeaderElectionConfig read_leader_election(Reader& r, const json& l, const std::string& p) {
  r.reject_unknown_keys(l, p,
                        {"enabled", "lease_name", "running_lease", "identity", "lease_duration", "renew_deadline",
                         "retry_period"});
  LeaderElectionConfig out;
  if (auto on = r.boolean(l, "enabled", p + ".enabled")) out.enabled = *on;
  if (auto name = r.string(l, "lease_name", p + ".lease_name", false)) {
    if (!is_valid_spark_name(*name))
      r.problem(p + ".lease_name", "\"" + *name + "\" is not a valid object name (an RFC 1123 label)");
    out.lease_name = *name;
  }
  if (auto name = r.string(l, "running_lease", p + ".running_lease", false)) {
    if (!is_valid_spark_name(*name))
      r.problem(p + ".running_lease", "\"" + *name + "\" is not a valid object name (an RFC 1123 label)");
    out.running_lease = *name;
  }
  if (auto id = r.string(l, "identity", p + ".identity", false)) out.identity = *id;
  if (auto d = r.duration(l, "lease_duration", p + ".lease_duration")) out.lease_duration = *d;
  if (auto d = r.duration(l, "renew_deadline", p + ".renew_deadline")) out.renew_deadline = *d;
  if (auto d = r.duration(l, "retry_period", p + ".retry_period")) out.retry_period = *d;
  // client-go's rules: a leader gives up (renew_deadline) before others may take over
  // (lease_duration), and tries at least once more before giving up.
  if (out.lease_duration <= out.renew_deadline)
    r.problem(p + ".lease_duration", "must be longer than renew_deadline");
  if (out.renew_deadline.count() * 10 <= out.retry_period.count() * 12)
    r.problem(p + ".renew_deadline", "must be longer than 1.2 x retry_period");
  if (out.lease_duration < std::chrono::seconds(1))
    r.problem(p + ".lease_duration", "must be at least 1s (a Lease counts whole seconds)");
  return out;
}

// Where the gateway serves discovered sparks: the address, the ports it gives out, the sshd port
// and dev ports in the pods.
void read_kubernetes_ports(Reader& r, const json& k, const std::string& p, KubernetesConfig& out) {
  if (auto host = r.string(k, "listen_host", p + ".listen_host", false)) {
    std::string why;
    if (!parse_address(*host + ":1", &why) && !parse_address("[" + *host + "]:1", &why))
      r.problem(p + ".listen_host", "\"" + *host + "\" is not a numeric IP address");
    out.listen_host = *host;
  }
  if (auto range = r.string(k, "port_range", p + ".port_range", false)) {
    if (!parse_port_range(*range, out.port_min, out.port_max))
      r.problem(p + ".port_range", "\"" + *range + "\" is not a port range like \"22000-22999\"");
  }
  if (auto port = r.port(k, "target_port", p + ".target_port")) out.target_port = *port;
  if (auto text = r.string(k, "ports", p + ".ports", false)) {
    std::string why;
    if (auto ports = parse_port_list(*text, &why))
      out.ports = std::move(*ports);
    else
      r.problem(p + ".ports", why + " (expected \"web=3000,api=8080\" or \"3000,8080\")");
  }
}

// How the gateway reaches the API server: its URL or a kubeconfig, the credentials, the timeout.
void read_kubernetes_api(Reader& r, const json& k, const std::string& p, const Config& cfg,
                         KubernetesConfig& out) {
  if (auto url = r.string(k, "api_server", p + ".api_server", false)) {
    if (url->rfind("http://", 0) != 0 && url->rfind("https://", 0) != 0)
      r.problem(p + ".api_server", "\"" + *url + "\" must start with https:// or http://");
    out.api_server = *url;
  }
  auto file = [&](const char* key, std::filesystem::path& into, bool* given) {
    if (auto f = r.string(k, key, p + "." + key, false)) {
      if (f->empty()) {
        r.problem(p + "." + key, "must not be empty");
        return;
      }
      into = config_path(cfg, *f);
      if (given) *given = true;
    }
  };
  file("token_file", out.token_file, &out.token_file_given);
  file("ca_file", out.ca_file, &out.ca_file_given);
  std::filesystem::path kubeconfig;
  file("kubeconfig", kubeconfig, nullptr);
  if (!kubeconfig.empty()) out.kubeconfig = kubeconfig;
  if (out.api_server && out.kubeconfig) r.problem(p, "give api_server or kubeconfig, not both");
  if (auto t = r.duration(k, "request_timeout", p + ".request_timeout")) out.request_timeout = *t;
}

KubernetesConfig read_kubernetes(Reader& r, const json& k, const Config& cfg) {
  const std::string p = "kubernetes";
  r.reject_unknown_keys(k, p,
                        {"namespace", "selector", "listen_host", "port_range", "target_port", "ports",
                         "annotation_prefix", "api_server", "token_file", "ca_file", "kubeconfig",
                         "request_timeout", "manage_services", "services", "leader_election"});
  KubernetesConfig out;
  if (auto ns = r.string(k, "namespace", p + ".namespace", false)) {
    if (!is_valid_spark_name(*ns))
      r.problem(p + ".namespace", "\"" + *ns + "\" is not a valid namespace name (an RFC 1123 label)");
    out.namespace_name = *ns;
  }
  if (auto sel = r.string(k, "selector", p + ".selector", false)) out.selector = *sel;
  read_kubernetes_ports(r, k, p, out);
  if (auto prefix = r.string(k, "annotation_prefix", p + ".annotation_prefix", false)) {
    if (prefix->empty() || prefix->back() != '/')
      r.problem(p + ".annotation_prefix", "must end with '/' (like \"spark-gateway/\")");
    out.annotation_prefix = *prefix;
  }
  read_kubernetes_api(r, k, p, cfg, out);
  if (auto on = r.boolean(k, "manage_services", p + ".manage_services")) out.manage_services = *on;
  if (const json* s = r.object(k, "services", p + ".services"))
    out.services = read_services(r, *s, p + ".services");
  if (!out.services.proxy_group.empty() && !out.manage_services)
    r.problem(p + ".services.proxy_group",
              "needs manage_services: true (the gateway puts its spark Services in the group)");
  if (const json* l = r.object(k, "leader_election", p + ".leader_election"))
    out.leader_election = read_leader_election(r, *l, p + ".leader_election");
  return out;
}

void read_trusted_proxies(Reader& r, const json& root, Config& cfg) {
  const auto it = root.find("trusted_proxies");
  if (it == root.end()) return;
  if (!it->is_array()) {
    r.problem("trusted_proxies", "expected an array of address blocks, e.g. [\"10.42.0.0/16\"]");
    return;
  }
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string path = "trusted_proxies[" + std::to_string(i) + "]";
    const json& v = (*it)[i];
    std::string why;
    if (!v.is_string())
      r.problem(path, "expected a string");
    else if (auto cidr = parse_cidr(v.get<std::string>(), &why))
      cfg.trusted_proxies.push_back(*cidr);
    else
      r.problem(path, why);
  }
}

// A PROXY header is believed only from trusted_proxies: with none, "required" refuses every
// connection and "optional" every header.
void check_proxy_protocol(Reader& r, const Config& cfg) {
  if (!cfg.trusted_proxies.empty()) return;
  const auto check = [&](ProxyProtocol mode, const std::string& path) {
    if (mode != ProxyProtocol::off)
      r.problem(path + ".proxy_protocol",
                "needs trusted_proxies (the proxies' addresses): a PROXY header is believed only from them");
  };
  check(cfg.default_clients.proxy_protocol, "defaults");
  if (cfg.jump) check(cfg.jump->proxy_protocol, "jump");
  for (std::size_t i = 0; i < cfg.sparks.size(); ++i)
    if (cfg.sparks[i].clients != cfg.default_clients)
      check(cfg.sparks[i].clients.proxy_protocol, "sparks[" + std::to_string(i) + "]");
}

// Who already has each spark name and each listen address ("sparks[i]", "admin.listen"): both
// must be unique.
struct Owners {
  std::map<std::string, std::string> names;
  std::map<std::string, std::string> listens;
};

bool read_spark_name(Reader& r, const json& s, const std::string& path, Owners& owners, SparkConfig& spark) {
  auto name = r.string(s, "name", path + ".name", true);
  if (!name) return false;
  spark.name = *name;
  if (!is_valid_spark_name(*name)) {
    r.problem(path + ".name", "\"" + *name +
                                  "\" is not a valid spark name: it must be an RFC 1123 label "
                                  "(1-63 of a-z, 0-9 and '-', starting and ending with a "
                                  "letter or digit)");
    return false;
  }
  if (auto [owner, fresh] = owners.names.emplace(*name, path); !fresh) {
    r.problem(path + ".name", "\"" + *name + "\" is already used by " + owner->second);
    return false;
  }
  return true;
}

// `listen` for `owner` ("sparks[0]", "sparks[0].ports[1]"): false, with a problem at
// OWNER.listen, if another already has it.
bool claim_listen(Reader& r, Owners& owners, const Address& listen, const std::string& owner_path) {
  if (auto [owner, fresh] = owners.listens.emplace(listen.to_string(), owner_path); !fresh) {
    // Built with append: GCC 12 warns falsely (-Wrestrict, bug 105329) on "\"" + string.
    std::string why = "\"";
    why.append(listen.to_string()).append("\" is already used by ").append(owner->second);
    r.problem(owner_path + ".listen", why);
    return false;
  }
  return true;
}

bool read_spark_listen(Reader& r, const json& s, const std::string& path, Owners& owners, SparkConfig& spark) {
  auto listen = r.address(s, "listen", path + ".listen");
  if (!listen) return false;
  spark.listen = *listen;
  return claim_listen(r, owners, *listen, path);
}

// "ports": [{"name": "web", "listen": "127.0.0.1:2301", "port": 3000}, ...]: each name and spark
// port once, never the SSH port, each listen address unique in the whole config.
bool read_spark_ports(Reader& r, const json& s, const std::string& path, Owners& owners, SparkConfig& spark) {
  const auto it = s.find("ports");
  if (it == s.end()) return true;
  if (!it->is_array()) {
    r.problem(path + ".ports",
              R"(expected an array like [{"name": "web", "listen": "127.0.0.1:2301", "port": 3000}])");
    return false;
  }
  bool ok = true;
  std::map<std::string, std::string> names{{"ssh", "the SSH port"}};
  std::map<int, std::string> numbers;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string pp = path + ".ports[" + std::to_string(i) + "]";
    const json& entry = (*it)[i];
    if (!entry.is_object()) {
      r.problem(pp, R"(expected an object like {"name": "web", "listen": "127.0.0.1:2301", "port": 3000})");
      ok = false;
      continue;
    }
    r.reject_unknown_keys(entry, pp, {"name", "listen", "port"});
    SparkPort port;
    const auto name = r.string(entry, "name", pp + ".name", true);
    const auto listen = r.address(entry, "listen", pp + ".listen");
    const auto number = r.port(entry, "port", pp + ".port");
    if (!entry.contains("port")) r.problem(pp + ".port", "missing: the spark's own port, e.g. 3000");
    if (!name || !listen || !number) {
      ok = false;
      continue;
    }
    if (!is_valid_spark_name(*name)) {
      r.problem(pp + ".name", "\"" + *name + "\" is not a valid port name: an RFC 1123 label like \"web\"");
      ok = false;
    } else if (auto [owner, fresh] = names.emplace(*name, pp); !fresh) {
      r.problem(pp + ".name", "\"" + *name + "\" is already " + owner->second);
      ok = false;
    }
    if (auto [owner, fresh] = numbers.emplace(*number, pp); !fresh) {
      r.problem(pp + ".port", std::to_string(*number) + " is already " + owner->second);
      ok = false;
    }
    if (!claim_listen(r, owners, *listen, pp)) ok = false;
    port.name = *name;
    port.listen = *listen;
    port.port = *number;
    spark.ports.push_back(std::move(port));
  }
  return ok;
}

// The settings a spark takes from `defaults` unless it gives its own. False if one it gives is
// invalid.
bool read_spark_overrides(Reader& r, const json& s, const std::string& path, const Config& cfg,
                          SparkConfig& spark) {
  bool ok = true;
  spark.idle_timeout = cfg.default_idle_timeout;
  if (s.contains("idle_timeout")) {
    if (auto t = r.idle_timeout(s, "idle_timeout", path + ".idle_timeout"))
      spark.idle_timeout = *t;
    else
      ok = false;
  }
  spark.wake_timeout = cfg.default_wake_timeout;
  if (s.contains("wake_timeout")) {
    if (auto t = r.duration(s, "wake_timeout", path + ".wake_timeout"))
      spark.wake_timeout = *t;
    else
      ok = false;
  }
  spark.port_grace = cfg.default_port_grace;
  if (s.contains("port_grace")) {
    if (auto t = r.duration(s, "port_grace", path + ".port_grace"))
      spark.port_grace = *t;
    else
      ok = false;
  }
  spark.keepalive = cfg.default_keepalive;
  if (s.contains("keepalive")) {
    if (auto k = r.keepalive(s, "keepalive", path + ".keepalive", cfg.default_keepalive))
      spark.keepalive = *k;
    else
      ok = false;
  }
  spark.clients = r.client_rules(s, path, cfg.default_clients);
  return ok;
}

// One entry of "sparks". Every key is read even after a problem, so all of them are reported.
std::optional<SparkConfig> read_spark(Reader& r, const json& s, const std::string& path, const Config& cfg,
                                      Owners& owners) {
  if (!s.is_object()) {
    r.problem(path, "expected an object");
    return std::nullopt;
  }
  r.reject_unknown_keys(s, path,
                        {"name", "listen", "idle_timeout", "wake_timeout", "max_connections", "max_waiting",
                         "keepalive", "wake_on", "wake_grace", "proxy_protocol", "ports", "port_grace", "process",
                         "exec"});
  SparkConfig spark;
  const bool named = read_spark_name(r, s, path, owners, spark);
  const bool listening = read_spark_listen(r, s, path, owners, spark);
  const bool ports_ok = read_spark_ports(r, s, path, owners, spark);
  const bool overrides_ok = read_spark_overrides(r, s, path, cfg, spark);
  spark.max_connections = r.count(s, "max_connections", path + ".max_connections");
  spark.max_waiting = r.count(s, "max_waiting", path + ".max_waiting");
  auto backend = read_backend(r, s, path);
  if (!named || !listening || !ports_ok || !overrides_ok || !backend) return std::nullopt;
  spark.backend = std::move(*backend);
  for (std::size_t i = 0; i < spark.ports.size(); ++i) {
    if (spark.ports[i].port == spark.target().port) {
      r.problem(path + ".ports[" + std::to_string(i) + "].port",
                std::to_string(spark.ports[i].port) +
                    " is the spark's SSH port (its target): SSH needs no dev port");
      return std::nullopt;
    }
  }
  return spark;
}

void read_sparks(Reader& r, const json& root, Config& cfg) {
  auto it = root.find("sparks");
  if (it == root.end()) return;
  if (!it->is_array()) {
    r.problem("sparks", "expected an array");
    return;
  }
  Owners owners;
  if (cfg.admin) owners.listens.emplace(cfg.admin->listen.to_string(), "admin.listen");
  for (std::size_t i = 0; i < it->size(); ++i) {
    if (auto spark = read_spark(r, (*it)[i], "sparks[" + std::to_string(i) + "]", cfg, owners))
      cfg.sparks.push_back(std::move(*spark));
  }
}

json parse_json(const std::string& json_text, const std::filesystem::path& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw ConfigError({source.string() + ": invalid JSON: " + e.what()});
  }
  if (!root.is_object()) throw ConfigError({source.string() + ": expected an object at the top"});
  return root;
}

std::filesystem::path read_state_dir(Reader& r, const json& root, const std::filesystem::path& base_dir) {
  std::filesystem::path state_dir = "state";
  if (auto s = r.string(root, "state_dir", "state_dir", false)) {
    if (s->empty())
      r.problem("state_dir", "must not be empty");
    else
      state_dir = *s;
  }
  return (base_dir / state_dir).lexically_normal();
}

// The per-spark caps "defaults" gives, if it does (left out, they are a share of "limits",
// which is read after it).
struct DefaultCaps {
  std::optional<int> max_connections;
  std::optional<int> max_waiting;
};

DefaultCaps read_defaults(Reader& r, const json& d, Config& cfg) {
  r.reject_unknown_keys(d, "defaults",
                        {"idle_timeout", "wake_timeout", "port_grace", "drain_timeout", "keepalive",
                         "max_connections", "max_waiting", "wake_on", "wake_grace", "proxy_protocol"});
  DefaultCaps caps;
  caps.max_connections = r.count(d, "max_connections", "defaults.max_connections");
  caps.max_waiting = r.count(d, "max_waiting", "defaults.max_waiting");
  if (auto t = r.idle_timeout(d, "idle_timeout", "defaults.idle_timeout")) cfg.default_idle_timeout = *t;
  if (auto t = r.duration(d, "wake_timeout", "defaults.wake_timeout")) cfg.default_wake_timeout = *t;
  if (auto t = r.duration(d, "port_grace", "defaults.port_grace")) cfg.default_port_grace = *t;
  if (auto t = r.duration(d, "drain_timeout", "defaults.drain_timeout")) cfg.drain_timeout = *t;
  if (auto k = r.keepalive(d, "keepalive", "defaults.keepalive", cfg.default_keepalive))
    cfg.default_keepalive = *k;
  cfg.default_clients = r.client_rules(d, "defaults", cfg.default_clients);
  return caps;
}

void read_limits(Reader& r, const json& limits, Config& cfg) {
  r.reject_unknown_keys(limits, "limits",
                        {"max_connections", "max_waiting", "data_threads", "max_running", "evict_idle_after"});
  if (auto n = r.count(limits, "max_connections", "limits.max_connections")) cfg.max_connections = *n;
  if (auto n = r.count(limits, "max_waiting", "limits.max_waiting")) cfg.max_waiting = *n;
  cfg.max_running = r.count(limits, "max_running", "limits.max_running");
  cfg.evict_idle_after = r.duration(limits, "evict_idle_after", "limits.evict_idle_after");
  if (cfg.evict_idle_after && !limits.contains("max_running"))
    r.problem("limits.evict_idle_after", "needs limits.max_running (it makes room under that cap)");
  cfg.data_threads = r.count(limits, "data_threads", "limits.data_threads", 0, 64);
}

// nullopt without a valid admin.listen (its problem is recorded).
std::optional<AdminConfig> read_admin(Reader& r, const json& admin, const std::filesystem::path& base_dir) {
  r.reject_unknown_keys(admin, "admin", {"listen", "token_file", "max_connections", "request_timeout"});
  auto listen = r.address(admin, "listen", "admin.listen");
  std::optional<std::filesystem::path> token_file;
  if (auto t = r.string(admin, "token_file", "admin.token_file", false)) {
    if (t->empty())
      r.problem("admin.token_file", "must not be empty");
    else
      token_file = (base_dir / *t).lexically_normal();
  }
  const auto max_connections = r.count(admin, "max_connections", "admin.max_connections", 1, 10'000);
  auto request_timeout = r.duration(admin, "request_timeout", "admin.request_timeout");
  if (request_timeout && *request_timeout > std::chrono::minutes(10)) {
    r.problem("admin.request_timeout", "at most 10m (it bounds how long a client may take to send a request)");
    request_timeout.reset();
  }
  if (!listen) return std::nullopt;
  if (!is_loopback(*listen) && !token_file)
    r.problem("admin.token_file", "is required when admin.listen (\"" + listen->to_string() +
                                      "\") is not a loopback address: mutating calls must be authenticated");
  AdminConfig out;
  out.listen = *listen;
  out.token_file = token_file;
  if (max_connections) out.max_connections = *max_connections;
  if (request_timeout) out.request_timeout = *request_timeout;
  return out;
}

}  // namespace

const Address& SparkConfig::target() const {
  return std::visit([](const auto& b) -> const Address& { return b.target; }, backend);
}

std::string SparkConfig::backend_kind() const {
  if (std::holds_alternative<ProcessBackendConfig>(backend)) return "process";
  if (std::holds_alternative<ExecBackendConfig>(backend)) return "exec";
  return "kubernetes";
}

const SparkConfig* Config::find_spark(std::string_view name) const {
  for (const auto& s : sparks)
    if (s.name == name) return &s;
  return nullptr;
}

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error([&] {
        std::string all;
        for (const auto& p : problems) all += (all.empty() ? "" : "\n") + p;
        return all;
      }()),
      problems_(std::move(problems)) {}

// The reaper looks every reaper.interval: an idle timeout shorter than that cannot be kept, and
// with several replicas a session's activity could not be recorded for the reaping one in time
// (docs/high-availability.md). Refused, naming the keys to change.
void check_idle_timeouts(Reader& r, const Config& cfg) {
  const auto too_short = [&](const MaybeNever& t) { return !t.is_never() && *t.value < cfg.reaper_interval; };
  const auto advice = "is shorter than reaper.interval (" + format_duration(cfg.reaper_interval) +
                      "): the reaper could not keep it; raise it or lower reaper.interval";
  if (too_short(cfg.default_idle_timeout))
    r.problem("defaults.idle_timeout", format_duration(*cfg.default_idle_timeout.value) + " " + advice);
  for (std::size_t i = 0; i < cfg.sparks.size(); ++i)
    if (too_short(cfg.sparks[i].idle_timeout) && !(cfg.sparks[i].idle_timeout == cfg.default_idle_timeout))
      r.problem("sparks[" + std::to_string(i) + "].idle_timeout",
                format_duration(*cfg.sparks[i].idle_timeout.value) + " " + advice);
}

Config parse_config(const std::string& json_text, const std::filesystem::path& source) {
  const json root = parse_json(json_text, source);
  Config cfg;
  cfg.source = std::filesystem::absolute(source).lexically_normal();
  cfg.base_dir = cfg.source.parent_path();
  Reader r;
  r.reject_unknown_keys(root, "",
                        {"state_dir", "defaults", "trusted_proxies", "reaper", "activity", "limits", "admin",
                         "jump", "kubernetes", "sparks"});

  cfg.state_dir = read_state_dir(r, root, cfg.base_dir);
  DefaultCaps default_caps;
  if (const json* d = r.object(root, "defaults", "defaults")) default_caps = read_defaults(r, *d, cfg);
  read_trusted_proxies(r, root, cfg);
  if (const json* reaper = r.object(root, "reaper", "reaper")) {
    r.reject_unknown_keys(*reaper, "reaper", {"interval"});
    if (auto t = r.duration(*reaper, "interval", "reaper.interval")) cfg.reaper_interval = *t;
  }
  if (const json* activity = r.object(root, "activity", "activity")) {
    r.reject_unknown_keys(*activity, "activity", {"flush_interval"});
    if (auto t = r.duration(*activity, "flush_interval", "activity.flush_interval"))
      cfg.activity_flush_interval = *t;
  }
  if (const json* limits = r.object(root, "limits", "limits")) read_limits(r, *limits, cfg);
  // A fair share by default: a quarter of the gateway-wide caps, so one spark (say, someone
  // connecting over and over to a spark that never gets ready) leaves room for the others.
  cfg.default_max_connections = default_caps.max_connections.value_or(std::max(1, cfg.max_connections / 4));
  cfg.default_max_waiting = default_caps.max_waiting.value_or(std::max(1, cfg.max_waiting / 4));
  if (const json* admin = r.object(root, "admin", "admin")) cfg.admin = read_admin(r, *admin, cfg.base_dir);
  if (const json* j = r.object(root, "jump", "jump")) cfg.jump = read_jump(r, *j, cfg);
  if (const json* k = r.object(root, "kubernetes", "kubernetes")) cfg.kubernetes = read_kubernetes(r, *k, cfg);
  read_sparks(r, root, cfg);
  check_idle_timeouts(r, cfg);
  check_proxy_protocol(r, cfg);

  if (!r.problems.empty()) throw ConfigError(std::move(r.problems));
  return cfg;
}

Config load_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError({path.string() + ": cannot read the config file"});
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError({path.string() + ": cannot read the config file"});
  return parse_config(text.str(), path);
}

}  // namespace spark::config
