#!/usr/bin/env python3
"""The admin HTTP API as operators and scripts use it (docs/operations.md), against a real
gateway with real sshd sparks: health and readiness, the spark list, wake (with ?wait), sleep,
keep-awake, bearer-token auth, and bad requests that must change nothing and break nothing.
"""

import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import GatewayTestCase, parse_rfc3339, wait_until  # noqa: E402

TOKEN = "admin-e2e-" + "k" * 24
FIELDS = {"name", "state", "backend", "listen", "open_connections", "last_activity",
          "idle_timeout_seconds", "sleeps_at", "keep_awake_until"}


class AdminApi(GatewayTestCase):

    def start(self, *sparks, **kw):
        self.enable_admin(token=TOKEN)
        self.write_config(**kw)
        return self.start_gateway()

    def test_health_readiness_and_the_spark_list(self):
        a = self.add_spark("brave-dolphin", idle_timeout="2h")
        b = self.add_spark("calm-otter", idle_timeout="never")
        self.start()
        self.assertEqual(self.api("GET", "/healthz"), (200, {"status": "ok"}))
        status, body = self.api("GET", "/readyz")
        self.assertEqual((status, body["status"]), (200, "ready"))
        status, body = self.api("GET", "/api/v1/sparks")
        self.assertEqual(status, 200)
        by_name = {s["name"]: s for s in body["sparks"]}
        self.assertEqual(set(by_name), {"brave-dolphin", "calm-otter"})
        for s in by_name.values():
            self.assertLessEqual(FIELDS, set(s), "missing fields")
            self.assertEqual(s["state"], "sleeping")
            self.assertEqual(s["backend"], "process")
            self.assertEqual(s["open_connections"], 0)
            self.assertIsNone(s["keep_awake_until"])
        self.assertEqual(by_name["brave-dolphin"]["listen"], "%s:%d" % (self.host, a.listen_port))
        self.assertEqual(by_name["brave-dolphin"]["idle_timeout_seconds"], 7200)
        self.assertIsNone(by_name["calm-otter"]["idle_timeout_seconds"], "never is null")
        self.assertLess(abs(parse_rfc3339(by_name["brave-dolphin"]["last_activity"]) - time.time()), 60)
        self.assertEqual(self.spark_status("calm-otter")["name"], b.name)

    def test_wake_wait_sleep_and_the_state_they_leave(self):
        spark = self.add_spark("quick-quail", idle_timeout="1h")
        self.start()
        status, body = self.api("POST", "/api/v1/sparks/quick-quail/wake?wait=true")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["state"], "running")
        self.assertTrue(spark.sshd_running(), "running means its sshd answers")
        self.assertIsNotNone(body["sleeps_at"], "a running idle spark has a sleep time")
        self.assertLess(abs(parse_rfc3339(body["sleeps_at"]) - (parse_rfc3339(body["last_activity"]) + 3600)), 2)
        status, body = self.api("POST", "/api/v1/sparks/quick-quail/sleep")
        self.assertEqual((status, body["state"]), (200, "sleeping"), body)
        spark.wait_sshd_gone(10)
        # Without ?wait the call returns at once (202) and the wake goes on.
        status, body = self.api("POST", "/api/v1/sparks/quick-quail/wake")
        self.assertIn(status, (200, 202), body)
        wait_until(lambda: spark.starts() == 2, 15, "the second start")
        spark.wait_sshd_running(15)
        wait_until(lambda: self.spark_status("quick-quail")["state"] == "running", 15,
                   "the spark to be running")
        self.assertEqual(spark.starts(), 2)

    def test_concurrent_api_wakes_and_connections_share_one_start(self):
        import threading
        spark = self.add_spark("crowd-crow")
        self.start()
        results = []

        def api_wake():
            results.append(self.api("POST", "/api/v1/sparks/crowd-crow/wake?wait=true")[0])

        def ssh():
            results.append(self.ssh(spark, "true").returncode)
        threads = [threading.Thread(target=api_wake) for _ in range(5)] + [threading.Thread(target=ssh) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(sorted(results), [0] * 5 + [200] * 5)
        self.assertEqual(spark.starts(), 1, "API wakes and connection wakes are one wake")

    def test_sleep_is_refused_while_a_session_is_open_unless_forced(self):
        spark = self.add_spark("busy-bee")
        self.start()
        p = self.ssh_background(spark, "echo in; sleep 30")
        p.wait_output("in", 30)
        status, body = self.api("POST", "/api/v1/sparks/busy-bee/sleep")
        self.assertEqual(status, 409, body)
        self.assertEqual(body["spark"], "busy-bee")
        self.assertIn("open", body["error"])
        self.assertTrue(spark.sshd_running())
        status, body = self.api("POST", "/api/v1/sparks/busy-bee/sleep?force=true")
        self.assertEqual(status, 200, body)
        self.assertNotEqual(p.wait(30), 0, "a forced sleep ends the session")

    def test_a_failing_wake_with_wait_returns_the_error(self):
        self.add_spark("broken-bat", wake_timeout="3s", command=["/bin/false"])
        self.start()
        status, body = self.api("POST", "/api/v1/sparks/broken-bat/wake?wait=true")
        self.assertEqual(status, 503, body)
        self.assertEqual(body["spark"], "broken-bat")
        self.assertTrue(body["error"])

    def test_keep_awake_holds_past_the_idle_timeout_until_cleared(self):
        spark = self.add_spark("night-owl", idle_timeout="2s")
        self.start()
        status, body = self.api("POST", "/api/v1/sparks/night-owl/keep-awake", {"for": "4h"})
        self.assertEqual(status, 200, body)
        self.assertLess(abs(parse_rfc3339(body["keep_awake_until"]) - (time.time() + 4 * 3600)), 60)
        self.assertIsNone(body["sleeps_at"], "no sleep while the hold lasts")
        self.assert_ssh_ok(self.ssh(spark, "true"))
        # Several reaper passes past the idle timeout: still awake.
        wait_until(lambda: self.spark_status("night-owl")["open_connections"] == 0, 10,
                   "the session to close")
        deadline = time.monotonic() + 5  # idle 2s + reaper 1s, twice over
        while time.monotonic() < deadline:
            self.assertTrue(spark.sshd_running(), "slept despite keep-awake")
            time.sleep(0.2)  # observation interval, not a wait for a condition
        status, body = self.api("DELETE", "/api/v1/sparks/night-owl/keep-awake")
        self.assertEqual(status, 200, body)
        self.assertIsNone(body["keep_awake_until"])
        spark.wait_sshd_gone(15, "the spark to sleep once the hold is cleared")

    def test_mutations_need_the_token_and_change_nothing_without_it(self):
        spark = self.add_spark("safe-seal")
        gw = self.start()
        for token in ("", "wrong-" + TOKEN, TOKEN[:-1], TOKEN + "x"):
            for method, path, body in (("POST", "/wake", None), ("POST", "/sleep", None),
                                       ("POST", "/keep-awake", {"for": "1h"}), ("DELETE", "/keep-awake", None)):
                status, answer = self.api(method, "/api/v1/sparks/safe-seal" + path, body, token=token)
                self.assertEqual(status, 401, (token, path, answer))
                self.assertEqual(answer["spark"], "safe-seal")
                self.assertIn("Bearer", answer["error"])
        self.assertEqual(spark.starts(), 0)
        self.assertIsNone(self.spark_status("safe-seal")["keep_awake_until"])
        self.assertNotIn(TOKEN, gw.log(), "the token must never be logged")
        # Reads need no token.
        self.assertEqual(self.api("GET", "/api/v1/sparks", token="")[0], 200)

    def test_bad_requests_get_json_errors_and_nothing_breaks(self):
        spark = self.add_spark("sturdy-stag")
        self.start()
        cases = [
            ("GET", "/api/v1/sparks/ghost-gnu", None, None, 404),
            ("POST", "/api/v1/sparks/ghost-gnu/wake", None, None, 404),
            ("GET", "/api/v1/sparks/Not_A_Name", None, None, 400),
            ("POST", "/api/v1/sparks/sturdy-stag/wake?wait=maybe", None, None, 400),
            ("POST", "/api/v1/sparks/sturdy-stag/sleep?force=1", None, None, 400),
            ("POST", "/api/v1/sparks/sturdy-stag/keep-awake", None, b"{not json", 400),
            ("POST", "/api/v1/sparks/sturdy-stag/keep-awake", None, b"[1,2]", 400),
            ("POST", "/api/v1/sparks/sturdy-stag/keep-awake", {"for": "forever"}, None, 400),
            ("POST", "/api/v1/sparks/sturdy-stag/keep-awake", {"for": 5}, None, 400),
            ("POST", "/api/v1/sparks/sturdy-stag/keep-awake", {"for": "1h", "x": 1}, None, 400),
            ("POST", "/api/v1/sparks/sturdy-stag/keep-awake", None, b"{\"for\": \"" + b"9" * 40000 + b"\"}", 413),
            ("GET", "/api/v1/nothing-here", None, None, 404),
        ]
        for method, path, body, raw, expected in cases:
            status, answer = self.api(method, path, body, raw_body=raw)
            self.assertEqual(status, expected, (method, path, answer))
            self.assertIsInstance(answer, dict, "errors are JSON")
            self.assertTrue(answer.get("error"), (path, answer))
        # A request that never finishes its body does not block others.
        with socket.create_connection((self.host, int(self.admin["listen"].rsplit(":", 1)[1]))) as slow:
            slow.sendall(b"POST /api/v1/sparks/sturdy-stag/wake HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            self.assertEqual(self.api("GET", "/healthz")[0], 200)
        # The gateway still serves and nothing was woken or held by the bad calls.
        self.assertEqual(spark.starts(), 0)
        self.assertIsNone(self.spark_status("sturdy-stag")["keep_awake_until"])
        self.assert_ssh_ok(self.ssh(spark, "echo fine"), "fine\n")

    def test_non_loopback_admin_without_a_token_refuses_to_start(self):
        self.add_spark("lonely-lynx")
        cfg = self.config_dict()
        cfg["admin"] = {"listen": "0.0.0.0:%d" % harness.free_port("127.0.0.1")}
        harness.write_atomically(self.config_path, json.dumps(cfg))
        r = subprocess.run([self.bin, "serve", "--config", self.config_path], env=self.child_env(),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("admin.token_file", r.stderr)
        self.assertIn("loopback", r.stderr)


if __name__ == "__main__":
    harness.main()
