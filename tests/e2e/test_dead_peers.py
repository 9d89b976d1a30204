#!/usr/bin/env python3
"""Dead peers (issue 24, docs/dead-peers.md): a peer that vanishes without a FIN or RST - a
laptop whose lid closed, a spark on a node that died - is found by TCP keepalive and
TCP_USER_TIMEOUT; its connection ends ("peer unreachable (keepalive)" in the log, its own
outcome in spark_gateway_connections_ended_total), and the spark sleeps on time. A live peer
that merely says nothing is never cut.

A vanished peer is made honestly: the peer runs in a network namespace this test creates, joined
to the root namespace by a veth pair, and its link goes down. (A SIGSTOPped process would not do:
its kernel still answers every probe.) Addresses are a private /30 from 198.18.0.0/15 (RFC 2544,
benchmarking) on that veth pair only; nothing leaves the machine. Needs root and `ip` (iproute2);
without them the namespace tests are skipped. The healthy-peer test runs on loopback anywhere.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

IDLE = "2s"  # the spark's idle_timeout: it sleeps this long after its last connection ends
SLEEP_DEADLINE = 15.0  # generous bound for "the reaper stopped it"
SLACK = 10.0  # beyond the keepalive bound, for a loaded CI machine

# Short settings: a dead peer is found within idle + interval x count = 4 s.
QUICK = {"idle": "1s", "interval": "1s", "count": 3}
QUICK_BOUND = 4.0
DEFAULT_BOUND = 120.0  # 60s + 10s x 6
DEFAULT_DEADLINE = 180.0  # the promise: "within 3 minutes"


def can_make_namespaces():
    return os.geteuid() == 0 and shutil.which("ip") is not None


def ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=15, check=check)


class PeerNamespace:
    """A network namespace joined to the root namespace by a veth pair with a private /30:
    `outer` (root side) and `inner` (namespace side) are its two addresses. `cut()` takes the
    namespace's link down: from then on nothing it sends arrives and nothing reaches it, as when
    a laptop drops off the network. `close()` deletes the pair and the namespace (bounded,
    idempotent); the test registers it as a cleanup, so it runs even when the test fails."""

    _serial = 0

    def __init__(self):
        PeerNamespace._serial += 1
        tag = "%d%d" % (os.getpid() % 100000, PeerNamespace._serial)
        self.name = "sgdp-%s" % tag
        self.outer_dev = "sgdpo%s" % tag[-9:]  # interface names: at most 15 characters
        self.inner_dev = "sgdpi%s" % tag[-9:]
        self.outer, self.inner = self._pick_subnet()
        self.created = False
        ip("netns", "add", self.name)
        self.created = True
        ip("link", "add", self.outer_dev, "type", "veth", "peer", "name", self.inner_dev)
        ip("link", "set", self.inner_dev, "netns", self.name)
        ip("addr", "add", self.outer + "/30", "dev", self.outer_dev)
        ip("link", "set", self.outer_dev, "up")
        ip("-n", self.name, "addr", "add", self.inner + "/30", "dev", self.inner_dev)
        ip("-n", self.name, "link", "set", self.inner_dev, "up")
        ip("-n", self.name, "link", "set", "lo", "up")

    @staticmethod
    def _pick_subnet():
        """Two addresses of a /30 in 198.18.0.0/15 that no interface here uses yet."""
        in_use = ip("-4", "-o", "addr", "show").stdout
        rng = random.SystemRandom()
        for _ in range(50):
            base = "198.%d.%d" % (rng.randint(18, 19), rng.randint(0, 255))
            last = rng.randrange(0, 256, 4)
            pair = ("%s.%d" % (base, last + 1), "%s.%d" % (base, last + 2))
            if not any(" %s/" % a in in_use for a in pair):
                return pair
        raise AssertionError("no free /30 in 198.18.0.0/15")

    def exec_args(self, args):
        return ["ip", "netns", "exec", self.name] + list(args)

    def cut(self):
        ip("-n", self.name, "link", "set", self.inner_dev, "down")

    def close(self):
        ip("link", "del", self.outer_dev, check=False)  # takes its peer with it
        if self.created:
            ip("netns", "del", self.name, check=False)
            self.created = False


def gateway_sockets(gw, port):
    """`ss` lines of the gateway's established TCP sockets to or from `port`."""
    out = subprocess.run(["ss", "-tnopH", "state", "established",
                          "( sport = :%d or dport = :%d )" % (port, port)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15).stdout
    return [line for line in out.splitlines() if "pid=%d," % gw.pid in line]


def ended_counter(metrics, spark, outcome):
    """spark_gateway_connections_ended_total{spark, outcome} from a scrape (None if absent)."""
    return metrics.get("spark_gateway_connections_ended_total", spark=spark, outcome=outcome)


class DeadPeerTest(harness.GatewayTestCase):
    REAPER_INTERVAL = "200ms"

    def require_namespaces(self):
        if not can_make_namespaces():
            self.skipTest("needs root and the ip command (iproute2) to make a network namespace")

    def make_namespace(self):
        ns = PeerNamespace()
        self.addCleanup(ns.close)
        return ns

    def write_config_with(self, keepalive=None, listen=None, target=None):
        """The harness's config with `defaults.keepalive` and the (one) spark's listen or
        target address moved onto a namespace's veth pair."""
        cfg = self.config_dict(defaults={"keepalive": keepalive} if keepalive else None)
        entry = cfg["sparks"][0]
        if listen:
            entry["listen"] = listen
        if target:
            entry["process"]["target"] = target
        self.write_config_dict(cfg)

    def assert_keepalive_on(self, gw, port):
        """The gateway's socket(s) on `port` run a keepalive timer (ss -o). A socket shows it
        only while nothing it sent awaits an acknowledgement (else the retransmission timer,
        "on"), so this waits for a quiet moment."""
        if shutil.which("ss") is None:  # iproute2 (scripts/packages.txt) brings it; the
            return                      # unit test reads the options back in any case
        seen = []

        def all_probing():
            seen[:] = gateway_sockets(gw, port)
            return seen and all("timer:(keepalive," in line for line in seen)
        wait_until(all_probing, 10, lambda: "keepalive on the gateway's sockets on port %d: %s" % (port, seen))

    # -- a client that vanished -----------------------------------------------------------

    def client_vanishes(self, keepalive, deadline):
        """An ssh session from a namespace through the gateway; the namespace's link goes down
        and the ssh client is killed (it could not say goodbye anyway). Returns the seconds from
        the cut to the gateway's close line."""
        self.require_namespaces()
        ns = self.make_namespace()
        spark = self.add_spark("brave-dolphin", idle_timeout=IDLE)
        self.enable_admin()
        listen = "%s:%d" % (ns.outer, spark.listen_port)
        self.write_config_with(keepalive, listen=listen)
        gw = self.start_gateway()

        args = ns.exec_args(self.ssh_args(spark, "echo started; exec sleep 600", host=ns.outer))
        session = harness.BackgroundProcess(args, self.child_env())
        self.background.append(session)
        session.wait_output("started", timeout=60)
        self.assert_keepalive_on(gw, spark.listen_port)
        self.assert_keepalive_on(gw, spark.target_port)
        self.assertEqual(ended_counter(self.scrape_metrics(), spark.name, "client_unreachable"), 0)

        offset = gw.log_size()
        cut = time.monotonic()
        ns.cut()
        os.kill(session.proc.pid, signal.SIGKILL)
        line = gw.wait_log(spark.name, "peer unreachable (keepalive)", since=offset, timeout=deadline)
        found_after = time.monotonic() - cut
        sys.stderr.write("\n%s: the gateway closed the dead client's connection %.1fs after the cut\n"
                         % (self.id(), found_after))
        self.assertIn("no answer from the client", line)
        self.assertEqual(gateway_sockets(gw, spark.listen_port), [], "the client's socket is still open")

        # The connection is gone, so the idle clock runs and the spark sleeps on time.
        spark.wait_sshd_gone(SLEEP_DEADLINE)
        gw.wait_log(spark.name, "sleep", since=offset, timeout=5)
        metrics = self.scrape_metrics()
        self.assertEqual(ended_counter(metrics, spark.name, "client_unreachable"), 1, metrics.text)
        self.assertEqual(ended_counter(metrics, spark.name, "spark_unreachable"), 0)
        return found_after

    def test_vanished_client_is_closed_within_seconds_with_short_settings(self):
        self.client_vanishes(QUICK, QUICK_BOUND + SLACK)

    def test_vanished_client_is_closed_within_three_minutes_at_the_defaults(self):
        # No keepalive in the config: 60s idle, 10s interval, 6 probes.
        found_after = self.client_vanishes(None, DEFAULT_DEADLINE)
        self.assertLessEqual(found_after, DEFAULT_DEADLINE)

    def test_vanished_jump_host_client_is_closed_within_seconds(self):
        # The same through the jump host (ssh -J): its libssh session finds the client dead.
        self.require_namespaces()
        ns = self.make_namespace()
        spark = self.add_spark("brave-dolphin", idle_timeout=IDLE)
        jump_port = harness.free_port(ns.outer)
        self.write_config_with(QUICK)
        with open(self.config_path) as f:
            cfg = json.load(f)
        cfg["jump"] = {"listen": "%s:%d" % (ns.outer, jump_port), "authorized_keys": self.authorized_keys}
        self.write_config_dict(cfg)
        gw = self.start_gateway()

        # ProxyJump's inner ssh reads its options only from a config file, not from -o.
        ssh_config = os.path.join(self.tmpdir, "ssh_config")
        with open(ssh_config, "w") as f:
            f.write("Host *\n    IdentityFile %s\n    IdentitiesOnly yes\n    StrictHostKeyChecking no\n"
                    "    UserKnownHostsFile /dev/null\n    BatchMode yes\n    ConnectTimeout 30\n"
                    "    LogLevel ERROR\n" % self.user_key)
        # In a process group of its own (setsid execs, so the pid stays ssh's): the ProxyJump
        # child must die with it, or it would hold the output pipes open.
        args = ["setsid"] + ns.exec_args(
            ["ssh", "-F", ssh_config, "-J", "%s@%s:%d" % (spark.name, ns.outer, jump_port),
             "-p", str(spark.target_port), "%s@%s" % (self.user, spark.name), "echo started; exec sleep 600"])
        session = harness.BackgroundProcess(args, self.child_env())
        self.background.append(session)
        session.wait_output("started", timeout=60)
        self.assert_keepalive_on(gw, jump_port)
        self.assert_keepalive_on(gw, spark.target_port)

        offset = gw.log_size()
        cut = time.monotonic()
        ns.cut()
        os.killpg(session.proc.pid, signal.SIGKILL)
        line = gw.wait_log(spark.name, "jump connection from", "peer unreachable (keepalive)", since=offset,
                           timeout=QUICK_BOUND + SLACK)
        sys.stderr.write("\n%s: the jump host closed the dead client's session %.1fs after the cut\n"
                         % (self.id(), time.monotonic() - cut))
        self.assertIn("no answer from the client", line)
        spark.wait_sshd_gone(SLEEP_DEADLINE)

    # -- a spark that vanished --------------------------------------------------------------

    def test_vanished_spark_ends_the_clients_session(self):
        self.require_namespaces()
        ns = self.make_namespace()
        spark = self.add_spark("frail-fox", idle_timeout=IDLE)
        # The spark's sshd runs inside the namespace, on its side of the veth pair.
        spark.host = ns.inner
        spark.target_port = 2222
        spark._write_sshd_config()
        spark.command = ns.exec_args(spark.command)
        self.enable_admin()
        self.write_config_with(QUICK, listen="%s:%d" % (self.host, spark.listen_port),
                               target="%s:%d" % (ns.inner, spark.target_port))
        gw = self.start_gateway()

        session = self.ssh_background(spark, "echo started; exec sleep 600")
        session.wait_output("started", timeout=60)
        self.assert_keepalive_on(gw, spark.target_port)

        offset = gw.log_size()
        cut = time.monotonic()
        ns.cut()
        line = gw.wait_log(spark.name, "peer unreachable (keepalive)", since=offset,
                           timeout=QUICK_BOUND + SLACK)
        self.assertIn("no answer from the spark", line)
        # The user's ssh ends too (so it can reconnect and wake a new pod), within the bound.
        rc = session.wait(timeout=QUICK_BOUND + SLACK)
        ended_after = time.monotonic() - cut
        sys.stderr.write("\n%s: the client's session ended %.1fs after the spark's link went down\n"
                         % (self.id(), ended_after))
        self.assertNotEqual(rc, 0, "ssh reported success for a session whose spark vanished")
        self.assertLessEqual(ended_after, QUICK_BOUND + SLACK)

        metrics = self.scrape_metrics()
        self.assertEqual(ended_counter(metrics, spark.name, "spark_unreachable"), 1, metrics.text)
        self.assertEqual(ended_counter(metrics, spark.name, "client_unreachable"), 0)
        # Nobody is connected: the (unreachable but running) spark is put to sleep on time.
        spark.wait_sshd_gone(SLEEP_DEADLINE)

    # -- a peer that is alive but silent -------------------------------------------------------

    def test_silent_live_session_is_not_cut(self):
        # Runs without namespaces: on loopback every probe is answered, as by a live laptop.
        spark = self.add_spark("calm-otter", idle_timeout=IDLE)
        self.write_config(defaults={"keepalive": QUICK})
        gw = self.start_gateway()
        silence = 6 * QUICK_BOUND
        session = self.ssh_background(spark, "echo started; sleep %d; echo finished" % (silence + 2))
        session.wait_output("started", timeout=60)
        self.assert_keepalive_on(gw, spark.listen_port)
        self.assert_keepalive_on(gw, spark.target_port)

        # The property is "nothing happens during this span", so a fixed span is the test: six
        # times the keepalive bound with no byte either way (neither ssh nor sshd sends
        # keepalives of their own by default), probes going out every second.
        time.sleep(silence)
        self.assertTrue(session.running(), "the silent session ended early (rc=%s, stderr=%r)"
                        % (session.proc.returncode, session.stderr))
        self.assertEqual(gw.log_lines("peer unreachable"), [])

        self.assertEqual(session.wait(timeout=60), 0, session.stderr)
        self.assertIn("finished", session.stdout)
        self.assertEqual(gw.log_lines("peer unreachable"), [])


if __name__ == "__main__":
    harness.main()
