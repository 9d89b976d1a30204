"""Processes and the machine they run on: bounded waits, /proc scanning, killing what a test left
behind, temp dirs, loopback addresses and free ports, and child processes whose output a test
waits for. Knows nothing about sshd or the gateway."""

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

# Environment variable put into every process a test starts (gateway, ssh clients). Children
# inherit it (the gateway's backends, sshd and its per-connection processes), which lets the
# teardown find leftovers whose command line no longer names the temp dir.
TAG_VAR = "SPARK_E2E_TAG"

# Generous upper bound for an ssh client; tests pass far below it on a healthy machine.
SSH_TIMEOUT = 90.0


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


def proc_fd_count(pid):
    """How many fds the process has open (/proc/PID/fd)."""
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_thread_count(pid):
    """How many threads the process has (/proc/PID/task)."""
    return len(os.listdir("/proc/%d/task" % pid))


# --------------------------------------------------------------------------------------------
# What a test leaves behind: its processes (the tree, found by the temp dir or the tag) and its
# temp dir


def tagged_pids(tmpdir):
    """Processes started from the test whose temp dir is `tmpdir`: its path in their command
    line, or the harness's tag (TAG_VAR=tmpdir) in their environment."""
    return find_pids(cmdline_contains=tmpdir + "/", environ_contains="%s=%s" % (TAG_VAR, tmpdir))


def kill_tagged(tmpdir, timeout=10):
    """SIGKILLs every process tagged_pids(tmpdir) finds, until none is left; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        pids = tagged_pids(tmpdir)
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


def make_tmpdir():
    """A fresh temp dir for one test, its real path (the teardown matches command lines on it)."""
    return os.path.realpath(tempfile.mkdtemp(prefix="spark-e2e-"))


def remove_tmpdir(tmpdir):
    """Removes a test's temp dir, unless SPARK_E2E_KEEP is set (then says where it is)."""
    if os.environ.get("SPARK_E2E_KEEP"):
        sys.stderr.write("e2e: kept %s\n" % tmpdir)
    else:
        shutil.rmtree(tmpdir, ignore_errors=True)


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
    """A port on `host` nobody is bound to right now, and never a number handed out before, on
    any host: the kernel often gives a port just bound and closed again at once, and a spark whose
    listen and target ports are the same dials its own listener in a loop. Numbers are unique
    across hosts because a replica on another loopback address serves the same port_range: an
    admin port inside it would take a spark's port there. The host is private to the test, so
    the usual bind-close-reuse race with other tests does not matter."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no fresh port on %s" % host)


def bindable(host, port):
    """Whether nobody holds `port` on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port_range(host, count):
    """`count` consecutive port numbers starting at a free port on `host`, none handed out
    before and none bound now (a server that took a port from the kernel, like the Kubernetes
    API double, is not in the handed-out set), all reserved so free_port never returns one of
    them."""
    for _ in range(1000):
        base = min(free_port(host), 65535 - count)
        span = set(range(base, base + count))
        if not (span - {base}) & _ports_handed_out and all(bindable(host, p) for p in span - {base}):
            _ports_handed_out.update(span)
            return base, base + count - 1
    raise RuntimeError("no fresh range of %d ports on %s" % (count, host))


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
