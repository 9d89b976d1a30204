// Finding the API server and how to authenticate: in-cluster service account, an explicit
// api_server (kubectl proxy), kubeconfig files (token, tokenFile, client certificates as files
// or inline data); and the "kubernetes" config section's own validation.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config/config.hpp"
#include "k8s/credentials.hpp"

namespace spark::k8s {
namespace {

namespace fs = std::filesystem;

class CredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/k8s-creds-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    saved_host_ = getenv_or_empty("KUBERNETES_SERVICE_HOST");
    saved_port_ = getenv_or_empty("KUBERNETES_SERVICE_PORT");
    ::unsetenv("KUBERNETES_SERVICE_HOST");
    ::unsetenv("KUBERNETES_SERVICE_PORT");
  }
  void TearDown() override {
    fs::remove_all(dir_);
    restore("KUBERNETES_SERVICE_HOST", saved_host_);
    restore("KUBERNETES_SERVICE_PORT", saved_port_);
  }
  static std::string getenv_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
  }
  static void restore(const char* name, const std::string& value) {
    if (value.empty())
      ::unsetenv(name);
    else
      ::setenv(name, value.c_str(), 1);
  }
  fs::path write(const std::string& name, const std::string& text) {
    auto p = dir_ / name;
    std::ofstream(p) << text;
    return p;
  }
  config::KubernetesConfig in_cluster() {
    config::KubernetesConfig cfg;
    cfg.token_file = write("token", "eyJhbGciOiJSUzI1NiJ9.token\n");
    cfg.ca_file = write("ca.crt", "-----BEGIN CERTIFICATE-----\n");
    return cfg;
  }
  std::string message_of(const config::KubernetesConfig& cfg) {
    try {
      resolve_endpoint(cfg, dir_ / "private");
    } catch (const CredentialsError& e) {
      return e.what();
    }
    return "(no error)";
  }
  fs::path dir_;
  std::string saved_host_, saved_port_;
};

TEST_F(CredentialsTest, InClusterUsesTheServiceEnvironmentAndAccountFiles) {
  ::setenv("KUBERNETES_SERVICE_HOST", "10.43.0.1", 1);
  ::setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  const auto cfg = in_cluster();
  const auto e = resolve_endpoint(cfg, dir_ / "private");
  EXPECT_EQ(e.server, "https://10.43.0.1:443");
  EXPECT_EQ(e.token_file, cfg.token_file);
  EXPECT_EQ(e.ca_file, cfg.ca_file);
  ::setenv("KUBERNETES_SERVICE_HOST", "fd00:10:43::1", 1);
  EXPECT_EQ(resolve_endpoint(cfg, dir_ / "private").server, "https://[fd00:10:43::1]:443");
}

TEST_F(CredentialsTest, OutsideAClusterSaysWhatToSet) {
  const auto why = message_of(in_cluster());
  EXPECT_NE(why.find("KUBERNETES_SERVICE_HOST"), std::string::npos) << why;
  EXPECT_NE(why.find("kubernetes.api_server"), std::string::npos) << why;
}

TEST_F(CredentialsTest, MissingServiceAccountFilesAreNamed) {
  ::setenv("KUBERNETES_SERVICE_HOST", "10.43.0.1", 1);
  ::setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto cfg = in_cluster();
  cfg.token_file = dir_ / "nope";
  EXPECT_NE(message_of(cfg).find("kubernetes.token_file"), std::string::npos);
}

TEST_F(CredentialsTest, KubectlProxyNeedsNoCredentials) {
  config::KubernetesConfig cfg;
  cfg.api_server = "http://127.0.0.1:8001";
  const auto e = resolve_endpoint(cfg, dir_ / "private");
  EXPECT_EQ(e.server, "http://127.0.0.1:8001");
  EXPECT_FALSE(e.token_file);
  EXPECT_FALSE(e.ca_file);
  cfg.api_server = "https://proxy.example:8443/k8s/clusters/c-1";
  const auto prefixed = resolve_endpoint(cfg, dir_ / "private");
  EXPECT_EQ(prefixed.server, "https://proxy.example:8443");
  EXPECT_EQ(prefixed.base_path, "/k8s/clusters/c-1");
}

const char* kKubeconfig = R"(apiVersion: v1
kind: Config
current-context: homelab
clusters:
- name: homelab
  cluster:
    server: https://192.168.1.10:6443
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
- name: other
  cluster:
    server: https://other:6443
