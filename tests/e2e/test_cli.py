#!/usr/bin/env python3
"""Command line: check-config exit codes and messages, serve refusing a bad config,
--version."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class CliTest(harness.GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.add_spark("brave-dolphin", idle_timeout="30m", wake_timeout="20s", stop_grace="5s")
        self.add_spark("calm-otter", backend="exec")

    def write_json(self, data, name="config.json"):
        path = os.path.join(self.tmpdir, name)
        harness.write_atomically(path, json.dumps(data, indent=2))
        return path

    def check(self, path):
        return self.run_gateway_cli("check-config", path)

    def assert_invalid(self, path, *expected_in_stderr):
        r = self.check(path)
        self.assertEqual(r.returncode, 2, "check-config exit code; stderr=%r" % r.stderr)
        for text in expected_in_stderr:
            self.assertIn(text, r.stderr)
        return r

    def test_valid_config(self):
        r = self.check(self.write_config())
        self.assertEqual(r.returncode, 0, "stdout=%r stderr=%r" % (r.stdout, r.stderr))

    def test_valid_config_with_every_duration_form(self):
        cfg = self.config_dict(defaults={"idle_timeout": "1d", "wake_timeout": "5m",
                                         "drain_timeout": "500ms"},
                               reaper_interval="30s", flush_interval="2h")
        cfg["sparks"][0]["idle_timeout"] = "never"
        r = self.check(self.write_json(cfg))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_bad_port(self):
        cfg = self.config_dict()
        cfg["sparks"][0]["listen"] = "127.0.0.1:99999"
        self.assert_invalid(self.write_json(cfg), "sparks[0].listen")

    def test_every_problem_is_reported(self):
        cfg = self.config_dict()
        cfg["sparks"][0]["listen"] = "127.0.0.1:0"
        cfg["sparks"][1]["idle_timeout"] = "soon"
        r = self.assert_invalid(self.write_json(cfg), "sparks[0].listen", "sparks[1].idle_timeout")
        for line in r.stderr.splitlines():
            if "sparks[" in line:
                self.assertRegex(line, r"sparks\[\d\]\.[a-z_.]+: \S",
                                 "errors are 'key.path: reason'")

    def test_never_is_only_for_idle_timeout(self):
        cfg = self.config_dict()
        cfg["sparks"][0]["wake_timeout"] = "never"
        self.assert_invalid(self.write_json(cfg), "sparks[0].wake_timeout")

    def test_unknown_key(self):
        cfg = self.config_dict()
        cfg["sparks"][0]["colour"] = "blue"
        self.assert_invalid(self.write_json(cfg), "colour")

    def test_bad_spark_name(self):
        cfg = self.config_dict()
        cfg["sparks"][0]["name"] = "Brave_Dolphin"
        self.assert_invalid(self.write_json(cfg), "sparks[0].name")

    def test_invalid_json(self):
        path = os.path.join(self.tmpdir, "config.json")
        harness.write_atomically(path, '{"state_dir": "state", "sparks": [\n')
        self.assert_invalid(path)

    def test_missing_file(self):
        self.assert_invalid(os.path.join(self.tmpdir, "no-such-config.json"))

    def test_serve_refuses_bad_config(self):
        cfg = self.config_dict()
        cfg["sparks"][0]["listen"] = "127.0.0.1:99999"
        path = self.write_json(cfg)
        r = self.run_gateway_cli("serve", "--config", path, timeout=30)
        self.assertEqual(r.returncode, 2, "serve exit code; stderr=%r" % r.stderr)
        self.assertNotIn("ready:", r.stderr)
        self.assertIn("sparks[0].listen", r.stderr)

    def test_version(self):
        r = self.run_gateway_cli("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue((r.stdout + r.stderr).strip(), "--version printed nothing")

    def test_unknown_subcommand_fails(self):
        r = self.run_gateway_cli("frobnicate")
        self.assertNotEqual(r.returncode, 0)


if __name__ == "__main__":
    harness.main()
