#!/usr/bin/env python3
"""deploy/: the kustomize manifests as `kubectl kustomize` renders them, the Role against the
calls the code makes (`spark-gateway rbac`, generated from the table the API client enforces),
the per-spark tailnet Service against what the gateway really creates (API double), and the
Grafana dashboard's PromQL against the metrics a real gateway exports.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import KubernetesTestCase, Port, wait_until  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")


def kustomize(path):
    if not shutil.which("kubectl"):
        raise unittest.SkipTest("kubectl (with kustomize) is not installed")
    r = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("kubectl kustomize %s failed: %s" % (path, r.stderr))
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(objects):
    out = {}
    for o in objects:
        out.setdefault(o["kind"], []).append(o)
    return out


def rules_as_set(rules):
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


class RenderedManifests(harness.GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.base = kustomize(DEPLOY)
        self.kinds = by_kind(self.base)
        self.config_text = self.kinds["ConfigMap"][0]["data"]["gateway.json"]
        self.config = json.loads(self.config_text)
        self.config_file = os.path.join(self.tmpdir, "gateway.json")
        with open(self.config_file, "w") as f:
            f.write(self.config_text)

    def one(self, kind):
        self.assertEqual(len(self.kinds.get(kind, [])), 1, "one %s" % kind)
        return self.kinds[kind][0]

    def test_kinds_and_namespace(self):
        self.assertEqual(sorted(self.kinds), ["ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget",
                                              "Role", "RoleBinding", "Service", "ServiceAccount"])
        for o in self.base:
            self.assertEqual(o["metadata"]["namespace"], "spark", "%s %s" % (o["kind"], o["metadata"]["name"]))
        overlay = by_kind(kustomize(os.path.join(DEPLOY, "overlays", "prometheus-operator")))
        self.assertEqual(sorted(overlay), sorted(list(self.kinds) + ["PodMonitor"]))
        monitor = overlay["PodMonitor"][0]
        self.assertEqual(monitor["spec"]["podMetricsEndpoints"][0]["port"], "admin")
        self.assertEqual(monitor["spec"]["selector"]["matchLabels"],
                         self.one("Deployment")["spec"]["selector"]["matchLabels"])

    def test_proxy_group_overlay(self):
        """deploy/overlays/proxy-group: the base plus one ingress ProxyGroup of two, and the base's
        config with kubernetes.services.proxy_group naming it (and nothing else changed)."""
        overlay = kustomize(os.path.join(DEPLOY, "overlays", "proxy-group"))
        kinds = by_kind(overlay)
        self.assertEqual(sorted(kinds), sorted(list(self.kinds) + ["ProxyGroup"]))
        (group,) = kinds["ProxyGroup"]
        self.assertEqual(group["apiVersion"], "tailscale.com/v1alpha1")
        self.assertNotIn("namespace", group["metadata"], "a ProxyGroup is cluster-scoped")
        self.assertEqual((group["spec"]["type"], group["spec"]["replicas"]), ("ingress", 2))
        (cm,) = kinds["ConfigMap"]
        self.assertEqual(cm["metadata"]["namespace"], "spark")
        config = json.loads(cm["data"]["gateway.json"])
        self.assertEqual(config["kubernetes"]["services"].pop("proxy_group"), group["metadata"]["name"])
        self.assertEqual(config, self.config, "the overlay's gateway.json is the base's plus proxy_group")
        (dep,) = kinds["Deployment"]
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        self.assertIn(cm["metadata"]["name"], [v.get("configMap", {}).get("name") for v in volumes.values()],
                      "the Deployment mounts the overlay's config")
        path = os.path.join(self.tmpdir, "proxy-group.json")
        with open(path, "w") as f:
            f.write(cm["data"]["gateway.json"])
        r = subprocess.run([self.bin, "check-config", path], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_the_config_is_valid(self):
        r = subprocess.run([self.bin, "check-config", self.config_file], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("kubernetes  namespace spark", r.stdout)

    def test_role_grants_exactly_what_the_code_calls(self):
        r = subprocess.run([self.bin, "rbac", "--config", self.config_file, "--json"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        needed = rules_as_set(json.loads(r.stdout))
        role = self.one("Role")
        self.assertEqual(rules_as_set(role["rules"]), needed,
                         "deploy/base/role.yaml differs from `spark-gateway rbac` (regenerate it)")
        for rule in role["rules"]:
            self.assertNotIn("*", rule["verbs"] + rule["resources"] + rule["apiGroups"], "no wildcards")
        binding = self.one("RoleBinding")
        self.assertEqual(binding["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                              "name": role["metadata"]["name"]})
        self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": self.one("ServiceAccount")["metadata"]["name"],
                                                "namespace": "spark"}])

    def test_deployment_is_locked_down_and_probed(self):
        dep = self.one("Deployment")
        pod = dep["spec"]["template"]["spec"]
        self.assertEqual(pod["serviceAccountName"], self.one("ServiceAccount")["metadata"]["name"])
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertNotEqual(pod["securityContext"].get("runAsUser"), 0)
        self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        (c,) = pod["containers"]
        sc = c["securityContext"]
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertNotIn("add", sc["capabilities"])
        for kind in ("requests", "limits"):
            self.assertIn("memory", c["resources"][kind])
            self.assertIn("cpu", c["resources"][kind])
        admin_port = int(self.config["admin"]["listen"].rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports["admin"], admin_port)
        self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "admin"})
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "admin"})
        drain = self.config["defaults"]["drain_timeout"]
        self.assertTrue(drain.endswith("s"))
        self.assertGreater(pod["terminationGracePeriodSeconds"], int(drain[:-1]),
                           "termination grace must outlast the drain")
        self.assertEqual(c["args"][:3], ["serve", "--config", "/etc/spark-gateway/gateway.json"])
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        self.assertEqual(volumes[mounts["/etc/spark-gateway"]]["configMap"]["name"],
                         self.one("ConfigMap")["metadata"]["name"], "the generated (hashed) ConfigMap")
        token_dir = os.path.dirname(self.config["admin"]["token_file"])
        secret = volumes[mounts[token_dir]]["secret"]
        self.assertEqual(secret["secretName"], "spark-gateway-admin")
        self.assertIn({"key": "token", "path": os.path.basename(self.config["admin"]["token_file"])}, secret["items"])
        self.assertEqual(volumes[mounts[self.config["state_dir"]]].get("emptyDir", None) is not None, True,
                         "a writable state dir on a read-only root")
        # Prometheus finds it: pod annotations on the admin port.
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual((ann["prometheus.io/scrape"], ann["prometheus.io/port"]), ("true", str(admin_port)))
        svc = self.one("Service")
        self.assertEqual(svc["spec"]["selector"], dep["spec"]["selector"]["matchLabels"])
        self.assertEqual(self.config["kubernetes"]["services"]["gateway_selector"],
                         dep["spec"]["template"]["metadata"]["labels"],
                         "the tailnet Services must select the gateway's pods")

    def test_replicas_survive_drains_and_elect_one_reaper(self):
        dep = self.one("Deployment")
        self.assertGreaterEqual(dep["spec"]["replicas"], 2)
        self.assertTrue(self.config["kubernetes"]["leader_election"]["enabled"])
        self.assertEqual(dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
        labels = dep["spec"]["selector"]["matchLabels"]
        pdb = self.one("PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], labels)
        self.assertEqual(pdb["spec"]["minAvailable"], 1)
        pod = dep["spec"]["template"]["spec"]
        term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        self.assertEqual((term["topologyKey"], term["labelSelector"]["matchLabels"]), ("kubernetes.io/hostname", labels))
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
                         "the Lease holder is the pod's name")

    def test_network_policy_lets_out_only_sshd_and_the_api_server(self):
        np = self.one("NetworkPolicy")
        self.assertEqual(sorted(np["spec"]["policyTypes"]), ["Egress", "Ingress"])
        self.assertEqual(np["spec"]["podSelector"]["matchLabels"],
                         self.one("Deployment")["spec"]["selector"]["matchLabels"])
        egress = np["spec"]["egress"]
        to_sparks = [e for e in egress if e.get("to")]
        self.assertEqual(len(to_sparks), 1)
        self.assertEqual(to_sparks[0]["to"][0]["podSelector"]["matchLabels"],
                         dict([self.config["kubernetes"]["selector"].split("=")]))
        self.assertEqual(to_sparks[0]["ports"], [{"protocol": "TCP", "port": self.config["kubernetes"]["target_port"]}])
        others = [p for e in egress if not e.get("to") for p in e["ports"]]
        self.assertEqual(sorted(p["port"] for p in others), [443, 6443], "only the API server besides the sparks")
        lo, hi = map(int, self.config["kubernetes"]["port_range"].split("-"))
        ingress_ports = [p for rule in np["spec"]["ingress"] for p in rule["ports"]]
        self.assertIn({"protocol": "TCP", "port": lo, "endPort": hi}, ingress_ports)


class Image(unittest.TestCase):
    """The Dockerfile installs packages only through the repo's own list and scripts (no
    registry is reachable here to build it; docs/deploy.md says how to build it elsewhere)."""

    def test_runtime_packages_are_derived_from_the_binary(self):
        r = subprocess.run([os.path.join(REPO, "scripts", "runtime-packages"), harness.gateway_bin()],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        packages = r.stdout.split()
        for needed in ("libc6", "libstdc++6", "libssl3", "libcpp-httplib0.11", "libyaml-cpp0.7"):
            self.assertIn(needed, packages)
        self.assertEqual([p for p in packages if p.endswith("-dev")], [], "no build packages at run time")

    def test_dockerfile_uses_the_one_package_list(self):
        with open(os.path.join(REPO, "Dockerfile")) as f:
            dockerfile = f.read()
        self.assertIn("scripts/setup --build-only", dockerfile)
        self.assertIn("scripts/runtime-packages", dockerfile)
        self.assertRegex(dockerfile, r"(?m)^FROM debian:bookworm-slim$")
        self.assertRegex(dockerfile, r"(?m)^USER 65532")
        r = subprocess.run(["bash", "-c", "awk '/^# build$/ {on=1; next} /^#/ {on=0} on && NF' scripts/packages.txt"],
                           cwd=REPO, capture_output=True, text=True)
        build = r.stdout.split()
        self.assertIn("cmake", build)
        self.assertNotIn("openssh-server", build, "test peers stay out of the image build")


class WithTheGateway(KubernetesTestCase):
    """Things checked against a running gateway and the API double."""

    def start_like_deploy(self):
        config = json.loads(by_kind(kustomize(DEPLOY))["ConfigMap"][0]["data"]["gateway.json"])
        self.start_cluster()
        self.enable_admin()
        return config

    def test_example_tailnet_service_matches_what_the_gateway_creates(self):
        config = self.start_like_deploy()
        with open(os.path.join(DEPLOY, "tailscale", "spark-service.example.yaml")) as f:
            example = yaml.safe_load(f)
        spark = example["metadata"]["annotations"]["tailscale.com/hostname"]
        port = self.port_range()[0]
        self.add_deployment(spark, port=port)
        self.start_k8s_gateway(manage_services=True, services=config["kubernetes"]["services"])
        made = wait_until(lambda: self.kube.get("services", example["metadata"]["name"]), 15, "the Service")
        self.assertEqual(made["metadata"]["labels"], example["metadata"]["labels"])
        self.assertEqual(made["metadata"]["annotations"], example["metadata"]["annotations"])
        for key in ("type", "loadBalancerClass", "selector"):
            self.assertEqual(made["spec"][key], example["spec"][key], key)
        want = dict(example["spec"]["ports"][0], targetPort=port)
        self.assertEqual({k: made["spec"]["ports"][0][k] for k in want}, want)

    def test_dashboard_queries_only_exported_metrics(self):
        self.start_like_deploy()
        self.add_deployment("busy-bee")
        self.start_k8s_gateway()
        self.assert_ssh_ok(self.ssh(Port(self.spark_port("busy-bee")), "true"))
        exported = set()
        for name, kind in harness.metrics.scrape(self.admin["url"] + "/metrics", timeout=10).types.items():
            exported.add(name)
            if kind == "histogram":
                exported.update({name + "_bucket", name + "_sum", name + "_count"})
        with open(os.path.join(DEPLOY, "grafana-dashboard.json")) as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        self.assertGreater(len(exprs), 10)
        # Series that exist only with a setting deploy/ leaves off (docs/metrics.md says so):
        # the panel shows the setting when an operator turns it on.
        only_when_set = {"spark_gateway_running_sparks_limit"}  # limits.max_running
        self.assertFalse(only_when_set & exported, "exported without its setting: %s" % (only_when_set & exported))
        exported |= only_when_set
        for expr in exprs:
            names = set(re.findall(r"\b((?:spark_gateway|process)_[a-z_]+)\b", expr))
            self.assertTrue(names, "names no gateway metric: %s" % expr)
            self.assertLessEqual(names, exported, "%s: not exported: %s" % (expr, names - exported))


if __name__ == "__main__":
    harness.main()
