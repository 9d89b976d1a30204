// The tailnet Service a spark should have (desired_tailnet_service): every port of the spark,
// named and numbered as a user dials them, the ProxyGroup annotation with services.proxy_group,
// and what the API would refuse left out; and the mode of an existing Service (proxy_group_of).
#include "k8s/service_reconciler.hpp"

#include <gtest/gtest.h>

namespace spark::k8s {
namespace {

config::KubernetesConfig cluster_config() {
  config::KubernetesConfig k;
  k.namespace_name = "spark";
  k.services.tailscale_tags = "tag:spark";
  return k;
}

ServedSpark dolphin() { return {22017, {{"web", 3000, 22018}, {"api", 8080, 22019}}}; }

TEST(DesiredTailnetService, CarriesSshAndEveryDevPortOnTheSparksOwnPortNumbers) {
  const auto svc = desired_tailnet_service(cluster_config(), "brave-dolphin", dolphin(), "uid-1");
  EXPECT_EQ(svc["metadata"]["name"], "brave-dolphin-ssh");
  EXPECT_EQ(svc["spec"]["type"], "LoadBalancer");
  EXPECT_EQ(svc["spec"]["loadBalancerClass"], "tailscale");
  EXPECT_EQ(svc["spec"]["ports"], json::parse(R"([
    {"name": "ssh", "port": 22, "targetPort": 22017, "protocol": "TCP"},
    {"name": "web", "port": 3000, "targetPort": 22018, "protocol": "TCP"},
    {"name": "api", "port": 8080, "targetPort": 22019, "protocol": "TCP"}])"));
  EXPECT_EQ(svc["metadata"]["annotations"], json::parse(R"({"tailscale.com/hostname": "brave-dolphin",
    "tailscale.com/tags": "tag:spark"})"))
      << "standalone without proxy_group";
  EXPECT_EQ(svc["metadata"]["ownerReferences"][0]["uid"], "uid-1");
  EXPECT_EQ(proxy_group_of(svc), "");
}

TEST(DesiredTailnetService, WithoutDevPortsIsSshAlone) {
  const auto svc = desired_tailnet_service(cluster_config(), "calm-otter", {22020, {}}, "");
  ASSERT_EQ(svc["spec"]["ports"].size(), 1u);
  EXPECT_EQ(svc["spec"]["ports"][0]["targetPort"], 22020);
  EXPECT_FALSE(svc["metadata"].contains("ownerReferences")) << "no Deployment UID known";
}

TEST(DesiredTailnetService, JoinsTheProxyGroupAndKeepsItsTailnetName) {
  auto k = cluster_config();
  k.services.proxy_group = "spark-ingress";
  const auto svc = desired_tailnet_service(k, "brave-dolphin", dolphin(), "uid-1");
  EXPECT_EQ(svc["metadata"]["annotations"]["tailscale.com/proxy-group"], "spark-ingress");
  EXPECT_EQ(proxy_group_of(svc), "spark-ingress");
  EXPECT_EQ(svc["metadata"]["annotations"]["tailscale.com/hostname"], "brave-dolphin");
  EXPECT_EQ(svc["spec"]["loadBalancerClass"], "tailscale")
      << "a ProxyGroup L3 ingress is still of class tailscale";
  EXPECT_EQ(svc["spec"]["ports"].size(), 3u);
}

TEST(DesiredTailnetService, LeavesOutADevPortTheApiWouldRefuse) {
  auto k = cluster_config();
  k.services.port = 2222;  // ssh's Service port, not the spark's sshd port
  std::vector<std::string> left_out;
  const ServedSpark served{22017, {{"web", 3000, 22018}, {"alt-ssh", 2222, 22019}, {"web", 3001, 22020}}};
  const auto svc = desired_tailnet_service(k, "brave-dolphin", served, "", &left_out);
  ASSERT_EQ(svc["spec"]["ports"].size(), 2u);
  EXPECT_EQ(svc["spec"]["ports"][1]["name"], "web");
  EXPECT_EQ(svc["spec"]["ports"][1]["port"], 3000);
  ASSERT_EQ(left_out.size(), 2u);
  EXPECT_NE(left_out[0].find("dev port alt-ssh (2222): port 2222 is already a port of Service brave-dolphin-ssh"),
            std::string::npos)
      << left_out[0];
  EXPECT_NE(left_out[1].find("the name web is already a port"), std::string::npos) << left_out[1];
  EXPECT_NO_THROW(desired_tailnet_service(k, "brave-dolphin", served, "")) << "left_out is optional";
}

TEST(ServedSpark, FromASparkConfig) {
  config::SparkConfig s;
  s.name = "brave-dolphin";
  s.listen.port = 22017;
  config::SparkPort web;
  web.name = "web";
  web.listen.port = 22018;
  web.port = 3000;
  s.ports.push_back(web);
  EXPECT_EQ(served_spark(s), (ServedSpark{22017, {{"web", 3000, 22018}}}));
}

TEST(ProxyGroupOf, ReadsTheAnnotationOfAnyService) {
  EXPECT_EQ(proxy_group_of(json::parse(R"({"metadata": {"annotations": {"tailscale.com/proxy-group": "pg"}}})")),
            "pg");
  EXPECT_EQ(proxy_group_of(json::parse(R"({"metadata": {"name": "x"}})")), "");
  EXPECT_EQ(proxy_group_of(json::parse(R"({"metadata": {"annotations": {"tailscale.com/proxy-group": 7}}})")), "");
  EXPECT_EQ(proxy_group_of(json::array()), "") << "not an object";
}

}  // namespace
}  // namespace spark::k8s
