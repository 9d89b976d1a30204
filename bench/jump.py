#!/usr/bin/env python3
"""bench/run's jump host round: the gateway's jump host against OpenSSH's sshd as a jump host
(AllowTcpForwarding, PermitOpen), with the real OpenSSH client on both, on loopback.

Each contender reaches a spark's sshd (the same config, on its own port) with `ssh -J`:
  - setup: wall time of `ssh -J JUMP -p PORT user@host true`, warm (the spark's sshd running);
    for the gateway also cold (the spark asleep: the wake, sshd's start and the login);
  - bulk: MiB/s of N MiB up (`cat > /dev/null` on the spark) and down (`head -c` there), both
    hops encrypted as a user's would be (ciphers as negotiated by default);
  - direct: the same without a jump host (the ceiling the client and sshd set).
Writes "metric contender rep value" lines to --results (bench/report.py's input).

Usage: bench/jump.py --gateway PATH --port-base N [--reps N] [--runs N] [--mib N] --results FILE
"""

import argparse
import getpass
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

H = "127.0.0.1"  # loopback only
SSHD = "/usr/sbin/sshd"
SPARK = "bench-jump"


def log(text):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), text), file=sys.stderr, flush=True)


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((H, port)) == 0


def wait_listening(port, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("bench/jump.py: %s exited (%s)" % (what, proc.returncode))
        if listening(port):
            return
        time.sleep(0.02)
    raise SystemExit("bench/jump.py: %s never listened on %d" % (what, port))


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.procs = []
        self.user = getpass.getuser()
        p = args.port_base
        self.port_gw_spark, self.port_gw_target, self.port_gw_jump, self.port_admin = p, p + 1, p + 2, p + 3
        self.port_ossh_jump, self.port_ossh_target = p + 4, p + 5
        self.results = []

    # -- set-up ------------------------------------------------------------------------------

    def keys(self):
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.host_key = os.path.join(self.work, "host_key")
        self.user_key = os.path.join(self.work, "user_key")
        for path in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.authorized = os.path.join(self.work, "authorized_keys")
        shutil.copyfile(self.user_key + ".pub", self.authorized)
        self.client_config = os.path.join(self.work, "ssh_config")
        # ProxyJump's inner ssh reads its options from -F only.
        with open(self.client_config, "w") as f:
            f.write("Host *\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile /dev/null\n"
                    "  StrictHostKeyChecking no\n  BatchMode yes\n  LogLevel ERROR\n" % self.user_key)

    def sshd_config(self, name, port, jump_to=None):
        path = os.path.join(self.work, name + ".sshd_config")
        lines = ["ListenAddress %s:%d" % (H, port), "HostKey " + self.host_key,
                 "AuthorizedKeysFile " + self.authorized, "StrictModes no", "PidFile none", "UsePAM no",
                 "MaxStartups 100:30:200", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "PermitRootLogin prohibit-password"]
        if jump_to:  # OpenSSH as a jump host: forwarding to the spark only, no shell needed
            lines += ["AllowTcpForwarding yes", "PermitOpen %s:%d" % (H, jump_to)]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def spawn(self, name, argv):
        out = open(os.path.join(self.work, name + ".log"), "w")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self):
        self.keys()
        spark_cfg = self.sshd_config("gw-spark", self.port_gw_target)
        token = os.path.join(self.work, "admin-token")
        with open(token, "w") as f:
            f.write(os.urandom(18).hex() + "\n")
        os.chmod(token, 0o600)
        config = {
            "state_dir": os.path.join(self.work, "state"),
            "defaults": {"idle_timeout": "never", "wake_timeout": "20s", "drain_timeout": "1s"},
            "admin": {"listen": "%s:%d" % (H, self.port_admin), "token_file": token},
            "jump": {"listen": "%s:%d" % (H, self.port_gw_jump), "authorized_keys": self.authorized},
            "sparks": [{"name": SPARK, "listen": "%s:%d" % (H, self.port_gw_spark),
                        "process": {"command": [SSHD, "-D", "-e", "-f", spark_cfg],
                                    "target": "%s:%d" % (H, self.port_gw_target), "stop_grace": "2s"}}],
        }
        path = os.path.join(self.work, "gateway.json")
        with open(path, "w") as f:
            json.dump(config, f)
        self.admin = ["--admin", "http://%s:%d" % (H, self.port_admin), "--token-file", token]
        self.gateway = self.spawn("gateway", [self.args.gateway, "serve", "--config", path, "--log-level", "warn"])
        wait_listening(self.port_gw_jump, self.gateway, "the gateway's jump host")
        wait_listening(self.port_admin, self.gateway, "the gateway's admin listener")
        # OpenSSH: a jump sshd and the spark's sshd behind it, always running.
        ossh_spark = self.spawn("ossh-spark", [SSHD, "-D", "-e", "-f", self.sshd_config("ossh-spark", self.port_ossh_target)])
        ossh_jump = self.spawn("ossh-jump", [SSHD, "-D", "-e", "-f",
                                             self.sshd_config("ossh-jump", self.port_ossh_jump, jump_to=self.port_ossh_target)])
        wait_listening(self.port_ossh_target, ossh_spark, "the OpenSSH contender's spark sshd")
        wait_listening(self.port_ossh_jump, ossh_jump, "OpenSSH's jump sshd")

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    # -- the measurements --------------------------------------------------------------------

    def ssh_argv(self, contender, command):
        base = ["ssh", "-F", self.client_config]
        if contender == "spark-gateway-jump":
            # The gateway's jump host opens the channel to the spark its login names (and the
            # destination must name it too); the port is the spark's sshd's.
            return base + ["-J", "%s@%s:%d" % (SPARK, H, self.port_gw_jump), "-p", str(self.port_gw_target),
                           "%s@%s" % (self.user, SPARK), command]
        if contender == "openssh-jump":
            return base + ["-J", "%s@%s:%d" % (self.user, H, self.port_ossh_jump), "-p", str(self.port_ossh_target),
                           "%s@%s" % (self.user, H), command]
        return base + ["-p", str(self.port_ossh_target), "%s@%s" % (self.user, H), command]  # direct

    def run_ssh(self, contender, command, stdin=subprocess.DEVNULL):
        t0 = time.perf_counter()
        r = subprocess.run(self.ssh_argv(contender, command), stdin=stdin, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=120)
        took = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit("bench/jump.py: ssh through %s failed (%d): %s" % (contender, r.returncode,
                                                                               r.stderr.decode(errors="replace")[-400:]))
        return took

    def gateway_state(self):
        r = subprocess.run([self.args.gateway, "status", SPARK, "-o", "json"] + self.admin, capture_output=True,
                           text=True, timeout=10)
        return json.loads(r.stdout).get("state") if r.returncode == 0 else None

    def put_to_sleep(self):
        """The gateway's spark asleep (409 until the gateway has seen the last session close)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            subprocess.run([self.args.gateway, "sleep", SPARK] + self.admin, capture_output=True, timeout=30)
            if self.gateway_state() == "sleeping":
                return
            time.sleep(0.1)
        raise SystemExit("bench/jump.py: the spark did not go to sleep")

    def record(self, metric, contender, rep, value):
        self.results.append("%s %s %d %r" % (metric, contender, rep, value))

    def setup_round(self, rep):
        runs = self.args.runs
        for contender in ("direct", "openssh-jump", "spark-gateway-jump"):
            self.run_ssh(contender, "true")  # warm: the spark running, caches filled
            times = [self.run_ssh(contender, "true") for _ in range(runs)]
            self.record("jump_setup_warm_ms", contender, rep, 1000 * statistics.median(times))
        cold = []
        for _ in range(max(3, runs // 3)):
            self.put_to_sleep()
            cold.append(self.run_ssh("spark-gateway-jump", "true"))
        self.record("jump_setup_cold_ms", "spark-gateway-jump", rep, 1000 * statistics.median(cold))
        # What the spark's own start costs (an sshd from exec to listening), for the cold figure.
        boots = []
        for i in range(3):
            port = self.port_ossh_target + 1
            t0 = time.perf_counter()
            p = subprocess.Popen([SSHD, "-D", "-e", "-f", self.sshd_config("boot", port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_listening(port, p, "a spark sshd")
                boots.append(time.perf_counter() - t0)
            finally:
                p.terminate()
                p.wait()
        self.record("jump_spark_boot_ms", "spark-gateway-jump", rep, 1000 * statistics.median(boots))

    def bulk_round(self, rep):
        size = self.args.mib * 2**20
        for contender in ("direct", "openssh-jump", "spark-gateway-jump"):
            with open("/dev/zero", "rb") as zero:
                # head on the client's side bounds what goes up; the spark's cat discards it.
                head = subprocess.Popen(["head", "-c", str(size)], stdin=zero, stdout=subprocess.PIPE)
                took = self.run_ssh(contender, "cat > /dev/null", stdin=head.stdout)
                head.stdout.close()
                head.wait()
            self.record("jump_bulk_up_mib_s", contender, rep, self.args.mib / took)
            took = self.run_ssh(contender, "head -c %d /dev/zero" % size)
            self.record("jump_bulk_down_mib_s", contender, rep, self.args.mib / took)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--port-base", type=int, required=True, help="6 loopback ports from here on")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=15, help="warm setups per contender and repetition")
    ap.add_argument("--mib", type=int, default=512, help="MiB per bulk transfer")
    ap.add_argument("--results", required=True, help="file to append the measurements to")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="spark-bench-jump.")
    bench = Bench(args, work)
    try:
        bench.start()
        for rep in range(1, args.reps + 1):
            log("jump host: rep %d/%d, setup (%d warm runs each, then cold)" % (rep, args.reps, args.runs))
            bench.setup_round(rep)
            log("jump host: rep %d/%d, bulk (%d MiB up and down)" % (rep, args.reps, args.mib))
            bench.bulk_round(rep)
    except BaseException:
        for name in ("gateway", "ossh-jump", "ossh-spark"):
            path = os.path.join(work, name + ".log")
            if os.path.exists(path):
                with open(path) as f:
                    sys.stderr.write("--- %s.log (end)\n%s\n" % (name, f.read()[-2000:]))
        raise
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    with open(args.results, "a") as f:
        f.write("\n".join(bench.results) + "\n")


if __name__ == "__main__":
    main()
