"""End-to-end test harness for spark-gateway.

Runs the real gateway binary against real OpenSSH (Debian's /usr/sbin/sshd and ssh/scp clients),
on loopback only. Every test gets:

  * its own temporary directory holding keys, sshd configs, the gateway config and logs;
  * its own random 127.x.y.z address, so test processes running in parallel (CTest -j) cannot
    collide on ports;
  * a teardown that always kills the gateway and every process it or the test left behind
    (found through /proc, by the temp dir path in the command line or by an environment tag
    that every process started by the test inherits), and that dumps the gateway log when the
    test failed.

Nothing here sleeps to hide a race: waits go through wait_until(), which polls a condition with a
deadline and fails with a message naming what it waited for. Every loop is bounded.

Standard library only.
"""

import getpass
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_GATEWAY_BIN = os.path.join(REPO_ROOT, "build", "gateway", "spark-gateway")
SSHD = "/usr/sbin/sshd"

# Environment variable put into every process a test starts (gateway, ssh clients). Children
# inherit it (the gateway's backends, sshd and its per-connection processes), which lets the
# teardown find leftovers whose command line no longer names the temp dir.
TAG_VAR = "SPARK_E2E_TAG"

# Generous upper bounds; tests pass far below them on a healthy machine.
READY_TIMEOUT = 20.0
SSH_TIMEOUT = 90.0


def gateway_bin():
    return os.environ.get("SPARK_GATEWAY_BIN") or DEFAULT_GATEWAY_BIN


def wait_until(predicate, timeout, what, interval=0.03):
    """Polls predicate() every `interval` seconds until it returns a truthy value, which is
    returned. Fails the test (AssertionError) if `timeout` seconds pass first. `what` names the
    condition in the failure message; it may be a callable, evaluated only on failure (to
    describe the state at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if callable(what):
                what = what()
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# /proc scanning


def _all_pids():
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


def _read_proc(pid, name):
    try:
        with open("/proc/%d/%s" % (pid, name), "rb") as f:
            return f.read()
    except OSError:  # gone, or not ours to read
        return None


def proc_cmdline(pid):
    raw = _read_proc(pid, "cmdline")
    if raw is None:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def proc_state(pid):
    raw = _read_proc(pid, "stat")
    if raw is None:
        return None
    # "pid (comm) S ..." - comm may contain spaces or parentheses, so split after the last ')'.
    rest = raw[raw.rfind(b")") + 1:].split()
    return rest[0].decode() if rest else None


def is_alive(pid):
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def find_pids(cmdline_contains=None, environ_contains=None):
    """Live (non-zombie) processes, other than this one, whose command line contains
    `cmdline_contains` or whose environment contains `environ_contains`."""
    me = os.getpid()
    found = []
    for pid in _all_pids():
        if pid == me or not is_alive(pid):
            continue
        hit = False
        if cmdline_contains is not None:
            cmd = proc_cmdline(pid)
            hit = cmd is not None and cmdline_contains in cmd
        if not hit and environ_contains is not None:
            env = _read_proc(pid, "environ")
            hit = env is not None and environ_contains.encode() in env.split(b"\0")
        if hit:
            found.append(pid)
    return found


def describe_pids(pids):
    return ", ".join("%d: %s" % (p, proc_cmdline(p)) for p in pids) or "none"


# --------------------------------------------------------------------------------------------
# Network helpers


def random_loopback_host():
    """A random 127.x.y.z address outside 127.0.0.0/16, so parallel tests never share one.
    Falls back to 127.0.0.1 where only that loopback address is usable."""
    rng = random.SystemRandom()
    host = "127.%d.%d.%d" % (rng.randint(1, 254), rng.randint(0, 255), rng.randint(1, 254))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
    except OSError:
        return "127.0.0.1"
    return host


_ports_handed_out = set()


def free_port(host):
    """A port on `host` nobody is bound to right now, and never one handed out before: the kernel
    often gives a port just bound and closed again at once, and a spark whose listen and target
    ports are the same dials its own listener in a loop. The host is private to the test, so the
    usual bind-close-reuse race with other tests does not matter."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if (host, port) not in _ports_handed_out:
            _ports_handed_out.add((host, port))
            return port
    raise RuntimeError("no fresh port on %s" % host)


