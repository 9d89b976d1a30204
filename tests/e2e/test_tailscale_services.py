#!/usr/bin/env python3
"""kubernetes.manage_services: the gateway keeps a Tailscale LoadBalancer Service per spark
(`<spark>-ssh`, tailnet hostname <spark>) pointing at its own pods, against the Kubernetes API
double (deploy/tailscale/, docs/deploy.md). Create a spark -> its Service appears; delete it ->
the Service goes; hand edits are put back; the spark CLI's pod-pointing Service is taken over.
The Service carries every port of the spark (ssh, and each dev port of its `ports` annotation on
the spark's own port number), following the annotation; with services.proxy_group every Service
joins that Tailscale ProxyGroup, a standalone one by being deleted and created again (one at a
time, waiting for the operator's finalizer), and back out when the option is unset.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import PREFIX, KubernetesTestCase, Port, wait_until  # noqa: E402

GATEWAY_LABELS = {"app.kubernetes.io/name": "spark-gateway", "app.kubernetes.io/instance": "e2e"}
PROXY_GROUP = "tailscale.com/proxy-group"
OPERATOR_FINALIZER = "tailscale.com/finalizer"  # what the Tailscale operator puts on a Service it serves


class TailscaleServices(KubernetesTestCase):

    def start(self, **services):
        self.start_cluster()
        section = {"gateway_selector": GATEWAY_LABELS}
        section.update(services)
        return self.start_k8s_gateway(manage_services=True, services=section)

    def service(self, name):
        return self.kube.get("services", name)

    def wait_service(self, name, predicate=lambda s: True, what=None, timeout=15):
        return wait_until(lambda: (lambda s: s if s is not None and predicate(s) else None)(self.service(name)),
                          timeout, what or "Service %s" % name)

    def dev_port(self, spark, name, timeout=15):
        """The gateway port discovery gave dev port `name` of `spark` (its port.NAME annotation)."""
        return int(wait_until(lambda: self.annotation(spark, "port." + name), timeout,
                              "the gateway to record %s's dev port %s" % (spark, name)))

    def ports_of(self, svc):
        """The Service's ports as a user reads them: name -> (port, targetPort, protocol)."""
        return {p["name"]: (p["port"], p["targetPort"], p["protocol"]) for p in svc["spec"]["ports"]}

    def service_requests(self, *names, method=None, since=0):
        """The successful Service calls (of `names`, if given) among the double's requests from
        index `since` on (a len(self.kube.requests()) taken earlier)."""
        def name_of(r):
            return r.name or (r.json or {}).get("metadata", {}).get("name") if r.method == "POST" else r.name
        return [r for r in self.kube.requests()[since:]
                if r.resource == "services" and r.status < 300 and (method is None or r.method == method)
                and (not names or name_of(r) in names)]

    def assert_points_at_gateway(self, svc, spark, port):
        meta, spec = svc["metadata"], svc["spec"]
        self.assertEqual(meta["annotations"]["tailscale.com/hostname"], spark)
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "spark-gateway")
        self.assertEqual(meta["labels"][PREFIX + "spark"], spark)
        self.assertEqual(spec["type"], "LoadBalancer")
        self.assertEqual(spec["loadBalancerClass"], "tailscale")
        self.assertEqual(spec["selector"], GATEWAY_LABELS, "selects the gateway's pods and nothing else")
        self.assertEqual(spec["ports"][0]["name"], "ssh")
        self.assertEqual(spec["ports"][0]["port"], 22)
        self.assertEqual(spec["ports"][0]["targetPort"], port)
        self.assertEqual(spec["ports"][0]["protocol"], "TCP")

    def test_service_follows_the_spark(self):
        self.start(tailscale_tags="tag:spark")
        self.add_deployment("brave-dolphin")
        port = self.spark_port("brave-dolphin")
        svc = self.wait_service("brave-dolphin-ssh")
        self.assert_points_at_gateway(svc, "brave-dolphin", port)
        self.assertEqual(len(svc["spec"]["ports"]), 1, "a spark without dev ports: ssh alone")
        self.assertEqual(svc["metadata"]["annotations"]["tailscale.com/tags"], "tag:spark")
        self.assertNotIn(PROXY_GROUP, svc["metadata"]["annotations"], "standalone without services.proxy_group")
        owner = svc["metadata"]["ownerReferences"][0]
        self.assertEqual((owner["kind"], owner["name"], owner["uid"]),
                         ("Deployment", "brave-dolphin", self.deployment("brave-dolphin")["metadata"]["uid"]))
        # A second spark gets its own; deleting the first removes only its Service.
        self.add_deployment("calm-otter")
        self.wait_service("calm-otter-ssh")
        self.kube.delete("deployments", "brave-dolphin")
        wait_until(lambda: self.service("brave-dolphin-ssh") is None, 15, "the Service of a deleted spark to go")
        self.assertIsNotNone(self.service("calm-otter-ssh"))

    def test_hand_edits_are_put_back(self):
        self.start()
        self.add_deployment("tidy-tiger")
        port = self.spark_port("tidy-tiger")
        self.wait_service("tidy-tiger-ssh")
        # Someone points it at the pod again and changes the port.
        self.kube.patch("services", "tidy-tiger-ssh",
                        {"spec": {"selector": {"app": "tidy-tiger"},
                                  "ports": [{"name": "ssh", "port": 22, "targetPort": 22, "protocol": "TCP"}]}})
        svc = self.wait_service("tidy-tiger-ssh", lambda s: s["spec"]["selector"] == GATEWAY_LABELS
                                and s["spec"]["ports"][0]["targetPort"] == port, "the Service to be put back")
        self.assert_points_at_gateway(svc, "tidy-tiger", port)

    def test_the_service_carries_every_port_and_follows_the_annotation(self):
        self.start()
        self.add_deployment("brave-dolphin", ports="web=3000,api=8080")
        ssh_port = self.spark_port("brave-dolphin")
        web, api = self.dev_port("brave-dolphin", "web"), self.dev_port("brave-dolphin", "api")
        self.assertEqual(len({ssh_port, web, api}), 3, "a gateway port each")
        # http://brave-dolphin:3000 from the tailnet: the Service's port 3000 is the spark's own
        # port number and leads to the gateway's port for it.
        svc = self.wait_service("brave-dolphin-ssh", lambda s: len(s["spec"]["ports"]) == 3, "a Service with 3 ports")
        self.assert_points_at_gateway(svc, "brave-dolphin", ssh_port)
        self.assertEqual(self.ports_of(svc), {"ssh": (22, ssh_port, "TCP"), "web": (3000, web, "TCP"),
                                              "api": (8080, api, "TCP")})
        self.assertTrue(all(p.get("nodePort") for p in svc["spec"]["ports"]), "the API server took it as valid")

        # The annotation changes: api goes, docs comes; web keeps its gateway port.
        self.kube.annotate("deployments", "brave-dolphin", **{PREFIX + "ports": "web=3000,docs=8000"})
        docs = self.dev_port("brave-dolphin", "docs")
        svc = self.wait_service("brave-dolphin-ssh", lambda s: set(self.ports_of(s)) == {"ssh", "web", "docs"},
                                "the Service to follow the new ports annotation")
        self.assertEqual(self.ports_of(svc), {"ssh": (22, ssh_port, "TCP"), "web": (3000, web, "TCP"),
                                              "docs": (8000, docs, "TCP")})

        # A hand edit of the ports (web dropped, ssh pointed elsewhere) is put back.
        self.kube.patch("services", "brave-dolphin-ssh",
                        {"spec": {"ports": [{"name": "ssh", "port": 22, "targetPort": 22, "protocol": "TCP"}]}})
        svc = self.wait_service("brave-dolphin-ssh", lambda s: self.ports_of(s).get("web") == (3000, web, "TCP")
                                and self.ports_of(s)["ssh"] == (22, ssh_port, "TCP"), "the ports to be put back")
        self.assertEqual(set(self.ports_of(svc)), {"ssh", "web", "docs"})

        # No dev ports any more: ssh alone, the same Service all along (patched, never replaced).
        uid = svc["metadata"]["uid"]
        self.kube.annotate("deployments", "brave-dolphin", **{PREFIX + "ports": None})
        svc = self.wait_service("brave-dolphin-ssh", lambda s: list(self.ports_of(s)) == ["ssh"],
                                "the dev ports to leave the Service")
        self.assertEqual(svc["metadata"]["uid"], uid)
        self.assertEqual(self.service_requests("brave-dolphin-ssh", method="DELETE"), [])

    def test_the_spark_clis_service_is_taken_over(self):
        self.start_cluster()
        self.add_deployment("old-fox")
        # What the spark CLI creates today: a tailnet LoadBalancer straight at the pod.
        self.kube.create("services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "old-fox-ssh", "annotations": {"tailscale.com/hostname": "old-fox"}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "tailscale", "selector": {"app": "old-fox"},
                     "ports": [{"port": 22, "targetPort": 22}]}})
        self.start_k8s_gateway(manage_services=True, services={"gateway_selector": GATEWAY_LABELS})
        port = self.spark_port("old-fox")
        svc = self.wait_service("old-fox-ssh", lambda s: s["metadata"].get("labels", {}).get(
            "app.kubernetes.io/managed-by") == "spark-gateway", "the CLI's Service to be taken over")
        self.assert_points_at_gateway(svc, "old-fox", port)
        wait_until(lambda: self.kube.events("old-fox", reason="ServiceAdopted"), 10, "a ServiceAdopted Event")

    def test_a_service_it_cannot_change_is_reported_not_fought(self):
        self.start_cluster()
        self.add_deployment("odd-owl")
        # Another load balancer class cannot be changed in place (the API answers 422).
        self.kube.create("services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "odd-owl-ssh"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/other",
                     "selector": {"app": "odd-owl"}, "ports": [{"port": 22}]}})
        gw = self.start_k8s_gateway(manage_services=True, services={"gateway_selector": GATEWAY_LABELS})
        gw.wait_log("spark odd-owl: cannot manage Service odd-owl-ssh", "may not change once set")
        wait_until(lambda: self.kube.events("odd-owl", reason="ServiceNotManaged"), 10, "a ServiceNotManaged Event")
        self.assertEqual(self.service("odd-owl-ssh")["spec"]["selector"], {"app": "odd-owl"})
        # Other sparks are still served with their Services.
        self.add_deployment("fine-fly")
        self.wait_service("fine-fly-ssh")
        patches = self.kube.requests(method="PATCH", resource="services", name="odd-owl-ssh")
        self.assertLessEqual(len(patches), 3, "an invalid change is not retried in a loop")

    def test_services_of_others_and_without_the_option_are_left_alone(self):
        self.start_cluster()
        self.kube.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "postgres"},
                                      "spec": {"selector": {"app": "postgres"}, "ports": [{"port": 5432}]}})
        self.add_deployment("quiet-quail")
        self.start_k8s_gateway()  # manage_services off (the default)
        port = self.spark_port("quiet-quail")
        self.assert_ssh_ok(self.ssh(Port(port), "true"))
        self.assertEqual(self.kube.requests(resource="services"), [], "no Service calls at all")
        self.assertIsNone(self.service("quiet-quail-ssh"))
        self.assertIsNotNone(self.service("postgres"))


    def test_proxy_group_replaces_standalone_services_one_at_a_time(self):
        # Two sparks served standalone, their Services held by the Tailscale operator's finalizer.
        self.start()
        self.add_deployment("brave-dolphin", ports="web=3000")
        self.add_deployment("calm-otter")
        for name in ("brave-dolphin-ssh", "calm-otter-ssh"):
            self.wait_service(name)
            self.kube.patch("services", name, {"metadata": {"finalizers": [OPERATOR_FINALIZER]}})
        old = {n: self.service(n)["metadata"]["uid"] for n in ("brave-dolphin-ssh", "calm-otter-ssh")}
        self.gateways[-1].stop()

        mark = len(self.kube.requests())
        gw = self.start_k8s_gateway(manage_services=True,
                                    services={"gateway_selector": GATEWAY_LABELS, "proxy_group": "spark-ingress"})
        # A spark new to the cluster gets its Service in the group at once, no replacement.
        self.add_deployment("eager-eel")
        eel = self.wait_service("eager-eel-ssh")
        self.assertEqual(eel["metadata"]["annotations"][PROXY_GROUP], "spark-ingress")

        # The first is deleted; the operator's finalizer holds it, and the second is not touched
        # while the first is away.
        first = wait_until(lambda: self.service_requests(method="DELETE", since=mark), 15, "a Service deleted")
        self.assertEqual([r.name for r in first], ["brave-dolphin-ssh"])
        self.assertTrue(self.service("brave-dolphin-ssh")["metadata"].get("deletionTimestamp"))
        gw.wait_log("spark brave-dolphin: replacing Service brave-dolphin-ssh to move it into ProxyGroup spark-ingress")
        time.sleep(6)  # past the reconciler's 5 s retry of a waiting replacement
        self.assertEqual([r.name for r in self.service_requests(method="DELETE", since=mark)], ["brave-dolphin-ssh"],
                         "one Service at a time")
        self.assertNotIn(PROXY_GROUP, self.service("calm-otter-ssh")["metadata"].get("annotations", {}))

        # The operator lets go of it: it is created again, in the group, under the same name; then
        # the second's turn comes.
        self.kube.patch("services", "brave-dolphin-ssh", {"metadata": {"finalizers": None}})
        dolphin = self.wait_service("brave-dolphin-ssh", lambda s: s["metadata"]["uid"] != old["brave-dolphin-ssh"],
                                    "brave-dolphin-ssh created again")
        self.assertEqual(dolphin["metadata"]["annotations"][PROXY_GROUP], "spark-ingress")
        self.assertEqual(dolphin["metadata"]["annotations"]["tailscale.com/hostname"], "brave-dolphin",
                         "the tailnet name stays")
        self.assertEqual(dolphin["spec"]["loadBalancerClass"], "tailscale")
        self.assertEqual(set(self.ports_of(dolphin)), {"ssh", "web"})
        wait_until(lambda: self.service("calm-otter-ssh")["metadata"].get("deletionTimestamp"), 15,
                   "calm-otter-ssh deleted in its turn")
        self.kube.patch("services", "calm-otter-ssh", {"metadata": {"finalizers": None}})
        otter = self.wait_service("calm-otter-ssh", lambda s: s["metadata"]["uid"] != old["calm-otter-ssh"],
                                  "calm-otter-ssh created again")
        self.assertEqual(otter["metadata"]["annotations"][PROXY_GROUP], "spark-ingress")

        # What the API saw, in order: delete and create of one, then of the other.
        seq = [(r.method, r.name or r.json["metadata"]["name"])
               for r in self.service_requests("brave-dolphin-ssh", "calm-otter-ssh", since=mark)
               if r.method in ("DELETE", "POST")]
        self.assertEqual(seq, [("DELETE", "brave-dolphin-ssh"), ("POST", "brave-dolphin-ssh"),
                               ("DELETE", "calm-otter-ssh"), ("POST", "calm-otter-ssh")])
        for spark in ("brave-dolphin", "calm-otter"):
            (event,) = wait_until(lambda: self.kube.events(spark, reason="ServiceReplaced"), 10,
                                  "a ServiceReplaced Event on %s" % spark)
            self.assertEqual(event["type"], "Normal")
            self.assertIn("Replaced the tailnet Service %s-ssh to move it into ProxyGroup spark-ingress" % spark,
                          event["message"])
        self.assertEqual(self.kube.events("eager-eel", reason="ServiceReplaced"), [])

        # Services already in the group are left alone, by this gateway and the next.
        gw.stop()
        mark = len(self.kube.requests())
        self.start_k8s_gateway(manage_services=True,
                               services={"gateway_selector": GATEWAY_LABELS, "proxy_group": "spark-ingress"})
        self.add_deployment("fine-fly")
        self.wait_service("fine-fly-ssh")  # a pass over every spark has run
        time.sleep(1)
        self.assertEqual(self.service_requests("brave-dolphin-ssh", "calm-otter-ssh", "eager-eel-ssh", since=mark), [])
        self.assertEqual(self.service("brave-dolphin-ssh")["metadata"]["uid"], dolphin["metadata"]["uid"])

    def test_without_proxy_group_services_leave_the_group(self):
        self.start_cluster()
        self.add_deployment("old-fox")
        # The spark CLI's standalone Service: taken over by being replaced, not patched.
        self.kube.create("services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "old-fox-ssh", "annotations": {"tailscale.com/hostname": "old-fox"}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "tailscale", "selector": {"app": "old-fox"},
                     "ports": [{"port": 22, "targetPort": 22}]}})
        cli_uid = self.service("old-fox-ssh")["metadata"]["uid"]
        group = {"gateway_selector": GATEWAY_LABELS, "proxy_group": "spark-ingress"}
        gw = self.start_k8s_gateway(manage_services=True, services=group)
        port = self.spark_port("old-fox")
        svc = self.wait_service("old-fox-ssh", lambda s: s["metadata"]["uid"] != cli_uid, "the CLI's Service replaced")
        self.assert_points_at_gateway(svc, "old-fox", port)
        self.assertEqual(svc["metadata"]["annotations"][PROXY_GROUP], "spark-ingress")
        self.assertEqual(self.service_requests("old-fox-ssh", method="PATCH"), [], "replaced, never patched")
        wait_until(lambda: self.kube.events("old-fox", reason="ServiceReplaced"), 10, "a ServiceReplaced Event")
        gw.stop()

        # proxy_group unset: the Service goes back to a proxy of its own, the same way.
        mark = len(self.kube.requests())
        gw = self.start_k8s_gateway(manage_services=True, services={"gateway_selector": GATEWAY_LABELS})
        svc = self.wait_service("old-fox-ssh", lambda s: PROXY_GROUP not in s["metadata"].get("annotations", {}),
                                "the Service out of the group")
        self.assert_points_at_gateway(svc, "old-fox", port)
        self.assertEqual([r.method for r in self.service_requests("old-fox-ssh", since=mark)
                          if r.method in ("DELETE", "POST")], ["DELETE", "POST"])
        gw.wait_log("replacing Service old-fox-ssh to take it out of ProxyGroup spark-ingress")
        wait_until(lambda: any("take it out of ProxyGroup spark-ingress" in e["message"]
                               for e in self.kube.events("old-fox", reason="ServiceReplaced")), 10,
                   "a ServiceReplaced Event saying so")


if __name__ == "__main__":
    harness.main()
