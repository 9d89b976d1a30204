#!/usr/bin/env python3
"""kubernetes.manage_services: the gateway keeps a Tailscale LoadBalancer Service per spark
(`<spark>-ssh`, tailnet hostname <spark>) pointing at its own pods, against the Kubernetes API
double (deploy/tailscale/, docs/deploy.md). Create a spark -> its Service appears; delete it ->
the Service goes; hand edits are put back; the spark CLI's pod-pointing Service is taken over.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import PREFIX, KubernetesTestCase, Port, wait_until  # noqa: E402

GATEWAY_LABELS = {"app.kubernetes.io/name": "spark-gateway", "app.kubernetes.io/instance": "e2e"}


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

    def assert_points_at_gateway(self, svc, spark, port):
        meta, spec = svc["metadata"], svc["spec"]
        self.assertEqual(meta["annotations"]["tailscale.com/hostname"], spark)
        self.assertEqual(meta["labels"]["app.kubernetes.io/managed-by"], "spark-gateway")
        self.assertEqual(meta["labels"][PREFIX + "spark"], spark)
        self.assertEqual(spec["type"], "LoadBalancer")
        self.assertEqual(spec["loadBalancerClass"], "tailscale")
        self.assertEqual(spec["selector"], GATEWAY_LABELS, "selects the gateway's pods and nothing else")
        self.assertEqual(len(spec["ports"]), 1)
        self.assertEqual(spec["ports"][0]["port"], 22)
        self.assertEqual(spec["ports"][0]["targetPort"], port)
        self.assertEqual(spec["ports"][0]["protocol"], "TCP")

    def test_service_follows_the_spark(self):
        self.start(tailscale_tags="tag:spark")
        self.add_deployment("brave-dolphin")
        port = self.spark_port("brave-dolphin")
        svc = self.wait_service("brave-dolphin-ssh")
        self.assert_points_at_gateway(svc, "brave-dolphin", port)
        self.assertEqual(svc["metadata"]["annotations"]["tailscale.com/tags"], "tag:spark")
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


if __name__ == "__main__":
    harness.main()
