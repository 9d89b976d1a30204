#!/usr/bin/env python3
"""Issue 17, the jump host's front door: hostile clients cannot lock it, exhaust it or reach past
the gateway's connection limits. Each attack runs against the real gateway with the real OpenSSH
client, on loopback only, with bounded loops and deadlines; the numbers measured are printed
(docs/reliability.md records them).

  * 600 idle connections that never send a byte, reopened when closed, from one source: a
    legitimate `ssh -J` from another source still gets through, 3 tries of 3, at default
    settings; the gateway's threads and RSS stay flat.
  * File descriptors exhausted: the jump listener backs off instead of spinning (CPU measured),
    and the log says so once.
  * A spark's max_connections and the gateway-wide max_waiting refuse `ssh -J` as they refuse
    plain ssh, with a message OpenSSH prints, counted as `rejected`.
  * Issue 23: an unknown spark reads `Permission denied`, and `ssh -tt NAME@jump` gets the same
    explanation as a plain `ssh NAME@jump`.
"""

import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import GatewayTestCase, free_port, proc_fd_count, proc_thread_count, wait_until  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def report(what):
    """A measured number, for docs/reliability.md: on stderr, so CTest's output shows it."""
    sys.stderr.write("measured: %s\n" % what)
    sys.stderr.flush()


