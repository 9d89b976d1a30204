// Parsing of Kubernetes API payloads shaped as the API serves them (apps/v1 Deployment and
// ReplicaSet, core/v1 Pod and Status), pod ownership, which existing Services are the spark CLI's,
// request attributes for RBAC, and error answers.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cerrno>
#include <functional>

#include "k8s/api_client.hpp"
#include "k8s/rbac.hpp"
#include "k8s/resources.hpp"
#include "k8s/service_reconciler.hpp"

namespace spark::k8s {
namespace {

// A Deployment as `kubectl get deploy -o json` shows a sleeping spark: replicas 0 is present
// in the Deployment's spec; status omits zero counts.
const char* kSleepingDeployment = R"({
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "brave-dolphin", "namespace": "spark", "uid": "6a1f8e0c-1b2d-4c3e-9f40-5a6b7c8d9e0f",
    "resourceVersion": "48211", "generation": 7, "creationTimestamp": "2026-11-20T09:15:02Z",
    "labels": {"app.kubernetes.io/part-of": "spark", "app": "brave-dolphin"},
    "annotations": {"spark-gateway/port": "22017", "spark-gateway/last-activity": "2026-11-22T18:01:12.250Z",
      "deployment.kubernetes.io/revision": "3"}},
  "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "brave-dolphin"}},
    "template": {"metadata": {"labels": {"app": "brave-dolphin"}},
      "spec": {"containers": [{"name": "spark", "image": "ghcr.io/example/spark:1"}]}}},
  "status": {"observedGeneration": 7, "conditions": [{"type": "Available", "status": "True"}]}
})";

TEST(ParseDeployment, ASleepingSpark) {
  const auto d = parse_deployment(nlohmann::json::parse(kSleepingDeployment));
  EXPECT_EQ(d.name, "brave-dolphin");
  EXPECT_EQ(d.uid, "6a1f8e0c-1b2d-4c3e-9f40-5a6b7c8d9e0f");
  EXPECT_EQ(d.resource_version, "48211");
  EXPECT_EQ(d.creation_timestamp, "2026-11-20T09:15:02Z");
  EXPECT_EQ(d.replicas, 0);
  EXPECT_EQ(d.ready_replicas, 0) << "readyReplicas omitted means 0";
  EXPECT_EQ(d.match_labels, (Labels{{"app", "brave-dolphin"}}));
  EXPECT_EQ(d.annotation("spark-gateway/port"), "22017");
  EXPECT_EQ(d.annotation("spark-gateway/idle-timeout"), std::nullopt);
}

TEST(ParseDeployment, ReplicasOmittedMeansZeroAndRunningCounts) {
  auto j = nlohmann::json::parse(kSleepingDeployment);
  j["spec"].erase("replicas");
  EXPECT_EQ(parse_deployment(j).replicas, 0);
  j["spec"]["replicas"] = 1;
  j["status"]["readyReplicas"] = 1;
  const auto d = parse_deployment(j);
  EXPECT_EQ(d.replicas, 1);
  EXPECT_EQ(d.ready_replicas, 1);
}

TEST(ParseDeployment, WrongTypesAndMissingPartsTakeDefaultsNotExceptions) {
  for (const char* text : {R"({})", R"({"metadata": 5, "spec": []})", R"({"metadata": {"name": 7,
       "annotations": {"a": 1, "b": "ok"}}, "spec": {"replicas": "1", "selector": {"matchLabels": ["x"]}}})",
                           R"([])", R"(null)", R"("text")"}) {
    const auto j = nlohmann::json::parse(text);
    Deployment d;
    ASSERT_NO_THROW(d = parse_deployment(j)) << text;
    EXPECT_EQ(d.replicas, 0) << text;
    EXPECT_TRUE(d.match_labels.empty()) << text;
  }
  const auto d = parse_deployment(nlohmann::json::parse(R"({"metadata": {"annotations": {"a": 1, "b": "ok"}}})"));
  EXPECT_EQ(d.annotations, (Labels{{"b", "ok"}})) << "non-string annotation values are skipped";
}

