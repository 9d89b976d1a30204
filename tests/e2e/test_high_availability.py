#!/usr/bin/env python3
"""Several gateway replicas against one Kubernetes API double (docs/high-availability.md):
one Lease-elected reaper at a time, handed over when the leader dies or loses the API, sessions
through any replica keep a spark awake, simultaneous wakes through two replicas scale once.

Each replica is a real gateway process on its own loopback address (the same spark port on
each, as pods behind one Service would be), with its own token so the API double can cut one
off. Lease timings are shortened (3 s / 2 s / 0.5 s) so hand-overs take seconds.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import KubernetesTestCase, wait_until  # noqa: E402

LEASE = "spark-gateway-reaper"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 3.0, 2.0, 0.5


class HighAvailability(KubernetesTestCase):

    def start_replica(self, name):
        """A replica (KubernetesMixin.start_replica) with these Lease timings and a 2 s
        request_timeout."""
        return super().start_replica(name, kubernetes={
            "request_timeout": "2s",
            "leader_election": {"enabled": True, "lease_duration": "%gs" % LEASE_DURATION,
                                "renew_deadline": "%gs" % RENEW_DEADLINE,
                                "retry_period": "%gms" % (RETRY_PERIOD * 1000)}})

    def leaders(self, replicas):
        return [r for r in replicas if r.gateway.running() and r.leads()]

    def lease_holder(self):
        lease = self.kube.get("leases", LEASE)
        return lease and lease["spec"].get("holderIdentity")

    def test_exactly_one_leader_and_kill_9_hands_over_within_the_lease(self):
        self.start_cluster()
        replicas = [self.start_replica(n) for n in ("gw-a", "gw-b", "gw-c")]
        wait_until(lambda: len(self.leaders(replicas)) == 1, 10, "one leader")
        # Watch for a while: never two at once, and the Lease names the one that says it leads.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            leaders = self.leaders(replicas)
            self.assertLessEqual(len(leaders), 1, "two leaders: %s" % [r.name for r in leaders])
            time.sleep(0.1)  # sampling interval of an observation, not a wait for a condition
        (leader,) = self.leaders(replicas)
        self.assertEqual(self.lease_holder(), leader.name)
        self.assertEqual(leader.metric("spark_gateway_leader"), 1)
        for r in replicas:
            if r is not leader:
                self.assertEqual(r.metric("spark_gateway_leader"), 0)
        # kill -9: no release; another replica must take over once the Lease expires.
        killed_at = time.monotonic()
        leader.gateway.kill()
        rest = [r for r in replicas if r is not leader]
        wait_until(lambda: len(self.leaders(rest)) == 1, LEASE_DURATION + 5, "a new leader")
        took = time.monotonic() - killed_at
        self.assertLessEqual(took, LEASE_DURATION + 2 * RETRY_PERIOD * 1.2 + 1.0,
                             "hand-over within the lease duration (+ one retry period and slack)")
        (new_leader,) = self.leaders(rest)
        self.assertEqual(self.lease_holder(), new_leader.name)
        self.assertGreaterEqual(self.kube.get("leases", LEASE)["spec"]["leaseTransitions"], 1)

    def test_sigterm_releases_the_lease_at_once(self):
        self.start_cluster()
        a = self.start_replica("gw-a")
        wait_until(a.leads, 10, "gw-a to lead")
        b = self.start_replica("gw-b")
        a.gateway.stop()
        started = time.monotonic()
        wait_until(b.leads, LEASE_DURATION + 3, "gw-b to lead")
        self.assertLess(time.monotonic() - started, LEASE_DURATION, "a released Lease is taken before it expires")
        a.gateway.wait_log("leader election: gw-a released Lease")

    def test_session_through_one_replica_keeps_the_spark_awake_while_another_reaps(self):
        self.start_cluster()
        port = self.port_range()[0]
        self.add_deployment("deep-work", port=port, idle_timeout="3s")
        # At the production flush (30 s > the 3 s idle timeout): gw-a refreshes last-activity
        # often enough for the idle timeout, not only at its flush (issue 16).
        b = self.start_replica("gw-b")
        wait_until(b.leads, 10, "gw-b to lead")
        a = self.start_replica("gw-a")
        self.assertFalse(a.leads())
        # A session through gw-a, silent for twice the idle timeout.
        p = self.ssh_via(a, port, "echo started; sleep 7; echo still-here")
        p.wait_output("started", 30)
        self.assertEqual(p.wait(30), 0, p.stderr)
        self.assertEqual(p.stdout, "started\nstill-here\n", "the spark slept under a live session")
        # Once it is closed, the leader (gw-b), not gw-a, puts it to sleep.
        wait_until(lambda: self.replicas("deep-work") == 0, 20, "the leader to sleep the idle spark")
        sleeps = [r for r in self.kube.requests(method="PATCH", resource="deployments", name="deep-work")
                  if r.subresource is None and (r.json or {}).get("spec", {}).get("replicas") == 0]
        self.assertEqual([r.token for r in sleeps], [b.token], "only the leader sleeps sparks")
        b.gateway.wait_log("spark deep-work: asleep after")
        self.assertEqual(a.gateway.log_lines("spark deep-work: asleep after"), [])

    def test_simultaneous_wakes_through_two_replicas_scale_once(self):
        self.start_cluster()
        port = self.port_range()[0]
        self.add_deployment("twin-call", port=port)
        a = self.start_replica("gw-a")
        b = self.start_replica("gw-b")
        procs = []
        start = threading.Barrier(2)

        def go(replica, i):
            start.wait(5)
            procs.append(self.ssh_via(replica, port, "echo via-%d" % i))
        threads = [threading.Thread(target=go, args=(r, i)) for i, r in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        for p in procs:
            self.assertEqual(p.wait(60), 0, p.stderr)
        self.assertEqual(sorted(p.stdout for p in procs), ["via-0\n", "via-1\n"])
        accepted = [r for r in self.kube.scale_requests("twin-call") if r.status == 200]
        self.assertEqual(len(accepted), 1, "one scale to 1 for both replicas")
        self.assertLessEqual(len(self.kube.scale_requests("twin-call")), 2, "at most one scale call each")

    def test_a_leader_cut_off_from_the_api_stops_reaping(self):
        self.start_cluster()
        a = self.start_replica("gw-a")
        wait_until(a.leads, 10, "gw-a to lead")
        b = self.start_replica("gw-b")
        # Partition gw-a from the API server: every request with its token is refused.
        self.kube.faults.refuse_token(a.token, mode="close")
        cut_at = time.monotonic()
        wait_until(lambda: not a.leads(), RENEW_DEADLINE + 2, "gw-a to stop leading")
        self.assertLess(time.monotonic() - cut_at, LEASE_DURATION,
                        "a cut-off leader gives up before its Lease can expire")
        wait_until(b.leads, LEASE_DURATION + 5, "gw-b to take over")
        self.assertEqual(a.metric("spark_gateway_leader"), 0)
        a.gateway.wait_log("leader election: gw-a no longer leads")


if __name__ == "__main__":
    harness.main()
