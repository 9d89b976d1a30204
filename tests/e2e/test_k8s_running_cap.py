#!/usr/bin/env python3
"""limits.max_running across two gateway replicas against the Kubernetes API double
(docs/high-availability.md, "The cap on running sparks"): never more than max_running spark
Deployments at replicas >= 1, however the wakes are spread over the replicas, even while each
replica's watch lags behind the other's writes; the wakes beyond the cap wait in line (the API
shows them "queued", with their place) and are woken when a running spark is put to sleep; with
limits.evict_idle_after the spark idle longest is put to sleep to make room, and the Events on
both Deployments say so.

The clients are raw TCP connections that send an SSH identification (a person's first bytes,
which wake a spark) and wait for the spark's sshd to answer with its own: a connection through
the gateway that reached its spark. Each replica is a real gateway process on its own loopback
address with its own token, as in test_high_availability.py.
"""

import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import KubernetesTestCase, wait_until  # noqa: E402

MAX_RUNNING = 2
RUNNING_LEASE = "spark-gateway-running"
CLAIMS = "spark-gateway/running-claims"
ADMIN_TOKEN = "cap-admin-token-" + "x" * 8
# Each replica's watch shows the other's writes this late (the double's watch cache lag): a
# replica counting running sparks from its watch alone would see room that another replica has
# just taken. Below 3 s, so list-then-watch still works (docs/kubernetes-api-double.md).
WATCH_LAG = 1.5


