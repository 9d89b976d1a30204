#!/usr/bin/env python3
"""Metrics (docs/metrics.md): GET /metrics on the admin listener is valid Prometheus text format
(checked by the real `promtool check metrics`), every documented metric is there with its
documented type and labels, and the values say what actually happened: a wake, a session, the
bytes it carried, an idle sleep, a failed wake, a refused connection, a keep-awake hold. Then a
real Prometheus server scrapes the gateway and sees a session open and close."""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

SLEEP_DEADLINE = 15.0  # generous bound for "the reaper put it to sleep" (idle_timeout 2s)

# docs/metrics.md, the contract: name -> (type, label names).
DOCUMENTED = {
    "spark_gateway_connections_total": ("counter", {"spark", "outcome"}),
    "spark_gateway_connections_ended_total": ("counter", {"spark", "outcome"}),
    "spark_gateway_open_connections": ("gauge", {"spark"}),
    "spark_gateway_bytes_total": ("counter", {"spark", "direction"}),
    "spark_gateway_wakes_total": ("counter", {"spark", "outcome"}),
    "spark_gateway_wake_duration_seconds": ("histogram", {"spark"}),
    "spark_gateway_connection_duration_seconds": ("histogram", {"spark"}),
    "spark_gateway_spark_awake_seconds_total": ("counter", {"spark"}),
    "spark_gateway_sleeps_total": ("counter", {"spark", "reason"}),
    "spark_gateway_spark_state": ("gauge", {"spark", "state"}),
    "spark_gateway_last_activity_timestamp_seconds": ("gauge", {"spark"}),
    "spark_gateway_keep_awake_until_timestamp_seconds": ("gauge", {"spark"}),
    "spark_gateway_build_info": ("gauge", {"version"}),
    # limits.max_running (test_running_cap.py drives them); the limit's own gauge is absent
    # without a cap, as here.
    "spark_gateway_running_sparks": ("gauge", set()),
    "spark_gateway_wake_queue_length": ("gauge", set()),
    "spark_gateway_wake_queue_seconds": ("histogram", {"outcome"}),
    "spark_gateway_evictions_total": ("counter", set()),
    "process_resident_memory_bytes": ("gauge", set()),
    "process_virtual_memory_bytes": ("gauge", set()),
    "process_open_fds": ("gauge", set()),
    "process_max_fds": ("gauge", set()),
    "process_cpu_seconds_total": ("counter", set()),
    "process_start_time_seconds": ("gauge", set()),
}
# Documented values of the enumerated labels; every one exists per spark from configuration on.
OUTCOMES = ("spliced", "wake_failed", "upstream_failed", "rejected")
DIRECTIONS = ("client_to_spark", "spark_to_client")
WAKE_OUTCOMES = ("success", "failure")
SLEEP_REASONS = ("idle", "api", "shutdown", "removed", "evicted")
STATES = ("sleeping", "queued", "waking", "running", "stopping", "failed")
WAKE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


# --------------------------------------------------------------------------------------------


