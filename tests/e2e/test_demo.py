#!/usr/bin/env python3
"""scripts/demo as a newcomer uses it (issue 23): run it, copy the commands it prints, and they
work — `ssh -F demo/ssh_config brave-dolphin`, the jump-host form with its progress lines on a
cold start, and plain `ssh brave-dolphin` through the printed Include line. Ctrl-C stops it
cleanly, with no sshd left behind.

Bounded: DEMO_BIN skips setup and build (the binary under test is run), DEMO_DIR puts demo/ in
the test's temp dir, and DEMO_HOST / DEMO_*_PORT move it off the fixed 127.0.0.1:2201/2222/9090
so that it collides neither with other tests nor with a demo someone is running.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import REPO_ROOT, BackgroundProcess, GatewayTestCase, free_port, wait_until  # noqa: E402

DEMO = os.path.join(REPO_ROOT, "scripts", "demo")


class Demo(GatewayTestCase):

    def start_demo(self):
        self.demo_dir = os.path.join(self.tmpdir, "demo")
        self.ports = {k: free_port(self.host) for k in ("SSH", "JUMP", "ADMIN", "SPARK")}
        env = self.child_env()
        env.update({"DEMO_BIN": self.bin, "DEMO_DIR": self.demo_dir, "DEMO_HOST": self.host})
        env.update({"DEMO_%s_PORT" % k: str(v) for k, v in self.ports.items()})
        # From the directory that holds demo/ (as the repo root does for a user's `scripts/demo`),
        # so the printed commands use the short relative path a user types from there.
        demo = BackgroundProcess(["/bin/sh", "-c", 'cd "$0" && exec "$1"', self.tmpdir, DEMO], env, timeout=60)
        self.background.append(demo)
        return demo

    def ready(self):
        try:
            url = "http://%s:%d/readyz" % (self.host, self.ports["ADMIN"])
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def open_connections(self):
        url = "http://%s:%d/api/v1/sparks/brave-dolphin" % (self.host, self.ports["ADMIN"])
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r)["open_connections"]

    def spark_sshd(self):
        """The demo spark's sshd, if it runs."""
        return harness.find_pids(cmdline_contains=os.path.join(self.demo_dir, "brave-dolphin", "sshd_config"))

    def run_printed(self, command, *remote):
        """Runs a printed ssh command line with `remote` as the remote command; BatchMode, so
        an unknown host key or a missing key fails instead of prompting."""
        args = shlex.split(command)
        self.assertEqual(args[0], "ssh")
        args = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30"] + args[1:] + list(remote)
        return subprocess.run(args, env=self.child_env(), cwd=self.tmpdir, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=harness.SSH_TIMEOUT)

    def test_the_printed_commands_work_and_ctrl_c_stops_it(self):
        demo = self.start_demo()
        demo.wait_output("Ctrl-C stops the gateway", 30)
        wait_until(lambda: self.ready() or (not demo.running() and self.fail(
            "the demo exited: %s %s" % (demo.stdout, demo.stderr))), 30, "the demo's gateway to be ready")
        self.assertNotIn("setup:", demo.stdout + demo.stderr, "DEMO_BIN skips setup")
        printed = [line.strip() for line in demo.stdout.splitlines() if line.strip().startswith("ssh ")]
        plain = "ssh -F demo/ssh_config brave-dolphin"
        jump = "ssh -F demo/ssh_config -J brave-dolphin@%s:%d brave-dolphin.jump" % (self.host, self.ports["JUMP"])
        self.assertEqual(printed, [plain, jump], demo.stdout)
        # ~/.ssh/config resolves a relative Include against ~/.ssh: this one is absolute.
        includes = [line.strip() for line in demo.stdout.splitlines() if line.strip().startswith("Include ")]
        self.assertEqual(includes, ["Include %s" % os.path.join(self.demo_dir, "ssh_config")])
        self.assertEqual(self.spark_sshd(), [], "asleep until someone connects")

        # The jump-host form, on a cold start: the wake's progress on stderr, then the command.
        r = self.run_printed(jump, "echo", "jumped")
        self.assert_ssh_ok(r, "jumped\n", what=jump)
        self.assertRegex(r.stderr, r"spark-gateway: waking brave-dolphin \(asleep for [^)]*\)\.\.\.\n")
        self.assertIn("spark-gateway: brave-dolphin ready in ", r.stderr)
        self.assertIn("spark brave-dolphin: ready in ", demo.stderr, "the spark woke")
        self.assertTrue(self.spark_sshd(), "the spark's sshd runs")

        # The spark's own port; then asleep again and woken by the plain form itself.
        r = self.run_printed(plain, "echo", "ok")
        self.assert_ssh_ok(r, "ok\n", what=plain)
        status_cmd = [line.strip() for line in demo.stdout.splitlines() if "status" in line and "Watch it" in line]
        self.assertEqual(len(status_cmd), 1, demo.stdout)
        self.assertIn("--admin http://%s:%d" % (self.host, self.ports["ADMIN"]), status_cmd[0])
        # ssh has exited; the gateway sees its connection close a moment later (on a loaded
        # machine, after the sleep below would be refused for an open connection).
        wait_until(lambda: self.open_connections() == 0, 15, "the gateway to see the ssh connection close")
        r = subprocess.run([self.bin, "sleep", "brave-dolphin", "--admin",
                            "http://%s:%d" % (self.host, self.ports["ADMIN"])],
                           env=self.child_env(), capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_until(lambda: not self.spark_sshd(), 15, "the spark's sshd to stop")
        r = self.run_printed(plain, "echo", "woken")
        self.assert_ssh_ok(r, "woken\n", what=plain)
        self.assertEqual(demo.stderr.count("spark brave-dolphin: ready in "), 2, "woken twice")

        # Plain `ssh brave-dolphin` with the printed Include line in the user's config.
        user_config = os.path.join(self.tmpdir, "user_ssh_config")
        with open(user_config, "w") as f:
            f.write(includes[0] + "\n\nHost *\n    ServerAliveInterval 30\n")
        r = self.run_printed("ssh -F %s brave-dolphin" % user_config, "echo", "included")
        self.assert_ssh_ok(r, "included\n", what="ssh brave-dolphin with the Include line")

        # Ctrl-C: the gateway stops the spark and exits 0.
        demo.proc.send_signal(signal.SIGINT)
        self.assertEqual(demo.wait(timeout=30), 0, demo.stderr)
        self.assertIn("stopped", demo.stderr.splitlines()[-1])
        self.assertEqual(self.spark_sshd(), [], "no sshd left behind")


if __name__ == "__main__":
    harness.main()
