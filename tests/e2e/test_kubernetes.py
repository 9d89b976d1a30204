#!/usr/bin/env python3
"""The kubernetes backend end to end: real ssh -> gateway -> Kubernetes API double -> fake kubelet
-> a real sshd per pod (tests/k8s_double, docs/kubernetes.md).

Each test runs its own API double on the test's loopback address; pods get their own 127.x
addresses. Waits go through wait_until with deadlines; nothing sleeps to hide a race.
"""

import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
# KubernetesTestCase and Port are imported from here by tests/soak/soak.py too.
from harness import (PREFIX, TARGET_PORT, KubernetesTestCase, Port, parse_rfc3339, rfc3339,  # noqa: E402
                     wait_until, write_atomically)



class WakeAndSleep(KubernetesTestCase):

    def test_twenty_connections_one_scale_call_and_all_spliced(self):
        self.start_cluster(start_delay=0.5)
        self.add_deployment("brave-dolphin")
        gw = self.start_k8s_gateway()
        port = self.spark_port("brave-dolphin")
        gw.wait_log("spark brave-dolphin: listening on")
        self.assertEqual(self.replicas("brave-dolphin"), 0)

        results = [None] * 20

        def run(i):
            results[i] = self.ssh(Port(port), "echo hello-%d" % i)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i, r in enumerate(results):
            self.assert_ssh_ok(r, "hello-%d\n" % i, what="ssh #%d" % i)
        scale_calls = self.kube.scale_requests("brave-dolphin")
        self.assertEqual(len(scale_calls), 1, "exactly one scale call for 20 connections")
        self.assertEqual(scale_calls[0].content_type, "application/merge-patch+json")
        self.assertEqual(scale_calls[0].json["spec"], {"replicas": 1})
        self.assertIn("resourceVersion", scale_calls[0].json["metadata"], "the wake is conditional")
        self.assertEqual(self.replicas("brave-dolphin"), 1)
        woken = self.kube.events("brave-dolphin", reason="Woken")
        self.assertEqual(len(woken), 1)
        self.assertIn("Woken by a connection from 127.", woken[0]["message"])
        self.assertEqual(woken[0]["involvedObject"]["kind"], "Deployment")
        # The port stays the same: it is recorded on the Deployment.
        self.assertEqual(self.annotation("brave-dolphin", "port"), str(port))
        self.assertTrue(self.port_range()[0] <= port <= self.port_range()[1])

    def test_idle_sleep_uses_the_resource_version_precondition(self):
        self.start_cluster()
        self.add_deployment("calm-otter", port=None, idle_timeout="3s")
        gw = self.start_k8s_gateway()
        port = self.spark_port("calm-otter")
        self.assert_ssh_ok(self.ssh(Port(port), "true"))
        pod = self.k8s.kubelet.pod_of("calm-otter")
        self.assertIsNotNone(pod)
        sshd = self.k8s.kubelet.sshd_of(pod["metadata"]["name"])
        wait_until(lambda: self.replicas("calm-otter") == 0, 20, "the idle spark to be scaled to 0")
        wait_until(lambda: not sshd.alive(), 10, "the pod's sshd to stop")
        sleeps = [r for r in self.kube.requests(method="PATCH", resource="deployments", name="calm-otter")
                  if r.subresource is None and (r.json or {}).get("spec", {}).get("replicas") == 0]
        self.assertEqual(len(sleeps), 1)
        self.assertIn("resourceVersion", sleeps[0].json["metadata"], "sleep must be conditional")
        self.assertEqual(self.annotation("calm-otter", "sleep-reason"), "idle")
        self.assertIsNotNone(self.annotation("calm-otter", "slept-at"))
        # The Event is written after the scale to 0 lands (it may trail the pod's end).
        slept = wait_until(lambda: self.kube.events("calm-otter", reason="Slept"), 10, "a Slept Event")
        self.assertEqual(len(slept), 1)
        self.assertRegex(slept[0]["message"], r"^Put to sleep after \d+s idle$")
        self.assertIsNotNone(self.annotation("calm-otter", "last-activity"))
        gw.wait_log("spark calm-otter: asleep after")
        # And the next ssh wakes it again.
        self.assert_ssh_ok(self.ssh(Port(port), "echo again"), "again\n")
        # Two scale-ups applied, one per wake. (A wake may also meet a 409: the Deployment
        # controller writes the status after the scale to 0, between the wake's read and write.)
        applied = [r for r in self.kube.scale_requests("calm-otter") if r.status == 200]
        self.assertEqual(len(applied), 2)

    def test_conflict_on_every_sleep_leaves_the_spark_awake(self):
        self.start_cluster()
        self.add_deployment("eager-fox", idle_timeout="2s")
        gw = self.start_k8s_gateway()
        port = self.spark_port("eager-fox")
        self.assert_ssh_ok(self.ssh(Port(port), "true"))
        self.kube.faults.conflict_on_precondition = True
        since = gw.log_size()
        gw.wait_log("spark eager-fox: sleep failed", "409", timeout=20, since=since)
        self.assertEqual(self.replicas("eager-fox"), 1, "a 409 must leave the spark awake")
        self.assertIsNotNone(self.k8s.kubelet.pod_of("eager-fox"))
        # When the conflicts stop, the reaper decides again and sleeps it.
        self.kube.faults.conflict_on_precondition = False
        wait_until(lambda: self.replicas("eager-fox") == 0, 20, "the spark to sleep once conflicts stop")

    def test_restart_keeps_last_activity(self):
        self.start_cluster()
        idle = 8.0
        # Running, last active 4 s ago: a restarted gateway must sleep it ~4 s from now.
        self.add_deployment("old-owl", replicas=1, idle_timeout="8s")
        wait_until(lambda: self.k8s.kubelet.pod_of("old-owl") is not None
                   and self.k8s.kubelet.pod_of("old-owl")["status"].get("podIP"), 15, "the pod to run")
        last = time.time() - 4.0
        self.kube.annotate("deployments", "old-owl", **{PREFIX + "last-activity": rfc3339(last)})
        # It has been running since its pod was created: that counts as activity too (a spark
        # seen running is in use), so the idle clock runs from the later of the two.
        created = parse_rfc3339(self.k8s.kubelet.pod_of("old-owl")["metadata"]["creationTimestamp"])
        active = max(last, created)
        gw = self.start_k8s_gateway()
        gw.wait_log("spark old-owl: already running", timeout=15)
        wait_until(lambda: self.replicas("old-owl") == 0, 20, "the idle spark to be scaled to 0")
        slept_at = parse_rfc3339(self.annotation("old-owl", "slept-at"))
        # Not at once (it had time left), not a full idle timeout late (+ reaper interval, slack
        # and the creation time's whole-second precision).
        self.assertGreaterEqual(slept_at, active + idle - 0.5)
        self.assertLessEqual(slept_at, active + idle + 3.0)