class MetricsTestCase(harness.GatewayTestCase):
    REAPER_INTERVAL = "200ms"

    def scrape(self):
        """A scrape without a token (/metrics needs none); harness.metrics parses it."""
        return self.scrape_metrics(token="")

    def wait_metric(self, name, labels, predicate, timeout, what):
        """Scrapes until the sample name{labels} satisfies predicate(value); returns the
        scrape."""
        last = {}

        def check():
            e = self.scrape()
            hits = [v for n, l, v in e.samples if n == name and l == labels]
            last["v"] = hits
            return e if len(hits) == 1 and predicate(hits[0]) else None
        return wait_until(check, timeout, lambda: "%s (%s%s; last scraped: %s)"
                          % (what, name, labels, last.get("v")))

    def spark_state_of(self, e, spark):
        return {l["state"]: v for n, l, v in e.find("spark_gateway_spark_state", spark=spark.name)}

    def assert_state(self, e, spark, state):
        states = self.spark_state_of(e, spark)
        self.assertEqual(sorted(states), sorted(STATES),
                         "spark_state of %s must have one series per documented state" % spark.name)
        self.assertEqual({s: v for s, v in states.items() if v != 0}, {state: 1},
                         "spark_state of %s: expected exactly %s=1, got %s"
                         % (spark.name, state, states))

    def wait_state(self, spark, state, timeout):
        """Scrapes until spark_state says `state` for the spark; returns the scrape."""
        last = {}

        def check():
            e = self.scrape()
            last["s"] = self.spark_state_of(e, spark)
            return e if last["s"].get(state) == 1 else None
        e = wait_until(check, timeout, lambda: "spark_state{state=%s} of %s to be 1 (last: %s)"
                       % (state, spark.name, last.get("s")))
        self.assert_state(e, spark, state)
        return e

    def assert_documented_families(self, e, spark_names):
        """Every documented metric is there with its type and exactly its labels."""
        for name, (typ, labels) in DOCUMENTED.items():
            self.assertEqual(e.types.get(name), typ, "# TYPE of %s" % name)
        for sample_name, labels, value in e.samples:
            family = e.family_of(sample_name)
            self.assertIsNotNone(family, "sample %s has no # TYPE line" % sample_name)
            if family not in DOCUMENTED:
                continue
            expected = set(DOCUMENTED[family][1])
            if sample_name.endswith("_bucket") and DOCUMENTED[family][0] == "histogram":
                expected.add("le")
            self.assertEqual(set(labels), expected, "labels of %s%s" % (sample_name, labels))
            if "spark" in labels:
                self.assertIn(labels["spark"], spark_names, "a series for an unknown spark")
        # Counters of every configured spark exist, for every documented label value.
        for spark in spark_names:
            for outcome in OUTCOMES:
                e.value("spark_gateway_connections_total", spark=spark, outcome=outcome)
            for direction in DIRECTIONS:
                e.value("spark_gateway_bytes_total", spark=spark, direction=direction)
            for outcome in WAKE_OUTCOMES:
                e.value("spark_gateway_wakes_total", spark=spark, outcome=outcome)
            for reason in SLEEP_REASONS:
                e.value("spark_gateway_sleeps_total", spark=spark, reason=reason)
            e.value("spark_gateway_wake_duration_seconds_count", spark=spark)
            e.value("spark_gateway_wake_duration_seconds_sum", spark=spark)
            e.value("spark_gateway_open_connections", spark=spark)
            e.value("spark_gateway_last_activity_timestamp_seconds", spark=spark)
            self.assertEqual(len(e.find("spark_gateway_spark_state", spark=spark)), len(STATES))

    def assert_counts(self, e, spark, metric, label, expected):
        """metric{spark, label=...} equals `expected` (a dict; unnamed values must be 0)."""
        actual = {l[label]: v for n, l, v in e.find(metric, spark=spark.name)}
        want = {k: expected.get(k, 0) for k in set(actual) | set(expected)}
        self.assertEqual(actual, want, "%s of spark %s" % (metric, spark.name))

    def promtool_check(self, text):
        """Runs `promtool check metrics` on the exposition; returns (rc, stdout, stderr)."""
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60, env=self.child_env())
        return p.returncode, p.stdout, p.stderr