def tcp_connect_refused(host, port, timeout=2.0):
    """True if a TCP connect to host:port is refused (nobody listening)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


class EchoServer:
    """A tiny threaded TCP echo server on loopback."""

    def __init__(self, host):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.host, self.port = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            conn.settimeout(30)
            try:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
            except OSError:
                return

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


# --------------------------------------------------------------------------------------------
# Files


def write_random_file(path, size, chunk=1 << 20):
    """Writes `size` random bytes to path; returns their sha256 hex digest."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            block = os.urandom(min(chunk, left))
            h.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return h.hexdigest()
            h.update(block)


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------------------------
# Sparks


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
        return find_pids(cmdline_contains=self.sshd_config)

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


# --------------------------------------------------------------------------------------------
# Processes started by tests


class BackgroundProcess:
    """A child process whose stdout is collected by a thread, so a test can wait for output."""

    def __init__(self, args, env, stdin=None, timeout=SSH_TIMEOUT):
        self.args = args
        self.timeout = timeout
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            args, env=env, stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._out = bytearray()
        self._err = bytearray()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream, buf):
        while True:
            data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not data:
                return
            with self._lock:
                buf.extend(data)

    @property
    def stdout(self):
        with self._lock:
            return self._out.decode("utf-8", "replace")

    @property
    def stderr(self):
        with self._lock:
            return self._err.decode("utf-8", "replace")

    def running(self):
        return self.proc.poll() is None

    def wait_output(self, text, timeout):
        def seen():
            if text in self.stdout:
                return True
            if self.proc.poll() is not None and text not in self.stdout:
                raise AssertionError(
                    "%r exited with %s before printing %r; stdout=%r stderr=%r"
                    % (self.args[-1], self.proc.returncode, text, self.stdout, self.stderr))
            return False
        wait_until(seen, timeout, "%r in the output of %r" % (text, self.args[-1]))

    def wait(self, timeout=None):
        """Waits for exit (bounded); returns the exit code."""
        timeout = timeout if timeout is not None else self.timeout
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%r still running after %gs; stdout=%r stderr=%r"
                                 % (self.args, timeout, self.stdout, self.stderr))
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(timeout=2)
        for s in (self.proc.stdout, self.proc.stderr):
            try:
                s.close()
            except OSError:
                pass


