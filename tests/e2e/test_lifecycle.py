#!/usr/bin/env python3
"""Issue 16: a spark someone is using is never put to sleep, on any replica, after any restart,
and a failed wake leaves nothing running -- at PRODUCTION DEFAULTS.

Every test runs two real gateway replicas against one Kubernetes API double (a real sshd per
pod), each replica configured from deploy/base/gateway.json, the config we ship: leader election
on with its timings (the gateway's defaults, 15 s / 10 s / 2 s, unless deploy/ sets others), the
activity flush at its default (30 s: nothing here shortens it), request_timeout at its default.
What a test changes is named where it does it: the reaper interval (500 ms where the issue's case
says so: a reaper faster than the flush is what exposed case 1), per-spark idle timeouts (as
annotations), wake_timeout where a wake must time out. Each replica has its own loopback address,
admin port, state_dir and API token (so the request log tells who wrote what); every spark has a
fixed port, the same on both replicas, as pods behind one tailnet Service would serve it.

Users' checks only: the ssh session's command keeps running and exits 0, the Deployment's replicas
and annotations in the double, the admin API's spark view (state, sleeps_at), Events, log lines.
Waits poll with deadlines. Where a test shows that something does NOT happen it watches for a
bounded window several reaper ticks long, and says why that window is long enough.

Faults go on the wake's scale-up request only (chosen by its body with the double's `when=`,
since the scale-up and activity writes share a path): failures (fail), an answer after the
request timeout of a write that was applied (answer_late), a request held until its client gave
up (hold), the API server down (down/up), a crash-looping pod (the kubelet's scenarios).
"""

import json
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import PREFIX, REPO_ROOT, KubernetesTestCase, parse_rfc3339, rfc3339, wait_until  # noqa: E402

DEPLOY_CONFIG = os.path.join(REPO_ROOT, "deploy", "base", "gateway.json")
FAST_REAPER = "500ms"  # the setting; anyone who wants sparks to sleep promptly sets it below 30 s
FAST_REAPER_S = 0.5
FLUSH_S = 30.0  # the gateway's default activity.flush_interval; asserted against deploy/ in setUp
REQUEST_TIMEOUT_S = 10.0  # the gateway's default kubernetes.request_timeout (deploy/ sets none)
TIMED_OUT = r"timed out|\btime ?out\b"  # a request's timeout; not "wake_timeout"


