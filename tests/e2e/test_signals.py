#!/usr/bin/env python3
"""Signals: SIGHUP reloads the config (a bad one is rejected and the old one kept) without
touching open connections; SIGTERM/SIGINT stop accepting, drain open connections, stop the
backends and exit 0."""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

SESSION = "echo started; sleep 3; echo done"


class ReloadTest(harness.GatewayTestCase):

    def test_sighup_adds_spark_without_touching_open_session(self):
        first = self.add_spark("brave-dolphin")
        self.write_config()
        gw = self.start_gateway()

        session = self.ssh_background(first, SESSION)
        session.wait_output("started", timeout=60)

        second = self.add_spark("calm-otter")
        self.write_config()  # both sparks now
        offset = gw.log_size()
        gw.send(signal.SIGHUP)
        gw.wait_log("reloaded", since=offset, timeout=15)
        self.assertFalse(gw.log_lines("reload failed", since=offset))

        self.assertFalse(second.sshd_running())
        self.assert_ssh_ok(self.ssh(second, "echo hello"), "hello\n", what="ssh to new spark")
        self.assertEqual(second.starts(), 1)

        self.assertEqual(session.wait(timeout=60), 0,
                         "open session broken by the reload: %s" % session.stderr)
        self.assertEqual(session.stdout, "started\ndone\n")
        # The unchanged spark was not restarted by the reload.
        self.assertEqual(first.starts(), 1)
        self.assert_ssh_ok(self.ssh(first, "echo still"), "still\n")
        self.assertEqual(first.starts(), 1)

    def test_sighup_changes_spark_listen_address(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config()
        gw = self.start_gateway()
        session = self.ssh_background(spark, SESSION)
        session.wait_output("started", timeout=60)

        old_port = spark.listen_port
        spark.listen_port = harness.free_port(self.host)
        self.write_config()
        offset = gw.log_size()
        gw.send(signal.SIGHUP)
        gw.wait_log("reloaded", since=offset, timeout=15)

        wait_until(lambda: harness.tcp_connect_refused(self.host, old_port), 10,
                   "the old listen port %d to close" % old_port)
        self.assert_ssh_ok(self.ssh(spark, "echo moved"), "moved\n", what="ssh to new port")
        self.assertEqual(session.wait(timeout=60), 0,
                         "open session to the changed spark broken by the reload: %s"
                         % session.stderr)
        self.assertEqual(session.stdout, "started\ndone\n")

    def test_sighup_removes_spark(self):
        keep = self.add_spark("brave-dolphin")
        gone = self.add_spark("calm-otter")
        self.write_config()
        gw = self.start_gateway()
        self.assert_ssh_ok(self.ssh(gone, "echo hello"), "hello\n")

        self.write_config(sparks=[keep])
        offset = gw.log_size()
        gw.send(signal.SIGHUP)
        gw.wait_log("reloaded", since=offset, timeout=15)
        # Its listener is closed, and its backend stopped.
        wait_until(lambda: harness.tcp_connect_refused(self.host, gone.listen_port), 10,
                   "the removed spark's listener to close")
        gone.wait_sshd_gone(15)
        self.assert_ssh_ok(self.ssh(keep, "echo hello"), "hello\n")

    def test_sighup_with_broken_config_keeps_old_one(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config()
        gw = self.start_gateway()
        self.assert_ssh_ok(self.ssh(spark, "echo before"), "before\n")

        harness.write_atomically(self.config_path, '{"sparks": [ this is not json\n')
        offset = gw.log_size()
        gw.send(signal.SIGHUP)
        gw.wait_log("reload failed", since=offset, timeout=15)
        self.assertFalse(gw.log_lines("reloaded", since=offset))
        self.assertTrue(gw.running())

        self.assert_ssh_ok(self.ssh(spark, "echo after"), "after\n")

    def test_sighup_with_invalid_values_keeps_old_one(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config()
        gw = self.start_gateway()

        bad = self.config_dict()
        bad["sparks"][0]["listen"] = "127.0.0.1:99999"
        bad["sparks"].append(dict(bad["sparks"][0], name="Not_A_Label"))
        harness.write_atomically(self.config_path, json.dumps(bad))
        offset = gw.log_size()
        gw.send(signal.SIGHUP)
        gw.wait_log("reload failed", since=offset, timeout=15)
        self.assertTrue(gw.running())
        self.assert_ssh_ok(self.ssh(spark, "echo after"), "after\n")


class ShutdownTest(harness.GatewayTestCase):
    DEFAULTS = dict(harness.GatewayTestCase.DEFAULTS, drain_timeout="10s")
    DRAIN = 10.0

    def _assert_graceful_stop(self, sig):
        spark = self.add_spark("brave-dolphin")
        self.write_config()
        gw = self.start_gateway()

        session = self.ssh_background(spark, SESSION)
        session.wait_output("started", timeout=60)
        t0 = time.monotonic()
        gw.send(sig)

        # It stops accepting at once...
        wait_until(lambda: harness.tcp_connect_refused(self.host, spark.listen_port), 5,
                   "the listener to close after %s" % sig.name)
        # ...but the open session runs to its end.
        self.assertEqual(session.wait(timeout=30), 0,
                         "open session cut by %s: %s" % (sig.name, session.stderr))
        self.assertEqual(session.stdout, "started\ndone\n")

        rc = gw.wait_exit(self.DRAIN + 10)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, "gateway exit code after %s" % sig.name)
        self.assertLess(took, self.DRAIN + 10)
        leftovers = harness.find_pids(cmdline_contains=self.tmpdir + "/")
        self.assertEqual(leftovers, [], "processes left after the gateway exited: %s"
                         % harness.describe_pids(leftovers))
        self.assertFalse(spark.sshd_running())

    def test_sigterm_drains_open_session_and_exits_0(self):
        self._assert_graceful_stop(signal.SIGTERM)

    def test_sigint_drains_open_session_and_exits_0(self):
        self._assert_graceful_stop(signal.SIGINT)

    def test_sigterm_cuts_sessions_longer_than_drain_timeout(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config(drain_timeout="1s")
        gw = self.start_gateway()
        session = self.ssh_background(spark, "echo started; sleep 30; echo done")
        session.wait_output("started", timeout=60)
        t0 = time.monotonic()
        gw.send(signal.SIGTERM)
        rc = gw.wait_exit(15)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0)
        self.assertLess(took, 12.0, "gateway took %.1fs to exit with drain_timeout 1s" % took)
        self.assertNotEqual(session.wait(timeout=30), 0,
                            "session survived the gateway's exit")
        self.assertNotIn("done", session.stdout)
        spark.wait_sshd_gone(10)

    def test_sigterm_when_idle_exits_0_and_stops_backend(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config()
        gw = self.start_gateway()
        self.assert_ssh_ok(self.ssh(spark, "echo hello"), "hello\n")
        self.assertTrue(spark.sshd_running())
        t0 = time.monotonic()
        self.assertEqual(gw.stop(timeout=self.DRAIN + 10), 0)
        self.assertLess(time.monotonic() - t0, 8.0, "exit with no open connection took long")
        self.assertFalse(spark.sshd_running(), "backend left running after the gateway exited")


if __name__ == "__main__":
    harness.main()
