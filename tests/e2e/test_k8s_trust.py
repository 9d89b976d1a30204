#!/usr/bin/env python3
"""Kubernetes trust (issue 17): what others can put into the spark namespace must not take a
spark's connections, its tailnet name, a port of the gateway's host, or every waiting slot.

  * A pod made directly with another spark's labels (running, or stuck in ImagePullBackOff) never
    receives that spark's connections nor fails its wake: a spark's pod is one its Deployment
    owns (pod -> ReplicaSet -> Deployment, controller ownerReferences by UID).
  * An existing `<spark>-ssh` Service that is neither the gateway's nor the spark CLI's is left
    alone and reported (ServiceConflict Warning Event, one log line).
  * A `port` annotation outside kubernetes.port_range is refused (InvalidPort Warning Event) and
    the spark gets a port from the range.
  * defaults.max_waiting / defaults.max_connections apply to discovered sparks, a quarter of the
    gateway-wide caps by default: one spark's waiting flood does not refuse another spark.

Against the Kubernetes API double (tests/k8s_double) with real sshd pods; loopback only, every
wait has a deadline.
"""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TARGET_PORT, KubernetesTestCase, Port, free_port, wait_until  # noqa: E402

k8s_double = harness.import_k8s_double()

GATEWAY_LABELS = {"app.kubernetes.io/name": "spark-gateway", "app.kubernetes.io/instance": "e2e"}