class Gateway:
    """A running `spark-gateway serve`. Its stderr (and stdout) go to a log file that tests
    poll for log lines."""

    def __init__(self, env, config_path, log_level="debug", extra_args=()):
        self.env = env
        self.config_path = config_path
        self.log_path = os.path.join(env.tmpdir, "gateway-%d.log" % len(env.gateways))
        self.args = [gateway_bin(), "serve", "--config", config_path]
        if log_level:
            self.args += ["--log-level", log_level]
        self.args += list(extra_args)
        with open(self.log_path, "wb") as log:
            # cwd "/" on purpose: the gateway must resolve relative config paths against the
            # config file's directory, not its own working directory.
            self.proc = subprocess.Popen(self.args, env=env.child_env(), cwd="/",
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        self.pid = self.proc.pid

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_size(self):
        return len(self.log())

    def log_lines(self, *substrings, since=0):
        """Log lines (after character offset `since`) containing every one of `substrings`."""
        return [line for line in self.log()[since:].splitlines()
                if all(s in line for s in substrings)]

    def wait_log(self, *substrings, timeout=15.0, since=0):
        """Waits for a log line containing all substrings; returns it. Fails early, with the
        exit code, if the gateway exits first."""
        def found():
            lines = self.log_lines(*substrings, since=since)
            if lines:
                return lines[0]
            if self.proc.poll() is not None:
                lines = self.log_lines(*substrings, since=since)  # written just before exiting?
                if lines:
                    return lines[0]
                raise AssertionError("gateway exited with code %s while waiting for a log line "
                                     "containing %r" % (self.proc.returncode, substrings))
            return False
        return wait_until(found, timeout, "a gateway log line containing %r" % (substrings,))

    def wait_ready(self, timeout=READY_TIMEOUT):
        return self.wait_log("ready:", timeout=timeout)

    def running(self):
        return self.proc.poll() is None

    def send(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("gateway still running %gs after being asked to stop" % timeout)

    def stop(self, timeout=45.0):
        """SIGTERM, then wait (bounded) for exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# --------------------------------------------------------------------------------------------
# The test base class


class GatewayTestCase(unittest.TestCase):
    """Base class: a fresh environment (temp dir, keys, loopback address) per test."""

    # Config defaults for tests that do not care; long enough never to fire by accident.
    DEFAULTS = {"idle_timeout": "1h", "wake_timeout": "30s", "drain_timeout": "10s"}
    REAPER_INTERVAL = "1s"
    # None = no activity.flush_interval in the config: the gateway's own default (30 s), as in
    # production. A 1 s flush here once hid lost-activity bugs that only a 30 s flush shows
    # (issue 16); a test that needs a short flush asks for it (flush_interval=...) and says why.
    FLUSH_INTERVAL = None
    NEEDS_GATEWAY = True  # False only for the harness self-check

    def setUp(self):
        super().setUp()
        self.bin = gateway_bin()
        if self.NEEDS_GATEWAY and not (os.path.isfile(self.bin) and os.access(self.bin, os.X_OK)):
            self.fail("spark-gateway binary not found or not executable at %s "
                      "(set SPARK_GATEWAY_BIN)" % self.bin)
        self.tmpdir = os.path.realpath(tempfile.mkdtemp(prefix="spark-e2e-"))
        self.addCleanup(self._cleanup)  # runs even if the rest of setUp fails
        self.host = random_loopback_host()
        self.user = getpass.getuser()
        self.gateways = []
        self.background = []
        self.sparks = []
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.host_key = os.path.join(self.tmpdir, "ssh_host_ed25519_key")
        self.user_key = os.path.join(self.tmpdir, "id_ed25519")
        self.authorized_keys = os.path.join(self.tmpdir, "authorized_keys")
        for path, comment in ((self.host_key, "host"), (self.user_key, "user")):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", path], check=True, timeout=30,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        shutil.copyfile(self.user_key + ".pub", self.authorized_keys)
        self.config_path = os.path.join(self.tmpdir, "config.json")
        self.state_dir = os.path.join(self.tmpdir, "state")
        self.admin = None  # set by enable_admin()

    # -- environment ---------------------------------------------------------------------

    def child_env(self):
        env = dict(os.environ)
        env.pop("SSH_AUTH_SOCK", None)
        env[TAG_VAR] = self.tmpdir
        return env

    def popen(self, args, **kw):
        kw.setdefault("env", self.child_env())
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(args, **kw)
        self.addCleanup(self._reap, p)
        return p

    @staticmethod
    def _reap(p):
        if p.poll() is None:
            p.kill()
        try:
            p.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            pass

    # -- sparks and config ---------------------------------------------------------------

    def add_spark(self, name, **kw):
        s = Spark(self, name, **kw)
        self.sparks.append(s)
        return s

    def config_dict(self, sparks=None, defaults=None, reaper_interval=None, flush_interval=None,
                    drain_timeout=None, limits=None):
        d = dict(self.DEFAULTS)
        d.update(defaults or {})
        if drain_timeout is not None:
            d["drain_timeout"] = drain_timeout
        cfg = {
            "state_dir": "state",
            "defaults": d,
            "reaper": {"interval": reaper_interval or self.REAPER_INTERVAL},
            "sparks": [s.entry() for s in (self.sparks if sparks is None else sparks)],
        }
        flush = flush_interval or self.FLUSH_INTERVAL
        if flush:
            cfg["activity"] = {"flush_interval": flush}
        if limits:
            cfg["limits"] = limits
        if self.admin:
            cfg["admin"] = {k: v for k, v in self.admin.items() if k in ("listen", "token_file")}
        return cfg

    # -- admin API -----------------------------------------------------------------------

    def enable_admin(self, token="e2e-token-" + "x" * 8):
        """Adds an "admin" section (on this test's loopback address) to configs written from
        now on. With a token, mutating calls need it; token=None configures no token file."""
        port = free_port(self.host)
        self.admin = {"listen": "%s:%d" % (self.host, port), "url": "http://%s:%d" % (self.host, port),
                      "token": token}
        if token is not None:
            path = os.path.join(self.tmpdir, "admin-token")
            with open(path, "w") as f:
                f.write(token + "\n")
            self.admin["token_file"] = "admin-token"
        return self.admin

    def api(self, method, path, body=None, token=None, raw_body=None, timeout=60):
        """Calls the admin API; returns (status, decoded JSON or text). token=None uses the
        configured token; token="" sends no Authorization header."""
        import urllib.error
        import urllib.request
        if token is None:
            token = self.admin.get("token") or ""
        data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else b"")
        req = urllib.request.Request(self.admin["url"] + path, data=data if method != "GET" else None,
                                     method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        if method != "GET":
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                status, text = res.status, res.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def admin_cli(self, *args, env_extra=None, timeout=60):
        """Runs an admin subcommand of the binary against this test's gateway."""
        env = self.child_env()
        env["SPARK_GATEWAY_ADMIN"] = self.admin["url"]
        env.pop("SPARK_GATEWAY_TOKEN", None)
        env.update(env_extra or {})
        return subprocess.run([self.bin] + list(args), env=env, cwd="/", stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def write_config(self, sparks=None, path=None, **kw):
        path = path or self.config_path
        write_atomically(path, json.dumps(self.config_dict(sparks, **kw), indent=2) + "\n")
        return path

    def start_gateway(self, config_path=None, wait_ready=True, **kw):
        if config_path is None:
            config_path = self.config_path
            if not os.path.exists(config_path):
                self.write_config()
        gw = Gateway(self, config_path, **kw)
        self.gateways.append(gw)
        if wait_ready:
            gw.wait_ready()
        return gw

    def run_gateway_cli(self, *args, timeout=30):
        return subprocess.run([self.bin] + list(args), env=self.child_env(), cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    # -- ssh -----------------------------------------------------------------------------

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

    # -- teardown ------------------------------------------------------------------------

    def leftover_pids(self):
        return find_pids(cmdline_contains=self.tmpdir + "/",
                         environ_contains="%s=%s" % (TAG_VAR, self.tmpdir))

    def kill_leftovers(self):
        """SIGKILLs every process started from this test's temp dir; bounded."""
        deadline = time.monotonic() + 10
        while True:
            pids = self.leftover_pids()
            if not pids:
                return
            if time.monotonic() > deadline:
                sys.stderr.write("e2e: could not kill leftovers: %s\n" % describe_pids(pids))
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.05)

    def _test_failed(self):
        """True if the test (or its setUp) failed so far. Called from a cleanup, where
        outcome.success cannot be trusted (the cleanup's own executor resets it)."""
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        errors = getattr(outcome, "errors", None)  # Python <= 3.10 collects them here
        if errors:
            return any(exc_info is not None for _, exc_info in errors)
        result = getattr(outcome, "result", None)  # Python >= 3.11 reports them at once
        if result is None:
            return False
        return any(getattr(test, "test_case", test) is self
                   for test, _ in list(result.failures) + list(result.errors))

    def _cleanup(self):
        failed = self._test_failed()
        for gw in self.gateways:
            gw.kill()
        for p in self.background:
            p.kill()
        self.kill_leftovers()
        if failed:
            for gw in self.gateways:
                text = gw.log()
                lines = text.splitlines()
                if len(lines) > 400:
                    lines = ["... (%d earlier lines cut)" % (len(lines) - 400)] + lines[-400:]
                sys.stderr.write("\n==== %s: gateway log %s (exit code %s) ====\n%s\n==== end ====\n"
                                 % (self.id(), gw.log_path, gw.proc.returncode, "\n".join(lines)))
            for p in self.background:
                sys.stderr.write("==== background %r: rc=%s\nstdout=%r\nstderr=%r\n"
                                 % (p.args[-1], p.proc.returncode, p.stdout, p.stderr))
        if os.environ.get("SPARK_E2E_KEEP"):
            sys.stderr.write("e2e: kept %s\n" % self.tmpdir)
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def main():
    unittest.main(verbosity=2)


# ============================================================================================
# Kubernetes API double (tests/k8s_double) for the kubernetes backend's tests.
# This section only adds GatewayTestCase.start_k8s_double(); nothing above uses it.


def _import_k8s_double():
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    import k8s_double
    return k8s_double


class K8sDoubleHandle:
    """What start_k8s_double() returns.

    api         the KubeApiDouble (objects, request log, faults, tokens)
    kubelet     the FakeKubelet (None with kubelet=False)
    url         e.g. http://127.4.5.6:41234 (https://... with tls=True)
    token       the service account token; token_file holds it (rewrite it with
                api.rotate_token(token_file))
    ca_file     the CA bundle over HTTPS, else None
    namespace   the spark namespace
    client()    a k8s_double.ApiClient for this double (token and CA set)
    kubeconfig(path=None, **kw)  writes a kubeconfig (api.write_kubeconfig) and returns its path
    """

    def __init__(self, env, api, kubelet, token_file):
        self.env, self.api, self.kubelet, self.token_file = env, api, kubelet, token_file
        self.url, self.namespace = api.url, api.namespace

    @property
    def token(self):
        return self.api.token

    @property
    def ca_file(self):
        return self.api.ca_file

    def client(self, token=None):
        k8s = _import_k8s_double()
        return k8s.ApiClient(self.api.url, token=self.api.token if token is None else token,
                             ca_file=self.api.ca_file)

    def kubeconfig(self, path=None, **kw):
        return self.api.write_kubeconfig(path or os.path.join(self.env.tmpdir, "kubeconfig"), **kw)


def _start_k8s_double(self, namespace="spark", tls=False, kubelet=True, bookmark_interval=1.0,
                      start_delay=0.3, **api_kw):
    """Starts the Kubernetes API double on this test's loopback address (a free port) and, with
    kubelet=True, a fake kubelet whose pods run this test's sshd (host key, authorized_keys,
    environment tag), each on its own 127.x.y.z. Both are stopped at cleanup, before the
    harness kills leftovers; on failure the double's request log is dumped."""
    k8s = _import_k8s_double()
    api = k8s.KubeApiDouble(host=self.host, port=0, namespace=namespace, tls=tls,
                            bookmark_interval=bookmark_interval,
                            workdir=os.path.join(self.tmpdir, "k8s-api"), **api_kw)
    api.start()
    self.addCleanup(api.stop)
    self.addCleanup(_dump_k8s_requests, self, api)
    token_file = api.write_token_file(os.path.join(self.tmpdir, "k8s-token"))
    kl = None
    if kubelet:
        launcher = k8s.SshdLauncher(os.path.join(self.tmpdir, "k8s-pods"), self.host_key,
                                    self.authorized_keys, env=self.child_env(), tag_var=TAG_VAR,
                                    tag_value=self.tmpdir)
        kl = k8s.FakeKubelet(api, ip_allocator=k8s.LoopbackIpAllocator(avoid=(self.host,)),
                             sshd_launcher=launcher, start_delay=start_delay)
        kl.start()
        self.addCleanup(kl.stop)
    return K8sDoubleHandle(self, api, kl, token_file)


def _dump_k8s_requests(test, api):
    if not test._test_failed():
        return
    recs = api.requests()
    lines = ["%s %s%s -> %s%s" % (r.method, r.path,
                                  "?" + "&".join("%s=%s" % (k, v[0]) for k, v in r.query.items()) if r.query else "",
                                  r.status, " [fault: %s]" % r.fault if r.fault else "")
             for r in recs[-200:]]
    sys.stderr.write("\n==== %s: Kubernetes API double requests (last %d of %d) ====\n%s\n==== end ====\n"
                     % (test.id(), len(lines), len(recs), "\n".join(lines)))


GatewayTestCase.start_k8s_double = _start_k8s_double