users:
- name: admin
  user:
    client-certificate-data: Y2VydA==
    client-key-data: a2V5
- name: bot
  user:
    token: abc.def
contexts:
- name: homelab
  context: {cluster: homelab, user: admin, namespace: spark}
- name: bot
  context: {cluster: other, user: bot}
)";

TEST_F(CredentialsTest, KubeconfigCurrentContextWithInlineClientCertificate) {
  config::KubernetesConfig cfg;
  cfg.kubeconfig = write("config", kKubeconfig);
  const auto e = resolve_endpoint(cfg, dir_ / "private");
  EXPECT_EQ(e.server, "https://192.168.1.10:6443");
  ASSERT_TRUE(e.client_cert_file && e.client_key_file && e.ca_file);
  std::ifstream cert(*e.client_cert_file), key(*e.client_key_file);
  std::string cert_text, key_text;
  std::getline(cert, cert_text);
  std::getline(key, key_text);
  EXPECT_EQ(cert_text, "cert");
  EXPECT_EQ(key_text, "key");
  struct stat st {};
  ASSERT_EQ(::stat(e.client_key_file->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600) << "the private key is written owner-only";
}

TEST_F(CredentialsTest, KubeconfigWithAToken) {
  std::string text = kKubeconfig;
  text.replace(text.find("current-context: homelab"), 24, "current-context: bot");
  config::KubernetesConfig cfg;
  cfg.kubeconfig = write("config", text);
  const auto e = resolve_endpoint(cfg, dir_ / "private");
  EXPECT_EQ(e.server, "https://other:6443");
  EXPECT_EQ(e.token, "abc.def");
  EXPECT_FALSE(e.client_cert_file);
}

TEST_F(CredentialsTest, KubeconfigProblemsAreClear) {
  config::KubernetesConfig cfg;
  cfg.kubeconfig = write("nocontext", "apiVersion: v1\nkind: Config\nclusters: []\n");
  EXPECT_NE(message_of(cfg).find("no current-context"), std::string::npos) << message_of(cfg);
  std::string text = kKubeconfig;
  text.replace(text.find("current-context: homelab"), 24, "current-context: ghost");
  cfg.kubeconfig = write("ghost", text);
  EXPECT_NE(message_of(cfg).find("\"ghost\""), std::string::npos) << message_of(cfg);
  std::string exec_text = kKubeconfig;
  const std::string certs = "    client-certificate-data: Y2VydA==\n    client-key-data: a2V5\n";
  exec_text.replace(exec_text.find(certs), certs.size(),
                    "    exec: {command: aws, apiVersion: client.authentication.k8s.io/v1beta1}\n");
  cfg.kubeconfig = write("exec", exec_text);
  EXPECT_NE(message_of(cfg).find("exec or auth-provider plugin"), std::string::npos) << message_of(cfg);
  cfg.kubeconfig = write("broken", "clusters: [\n");
  EXPECT_NE(message_of(cfg).find("kubeconfig"), std::string::npos);
  cfg.kubeconfig = dir_ / "missing";
  EXPECT_NE(message_of(cfg).find("missing"), std::string::npos) << message_of(cfg);
}

// The "kubernetes" config section.
config::Config load(const std::string& kubernetes_json, std::string* problems = nullptr) {
  char tmpl[] = "/tmp/k8s-config-XXXXXX";
  const fs::path dir = ::mkdtemp(tmpl);
  const auto file = dir / "gateway.json";
  std::ofstream(file) << R"({"sparks": [], "kubernetes": )" << kubernetes_json << "}";
  try {
    auto cfg = config::load_config(file);
    fs::remove_all(dir);
    return cfg;
  } catch (const config::ConfigError& e) {
    fs::remove_all(dir);
    if (problems)
      for (const auto& p : e.problems()) *problems += p + "\n";
    throw;
  }
}

TEST(KubernetesConfigSection, Defaults) {
  const auto cfg = load("{}");
  ASSERT_TRUE(cfg.kubernetes);
  const auto& k = *cfg.kubernetes;
  EXPECT_EQ(k.namespace_name, "spark");
  EXPECT_EQ(k.selector, "app.kubernetes.io/part-of=spark");
  EXPECT_EQ(k.port_min, 22000);
  EXPECT_EQ(k.port_max, 22999);
  EXPECT_EQ(k.target_port, 22);
  EXPECT_EQ(k.annotation_prefix, "spark-gateway/");
  EXPECT_FALSE(k.manage_services);
  EXPECT_FALSE(k.leader_election.enabled);
  EXPECT_EQ(k.leader_election.lease_name, "spark-gateway-reaper");
  EXPECT_EQ(k.leader_election.running_lease, "spark-gateway-running");  // limits.max_running's claims
}

TEST(KubernetesConfigSection, RunningLeaseMustBeAnObjectName) {
  EXPECT_EQ(load(R"({"leader_election": {"running_lease": "caps-1"}})").kubernetes->leader_election.running_lease,
            "caps-1");
  for (const char* bad : {R"("Caps")", R"("a_b")", R"("")", R"(7)"}) {
    std::string problems;
    EXPECT_THROW(load(std::string(R"({"leader_election": {"running_lease": )") + bad + "}}", &problems),
                 config::ConfigError)
        << bad;
    EXPECT_NE(problems.find("kubernetes.leader_election.running_lease"), std::string::npos) << bad << problems;
  }
}

TEST(KubernetesConfigSection, EveryBadValueIsNamedByItsKey) {
  std::string problems;
  EXPECT_THROW(load(R"({"namespace": "Spark_NS", "port_range": "22999-22000", "target_port": 70000,
    "annotation_prefix": "no-slash", "api_server": "ftp://x", "kubeconfig": "k", "typo": 1,
    "manage_services": "yes", "services": {"port": 0, "gateway_selector": {}},
    "leader_election": {"lease_duration": "5s", "renew_deadline": "10s"}})",
                    &problems),
               config::ConfigError);
  for (const char* key :
       {"kubernetes.namespace", "kubernetes.port_range", "kubernetes.target_port", "kubernetes.annotation_prefix",
        "kubernetes.api_server", "kubernetes.typo", "kubernetes.manage_services", "kubernetes.services.port",
        "kubernetes.services.gateway_selector", "kubernetes.leader_election.lease_duration",
        "give api_server or kubeconfig, not both"})
    EXPECT_NE(problems.find(key), std::string::npos) << key << " in:\n" << problems;
}