class MetricsScrapeTest(MetricsTestCase):

    def test_metrics_after_wake_session_and_idle_sleep(self):
        spark = self.add_spark("brave-dolphin", idle_timeout="2s")
        other = self.add_spark("calm-otter")  # never touched: all zeros, asleep
        self.enable_admin()
        self.write_config()
        started_at = time.time()
        gw = self.start_gateway()

        # Before anything happened: every counter exists at 0, both sparks asleep.
        e = self.scrape()
        self.assert_documented_families(e, {spark.name, other.name})
        for s in (spark, other):
            self.assert_counts(e, s, "spark_gateway_connections_total", "outcome", {})
            self.assert_counts(e, s, "spark_gateway_wakes_total", "outcome", {})
            self.assert_state(e, s, "sleeping")
        self.assertEqual(e.value("spark_gateway_wake_duration_seconds_count", spark=spark.name), 0)
        self.assertEqual(e.value("spark_gateway_connection_duration_seconds_count", spark=spark.name), 0)
        for s in (spark, other):
            self.assertEqual(e.value("spark_gateway_spark_awake_seconds_total", spark=s.name), 0)

        # One session through a wake, carrying a known payload up and an answer down.
        payload = os.urandom(8192).hex().encode() * 12  # 196608 bytes
        t0 = time.time()
        wall0 = time.monotonic()
        result = subprocess.run(self.ssh_args(spark, "wc -c"), input=payload,
                                env=self.child_env(), capture_output=True,
                                timeout=harness.SSH_TIMEOUT)
        wall = time.monotonic() - wall0
        t1 = time.time()
        self.assertEqual(result.returncode, 0, "ssh failed: %r" % result.stderr)
        self.assertEqual(result.stdout.decode().strip(), str(len(payload)))
        self.assertEqual(spark.starts(), 1)

        # The reaper puts it to sleep (idle_timeout 2s), which the metrics must say.
        e = self.wait_metric("spark_gateway_sleeps_total", {"spark": spark.name, "reason": "idle"},
                             lambda v: v >= 1, SLEEP_DEADLINE,
                             "the idle sleep of %s to be counted" % spark.name)
        e = self.wait_state(spark, "sleeping", 5)
        spark.wait_sshd_gone(5)
        scraped_at = time.time()

        # promtool, the real linter: no parse error, no lint problem.
        rc, out, err = self.promtool_check(e.text)
        self.assertEqual(rc, 0, "promtool check metrics failed (rc %d):\nstdout: %s\nstderr: %s"
                         % (rc, out, err))
        if out.strip() or err.strip():
            sys.stderr.write("promtool check metrics said: %s %s\n" % (out, err))

        self.assert_documented_families(e, {spark.name, other.name})

        self.assert_counts(e, spark, "spark_gateway_connections_total", "outcome", {"spliced": 1})
        self.assertEqual(e.value("spark_gateway_open_connections", spark=spark.name), 0)
        up = e.value("spark_gateway_bytes_total", spark=spark.name, direction="client_to_spark")
        down = e.value("spark_gateway_bytes_total", spark=spark.name, direction="spark_to_client")
        self.assertGreaterEqual(up, len(payload), "client_to_spark bytes below what was sent")
        self.assertGreater(down, len(result.stdout), "spark_to_client bytes")
        # An ssh session's overhead is small next to ~200 KB: the counts are the session's.
        self.assertLess(up, len(payload) * 2, "client_to_spark counted far more than was sent")
        self.assertLess(down, len(payload), "spark_to_client counted more than plausible")

        self.assert_counts(e, spark, "spark_gateway_wakes_total", "outcome", {"success": 1})
        self.assert_counts(e, spark, "spark_gateway_sleeps_total", "reason", {"idle": 1})
        self.assert_state(e, spark, "sleeping")

        # The histogram: one observation, the documented buckets, cumulative, sum plausible.
        count = e.value("spark_gateway_wake_duration_seconds_count", spark=spark.name)
        total = e.value("spark_gateway_wake_duration_seconds_sum", spark=spark.name)
        self.assertEqual(count, 1)
        self.assertGreater(total, 0)
        self.assertLess(total, wall, "the wake took longer than the whole ssh session")
        buckets = {l["le"]: v for n, l, v in e.find("spark_gateway_wake_duration_seconds_bucket",
                                                     spark=spark.name)}
        self.assertEqual(sorted(float(le) for le in buckets),
                         sorted(list(WAKE_BUCKETS) + [float("inf")]),
                         "wake_duration buckets (le values): %s" % sorted(buckets))
        ordered = [v for le, v in sorted(buckets.items(), key=lambda kv: float(kv[0]))]
        self.assertEqual(ordered, sorted(ordered), "buckets must be cumulative")
        self.assertEqual(buckets["+Inf"], 1)
        first_hit = min(float(le) for le, v in buckets.items() if v >= 1)
        self.assertGreaterEqual(first_hit, total, "the observation sits in a bucket below it")

        # The session's duration: one observation, no longer than the ssh command took.
        self.assertEqual(e.value("spark_gateway_connection_duration_seconds_count", spark=spark.name), 1)
        lasted = e.value("spark_gateway_connection_duration_seconds_sum", spark=spark.name)
        self.assertGreater(lasted, 0)
        self.assertLess(lasted, wall, "the session outlasted the ssh command")
        # Awake time: from the wake to the idle sleep (at least its 2 s idle timeout, at most the
        # time since the ssh began), and no more while asleep; the untouched spark none.
        awake = e.value("spark_gateway_spark_awake_seconds_total", spark=spark.name)
        self.assertGreaterEqual(awake, 2.0, "awake less than the idle timeout before its sleep")
        self.assertLessEqual(awake, scraped_at - t0 + 1, "awake longer than since the wake began")
        time.sleep(1.0)  # a stretch asleep: the counter must not move during it
        self.assertEqual(self.scrape().value("spark_gateway_spark_awake_seconds_total", spark=spark.name), awake)
        self.assertEqual(e.value("spark_gateway_spark_awake_seconds_total", spark=other.name), 0)

        # The untouched spark: nothing counted, still asleep, no wake observed.
        self.assert_counts(e, other, "spark_gateway_connections_total", "outcome", {})
        self.assert_counts(e, other, "spark_gateway_bytes_total", "direction", {})
        self.assert_counts(e, other, "spark_gateway_sleeps_total", "reason", {})
        self.assert_state(e, other, "sleeping")
        self.assertEqual(e.value("spark_gateway_wake_duration_seconds_count", spark=other.name), 0)

        # Last activity: the session's close, between the ssh start and its end.
        last = e.value("spark_gateway_last_activity_timestamp_seconds", spark=spark.name)
        self.assertGreaterEqual(last, t0 - 1, "last activity before the session started")
        self.assertLessEqual(last, t1 + 1, "last activity after the session ended")
        self.assertLess(scraped_at - last, SLEEP_DEADLINE + 10)
        # No keep-awake hold: no series.
        self.assertEqual(e.find("spark_gateway_keep_awake_until_timestamp_seconds"), [])

        # build_info: always 1, labelled with the version the binary reports.
        info = e.find("spark_gateway_build_info")
        self.assertEqual(len(info), 1, info)
        self.assertEqual(info[0][2], 1)
        version = self.run_gateway_cli("--version").stdout
        self.assertTrue(info[0][1]["version"], "empty version label")
        self.assertIn(info[0][1]["version"], version,
                      "build_info version %r vs --version %r" % (info[0][1]["version"], version))

        # process_*: the gateway process's own numbers.
        rss = e.value("process_resident_memory_bytes")
        vsz = e.value("process_virtual_memory_bytes")
        self.assertGreater(rss, 1 << 20, "resident memory under 1 MiB")
        self.assertGreaterEqual(vsz, rss)
        with open("/proc/%d/status" % gw.pid) as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        vm_rss = int(status["VmRSS"].split()[0]) * 1024
        self.assertLess(abs(rss - vm_rss), max(vm_rss, rss) * 0.5 + (8 << 20),
                        "process_resident_memory_bytes %d vs VmRSS %d" % (rss, vm_rss))
        fds = e.value("process_open_fds")
        max_fds = e.value("process_max_fds")
        real_fds = len(os.listdir("/proc/%d/fd" % gw.pid))
        self.assertGreater(fds, 3)
        self.assertLessEqual(fds, max_fds)
        self.assertLess(abs(fds - real_fds), 16, "process_open_fds %d vs /proc/PID/fd %d"
                        % (fds, real_fds))
        cpu = e.value("process_cpu_seconds_total")
        self.assertGreaterEqual(cpu, 0)
        self.assertLess(cpu, time.time() - started_at + 5)
        start = e.value("process_start_time_seconds")
        self.assertLess(abs(start - started_at), 5,
                        "process_start_time_seconds %.2f, the gateway was started at %.2f"
                        % (start, started_at))

    def test_wake_failed_rejected_api_sleep_and_keep_awake(self):
        # A spark whose command exits at once: its wake fails, the connection is wake_failed.
        broken = self.add_spark("broken-heron", wake_timeout="5s")
        broken.command = ["/bin/sh", "-c", "echo start >> %s; exit 3" % broken.starts_file]
        # A spark that takes one connection: the second is refused (rejected).
        full = self.add_spark("full-otter")
        self.enable_admin()
        cfg = self.config_dict()
        for entry in cfg["sparks"]:
            if entry["name"] == full.name:
                entry["max_connections"] = 1
        self.write_config_dict(cfg)
        gw = self.start_gateway()

        result = self.ssh(broken, "echo should-not-run", timeout=60)
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("should-not-run", result.stdout)
        self.assertGreaterEqual(broken.starts(), 1)
        e = self.wait_metric("spark_gateway_connections_total",
                             {"spark": broken.name, "outcome": "wake_failed"}, lambda v: v == 1,
                             10, "the failed wake's connection to be counted")
        self.assert_counts(e, broken, "spark_gateway_connections_total", "outcome",
                           {"wake_failed": 1})
        self.assert_counts(e, broken, "spark_gateway_wakes_total", "outcome", {"failure": 1})
        self.assertEqual(e.value("spark_gateway_wake_duration_seconds_count", spark=broken.name), 0,
                         "a failed wake must not be observed in the wake duration histogram")
        self.assertEqual(e.value("spark_gateway_open_connections", spark=broken.name), 0)
        self.wait_state(broken, "failed", 10)

        session = self.ssh_background(full, "echo started; sleep 30")
        session.wait_output("started", timeout=60)
        e = self.scrape()
        self.assertEqual(e.value("spark_gateway_open_connections", spark=full.name), 1)
        self.assert_state(e, full, "running")
        offset = gw.log_size()
        refused = self.ssh(full, "echo should-not-run", timeout=30)
        self.assertNotEqual(refused.returncode, 0)
        gw.wait_log(full.name, "refusing connection", since=offset, timeout=5)
        e = self.wait_metric("spark_gateway_connections_total",
                             {"spark": full.name, "outcome": "rejected"}, lambda v: v == 1,
                             5, "the refused connection to be counted as rejected")
        self.assert_counts(e, full, "spark_gateway_connections_total", "outcome",
                           {"spliced": 1, "rejected": 1})
        self.assertEqual(e.value("spark_gateway_open_connections", spark=full.name), 1,
                         "the refused connection was counted as open")
        self.assertTrue(session.running())

        # A keep-awake hold shows as a timestamp, for that spark only, and goes with the hold.
        before = time.time()
        status, body = self.api("POST", "/api/v1/sparks/%s/keep-awake" % full.name, {"for": "1h"})
        self.assertEqual(status, 200, body)
        e = self.scrape()
        holds = e.find("spark_gateway_keep_awake_until_timestamp_seconds")
        self.assertEqual([l for n, l, v in holds], [{"spark": full.name}])
        self.assertLess(abs(holds[0][2] - (before + 3600)), 60,
                        "keep_awake_until %.0f, expected about now + 1h (%.0f)"
                        % (holds[0][2], before + 3600))
        status, body = self.api("DELETE", "/api/v1/sparks/%s/keep-awake" % full.name)
        self.assertEqual(status, 200, body)
        self.assertEqual(self.scrape().find("spark_gateway_keep_awake_until_timestamp_seconds"), [])

        # An operator's sleep once the session is gone: sleeps_total{reason="api"}.
        session.kill()
        self.wait_metric("spark_gateway_open_connections", {"spark": full.name}, lambda v: v == 0,
                         15, "the killed session's connection to close")
        status, body = self.api("POST", "/api/v1/sparks/%s/sleep" % full.name)
        self.assertEqual(status, 200, body)
        e = self.scrape()
        self.assert_counts(e, full, "spark_gateway_sleeps_total", "reason", {"api": 1})
        self.assert_state(e, full, "sleeping")

        rc, out, err = self.promtool_check(e.text)
        self.assertEqual(rc, 0, "promtool check metrics failed (rc %d):\nstdout: %s\nstderr: %s"
                         % (rc, out, err))
        self.assert_documented_families(e, {broken.name, full.name})


