#!/usr/bin/env python3
"""What an operator of the Kubernetes backend sees is true and tidy (issue 23):

  * an Event that repeats (a bad annotation, seen by every discovery pass) is ONE Event whose
    count grows, as the kubelet's are, and one log line;
  * an unparseable `last-activity` or `keep-awake-until` annotation, and a `port` the gateway
    cannot listen on, get a Warning Event naming the annotation and the reason;
  * a spark never used shows `never used` / JSON null / no last-activity series, not 1970;
  * a replica that did not put the spark to sleep says "asleep for" from `slept-at`;
  * a Deployment removed is logged as discovery, not as a config load.

Against the Kubernetes API double (tests/k8s_double) with real sshd pods; loopback only, every
wait has a deadline.
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import PREFIX, KubernetesTestCase, Port, rfc3339, wait_until  # noqa: E402


class Events(KubernetesTestCase):

    def touch_until(self, name, condition, timeout, what):
        """Changes an unrelated annotation of Deployment `name` (each change is a discovery
        pass) until condition() holds; bounded by `timeout`."""
        n = [0]

        def step():
            if condition():
                return True
            n[0] += 1
            self.kube.annotate("deployments", name, **{"e2e.test/touch": str(n[0])})
            return False
        wait_until(step, timeout, what, interval=0.3)
        return n[0]

    def test_a_bad_annotation_is_one_event_with_a_count_and_one_log_line(self):
        self.start_cluster()
        self.add_deployment("odd-owl", idle_timeout="soon")
        gw = self.start_k8s_gateway()
        self.spark_port("odd-owl")

        def counts():
            return [e.get("count") for e in self.kube.events("odd-owl", reason="InvalidAnnotation")]
        # Every pass sees the bad annotation again; each is an occurrence of the same Event.
        touches = self.touch_until("odd-owl", lambda: counts() and max(counts()) >= 4, 30,
                                   lambda: "one InvalidAnnotation Event counted 4 times (have %s)" % counts())
        # The count grows with passes: the first, perhaps one for the gateway's own port write
        # (separate from it or not, as the watch delivers it), then one per touch.
        self.assertGreaterEqual(touches, 2)
        events = self.kube.events("odd-owl", reason="InvalidAnnotation")
        self.assertEqual(len(events), 1, "one Event, not one per pass: %s" % [e["message"] for e in events])
        ev = events[0]
        self.assertEqual(ev["type"], "Warning")
        self.assertIn(PREFIX + 'idle-timeout "soon"', ev["message"])
        self.assertNotEqual(ev["lastTimestamp"], ev["firstTimestamp"])
        patches = self.kube.requests(method="PATCH", resource="events")
        self.assertGreaterEqual(len(patches), 3)
        self.assertEqual(patches[0].content_type, "application/merge-patch+json")
        self.assertEqual(set(patches[0].json), {"count", "lastTimestamp"})
        self.assertEqual(len(self.kube.requests(method="POST", resource="events")), 1)
        # One log line for the problem, however many passes saw it.
        self.assertEqual(len(gw.log_lines("spark odd-owl:", 'idle-timeout "soon"')), 1, gw.log())

        # Fixed, then broken again: news again (a log line), and the same Event counted on.
        count = max(counts())
        self.kube.annotate("deployments", "odd-owl", **{PREFIX + "idle-timeout": "30m"})
        wait_until(lambda: self.idle_timeout("odd-owl") == 1800, 15, "the fixed idle timeout to apply")
        self.kube.annotate("deployments", "odd-owl", **{PREFIX + "idle-timeout": "soon"})
        wait_until(lambda: len(gw.log_lines("spark odd-owl:", 'idle-timeout "soon"')) == 2, 15,
                   "a second log line once the problem came back")
        wait_until(lambda: max(counts()) > count, 15, "the Event's count to grow")
        self.assertEqual(len(self.kube.events("odd-owl", reason="InvalidAnnotation")), 1)

    def idle_timeout(self, name):
        """The idle timeout the gateway applies to `name`, in seconds."""
        status, body = self.api("GET", "/api/v1/sparks/" + name)
        return body.get("idle_timeout_seconds") if status == 200 else None

    def setUp(self):
        super().setUp()
        self.enable_admin()

    def test_unparseable_activity_annotations_get_a_warning_event(self):
        self.start_cluster()
        self.add_deployment("vague-vole", last_activity="yesterday", keep_awake_until="soon")
        gw = self.start_k8s_gateway()
        self.spark_port("vague-vole")
        for key, value, consequence in (("last-activity", "yesterday", "ignored"),
                                        ("keep-awake-until", "soon", "no keep-awake")):
            ev = wait_until(lambda: [e for e in self.kube.events("vague-vole", reason="InvalidAnnotation")
                                     if PREFIX + key in e["message"]], 15,
                            "an InvalidAnnotation Event naming %s" % key)
            self.assertEqual(len(ev), 1)
            self.assertEqual(ev[0]["type"], "Warning")
            self.assertIn('%s%s "%s" is not an RFC 3339 time' % (PREFIX, key, value), ev[0]["message"])
            self.assertIn(consequence, ev[0]["message"])
        # A few more passes: still one log line each.
        for i in range(3):
            self.kube.annotate("deployments", "vague-vole", **{"e2e.test/touch": str(i)})
        wait_until(lambda: max(e.get("count", 1) for e in self.kube.events("vague-vole")) >= 2, 15,
                   "a later pass to count the problems again")
        self.assertEqual(len(gw.log_lines("spark vague-vole:", PREFIX + 'last-activity "yesterday"')), 1)
        self.assertEqual(len(gw.log_lines("spark vague-vole:", PREFIX + 'keep-awake-until "soon"')), 1)
        # Ignored means ignored: no keep-awake hold, no activity.
        status, body = self.api("GET", "/api/v1/sparks/vague-vole")
        self.assertEqual((status, body["keep_awake_until"], body["last_activity"]), (200, None, None))

    def test_a_port_the_gateway_cannot_listen_on_gets_a_warning_event(self):
        self.start_cluster()
        lo, _ = self.port_range()
        taken = lo + 3
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind((self.host, taken))
        holder.listen(1)
        self.add_deployment("blocked-bat", port=taken)
        gw = self.start_k8s_gateway()
        gw.wait_log("spark blocked-bat: cannot listen on", "not served")
        ev = wait_until(lambda: self.kube.events("blocked-bat", reason="PortUnavailable"), 15,
                        "a PortUnavailable Event")
        self.assertEqual(len(ev), 1)
        self.assertEqual(ev[0]["type"], "Warning")
        self.assertIn('%sport "%d": cannot listen on %s:%d' % (PREFIX, taken, self.host, taken), ev[0]["message"])
        self.assertIn("not served", ev[0]["message"])
        # Once the port is free, the next change serves it.
        holder.close()
        self.touch_until("blocked-bat", lambda: gw.log_lines("spark blocked-bat: listening on", ":%d " % taken),
                         20, "blocked-bat to be served once its port is free")
        self.assert_ssh_ok(self.ssh(Port(taken), "echo free"), "free\n")


class WhatOperatorsSee(KubernetesTestCase):

    def setUp(self):
        super().setUp()
        self.enable_admin()

    def test_a_never_used_spark_shows_never_not_1970(self):
        self.start_cluster()
        self.add_deployment("fresh-fern")
        self.start_k8s_gateway()
        port = self.spark_port("fresh-fern")
        status, body = self.api("GET", "/api/v1/sparks/fresh-fern")
        self.assertEqual(status, 200)
        self.assertIsNone(body["last_activity"], "a spark never used has no last activity (not 1970)")
        r = self.admin_cli("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        row = [line for line in r.stdout.splitlines() if line.startswith("fresh-fern ")]
        self.assertEqual(len(row), 1, r.stdout)
        self.assertIn("never used", row[0])
        self.assertNotRegex(row[0], r"\d{4,}d", "an idle time of decades")
        r = self.admin_cli("status", "fresh-fern", "-o", "json")
        self.assertIn('"last_activity": null', r.stdout)
        self.assertIsNone(self.metric("spark_gateway_last_activity_timestamp_seconds", spark="fresh-fern"))
        # Used once: a real time everywhere.
        self.assert_ssh_ok(self.ssh(Port(port), "true"))
        wait_until(lambda: self.spark_status("fresh-fern")["last_activity"], 10,
                   "a last activity once used")
        self.assertIsNotNone(self.metric("spark_gateway_last_activity_timestamp_seconds", spark="fresh-fern"))
        row = [line for line in self.admin_cli("status").stdout.splitlines() if line.startswith("fresh-fern ")]
        self.assertNotIn("never used", row[0])

    def test_asleep_for_counts_from_slept_at(self):
        # Put to sleep 8 minutes ago by some other replica (or before this gateway started).
        self.start_cluster()
        now = time.time()
        self.add_deployment("old-oak", slept_at=rfc3339(now - 480), sleep_reason="idle",
                            last_activity=rfc3339(now - 600))
        gw = self.start_k8s_gateway()
        port = self.spark_port("old-oak")
        self.assert_ssh_ok(self.ssh(Port(port), "echo up"), "up\n")
        line = gw.wait_log("spark old-oak: waking for")
        self.assertRegex(line, r"\(asleep for 8m\d", "counted from slept-at, not from the gateway's start")

    def test_a_removed_deployment_is_logged_as_discovery(self):
        self.start_cluster()
        self.add_deployment("stay-stoat")
        self.add_deployment("gone-goat")
        gw = self.start_k8s_gateway()
        self.spark_port("stay-stoat")
        self.spark_port("gone-goat")
        self.kube.delete("deployments", "gone-goat")
        line = gw.wait_log("removed gone-goat")
        self.assertIn("kubernetes: discovered sparks changed: serving 1 spark (added -, changed -, removed gone-goat)",
                      line)
        self.assertEqual([ln for ln in gw.log_lines("config ") if "gone-goat" in ln], [])
        # The start-up line is about the config file, in the singular/plural it needs.
        self.assertTrue(gw.log_lines("config %s: 0 sparks" % self.config_path), gw.log())


if __name__ == "__main__":
    harness.main()