class WatchFaults(KubernetesTestCase):

    def test_watch_dropped_mid_wake_is_resumed(self):
        self.start_cluster(start_delay=2.0)
        self.add_deployment("slow-seal")
        gw = self.start_k8s_gateway()
        port = self.spark_port("slow-seal")
        lists_before = len(self.kube.requests(verb="list"))
        p = self.ssh_background(Port(port), "echo woke")
        wait_until(lambda: self.kube.scale_requests("slow-seal"), 15, "the wake's scale call")
        self.kube.faults.close_watches()
        self.assertEqual(p.wait(60), 0, p.stderr)
        self.assertEqual(p.stdout, "woke\n")
        # Resumed from a resourceVersion, not listed again.
        self.assertEqual(len(self.kube.requests(verb="list")), lists_before)
        resumed = [r for r in self.kube.requests(verb="watch") if r.param("resourceVersion")]
        self.assertGreaterEqual(len(resumed), 4, "each watch started again from its resourceVersion")

    def test_a_spark_given_its_port_while_the_watch_lags_keeps_it(self):
        # The watch shows the gateway's own port write 3 s late. Another spark's change made
        # just before that write arrives first and starts a pass that still sees lag-lynx
        # without a port: it must not be given one again (a write bound to fail with 409 on its
        # stale resourceVersion) nor stop being served. (Found at -j4: its listener was closed
        # and opened again a moment later.)
        self.start_cluster()
        self.add_deployment("lag-lynx")
        self.add_deployment("calm-crab", port=self.port_range()[1])
        self.kube.faults.watch_lag = 3.0
        touched = []

        def touch_calm_crab_first(rec):
            if not touched:  # runs as lag-lynx's port write arrives, before it is applied
                touched.append(self.kube.annotate("deployments", "calm-crab", **{PREFIX + "idle-timeout": "2h"}))
            return True
        self.kube.faults.hold(1.0, count=1, method="PATCH", path=r"/deployments/lag-lynx$",
                              when=touch_calm_crab_first)
        gw = self.start_k8s_gateway()
        port = self.spark_port("lag-lynx")
        self.assertTrue(touched, "the port write was held")
        # The pass that saw calm-crab's change (and not yet lag-lynx's port).
        gw.wait_log("discovered sparks changed", "changed calm-crab", timeout=20)
        self.assertEqual(gw.log_lines("cannot record its ports"), [])
        removals = [ln for ln in gw.log_lines("discovered sparks changed")
                    if "lag-lynx" in re.search(r"removed ([^)]*)\)", ln).group(1).split(",")]
        self.assertEqual(removals, [], "lag-lynx served throughout")
        self.assertEqual(len(gw.log_lines("spark lag-lynx: given port")), 1)
        self.assertEqual(len(gw.log_lines("spark lag-lynx: listening on")), 1, "its listener never reopened")
        patches = [r for r in self.kube.requests(method="PATCH") if r.path.endswith("/deployments/lag-lynx")]
        self.assertEqual([r.status for r in patches], [200], "one port write")
        self.assert_ssh_ok(self.ssh(Port(port), "echo kept"), "kept\n")

    def test_expired_watch_relists(self):
        self.start_cluster()
        self.add_deployment("tidy-newt")
        gw = self.start_k8s_gateway()
        self.spark_port("tidy-newt")
        lists_before = len(self.kube.requests(verb="list", resource="deployments"))
        since = gw.log_size()
        self.kube.compact()
        self.kube.faults.expire_watches()
        gw.wait_log("kubernetes: deployments watch expired", "listing again", since=since)
        wait_until(lambda: len(self.kube.requests(verb="list", resource="deployments")) > lists_before,
                   15, "a fresh list of deployments")
        # A Deployment added after the relist is still picked up.
        self.add_deployment("late-lark")
        port = self.spark_port("late-lark")
        self.assert_ssh_ok(self.ssh(Port(port), "echo late"), "late\n")


