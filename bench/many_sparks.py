#!/usr/bin/env python3
"""bench/run's many-sparks round: a gateway discovering N Deployments (default 1,000) from the
project's Kubernetes API double (tests/k8s_double), every one asleep (replicas 0) with its port
already recorded in its annotations, as after a restart of a gateway serving a big fleet.

Measured, against the same gateway started on an empty namespace:
  - start to every spark's listener open (from the exec; read from /proc/net/tcp);
  - RSS per spark: (RSS with N sparks - RSS with none) / N, once the listeners are open and the
    RSS has settled;
  - idle CPU: the gateway's utime+stime over --idle-secs with nothing happening (the reaper,
    the watches, the activity flush), as % of one CPU; and the API requests it made meanwhile.
Writes "metric contender rep value" lines to --results (bench/report.py's input).

Usage: bench/many_sparks.py --gateway PATH --port-base N [--sparks N] [--reps N] [--idle-secs S]
                            --results FILE
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import k8s_double  # noqa: E402  (the API double: tests/k8s_double)

H = "127.0.0.1"  # loopback only
PREFIX = "spark-gateway/"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(text):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), text), file=sys.stderr, flush=True)


def listening_ports(low, high):
    """The TCP ports in [low, high] with a LISTEN socket on 127.0.0.1 (this network namespace)."""
    ports = set()
    want = "0100007F"  # 127.0.0.1 as /proc/net/tcp prints it
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and address == want:
                p = int(port, 16)
                if low <= p <= high:
                    ports.add(p)
    return ports


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("bench/many_sparks.py: no VmRSS for %d" % pid)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def settled_rss(pid, timeout=15):
    """The RSS once it has not moved by more than 64 KiB for 2 s (at most `timeout`)."""
    last, steady, deadline = rss_kib(pid), 0, time.monotonic() + timeout
    while time.monotonic() < deadline and steady < 4:
        time.sleep(0.5)
        now = rss_kib(pid)
        steady = steady + 1 if abs(now - last) <= 64 else 0
        last = now
    return last


class Round:
    def __init__(self, args, work, sparks):
        self.args, self.work, self.sparks = args, work, sparks
        self.low = args.port_base
        self.high = args.port_base + max(args.sparks, 1) - 1

    def run(self):
        api = k8s_double.KubeApiDouble(host=H, port=0, namespace="spark",
                                       workdir=os.path.join(self.work, "api-%d" % self.sparks))
        api.start()
        gateway = None
        try:
            for i in range(self.sparks):
                name = "spark-%04d" % i
                api.create_deployment(name, replicas=0, target_port=2222,
                                      annotations={PREFIX + "port": str(self.low + i),
                                                   PREFIX + "target-port": "2222"})
            token_file = api.write_token_file(os.path.join(self.work, "token"))
            config = {
                "state_dir": os.path.join(self.work, "state-%d" % self.sparks),
                "sparks": [],
                "kubernetes": {"namespace": "spark", "listen_host": H, "api_server": api.url,
                               "token_file": token_file, "port_range": "%d-%d" % (self.low, self.high),
                               "manage_services": False},
            }
            path = os.path.join(self.work, "gateway-%d.json" % self.sparks)
            with open(path, "w") as f:
                json.dump(config, f)
            out = open(os.path.join(self.work, "gateway-%d.log" % self.sparks), "w")
            requests_before = len(api.requests())
            started = time.monotonic()
            gateway = subprocess.Popen([self.args.gateway, "serve", "--config", path, "--log-level", "warn"],
                                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
            deadline = started + 120
            while len(listening_ports(self.low, self.high)) < self.sparks:
                if gateway.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("bench/many_sparks.py: %d of %d listeners after %.0f s (gateway %s); "
                                     "its log: %s" % (len(listening_ports(self.low, self.high)), self.sparks,
                                                      time.monotonic() - started,
                                                      "exited" if gateway.poll() is not None else "running",
                                                      os.path.join(self.work, "gateway-%d.log" % self.sparks)))
                time.sleep(0.01)
            to_listening = time.monotonic() - started
            if self.sparks == 0:
                time.sleep(2)  # nothing to wait for: let the start finish
            rss = settled_rss(gateway.pid)
            writes = [r for r in api.requests()[requests_before:] if r.method not in ("GET",)]
            requests_mid = len(api.requests())
            cpu0, t0 = cpu_seconds(gateway.pid), time.monotonic()
            time.sleep(self.args.idle_secs)
            cpu1, t1 = cpu_seconds(gateway.pid), time.monotonic()
            idle_requests = len(api.requests()) - requests_mid
            return {"to_listening_s": to_listening, "rss_kib": rss, "writes_at_start": len(writes),
                    "idle_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "idle_requests": idle_requests}
        finally:
            if gateway is not None and gateway.poll() is None:
                os.killpg(gateway.pid, signal.SIGTERM)
                try:
                    gateway.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(gateway.pid, signal.SIGKILL)
                    gateway.wait()
            api.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--port-base", type=int, required=True, help="--sparks loopback ports from here on")
    ap.add_argument("--sparks", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--idle-secs", type=float, default=30)
    ap.add_argument("--results", required=True, help="file to append the measurements to")
    args = ap.parse_args()
    busy = listening_ports(args.port_base, args.port_base + args.sparks - 1)
    if busy:
        raise SystemExit("bench/many_sparks.py: ports %s are taken; choose another --port-base" % sorted(busy)[:5])
    work = tempfile.mkdtemp(prefix="spark-bench-many.")
    lines = []
    try:
        for rep in range(1, args.reps + 1):
            log("many sparks: rep %d/%d, a gateway on an empty namespace" % (rep, args.reps))
            empty = Round(args, work, 0).run()
            log("many sparks: rep %d/%d, a gateway discovering %d sleeping Deployments" % (rep, args.reps, args.sparks))
            full = Round(args, work, args.sparks).run()
            log("many sparks: %d listeners in %.2f s; RSS %d KiB (empty: %d); %d writes at start; idle %.2f%% "
                "of a CPU, %d API requests in %.0f s" % (args.sparks, full["to_listening_s"], full["rss_kib"],
                                                         empty["rss_kib"], full["writes_at_start"],
                                                         full["idle_cpu_pct"], full["idle_requests"], args.idle_secs))
            c = "spark-gateway"
            lines += ["many_to_listening_s %s %d %r" % (c, rep, full["to_listening_s"]),
                      "many_rss_kib_per_spark %s %d %r" % (c, rep, (full["rss_kib"] - empty["rss_kib"]) / args.sparks),
                      "many_rss_empty_mib %s %d %r" % (c, rep, empty["rss_kib"] / 1024),
                      "many_writes_at_start %s %d %d" % (c, rep, full["writes_at_start"]),
                      "many_idle_cpu_pct %s %d %r" % (c, rep, full["idle_cpu_pct"]),
                      "many_idle_cpu_pct_empty %s %d %r" % (c, rep, empty["idle_cpu_pct"]),
                      "many_idle_requests %s %d %d" % (c, rep, full["idle_requests"])]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(args.results, "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
