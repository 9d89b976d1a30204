#!/usr/bin/env python3
"""Connection limits: a connection beyond a cap is refused at once (closed, logged, counted),
never queued forever, and the connections already open are not disturbed."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

REFUSED_WITHIN = 10.0  # a refused ssh must end well before its ConnectTimeout (30 s)


class LimitsTest(harness.GatewayTestCase):

    def write_config_with(self, spark_limits=None, global_limits=None):
        self.write_config(spark_limits=spark_limits, limits=global_limits)

    def assert_refused(self, spark, gw, since):
        started = time.monotonic()
        result = self.ssh(spark, "echo should-not-run", timeout=REFUSED_WITHIN + 20)
        took = time.monotonic() - started
        self.assertNotEqual(result.returncode, 0, "ssh beyond the limit succeeded: %r" % result.stdout)
        self.assertNotIn("should-not-run", result.stdout)
        self.assertLess(took, REFUSED_WITHIN, "a refused connection took %.1fs to close" % took)
        gw.wait_log(spark.name, "refusing connection", since=since, timeout=5)

    def test_per_spark_max_connections(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config_with(spark_limits={"brave-dolphin": {"max_connections": 2}})
        gw = self.start_gateway()
        sessions = [self.ssh_background(spark, "echo started; sleep 60") for _ in range(2)]
        for s in sessions:
            s.wait_output("started", timeout=60)

        self.assert_refused(spark, gw, since=0)
        for s in sessions:
            self.assertTrue(s.running(), "an open session was disturbed by the refused one")

        # Once one session ends, there is room again.
        offset = gw.log_size()
        sessions[0].kill()
        gw.wait_log(spark.name, "closed after", since=offset, timeout=15)
        self.assert_ssh_ok(self.ssh(spark, "echo room"), "room\n")
        self.assertTrue(sessions[1].running())

    def test_per_spark_max_waiting_during_a_slow_wake(self):
        # The spark takes ~3 s to start its sshd: connections meanwhile are waiting.
        spark = self.add_spark("slow-otter")
        spark.command = ["/bin/sh", "-c", "echo start >> %s; sleep 3; exec %s -D -e -f %s"
                         % (spark.starts_file, harness.SSHD, spark.sshd_config)]
        self.write_config_with(spark_limits={"slow-otter": {"max_waiting": 1}})
        gw = self.start_gateway()
        first = self.ssh_background(spark, "echo first")
        gw.wait_log(spark.name, "waking", timeout=15)

        self.assert_refused(spark, gw, since=0)
        self.assertEqual(first.wait(timeout=60), 0, "the waiting connection failed: %s" % first.stderr)
        self.assertIn("first", first.stdout)
        self.assertEqual(spark.starts(), 1)

    def test_gateway_wide_max_connections(self):
        a = self.add_spark("brave-dolphin")
        b = self.add_spark("calm-otter")
        self.write_config_with(global_limits={"max_connections": 1})
        gw = self.start_gateway()
        session = self.ssh_background(a, "echo started; sleep 60")
        session.wait_output("started", timeout=60)

        self.assert_refused(b, gw, since=0)
        self.assertEqual(b.starts(), 0, "a refused connection woke its spark")
        self.assertTrue(session.running())

    def test_limits_are_validated(self):
        self.add_spark("brave-dolphin")
        self.write_config_with(spark_limits={"brave-dolphin": {"max_connections": 0}},
                               global_limits={"max_waiting": "many"})
        result = self.run_gateway_cli("check-config", self.config_path)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("sparks[0].max_connections", result.stderr)
        self.assertIn("limits.max_waiting", result.stderr)


if __name__ == "__main__":
    harness.main()