class Client:
    """A raw TCP client of a spark through one replica: sends an SSH identification, then waits
    in the background for the spark's sshd to send its own (`reached`)."""

    def __init__(self, test, replica, spark, port, timeout):
        self.replica, self.spark = replica, spark
        self.reached = threading.Event()
        self.error = None
        self.sock = socket.create_connection((replica.host, port), timeout=10)
        test.addCleanup(self.close)
        self.sock.sendall(b"SSH-2.0-e2e_running_cap\r\n")
        self.thread = threading.Thread(target=self._read, args=(timeout,), daemon=True)
        self.thread.start()

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        got = b""
        try:
            while b"\n" not in got:
                chunk = self.sock.recv(256)
                if not chunk:
                    self.error = "closed before the spark answered (%r)" % got
                    return
                got += chunk
            if got.startswith(b"SSH-2.0-OpenSSH"):
                self.reached.set()
            else:
                self.error = "not an sshd: %r" % got
        except OSError as e:
            self.error = "%s" % e

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class RunningCapAcrossReplicas(KubernetesTestCase):

    def start_replica(self, name, limits, defaults=None, flush_interval=None):
        """A replica (KubernetesMixin.start_replica) with `limits`, an admin token, Lease timings
        of 3 s / 2 s / 500 ms and a 3 s request_timeout."""
        return super().start_replica(
            name, defaults=defaults, flush_interval=flush_interval, limits=limits, admin_token=ADMIN_TOKEN,
            kubernetes={"request_timeout": "3s",
                        "leader_election": {"enabled": True, "lease_duration": "3s", "renew_deadline": "2s",
                                            "retry_period": "500ms"}})

    def serve(self, names):
        """Spark Deployments at 0 replicas, each with its port; returns {name: port}."""
        lo = self.port_range()[0]
        ports = {}
        for i, name in enumerate(names):
            ports[name] = lo + i
            self.add_deployment(name, port=lo + i)
        return ports

    def wait_served(self, replicas, ports):
        for r in replicas:
            for name, port in ports.items():
                r.gateway.wait_log("spark %s: listening on" % name, ":%d " % port, timeout=20)

    def running_over_time(self, names):
        """From the double's object history: the most spark Deployments (of `names`) that were at
        replicas >= 1 at any one moment, and the sets of them at each change."""
        store = self.kube.store
        with store.cond:
            history = [ev for ev in store.history if ev.resource == "deployments" and ev.name in names]
        replicas = {}
        most, sets = 0, []
        for ev in history:
            replicas[ev.name] = 0 if ev.type == "DELETED" else ((ev.obj.get("spec") or {}).get("replicas") or 0)
            running = sorted(n for n, r in replicas.items() if r >= 1)
            if not sets or sets[-1] != running:
                sets.append(running)
            most = max(most, len(running))
        return most, sets

    def running_now(self, names):
        return sorted(n for n in names if self.replicas(n) >= 1)

    def assert_never_over_cap(self, names):
        most, sets = self.running_over_time(names)
        self.assertLessEqual(most, MAX_RUNNING, "more than %d spark Deployments at replicas >= 1 at once; "
                             "the running sets over time: %s" % (MAX_RUNNING, sets))

    def test_the_cap_holds_across_replicas_and_the_line_is_woken_by_sleeps(self):
        self.start_cluster()
        names = ["cap-alpha", "cap-bravo", "cap-charlie", "cap-delta"]
        ports = self.serve(names)
        limits = {"max_running": MAX_RUNNING}
        defaults = {"wake_timeout": "120s"}  # the line's wait counts against it
        a = self.start_replica("gw-a", limits, defaults)
        b = self.start_replica("gw-b", limits, defaults)
        self.wait_served((a, b), ports)
        self.kube.faults.watch_lag = WATCH_LAG

        # Four people at once, two through each replica.
        via = {"cap-alpha": a, "cap-bravo": b, "cap-charlie": a, "cap-delta": b}
        start = threading.Barrier(len(names))
        clients = {}

        def connect(name):
            start.wait(5)
            clients[name] = Client(self, via[name], name, ports[name], timeout=110)
        threads = [threading.Thread(target=connect, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        self.assertEqual(sorted(clients), names)

        def reached():
            return sorted(n for n, c in clients.items() if c.reached.is_set())
        wait_until(lambda: len(reached()) == MAX_RUNNING, 60, "two sparks to be reached")
        first = reached()
        waiting = [n for n in names if n not in first]
        # The others wait in line on the replica they came through: "queued", with their place.
        for name in waiting:
            view = wait_until(lambda n=name: (lambda v: v if v and v.get("state") == "queued" else None)(
                via[n].spark(n, timeout=30)), 15, "%s to show queued on %s" % (name, via[name].name))
            self.assertGreaterEqual(view["queue_position"], 1, view)
            self.assertEqual(self.replicas(name), 0, "%s is queued but its Deployment was scaled up" % name)
        # A while longer (past the watch lag several times): nobody else gets in.
        deadline = time.monotonic() + 4 * WATCH_LAG
        while time.monotonic() < deadline:
            self.assertEqual(reached(), first)
            self.assertLessEqual(len(self.running_now(names)), MAX_RUNNING)
            time.sleep(0.2)  # sampling an observation window, not waiting for a condition
        lease = self.kube.get("leases", RUNNING_LEASE)
        self.assertIsNotNone(lease, "the running places are claimed in Lease %s" % RUNNING_LEASE)
        claims = json.loads(lease["metadata"]["annotations"][CLAIMS])
        self.assertTrue(set(first) <= set(claims), "the admitted wakes' claims: %s" % claims)

        # Put one running spark to sleep (admin API, through the replica that woke it): one in
        # line takes its place. Then the other: the last one in line goes too.
        for n, slept in enumerate(first, start=1):
            status, body = via[slept].call("POST", "/api/v1/sparks/%s/sleep?force=true" % slept, timeout=30)
            self.assertEqual(status, 200, body)
            wait_until(lambda: len([w for w in waiting if clients[w].reached.is_set()]) == n, 60,
                       "%d of the sparks in line to be woken after %s slept" % (n, slept))
            self.assertEqual(self.replicas(slept), 0)
        for name in waiting:
            self.assertIsNone(clients[name].error)
            self.assertIsNone(via[name].spark(name, timeout=30).get("queue_position"))
        self.assertEqual(sorted(self.running_now(names)), sorted(waiting))
        self.assert_never_over_cap(names)
        # Both replicas took their places through the Lease (the cap is not one replica's alone).
        writers = {r.token for r in self.kube.requests(resource="leases", name=RUNNING_LEASE)
                   if r.method in ("POST", "PUT") and r.status in (200, 201)}
        self.assertEqual(writers, {"token-gw-a", "token-gw-b"})

    def test_evict_idle_after_puts_the_longest_idle_spark_to_sleep_to_make_room(self):
        self.start_cluster()
        names = ["evict-first", "evict-second", "evict-third"]
        ports = self.serve(names)
        # evict_idle_after 2s: short, so the test need not wait 15 minutes. flush_interval 1s:
        # gw-b judges sparks that were used through gw-a, whose connections' close is recorded
        # on the Deployment at gw-a's next flush (30 s by default).
        limits = {"max_running": MAX_RUNNING, "evict_idle_after": "2s"}
        a = self.start_replica("gw-a", limits, flush_interval="1s")
        b = self.start_replica("gw-b", limits, flush_interval="1s")
        self.wait_served((a, b), ports)

        # evict-first, then evict-second, used briefly through gw-a; both idle since.
        for name in ("evict-first", "evict-second"):
            c = Client(self, a, name, ports[name], timeout=60)
            wait_until(c.reached.is_set, 60, "%s to be reached" % name)
            c.close()
            wait_until(lambda n=name: b.state(n, timeout=30) == "running", 15, "gw-b to see %s running" % name)
            time.sleep(1.0)  # a second between their last uses: which one is idle longest is clear
        # Both idle for at least evict_idle_after.
        time.sleep(2.5)

        third = Client(self, b, "evict-third", ports["evict-third"], timeout=60)
        wait_until(third.reached.is_set, 60, "evict-third to be reached after an eviction")
        self.assertEqual(self.replicas("evict-first"), 0, "the spark idle longest was put to sleep")
        self.assertEqual(self.replicas("evict-second"), 1)
        slept = wait_until(lambda: self.kube.events("evict-first", reason="Slept"), 10, "the Slept Event")
        self.assertEqual(slept[-1]["message"], "Put to sleep to make room for evict-third")
        self.assertEqual(self.annotation("evict-first", "sleep-reason"), "evicted")
        woken = wait_until(lambda: self.kube.events("evict-third", reason="Woken"), 10, "the Woken Event")
        self.assertIn("Woken by ", woken[-1]["message"])
        self.assertTrue(woken[-1]["message"].endswith("after evict-first was put to sleep to make room"),
                        woken[-1]["message"])
        self.assert_never_over_cap(names)


if __name__ == "__main__":
    harness.main()
