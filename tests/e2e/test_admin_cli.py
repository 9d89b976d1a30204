#!/usr/bin/env python3
"""The operator commands in the same binary (`spark-gateway status|wake|sleep|keep-awake`),
run as an operator would against a real gateway: readable tables, JSON output, exit codes
(0 ok, 1 the operation failed, 2 usage), and clear messages when something is wrong.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import GatewayTestCase  # noqa: E402

TOKEN = "cli-e2e-" + "t" * 24


class AdminCli(GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.token_file = os.path.join(self.tmpdir, "cli-token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")

    def start(self):
        self.enable_admin(token=TOKEN)
        self.write_config()
        return self.start_gateway()

    def cli(self, *args, token=True):
        extra = ("--token-file", self.token_file) if token else ()
        return self.admin_cli(*(list(args) + list(extra)))

    def table(self, r):
        lines = r.stdout.splitlines()
        header = lines[0].split()
        rows = {}
        for line in lines[1:]:
            cells = line.split()
            rows[cells[0]] = cells
        return header, rows

    def test_status_table_and_json(self):
        self.add_spark("brave-dolphin")
        self.add_spark("calm-otter", idle_timeout="never")
        self.start()
        r = self.cli("status", token=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        header, rows = self.table(r)
        self.assertEqual(header[:2], ["NAME", "STATE"])
        self.assertIn("CONNECTIONS", r.stdout.splitlines()[0])
        self.assertEqual(set(rows), {"brave-dolphin", "calm-otter"})
        self.assertEqual(rows["brave-dolphin"][1], "sleeping")
        r = self.cli("status", "calm-otter", "-o", "json", token=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        body = json.loads(r.stdout)
        self.assertEqual((body["name"], body["state"], body["idle_timeout_seconds"]), ("calm-otter", "sleeping", None))
        r = self.cli("status", "-o", "json", token=False)
        self.assertEqual({s["name"] for s in json.loads(r.stdout)["sparks"]}, {"brave-dolphin", "calm-otter"})

    def test_wake_keep_awake_and_sleep_as_an_operator_would(self):
        spark = self.add_spark("demo-dog")
        self.start()
        r = self.cli("wake", "demo-dog", "--wait")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "demo-dog: running"), r.stderr)
        self.assertTrue(spark.sshd_running())
        r = self.cli("keep-awake", "demo-dog", "4h")
        self.assertEqual(r.returncode, 0, r.stderr)
        _, rows = self.table(self.cli("status", token=False))
        self.assertIn("left", " ".join(rows["demo-dog"]), "the hold shows in the table")
        r = self.cli("keep-awake", "demo-dog", "--clear")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.cli("sleep", "demo-dog")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "demo-dog: sleeping"), r.stderr)
        spark.wait_sshd_gone(10)

    def test_failures_have_exit_1_and_say_why(self):
        spark = self.add_spark("busy-bee")
        self.add_spark("broken-bat", wake_timeout="3s", command=["/bin/false"])
        self.start()
        r = self.cli("status", "ghost-gnu", token=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("ghost-gnu", r.stderr)
        self.assertIn("no such spark", r.stderr)
        r = self.cli("wake", "busy-bee", token=False)
        self.assertEqual(r.returncode, 1, "no token")
        self.assertIn("401", r.stderr + r.stdout)
        self.assertEqual(spark.starts(), 0)
        r = self.cli("wake", "broken-bat", "--wait")
        self.assertEqual(r.returncode, 1)
        self.assertIn("broken-bat", r.stderr)
        p = self.ssh_background(spark, "echo in; sleep 30")
        p.wait_output("in", 30)
        r = self.cli("sleep", "busy-bee")
        self.assertEqual(r.returncode, 1)
        self.assertIn("spark has 1 open connection;", r.stderr)  # one, in the singular
        r = self.cli("sleep", "busy-bee", "--force")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_usage_errors_exit_2_and_an_absent_gateway_exits_1(self):
        self.add_spark("lone-lion")
        self.start()
        for args in (["wake"], ["wake", "Bad_Name"], ["keep-awake", "lone-lion"], ["status", "a", "b"],
                     ["status", "-o", "yaml"], ["sleep", "lone-lion", "--bogus"]):
            r = self.cli(*args, token=False)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertTrue(r.stderr.strip(), args)
        r = self.admin_cli("wake", "lone-lion", "--token-file", os.path.join(self.tmpdir, "missing"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing", r.stderr)
        port = harness.free_port(self.host)
        r = self.admin_cli("status", env_extra={"SPARK_GATEWAY_ADMIN": "http://%s:%d" % (self.host, port)})
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:%d" % (self.host, port), r.stderr)


if __name__ == "__main__":
    harness.main()