def parse_duration(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def deploy_config():
    with open(DEPLOY_CONFIG) as f:
        return json.load(f)


def lease_timings():
    """deploy/'s leader-election timings in seconds, else the gateway's (client-go's) defaults."""
    le = deploy_config()["kubernetes"].get("leader_election", {})
    return tuple(parse_duration(le[k]) if k in le else d
                 for k, d in (("lease_duration", 15.0), ("renew_deadline", 10.0), ("retry_period", 2.0)))


LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = lease_timings()


def is_scale_up(rec, name):
    """A request that sets the Deployment `name` to 1 replica: a PATCH/PUT of deployments/NAME or
    deployments/NAME/scale whose body carries spec.replicas 1 (the wake, in whatever form)."""
    if rec.method not in ("PATCH", "PUT") or rec.resource != "deployments" or rec.name != name:
        return False
    body = rec.json or {}
    return isinstance(body, dict) and (body.get("spec") or {}).get("replicas") == 1


def is_scale_down(rec, name):
    if rec.method not in ("PATCH", "PUT") or rec.resource != "deployments" or rec.name != name:
        return False
    body = rec.json or {}
    return isinstance(body, dict) and (body.get("spec") or {}).get("replicas") == 0


class LifecycleTestCase(KubernetesTestCase):

    def setUp(self):
        super().setUp()
        cfg = deploy_config()
        # The defaults this file claims to run at: deploy/ leaves the flush and the request
        # timeout to the gateway's defaults. If deploy/ starts setting them, follow it here.
        self.assertNotIn("activity", cfg, "deploy/ sets activity.*: use its flush_interval here")
        self.assertNotIn("request_timeout", cfg["kubernetes"])
        self.assertTrue(cfg["kubernetes"]["leader_election"]["enabled"], "deploy/ runs leader election")

    # -- the cluster and the replicas ----------------------------------------------------

    def add_k8s_spark(self, name, port, replicas=0, idle_timeout=None, last_activity=None):
        """A spark Deployment with a fixed gateway port (the same on every replica)."""
        ann = {}
        if idle_timeout:
            ann["idle_timeout"] = idle_timeout
        if last_activity is not None:
            ann["last_activity"] = rfc3339(last_activity)
        self.add_deployment(name, port=port, replicas=replicas, **ann)

    def replica_config(self, reaper_interval=None, defaults=None):
        """deploy/base/gateway.json for start_replica(config=...), which replaces what must differ
        on a test machine: paths, addresses, the API server and its token, the Lease identity.
        manage_services is off: the tailnet Services are test_tailscale_services' business, and
        their writes would only add traffic here."""
        cfg = deploy_config()
        cfg["defaults"].update(defaults or {})
        if reaper_interval:
            cfg["reaper"] = {"interval": reaper_interval}
        cfg["kubernetes"]["manage_services"] = False
        return cfg

    def restart_with_empty_state(self, replica):
        """Starts a killed replica again, with the same config and an empty state_dir."""
        self.assertFalse(replica.gateway.running())
        shutil.rmtree(replica.state_dir, ignore_errors=True)
        self.run_replica(replica)

    def start_pair(self, reaper_interval=None, defaults=None):
        """Two replicas, gw-a and gw-b; returns (leader, follower) as the Lease decided. gw-a
        starts first and finds the Lease free, so it normally leads, but the test asks."""
        a = self.start_replica("gw-a", config=self.replica_config(reaper_interval, defaults))
        wait_until(a.leads, RETRY_PERIOD * 1.2 + 5, "gw-a, alone, to take the free Lease")
        b = self.start_replica("gw-b", config=self.replica_config(reaper_interval, defaults))
        replicas = [a, b]
        leaders = wait_until(lambda: [r for r in replicas if r.leads()], 10, "a leader")
        self.assertEqual(len(leaders), 1, "exactly one leader: %s" % leaders)
        (leader,) = leaders
        (follower,) = [r for r in replicas if r is not leader]
        lease = self.kube.get("leases", deploy_config()["kubernetes"]["leader_election"]["lease_name"])
        self.assertEqual(lease["spec"]["holderIdentity"], leader.name, "the Lease names the leader")
        self.assertEqual(leader.metric("spark_gateway_leader"), 1)
        self.assertEqual(follower.metric("spark_gateway_leader"), 0)
        self.assertEqual(lease["spec"]["leaseDurationSeconds"], int(LEASE_DURATION))
        return leader, follower

    def wait_served(self, name, port, replicas=None, timeout=15):
        """Every given (running) replica listens for `name` on `port`."""
        for r in replicas or [r for r in self.replica_list if r.gateway.running()]:
            wait_until(lambda: r.log_lines("spark %s: listening on" % name, ":%d " % port), timeout,
                       "replica %s to listen for %s on port %d" % (r.name, name, port))

    def ssh_ok(self, replica, port, command, expected, timeout=90):
        p = self.ssh_via(replica, port, command)
        rc = p.wait(timeout)
        self.assertEqual((rc, p.stdout), (0, expected),
                         "ssh %r through %s: rc=%s stderr=%r" % (command, replica.name, rc, p.stderr))
        return p

    # -- what a user looks at ------------------------------------------------------------

    def scale_ups(self, name, status=None):
        return [r for r in self.kube.requests(resource="deployments", name=name)
                if is_scale_up(r, name) and (status is None or r.status == status)]

    def scale_downs(self, name, status=None):
        return [r for r in self.kube.requests(resource="deployments", name=name)
                if is_scale_down(r, name) and (status is None or r.status == status)]

    def sleeps_at(self, replica, name):
        s = replica.spark(name)
        self.assertIsNotNone(s, "%s knows spark %s" % (replica.name, name))
        self.assertEqual(s["state"], "running", "%s shows %s running: %s" % (replica.name, name, s))
        self.assertIsNotNone(s["sleeps_at"], "%s gives %s a sleeps_at: %s" % (replica.name, name, s))
        return parse_rfc3339(s["sleeps_at"])

    def assert_sleeps_at_between(self, replica, name, earliest, latest, why):
        at = self.sleeps_at(replica, name)
        now = time.time()
        self.assertTrue(earliest <= at <= latest,
                        "%s: %s's sleeps_at is %s (%+.1fs from now), expected between %+.1fs and %+.1fs "
                        "from now: %s" % (replica.name, name, rfc3339(at), at - now, earliest - now,
                                          latest - now, why))

    def sleep_lines(self, name):
        return {r.name: r.log_lines("spark %s: going to sleep" % name) for r in self.replica_list}

    def hold(self, seconds, problem, why):
        """Fails if problem() returns a description (truthy) at any point during the next
        `seconds`: a bounded watch that something does not happen. `why` says why that window is
        long enough to see it if it were going to happen."""
        deadline = time.monotonic() + seconds
        while True:
            p = problem()
            if p:
                self.fail("%s (watched %gs: %s)" % (p, seconds, why))
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)  # the sampling period of an observation, not a wait for a condition

    def stays_running(self, names):
        """A problem() for hold(): any of the sparks scaled down or slept."""
        def problem():
            for n in names:
                if self.replicas(n) != 1:
                    return "spark %s was scaled to %d; sleep log lines: %s" % (n, self.replicas(n),
                                                                             self.sleep_lines(n))
                # Also a sleep that a wake undid between two samples. (A sleep refused with 409
                # is the design working, not a sleep.)
                if self.scale_downs(n, status=200):
                    return "spark %s was scaled to 0: %s" % (n, self.scale_downs(n, status=200))
            return None
        return problem

    # -- faults on the wake's scale-up only -----------------------------------------------

    def fault_on_scale_up(self, name, kind, seconds=None, code=None, retry_after=None):
        """A one-shot fault on the next scale-up request of Deployment `name` (the wake's PATCH,
        recognised by its body, since activity writes share its path), with the double's knobs:

          kind "status"   answer `code` instead (500, 503: a Status "injected failure"; 429: as
                          API Priority and Fairness does, text/plain with Retry-After), not applied
          kind "drop"     close the connection without an answer, not applied
          kind "hold"     hold it `seconds`; the client gives up first, so it is not applied
          kind "late"     apply it, then answer `seconds` late (the client times out first)

        Returns the double's rule (.hits)."""
        f = self.kube.faults

        def when(rec):
            return rec is not None and is_scale_up(rec, name)
        if kind == "status":
            return f.fail(count=1, code=code, retry_after=retry_after, when=when)
        if kind == "drop":
            return f.fail(count=1, close=True, when=when)
        if kind == "hold":
            return f.hold(seconds, count=1, when=when)
        if kind == "late":
            return f.answer_late(seconds, count=1, when=when)
        raise ValueError(kind)

    def faulted_scale_ups(self, name):
        return [r for r in self.scale_ups(name) if r.fault]