// A pod of a spark that is starting, then running, then being deleted.
nlohmann::json pod(const std::string& phase, const std::string& ip) {
  auto p = nlohmann::json::parse(R"({
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "brave-dolphin-7d9c8b6f5-x2x9z", "namespace": "spark", "resourceVersion": "48230",
      "labels": {"app": "brave-dolphin", "pod-template-hash": "7d9c8b6f5"}},
    "spec": {"containers": [{"name": "spark", "image": "ghcr.io/example/spark:1"}]},
    "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
  })");
  p["status"]["phase"] = phase;
  if (!ip.empty()) {
    p["status"]["podIP"] = ip;
    p["status"]["conditions"].push_back({{"type", "Ready"}, {"status", "True"}});
  }
  return p;
}

TEST(ParsePod, PendingRunningTerminating) {
  auto pending = parse_pod(pod("Pending", ""));
  EXPECT_EQ(pending.phase, "Pending");
  EXPECT_EQ(pending.pod_ip, "");
  EXPECT_FALSE(pending.ready);
  EXPECT_FALSE(pending.terminating);
  auto running = parse_pod(pod("Running", "10.42.1.7"));
  EXPECT_EQ(running.pod_ip, "10.42.1.7");
  EXPECT_TRUE(running.ready);
  EXPECT_EQ(running.labels.at("app"), "brave-dolphin");
  auto j = pod("Running", "10.42.1.7");
  j["metadata"]["deletionTimestamp"] = "2026-11-22T18:05:00Z";
  j["metadata"]["deletionGracePeriodSeconds"] = 30;
  EXPECT_TRUE(parse_pod(j).terminating);
}

TEST(ParsePod, StuckContainersGiveTheReasonAndMessage) {
  auto j = pod("Pending", "");
  j["status"]["containerStatuses"] = nlohmann::json::parse(R"([{"name": "spark", "ready": false,
    "restartCount": 0, "image": "ghcr.io/example/spark:nope",
    "state": {"waiting": {"reason": "ImagePullBackOff",
      "message": "Back-off pulling image \"ghcr.io/example/spark:nope\""}}}])");
  EXPECT_EQ(parse_pod(j).stuck_reason,
            "container spark: ImagePullBackOff: Back-off pulling image \"ghcr.io/example/spark:nope\"");
  j["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] = "ContainerCreating";
  EXPECT_EQ(parse_pod(j).stuck_reason, "") << "ContainerCreating clears by itself";
  j["status"]["initContainerStatuses"] = nlohmann::json::parse(R"([{"name": "init-home",
    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])");
  EXPECT_EQ(parse_pod(j).stuck_reason, "container init-home: CrashLoopBackOff");
}

// The ReplicaSet a Deployment's controller makes for brave-dolphin (kSleepingDeployment), as the
// API serves it, and a pod it owns.
const char* kReplicaSet = R"({
  "apiVersion": "apps/v1", "kind": "ReplicaSet",
  "metadata": {"name": "brave-dolphin-7d9c8b6f5", "namespace": "spark", "uid": "0b7d2c4e-8f1a-4b3c-9d2e-1f0a9b8c7d6e",
    "resourceVersion": "48212", "generation": 4, "labels": {"app": "brave-dolphin", "pod-template-hash": "7d9c8b6f5"},
    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "brave-dolphin",
      "uid": "6a1f8e0c-1b2d-4c3e-9f40-5a6b7c8d9e0f", "controller": true, "blockOwnerDeletion": true}]},
  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "brave-dolphin", "pod-template-hash": "7d9c8b6f5"}}},
  "status": {"replicas": 1}
})";

nlohmann::json owned_pod() {
  auto p = pod("Running", "10.42.1.7");
  p["metadata"]["ownerReferences"] = nlohmann::json::parse(R"([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
    "name": "brave-dolphin-7d9c8b6f5", "uid": "0b7d2c4e-8f1a-4b3c-9d2e-1f0a9b8c7d6e", "controller": true,
    "blockOwnerDeletion": true}])");
  return p;
}

