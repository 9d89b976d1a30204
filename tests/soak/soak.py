#!/usr/bin/env python3
"""A bounded soak (not in CI; about 10 minutes by default): many real ssh clients push
checksummed data through one gateway whose sparks (four Kubernetes Deployments behind the API
double, one process spark) wake and sleep on short idle timeouts, while the API double injects a
fault every 20 s. Reports connections, bytes verified, wakes, sleeps, errors by kind, and the
gateway's RSS and fd count at start, peak and end. Fails on any checksum mismatch, a client that
hangs, a gateway that dies, or fds not back near their start once the clients are gone.

    scripts/soak [--duration SECONDS] [--clients N]
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
import harness  # noqa: E402
from test_kubernetes import KubernetesTestCase  # noqa: E402

ARGS = None
DEPLOYMENTS = ["soak-ant", "soak-bee", "soak-cat", "soak-dog"]
FAULTS = ["slow_api", "scale_500", "close_watches", "expire_watches", "conflicts"]


def proc_status(pid):
    rss_kb, fds = 0, 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss_kb, fds


class Soak(KubernetesTestCase):

    def test_soak(self):
        self.start_cluster()
        self.enable_admin()
        for name in DEPLOYMENTS:
            self.add_deployment(name, idle_timeout="4s")
        static = self.add_spark("soak-eel", idle_timeout="4s")
        gw = self.start_k8s_gateway(sparks=[static], defaults={"wake_timeout": "20s", "idle_timeout": "4s"})
        ports = {name: self.spark_port(name) for name in DEPLOYMENTS}
        ports["soak-eel"] = static.listen_port
        stats = {"connections": 0, "ok": 0, "bytes_verified": 0, "errors": {}, "fault_windows": []}
        lock = threading.Lock()
        start_rss, start_fds = proc_status(gw.pid)
        peak = {"rss": start_rss, "fds": start_fds}
        deadline = time.monotonic() + ARGS.duration
        stop = threading.Event()

        def count_error(kind):
            with lock:
                stats["errors"][kind] = stats["errors"].get(kind, 0) + 1

        def in_fault_window(t0, t1):
            with lock:
                return any(a - 25 <= t1 and t0 <= b + 25 for a, b in stats["fault_windows"])

        def client(seed):
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                name = rng.choice(list(ports))
                size = rng.choice([1024, 64 * 1024, 512 * 1024, 2 * 1024 * 1024])
                data = rng.randbytes(size)
                t0 = time.monotonic()
                try:
                    r = subprocess.run(self.ssh_args(harness_port(ports[name]), "sha256sum"), input=data,
                                       capture_output=True, env=self.child_env(), timeout=90)
                except subprocess.TimeoutExpired:
                    count_error("hung client (fatal)")
                    continue
                t1 = time.monotonic()
                with lock:
                    stats["connections"] += 1
                if r.returncode == 0 and r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest():
                    with lock:
                        stats["ok"] += 1
                        stats["bytes_verified"] += size
                elif r.returncode == 0:
                    count_error("checksum mismatch (fatal)")
                elif in_fault_window(t0, t1):
                    count_error("failed during an injected fault (expected)")
                else:
                    count_error("failed outside any fault: " + r.stderr.decode(errors="replace").strip()[-80:])
                time.sleep(rng.uniform(0, 6))  # think time: sparks go idle and sleep

        def faults():
            rng = random.Random(7)
            while not stop.wait(20):
                fault = rng.choice(FAULTS)
                t0 = time.monotonic()
                if fault == "slow_api":
                    self.kube.faults.delay = 4.0
                elif fault == "scale_500":
                    # The wake's write: a patch of a Deployment setting replicas to 1.
                    rule = self.kube.faults.fail(
                        method="PATCH", path=r"/deployments/[^/]+$", code=500,
                        when=lambda r: ((r.json or {}).get("spec") or {}).get("replicas") == 1)
                elif fault == "close_watches":
                    self.kube.faults.close_watches()
                elif fault == "expire_watches":
                    self.kube.faults.expire_watches()
                else:
                    self.kube.faults.conflict_on_precondition = True
                stop.wait(5)
                self.kube.faults.delay = 0
                self.kube.faults.conflict_on_precondition = False
                if fault == "scale_500":
                    self.kube.faults.remove(rule)
                with lock:
                    stats["fault_windows"].append((t0, time.monotonic()))
                    stats.setdefault("faults", []).append(fault)

        def sample():
            while not stop.wait(1):
                if gw.running():
                    rss, fds = proc_status(gw.pid)
                    peak["rss"], peak["fds"] = max(peak["rss"], rss), max(peak["fds"], fds)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(ARGS.clients)]
        helpers = [threading.Thread(target=faults, daemon=True), threading.Thread(target=sample, daemon=True)]
        for t in threads + helpers:
            t.start()
        for t in threads:
            t.join(ARGS.duration + 200)
        stop.set()
        self.assertTrue(gw.running(), "the gateway died")
        # Settle: every client gone, sparks asleep again.
        harness.wait_until(lambda: all(s["open_connections"] == 0 for s in self.api("GET", "/api/v1/sparks")[1]["sparks"]),
                           30, "every connection to close")
        time.sleep(8)  # two idle timeouts: the sparks go back to sleep (a soak observes, not a race)
        end_rss, end_fds = proc_status(gw.pid)
        with urllib.request.urlopen(self.admin["url"] + "/metrics", timeout=10) as r:
            metrics = r.read().decode()

        def total(prefix):
            return sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.startswith(prefix))
        report = [
            ("duration", "%ds, %d concurrent clients" % (ARGS.duration, ARGS.clients)),
            ("connections", stats["connections"]),
            ("spliced with checksum verified", stats["ok"]),
            ("bytes verified", "%.1f MiB" % (stats["bytes_verified"] / 2 ** 20)),
            ("wakes (success / failure)", "%d / %d" % (total('spark_gateway_wakes_total{outcome="success"'),
                                                      total('spark_gateway_wakes_total{outcome="failure"'))),
            ("idle sleeps", int(total('spark_gateway_sleeps_total{reason="idle"'))),
            ("scale calls seen by the API", len(self.kube.scale_requests())),
            ("faults injected", ", ".join(stats.get("faults", [])) or "-"),
            ("gateway RSS start / peak / end", "%d / %d / %d KiB" % (start_rss, peak["rss"], end_rss)),
            ("gateway fds start / peak / end", "%d / %d / %d" % (start_fds, peak["fds"], end_fds)),
        ]
        for kind, n in sorted(stats["errors"].items()):
            report.append(("errors: " + kind, n))
        width = max(len(k) for k, _ in report)
        print("\nsoak report\n" + "\n".join("  %-*s  %s" % (width, k, v) for k, v in report), flush=True)
        fatal = {k: v for k, v in stats["errors"].items() if "fatal" in k or "outside" in k}
        self.assertEqual(fatal, {}, "errors that no fault explains")
        self.assertLessEqual(end_fds, start_fds + 8, "fds not back near their start")
        self.assertGreater(stats["ok"], 0)


def harness_port(port):
    from test_kubernetes import Port
    return Port(port)


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    parser.add_argument("--clients", type=int, default=24, help="concurrent ssh clients (default 24)")
    ARGS = parser.parse_args()
    suite = unittest.TestSuite([Soak("test_soak")])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