# ============================================================================================
# Case 1 (and 4): a wake through the replica that does not hold the Lease


class WakeThroughTheFollower(LifecycleTestCase):

    def test_case1_silent_session_through_the_follower_outlives_idle_timeout_and_a_flush(self):
        """Issue 16 case 1, with idle-timeout 20s < the 30 s flush (case 4). Asleep with
        last-activity 10 minutes old, and with none at all: `ssh` through the follower must stay
        up past idle timeout + a flush + many reaper ticks. The same through the leader (which
        the issue saw stay up) as a control. Afterwards the leader sleeps each spark promptly."""
        idle = 20.0
        self.start_cluster()
        p0 = self.port_range()[0]
        ten_minutes_ago = time.time() - 600
        self.add_k8s_spark("stale-lynx", p0, idle_timeout="20s", last_activity=ten_minutes_ago)
        self.add_k8s_spark("blank-lynx", p0 + 1, idle_timeout="20s")
        self.add_k8s_spark("lead-lynx", p0 + 2, idle_timeout="20s", last_activity=ten_minutes_ago)
        leader, follower = self.start_pair(reaper_interval=FAST_REAPER)
        routes = {"stale-lynx": (follower, p0), "blank-lynx": (follower, p0 + 1), "lead-lynx": (leader, p0 + 2)}
        for name, (_, port) in routes.items():
            self.wait_served(name, port)
            for r in (leader, follower):
                self.assertEqual(r.state(name), "sleeping", "%s on %s before the test" % (name, r.name))

        # Long enough to cross the idle deadline, one whole flush interval and ~10 reaper ticks
        # after it: the leader slept such a spark 500 ms after adopting it.
        session = idle + FLUSH_S + 10 * FAST_REAPER_S
        procs = {name: self.ssh_via(r, port, "echo started; sleep %d; echo still-here" % round(session))
                 for name, (r, port) in routes.items()}
        for name, p in procs.items():
            try:
                p.wait_output("started", 60)
            except AssertionError as e:
                self.fail("%s (through %s); sleep log lines: %s" % (e, routes[name][0].name, self.sleep_lines(name)))
        session_started = time.time()
        for name, (r, _) in routes.items():
            self.assertTrue(r.log_lines("spark %s: connection from" % name),
                            "the session to %s went through %s" % (name, r.name))
        # While the sessions run, the sparks stay at 1 replica; report the first that does not.
        ended = {}
        deadline = time.monotonic() + session + 60
        while len(ended) < len(procs) and time.monotonic() < deadline:
            for name, p in procs.items():
                if name not in ended and not p.running():
                    ended[name] = time.time()
            if len(ended) < len(procs):
                bad = self.stays_running([n for n in procs if n not in ended])()
                self.assertIsNone(bad, "during a live session through %s: %s"
                                  % ({n: r.name for n, (r, _) in routes.items()}, bad))
            time.sleep(0.1)  # sampling period of the observation
        for name, p in procs.items():
            rc = p.wait(10)
            self.assertEqual((rc, p.stdout), (0, "started\nstill-here\n"),
                             "the session to %s through %s was cut (stderr %r); sleep lines: %s"
                             % (name, routes[name][0].name, p.stderr, self.sleep_lines(name)))

        # Afterwards the spark does sleep: no later than the idle timeout after the session ended
        # (+ a reaper tick, + slack for the API and the watches), and only the leader sleeps it.
        for name in procs:
            wait_until(lambda: self.replicas(name) == 0, max(1.0, ended[name] + idle + 5 + FAST_REAPER_S - time.time()),
                       lambda: "%s to sleep within idle timeout + reaper + 5 s of its session's end "
                               "(replicas %d, leader's view %s)" % (name, self.replicas(name), leader.spark(name)))
            sleeps = self.scale_downs(name, status=200)
            self.assertEqual([r.token for r in sleeps], [leader.token], "only the leader sleeps %s" % name)
            self.assertEqual(self.annotation(name, "sleep-reason"), "idle")
            # The Deployment records the activity the sleep was decided on: the session's.
            last = self.annotation(name, "last-activity")
            self.assertTrue(last and parse_rfc3339(last) >= session_started - 1,
                            "%s's last-activity after its sleep: %s" % (name, last))
            # The Event is written after the scale to 0.
            wait_until(lambda: self.kube.events(name, reason="Slept"), 10, "a Slept Event for %s" % name)
            self.assertEqual(len(self.kube.events(name, reason="Slept")), 1)
        self.assertEqual(follower.log_lines("going to sleep"), [], "the follower reaps nothing")

    def test_case4_new_session_through_the_follower_just_before_the_idle_deadline(self):
        """Issue 16 case 4's window: a session opened through the follower in the last seconds
        before the leader's idle deadline, when the recorded last-activity is a whole idle
        timeout old, must not be cut at that deadline (the follower would otherwise write its
        activity only at its next flush, up to 30 s later)."""
        idle = 20.0
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("edge-wren", port, idle_timeout="20s")
        leader, follower = self.start_pair(reaper_interval=FAST_REAPER)
        self.wait_served("edge-wren", port)
        self.ssh_ok(leader, port, "echo woke", "woke\n")
        # The leader counts the session closed once it sees its socket close, a moment after ssh
        # exits; until then the spark has no idle deadline.
        wait_until(lambda: (leader.spark("edge-wren") or {}).get("open_connections") == 0, 10,
                   "the leader to see the session close")
        due = self.sleeps_at(leader, "edge-wren")
        self.assertGreater(due - time.time(), idle - 5, "the wake counts as activity: a full idle timeout ahead")
        # Wait (bounded) until the leader is 3 s from sleeping it, then connect through the follower.
        wait_until(lambda: time.time() >= due - 3.0 or self.replicas("edge-wren") != 1, idle + 5,
                   "the leader's idle deadline to come within 3 s")
        self.assertEqual(self.replicas("edge-wren"), 1, "slept before its idle deadline")
        p = self.ssh_via(follower, port, "echo started; sleep 12; echo still-here")
        p.wait_output("started", 30)
        # The old deadline passes ~3 s into the session; the rest of it is ~18 reaper ticks.
        rc = p.wait(60)
        self.assertEqual((rc, p.stdout), (0, "started\nstill-here\n"),
                         "the session through %s was cut at the leader's deadline (stderr %r); sleep lines %s"
                         % (follower.name, p.stderr, self.sleep_lines("edge-wren")))
        self.assertEqual(self.scale_downs("edge-wren", status=200), [], "no sleep while the session was open")


