#!/usr/bin/env python3
"""A spark's history (issue 21) with a real sshd behind the `process` backend: the test drives a
spark awake (a real ssh), asleep (its idle timeout), awake again, then restarts the gateway, and
checks that GET /api/v1/sparks/NAME/history, the awake seconds of the last day and the CLI's
timeline say what it drove, each moment within the window in which the test saw it happen (plus
a reaper interval), before and after the restart. The time the gateway was down is "unknown".

Every wait is on a condition with a deadline; the moments are bracketed by the test's own clock
readings (the gateway and the test share the system clock)."""
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

IDLE = 2.0  # idle_timeout, seconds
REAPER = 0.2  # reaper interval, seconds
SLACK = REAPER + 0.05  # a reaper interval, and the file's millisecond precision
DEADLINE = 20.0


def seconds(rfc3339):
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class HistoryTest(harness.GatewayTestCase):
    REAPER_INTERVAL = "200ms"

    def history(self, name, hours=None):
        status, body = self.api("GET", "/api/v1/sparks/%s/history%s" % (name, "?hours=%d" % hours if hours else ""))
        self.assertEqual(status, 200, body)
        return body

    def wait_state(self, name, state):
        """Polls the API until the spark is in `state`; returns (before, after): the moment
        lies after the start of the last poll that saw another state and before the end of the
        first that saw this one."""
        seen = {"before": time.time(), "last": None}

        def check():
            started = time.time()
            current = self.spark_status(name)["state"]
            seen["last"] = current
            if current == state:
                return time.time()
            seen["before"] = started
            return None
        after = wait_until(check, DEADLINE, lambda: "spark %s to be %s (last: %s)" % (name, state, seen["last"]))
        return seen["before"], after

    def assert_within(self, value, low, high, what):
        self.assertTrue(low - SLACK <= value <= high + SLACK,
                        "%s at %.3f, outside [%.3f, %.3f] (the window in which the test saw it, +-%gs)"
                        % (what, value, low, high, SLACK))

    def closed(self, history):
        """The intervals that ended, as (state, from, to) in seconds."""
        return [(i["state"], seconds(i["from"]), seconds(i["to"])) for i in history["intervals"] if i["to"]]

    def test_history_follows_what_was_driven_and_survives_a_restart(self):
        spark = self.add_spark("history-hare", idle_timeout="%ds" % IDLE)
        self.enable_admin()
        self.write_config()
        served_low = time.time()
        gw = self.start_gateway()
        served_high = time.time()

        # Awake: a real ssh session wakes it.
        wake1_low = time.time()
        self.assert_ssh_ok(self.ssh(spark, "echo one"), "one\n")
        wake1_high = time.time()
        # Asleep: its idle timeout after that session closed.
        sleep1_low, sleep1_high = self.wait_state(spark.name, "sleeping")
        spark.wait_sshd_gone(DEADLINE)

        # While it sleeps nothing moves: the awake seconds of the day equal the counter the
        # gateway exports (both count any state but sleeping).
        status = self.spark_status(spark.name)
        counter = self.metric("spark_gateway_spark_awake_seconds_total", spark=spark.name)
        self.assertAlmostEqual(status["awake_24h_seconds"], counter, delta=0.05)

        # Awake again, held awake (set first, so no idle sleep can race the restart below).
        status, body = self.api("POST", "/api/v1/sparks/%s/keep-awake" % spark.name, {"for": "1h"})
        self.assertEqual(status, 200, body)
        wake2_low = time.time()
        self.assert_ssh_ok(self.ssh(spark, "echo two"), "two\n")
        wake2_high = time.time()
        # ssh exits as its session ends; the gateway sees the connection close just after.
        wait_until(lambda: self.spark_status(spark.name)["open_connections"] == 0, DEADLINE,
                   "the gateway to see the second session closed")
        closed2 = time.time()
        self.assertEqual(self.spark_status(spark.name)["state"], "running")
        before_restart = self.history(spark.name)

        # The restart: a process spark stops with the gateway.
        stop_low = time.time()
        self.assertEqual(gw.stop(), 0)
        stop_high = time.time()
        restart_low = time.time()
        self.start_gateway()
        restart_high = time.time()
        self.assertFalse(spark.sshd_running())

        after = self.history(spark.name)
        intervals = after["intervals"]
        states = [i["state"] for i in intervals]
        # The week before it was first served is unknown; the shutdown's sleep may be shorter
        # than the file's millisecond (then it is not there); the downtime is unknown; now it
        # sleeps, since the restart.
        if states.count("asleep") == 4:
            self.assertEqual(states, ["unknown", "asleep", "awake", "asleep", "awake", "asleep", "unknown", "asleep"])
            shutdown_asleep = intervals[5]
        else:
            self.assertEqual(states, ["unknown", "asleep", "awake", "asleep", "awake", "unknown", "asleep"])
            shutdown_asleep = None
        first_asleep, awake1, asleep1, awake2 = self.closed(after)[1:5]
        self.assert_within(first_asleep[1], served_low, served_high, "the first sleep (served)")
        self.assert_within(awake1[1], wake1_low, wake1_high, "the first wake")
        self.assert_within(awake1[2], sleep1_low, sleep1_high, "the idle sleep")
        self.assertGreaterEqual(awake1[2] - awake1[1], IDLE - SLACK, "awake at least the idle timeout")
        self.assert_within(awake2[1], wake2_low, wake2_high, "the second wake")
        self.assert_within(awake2[2], stop_low, stop_high, "the shutdown's sleep")
        gap = intervals[-2]
        self.assert_within(seconds(gap["from"]), stop_low, stop_high, "the last moment the state file recorded")
        self.assert_within(seconds(gap["to"]), restart_low, restart_high, "serving again after the restart")
        if shutdown_asleep:
            self.assertEqual(shutdown_asleep["to"], gap["from"])
        self.assertIsNone(intervals[-1]["to"], "the current state is still going")

        # What was recorded before the restart survived it unchanged.
        # (The first, unknown one starts a week before each answer's own now.)
        self.assertEqual(before_restart["intervals"][0]["to"], intervals[0]["to"])
        self.assertEqual(before_restart["intervals"][1:4], intervals[1:4])
        self.assertEqual(before_restart["intervals"][4]["from"], intervals[4]["from"])
        self.assertEqual(before_restart["wakes"], after["wakes"])
        self.assertEqual(before_restart["in_use"], after["in_use"])

        # Two wakes, for the two connections; two spans of use inside the awake intervals.
        self.assertEqual(len(after["wakes"]), 2)
        client = self.spark_status(spark.name)["last_client"]  # ssh's own address, as the gateway saw it
        for wake, (low, high) in zip(after["wakes"], [(wake1_low, wake1_high), (wake2_low, wake2_high)]):
            self.assert_within(seconds(wake["at"]), low, high, "a wake's time")
            self.assertEqual(wake["cause"], "a connection from %s" % client)
        self.assertEqual(len(after["in_use"]), 2)
        for span, (low, high, closed) in zip(after["in_use"], [(wake1_low, wake1_high, sleep1_low),
                                                               (wake2_low, wake2_high, closed2)]):
            self.assert_within(seconds(span["from"]), low, high, "a session's start")
            self.assert_within(seconds(span["to"]), low, closed, "a session's end")

        # Awake seconds of the day, which outlive the restart: the two awake intervals, and
        # within what the test can bracket of them.
        awake = (awake1[2] - awake1[1]) + (awake2[2] - awake2[1])
        status = self.spark_status(spark.name)
        self.assertAlmostEqual(status["awake_24h_seconds"], awake, delta=0.01)
        self.assertAlmostEqual(after["totals"]["24h"]["awake_seconds"], awake, delta=0.01)
        longest = (sleep1_high - wake1_low) + (stop_high - wake2_low)
        shortest = (sleep1_low - wake1_high) + (stop_low - wake2_high)
        self.assertTrue(shortest - 2 * SLACK <= awake <= longest + 2 * SLACK,
                        "awake %.3fs, driven between %.3fs and %.3fs" % (awake, shortest, longest))
        day = after["totals"]["24h"]
        self.assertAlmostEqual(day["slept_share"], day["asleep_seconds"] / (day["asleep_seconds"] + awake), places=6)

        # The fleet's share is this spark's: it is the only one.
        status, fleet = self.api("GET", "/api/v1/history")
        self.assertEqual(status, 200, fleet)
        self.assertEqual([s["name"] for s in fleet["sparks"]], [spark.name])
        self.assertAlmostEqual(fleet["totals"]["24h"]["awake_seconds"], awake, delta=0.01)

        # The CLI: AWAKE 24H in the table; the day as a timeline of 48 cells for one spark.
        r = self.admin_cli("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.splitlines()[0].endswith("AWAKE 24H"), r.stdout)
        r = self.admin_cli("status", spark.name)
        self.assertEqual(r.returncode, 0, r.stderr)
        line = [l for l in r.stdout.splitlines() if l.startswith("  timeline  ")]
        self.assertEqual(len(line), 1, r.stdout)
        cells = line[0][len("  timeline  "):]
        self.assertEqual(len(cells), 48, r.stdout)
        # Everything it drove fits in the last cell or two: used (#) and asleep now (.).
        self.assertIn("#", cells[-2:], r.stdout)
        self.assertTrue(set(cells) <= set("#=.?"), r.stdout)
        self.assertIn("^", r.stdout)
        r = self.admin_cli("status", spark.name, "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        body = json.loads(r.stdout)
        self.assertEqual(body["name"], spark.name)
        self.assertEqual(body["history"]["wakes"], after["wakes"])


if __name__ == "__main__":
    harness.main()
