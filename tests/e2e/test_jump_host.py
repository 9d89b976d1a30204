#!/usr/bin/env python3
"""The jump host (docs/jump-host.md): `ssh -J NAME@gateway NAME` with the real OpenSSH client,
through the gateway's libssh server, to a real sshd spark. Progress lines reach the user's
stderr while the spark wakes; the inner session is end to end; anything else is refused with a
message OpenSSH prints; a client leaving mid-wake leaves nothing behind.
"""

import os
import signal
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (GatewayTestCase, free_port, proc_fd_count, proc_thread_count, sha256_file,  # noqa: E402
                     wait_until, write_random_file)


class JumpHost(GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.jump_port = free_port(self.host)  # start_jump_gateway() puts the jump host there

    def ssh_config(self, identity=None, extra=""):
        """An ssh_config file: ProxyJump's inner ssh reads options only from -F, not from -o.
        One file per content, written once (parallel clients must never see it half written)."""
        import hashlib
        key = hashlib.sha1(("%s\n%s" % (identity, extra)).encode()).hexdigest()[:12]
        path = os.path.join(self.tmpdir, "ssh_config-" + key)
        if os.path.exists(path):
            return path
        with open(path + ".tmp", "w") as f:
            f.write("Host *\n"
                    "    IdentityFile %s\n"
                    "    IdentitiesOnly yes\n"
                    "    StrictHostKeyChecking no\n"
                    "    UserKnownHostsFile /dev/null\n"
                    "    BatchMode yes\n"
                    "    ConnectTimeout 30\n"
                    "    LogLevel INFO\n%s" % (identity or self.user_key, extra))
        os.rename(path + ".tmp", path)
        return path

    def jump(self, spark, command, identity=None, login=None, timeout=60, extra_args=()):
        """ssh -J LOGIN@gw -p TARGET_PORT user@SPARK COMMAND."""
        cfg = self.ssh_config(identity)
        args = ["ssh", "-F", cfg, "-J", "%s@%s:%d" % (login or spark.name, self.host, self.jump_port),
                "-p", str(spark.target_port)] + list(extra_args) + ["%s@%s" % (self.user, spark.name), command]
        return subprocess.run(args, env=self.child_env(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)

    def test_jump_to_a_sleeping_spark_shows_progress_and_runs_the_command(self):
        spark = self.add_spark("brave-dolphin")
        gw = self.start_jump_gateway([spark])
        r = self.jump(spark, "echo hello from $(hostname -s >/dev/null; echo spark)")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "hello from spark\n")
        self.assertIn("spark-gateway: waking brave-dolphin (asleep for", r.stderr)
        self.assertRegex(r.stderr, r"spark-gateway: brave-dolphin ready in \d")
        self.assertEqual(spark.starts(), 1)
        gw.wait_log("spark brave-dolphin: jump connection from", "closed after")
        # Awake now: no progress lines the second time.
        r = self.jump(spark, "echo again")
        self.assertEqual((r.returncode, r.stdout), (0, "again\n"), r.stderr)
        self.assertNotIn("waking", r.stderr)

    def test_proxyjump_stanza_with_a_domain_suffix(self):
        spark = self.add_spark("calm-otter")
        self.start_jump_gateway([spark])
        cfg = self.ssh_config(extra="Host *.spark\n    ProxyJump %%n@%s:%d\n    Port %d\n"
                              % (self.host, self.jump_port, spark.target_port))
        r = subprocess.run(["ssh", "-F", cfg, "%s@calm-otter.spark" % self.user, "echo via-stanza"],
                           env=self.child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout), (0, "via-stanza\n"), r.stderr)

    def test_scp_and_sftp_through_the_jump_host(self):
        spark = self.add_spark("data-dingo")
        self.start_jump_gateway([spark])
        src = os.path.join(self.tmpdir, "blob")
        write_random_file(src, 8 << 20)
        cfg = self.ssh_config()
        jump = "%s@%s:%d" % (spark.name, self.host, self.jump_port)
        remote = os.path.join(self.tmpdir, "remote-blob")
        r = subprocess.run(["scp", "-q", "-F", cfg, "-J", jump, "-P", str(spark.target_port), src,
                            "%s@%s:%s" % (self.user, spark.name, remote)],
                           env=self.child_env(), capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sha256_file(remote), sha256_file(src))
        back = os.path.join(self.tmpdir, "back-blob")
        batch = os.path.join(self.tmpdir, "sftp-batch")
        with open(batch, "w") as f:
            f.write("get %s %s\n" % (remote, back))
        r = subprocess.run(["sftp", "-q", "-F", cfg, "-J", jump, "-P", str(spark.target_port), "-b", batch,
                            "%s@%s" % (self.user, spark.name)],
                           env=self.child_env(), capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sha256_file(back), sha256_file(src))

    def test_ten_jump_logins_at_once_start_the_spark_once(self):
        spark = self.add_spark("busy-bee")
        self.start_jump_gateway([spark])
        self.ssh_config()  # written before the threads share it
        results = [None] * 10

        def run(i):
            results[i] = self.jump(spark, "echo n%d" % i, timeout=90)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for i, r in enumerate(results):
            self.assertEqual((r.returncode, r.stdout), (0, "n%d\n" % i), r.stderr)
        self.assertEqual(spark.starts(), 1)

    def test_a_key_opens_only_the_sparks_it_is_authorized_for(self):
        open_spark = self.add_spark("open-owl")
        closed_spark = self.add_spark("closed-cat")
        other_key = os.path.join(self.tmpdir, "other_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other_key], check=True)
        per_spark = os.path.join(self.tmpdir, "open-owl-keys")
        with open(other_key + ".pub") as src, open(per_spark, "w") as dst:
            dst.write("# the other key may open open-owl only\n" + src.read())
        # The other key also logs in to the sparks' sshd (so only the jump host can refuse it).
        with open(other_key + ".pub") as src, open(self.authorized_keys_of_sparks(), "a") as dst:
            dst.write(src.read())
        gw = self.start_jump_gateway([open_spark, closed_spark],
                                     jump_extra={"sparks": {"open-owl": {"authorized_keys": per_spark}}})
        r = self.jump(closed_spark, "echo no", identity=other_key)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Permission denied", r.stderr)
        self.assertIn("may not open closed-cat", r.stderr)
        self.assertEqual(closed_spark.starts(), 0, "an unauthorized login must not wake anything")
        r = self.jump(open_spark, "echo yes", identity=other_key)
        self.assertEqual((r.returncode, r.stdout), (0, "yes\n"), r.stderr)
        gw.wait_log("jump: login from", "closed-cat", "not authorized")

    def test_an_unknown_spark_is_refused_with_its_name(self):
        spark = self.add_spark("real-rat")
        self.start_jump_gateway([spark])
        r = self.jump(spark, "true", login="ghost-gnu")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('no spark named "ghost-gnu"', r.stderr)

    def test_forwarding_anywhere_but_the_spark_is_refused(self):
        spark = self.add_spark("fence-fox")
        self.start_jump_gateway([spark])
        cfg = self.ssh_config()
        for dest in ("127.0.0.1:9090", "%s:%d" % (self.host, spark.listen_port), "fence-fox:2222"):
            r = subprocess.run(["ssh", "-F", cfg, "-p", str(self.jump_port), "-W", dest,
                                "%s@%s" % (spark.name, self.host)],
                               env=self.child_env(), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=60)
            self.assertNotEqual(r.returncode, 0, dest)
            self.assertIn("open failed: administratively prohibited", r.stderr, dest)
        self.assertEqual(len(self.gw_log_lines("asked for")), 3, "each refusal is logged with its destination")
        # And no shell or command on the jump host itself.
        r = subprocess.run(["ssh", "-F", cfg, "-p", str(self.jump_port), "%s@%s" % (spark.name, self.host), "id"],
                           env=self.child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("spark-gateway: this is a jump host: no shell or commands here", r.stderr)

    def test_a_client_leaving_mid_wake_leaves_nothing_behind(self):
        spark = self.add_spark("slow-sloth")
        spark.command = ["/bin/sh", "-c", "echo start >> %s; sleep 3; exec %s -D -e -f %s"
                         % (spark.starts_file, harness.SSHD, spark.sshd_config)]
        self.enable_admin()
        gw = self.start_jump_gateway([spark])
        baseline_fds, baseline_threads = proc_fd_count(gw.pid), proc_thread_count(gw.pid)
        cfg = self.ssh_config()
        # Its own process group: ProxyJump runs a second ssh, and both must go.
        err_path = os.path.join(self.tmpdir, "leaver.err")
        with open(err_path, "w") as err:
            p = subprocess.Popen(
                ["ssh", "-F", cfg, "-J", "%s@%s:%d" % (spark.name, self.host, self.jump_port), "-p",
                 str(spark.target_port), "%s@%s" % (self.user, spark.name), "true"],
                env=self.child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        def progress_shown():
            with open(err_path) as f:
                return "waking slow-sloth" in f.read()
        wait_until(progress_shown, 20, "the progress line")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        gw.wait_log("spark slow-sloth: jump login from", "gone while waking", timeout=20)
        # The wake still completes; the connection it made for the login is closed (open
        # connections back to 0, so an operator's sleep is not refused), and once the spark
        # sleeps again the gateway has exactly the fds and threads it had before.
        spark.wait_sshd_running(20)
        wait_until(lambda: self.spark_status("slow-sloth")["open_connections"] == 0, 10,
                   "the abandoned login's connection to close")
        status, body = self.api("POST", "/api/v1/sparks/slow-sloth/sleep")
        self.assertEqual(status, 200, body)
        spark.wait_sshd_gone(20)
        wait_until(lambda: proc_fd_count(gw.pid) <= baseline_fds and proc_thread_count(gw.pid) <= baseline_threads,
                   20, lambda: "fds %d->%d, threads %d->%d" % (baseline_fds, proc_fd_count(gw.pid), baseline_threads,
                                                                proc_thread_count(gw.pid)))
        r = self.jump(spark, "echo still-fine")
        self.assertEqual((r.returncode, r.stdout), (0, "still-fine\n"), r.stderr)

    def jump_background(self, spark, command):
        """ssh -J ... COMMAND, running in the background (harness.BackgroundProcess)."""
        args = ["ssh", "-F", self.ssh_config(), "-J", "%s@%s:%d" % (spark.name, self.host, self.jump_port),
                "-p", str(spark.target_port), "%s@%s" % (self.user, spark.name), command]
        return harness.BackgroundProcess(args, self.child_env())

    def test_sigterm_drains_a_jump_session_like_a_tcp_one(self):
        """SIGTERM with a session open through the jump host: the gateway stops accepting but
        lets it finish (the drain counts jump sessions), then exits 0. It used to exit at once,
        cutting the session."""
        spark = self.add_spark("drain-dove")
        gw = self.start_jump_gateway([spark], drain_timeout="30s")
        session = self.jump_background(spark, "echo started; sleep 3; echo done")
        session.wait_output("started", 60)
        gw.send(signal.SIGTERM)
        self.assertEqual(session.wait(timeout=30), 0, "the jump session was cut: %s" % session.stderr)
        self.assertEqual(session.stdout, "started\ndone\n")
        self.assertEqual(gw.wait_exit(30), 0)
        self.assertTrue(gw.log_lines("draining 1 open connection"), "the drain counted the jump session")

    def test_drain_timeout_and_forced_sleep_end_jump_sessions(self):
        """The drain timeout ends a jump session still open (as it ends TCP ones), and so does a
        forced sleep; an unforced one is refused while it is open."""
        spark = self.add_spark("late-lark")
        self.enable_admin()
        gw = self.start_jump_gateway([spark], drain_timeout="2s")
        session = self.jump_background(spark, "echo started; sleep 120; echo done")
        session.wait_output("started", 60)
        status, body = self.api("POST", "/api/v1/sparks/late-lark/sleep")
        self.assertEqual(status, 409, "an unforced sleep with a jump session open: %s" % body)
        status, body = self.api("POST", "/api/v1/sparks/late-lark/sleep?force=true")
        self.assertEqual(status, 200, body)
        self.assertNotEqual(session.wait(timeout=20), 0, "the forced sleep ended the jump session")
        self.assertNotIn("done", session.stdout)
        wait_until(lambda: self.spark_status("late-lark")["open_connections"] == 0, 10,
                   "the ended jump session to be counted closed")

        session = self.jump_background(spark, "echo started; sleep 120; echo done")
        session.wait_output("started", 60)
        gw.send(signal.SIGTERM)
        # Draining: still up a moment after the signal, with the session open...
        wait_until(lambda: gw.log_lines("draining 1 open connection"), 10, "the drain to begin")
        self.assertTrue(session.running())
        # ...until the drain timeout (2 s) closes it.
        self.assertEqual(gw.wait_exit(20), 0)
        self.assertNotEqual(session.wait(timeout=20), 0, "the drain timeout ended the jump session")
        self.assertTrue(gw.log_lines("drain timeout: closing 1 connection still open"))

    # -- helpers ---------------------------------------------------------------------------

    def gw_log_lines(self, *parts):
        return self.gateways[-1].log_lines(*parts)

    def authorized_keys_of_sparks(self):
        return os.path.join(self.tmpdir, "authorized_keys")


if __name__ == "__main__":
    harness.main()