# ============================================================================================
# Case 2: sparks already running are adopted with a full idle timeout


class RunningSparksAreAdopted(LifecycleTestCase):

    def test_case2_running_at_start_created_running_and_scaled_by_kubectl(self):
        """Issue 16 case 2 with idle-timeout 1h: a Deployment at 1 replica when the gateways
        start, one created with 1 replica while they run, one scaled to 1 (kubectl scale) whose
        last-activity is a day old. None is slept at the next reaper ticks; each shows sleeps_at
        about one idle timeout after it was first seen running (the leader's view, then the
        follower's)."""
        idle = 3600.0
        self.start_cluster()
        p0 = self.port_range()[0]
        self.add_k8s_spark("boot-bear", p0, replicas=1, idle_timeout="1h")
        wait_until(lambda: (self.k8s.kubelet.pod_of("boot-bear") or {}).get("status", {}).get("podIP"), 15,
                   "boot-bear's pod to run before any gateway starts")
        self.add_k8s_spark("kube-bear", p0 + 2, idle_timeout="1h", last_activity=time.time() - 86400)
        boot_started = time.time()
        leader, follower = self.start_pair(reaper_interval=FAST_REAPER)
        seen = {}
        wait_until(lambda: leader.state("boot-bear") == "running", 20, "the leader to show boot-bear running")
        seen["boot-bear"] = (boot_started, time.time())

        created = time.time()
        self.add_k8s_spark("late-bear", p0 + 1, replicas=1, idle_timeout="1h")
        wait_until(lambda: leader.state("late-bear") == "running", 20, "the leader to show late-bear running")
        seen["late-bear"] = (created, time.time())

        self.wait_served("kube-bear", p0 + 2)
        wait_until(lambda: leader.state("kube-bear") == "sleeping", 10, "kube-bear asleep")
        scaled = time.time()
        self.kube.scale("kube-bear", 1)  # `kubectl scale --replicas=1`, last-activity a day old
        wait_until(lambda: leader.state("kube-bear") == "running", 20, "the leader to show kube-bear running")
        seen["kube-bear"] = (scaled, time.time())

        # The bug slept such sparks at the next reaper tick (500 ms): 10 s is 20 ticks, and
        # several Lease retry periods, so a leader that would sleep them has done so by then.
        self.hold(10.0, self.stays_running(list(seen)), "20 reaper ticks")
        for name, (first, shown) in seen.items():
            self.assert_sleeps_at_between(leader, name, first + idle - 2, shown + idle + 2,
                                          "a full idle timeout (1h) after it was first seen running")
            self.assertEqual(self.scale_ups(name), [], "nobody scaled %s up: it was running" % name)
        self.assertEqual([r.name for r in (leader, follower) if r.log_lines("going to sleep")], [])
        # The follower's admin API and status page tell the same story.
        for name, (first, shown) in seen.items():
            wait_until(lambda: follower.state(name) == "running", 5,
                       lambda: "the follower to show %s running, as it is (it shows %s)"
                               % (name, follower.spark(name)))
            self.assert_sleeps_at_between(follower, name, first + idle - 2, time.time() + idle + 2,
                                          "a full idle timeout (1h) after it was first seen running")


