#!/usr/bin/env python3
"""Wake-on-connect: a connection to a sleeping spark starts its backend (once, however many
connections arrive together), waits for sshd, and splices; a backend that cannot start gives
the client a closed connection and a "wake failed" log line."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402


class WakeTest(harness.GatewayTestCase):

    def test_first_connection_wakes_sleeping_spark(self):
        spark = self.add_spark("brave-dolphin")
        other = self.add_spark("calm-otter")
        self.write_config()
        self.start_gateway()

        self.assertFalse(spark.sshd_running(), "sshd runs before any connection")
        self.assertEqual(spark.starts(), 0)

        r = self.ssh(spark, "echo hello")
        self.assert_ssh_ok(r, "hello\n")
        self.assertEqual(spark.starts(), 1)
        self.assertTrue(spark.sshd_running(), "sshd not running after a successful session")

        # Awake now: the next connection reuses the running backend.
        r = self.ssh(spark, "echo again")
        self.assert_ssh_ok(r, "again\n")
        self.assertEqual(spark.starts(), 1, "an awake spark was started again")

        # Waking one spark leaves the others asleep.
        self.assertEqual(other.starts(), 0)
        self.assertFalse(other.sshd_running())

    def test_simultaneous_connections_start_backend_once(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config()
        self.start_gateway()
        self.assertFalse(spark.sshd_running())

        n = 20
        barrier = threading.Barrier(n, timeout=30)
        results = [None] * n

        def client(i):
            try:
                barrier.wait()
                results[i] = self.ssh(spark, "echo client-%d" % i, timeout=120)
            except BaseException as e:  # reported below, not lost in the thread
                results[i] = e

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=150)
        self.assertFalse(any(t.is_alive() for t in threads), "ssh clients still running")

        for i, r in enumerate(results):
            self.assertNotIsInstance(r, BaseException, "client %d: %r" % (i, r))
            self.assert_ssh_ok(r, "client-%d\n" % i, what="client %d" % i)
        self.assertEqual(spark.starts(), 1, "backend started more than once for one wake")

    def _assert_wake_failure_closes_connection(self, command):
        spark = self.add_spark("broken-spark", command=command, wake_timeout="5s")
        self.write_config()
        gw = self.start_gateway()

        t0 = time.monotonic()
        r = self.ssh(spark, "echo hello", timeout=60)
        took = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0, "ssh succeeded through a spark that cannot start")
        self.assertNotIn("hello", r.stdout)
        # ConnectTimeout is 30s: the gateway must close the connection itself, at the latest
        # when wake_timeout (5s) runs out.
        self.assertLess(took, 15.0, "ssh took %.1fs to fail; the gateway should close the "
                                    "connection within wake_timeout (5s)" % took)
        gw.wait_log(spark.name, "wake failed", timeout=10)
        self.assertTrue(gw.running(), "gateway exited after a failed wake")
        return spark, gw

    def test_backend_exiting_at_once_fails_wake(self):
        self._assert_wake_failure_closes_connection(["/bin/false"])

    def test_nonexistent_backend_binary_fails_wake(self):
        self._assert_wake_failure_closes_connection(
            [os.path.join(os.sep, "nonexistent", "spark-backend-%d" % os.getpid())])

    def test_gateway_still_serves_after_a_failed_wake(self):
        # A wake that failed must not poison the spark: fix nothing, just check the gateway
        # fails the same way again (no hang on a stale single-flight attempt).
        spark, gw = self._assert_wake_failure_closes_connection(["/bin/false"])
        t0 = time.monotonic()
        r = self.ssh(spark, "echo hello", timeout=60)
        took = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(took, 15.0, "second failing wake took %.1fs" % took)
        wait_until(lambda: len(gw.log_lines(spark.name, "wake failed")) >= 2, 10,
                   "a second 'wake failed' log line")

    def test_target_never_listening_fails_after_wake_timeout(self):
        # The backend starts fine but nothing ever listens on the target.
        marker = "%s/never-listens" % self.tmpdir
        spark = self.add_spark(
            "deaf-spark", wake_timeout="2s",
            command=["/bin/sh", "-c", "echo start >> %s; while :; do sleep 1; done" % marker,
                     "deaf-%s" % self.tmpdir])
        self.write_config()
        gw = self.start_gateway()

        t0 = time.monotonic()
        ssh = self.ssh_background(spark, "echo hello", timeout=60)
        rc = ssh.wait(timeout=30)
        took = time.monotonic() - t0
        self.assertNotEqual(rc, 0, "ssh succeeded with no sshd behind the spark")
        self.assertGreaterEqual(took, 1.5, "gateway gave up after %.1fs, before wake_timeout "
                                           "(2s)" % took)
        self.assertLess(took, 12.0, "gateway took %.1fs to give up; wake_timeout is 2s" % took)
        gw.wait_log(spark.name, "wake failed", timeout=10)
        self.assertEqual(harness.count_lines(marker), 1)
        # A backend that failed to wake is not left running behind the gateway's back.
        wait_until(lambda: not harness.find_pids(cmdline_contains="deaf-" + self.tmpdir), 15,
                   lambda: "the failed backend to be stopped (still running: %s)"
                   % harness.describe_pids(harness.find_pids(
                       cmdline_contains="deaf-" + self.tmpdir)))

    def test_relative_paths_resolve_against_config_dir(self):
        # The gateway runs with cwd "/" (see harness.Gateway); the config lives in conf/.
        conf_dir = os.path.join(self.tmpdir, "conf")
        os.makedirs(conf_dir)
        spark = self.add_spark("brave-dolphin")
        spark.command = ["/bin/sh", "-c",
                         "echo start >> rel-starts; exec %s -D -e -f %s"
                         % (harness.SSHD, spark.sshd_config)]
        config = self.write_config(path=os.path.join(conf_dir, "config.json"))
        self.start_gateway(config_path=config)

        r = self.ssh(spark, "echo hello")
        self.assert_ssh_ok(r, "hello\n")
        self.assertEqual(harness.count_lines(os.path.join(conf_dir, "rel-starts")), 1,
                         "the process backend did not run in the config file's directory")

    def test_exec_backend_wakes(self):
        spark = self.add_spark("exec-spark", backend="exec")
        self.write_config()
        self.start_gateway()
        self.assertFalse(spark.sshd_running())

        r = self.ssh(spark, "echo hello")
        self.assert_ssh_ok(r, "hello\n")
        self.assertEqual(spark.starts(), 1)
        self.assertTrue(spark.sshd_running())

    def test_exec_backend_failing_start_fails_wake(self):
        spark = self.add_spark("exec-broken", backend="exec", wake_timeout="5s",
                               start=["/bin/sh", "-c", "exit 3"], stop=["/bin/true"])
        self.write_config()
        gw = self.start_gateway()
        t0 = time.monotonic()
        r = self.ssh(spark, "echo hello", timeout=60)
        took = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(took, 15.0, "ssh took %.1fs to fail" % took)
        gw.wait_log(spark.name, "wake failed", timeout=10)


if __name__ == "__main__":
    harness.main()