class FakeSshd:
    """A TCP listener on a loopback address of its own that counts the connections it gets and
    closes them at once: the stand-in for whatever a hijacking pod would run."""

    def __init__(self, test, ip, port):
        self.accepted = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((ip, port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        test.addCleanup(self.close)

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


class KubernetesTrust(KubernetesTestCase):

    def write_config(self, limits=None, **kw):
        path = self.write_k8s_config(**kw)
        if limits:
            with open(path) as f:
                cfg = json.load(f)
            cfg["limits"] = limits
            self.write_config_dict(cfg, path)
        return path

    def start_gateway_with(self, limits=None, **kw):
        self.write_config(limits=limits, **kw)
        gw = self.start_gateway()
        wait_until(lambda: self.readyz() == 200, 20, "the gateway to list the cluster (/readyz 200)")
        return gw

    # -- a spark's pod is one its Deployment owns ------------------------------------------

    def hijacking_pod(self, spark, name, status):
        """A pod created directly (no owner) with `spark`'s pod labels, its status written as a
        kubelet would."""
        labels = dict(self.deployment(spark)["spec"]["template"]["metadata"]["labels"])
        self.kube.create("pods", {"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": name, "labels": labels},
                                  "spec": {"containers": [{"name": "spark", "image": "evil.example/sshd:1",
                                                           "ports": [{"containerPort": TARGET_PORT}]}]}})
        self.kube.patch("pods", name, {"status": status}, subresource="status")

    def running_status(self, ip):
        return {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "spark", "ready": True, "restartCount": 0,
                                       "image": "evil.example/sshd:1", "imageID": "", "started": True,
                                       "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}

    def test_a_pod_with_the_sparks_labels_gets_none_of_its_connections(self):
        self.start_cluster()
        self.add_deployment("brave-dolphin")
        ip = k8s_double.LoopbackIpAllocator(avoid=(self.host,))()
        fake = FakeSshd(self, ip, TARGET_PORT)
        # Running and ready before the spark wakes: the gateway must wait for the spark's own pod.
        self.hijacking_pod("brave-dolphin", "brave-dolphin-hijack", self.running_status(ip))
        gw = self.start_k8s_gateway()
        port = self.spark_port("brave-dolphin")
        self.assert_ssh_ok(self.ssh(Port(port), "echo real"), "real\n")
        # Newer than the spark's pod now (the old code took the newest matching pod first).
        self.kube.patch("pods", "brave-dolphin-hijack",
                        {"status": {"conditions": [{"type": "Ready", "status": "True"},
                                                   {"type": "PodScheduled", "status": "True"}]}},
                        subresource="status")
        self.assert_ssh_ok(self.ssh(Port(port), "echo again"), "again\n")
        self.assertEqual(fake.accepted, 0, "the hijacking pod got connections (or probes) meant for the spark")
        real = self.k8s.kubelet.pod_of("brave-dolphin")
        self.assertEqual(real["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet")
        self.assertEqual(gw.log_lines("spark brave-dolphin: wake failed"), [])

    def test_a_stuck_pod_with_the_sparks_labels_does_not_fail_its_wake(self):
        self.start_cluster()
        self.add_deployment("calm-otter")
        stuck = {"phase": "Pending", "podIP": "127.0.0.1",
                 "conditions": [{"type": "PodScheduled", "status": "True"}],
                 "containerStatuses": [{"name": "spark", "ready": False, "restartCount": 0,
                                        "image": "evil.example/nope:1", "imageID": "", "started": False,
                                        "state": {"waiting": {"reason": "ImagePullBackOff",
                                                              "message": "Back-off pulling image \"nope\""}}}]}
        self.hijacking_pod("calm-otter", "calm-otter-stuck", stuck)
        gw = self.start_k8s_gateway(defaults={"wake_timeout": "60s"})
        port = self.spark_port("calm-otter")
        self.assert_ssh_ok(self.ssh(Port(port), "echo woke"), "woke\n")
        self.assertEqual(gw.log_lines("spark calm-otter: wake failed"), [])
        self.assertEqual(gw.log_lines("ImagePullBackOff"), [], "the stuck pod was taken for the spark's")
        # And while it runs, a stuck pod made later does not turn the spark into a failed one.
        self.hijacking_pod("calm-otter", "calm-otter-stuck-2", stuck)
        self.assert_ssh_ok(self.ssh(Port(port), "echo still"), "still\n")
        self.assertEqual(gw.log_lines("ImagePullBackOff"), [])

    # -- Services the gateway did not make -------------------------------------------------

    def service(self, name):
        return self.kube.get("services", name)

    def test_a_foreign_ssh_service_is_left_alone_and_reported(self):
        self.start_cluster()
        self.add_deployment("shy-swan")
        self.add_deployment("lone-lynx")
        self.add_deployment("new-newt")
        # Another team's bastion happens to be called shy-swan-ssh: in-cluster, at other pods.
        self.kube.create("services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "shy-swan-ssh"},
            "spec": {"selector": {"app": "bastion"}, "ports": [{"port": 22, "targetPort": 2222}]}})
        # A tailnet LoadBalancer of that name pointing at other pods under another tailnet name.
        self.kube.create("services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "lone-lynx-ssh", "annotations": {"tailscale.com/hostname": "bastion"}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "tailscale", "selector": {"app": "bastion"},
                     "ports": [{"port": 22}]}})
        # A spark CLI Service selecting the spark Deployment's own pods: that one is taken over.
        self.kube.create("services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "new-newt-ssh", "annotations": {"tailscale.com/hostname": "new-newt"}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "tailscale",
                     "selector": self.deployment("new-newt")["spec"]["selector"]["matchLabels"],
                     "ports": [{"port": 22, "targetPort": 22}]}})
        before = {n: self.service(n) for n in ("shy-swan-ssh", "lone-lynx-ssh")}
        gw = self.start_k8s_gateway(manage_services=True, services={"gateway_selector": GATEWAY_LABELS})
        for spark in ("shy-swan", "lone-lynx"):
            ev = wait_until(lambda: self.kube.events(spark, reason="ServiceConflict"), 15,
                            "a ServiceConflict Event on %s" % spark)
            self.assertEqual(ev[0]["type"], "Warning")
            self.assertIn("left alone", ev[0]["message"])
        wait_until(lambda: self.kube.events("new-newt", reason="ServiceAdopted"), 15, "the CLI's Service adopted")
        newt = self.service("new-newt-ssh")
        self.assertEqual(newt["metadata"]["labels"]["app.kubernetes.io/managed-by"], "spark-gateway")
        self.assertEqual(newt["spec"]["selector"], GATEWAY_LABELS)
        # More passes of the reconciler (a new spark, its Service): still one report each.
        self.add_deployment("late-lark")
        wait_until(lambda: self.service("late-lark-ssh"), 15, "late-lark's Service")
        for name, svc in before.items():
            self.assertEqual(self.service(name), svc, "%s was changed" % name)
            writes = [r for r in self.kube.requests(resource="services", name=name) if r.method != "GET"]
            self.assertEqual(writes, [], "no write to someone else's %s" % name)
        self.assertEqual(len(self.kube.events("shy-swan", reason="ServiceConflict")), 1)
        self.assertEqual(len(gw.log_lines("spark shy-swan: Service shy-swan-ssh exists and is neither")), 1)
        # Once its owner removes it, the spark gets its own at once (the watch sees the delete).
        self.kube.delete("services", "shy-swan-ssh")
        svc = wait_until(lambda: (lambda s: s if s and s["metadata"].get("labels", {}).get(
            "app.kubernetes.io/managed-by") == "spark-gateway" else None)(self.service("shy-swan-ssh")),
            15, "the gateway's own shy-swan-ssh")
        self.assertEqual(svc["spec"]["selector"], GATEWAY_LABELS)

    # -- ports ---------------------------------------------------------------------------

    def test_a_port_annotation_outside_port_range_is_refused(self):
        self.start_cluster()
        lo, hi = self.port_range()
        bad = free_port(self.host)
        for _ in range(50):
            if not lo <= bad <= hi:
                break
            bad = free_port(self.host)
        self.assertFalse(lo <= bad <= hi)
        self.add_deployment("far-fox", port=bad)
        self.add_deployment("odd-ox", port="ssh")
        gw = self.start_k8s_gateway()
        for spark, text in (("far-fox", str(bad)), ("odd-ox", "ssh")):
            ev = wait_until(lambda: self.kube.events(spark, reason="InvalidPort"), 15,
                            "an InvalidPort Event on %s" % spark)
            self.assertEqual(ev[0]["type"], "Warning")
            self.assertIn('"%s"' % text, ev[0]["message"])
            self.assertIn("%d-%d" % (lo, hi), ev[0]["message"])
            # Given a port from the range instead, written back so replicas and restarts agree.
            port = wait_until(lambda: (lambda p: p if p and p.isdigit() and lo <= int(p) <= hi else None)(
                self.annotation(spark, "port")), 15, "%s to be given a port in %d-%d" % (spark, lo, hi))
            self.assertEqual(self.spark_port(spark), int(port))
        self.assert_ssh_ok(self.ssh(Port(int(self.annotation("far-fox", "port"))), "echo ranged"), "ranged\n")
        self.assertEqual(gw.log_lines("listening on", ":%d " % bad), [])
        self.assertTrue(harness.tcp_connect_refused(self.host, bad), "something listens on the refused port")

    # -- per-spark caps for discovered sparks -----------------------------------------------

    def open_connections(self, spark):
        status, body = self.api("GET", "/api/v1/sparks/" + spark)
        self.assertEqual(status, 200, body)
        return body["open_connections"]

    @staticmethod
    def closed(sock):
        """The gateway closed it (a refusal): EOF, or a reset since our banner was left unread."""
        try:
            return sock.recv(1) == b""  # the socket is non-blocking
        except BlockingIOError:
            return False
        except ConnectionError:
            return True

    def test_one_sparks_waiting_flood_does_not_refuse_another_spark(self):
        self.start_cluster()
        self.enable_admin()
        self.add_deployment("mute-mole")
        self.k8s.kubelet.set_scenario("mute-mole", "never-ready")
        self.add_deployment("calm-otter")
        # Gateway-wide 8 waiting; no per-spark setting, so the default is a quarter: 2.
        gw = self.start_gateway_with(limits={"max_waiting": 8}, defaults={"wake_timeout": "90s"})
        mute, calm = self.spark_port("mute-mole"), self.spark_port("calm-otter")
        # Someone connects over and over to a spark that never gets ready, holding each open.
        flood, refused = [], 0
        self.addCleanup(lambda: [s.close() for s in flood])
        for i in range(12):
            s = socket.create_connection((self.host, mute), timeout=5)
            flood.append(s)
            s.sendall(b"SSH-2.0-flood_%d\r\n" % i)
            s.setblocking(False)
            held = len(flood) - refused - 1
            outcome = wait_until(lambda: "refused" if self.closed(s) else
                                 ("waiting" if self.open_connections("mute-mole") > held else None),
                                 10, "the gateway to take or refuse flood connection %d" % i)
            refused += outcome == "refused"
        # Another spark's connection is not refused: it wakes and is spliced.
        started = time.monotonic()
        self.assert_ssh_ok(self.ssh(Port(calm), "echo other"), "other\n", what="ssh to calm-otter")
        self.assertLess(time.monotonic() - started, 60)
        self.assertEqual(gw.log_lines("spark calm-otter: refusing connection"), [])
        waiting = len(flood) - refused
        self.assertGreaterEqual(waiting, 1, "the flood's first connection should wait for the wake")
        self.assertLessEqual(waiting, 3, "one spark held %d of the gateway's 8 waiting slots" % waiting)
        gw.wait_log("spark mute-mole: refusing connection", "defaults.max_waiting 2")
        self.assertEqual(sum(not self.closed(s) for s in flood), waiting, "the admitted ones still wait")

    def test_defaults_max_connections_caps_a_discovered_spark(self):
        self.start_cluster()
        self.add_deployment("busy-bee")
        gw = self.start_k8s_gateway(defaults={"max_connections": 2})
        port = self.spark_port("busy-bee")
        sessions = [self.ssh_background(Port(port), "echo started; sleep 60") for _ in range(2)]
        for s in sessions:
            s.wait_output("started", 60)
        started = time.monotonic()
        r = self.ssh(Port(port), "echo third", timeout=40)
        self.assertNotEqual(r.returncode, 0, "a third connection got through: %r" % r.stdout)
        self.assertLess(time.monotonic() - started, 10, "a refused connection must close at once")
        gw.wait_log("spark busy-bee: refusing connection", "defaults.max_connections 2")
        for s in sessions:
            self.assertTrue(s.running(), "an open session was disturbed by the refused one")


if __name__ == "__main__":
    harness.main()