# ============================================================================================
# Case 3: kill -9 soon after a wake, restart with an empty state_dir


class KillAfterWake(LifecycleTestCase):

    def kill_soon_after_a_wake_and_restart(self, wake_via):
        idle = 3600.0
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("phoenix", port, idle_timeout="1h")
        leader, follower = self.start_pair(reaper_interval=FAST_REAPER)
        waker = leader if wake_via == "leader" else follower
        other = follower if waker is leader else leader
        self.wait_served("phoenix", port)
        woke = time.time()
        self.ssh_ok(waker, port, "echo woke", "woke\n")
        # What the Deployment says by the time the command's output arrived (checked at the end).
        last_after_wake = self.annotation("phoenix", "last-activity")

        waker.gateway.kill()  # kill -9, well within one flush interval of the wake
        killed = time.time()
        self.assertLess(killed - woke, FLUSH_S, "killed within one flush interval of the wake")
        self.restart_with_empty_state(waker)
        restarted = time.time()
        leaders = wait_until(lambda: [r for r in (leader, follower) if r.leads()], LEASE_DURATION + 10,
                             "a leader after the restart")
        # The bug slept it 0.5 s after the restarted gateway adopted it: 10 s is 20 reaper ticks
        # of whoever leads.
        self.hold(10.0, self.stays_running(["phoenix"]), "20 reaper ticks (leader: %s)" % leaders)
        for r in sorted((waker, other), key=lambda r: r not in leaders):  # the leader's view first
            wait_until(lambda: r.state("phoenix") == "running", 10,
                       lambda: "%s to show phoenix running (it shows %s)" % (r.name, r.spark("phoenix")))
            self.assert_sleeps_at_between(r, "phoenix", woke + idle - 2, restarted + 20 + idle,
                                          "a full idle timeout after the wake (or the restart), not now")
        self.assertEqual(len(self.scale_ups("phoenix", status=200)), 1, "one scale-up for one wake")
        # The wake wrote last-activity with the scale-up (one conditional PATCH), before the first
        # byte was spliced: that is what a restarted replica with no state reads.
        self.assertIsNotNone(last_after_wake, "no last-activity annotation when the wake's session ran")
        self.assertGreaterEqual(parse_rfc3339(last_after_wake), woke - 1.0, "last-activity older than the wake")
        (up,) = self.scale_ups("phoenix", status=200)
        meta = up.json.get("metadata") or {}
        self.assertIn(PREFIX + "last-activity", meta.get("annotations") or {},
                      "the scale-up carries the last-activity annotation: %s %s" % (up.path, up.json))
        self.assertIn("resourceVersion", meta, "the scale-up is conditional")

    def test_case3_kill_9_the_leader_after_it_woke_the_spark(self):
        """The replica that woke the spark holds the Lease; restarted with the same identity and
        no state, it leads again at once and must not sleep the spark it just woke."""
        self.kill_soon_after_a_wake_and_restart("leader")

    def test_case3_kill_9_the_follower_after_it_woke_the_spark(self):
        """The follower woke it and died; the leader must not sleep it, and the restarted
        follower, with no state, shows a full idle timeout left."""
        self.kill_soon_after_a_wake_and_restart("follower")


# ============================================================================================
# Case 5: a failed wake leaves nothing running


