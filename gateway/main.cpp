// spark-gateway: wake-on-connect SSH gateway. Subcommands: serve, check-config, rbac, --version, and
// the admin commands (status, wake, sleep, keep-awake).
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/duration.hpp"
#include "config/plural.hpp"
#include "gateway/cli/admin_cli.hpp"
#include "gateway/observability/logging.hpp"
#include "gateway/server.hpp"
#include "k8s/rbac.hpp"
#include "gateway/exit_codes.hpp"
#include "version.hpp"

namespace {

const char* kUsage = R"(usage: spark-gateway <command> [options]

commands:
  serve --config FILE [--log-level LEVEL] [--log-format text|json]
                                            run the gateway in the foreground (logs to stderr)
  check-config FILE                         validate a config file and print what it defines
  rbac --config FILE [--json]               print the Role the kubernetes section needs (exactly
                                            the calls the gateway makes)
  --version                                 print the version

LEVEL is one of trace, debug, info (default), warn, error.
Signals while serving: SIGTERM/SIGINT drain and exit, SIGHUP reloads the config.

)";

void print_usage(std::ostream& out) { out << kUsage << spark::gateway::admin_commands_usage(); }

int usage_error(const std::string& message) {
  std::cerr << "spark-gateway: " << message << "\n\n";
  print_usage(std::cerr);
  return spark::gateway::exit_code::usage;
}

int print_config_errors(const spark::config::ConfigError& e) {
  for (const auto& p : e.problems()) std::cerr << p << "\n";
  return spark::gateway::exit_code::usage;
}

int check_config(const std::vector<std::string>& args) {
  if (args.size() != 1) return usage_error("check-config takes exactly one FILE");
  try {
    const auto cfg = spark::config::load_config(args[0]);
    std::cout << cfg.source.string() << ": ok, " << spark::config::counted(cfg.sparks.size(), "spark") << "\n";
    if (cfg.admin)
      std::cout << "  admin  http://" << cfg.admin->listen.to_string() << "/"
                << (cfg.admin->token_file ? "  token " + cfg.admin->token_file->string() : "") << "\n";
    if (const auto& j = cfg.jump)
      std::cout << "  jump  ssh -J NAME@" << j->listen.to_string() << " NAME  ("
                << (j->host_keys.empty() ? std::string("host key generated in state_dir")
                                         : spark::config::counted(j->host_keys.size(), "host key"))
                << ")\n";
    if (const auto& k = cfg.kubernetes) {
      std::cout << "  kubernetes  namespace " << k->namespace_name << "  selector \"" << k->selector
                << "\"  ports " << k->listen_host << ":" << k->port_min << "-" << k->port_max << "  "
                << (k->kubeconfig ? "kubeconfig " + k->kubeconfig->string()
                                  : k->api_server ? "api_server " + *k->api_server : std::string("in-cluster"))
                << "  (sparks discovered at run time)\n";
    }
    for (const auto& s : cfg.sparks) {
      std::cout << "  " << s.name << "  listen " << s.listen.to_string() << "  " << s.backend_kind()
                << " -> " << s.target().to_string() << "  idle_timeout "
                << (s.idle_timeout.is_never() ? "never"
                                              : spark::config::format_duration(*s.idle_timeout.value))
                << "  wake_timeout " << spark::config::format_duration(s.wake_timeout) << "\n";
    }
    return spark::gateway::exit_code::ok;
  } catch (const spark::config::ConfigError& e) {
    return print_config_errors(e);
  }
}

// The Role for deploy/: generated from the same table the API client enforces (k8s/rbac.cpp).
int rbac(const std::vector<std::string>& args) {
  std::string config_path;
  bool as_json = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      as_json = true;
    } else if (args[i] == "--config" && i + 1 < args.size()) {
      config_path = args[++i];
    } else {
      return usage_error("rbac: unknown option " + args[i]);
    }
  }
  if (config_path.empty()) return usage_error("rbac needs --config FILE");
  try {
    const auto cfg = spark::config::load_config(config_path);
    if (!cfg.kubernetes) {
      std::cerr << cfg.source.string() << ": no \"kubernetes\" section: the gateway makes no API calls\n";
      return spark::gateway::exit_code::usage;
    }
    const auto rules = spark::k8s::required_rules(*cfg.kubernetes);
    if (!as_json) {
      std::cout << spark::k8s::role_yaml(rules, cfg.kubernetes->namespace_name, "spark-gateway");
      return spark::gateway::exit_code::ok;
    }
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : rules)
      out.push_back({{"apiGroups", {r.api_group}}, {"resources", {r.resource}}, {"verbs", r.verbs}, {"why", r.why}});
    std::cout << out.dump(2) << "\n";
    return spark::gateway::exit_code::ok;
  } catch (const spark::config::ConfigError& e) {
    return print_config_errors(e);
  }
}

int serve(const std::vector<std::string>& args) {
  std::string config_path;
  std::string level = "info";
  std::string format = "text";
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* flag) -> const std::string* {
      if (i + 1 >= args.size()) return nullptr;
      (void)flag;
      return &args[++i];
    };
    if (a == "--config" || a == "-c") {
      const auto* v = value("--config");
      if (!v) return usage_error("--config needs a FILE");
      config_path = *v;
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--log-level") {
      const auto* v = value("--log-level");
      if (!v) return usage_error("--log-level needs a LEVEL");
      level = *v;
    } else if (a.rfind("--log-level=", 0) == 0) {
      level = a.substr(12);
    } else if (a == "--log-format") {
      const auto* v = value("--log-format");
      if (!v) return usage_error("--log-format needs text or json");
      format = *v;
    } else if (a.rfind("--log-format=", 0) == 0) {
      format = a.substr(13);
    } else {
      return usage_error("serve: unknown option " + a);
    }
  }
  if (config_path.empty()) return usage_error("serve needs --config FILE");
  const auto parsed_level = spdlog::level::from_str(level);
  if (parsed_level == spdlog::level::off && level != "off")
    return usage_error("--log-level: \"" + level + "\" is not one of trace, debug, info, warn, error");
  if (format != "text" && format != "json")
    return usage_error("--log-format: \"" + format + "\" is not text or json");
  spark::gateway::setup_logging(parsed_level, format == "json" ? spark::gateway::LogFormat::json
                                                               : spark::gateway::LogFormat::text);

  spark::config::Config cfg;
  try {
    cfg = spark::config::load_config(config_path);
  } catch (const spark::config::ConfigError& e) {
    for (const auto& p : e.problems()) spdlog::error("config: {}", p);
    return spark::gateway::exit_code::usage;
  }
  try {
    spdlog::info("spark-gateway {} starting with {}", spark::kVersion, cfg.source.string());
    spark::gateway::Server server(std::move(cfg));
    return server.run();
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return spark::gateway::exit_code::failed;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return usage_error("a command is required");
  const std::string command = args.front();
  args.erase(args.begin());
  if (command == "--version" || command == "version") {
    std::cout << "spark-gateway " << spark::kVersion << "\n"
              << "built with " << spark::kBuildDependencies << "\n"
              << "running with " << OpenSSL_version(OPENSSL_VERSION) << "\n";
    return spark::gateway::exit_code::ok;
  }
  if (command == "--help" || command == "-h" || command == "help") {
    print_usage(std::cout);
    return spark::gateway::exit_code::ok;
  }
  if (command == "serve") return serve(args);
  if (spark::gateway::is_admin_command(command)) return spark::gateway::run_admin_command(command, args);
  if (command == "check-config") return check_config(args);
  if (command == "rbac") return rbac(args);
  return usage_error("unknown command \"" + command + "\"");
}