class Failures(KubernetesTestCase):

    def test_image_pull_failure_fails_the_wake_early_with_the_reason(self):
        self.start_cluster()
        self.add_deployment("bad-image")
        self.k8s.kubelet.set_scenario("bad-image", "image-pull-failure")
        gw = self.start_k8s_gateway(defaults={"wake_timeout": "60s"})
        port = self.spark_port("bad-image")
        started = time.monotonic()
        r = self.ssh(Port(port), "true")
        took = time.monotonic() - started
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(took, 30, "the wake should fail on the pull error, not at wake_timeout")
        line = gw.wait_log("spark bad-image: wake failed")
        self.assertRegex(line, r"(ImagePullBackOff|ErrImagePull)")

    def test_never_ready_pod_fails_within_wake_timeout(self):
        self.start_cluster()
        self.add_deployment("mute-mole")
        self.k8s.kubelet.set_scenario("mute-mole", "never-ready")
        gw = self.start_k8s_gateway(defaults={"wake_timeout": "3s"})
        port = self.spark_port("mute-mole")
        started = time.monotonic()
        r = self.ssh(Port(port), "true")
        took = time.monotonic() - started
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(took, 15)
        line = gw.wait_log("spark mute-mole: wake failed")
        self.assertIn("wake_timeout 3s", line)

    def test_api_server_down_closes_cleanly_and_recovers(self):
        self.start_cluster()
        self.add_deployment("lone-wolf")
        gw = self.start_k8s_gateway(defaults={"wake_timeout": "5s"})
        port = self.spark_port("lone-wolf")
        self.kube.down()
        started = time.monotonic()
        r = self.ssh(Port(port), "true")
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(time.monotonic() - started, 20, "no hang beyond wake_timeout")
        gw.wait_log("spark lone-wolf: wake failed")
        self.kube.up()
        # The watches reconnect by themselves and the next connection wakes the spark.
        wait_until(lambda: len(self.kube.active_watches()) >= 2, 45, "the watches to reconnect")
        self.assert_ssh_ok(self.ssh(Port(port), "echo back"), "back\n")

    def test_port_conflict_refuses_the_later_deployment(self):
        self.start_cluster()
        shared = self.port_range()[0] + 5
        self.add_deployment("first-ant", port=shared)
        self.kube.create_deployment("second-bee", annotations={PREFIX + "port": str(shared),
                                                               PREFIX + "target-port": str(TARGET_PORT)},
                                   target_port=TARGET_PORT)
        gw = self.start_k8s_gateway()
        gw.wait_log("spark second-bee: port %d is already served for first-ant" % shared)
        wait_until(lambda: self.kube.events("second-bee", reason="PortConflict"), 10, "a PortConflict Event")
        self.assert_ssh_ok(self.ssh(Port(shared), "echo first"), "first\n")
        self.assertEqual(self.replicas("second-bee"), 0)

    def test_sigterm_exits_promptly_with_watches_open(self):
        self.start_cluster()
        self.add_deployment("short-nap")
        gw = self.start_k8s_gateway()
        self.spark_port("short-nap")
        wait_until(lambda: len(self.kube.active_watches()) >= 2, 15, "the watches to be open")
        started = time.monotonic()
        self.assertEqual(gw.stop(timeout=20), 0)
        self.assertLess(time.monotonic() - started, 10, "shutdown must not wait for the watches to time out")

    def test_deployment_removed_and_added_opens_and_closes_listeners(self):
        self.start_cluster()
        self.add_deployment("short-life")
        gw = self.start_k8s_gateway()
        port = self.spark_port("short-life")
        gw.wait_log("spark short-life: listening on")
        self.kube.delete("deployments", "short-life")
        wait_until(lambda: harness.tcp_connect_refused(self.host, port), 15, "the listener to close")


