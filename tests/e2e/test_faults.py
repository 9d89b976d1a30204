#!/usr/bin/env python3
"""Faults the gateway must survive (issue: reliability), each against real peers on loopback:
a slow or failing API server, watches cut every second, an upstream that dies mid-session, and
`kill -9` of the gateway during a wake and during a session. Nothing may hang past its bound,
leak a child, lose activity or put a spark to sleep early.
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import GatewayTestCase, KubernetesTestCase, Port, wait_until  # noqa: E402


class ApiServerFaults(KubernetesTestCase):

    def test_slow_api_server_fails_the_wake_within_its_bound_then_recovers(self):
        self.start_cluster()
        self.add_deployment("slow-sloth")
        gw = self.start_k8s_gateway(defaults={"wake_timeout": "6s"})  # request_timeout 3s
        port = self.spark_port("slow-sloth")
        self.kube.faults.delay = 5.0  # every answer comes after the request timeout
        started = time.monotonic()
        r = self.ssh(Port(port), "true")
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(time.monotonic() - started, 20, "bounded by the request and wake timeouts")
        gw.wait_log("spark slow-sloth: wake failed")
        self.kube.faults.delay = 0
        self.assert_ssh_ok(self.ssh(Port(port), "echo patient"), "patient\n")

    @staticmethod
    def is_wake(name):
        """The wake's write: a patch of the Deployment that sets replicas to 1."""
        def match(r):
            body = r.json if isinstance(r.json, dict) else {}
            return r.name == name and not r.subresource and (body.get("spec") or {}).get("replicas") == 1
        return match

    def test_one_api_error_during_a_wake_is_retried(self):
        self.start_cluster()
        self.add_deployment("hic-cup")
        gw = self.start_k8s_gateway()
        port = self.spark_port("hic-cup")
        rule = self.kube.faults.fail(count=1, method="PATCH", code=503, message="etcd leader changed",
                                     when=self.is_wake("hic-cup"))
        # The client never sees the 503: the wake retries it within wake_timeout.
        self.assert_ssh_ok(self.ssh(Port(port), "echo through"), "through\n")
        self.assertEqual(rule.hits, 1)
        gw.wait_log("spark hic-cup:", "503", "etcd leader changed", "retrying in")
        self.assertEqual(gw.log_lines("spark hic-cup: wake failed"), [])

    def test_api_errors_fail_the_wake_with_the_status_message_then_recover(self):
        self.start_cluster()
        self.add_deployment("err-eel")
        gw = self.start_k8s_gateway(defaults={"idle_timeout": "1h", "wake_timeout": "4s"})
        port = self.spark_port("err-eel")
        rule = self.kube.faults.fail(method="PATCH", code=500, message="etcdserver: request timed out",
                                     when=self.is_wake("err-eel"))
        r = self.ssh(Port(port), "true")
        self.assertNotEqual(r.returncode, 0)
        gw.wait_log("spark err-eel: wake failed", "etcdserver: request timed out")
        self.assertGreaterEqual(rule.hits, 2, "retried within wake_timeout before failing")
        self.kube.faults.remove(rule)
        self.assert_ssh_ok(self.ssh(Port(port), "echo fine"), "fine\n")

    def test_watches_cut_every_second_change_nothing_for_users(self):
        self.start_cluster()
        self.kube.faults.watch_max_duration = 1.0
        self.add_deployment("choppy-cod", idle_timeout="4s")
        self.start_k8s_gateway()
        port = self.spark_port("choppy-cod")
        lists_before = len(self.kube.requests(verb="list"))
        for i in range(3):
            self.assert_ssh_ok(self.ssh(Port(port), "echo round-%d" % i), "round-%d\n" % i)
        wait_until(lambda: self.replicas("choppy-cod") == 0, 20, "the idle sleep despite cut watches")
        self.assertEqual(len(self.kube.scale_requests("choppy-cod")), 1, "one wake for three sessions")
        resumed = [r for r in self.kube.requests(verb="watch") if r.param("resourceVersion")]
        self.assertGreaterEqual(len(resumed), 6, "watches resumed again and again")
        self.assertEqual(len(self.kube.requests(verb="list")), lists_before, "resumed, never listed again")


