#!/usr/bin/env python3
"""Issue 17, file descriptors: a spark's child (a `process` spark's command, an `exec` spark's
start script) gets stdin, stdout and stderr and nothing else of the gateway's: not the spark
listeners, the jump and admin listeners, nor other users' client and upstream sockets. Shown by
children that list their own fds while the gateway holds all of those, and by a start script
that leaves a daemon behind: the gateway restarts on the same ports.
Loopback only; every wait has a deadline."""

import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_port, wait_until, write_atomically  # noqa: E402


# The child the gateway starts: it lists its own fd table (probing with fstat, so the listing opens
# nothing) into a file, then execs the rest of its command line (the spark's sshd).
FD_LISTER = r"""
import json, os, resource, sys
limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
fds = {}
for fd in range(min(limit, 65536)):
    try:
        os.fstat(fd)
    except OSError:
        continue
    fds[fd] = os.readlink("/proc/self/fd/%d" % fd)
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(fds, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
os.execv(sys.argv[2], sys.argv[2:])
"""


def fds_of(pid):
    """{fd: target} of a live process, from /proc."""
    out = {}
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for name in names:
        try:
            out[int(name)] = os.readlink("/proc/%d/fd/%s" % (pid, name))
        except OSError:
            pass
    return out


class HostileFds(harness.GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.jump_port = free_port(self.host)
        self.enable_admin()

    def write_full_config(self):
        """Every kind of listener the gateway has: sparks, jump host, admin."""
        cfg = self.config_dict()
        cfg["jump"] = {"listen": "%s:%d" % (self.host, self.jump_port), "authorized_keys": self.jump_authorized_keys()}
        self.write_config_dict(cfg)

    def fd_list_file(self, spark):
        return os.path.join(spark.dir, "fds")

    def lister(self, spark, then):
        """A command that lists its fds into the spark's fds file, then execs `then`."""
        script = os.path.join(self.tmpdir, "fd_lister.py")
        if not os.path.exists(script):
            write_atomically(script, FD_LISTER)
        return [sys.executable, "-I", script, self.fd_list_file(spark)] + then

    def listed(self, spark):
        with open(self.fd_list_file(spark)) as f:
            return {int(k): v for k, v in json.load(f).items()}

    def hold_live_connections(self, spark):
        """A session through `spark` (client and upstream sockets in the gateway) plus an idle
        TCP connection to its listener."""
        session = self.ssh_background(spark, "echo started; sleep 120")
        session.wait_output("started", timeout=60)
        idle = socket.create_connection((self.host, spark.listen_port), timeout=10)
        self.addCleanup(idle.close)
        return session

    def assert_only_stdio(self, fds, what):
        self.assertEqual(sorted(fds), [0, 1, 2], "%s inherited more than stdin/stdout/stderr: %r" % (what, fds))
        self.assertEqual(fds[0], "/dev/null", what)
        self.assertTrue(fds[1].startswith("pipe:") and fds[2] == fds[1], "%s: %r" % (what, fds))
        self.assertFalse([t for t in fds.values() if t.startswith("socket:")], what)

    def test_a_process_spark_inherits_only_stdin_stdout_and_stderr(self):
        busy = self.add_spark("brave-dolphin")
        lister = self.add_spark("fd-lister")
        lister.command = self.lister(lister, [harness.SSHD, "-D", "-e", "-f", lister.sshd_config])
        self.write_full_config()
        self.start_gateway()
        session = self.hold_live_connections(busy)

        self.assert_ssh_ok(self.ssh(lister, "echo awake"), "awake\n")  # wakes it: the command runs
        self.assert_only_stdio(self.listed(lister), "the process spark's command")
        self.assertTrue(session.running())

    def test_an_exec_start_script_inherits_only_stdin_stdout_and_stderr(self):
        busy = self.add_spark("brave-dolphin")
        spark = self.add_spark("exec-eel", backend="exec")
        spark.start = self.lister(spark, [harness.SSHD, "-f", spark.sshd_config])  # sshd daemonizes
        self.write_full_config()
        self.start_gateway()
        self.hold_live_connections(busy)
        self.assert_ssh_ok(self.ssh(spark, "echo awake"), "awake\n")
        self.assert_only_stdio(self.listed(spark), "the exec spark's start script")

    def test_a_daemon_left_by_a_start_script_does_not_keep_the_gateway_from_restarting(self):
        busy = self.add_spark("brave-dolphin")
        spark = self.add_spark("daemon-dingo", backend="exec")
        # The start script leaves a daemon behind, as `docker run -d` or a VM launcher would.
        spark.start = ["/bin/sh", "-c", "sleep 600 >/dev/null 2>&1 & exec %s -f %s" % (harness.SSHD, spark.sshd_config)]
        self.write_full_config()
        gw = self.start_gateway()
        self.hold_live_connections(busy)
        self.assert_ssh_ok(self.ssh(spark, "echo awake"), "awake\n")
        daemons = wait_until(lambda: [p for p in self.leftover_pids() if harness.proc_cmdline(p) == "sleep 600"],
                             10, "the start script's daemon (sleep 600)")
        self.assertEqual(len(daemons), 1, harness.describe_pids(daemons))
        daemon = daemons[0]

        # The gateway goes; its daemon stays. A new gateway binds every port the old one had.
        gw.stop()
        self.assertTrue(harness.is_alive(daemon), "the daemon was expected to outlive the gateway")
        leaked = {fd: t for fd, t in fds_of(daemon).items() if t.startswith("socket:")}
        gw2 = self.start_gateway(wait_ready=False)
        wait_until(lambda: gw2.log_lines("ready:") or not gw2.running(), 20, "the new gateway to start")
        self.assertEqual(gw2.log_lines("cannot listen"), [], "the daemon holds sockets %r" % leaked)
        gw2.wait_ready()
        self.assertEqual(leaked, {})
        for port in (busy.listen_port, spark.listen_port, self.jump_port):
            with socket.create_connection((self.host, port), timeout=10):
                pass
        status, _ = self.api("GET", "/healthz", token="")
        self.assertEqual(status, 200)

if __name__ == "__main__":
    harness.main()
