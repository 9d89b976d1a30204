#!/usr/bin/env python3
"""limits.max_running (issue 21): at most so many sparks awake at once. A wake beyond the cap
waits in line (the real ssh client simply waits) and goes once a running spark sleeps; with
limits.evict_idle_after the spark idle longest, and only one without a session, is put to sleep
to make room; a spark with an open session is never evicted. process sparks with real sshd."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_port, wait_until  # noqa: E402

# Enough for ssh to connect, log in and print through a loaded CI machine.
SESSION_UP = 60


class RunningCapTest(harness.GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.enable_admin()

    def start_capped(self, sparks, limits, **kw):
        self.write_config(sparks=sparks, limits=limits, **kw)
        return self.start_gateway()

    def open_session(self, spark):
        """An ssh session kept open (silent: no activity of its own after login)."""
        s = self.ssh_background(spark, "echo started; sleep 120")
        s.wait_output("started", SESSION_UP)
        return s

    def state(self, spark):
        return self.spark_status(spark.name)

    def sleep_when_closed(self, spark):
        """Puts `spark` to sleep through the API once the gateway has seen its sessions close
        (an ssh client that exited or was killed: its close reaches the gateway a moment later)."""
        wait_until(lambda: self.state(spark)["open_connections"] == 0, 20,
                   lambda: "%s's connections to close (view: %r)" % (spark.name, self.state(spark)))
        status, body = self.api("POST", "/api/v1/sparks/%s/sleep" % spark.name)
        self.assertEqual(status, 200, body)

    def wait_queued(self, spark, position=1):
        wait_until(lambda: self.state(spark).get("state") == "queued", 30,
                   lambda: "%s to be queued (view: %r)" % (spark.name, self.state(spark)))
        view = self.state(spark)
        self.assertEqual(view["queue_position"], position, view)
        return view

    def never_more_running_than(self, sparks, limit, stop):
        """Watches (until `stop` is set) that at most `limit` of `sparks` have an sshd running;
        returns the list of violations seen (a background thread fills it)."""
        seen = []

        def watch():
            while not stop.is_set():
                running = [s.name for s in sparks if s.sshd_running()]
                if len(running) > limit:
                    seen.append(running)
                stop.wait(0.05)
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        self.addCleanup(t.join, 5)
        self.addCleanup(stop.set)
        return seen

    def test_a_third_spark_waits_in_line_and_goes_when_one_sleeps(self):
        a = self.add_spark("alpha-ant", idle_timeout="3s")
        b = self.add_spark("brave-bee")
        c = self.add_spark("calm-cat")
        gw = self.start_capped([a, b, c], {"max_running": 2})
        stop = threading.Event()
        too_many = self.never_more_running_than([a, b, c], 2, stop)
        first = self.open_session(a)
        second = self.open_session(b)

        third = self.ssh_background(c, "echo third")
        view = self.wait_queued(c)
        self.assertIsNone(view["last_wake_error"])
        self.assertEqual(c.starts(), 0, "the spark in line was started")
        gw.wait_log("spark calm-cat: waiting in line to wake: 2 sparks are running (the limit is 2); "
                    "calm-cat is 1st in line")
        self.assertEqual(self.metric("spark_gateway_running_sparks"), 2)
        self.assertEqual(self.metric("spark_gateway_running_sparks_limit"), 2)
        self.assertEqual(self.metric("spark_gateway_wake_queue_length"), 1)
        status = self.admin_cli("status")
        self.assertIn("queued", status.stdout, status.stdout + status.stderr)

        # alpha-ant's session ends; 3 s idle later it sleeps and calm-cat's ssh goes through.
        first.kill()
        self.assertEqual(third.wait(timeout=60), 0, third.stderr)
        self.assertEqual(third.stdout, "third\n")
        a.wait_sshd_gone(20)
        self.assertEqual(c.starts(), 1)
        self.assertTrue(second.running(), "the other session was disturbed")
        self.assertEqual(too_many, [], "more than 2 sparks ran at once")
        gw.wait_log("spark calm-cat: its turn to wake after")
        self.assertEqual(self.metric("spark_gateway_wake_queue_seconds_count", outcome="admitted"), 1)
        self.assertEqual(self.metric("spark_gateway_wake_queue_length"), 0)
        self.assertIsNone(self.state(c)["queue_position"])

    def test_line_is_first_come_first_served(self):
        a = self.add_spark("alpha-ant", idle_timeout="2s")
        b = self.add_spark("brave-bee")
        c = self.add_spark("calm-cat")
        gw = self.start_capped([a, b, c], {"max_running": 1})
        session = self.open_session(a)
        second = self.ssh_background(b, "echo second")
        self.wait_queued(b, 1)
        third = self.ssh_background(c, "echo third")
        self.wait_queued(c, 2)
        gw.wait_log("calm-cat is 2nd in line")
        session.kill()
        # brave-bee goes first; calm-cat only once brave-bee (idle after its command) sleeps.
        self.assertEqual(second.wait(timeout=60), 0, second.stderr)
        self.assertEqual(self.state(c)["queue_position"], 1)
        self.assertEqual(c.starts(), 0)
        self.assertEqual(self.state(b)["state"], "running")
        self.sleep_when_closed(b)
        self.assertEqual(third.wait(timeout=60), 0, third.stderr)
        self.assertEqual(third.stdout, "third\n")

    def test_eviction_puts_the_longest_idle_spark_to_sleep(self):
        a = self.add_spark("alpha-ant")
        b = self.add_spark("brave-bee")
        c = self.add_spark("calm-cat")
        gw = self.start_capped([a, b, c], {"max_running": 2, "evict_idle_after": "2s"})
        self.assert_ssh_ok(self.ssh(a, "echo a"), "a\n")  # idle from here: the longest
        self.assert_ssh_ok(self.ssh(b, "echo b"), "b\n")
        wait_until(lambda: self.state(b)["last_activity"] is not None, 10, "brave-bee's activity")

        r = self.ssh(c, "echo c")
        self.assert_ssh_ok(r, "c\n")
        a.wait_sshd_gone(20)
        self.assertTrue(b.sshd_running(), "the less idle spark was put to sleep")
        gw.wait_log("spark alpha-ant: putting it to sleep to make room for calm-cat")
        gw.wait_log("spark alpha-ant: going to sleep (to make room for calm-cat)")
        gw.wait_log("spark calm-cat: waking for a connection from", "after alpha-ant was put to sleep to make room")
        self.assertEqual(self.metric("spark_gateway_evictions_total"), 1)
        self.assertEqual(self.metric("spark_gateway_sleeps_total", spark="alpha-ant", reason="evicted"), 1)
        self.assertEqual(self.state(a)["state"], "sleeping")

    def test_a_spark_with_a_session_is_never_evicted(self):
        a = self.add_spark("alpha-ant")
        b = self.add_spark("brave-bee")
        c = self.add_spark("calm-cat", wake_timeout="4s")
        gw = self.start_capped([a, b, c], {"max_running": 2, "evict_idle_after": "1s"})
        first = self.open_session(a)
        second = self.open_session(b)
        # Silent sessions: no activity after login, idle far past evict_idle_after by the time
        # calm-cat gives up. Sessions keep a spark awake; idleness is not enough to evict it.
        r = self.ssh(c, "echo never", timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn("never", r.stdout)
        gw.wait_log("spark calm-cat: no running spark may be put to sleep to make room")
        gw.wait_log("spark calm-cat: not woken for", "not woken within wake_timeout 4s: 2 sparks are running "
                    "(limits.max_running 2); it was 1st in line")
        self.assertTrue(first.running() and second.running(), "a session was cut")
        self.assertEqual(c.starts(), 0)
        self.assertEqual(self.metric("spark_gateway_evictions_total"), 0)
        view = self.state(c)
        self.assertEqual(view["state"], "sleeping", view)
        self.assertIn("limits.max_running", view["last_wake_error"])
        self.assertEqual(self.metric("spark_gateway_wake_queue_seconds_count", outcome="gave_up"), 1)

    def test_api_wake_answers_202_with_the_place_in_line(self):
        a = self.add_spark("alpha-ant")
        b = self.add_spark("brave-bee")
        self.start_capped([a, b], {"max_running": 1})
        session = self.open_session(a)
        status, body = self.api("POST", "/api/v1/sparks/brave-bee/wake")
        self.assertEqual(status, 202, body)
        self.assertEqual((body["state"], body["queue_position"]), ("queued", 1), body)
        # An operator's wake keeps its place with nobody connected, past the 1 s check.
        wait_until(lambda: self.metric("spark_gateway_wake_queue_length") == 1, 10, "the line to show it")
        self.assertEqual(self.state(b)["queue_position"], 1)
        session.kill()
        self.sleep_when_closed(a)
        b.wait_sshd_running(30)
        wait_until(lambda: self.state(b)["state"] == "running", 30, "brave-bee to run")

    def test_a_wake_nobody_waits_for_gives_up_its_place(self):
        a = self.add_spark("alpha-ant")
        b = self.add_spark("brave-bee")
        gw = self.start_capped([a, b], {"max_running": 1})
        session = self.open_session(a)
        waiting = self.ssh_background(b, "echo b")
        self.wait_queued(b)
        waiting.kill()
        gw.wait_log("spark brave-bee: not woken for", "nobody waits for it any more")
        self.assertEqual(self.state(b)["state"], "sleeping")
        session.kill()
        self.sleep_when_closed(a)
        a.wait_sshd_gone(20)
        self.assertEqual(b.starts(), 0, "a wake nobody waited for was started")

    def test_jump_host_shows_the_place_in_line(self):
        a = self.add_spark("alpha-ant")
        b = self.add_spark("brave-bee")
        self.jump_port = free_port(self.host)
        cfg = self.config_dict(sparks=[a, b], limits={"max_running": 1})
        keys = os.path.join(self.tmpdir, "jump_keys")
        with open(self.user_key + ".pub") as src, open(keys, "w") as dst:
            dst.write(src.read())
        cfg["jump"] = {"listen": "%s:%d" % (self.host, self.jump_port), "authorized_keys": keys}
        self.write_config_dict(cfg)
        self.start_gateway()
        session = self.open_session(a)
        ssh_cfg = os.path.join(self.tmpdir, "ssh_config")
        with open(ssh_cfg, "w") as f:
            f.write("Host *\n    IdentityFile %s\n    IdentitiesOnly yes\n    StrictHostKeyChecking no\n"
                    "    UserKnownHostsFile /dev/null\n    BatchMode yes\n    ConnectTimeout 30\n"
                    "    LogLevel INFO\n" % self.user_key)
        jump = harness.BackgroundProcess(
            ["ssh", "-F", ssh_cfg, "-J", "brave-bee@%s:%d" % (self.host, self.jump_port), "-p", str(b.target_port),
             "%s@brave-bee" % self.user, "echo jumped"], self.child_env())
        self.background.append(jump)
        wait_until(lambda: "brave-bee is 1st in line" in jump.stderr, 30,
                   lambda: "the place in line in the jump host's banner (stderr: %r)" % jump.stderr)
        self.assertIn("spark-gateway: 1 spark is running (the limit is 1); brave-bee is 1st in line", jump.stderr)
        session.kill()
        self.sleep_when_closed(a)
        self.assertEqual(jump.wait(timeout=60), 0, jump.stderr)
        self.assertEqual(jump.stdout, "jumped\n")

    def test_evict_idle_after_needs_max_running(self):
        self.add_spark("alpha-ant")
        self.write_config(limits={"evict_idle_after": "15m"})
        r = self.run_gateway_cli("check-config", self.config_path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("limits.evict_idle_after: needs limits.max_running", r.stderr)
        self.write_config(limits={"max_running": 0})
        r = self.run_gateway_cli("check-config", self.config_path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("limits.max_running", r.stderr)


if __name__ == "__main__":
    harness.main()