TEST(Ownership, ParsedFromTheControllerReference) {
  const auto rs = parse_replica_set(nlohmann::json::parse(kReplicaSet));
  EXPECT_EQ(rs.name, "brave-dolphin-7d9c8b6f5");
  EXPECT_EQ(rs.uid, "0b7d2c4e-8f1a-4b3c-9d2e-1f0a9b8c7d6e");
  ASSERT_TRUE(rs.controller);
  EXPECT_EQ(*rs.controller, (OwnerReference{"Deployment", "brave-dolphin", "6a1f8e0c-1b2d-4c3e-9f40-5a6b7c8d9e0f"}));
  const auto p = parse_pod(owned_pod());
  ASSERT_TRUE(p.controller);
  EXPECT_EQ(p.controller->kind, "ReplicaSet");
  // Only the entry with controller: true counts; a plain owner (e.g. a garbage-collection link)
  // does not make an object someone's pod.
  auto j = owned_pod();
  j["metadata"]["ownerReferences"][0]["controller"] = false;
  EXPECT_FALSE(parse_pod(j).controller);
  j["metadata"]["ownerReferences"][0].erase("controller");
  EXPECT_FALSE(parse_pod(j).controller);
  j["metadata"]["ownerReferences"] = "nonsense";
  EXPECT_FALSE(parse_pod(j).controller);
  EXPECT_FALSE(parse_pod(pod("Running", "10.42.1.7")).controller) << "a pod made by hand has no owner";
}

TEST(Ownership, APodIsTheSparksOnlyThroughItsDeploymentsReplicaSetByUid) {
  const auto d = parse_deployment(nlohmann::json::parse(kSleepingDeployment));
  const auto rs = parse_replica_set(nlohmann::json::parse(kReplicaSet));
  EXPECT_TRUE(owned_by(parse_pod(owned_pod()), rs, d));

  // Another spark's labels on a pod made by hand: no owner, not the spark's.
  EXPECT_FALSE(owned_by(parse_pod(pod("Running", "10.42.9.9")), rs, d));
  // The ReplicaSet is not known (yet): not the spark's, until the cache has it.
  EXPECT_FALSE(owned_by(parse_pod(owned_pod()), std::nullopt, d));
  // Owned by a ReplicaSet of the same name but another UID (deleted and re-created): not it.
  auto other_uid = owned_pod();
  other_uid["metadata"]["ownerReferences"][0]["uid"] = "ffffffff-0000-4000-8000-000000000000";
  EXPECT_FALSE(owned_by(parse_pod(other_uid), rs, d));
  // Owned by something else that is not a ReplicaSet (a Job, a StatefulSet) with that name.
  auto job = owned_pod();
  job["metadata"]["ownerReferences"][0]["kind"] = "Job";
  EXPECT_FALSE(owned_by(parse_pod(job), rs, d));
  // The ReplicaSet belongs to another Deployment (or to none, made by hand).
  auto foreign = nlohmann::json::parse(kReplicaSet);
  foreign["metadata"]["ownerReferences"][0]["uid"] = "11111111-2222-4333-8444-555555555555";
  EXPECT_FALSE(owned_by(parse_pod(owned_pod()), parse_replica_set(foreign), d));
  foreign["metadata"].erase("ownerReferences");
  EXPECT_FALSE(owned_by(parse_pod(owned_pod()), parse_replica_set(foreign), d));
  // The Deployment was deleted and created again under the same name: a new UID, not its pods.
  auto again = nlohmann::json::parse(kSleepingDeployment);
  again["metadata"]["uid"] = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b";
  EXPECT_FALSE(owned_by(parse_pod(owned_pod()), rs, parse_deployment(again)));
  // Empty UIDs never match each other.
  auto bare_rs = rs;
  bare_rs.uid.clear();
  auto bare_pod = parse_pod(owned_pod());
  bare_pod.controller->uid.clear();
  EXPECT_FALSE(owned_by(bare_pod, bare_rs, d));
}

// What the spark CLI makes today for brave-dolphin: a tailnet LoadBalancer straight at the pod.
const char* kCliService = R"({
  "apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "brave-dolphin-ssh", "namespace": "spark", "resourceVersion": "48300",
    "annotations": {"tailscale.com/hostname": "brave-dolphin"}},
  "spec": {"type": "LoadBalancer", "loadBalancerClass": "tailscale", "selector": {"app": "brave-dolphin"},
    "ports": [{"port": 22, "targetPort": 22, "protocol": "TCP"}]}
})";

