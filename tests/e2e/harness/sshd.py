"""OpenSSH on both ends: the test's keys, a real sshd per spark (Debian's /usr/sbin/sshd), and
the ssh/scp clients a test runs (SshMixin, part of GatewayTestCase)."""

import os
import shutil
import subprocess

from .files import count_lines
from .processes import (SSH_TIMEOUT, TAG_VAR, BackgroundProcess, describe_pids, find_pids, free_port,
                        proc_cmdline, wait_until)

SSHD = "/usr/sbin/sshd"


def make_keys(tmpdir):
    """A host key and a user key (ed25519, no passphrase) in tmpdir, and an authorized_keys
    holding the user key; returns (host_key, user_key, authorized_keys) paths."""
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    host_key = os.path.join(tmpdir, "ssh_host_ed25519_key")
    user_key = os.path.join(tmpdir, "id_ed25519")
    authorized_keys = os.path.join(tmpdir, "authorized_keys")
    for path, comment in ((host_key, "host"), (user_key, "user")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                        "-f", path], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    shutil.copyfile(user_key + ".pub", authorized_keys)
    return host_key, user_key, authorized_keys


class Spark:
    """One spark: an sshd config on the test's loopback address, plus the gateway config
    entry that runs it. `starts` counts how many times the backend was started."""

    def __init__(self, env, name, backend="process", listen_port=None, target_port=None,
                 idle_timeout=None, wake_timeout=None, stop_grace=None, command=None,
                 start=None, stop=None):
        self.env = env
        self.name = name
        self.backend = backend
        self.host = env.host
        self.listen_port = listen_port or free_port(self.host)
        self.target_port = target_port or free_port(self.host)
        self.dir = os.path.join(env.tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sshd_config = os.path.join(self.dir, "sshd_config")
        self.starts_file = os.path.join(self.dir, "starts")
        self.pid_file = os.path.join(self.dir, "sshd.pid")
        self.idle_timeout = idle_timeout
        self.wake_timeout = wake_timeout
        self.stop_grace = stop_grace
        self._write_sshd_config()
        if backend == "process":
            self.command = command if command is not None else [
                "/bin/sh", "-c",
                "echo start >> %s; exec %s -D -e -f %s" % (self.starts_file, SSHD, self.sshd_config)]
        elif backend == "exec":
            # sshd without -D daemonizes: the start command exits 0 once sshd forked away, and
            # the gateway must then probe the target until sshd listens.
            self.start = start if start is not None else [
                "/bin/sh", "-c",
                "echo start >> %s; exec %s -f %s" % (self.starts_file, SSHD, self.sshd_config)]
            self.stop = stop if stop is not None else [
                "/bin/sh", "-c", "kill $(cat %s)" % self.pid_file]
        else:
            raise ValueError(backend)

    def _write_sshd_config(self):
        lines = [
            "ListenAddress %s:%d" % (self.host, self.target_port),
            "HostKey %s" % self.env.host_key,
            "AuthorizedKeysFile %s" % self.env.authorized_keys,
            "StrictModes no",
            "PidFile %s" % (self.pid_file if self.backend == "exec" else "none"),
            "UsePAM no",
            "MaxStartups 100:30:200",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "AllowTcpForwarding yes",
            "Subsystem sftp internal-sftp",
            "LogLevel INFO",
            # Tags the users' sessions too (sshd gives them a fresh environment), so the
            # teardown also finds remote commands that outlive a cut connection.
            "SetEnv %s=%s" % (TAG_VAR, self.env.tmpdir),
        ]
        with open(self.sshd_config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def entry(self):
        """This spark's object in the gateway config's "sparks" list."""
        e = {"name": self.name, "listen": "%s:%d" % (self.host, self.listen_port)}
        if self.idle_timeout is not None:
            e["idle_timeout"] = self.idle_timeout
        if self.wake_timeout is not None:
            e["wake_timeout"] = self.wake_timeout
        target = "%s:%d" % (self.host, self.target_port)
        if self.backend == "process":
            e["process"] = {"command": self.command, "target": target}
            if self.stop_grace is not None:
                e["process"]["stop_grace"] = self.stop_grace
        else:
            e["exec"] = {"start": self.start, "stop": self.stop, "target": target}
        return e

    def starts(self):
        return count_lines(self.starts_file)

    def sshd_pids(self):
        """The spark's sshd processes. Not the /bin/sh that starts it: its command line names the
        same sshd_config, and counting it made "sshd running" true before the start was
        recorded (a test then saw starts() == 0 with sshd "running")."""
        return [p for p in find_pids(cmdline_contains=self.sshd_config)
                if not (proc_cmdline(p) or "").startswith("/bin/sh ")]

    def sshd_running(self):
        return bool(self.sshd_pids())

    def wait_sshd_gone(self, timeout, what=None):
        wait_until(lambda: not self.sshd_running(), timeout,
                   what or (lambda: "sshd of spark %s to stop (still running: %s)"
                            % (self.name, describe_pids(self.sshd_pids()))))

    def wait_sshd_running(self, timeout, what=None):
        wait_until(self.sshd_running, timeout, what or "sshd of spark %s to run" % self.name)

    def start_sshd_directly(self):
        """Runs this spark's sshd without the gateway (harness self-check)."""
        return self.env.popen([SSHD, "-D", "-e", "-f", self.sshd_config],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class SshMixin:
    """Sparks and the ssh/scp clients, for GatewayTestCase. Uses the test's host, user,
    user_key, sparks, background and child_env()."""

    def add_spark(self, name, **kw):
        s = Spark(self, name, **kw)
        self.sparks.append(s)
        return s

    def ssh_options(self):
        return ["-F", "/dev/null", "-i", self.user_key,
                "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=30",
                "-o", "LogLevel=ERROR"]

    def ssh_args(self, spark, command, extra=(), port=None, host=None):
        port = port if port is not None else spark.listen_port
        host = host or self.host
        return (["ssh"] + self.ssh_options() + ["-p", str(port)] + list(extra)
                + ["%s@%s" % (self.user, host)] + ([command] if command is not None else []))

    def ssh(self, spark, command, stdin=None, timeout=SSH_TIMEOUT, extra=(), port=None,
            text=True):
        """Runs ssh through the gateway to `spark` (or to `port` directly); returns the
        CompletedProcess. Fails the test if ssh hangs past `timeout`."""
        args = self.ssh_args(spark, command, extra=extra, port=port)
        try:
            return subprocess.run(args, env=self.child_env(),
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, text=text,
                                  errors="replace" if text else None)
        except subprocess.TimeoutExpired:
            self.fail("ssh %r did not finish within %gs" % (command, timeout))

    def ssh_background(self, spark, command, extra=(), stdin=None, timeout=SSH_TIMEOUT):
        p = BackgroundProcess(self.ssh_args(spark, command, extra=extra), self.child_env(),
                              stdin=stdin, timeout=timeout)
        self.background.append(p)
        return p

    def scp(self, spark, src, dst, timeout=SSH_TIMEOUT):
        """scp through the gateway; remote paths are written as ':path'."""
        def fix(p):
            return "%s@%s%s" % (self.user, self.host, p) if p.startswith(":") else p
        args = (["scp", "-q"] + self.ssh_options() + ["-P", str(spark.listen_port)]
                + [fix(src), fix(dst)])
        try:
            return subprocess.run(args, env=self.child_env(), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace",
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("scp %s %s did not finish within %gs" % (src, dst, timeout))

    def assert_ssh_ok(self, result, expected_stdout=None, what="ssh"):
        self.assertEqual(result.returncode, 0,
                         "%s exited %d; stdout=%r stderr=%r"
                         % (what, result.returncode, result.stdout, result.stderr))
        if expected_stdout is not None:
            self.assertEqual(result.stdout, expected_stdout,
                             "%s printed %r (stderr=%r)" % (what, result.stdout, result.stderr))