class FailedWakesLeaveNothingRunning(LifecycleTestCase):

    def assert_back_to_zero(self, name, replica, timeout, why):
        wait_until(lambda: self.replicas(name) == 0, timeout,
                   lambda: "%s's Deployment back at 0 replicas after %s (replicas %d; %s shows %s)"
                           % (name, why, self.replicas(name), replica.name, replica.spark(name)))
        wait_until(lambda: self.k8s.kubelet.pod_of(name) is None, 15, "%s's pod to go" % name)
        self.assertNotEqual(replica.state(name), "running")

    def test_case5_crash_loop_is_scaled_back_to_zero(self):
        """CrashLoopBackOff after the scale-up, through the follower, idle-timeout 1h and the
        production reaper interval: the wake itself must undo its scale-up (the idle reaper
        would take an hour); Events say so."""
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("crashy", port, idle_timeout="1h")
        self.k8s.kubelet.set_scenario("crashy", "crash-loop")
        leader, follower = self.start_pair()
        self.wait_served("crashy", port)
        p = self.ssh_via(follower, port, "true")
        self.assertNotEqual(p.wait(90), 0, "ssh to a crash-looping spark cannot succeed")
        line = follower.gateway.wait_log("spark crashy: wake failed")
        self.assertIn("CrashLoopBackOff", line)
        self.assert_back_to_zero("crashy", follower, 30, "a CrashLoopBackOff wake")
        self.assertIn("CrashLoopBackOff", follower.spark("crashy")["last_wake_error"] or "")
        def failure_events():
            return [e for e in self.kube.events("crashy")
                    if e.get("reason") != "Woken" and re.search(r"fail", e.get("message", ""), re.I)]
        wait_until(failure_events, 10, lambda: "an Event saying the wake failed and the spark was stopped "
                   "(Events: %s)" % [(e.get("reason"), e.get("message")) for e in self.kube.events("crashy")])
        downs = self.scale_downs("crashy", status=200)
        self.assertTrue(downs and all(r.token in (leader.token, follower.token) for r in downs),
                        "a gateway scaled it back: %s" % downs)

    def test_case5_failed_spark_left_at_one_replica_is_reaped_by_the_leader(self):
        """The follower scales a crash-looping spark up and dies (kill -9) before it can undo
        that: nobody is left to finish the wake, so the leader must reap the spark, shown
        failed with replicas 1 and no session, like an idle one (idle-timeout 20s, reaper
        500 ms) instead of leaving it at 1 replica for ever."""
        idle = 20.0
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("orphan-elk", port, idle_timeout="20s")
        self.k8s.kubelet.set_scenario("orphan-elk", "crash-loop")
        leader, follower = self.start_pair(reaper_interval=FAST_REAPER)
        self.wait_served("orphan-elk", port)
        p = self.ssh_via(follower, port, "true")
        wait_until(lambda: self.replicas("orphan-elk") == 1, 15, "the scale-up to be applied")
        follower.gateway.kill()  # kill -9 in the middle of the wake
        self.assertNotEqual(p.wait(30), 0)
        # First seen running (or failed) by the leader at the latest now: an idle timeout, a
        # reaper tick and slack for the API later it must be asleep.
        wait_until(lambda: self.replicas("orphan-elk") == 0, idle + 15,
                   lambda: "the leader to reap the failed spark left at 1 replica (replicas %d; the "
                           "leader shows %s)" % (self.replicas("orphan-elk"), leader.spark("orphan-elk")))
        self.assertEqual([r.token for r in self.scale_downs("orphan-elk", status=200)], [leader.token])
        wait_until(lambda: self.k8s.kubelet.pod_of("orphan-elk") is None, 15, "the pod to go")

    def test_case5_scale_up_answered_after_the_request_timeout(self):
        """The scale-up is applied but its answer comes after request_timeout (10 s): either the
        wake carries on (a timeout is transient; the Deployment read afresh shows 1 replica) and
        the ssh succeeds, or the wake fails and the Deployment goes back to 0. Never: a failed
        wake with the spark left at 1 replica."""
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("slow-ack", port, idle_timeout="1h")
        leader, follower = self.start_pair()
        self.wait_served("slow-ack", port)
        rule = self.fault_on_scale_up("slow-ack", "late", seconds=REQUEST_TIMEOUT_S + 3)
        p = self.ssh_via(follower, port, "echo woke")
        rc = p.wait(120)
        self.assertEqual(rule.hits, 1, "the late answer was injected")
        if rc == 0:
            self.assertEqual(p.stdout, "woke\n")
            self.assertEqual(self.replicas("slow-ack"), 1)
            self.assertEqual(follower.state("slow-ack"), "running")
        else:
            self.assert_back_to_zero("slow-ack", follower, 30, "a wake whose scale-up timed out")
        timeouts = [l for l in follower.log_lines("slow-ack") if re.search(TIMED_OUT, l, re.I)]
        self.assertTrue(timeouts, "a log line names the timeout of the scale-up request")

    def test_case5_api_down_while_waiting_for_the_pod(self):
        """The API server goes away after the scale-up, while the pod starts: the wake fails at
        wake_timeout, and the scale back to 0 is retried until the API is back."""
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("drop-owl", port, idle_timeout="1h")
        self.k8s.kubelet.set_scenario("drop-owl", "normal", start_delay=4.0)
        leader, follower = self.start_pair(defaults={"wake_timeout": "10s"})
        self.wait_served("drop-owl", port)
        p = self.ssh_via(follower, port, "true")
        wait_until(lambda: self.replicas("drop-owl") == 1, 15, "the scale-up to be applied")
        self.kube.down()
        down_at = time.monotonic()
        self.assertNotEqual(p.wait(60), 0, "the wake cannot finish with the API down")
        follower.gateway.wait_log("spark drop-owl: wake failed")
        # Stay down a little past the failed wake, so the first attempts to scale back fail too.
        wait_until(lambda: time.monotonic() - down_at >= 15, 20, "15 s of outage")
        self.kube.up()
        self.assert_back_to_zero("drop-owl", follower, 60, "a wake that failed during an API outage")