TEST(SparkCliService, OnlyAServicePointingTheSparksNameAtItsOwnPodIsTheClis) {
  const auto d = parse_deployment(nlohmann::json::parse(kSleepingDeployment));
  const auto cli = nlohmann::json::parse(kCliService);
  EXPECT_EQ(spark_cli_service_mismatch(cli, "brave-dolphin", d), "");
  auto no_hostname = cli;
  no_hostname["metadata"].erase("annotations");
  EXPECT_EQ(spark_cli_service_mismatch(no_hostname, "brave-dolphin", d), "") << "the operator's default name";
  auto by_match_labels = cli;
  by_match_labels["spec"]["selector"] = {{"app", "brave-dolphin"}};  // == the Deployment's matchLabels here
  EXPECT_EQ(spark_cli_service_mismatch(by_match_labels, "brave-dolphin", d), "");
  auto owned = cli;
  owned["metadata"]["ownerReferences"] = nlohmann::json::array(
      {{{"apiVersion", "apps/v1"}, {"kind", "Deployment"}, {"name", "brave-dolphin"}, {"uid", d.uid}}});
  EXPECT_EQ(spark_cli_service_mismatch(owned, "brave-dolphin", d), "") << "owned by the spark's Deployment";

  auto mismatch = [&](const std::function<void(nlohmann::json&)>& change) {
    auto j = cli;
    change(j);
    return spark_cli_service_mismatch(j, "brave-dolphin", d);
  };
  EXPECT_NE(mismatch([](auto& j) { j["spec"]["selector"] = {{"app", "bastion"}}; }).find("selector"), std::string::npos);
  EXPECT_NE(mismatch([](auto& j) { j["spec"]["selector"] = nlohmann::json::object(); }), "")
      << "no selector: endpoints someone keeps by hand";
  EXPECT_NE(mismatch([](auto& j) { j["spec"]["selector"]["tier"] = "db"; }), "");
  EXPECT_NE(mismatch([](auto& j) { j["spec"]["type"] = "ClusterIP"; }).find("ClusterIP"), std::string::npos);
  EXPECT_NE(mismatch([](auto& j) { j["spec"].erase("type"); }), "") << "ClusterIP by default";
  EXPECT_NE(mismatch([](auto& j) { j["metadata"]["annotations"]["tailscale.com/hostname"] = "bastion"; }), "");
  EXPECT_NE(mismatch([](auto& j) { j["metadata"]["labels"] = {{"app.kubernetes.io/managed-by", "Helm"}}; })
                .find("Helm"),
            std::string::npos);
  EXPECT_NE(mismatch([](auto& j) {
              j["metadata"]["ownerReferences"] = nlohmann::json::array(
                  {{{"kind", "HelmRelease"}, {"name", "bastion"}, {"uid", "u-1"}, {"controller", true}}});
            }).find("HelmRelease bastion"),
            std::string::npos);
  EXPECT_NE(mismatch([](auto& j) { j["metadata"] = 5; }), "") << "odd objects are nobody's, no exception";
  EXPECT_NE(spark_cli_service_mismatch(cli, "calm-otter", std::nullopt), "") << "another spark's";
  EXPECT_NE(spark_cli_service_mismatch(owned, "brave-dolphin", std::nullopt), "")
      << "an owner that cannot be checked is not trusted";
}

TEST(SelectorMatches, EveryPairMustMatchAndEmptyMatchesNothing) {
  const Labels pod_labels{{"app", "brave-dolphin"}, {"pod-template-hash", "7d9c"}};
  EXPECT_TRUE(selector_matches({{"app", "brave-dolphin"}}, pod_labels));
  EXPECT_FALSE(selector_matches({{"app", "brave-dolphin"}, {"tier", "x"}}, pod_labels));
  EXPECT_FALSE(selector_matches({{"app", "calm-otter"}}, pod_labels));
  EXPECT_FALSE(selector_matches({}, pod_labels));
}