class PrometheusScrapeTest(MetricsTestCase):
    """A real Prometheus server, on this test's loopback address, scraping only the gateway."""

    def start_prometheus(self):
        port = harness.free_port(self.host)
        pdir = os.path.join(self.tmpdir, "prometheus")
        os.makedirs(pdir)
        config = os.path.join(pdir, "prometheus.yml")
        admin_listen = self.admin["listen"]
        with open(config, "w") as f:
            f.write("\n".join([
                "global:",
                "  scrape_interval: 1s",
                "  scrape_timeout: 1s",
                "  evaluation_interval: 1s",
                "scrape_configs:",
                "  - job_name: spark-gateway",
                "    static_configs:",
                "      - targets: ['%s']" % admin_listen,
                ""]))
        log_path = os.path.join(pdir, "prometheus.log")
        log = open(log_path, "wb")
        self.addCleanup(log.close)
        proc = self.popen([
            PROMETHEUS,
            "--config.file=" + config,
            "--storage.tsdb.path=" + os.path.join(pdir, "data"),
            "--web.listen-address=%s:%d" % (self.host, port),
            "--web.external-url=http://%s:%d/" % (self.host, port),
            "--web.console.templates=" + os.path.join(pdir, "consoles"),
            "--web.console.libraries=" + os.path.join(pdir, "console_libraries"),
            "--storage.tsdb.retention.time=1h",
            "--log.level=info",
        ], stdout=log, stderr=subprocess.STDOUT, cwd=pdir)

        def kill():
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.addCleanup(kill)
        self.prometheus_url = "http://%s:%d" % (self.host, port)
        self.prometheus_log = log_path
        self.prometheus_proc = proc

        def ready():
            if proc.poll() is not None:
                raise AssertionError("prometheus exited with %s: %s"
                                     % (proc.returncode, self.prometheus_log_text()))
            try:
                with urllib.request.urlopen(self.prometheus_url + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError):
                return False
        wait_until(ready, 20, lambda: "prometheus to be ready; log: " + self.prometheus_log_text())

    def prometheus_log_text(self):
        try:
            with open(self.prometheus_log, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def prometheus_get(self, path, **params):
        url = self.prometheus_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.loads(r.read().decode())
        self.assertEqual(data.get("status"), "success", data)
        return data["data"]

    def query(self, promql):
        """Instant query; returns {frozenset(labels): value} of a vector result."""
        data = self.prometheus_get("/api/v1/query", query=promql)
        self.assertEqual(data["resultType"], "vector", data)
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in data["result"]}

    def wait_query(self, promql, predicate, timeout, what):
        last = {}

        def check():
            last["r"] = self.query(promql)
            return predicate(last["r"])
        wait_until(check, timeout, lambda: "%s (query %s, last result %s)"
                   % (what, promql, last.get("r")))

    def test_prometheus_sees_a_session_open_and_close(self):
        spark = self.add_spark("brave-dolphin")
        self.enable_admin()
        self.write_config()
        self.start_gateway()
        self.start_prometheus()

        # Prometheus scrapes the gateway, and only the gateway, successfully.
        def target_up():
            targets = self.prometheus_get("/api/v1/targets")["activeTargets"]
            return targets if any(t["health"] == "up" for t in targets) else None
        targets = wait_until(target_up, 20, lambda: "the gateway target to be up in Prometheus: %s"
                             % self.prometheus_get("/api/v1/targets"))
        self.assertEqual([t["scrapeUrl"] for t in targets],
                         ["http://%s/metrics" % self.admin["listen"]])
        self.assertEqual(targets[0]["lastError"], "")

        selector = 'spark_gateway_open_connections{spark="%s"}' % spark.name

        def single_value(expected):
            return lambda r: len(r) == 1 and list(r.values())[0] == expected
        self.wait_query(selector, single_value(0), 15, "open connections 0 before any session")

        session = self.ssh_background(spark, "echo started; cat", stdin=subprocess.PIPE)
        session.wait_output("started", timeout=60)
        self.wait_query(selector, single_value(1), 15, "Prometheus to see the open session")
        self.wait_query('spark_gateway_spark_state{state="running"} == 1',
                        lambda r: [dict(k).get("spark") for k in r] == [spark.name], 15,
                        "the documented 'which sparks are awake' query to name the spark")

        session.proc.stdin.close()  # cat ends, the session closes cleanly
        self.assertEqual(session.wait(timeout=30), 0, session.stderr)
        self.wait_query(selector, single_value(0), 15, "Prometheus to see the session closed")
        self.wait_query('spark_gateway_connections_total{spark="%s",outcome="spliced"}'
                        % spark.name, single_value(1), 15,
                        "the spliced connection counted in Prometheus")


if __name__ == "__main__":
    harness.main()