class ProcessFaults(GatewayTestCase):

    def test_upstream_dying_mid_session_closes_that_client_only(self):
        spark = self.add_spark("frail-fox")
        self.write_config()
        gw = self.start_gateway()
        a = self.ssh_background(spark, "echo pid=$PPID; sleep 60", timeout=90)
        b = self.ssh_background(spark, "echo ready; read line; echo got-$line", stdin=-1, timeout=90)
        a.wait_output("pid=", 30)
        b.wait_output("ready", 30)
        # Kill A's sshd session process: its upstream connection goes away under the gateway.
        session_pid = int(a.stdout.split("pid=")[1].split()[0])
        os.kill(session_pid, signal.SIGKILL)
        rc = a.wait(30)
        self.assertNotEqual(rc, 0, "the client whose upstream died must see its session end")
        gw.wait_log("spark frail-fox: connection from", "closed after")
        # B is untouched and still works.
        b.proc.stdin.write(b"ok\n")
        b.proc.stdin.close()
        self.assertEqual(b.wait(30), 0, b.stderr)
        self.assertIn("got-ok", b.stdout)
        self.assert_ssh_ok(self.ssh(spark, "echo after"), "after\n")

    def test_kill_9_during_a_session_then_restart(self):
        spark = self.add_spark("tough-toad", idle_timeout="10s")
        # A short flush: the test kills the gateway once the session's activity is on disk, and
        # waits for that write (10 s) rather than for a production flush (30 s).
        self.write_config(flush_interval="1s")
        gw = self.start_gateway()
        s = self.ssh_background(spark, "echo in; sleep 60", timeout=90)
        s.wait_output("in", 30)
        wait_until(lambda: self.state_file_has("tough-toad"), 10, "activity to be flushed")
        before = self.recorded_activity("tough-toad")
        gw.kill()  # SIGKILL: no drain, no flush, no cleanup
        # No orphan: the spark's sshd dies with the gateway (PR_SET_PDEATHSIG).
        spark.wait_sshd_gone(10, "the spark's sshd to die with the gateway")
        self.assertNotEqual(s.wait(30), 0)
        gw2 = self.start_gateway()
        # Activity survived: the restarted gateway knows the session's last activity and does
        # not sleep the spark early (it is asleep now anyway: its sshd died); the next ssh wakes it.
        self.assertEqual(self.recorded_activity("tough-toad"), before)
        self.assert_ssh_ok(self.ssh(spark, "echo back"), "back\n")
        self.assertEqual(spark.starts(), 2)
        gw2.stop()

    def test_kill_9_during_a_wake_leaves_no_child_and_the_next_gateway_wakes(self):
        # A start command that takes 3 s to listen: kill the gateway in the middle.
        spark = self.add_spark("mid-wake")
        spark.command = ["/bin/sh", "-c", "echo start >> %s; sleep 3; exec %s -D -e -f %s"
                         % (spark.starts_file, harness.SSHD, spark.sshd_config)]
        self.write_config()
        gw = self.start_gateway()
        s = self.ssh_background(spark, "echo hi", timeout=60)
        gw.wait_log("spark mid-wake: waking")
        wait_until(lambda: spark.starts() == 1, 10, "the backend to start")
        gw.kill()
        self.assertNotEqual(s.wait(30), 0)
        wait_until(lambda: not spark.sshd_running(), 10, "the half-started spark to die with the gateway")
        self.start_gateway()
        self.assert_ssh_ok(self.ssh(spark, "echo hi"), "hi\n")

    def test_state_file_that_cannot_be_written_keeps_activity_and_retries(self):
        self.enable_admin()
        spark = self.add_spark("ink-imp")
        # A short flush: the test waits (10 s bounds) for the writes, the failing one and the retry.
        self.write_config(flush_interval="1s")
        gw = self.start_gateway()
        self.assert_ssh_ok(self.ssh(spark, "true"))
        wait_until(lambda: self.state_file_has("ink-imp"), 10, "activity to be flushed")
        # The next write fails (even as root): a directory where the temp file must go.
        blocker = self.state_file() + ".tmp"
        os.mkdir(blocker)
        since = gw.log_size()
        self.assert_ssh_ok(self.ssh(spark, "true"))
        gw.wait_log("cannot persist activity (will retry)", since=since)
        failures = lambda: self.metric("spark_gateway_activity_persist_failures_total", default=0.0, store="state_file")
        wait_until(lambda: failures() >= 1, 10, "the persist-failure counter")
        # The activity is kept in memory (the API still shows it) and written once possible.
        status, body = self.api("GET", "/api/v1/sparks/ink-imp")
        last = body["last_activity"]
        os.rmdir(blocker)
        wait_until(lambda: self.recorded_last_activity("ink-imp") == last, 10,
                   "the kept activity to reach the state file")
        self.assertTrue(gw.running())

    # -- helpers ---------------------------------------------------------------------------

    def state_file(self):
        return os.path.join(self.tmpdir, "state", "activity.json")

    def state_file_has(self, name):
        try:
            with open(self.state_file()) as f:
                return name in f.read()
        except OSError:
            return False

    def recorded_last_activity(self, name):
        with open(self.state_file()) as f:
            return (json.load(f)["sparks"].get(name) or {}).get("last_activity") or ""

    def recorded_activity(self, name):
        with open(self.state_file()) as f:
            return json.dumps(json.load(f), sort_keys=True)


if __name__ == "__main__":
    harness.main()