TEST(ResourceVersions, NewerOnlyWhenBothAreNumbers) {
  EXPECT_TRUE(newer_resource_version("48231", "48230"));
  EXPECT_FALSE(newer_resource_version("48230", "48231"));
  EXPECT_FALSE(newer_resource_version("48230", "48230"));
  EXPECT_FALSE(newer_resource_version("abc", "1"));
  EXPECT_FALSE(newer_resource_version("", "1"));
  EXPECT_FALSE(newer_resource_version("12x", "1"));
}

TEST(ErrorFromResponse, StatusBodiesGiveReasonAndMessage) {
  const auto e = error_from_response(409, R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
    "message":"Operation cannot be fulfilled on deployments.apps \"brave-dolphin\": the object has been modified; please apply your changes to the latest version and try again",
    "reason":"Conflict","details":{"name":"brave-dolphin","group":"apps","kind":"deployments"},"code":409})",
                                     "PATCH /apis/apps/v1/namespaces/spark/deployments/brave-dolphin");
  EXPECT_TRUE(e.is_conflict());
  EXPECT_EQ(e.reason(), "Conflict");
  EXPECT_NE(std::string(e.what()).find("the object has been modified"), std::string::npos);
  const auto gone = error_from_response(410, R"({"kind":"Status","status":"Failure",
    "message":"too old resource version: 1000 - 48000","reason":"Expired","code":410})", "watch");
  EXPECT_TRUE(gone.is_expired());
  EXPECT_EQ(gone.reason(), "Expired");
}

TEST(ErrorFromResponse, NonStatusBodiesAreQuotedShortly) {
  const auto e = error_from_response(502, "<html>Bad Gateway</html>", "GET /api");
  EXPECT_EQ(e.reason(), "HTTP 502");
  EXPECT_NE(std::string(e.what()).find("<html>Bad Gateway</html>"), std::string::npos);
  const auto odd = error_from_response(500, R"({"kind": 5, "message": []})", "GET /api");
  EXPECT_EQ(odd.code(), 500);
  const auto big = error_from_response(500, std::string(10000, 'x'), "GET /api");
  EXPECT_LT(std::string(big.what()).size(), 400u);
}

TEST(ApiError, TransientOnesAreWorthRetrying) {
  // No answer, throttling and server-side failures pass; what the request itself got wrong does not.
  for (int code : {0, 429, 500, 502, 503, 504}) EXPECT_TRUE(ApiError(code, "x", "m").is_transient()) << code;
  for (int code : {400, 401, 403, 404, 409, 410, 422}) EXPECT_FALSE(ApiError(code, "x", "m").is_transient()) << code;
}

TEST(DescribeTransportError, NamesTheKindAnOperatorCanActOn) {
  using httplib::Error;
  using std::chrono::milliseconds;
  const auto describe = [](Error e, int err, int waited_ms) {
    return describe_transport_error(static_cast<int>(e), err, milliseconds(waited_ms), milliseconds(10000));
  };
  EXPECT_EQ(describe(Error::Connection, ECONNREFUSED, 1), "connection refused");
  EXPECT_EQ(describe(Error::Read, ECONNRESET, 120), "connection reset by peer after 120 ms");
  EXPECT_EQ(describe(Error::Read, EAGAIN, 10001), "timed out after 10001 ms");
  EXPECT_EQ(describe(Error::Read, 0, 10000), "timed out after 10000 ms") << "a whole timeout waited is a timeout";
  EXPECT_EQ(describe(Error::ConnectionTimeout, 0, 5000), "timed out after 5000 ms");
  EXPECT_EQ(describe(Error::SSLConnection, 0, 3), "TLS handshake failed");
  EXPECT_EQ(describe(Error::SSLServerVerification, 0, 3), "the server's TLS certificate does not verify");
  EXPECT_EQ(describe(Error::Read, 0, 30), "the connection closed before an answer after 30 ms");
  EXPECT_EQ(describe(Error::Connection, EHOSTUNREACH, 1), "no route to the API server");
}