TEST(KubernetesConfigSection, PortRanges) {
  EXPECT_EQ(load(R"({"port_range": "30000-30000"})").kubernetes->port_min, 30000);
  for (const char* bad :
       {R"("0-10")", R"("1-65536")", R"("abc")", R"("100")", R"("100-")", R"("-5-10")", R"("10 - 20")"}) {
    std::string problems;
    EXPECT_THROW(load(std::string(R"({"port_range": )") + bad + "}", &problems), config::ConfigError) << bad;
    EXPECT_NE(problems.find("kubernetes.port_range"), std::string::npos) << bad;
  }
}

TEST(KubernetesConfigSection, DevPortsForEverySparkAndAProxyGroup) {
  const auto none = load("{}");
  EXPECT_TRUE(none.kubernetes->ports.empty());
  EXPECT_EQ(none.kubernetes->services.proxy_group, "");
  const auto cfg = load(
      R"({"ports": "web=3000,8080", "manage_services": true, "services": {"proxy_group": "spark-ingress"}})");
  ASSERT_EQ(cfg.kubernetes->ports.size(), 2u);
  EXPECT_EQ(cfg.kubernetes->ports[0], (config::NamedPort{"web", 3000}));
  EXPECT_EQ(cfg.kubernetes->ports[1], (config::NamedPort{"8080", 8080}));
  EXPECT_EQ(cfg.kubernetes->services.proxy_group, "spark-ingress");
  std::string problems;
  EXPECT_THROW(load(R"({"ports": "ssh=22", "services": {"proxy_group": "Spark Ingress"}})", &problems),
               config::ConfigError);
  EXPECT_NE(problems.find("kubernetes.ports: \"ssh=22\": \"ssh\" is the SSH port's name"), std::string::npos)
      << problems;
  EXPECT_NE(problems.find("kubernetes.services.proxy_group"), std::string::npos) << problems;
  problems.clear();
  EXPECT_THROW(load(R"({"services": {"proxy_group": "spark-ingress"}})", &problems), config::ConfigError);
  EXPECT_NE(problems.find("kubernetes.services.proxy_group: needs manage_services"), std::string::npos)
      << problems;
}

}  // namespace
}  // namespace spark::k8s