class SharedCluster(KubernetesTestCase):
    """Others scale sparks too (kubectl, the spark CLI); static sparks live beside discovered ones."""

    def spark_state(self, name):
        status, body = self.api("GET", "/api/v1/sparks/" + name)
        self.assertEqual(status, 200, body)
        return body["state"]

    def test_scaled_by_someone_else_is_observed_not_fought(self):
        self.start_cluster()
        self.enable_admin()
        self.add_deployment("busy-bee")
        gw = self.start_k8s_gateway()
        port = self.spark_port("busy-bee")
        self.assertEqual(self.spark_state("busy-bee"), "sleeping")
        # `kubectl scale --replicas=1`: the gateway sees it running and does not scale again.
        self.kube.scale("busy-bee", 1)
        wait_until(lambda: self.spark_state("busy-bee") == "running", 20, "the gateway to see busy-bee running")
        self.assert_ssh_ok(self.ssh(Port(port), "echo up"), "up\n")
        self.assertEqual(self.kube.scale_requests("busy-bee"), [], "no scale call for a running spark")
        # `kubectl scale --replicas=0`: the gateway follows; it neither scales back up nor fails.
        self.kube.scale("busy-bee", 0)
        wait_until(lambda: self.spark_state("busy-bee") == "sleeping", 20, "the gateway to see busy-bee asleep")
        self.assertEqual(self.replicas("busy-bee"), 0)
        self.assertEqual(self.kube.scale_requests("busy-bee"), [])
        self.assertEqual(gw.log_lines("spark busy-bee: wake failed"), [])
        # The next connection wakes it the usual way.
        self.assert_ssh_ok(self.ssh(Port(port), "echo again"), "again\n")
        self.assertEqual(len(self.kube.scale_requests("busy-bee")), 1)

    def test_a_configured_spark_wins_over_a_deployment_of_the_same_name(self):
        self.start_cluster()
        static = self.add_spark("twin-fish")
        self.add_deployment("twin-fish")
        self.add_deployment("solo-fish")
        gw = self.start_k8s_gateway(sparks=[static])
        gw.wait_log("spark twin-fish: a Deployment and a configured spark have this name")
        # The configured (process backend) spark answers on its own port; the Deployment is not woken.
        self.assert_ssh_ok(self.ssh(static, "echo static"), "static\n")
        self.assertEqual(static.starts(), 1)
        self.assertEqual(self.kube.scale_requests("twin-fish"), [])
        # The other Deployment is served as usual.
        self.assert_ssh_ok(self.ssh(Port(self.spark_port("solo-fish")), "echo solo"), "solo\n")

    def test_open_session_refreshes_last_activity(self):
        self.start_cluster()
        self.add_deployment("deep-work", idle_timeout="1h")
        # A short flush: the refresh during an open session happens at each flush, and this
        # test waits 15 s for two of them (the production flush is 30 s).
        self.start_k8s_gateway(flush_interval="1s")
        port = self.spark_port("deep-work")
        p = self.ssh_background(Port(port), "echo started; sleep 30")
        p.wait_output("started", 30)
        first = wait_until(lambda: self.annotation("deep-work", "last-activity"), 15,
                           "a last-activity annotation")
        # No bytes flow, but the session is open: the annotation keeps moving forward.
        wait_until(lambda: parse_rfc3339(self.annotation("deep-work", "last-activity") or first)
                   > parse_rfc3339(first) + 1.0, 15, "last-activity to be refreshed during the session")
        p.kill()