TEST(RequestAttributes, AsTheApiServerDerivesThem) {
  using A = RequestAttributes;
  auto attrs = [](const char* method, const char* path) { return request_attributes(method, path).value_or(A{"?", "?", "?"}); };
  auto eq = [](const A& a, const A& b) { return a.api_group == b.api_group && a.resource == b.resource && a.verb == b.verb; };
  EXPECT_TRUE(eq(attrs("GET", "/apis/apps/v1/namespaces/spark/deployments?labelSelector=x%3Dy"), A{"apps", "deployments", "list"}));
  EXPECT_TRUE(eq(attrs("GET", "/apis/apps/v1/namespaces/spark/deployments?watch=1&resourceVersion=5"), A{"apps", "deployments", "watch"}));
  EXPECT_TRUE(eq(attrs("GET", "/apis/apps/v1/namespaces/spark/deployments?resourceVersion=5&watch=true"), A{"apps", "deployments", "watch"}));
  EXPECT_TRUE(eq(attrs("GET", "/apis/apps/v1/namespaces/spark/deployments/brave-dolphin"), A{"apps", "deployments", "get"}));
  EXPECT_TRUE(eq(attrs("PATCH", "/apis/apps/v1/namespaces/spark/deployments/brave-dolphin/scale"), A{"apps", "deployments/scale", "patch"}));
  EXPECT_TRUE(eq(attrs("POST", "/api/v1/namespaces/spark/events"), A{"", "events", "create"}));
  EXPECT_TRUE(eq(attrs("PUT", "/apis/coordination.k8s.io/v1/namespaces/spark/leases/spark-gateway-reaper"), A{"coordination.k8s.io", "leases", "update"}));
  EXPECT_TRUE(eq(attrs("DELETE", "/api/v1/namespaces/spark/services/brave-dolphin-ssh"), A{"", "services", "delete"}));
  EXPECT_FALSE(request_attributes("GET", "/api/v1/nodes"));
  EXPECT_FALSE(request_attributes("GET", "/version"));
  EXPECT_FALSE(request_attributes("OPTIONS", "/api/v1/namespaces/spark/pods"));
  EXPECT_FALSE(request_attributes("GET", "/api/v1/namespaces/spark/pods/a/b/c"));
}

TEST(RequiredRules, OnlyWhatTheConfigurationUses) {
  config::KubernetesConfig cfg;
  auto has = [](const std::vector<PolicyRule>& rules, const char* group, const char* resource, const char* verb) {
    return permits(rules, RequestAttributes{group, resource, verb});
  };
  const auto base = required_rules(cfg);
  // The wake patches the Deployment itself (replicas and last-activity in one write).
  EXPECT_FALSE(has(base, "apps", "deployments/scale", "patch"));
  EXPECT_TRUE(has(base, "apps", "deployments", "patch"));
  EXPECT_TRUE(has(base, "", "pods", "watch"));
  // ReplicaSets: listed and watched to tell the spark's pods from others, nothing more.
  EXPECT_TRUE(has(base, "apps", "replicasets", "list"));
  EXPECT_TRUE(has(base, "apps", "replicasets", "watch"));
  EXPECT_FALSE(has(base, "apps", "replicasets", "get"));
  EXPECT_FALSE(has(base, "apps", "replicasets", "patch"));
  EXPECT_FALSE(has(base, "apps", "deployments", "delete"));
  EXPECT_FALSE(has(base, "", "services", "create"));
  EXPECT_FALSE(has(base, "coordination.k8s.io", "leases", "update"));
  EXPECT_FALSE(has(base, "", "pods", "delete"));
  cfg.manage_services = true;
  cfg.leader_election.enabled = true;
  const auto all = required_rules(cfg);
  EXPECT_TRUE(has(all, "", "services", "create"));
  EXPECT_TRUE(has(all, "coordination.k8s.io", "leases", "update"));
  EXPECT_NE(role_yaml(all, "spark", "spark-gateway").find("resources: [\"leases\"]"), std::string::npos);
  EXPECT_EQ(role_yaml(all, "spark", "spark-gateway").find('*'), std::string::npos) << "no wildcards";
}

}  // namespace
}  // namespace spark::k8s