def proc_rss_kib(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * PAGE_KIB


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def sanitized(pid):
    """Whether the gateway runs under AddressSanitizer (build-asan)."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def flood_source():
    """A loopback source address other than 127.0.0.1, where the legitimate clients come from:
    the attacker is another pod or tailnet device."""
    for host in ("127.0.0.2", "127.0.0.3", "127.1.2.3"):
        try:
            with socket.socket() as s:
                s.bind((host, 0))
            return host
        except OSError:
            continue
    raise AssertionError("no second loopback address to flood from")


class IdleFlood:
    """`count` TCP connections to (host, port) from `source` that never send a byte; each one the
    gateway closes is opened again at once, as an attacker would. Runs in a thread until stop()
    or `limit` seconds (bounded). Counts what happened."""

    def __init__(self, source, host, port, count, limit):
        self.source, self.addr, self.count, self.limit = source, (host, port), count, limit
        self.opened = 0
        self.closed_by_gateway = 0
        self.connect_failures = 0
        self.held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-flood", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def _open(self, sel):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.source, 0))
        s.setblocking(False)
        s.connect_ex(self.addr)
        sel.register(s, selectors.EVENT_READ)
        self.opened += 1

    def _run(self):
        sel = selectors.DefaultSelector()
        deadline = time.monotonic() + self.limit
        try:
            for _ in range(self.count):  # 600 in 3 s: a burst beyond the listen backlog is no test
                self._open(sel)
                time.sleep(0.005)
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.held = len(sel.get_map())
                for key, _ in sel.select(timeout=0.2):
                    s = key.fileobj
                    try:
                        data = s.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                        self.connect_failures += 1
                    if data:
                        continue  # the gateway's version line: read, never answered
                    sel.unregister(s)
                    s.close()
                    self.closed_by_gateway += 1
                    self._open(sel)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            sel.close()


class Sampler:
    """Samples a process's threads, RSS and fds every `interval` until stopped; keeps the peaks."""

    def __init__(self, pid, interval=0.25):
        self.pid, self.interval = pid, interval
        self.peak_threads = self.peak_rss_kib = self.peak_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak_threads = max(self.peak_threads, proc_thread_count(self.pid))
                self.peak_rss_kib = max(self.peak_rss_kib, proc_rss_kib(self.pid))
                self.peak_fds = max(self.peak_fds, proc_fd_count(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.interval)


class JumpHostile(GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.jump_port = free_port(self.host)  # start_jump_gateway() puts the jump host there

    # -- helpers ---------------------------------------------------------------------------

    def ssh_config(self):
        """OpenSSH's defaults, but for this test's key and its throwaway host keys. ProxyJump's
        inner ssh reads options only from -F."""
        path = os.path.join(self.tmpdir, "ssh_config")
        if not os.path.exists(path):
            with open(path + ".tmp", "w") as f:
                f.write("Host *\n"
                        "    IdentityFile %s\n"
                        "    IdentitiesOnly yes\n"
                        "    StrictHostKeyChecking no\n"
                        "    UserKnownHostsFile /dev/null\n"
                        "    BatchMode yes\n"
                        "    LogLevel INFO\n" % self.user_key)
            os.rename(path + ".tmp", path)
        return path

    def jump(self, spark, command, login=None, timeout=60, extra_args=()):
        """ssh -J LOGIN@gw -p TARGET_PORT user@SPARK COMMAND; returns (CompletedProcess, seconds)."""
        args = ["ssh", "-F", self.ssh_config(), "-J", "%s@%s:%d" % (login or spark.name, self.host, self.jump_port),
                "-p", str(spark.target_port)] + list(extra_args) + ["%s@%s" % (self.user, spark.name), command]
        started = time.monotonic()
        try:
            r = subprocess.run(args, env=self.child_env(), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("ssh -J did not finish within %gs" % timeout)
        return r, time.monotonic() - started

    def ssh_to_jump_host(self, spark, options=(), command=None, timeout=60):
        """ssh straight to the jump host (no -J), as a user who forgot it."""
        cmd = ["ssh", "-F", self.ssh_config(), "-p", str(self.jump_port)] + list(options) + \
              ["%s@%s" % (spark.name, self.host)] + ([command] if command else [])
        try:
            return subprocess.run(cmd, env=self.child_env(), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("ssh to the jump host did not finish within %gs" % timeout)

    # -- the idle pre-auth flood ---------------------------------------------------------

    def test_an_idle_flood_from_one_source_does_not_keep_a_login_out(self):
        spark = self.add_spark("brave-dolphin")
        gw = self.start_jump_gateway([spark])  # the jump host's defaults: nothing tuned
        ok, _ = self.jump(spark, "echo warm")  # the spark awake and the client's files warm
        self.assertEqual(ok.returncode, 0, ok.stderr)
        base_threads, base_rss = proc_thread_count(gw.pid), proc_rss_kib(gw.pid)
        log_lines_before = len(gw.log().splitlines())

        source = flood_source()
        cpu_before, flood_t0 = proc_cpu_seconds(gw.pid), time.monotonic()
        flood = IdleFlood(source, self.host, self.jump_port, 600, limit=120).start()
        self.addCleanup(flood.stop)
        sampler = Sampler(gw.pid).start()
        self.addCleanup(sampler.stop)
        wait_until(lambda: flood.opened >= 600, 20, "the flood's 600 connections")
        time.sleep(3)  # let it settle: the gateway holds what it holds, the rest is reopened

        # Three logins: one while the flood holds its connections, one as the gateway's login
        # grace (30 s) ends them, one after.
        tries = []
        flood_started = time.monotonic()
        for at in (0, 30, 40):
            wait = flood_started + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            r, took = self.jump(spark, "echo through", timeout=45)
            tries.append((r.returncode == 0 and r.stdout == "through\n", took, r.stderr.strip()[-300:]))
        flood.stop()
        sampler.stop()
        cpu = (proc_cpu_seconds(gw.pid) - cpu_before) / (time.monotonic() - flood_t0)

        log_lines = len(gw.log().splitlines()) - log_lines_before
        report("idle flood (600 from one source, %d connections opened in all, %d closed by the gateway): "
               "threads %d -> peak %d, RSS %.1f -> peak %.1f MiB, fds peak %d, gateway CPU %.0f%% of a core, "
               "%d log lines; logins: %s"
               % (flood.opened, flood.closed_by_gateway, base_threads, sampler.peak_threads, base_rss / 1024,
                  sampler.peak_rss_kib / 1024, sampler.peak_fds, cpu * 100, log_lines,
                  ", ".join("%s in %.1fs" % ("ok" if good else "FAILED", took) for good, took, _ in tries)))
        for good, took, err in tries:
            self.assertTrue(good, "a legitimate ssh -J failed during the flood after %.1fs: %s" % (took, err))
            self.assertLess(took, 15, "a legitimate ssh -J took %.1fs during the flood" % took)
        self.assertLessEqual(sampler.peak_threads, base_threads + 6,
                             "unauthenticated connections cost threads (%d -> %d)" % (base_threads, sampler.peak_threads))
        if not sanitized(gw.pid):  # ASan's quarantine keeps freed memory (256 MiB) on purpose
            self.assertLess(sampler.peak_rss_kib - base_rss, 64 * 1024,
                            "the flood grew the gateway's RSS by more than 64 MiB")
        self.assertLess(log_lines, 200, "the flood wrote %d log lines" % log_lines)
        # Its connections outlived login_grace: the source is penalized (refused at once).
        gw.wait_log("jump: penalizing %s: refusing its connections for" % source, timeout=5)
        # The flood ends; the front door is as it was.
        ok, _ = self.jump(spark, "echo after")
        self.assertEqual((ok.returncode, ok.stdout), (0, "after\n"), ok.stderr)

    # -- descriptors exhausted -----------------------------------------------------------

    def test_out_of_descriptors_the_jump_listener_backs_off(self):
        spark = self.add_spark("brave-dolphin")
        # Every accepted connection is held (no early drop), so the descriptors run out.
        gw = self.start_jump_gateway([spark], jump_extra={"max_startups": "200"})
        soft, hard = resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)
        in_use = proc_fd_count(gw.pid)
        resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (in_use + 8, hard))
        self.addCleanup(lambda: gw.running() and resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (soft, hard)))
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        unconnected = 0
        source = flood_source()  # an attacker's address, not the legitimate user's
        for _ in range(40):  # more than the gateway can take: the rest wait in the backlog
            try:
                held.append(socket.create_connection((self.host, self.jump_port), timeout=3,
                                                     source_address=(source, 0)))
            except OSError:
                unconnected += 1  # a SYN dropped: the listen backlog is full
        gw.wait_log("jump: accept failed", "Too many open files", timeout=10)

        cpu_before, t0 = proc_cpu_seconds(gw.pid), time.monotonic()
        lines_before = len(gw.log_lines("accept failed"))
        time.sleep(3)
        cpu = (proc_cpu_seconds(gw.pid) - cpu_before) / (time.monotonic() - t0)
        lines = len(gw.log_lines("accept failed")) - lines_before
        report("out of descriptors: gateway CPU %.1f%% of a core over 3s, %d more 'accept failed' lines, "
               "log %d KiB" % (cpu * 100, lines, os.path.getsize(gw.log_path) // 1024))
        self.assertLess(cpu, 0.10, "the jump listener spins when descriptors run out")
        self.assertLessEqual(lines, 1, "the jump listener logs every failed accept")
        self.assertEqual(unconnected, 0, "the jump listener's backlog held fewer than 40 connections")

        # Descriptors come back: the connections that waited are served, and logins work.
        resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (soft, hard))
        for s in held:
            s.settimeout(10)
        self.assertTrue(held[-1].recv(64).startswith(b"SSH-2.0-"), "a connection that waited was not served")
        for s in held:
            s.close()
        ok, _ = self.jump(spark, "echo back")
        self.assertEqual((ok.returncode, ok.stdout), (0, "back\n"), ok.stderr)

    # -- one admission path ----------------------------------------------------------------

    def test_a_sparks_max_connections_refuses_jump_logins_too(self):
        spark = self.add_spark("brave-dolphin")
        self.enable_admin()
        gw = self.start_jump_gateway([spark], spark_limits={"brave-dolphin": {"max_connections": 2}})
        sessions = [self.ssh_background(spark, "echo started; sleep 120") for _ in range(2)]
        for s in sessions:
            s.wait_output("started", timeout=60)

        r, took = self.jump(spark, "echo should-not-run")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("should-not-run", r.stdout)
        self.assertIn("spark-gateway: brave-dolphin refuses new connections: 2 connections open "
                      "(sparks[].max_connections 2)", r.stderr)
        self.assertLess(took, 10)
        gw.wait_log("spark brave-dolphin: refusing connection from 127.0.0.1 (jump login brave-dolphin, key SHA256:",
                    "): 2 connections open", timeout=5)
        self.assertEqual(self.metric("spark_gateway_connections_total", spark="brave-dolphin", outcome="rejected"), 1)
        for s in sessions:
            self.assertTrue(s.running(), "an open session was disturbed by the refused login")

        # And the other way: a jump session counts against the cap the TCP path checks.
        sessions[0].kill()
        wait_until(lambda: self.spark_status("brave-dolphin")["open_connections"] == 1, 15,
                   "one session to close")
        cfg = self.ssh_config()
        holder = harness.BackgroundProcess(
            ["ssh", "-F", cfg, "-J", "%s@%s:%d" % (spark.name, self.host, self.jump_port), "-p",
             str(spark.target_port), "%s@%s" % (self.user, spark.name), "echo started; sleep 120"],
            self.child_env())
        self.background.append(holder)
        holder.wait_output("started", timeout=60)
        refused = self.ssh(spark, "echo should-not-run", timeout=30)
        self.assertNotEqual(refused.returncode, 0, refused.stdout)
        self.assertEqual(self.metric("spark_gateway_connections_total", spark="brave-dolphin", outcome="rejected"), 2)
        self.assertEqual(self.metric("spark_gateway_connections_total", spark="brave-dolphin", outcome="spliced"), 3)

    def test_the_gateway_wide_max_waiting_refuses_jump_logins_too(self):
        slow = self.add_spark("slow-otter")
        slow.command = ["/bin/sh", "-c", "echo start >> %s; sleep 8; exec %s -D -e -f %s"
                        % (slow.starts_file, harness.SSHD, slow.sshd_config)]
        other = self.add_spark("calm-cat")
        self.enable_admin()
        gw = self.start_jump_gateway([slow, other], limits={"max_waiting": 1})
        waiting = self.ssh_background(slow, "echo first")
        gw.wait_log("spark slow-otter", "waking", timeout=15)

        r, took = self.jump(other, "echo should-not-run")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("spark-gateway: calm-cat refuses new connections: 1 connection waiting for wakes in the "
                      "gateway (limits.max_waiting 1)", r.stderr)
        self.assertLess(took, 10)
        self.assertEqual(other.starts(), 0, "a refused jump login woke its spark")
        gw.wait_log("spark calm-cat: refusing connection from 127.0.0.1 (jump login calm-cat, key SHA256:",
                    "): 1 connection waiting for wakes", timeout=5)
        self.assertEqual(self.metric("spark_gateway_connections_total", spark="calm-cat", outcome="rejected"), 1)
        self.assertEqual(waiting.wait(timeout=60), 0, "the waiting connection failed: %s" % waiting.stderr)

    # -- issue 23: what users see -----------------------------------------------------------

    def test_an_unknown_spark_reads_permission_denied(self):
        spark = self.add_spark("real-rat")
        gw = self.start_jump_gateway([spark])
        r, took = self.jump(spark, "true", login="ghost-gnu")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('spark-gateway: no spark named "ghost-gnu"', r.stderr)
        self.assertRegex(r.stderr, r"ghost-gnu@[\d.]+: Permission denied \(publickey\)")
        self.assertNotIn("Connection closed by", r.stderr.split("Permission denied")[0])
        self.assertLess(took, 10)
        gw.wait_log("jump: login from 127.0.0.1 as \"ghost-gnu\": no such spark")

    def test_a_terminal_on_the_jump_host_gets_the_explanation(self):
        spark = self.add_spark("fence-fox")
        self.start_jump_gateway([spark])
        explanation = "spark-gateway: this is a jump host: no shell or commands here. Use: ssh -J fence-fox@GATEWAY fence-fox"
        plain = self.ssh_to_jump_host(spark)
        self.assertEqual(plain.returncode, 1, plain.stderr)
        self.assertIn(explanation, plain.stderr)
        tty = self.ssh_to_jump_host(spark, ["-tt"])
        self.assertEqual(tty.returncode, 1, tty.stdout + tty.stderr)
        # With a terminal, the remote side's output comes as the terminal's (stdout).
        self.assertIn(explanation, (tty.stdout + tty.stderr).replace("\r", ""))
        self.assertNotIn("PTY allocation request failed", tty.stderr)
        command = self.ssh_to_jump_host(spark, ["-tt"], "id")
        self.assertEqual(command.returncode, 1)
        self.assertIn(explanation, (command.stdout + command.stderr).replace("\r", ""))


if __name__ == "__main__":
    harness.main()