# ============================================================================================
# Case 6 (rule 5): transient API failures on the scale-up are retried inside wake_timeout


class TransientErrorsAreRetried(LifecycleTestCase):

    def test_case6_one_failure_on_the_scale_up_does_not_fail_the_connection(self):
        """One 500, 503, 429 (with Retry-After: 1), dropped connection, or unanswered request past
        request_timeout on the wake's scale-up: the ssh connection still succeeds (wake_timeout
        has minutes left), one scale-up is applied, and the log line names what went wrong."""
        self.start_cluster()
        p0 = self.port_range()[0]
        cases = [  # (spark, fault kwargs, what the log line must name)
            ("err-five", dict(kind="status", code=500), r"500.*injected failure|injected failure.*500"),
            ("err-unavail", dict(kind="status", code=503), r"503.*injected failure|injected failure.*503"),
            ("err-busy", dict(kind="status", code=429), r"\b429\b"),
            ("err-drop", dict(kind="drop"), r"reset|closed|EOF|end of file"),
            ("err-hang", dict(kind="hold", seconds=REQUEST_TIMEOUT_S + 2), TIMED_OUT),
        ]
        for i, (name, _, _) in enumerate(cases):
            self.add_k8s_spark(name, p0 + i, idle_timeout="1h")
        leader, follower = self.start_pair()
        for i, (name, fault, names_kind) in enumerate(cases):
            with self.subTest(name):
                via = (follower, leader)[i % 2]
                self.wait_served(name, p0 + i)
                since = via.gateway.log_size()
                rule = self.fault_on_scale_up(name, **fault)
                self.ssh_ok(via, p0 + i, "echo up", "up\n")
                self.assertEqual(rule.hits, 1, "the fault was injected")
                self.assertEqual(len(self.scale_ups(name, status=200)), 1, "one scale-up applied")
                self.assertEqual(via.log_lines("spark %s: wake failed" % name, since=since), [])
                lines = [l for l in via.gateway.log()[since:].splitlines() if name in l]
                self.assertTrue([l for l in lines if re.search(names_kind, l, re.I)],
                                "a log line about %s names the failure (%s): %s" % (name, names_kind, lines))
                if fault.get("code") == 429:
                    (busy,) = self.faulted_scale_ups(name)
                    (ok,) = self.scale_ups(name, status=200)
                    self.assertGreaterEqual(ok.time - busy.time, 0.9, "Retry-After: 1 was honoured")


# ============================================================================================
# Case 7: decisions after an outage use fresh state; a Deployment unlabelled mid-wake


class AfterAnOutage(LifecycleTestCase):

    def test_case7_outage_then_forced_sleep_then_wake(self):
        """A 10 s API outage; at once after it (watches still reconnecting) a forced sleep through
        one replica, then ssh through the same replica and through the other: both wake the
        spark (no "already has 1 replica" from the stale cache, no "stopped while waking")."""
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("after-storm", port, idle_timeout="1h")
        leader, follower = self.start_pair()
        self.wait_served("after-storm", port)
        self.ssh_ok(follower, port, "echo first", "first\n")
        self.kube.down()
        time.sleep(10)  # the outage itself (the 10 s), not a wait for a condition
        self.kube.up()
        status, body = follower.call("POST", "/api/v1/sparks/after-storm/sleep?force=true")
        self.assertEqual(status, 200, "the forced sleep right after the outage: %s" % body)
        wait_until(lambda: self.replicas("after-storm") == 0, 15, "the forced sleep to scale to 0")
        for r in (follower, leader):
            self.ssh_ok(r, port, "echo back-via-" + r.name, "back-via-%s\n" % r.name)
            self.assertEqual(self.replicas("after-storm"), 1)
        for r in (follower, leader):
            self.assertEqual(r.log_lines("after-storm", "stopped while waking"), [])
            self.assertEqual(r.log_lines("spark after-storm: wake failed"), [])

    def test_case7_deployment_unlabelled_mid_wake_is_left_as_found(self):
        """The Deployment stops matching the selector while its pod starts: the wake gives up and
        scales it back to 0, as it was found; the log does not claim it does not exist."""
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("shy-mole", port, idle_timeout="1h")
        self.k8s.kubelet.set_scenario("shy-mole", "normal", start_delay=4.0)
        leader, follower = self.start_pair()
        self.wait_served("shy-mole", port)
        p = self.ssh_via(follower, port, "true")
        wait_until(lambda: self.replicas("shy-mole") == 1, 15, "the scale-up to be applied")
        self.kube.patch("deployments", "shy-mole", {"metadata": {"labels": {"app.kubernetes.io/part-of": None}}})
        self.assertNotEqual(p.wait(60), 0, "a spark that stopped being one is not spliced")
        wait_until(lambda: self.replicas("shy-mole") == 0, 30,
                   lambda: "shy-mole back at 0 replicas (replicas %d)" % self.replicas("shy-mole"))
        labels = self.deployment("shy-mole")["metadata"].get("labels") or {}
        self.assertNotIn("app.kubernetes.io/part-of", labels, "the gateway does not relabel it")
        for r in (follower, leader):
            self.assertEqual(r.log_lines("shy-mole", "does not exist"), [], "%s's log" % r.name)