class Auth(KubernetesTestCase):

    def test_https_with_rotating_token(self):
        self.start_cluster(tls=True)
        self.add_deployment("safe-swan")
        gw = self.start_k8s_gateway()
        port = self.spark_port("safe-swan")
        self.assert_ssh_ok(self.ssh(Port(port), "echo tls"), "tls\n")
        old = self.k8s.token
        rotated_at = time.time()
        self.kube.rotate_token(self.k8s.token_file)  # the old token stops working
        self.assertNotEqual(self.k8s.token, old)
        # A write after the rotation succeeds: the gateway re-reads the token file.
        self.kube.scale("safe-swan", 0)
        wait_until(lambda: self.k8s.kubelet.pod_of("safe-swan") is None, 15, "the pod to go")
        self.assert_ssh_ok(self.ssh(Port(port), "echo rotated"), "rotated\n")
        # One scale up, with the new token. (Before it there may be a 401 with the old token, and
        # a 409 if the wake read a Deployment older than our scale to 0.)
        scaled = [r for r in self.kube.scale_requests("safe-swan") if r.time >= rotated_at and r.status == 200]
        self.assertEqual([r.token == self.k8s.token for r in scaled], [True])

    def test_kubeconfig_with_client_certificate(self):
        self.start_cluster(tls=True)
        self.add_deployment("cert-crow")
        cert = self.kube.client_cert()
        kubeconfig = self.k8s.kubeconfig(client_cert=cert)
        cfg = self.config_dict(sparks=[])
        cfg["kubernetes"] = {"namespace": self.k8s.namespace, "listen_host": self.host,
                             "port_range": "%d-%d" % self.port_range(), "kubeconfig": kubeconfig}
        write_atomically(self.config_path, json.dumps(cfg))
        self.start_gateway()
        port = self.spark_port("cert-crow")
        self.assert_ssh_ok(self.ssh(Port(port), "echo cert"), "cert\n")

    def test_not_in_a_cluster_is_a_clear_error(self):
        cfg = self.config_dict(sparks=[])
        cfg["kubernetes"] = {"namespace": "spark"}
        write_atomically(self.config_path, json.dumps(cfg))
        env = self.child_env()
        env.pop("KUBERNETES_SERVICE_HOST", None)
        import subprocess
        r = subprocess.run([self.bin, "serve", "--config", self.config_path], env=env,
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("KUBERNETES_SERVICE_HOST", r.stderr)
        self.assertIn("kubernetes.api_server", r.stderr)


if __name__ == "__main__":
    harness.main()
