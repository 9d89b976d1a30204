"""The spark-gateway binary under test: which one (SPARK_GATEWAY_BIN), its config, running it
(`serve`, log file, waits for log lines, signals), its admin API and CLI (GatewayMixin, part of
GatewayTestCase)."""

import json
import os
import signal
import subprocess
import sys

from .files import write_atomically
from .processes import free_port, wait_until

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
DEFAULT_GATEWAY_BIN = os.path.join(REPO_ROOT, "build", "gateway", "spark-gateway")

# Generous upper bound; tests pass far below it on a healthy machine.
READY_TIMEOUT = 20.0


def gateway_bin():
    return os.environ.get("SPARK_GATEWAY_BIN") or DEFAULT_GATEWAY_BIN


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

    def dump_log(self, test_id, max_lines=400):
        """Writes the log's last `max_lines` lines to stderr (for a failed test)."""
        lines = self.log().splitlines()
        if len(lines) > max_lines:
            lines = ["... (%d earlier lines cut)" % (len(lines) - max_lines)] + lines[-max_lines:]
        sys.stderr.write("\n==== %s: gateway log %s (exit code %s) ====\n%s\n==== end ====\n"
                         % (test_id, self.log_path, self.proc.returncode, "\n".join(lines)))


class GatewayMixin:
    """Config, gateway processes, admin API and CLI, for GatewayTestCase. Uses the test's
    tmpdir, host, bin, sparks, gateways, config_path, admin and child_env()."""

    # Config defaults for tests that do not care; long enough never to fire by accident.
    DEFAULTS = {"idle_timeout": "1h", "wake_timeout": "30s", "drain_timeout": "10s"}
    REAPER_INTERVAL = "1s"
    # None = no activity.flush_interval in the config: the gateway's own default (30 s), as in
    # production. A 1 s flush here once hid lost-activity bugs that only a 30 s flush shows
    # (issue 16); a test that needs a short flush asks for it (flush_interval=...) and says why.
    FLUSH_INTERVAL = None

    # -- config ----------------------------------------------------------------------------

    def config_dict(self, sparks=None, defaults=None, reaper_interval=None, flush_interval=None,
                    drain_timeout=None, limits=None, spark_limits=None):
        """The gateway config for `sparks` (default: every spark added) as a dict. spark_limits
        ({spark name: {key: value}}) adds keys to those sparks' entries (max_connections...)."""
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
        for entry in cfg["sparks"]:
            entry.update((spark_limits or {}).get(entry["name"], {}))
        flush = flush_interval or self.FLUSH_INTERVAL
        if flush:
            cfg["activity"] = {"flush_interval": flush}
        if limits:
            cfg["limits"] = limits
        if self.admin:
            cfg["admin"] = {k: v for k, v in self.admin.items() if k in ("listen", "token_file")}
        return cfg

    def write_config(self, sparks=None, path=None, **kw):
        return self.write_config_dict(self.config_dict(sparks, **kw), path)

    def write_config_dict(self, cfg, path=None):
        """Writes a config dict (config_dict() with a test's changes) as JSON, atomically (a
        gateway reloading on SIGHUP never reads half of it), to `path` or the test's config
        path; returns the path."""
        path = path or self.config_path
        write_atomically(path, json.dumps(cfg, indent=2) + "\n")
        return path

    # -- jump host -------------------------------------------------------------------------

    def jump_authorized_keys(self):
        """tmpdir/jump_authorized_keys, holding the test user's key (the jump host's
        authorized_keys; written on the first call); returns its path."""
        path = os.path.join(self.tmpdir, "jump_authorized_keys")
        if not os.path.exists(path):
            with open(self.user_key + ".pub") as src, open(path, "w") as dst:
                dst.write(src.read())
        return path

    def start_jump_gateway(self, sparks, jump_extra=None, **kw):
        """Writes config_dict(sparks, **kw) with a jump host on self.jump_port (which the test
        set) taking jump_authorized_keys(), plus `jump_extra`; starts the gateway."""
        cfg = self.config_dict(sparks=sparks, **kw)
        cfg["jump"] = {"listen": "%s:%d" % (self.host, self.jump_port), "authorized_keys": self.jump_authorized_keys()}
        cfg["jump"].update(jump_extra or {})
        self.write_config_dict(cfg)
        return self.start_gateway()

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

    def spark_status(self, name):
        """The admin API's view of spark `name`: the body of GET /api/v1/sparks/NAME (its status
        code not checked; use api() for that)."""
        return self.api("GET", "/api/v1/sparks/" + name)[1]

    def admin_cli(self, *args, env_extra=None, timeout=60):
        """Runs an admin subcommand of the binary against this test's gateway."""
        env = self.child_env()
        env["SPARK_GATEWAY_ADMIN"] = self.admin["url"]
        env.pop("SPARK_GATEWAY_TOKEN", None)
        env.update(env_extra or {})
        return subprocess.run([self.bin] + list(args), env=env, cwd="/", stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    # -- the gateway process -------------------------------------------------------------

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
