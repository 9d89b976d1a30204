#include "k8s/credentials.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>

#include "gateway/backend/unique_fd.hpp"

namespace spark::k8s {
namespace {

std::string base64_decode(const std::string& in, const std::string& what) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  int bits = 0, buffer = 0;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r' || c == ' ') continue;
    const int v = value(c);
    if (v < 0) throw CredentialsError(what + " is not valid base64");
    buffer = (buffer << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  return out;
}

// Writes secret material only the gateway's user can read.
std::filesystem::path write_private(const std::filesystem::path& dir, const std::string& name,
                                    const std::string& content) {
  std::filesystem::create_directories(dir);
  ::chmod(dir.c_str(), 0700);
  const auto path = dir / name;
  gateway::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) throw CredentialsError("cannot write " + path.string());
  const bool ok = ::write(fd.get(), content.data(), content.size()) == static_cast<ssize_t>(content.size());
  fd.reset();
  if (!ok) throw CredentialsError("cannot write " + path.string());
  return path;
}

// "https://host:6443/prefix" -> server "https://host:6443", base path "/prefix".
void split_server(const std::string& url, ApiEndpoint& out) {
  const auto scheme_end = url.find("://");
  const auto path_start = url.find('/', scheme_end == std::string::npos ? 0 : scheme_end + 3);
  out.server = url.substr(0, path_start);
  out.base_path = path_start == std::string::npos ? "" : url.substr(path_start);
  while (!out.base_path.empty() && out.base_path.back() == '/') out.base_path.pop_back();
}

YAML::Node find_named(const YAML::Node& list, const std::string& name, const std::string& what) {
  if (list && list.IsSequence()) {
    for (const auto& item : list)
      if (item["name"] && item["name"].as<std::string>() == name) return item;
  }
  throw CredentialsError("kubeconfig: no " + what + " named \"" + name + "\"");
}

ApiEndpoint from_kubeconfig(const std::filesystem::path& path, const std::filesystem::path& private_dir) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path.string());
  } catch (const YAML::Exception& e) {
    throw CredentialsError("kubeconfig " + path.string() + ": " + e.what());
  }
  const auto base = path.parent_path();
  auto relative = [&](const std::string& p) { return (base / p).lexically_normal(); };
  try {
    if (!root["current-context"])
      throw CredentialsError("kubeconfig " + path.string() + ": no current-context");
    const auto context_name = root["current-context"].as<std::string>();
    const auto context = find_named(root["contexts"], context_name, "context")["context"];
    const auto cluster =
        find_named(root["clusters"], context["cluster"].as<std::string>(), "cluster")["cluster"];
    const auto user = find_named(root["users"], context["user"].as<std::string>(), "user")["user"];

    ApiEndpoint out;
    split_server(cluster["server"].as<std::string>(), out);
    if (cluster["certificate-authority-data"])
      out.ca_file = write_private(private_dir, "ca.crt",
                                  base64_decode(cluster["certificate-authority-data"].as<std::string>(),
                                                "certificate-authority-data"));
    else if (cluster["certificate-authority"])
      out.ca_file = relative(cluster["certificate-authority"].as<std::string>());
    if (cluster["insecure-skip-tls-verify"])
      out.insecure_skip_tls_verify = cluster["insecure-skip-tls-verify"].as<bool>();

    if (user["token"]) out.token = user["token"].as<std::string>();
    if (user["tokenFile"]) out.token_file = relative(user["tokenFile"].as<std::string>());
    if (user["client-certificate-data"])
      out.client_cert_file = write_private(
          private_dir, "client.crt",
          base64_decode(user["client-certificate-data"].as<std::string>(), "client-certificate-data"));
    else if (user["client-certificate"])
      out.client_cert_file = relative(user["client-certificate"].as<std::string>());
    if (user["client-key-data"])
      out.client_key_file = write_private(
          private_dir, "client.key",
          base64_decode(user["client-key-data"].as<std::string>(), "client-key-data"));
    else if (user["client-key"])
      out.client_key_file = relative(user["client-key"].as<std::string>());
    if (user["exec"] || user["auth-provider"])
      throw CredentialsError("kubeconfig " + path.string() + ": user of context \"" + context_name +
                             "\" uses an exec or auth-provider plugin, which spark-gateway does "
                             "not run; give it a token or a client certificate");
    if (out.client_cert_file.has_value() != out.client_key_file.has_value())
      throw CredentialsError("kubeconfig " + path.string() +
                             ": a client certificate needs both the certificate and the key");
    return out;
  } catch (const YAML::Exception& e) {
    throw CredentialsError("kubeconfig " + path.string() + ": " + e.what());
  }
}

}  // namespace

ApiEndpoint resolve_endpoint(const config::KubernetesConfig& cfg,
                             const std::filesystem::path& private_dir) {
  if (cfg.kubeconfig) return from_kubeconfig(*cfg.kubeconfig, private_dir);

  ApiEndpoint out;
  const bool explicit_server = cfg.api_server.has_value();
  if (explicit_server) {
    split_server(*cfg.api_server, out);
  } else {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !port || !*host || !*port)
      throw CredentialsError(
          "kubernetes: not running in a cluster (KUBERNETES_SERVICE_HOST/PORT are not set); set "
          "kubernetes.api_server or kubernetes.kubeconfig");
    const std::string h = host;
    out.server = "https://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + port;
  }
  // In the cluster the service account's files are used; with an explicit server only the ones
  // the config names (a plain `kubectl proxy` URL needs none).
  if (!explicit_server || cfg.token_file_given) {
    if (!std::filesystem::exists(cfg.token_file))
      throw CredentialsError("kubernetes.token_file: " + cfg.token_file.string() + " does not exist");
    out.token_file = cfg.token_file;
  }
  if (!explicit_server || cfg.ca_file_given) {
    if (!std::filesystem::exists(cfg.ca_file))
      throw CredentialsError("kubernetes.ca_file: " + cfg.ca_file.string() + " does not exist");
    out.ca_file = cfg.ca_file;
  }
  return out;
}

}  // namespace spark::k8s
