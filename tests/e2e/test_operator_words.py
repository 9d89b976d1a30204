#!/usr/bin/env python3
"""Times and words say what happened (issue 23), for the process backend:

  * a sleep asked for while the spark is waking is refused with a 409 that says so, and logged
    (it answered an undocumented 503 "see the gateway log" with nothing in the log);
  * counts read as English: "1 spark", "1 data thread", "1 open connection".

Real gateway, real sshd; loopback only, every wait has a deadline.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import SSHD, GatewayTestCase, wait_until  # noqa: E402


class OperatorWords(GatewayTestCase):

    def test_a_sleep_racing_a_wake_is_refused_and_logged(self):
        spark = self.add_spark("slow-sloth")
        # A spark that takes 3 s to start: the sleep arrives while it is waking.
        spark.command = ["/bin/sh", "-c", "echo start >> %s; sleep 3; exec %s -D -e -f %s"
                         % (spark.starts_file, SSHD, spark.sshd_config)]
        self.enable_admin()
        self.write_config()
        gw = self.start_gateway()
        status, body = self.api("POST", "/api/v1/sparks/slow-sloth/wake")
        self.assertEqual((status, body["state"]), (202, "waking"))
        status, body = self.api("POST", "/api/v1/sparks/slow-sloth/sleep")
        self.assertEqual(status, 409, body)
        self.assertEqual(body["error"], "the spark is waking (a wake is in progress); try again once it runs")
        gw.wait_log("spark slow-sloth: sleep requested through the admin API while it is waking; not put to sleep")
        # The wake was not disturbed; once it runs, the sleep works.
        wait_until(lambda: self.spark_status("slow-sloth")["state"] == "running", 30,
                   "slow-sloth to run")
        status, body = self.api("POST", "/api/v1/sparks/slow-sloth/sleep")
        self.assertEqual((status, body["state"]), (200, "sleeping"), body)
        self.assertEqual(spark.starts(), 1)

    def test_counts_read_as_english(self):
        spark = self.add_spark("lone-lynx")
        self.write_config(limits={"data_threads": 1}, drain_timeout="1s")
        r = self.run_gateway_cli("check-config", self.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(": ok, 1 spark\n", r.stdout)
        gw = self.start_gateway()
        self.assertIn("ready: serving 1 spark, state in ", gw.wait_ready())
        self.assertIn(", 1 data thread", gw.wait_ready())
        self.assertTrue(gw.log_lines("config %s: 1 spark (added lone-lynx" % self.config_path), gw.log())
        p = self.ssh_background(spark, "echo in; sleep 60")
        p.wait_output("in", 30)
        gw.send(signal.SIGTERM)
        gw.wait_log("draining 1 open connection (up to 1s)")
        gw.wait_log("drain timeout: closing 1 connection still open")
        self.assertEqual(gw.wait_exit(30), 0)
        for word in ("1 sparks", "1 data threads", "1 open connections", "1 connections"):
            self.assertEqual(gw.log_lines(word), [], "%r in the log" % word)


if __name__ == "__main__":
    harness.main()