# ============================================================================================
# An operator's requests through either replica mean the same as through the leader


class OperatorThroughTheFollower(LifecycleTestCase):

    def test_keep_awake_through_the_follower_holds_at_once(self):
        """A keep-awake set through the follower is on the Deployment when the API answers (the
        leader honours only what it reads there), not a 30 s flush later: with idle-timeout 3s
        and the fast reaper, the leader would otherwise sleep the idle spark within seconds."""
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("held-newt", port, idle_timeout="3s")
        leader, follower = self.start_pair(reaper_interval=FAST_REAPER)
        self.wait_served("held-newt", port)
        self.ssh_ok(follower, port, "echo woke", "woke\n")
        status, body = follower.call("POST", "/api/v1/sparks/held-newt/keep-awake", body={"for": "1h"})
        self.assertEqual(status, 200, body)
        until = self.annotation("held-newt", "keep-awake-until")
        self.assertTrue(until and parse_rfc3339(until) > time.time() + 3500,
                        "the hold is on the Deployment when the API answers: %r" % until)
        # Idle timeout + several reaper ticks + the watch: the leader would have slept it by now.
        self.hold(3.0 + 10 * FAST_REAPER_S,
                  lambda: self.replicas("held-newt") != 1 and "slept under the hold: %s" % self.sleep_lines("held-newt"),
                  "idle timeout + 10 reaper ticks")
        status, body = follower.call("DELETE", "/api/v1/sparks/held-newt/keep-awake")
        self.assertEqual(status, 200, body)
        self.assertIsNone(self.annotation("held-newt", "keep-awake-until"), "cleared on the Deployment at once")
        wait_until(lambda: self.replicas("held-newt") == 0, 3.0 + 10,
                   "the leader sleeps it once the hold is cleared")

    def test_unforced_sleep_through_one_replica_spares_a_session_through_the_other(self):
        """`spark-gateway sleep` through the follower while a session is open through the leader:
        refused (the follower has no connection of its own to count); forced, it sleeps."""
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("busy-vole", port, idle_timeout="1h")
        leader, follower = self.start_pair()
        self.wait_served("busy-vole", port)
        p = self.ssh_via(leader, port, "echo started; sleep 120")
        p.wait_output("started", 60)
        wait_until(lambda: follower.state("busy-vole") == "running", 15, "the follower to see the spark running")
        status, body = follower.call("POST", "/api/v1/sparks/busy-vole/sleep")
        self.assertNotEqual(status, 200, "an unforced sleep under another replica's session: %s" % body)
        self.assertEqual(self.replicas("busy-vole"), 1)
        self.assertTrue(p.running(), "the session is untouched")
        self.assertTrue(follower.log_lines("busy-vole", "another gateway replica"), "the follower says why")
        status, body = follower.call("POST", "/api/v1/sparks/busy-vole/sleep?force=true")
        self.assertEqual(status, 200, "forced: %s" % body)
        self.assertEqual(self.replicas("busy-vole"), 0)
        self.assertNotEqual(p.wait(30), 0, "the forced sleep ended the session with its pod")


# ============================================================================================
# Rule 7: sessions die with their pod (the double's kubelet must kill the pod's sshd tree)


class PodTermination(LifecycleTestCase):

    def test_session_ends_when_the_pod_is_terminated(self):
        self.start_cluster()
        port = self.port_range()[0]
        self.add_k8s_spark("gone-pod", port, idle_timeout="1h")
        leader, follower = self.start_pair()
        self.wait_served("gone-pod", port)
        p = self.ssh_via(follower, port, "echo started; sleep 120")
        p.wait_output("started", 60)
        self.kube.scale("gone-pod", 0)  # `kubectl scale --replicas=0`: the pod is terminated
        wait_until(lambda: self.k8s.kubelet.pod_of("gone-pod") is None, 15, "the pod to terminate")
        wait_until(lambda: not p.running(), 15,
                   "the ssh session to end with its pod (the double's kubelet must kill the pod's "
                   "sshd and its sessions, as a container runtime does)")
        self.assertNotEqual(p.proc.returncode, 0)


if __name__ == "__main__":
    harness.main()
