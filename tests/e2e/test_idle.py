#!/usr/bin/env python3
"""Idle sleep: the reaper stops a spark idle_timeout after its last connection closed, never
while a connection is open (even a silent one); the next connection wakes it again. Activity
is persisted to <state_dir>/activity.json."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

IDLE = 2.0  # seconds, the idle_timeout used below
SLEEP_DEADLINE = 15.0  # generous bound for "the reaper stopped it"


class IdleTest(harness.GatewayTestCase):
    REAPER_INTERVAL = "200ms"

    def test_idle_spark_sleeps_then_wakes_again(self):
        spark = self.add_spark("brave-dolphin", idle_timeout="2s")
        keeper = self.add_spark("calm-otter", idle_timeout="never")
        self.write_config()
        gw = self.start_gateway()

        self.assert_ssh_ok(self.ssh(keeper, "echo awake"), "awake\n")
        self.assert_ssh_ok(self.ssh(spark, "echo hello"), "hello\n")
        ended = time.monotonic()
        log_offset = gw.log_size()
        self.assertEqual(spark.starts(), 1)
        self.assertTrue(spark.sshd_running())

        spark.wait_sshd_gone(SLEEP_DEADLINE)
        slept_after = time.monotonic() - ended
        self.assertGreater(slept_after, IDLE / 2,
                           "spark stopped %.2fs after its last connection closed, before "
                           "idle_timeout (2s)" % slept_after)
        gw.wait_log(spark.name, "sleep", since=log_offset, timeout=5)

        # idle_timeout "never": the other spark, idle for longer than 2s by now, still runs.
        self.assertTrue(keeper.sshd_running(), "a spark with idle_timeout never was stopped")
        self.assertEqual(keeper.starts(), 1)

        self.assert_ssh_ok(self.ssh(spark, "echo again"), "again\n")
        self.assertEqual(spark.starts(), 2, "the sleeping spark was not started again")
        self.assertTrue(spark.sshd_running())

    def test_open_silent_session_keeps_spark_awake(self):
        spark = self.add_spark("brave-dolphin", idle_timeout="2s")
        self.write_config()
        self.start_gateway()

        session = self.ssh_background(spark, "echo started; sleep 8; echo finished")
        session.wait_output("started", timeout=60)
        self.assertEqual(spark.starts(), 1)

        # The property is "nothing happens during this span", so a fixed wait is the test:
        # more than twice idle_timeout, with the reaper running every 200ms.
        time.sleep(2 * IDLE + 1.0)
        self.assertTrue(session.running(),
                        "the session ended early (rc=%s, stdout=%r, stderr=%r); the check "
                        "below would prove nothing" % (session.proc.returncode, session.stdout,
                                                       session.stderr))
        self.assertTrue(spark.sshd_running(),
                        "spark stopped while a connection to it was open")
        self.assertEqual(spark.starts(), 1)

        self.assertEqual(session.wait(timeout=60), 0, session.stderr)
        self.assertIn("finished", session.stdout)
        spark.wait_sshd_gone(SLEEP_DEADLINE)

    def test_activity_is_persisted(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config(flush_interval="500ms")
        self.start_gateway()
        self.assert_ssh_ok(self.ssh(spark, "echo hello"), "hello\n")

        path = os.path.join(self.state_dir, "activity.json")  # state_dir "state" is relative

        def persisted():
            try:
                with open(path) as f:
                    data = json.load(f)
            except (FileNotFoundError, ValueError):  # not yet, or (non-atomic) mid-write
                return None
            return data if spark.name in json.dumps(data) else None

        data = wait_until(persisted, 10, "%s to exist and name spark %s" % (path, spark.name))
        self.assertIsInstance(data, (dict, list))

    def test_exec_backend_stops_when_idle(self):
        spark = self.add_spark("exec-spark", backend="exec", idle_timeout="2s")
        self.write_config()
        gw = self.start_gateway()
        self.assert_ssh_ok(self.ssh(spark, "echo hello"), "hello\n")
        log_offset = gw.log_size()
        self.assertTrue(spark.sshd_running())
        spark.wait_sshd_gone(SLEEP_DEADLINE)
        gw.wait_log(spark.name, "sleep", since=log_offset, timeout=5)
        self.assert_ssh_ok(self.ssh(spark, "echo again"), "again\n")
        self.assertEqual(spark.starts(), 2)

    def test_stop_escalates_to_sigkill_after_stop_grace(self):
        # A backend whose main process ignores SIGTERM: sshd (same process group) dies on the
        # SIGTERM, the shell only on the SIGKILL that follows stop_grace.
        marker = "stubborn-" + self.tmpdir
        spark = self.add_spark("stubborn", idle_timeout="2s", stop_grace="1s")
        spark.command = ["/bin/sh", "-c",
                         "trap '' TERM; echo start >> %s; %s -D -e -f %s & "
                         "while :; do sleep 1; done"
                         % (spark.starts_file, harness.SSHD, spark.sshd_config), marker]
        self.write_config()
        self.start_gateway()
        self.assert_ssh_ok(self.ssh(spark, "echo hello"), "hello\n")
        self.assertTrue(harness.find_pids(cmdline_contains=marker))
        spark.wait_sshd_gone(SLEEP_DEADLINE)
        wait_until(lambda: not harness.find_pids(cmdline_contains=marker), 10,
                   lambda: "the SIGTERM-ignoring backend to be SIGKILLed after stop_grace "
                           "(still running: %s)"
                           % harness.describe_pids(harness.find_pids(cmdline_contains=marker)))
        self.assert_ssh_ok(self.ssh(spark, "echo again"), "again\n")
        self.assertEqual(spark.starts(), 2)


if __name__ == "__main__":
    harness.main()
