#!/usr/bin/env python3
"""The jump host behind a proxy (jump.proxy_protocol): a real HAProxy in mode tcp (send-proxy-v2,
send-proxy) in front of the jump host passes the client's address in a PROXY header, and the
jump host reads that header before anything else, so its log, the spark's `last_client` and its
per-source fairness (max_startups, per_source_penalties) see the client, not HAProxy. Real
OpenSSH `ssh -J` (ProxyJump's inner ssh reads its options only from -F: `BindAddress` there picks
the client's loopback address), real sshd sparks, loopback only.

  * send-proxy-v2 and send-proxy: `ssh -J` through HAProxy works; the log line and the API's
    last_client name the client's address, the login name and the key's SHA256 fingerprint
    (the one `ssh-keygen -lf` prints), never HAProxy's address.
  * A header sent in the same segment as the client's first SSH bytes (v1, v2, LOCAL, UNKNOWN):
    not a byte past the header is read, so libssh gets the whole identification; LOCAL and
    UNKNOWN go on as the proxy's own connection.
  * "optional": a trusted address without a header logs in as itself; through HAProxy the
    client is named.
  * Hostile: under "optional" a header from an address not in trusted_proxies reaches libssh
    as garbage (no login, closed at once) and the gateway keeps serving; under "required" an
    address not in trusted_proxies is refused before a byte is read or sent (a plain `ssh -J`,
    or a header claiming someone else), the log says why, and HAProxy's logins meanwhile work;
    a trusted address without a header under "required" is refused and the log says why; half
    a header then silence is cut after 5 s (or a shorter login_grace) while others log in;
    silent connections from a trusted peer beyond max_startups' `full` are closed at once, the
    rest after 5 s.
  * HAProxy's SSH-banner health checks (LOCAL headers) every 300 ms are not failed logins:
    HAProxy's own address must not be penalized for them, and the jump host stays UP behind it.
    (Failed at 92e2b69: the proxy was penalized after about 6.5 s, HAProxy marked the jump host
    DOWN and every login through it failed; passes since 04795f3.)
  * Fairness: a client failing to log in through HAProxy is penalized alone; another client
    through the same HAProxy logs in meanwhile. Connections still sending their header share
    `full` among the trusted addresses: while another trusted address holds all of it with
    silent connections, a login through HAProxy takes that address's oldest slot (the log says
    so) and works, and the flooder's own connections beyond the cap are refused at once.
"""

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import GatewayTestCase, free_port, wait_until  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
SPARK = "brave-dolphin"
# Documentation addresses (RFC 5737): only ever named in a header, never connected to.
NAMED_V2 = "192.0.2.44"
NAMED_V1 = "192.0.2.45"
LIAR = "203.0.113.9"

# A ProxyCommand for ssh: connects from SOURCE to HOST:PORT and sends HEADER (hex) together with
# ssh's first bytes (its identification line) in one write, so the jump host gets the header and
# the SSH bytes in one segment; then relays both ways.
RELAY = r'''
import os, socket, sys, threading
source, host, port, header = sys.argv[1], sys.argv[2], int(sys.argv[3]), bytes.fromhex(sys.argv[4])
s = socket.create_connection((host, port), timeout=30, source_address=(source, 0))
s.settimeout(None)
first = os.read(0, 65536)
s.sendall(header + first)
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        s.sendall(data)
threading.Thread(target=up, daemon=True).start()
while True:
    try:
        data = s.recv(65536)
    except OSError:
        break
    if not data:
        break
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
'''


def v2_header(source, source_port, destination, destination_port):
    """A PROXY v2 PROXY-command header for a TCP over IPv4 connection."""
    addresses = socket.inet_aton(source) + socket.inet_aton(destination) + struct.pack(
        "!HH", source_port, destination_port)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def v2_local():
    """A PROXY v2 LOCAL header (what HAProxy's health checks send), no addresses."""
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


def sibling(host, last):
    """Another loopback address in the test's own 127.x.y.0/24: "127.1.2.3", 77 -> "127.1.2.77"."""
    return host.rsplit(".", 1)[0] + "." + str(last)


def listening(host, port):
    """Whether something listens on host:port (IPv4), read from /proc/net/tcp: no connection is
    made (a probe through HAProxy would reach the jump host as a client)."""
    local = "%s:%04X" % (socket.inet_aton(host)[::-1].hex().upper(), port)
    with open("/proc/net/tcp") as f:
        return any(fields[1] == local and fields[3] == "0A" for fields in (line.split() for line in f))


def accept_backlog(host, port):
    """How many connections wait in the accept queue of the IPv4 listener on host:port (the
    rx_queue of its LISTEN row in /proc/net/tcp): 0 once the gateway has taken them all."""
    local = "%s:%04X" % (socket.inet_aton(host)[::-1].hex().upper(), port)
    with open("/proc/net/tcp") as f:
        for fields in (line.split() for line in f):
            if fields[1] == local and fields[3] == "0A":
                return int(fields[4].split(":")[1], 16)
    raise AssertionError("nothing listens on %s:%d" % (host, port))


def socket_state(sock):
    """"open" (nothing to read, not closed), "closed" (EOF or reset) or "data"; never blocks (the
    socket is left non-blocking: Python waits out a socket's timeout even with MSG_DONTWAIT)."""
    sock.settimeout(0)
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    return "data" if data else "closed"


def read_until_closed(sock, timeout):
    """Everything `sock` receives until the peer closes it; fails if that takes over `timeout` s.
    Returns (bytes, seconds)."""
    started = time.monotonic()
    received = b""
    while True:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            raise AssertionError("the connection was still open after %gs (received %r)" % (timeout, received))
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            data = b""
        if not data:
            return received, time.monotonic() - started
        received += data


def report(what):
    """A measured number, on stderr (CTest's output shows it)."""
    sys.stderr.write("measured: %s\n" % what)
    sys.stderr.flush()


@unittest.skipUnless(os.path.exists(HAPROXY), "haproxy is not installed")
class JumpProxyProtocol(GatewayTestCase):

    def setUp(self):
        super().setUp()
        # Loopback addresses of this test's own /24: two clients, HAProxy's own when it connects
        # to the jump host (the trusted proxy), another trusted peer, and one nobody trusts.
        last = int(self.host.rsplit(".", 1)[1])
        (self.client_addr, self.client_b_addr, self.proxy_addr, self.other_proxy_addr,
         self.stranger_addr) = (sibling(self.host, (last + k) % 250 + 2) for k in range(1, 6))
        self.jump_port = free_port(self.host)
        self.front_port = None

    # -- setup -----------------------------------------------------------------------------

    def start(self, mode, send="send-proxy-v2", jump_extra=None, trusted=None, check=False):
        """The gateway with one spark and a jump host taking `mode` headers from `trusted`
        (default: HAProxy's source address), the admin API on; HAProxy in front, sending `send`
        (and with `check`, health-checking the jump host for its SSH banner every 300 ms)."""
        self.spark = self.add_spark(SPARK)
        self.enable_admin()
        cfg = self.config_dict()
        cfg["trusted_proxies"] = [a + "/32" for a in (trusted or [self.proxy_addr])]
        cfg["jump"] = {"listen": "%s:%d" % (self.host, self.jump_port),
                       "authorized_keys": self.jump_authorized_keys(), "proxy_protocol": mode}
        cfg["jump"].update(jump_extra or {})
        self.write_config_dict(cfg)
        gw = self.start_gateway()
        self.start_haproxy(send, check)
        return self.spark, gw

    def start_haproxy(self, send, check=False):
        self.front_port = free_port(self.host)
        config = os.path.join(self.tmpdir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write("\n".join([
                "global",
                "  maxconn 200",
                "  stats socket %s mode 600 level operator" % self.haproxy_socket(),
                "defaults",
                "  mode tcp",
                "  timeout connect 5s",
                "  timeout client 60s",
                "  timeout server 60s",
                "  timeout check 2s",
                "frontend jump",
                "  bind %s:%d" % (self.host, self.front_port),
                "  default_backend gateway",
                "backend gateway"]
                + (["  option tcp-check", "  tcp-check expect string SSH-2.0-"] if check else [])
                + ["  server gw %s:%d %s source %s%s" % (self.host, self.jump_port, send, self.proxy_addr,
                                                         " check inter 300ms" if check else ""),
                   ""]))
        err = open(os.path.join(self.tmpdir, "haproxy.err"), "w")
        self.addCleanup(err.close)
        haproxy = self.popen([HAPROXY, "-db", "-f", config], stdout=subprocess.DEVNULL, stderr=err)
        # Its frontend port and its stats socket (bound one after the other, in no set order).
        wait_until(lambda: (listening(self.host, self.front_port) and os.path.exists(self.haproxy_socket()))
                   or haproxy.poll() is not None, 20, "haproxy to listen")
        if haproxy.poll() is not None:
            with open(err.name) as f:
                self.fail("haproxy exited: %s" % f.read())

    def haproxy_socket(self):
        return os.path.join(self.tmpdir, "haproxy.sock")

    def haproxy_server(self):
        """HAProxy's view of the jump host (its `show stat` row): status, check_status, chkfail..."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.haproxy_socket())
            s.sendall(b"show stat\n")
            text = b""
            while True:
                data = s.recv(65536)
                if not data:
                    break
                text += data
        lines = text.decode().splitlines()
        names = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(names, line.split(","))) for line in lines[1:] if line]
        return next(r for r in rows if r["pxname"] == "gateway" and r["svname"] == "gw")

    # -- clients ---------------------------------------------------------------------------

    def ssh_config(self, source, identity=None, extra=""):
        """An ssh_config binding to `source` (ProxyJump's inner ssh reads options only from -F).
        One file per content, written once."""
        text = ("%s"
                "Host *\n"
                "    BindAddress %s\n"
                "    IdentityFile %s\n"
                "    IdentitiesOnly yes\n"
                "    StrictHostKeyChecking no\n"
                "    UserKnownHostsFile /dev/null\n"
                "    BatchMode yes\n"
                "    ConnectTimeout 30\n"
                "    LogLevel INFO\n" % (extra, source, identity or self.user_key))
        path = os.path.join(self.tmpdir, "ssh_config-" + hashlib.sha1(text.encode()).hexdigest()[:12])
        if not os.path.exists(path):
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.rename(path + ".tmp", path)
        return path

    def jump_args(self, source, command="echo ok", login=SPARK, port=None, identity=None, jump_host=None,
                  extra_config=""):
        """ssh -F CFG -J LOGIN@JUMP_HOST:PORT -p TARGET user@SPARK COMMAND from `source`; by default
        through HAProxy. Returns (args, the hop)."""
        cfg = self.ssh_config(source, identity, extra_config)
        hop = "%s@%s" % (login, jump_host or "%s:%d" % (self.host, port or self.front_port))
        return ["ssh", "-F", cfg, "-J", hop, "-p", str(self.spark.target_port),
                "%s@%s" % (self.user, SPARK), command], hop

    def jump(self, source, command="echo ok", timeout=60, **kw):
        """ssh -J from `source` (see jump_args), waited for. Returns the CompletedProcess."""
        args, hop = self.jump_args(source, command, **kw)
        try:
            return subprocess.run(args, env=self.child_env(), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("ssh -J %s did not finish within %gs" % (hop, timeout))

    def jumps_at_once(self, *clients, timeout=60):
        """Several ssh -J at the same time: `clients` are (source, jump_args keywords) pairs.
        Returns each one's CompletedProcess and its duration in seconds, in order."""
        started = time.monotonic()
        running = []
        for source, kw in clients:
            args, hop = self.jump_args(source, **kw)
            running.append((self.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       errors="replace"), args, hop))
        finished = {}
        while len(finished) < len(running):  # their output is a line or two: the pipes never fill
            for i, (p, _, hop) in enumerate(running):
                if i not in finished and p.poll() is not None:
                    finished[i] = time.monotonic() - started
            if time.monotonic() - started > timeout:
                self.fail("ssh -J did not finish within %gs: %s"
                          % (timeout, [hop for i, (_, _, hop) in enumerate(running) if i not in finished]))
            time.sleep(0.02)
        results = []
        for i, (p, args, _) in enumerate(running):
            out, err = p.communicate(timeout=10)
            results.append((subprocess.CompletedProcess(args, p.returncode, out, err), finished[i]))
        return results

    def assert_ok(self, r, stdout="ok\n", what="ssh -J"):
        self.assertEqual((r.returncode, r.stdout), (0, stdout), "%s: stderr=%r" % (what, r.stderr))

    def assert_refused(self, r, what):
        self.assertNotEqual(r.returncode, 0, "%s got through: stdout=%r stderr=%r" % (what, r.stdout, r.stderr))
        self.assertNotIn("ok", r.stdout)

    @staticmethod
    def fingerprint(key):
        out = subprocess.run(["ssh-keygen", "-lf", key], capture_output=True, text=True, check=True,
                             timeout=30).stdout.split()
        assert out[1].startswith("SHA256:"), out
        return out[1]

    def who(self, address, login=SPARK, key=None):
        """What the gateway calls a jump login: "ADDR (jump login LOGIN, key SHA256:...)"."""
        return "%s (jump login %s, key %s)" % (address, login, self.fingerprint(key or self.user_key))

    def assert_named(self, gw, address, login=SPARK, not_named=()):
        """The log's login line and the API's last_client name `address`, the login and the key;
        nothing names the addresses in `not_named` as a jump login."""
        who = self.who(address, login)
        line = gw.wait_log("spark %s: jump login from %s" % (SPARK, who))
        self.assertTrue(line.endswith("spark %s: jump login from %s" % (SPARK, who)), line)
        self.assertEqual(self.spark_status(SPARK)["last_client"], who)
        for other in not_named:
            self.assertEqual(gw.log_lines("jump login from %s " % other), [],
                             "the gateway named %s, not the client %s" % (other, address))
        return who

    def connect_from(self, source, port=None):
        return socket.create_connection((self.host, port or self.jump_port), timeout=10,
                                        source_address=(source, 0))

    # -- through HAProxy -------------------------------------------------------------------

    def test_send_proxy_v2_names_the_client_its_login_and_key(self):
        spark, gw = self.start("required")
        login = SPARK + ".alice"  # the login as given: its first label names the spark
        r = self.jump(self.client_addr, "echo through haproxy", login=login)
        self.assert_ok(r, "through haproxy\n")
        self.assertIn("spark-gateway: waking %s" % SPARK, r.stderr)
        self.assertEqual(spark.starts(), 1)
        who = self.assert_named(gw, self.client_addr, login, not_named=(self.proxy_addr, self.host))
        gw.wait_log("spark %s: waking for a connection from %s" % (SPARK, who))
        gw.wait_log("jump: a connection from %s through the proxy at %s" % (self.client_addr, self.proxy_addr))
        # Another client through the same HAProxy is named as itself.
        self.assert_ok(self.jump(self.client_b_addr, "echo b"), "b\n")
        self.assert_named(gw, self.client_b_addr, not_named=(self.proxy_addr,))

    def test_send_proxy_v1_names_the_client_its_login_and_key(self):
        spark, gw = self.start("required", send="send-proxy")
        r = self.jump(self.client_addr, "echo v1")
        self.assert_ok(r, "v1\n")
        self.assertEqual(spark.starts(), 1)
        who = self.assert_named(gw, self.client_addr, not_named=(self.proxy_addr, self.host))
        gw.wait_log("spark %s: waking for a connection from %s" % (SPARK, who))

    def test_header_and_ssh_bytes_in_one_segment_local_and_unknown(self):
        """The header arrives in the same write as ssh's identification line: the jump host must
        read the header and not a byte more, or libssh misses the start of `SSH-2.0-`. LOCAL (a
        health check) and UNKNOWN name nobody: the connection goes on as the proxy's own."""
        spark, gw = self.start("required")
        relay = os.path.join(self.tmpdir, "relay.py")
        with open(relay, "w") as f:
            f.write(RELAY)
        cases = [
            ("v2 PROXY", v2_header(NAMED_V2, 50000, self.host, self.jump_port), NAMED_V2),
            ("v1 PROXY", ("PROXY TCP4 %s %s 50001 %d\r\n" % (NAMED_V1, self.host, self.jump_port)).encode(),
             NAMED_V1),
            ("v2 LOCAL", v2_local(), self.proxy_addr),
            ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n", self.proxy_addr),
        ]
        for what, header, named in cases:
            with self.subTest(header=what):
                # The jump host's alias reaches it through the relay, from the trusted address.
                extra = ("Host gw-relay\n"
                         "    HostName %s\n"
                         "    Port %d\n"
                         "    ProxyCommand %s %s %s %%h %%p %s\n"
                         % (self.host, self.jump_port, sys.executable, relay, self.proxy_addr, header.hex()))
                r = self.jump(self.client_addr, "echo %s" % what.replace(" ", "-"), jump_host="gw-relay",
                              extra_config=extra)
                self.assert_ok(r, what.replace(" ", "-") + "\n", what)
                self.assertEqual(self.spark_status(SPARK)["last_client"], self.who(named))
                gw.wait_log("spark %s: jump login from %s" % (SPARK, self.who(named)))
        self.assertEqual(gw.log_lines("jump: refusing connection"), [])
        self.assertEqual(spark.starts(), 1)

    def test_optional_takes_a_trusted_address_without_a_header_as_itself(self):
        spark, gw = self.start("optional")
        # Straight to the jump host from the trusted address, no header: the proxy's own login.
        self.assert_ok(self.jump(self.proxy_addr, port=self.jump_port), what="ssh -J without a header")
        self.assert_named(gw, self.proxy_addr)
        # And from an address nobody trusts: as itself too.
        self.assert_ok(self.jump(self.stranger_addr, port=self.jump_port), what="ssh -J from an untrusted address")
        self.assert_named(gw, self.stranger_addr)
        # Through HAProxy: the client.
        self.assert_ok(self.jump(self.client_addr, "echo via haproxy"), "via haproxy\n")
        self.assert_named(gw, self.client_addr)
        self.assertEqual(gw.log_lines("jump: refusing connection"), [])
        self.assertEqual(spark.starts(), 1)

    def test_haproxy_health_checks_do_not_lock_haproxy_out(self):
        """HAProxy checks the jump host for its SSH banner every 300 ms (send-proxy-v2: each
        check is a LOCAL header, then the banner, then HAProxy hangs up), at the gateway's default
        per_source_penalties. A health check is not a failed login: over 10 s (some 30 checks)
        HAProxy's own address must not be penalized, the checks keep passing, the jump host stays
        UP in HAProxy, and logins through it work."""
        spark, gw = self.start("required", check=True)
        wait_until(lambda: self.haproxy_server()["check_status"] == "L7OK", 10,
                   lambda: "HAProxy's first SSH-banner check to pass: %r" % self.haproxy_server())
        started = time.monotonic()
        penalized_at = down_at = None
        while time.monotonic() - started < 10:  # a bounded watch: nothing may go wrong in it
            if penalized_at is None and gw.log_lines("jump: penalizing %s:" % self.proxy_addr):
                penalized_at = time.monotonic() - started
            if down_at is None and self.haproxy_server()["status"] != "UP":
                down_at = time.monotonic() - started
            time.sleep(0.2)
        server = self.haproxy_server()
        r = self.jump(self.client_addr)
        problems = []
        if penalized_at is not None:
            problems.append("HAProxy's own address was penalized %.1fs into its health checks: %s"
                            % (penalized_at, gw.log_lines("jump: penalizing %s:" % self.proxy_addr)[0]))
        if down_at is not None:
            problems.append("HAProxy marked the jump host %s %.1fs in (check_status %s, %s failed checks)"
                            % (server["status"], down_at, server["check_status"], server["chkfail"]))
        if r.returncode != 0:
            problems.append("ssh -J through HAProxy then failed: %s" % r.stderr.strip().splitlines()[-1:])
        if problems:
            self.fail("HAProxy's health checks locked it out:\n  " + "\n  ".join(problems))
        self.assertEqual(r.stdout, "ok\n")
        self.assert_named(gw, self.client_addr)

    # -- hostile ---------------------------------------------------------------------------

    def test_a_header_from_an_untrusted_address_is_garbage_to_libssh(self):
        """Under "optional" an address not in trusted_proxies goes straight to libssh: a header
        from it is not read as one but is the start of a garbled SSH identification. (Under
        "required" it is refused before that: see the next test.)"""
        spark, gw = self.start("optional")
        s = self.connect_from(self.stranger_addr)
        # It claims to be someone else, then speaks SSH.
        s.sendall(v2_header(LIAR, 40000, self.host, self.jump_port) + b"SSH-2.0-OpenSSH_9.2p1 liar\r\n")
        received, seconds = read_until_closed(s, 10)
        s.close()
        report("an untrusted header: closed after %.2fs, having received %r" % (seconds, received[:80]))
        self.assertLess(seconds, 5, "not closed at once (login_grace is 30 s)")
        # At most the jump host's own identification line: no key exchange began.
        self.assertTrue(received == b"" or (received.startswith(b"SSH-2.0-") and received.count(b"\n") == 1
                                            and received.endswith(b"\r\n")), received)
        self.assertEqual(gw.log_lines(LIAR), [], "the gateway believed an untrusted header")
        self.assertEqual(gw.log_lines("jump login from"), [])
        self.assertEqual(spark.starts(), 0)
        # The gateway keeps serving.
        self.assert_ok(self.jump(self.client_addr))
        self.assert_named(gw, self.client_addr, not_named=(self.proxy_addr, LIAR))

    def test_required_refuses_a_trusted_address_without_a_header(self):
        spark, gw = self.start("required")
        r = self.jump(self.proxy_addr, port=self.jump_port)
        self.assert_refused(r, "ssh -J from the trusted address without a header")
        line = gw.wait_log("jump: refusing connection from %s:" % self.proxy_addr, "not a PROXY protocol header")
        self.assertIn('it starts with "S"', line)
        self.assertEqual(gw.log_lines("jump login from"), [])
        self.assertEqual(spark.starts(), 0)
        # Through HAProxy, from the same machine's point of view, it works.
        self.assert_ok(self.jump(self.client_addr))
        self.assert_named(gw, self.client_addr)

    def test_required_refuses_an_address_not_in_trusted_proxies(self):
        """Under "required" a connection from an address not in trusted_proxies is refused at
        once, as on the sparks' own ports: a plain `ssh -J` from it straight to the jump host
        fails and the log says why, while a login through HAProxy at the same time works. A
        header from such an address claiming to be someone else gets not a byte back."""
        spark, gw = self.start("required")
        (stranger, stranger_took), (through, through_took) = self.jumps_at_once(
            (self.stranger_addr, {"command": "echo stranger", "port": self.jump_port}),
            (self.client_addr, {"command": "echo through haproxy"}))
        report("at the same time: ssh -J from an untrusted address refused after %.2fs (%s); "
               "through HAProxy: %.2fs" % (stranger_took, stranger.stderr.strip().splitlines()[-1:], through_took))
        self.assert_refused(stranger, "ssh -J from an address not in trusted_proxies, under required")
        self.assertNotIn("stranger", stranger.stdout)
        self.assert_ok(through, "through haproxy\n", "ssh -J through HAProxy meanwhile")
        gw.wait_log("jump: refusing connection from %s: not in trusted_proxies, and a PROXY header is required"
                    % self.stranger_addr)
        # Nothing logged in from it, and nothing woke for it: the one login is HAProxy's client.
        self.assertEqual(gw.log_lines("jump: login from %s " % self.stranger_addr), [])
        self.assertEqual(gw.log_lines("jump login from %s " % self.stranger_addr), [])
        self.assertEqual([line for line in gw.log_lines("jump login from") if self.who(self.client_addr) not in line],
                         [])
        self.assert_named(gw, self.client_addr, not_named=(self.stranger_addr, self.proxy_addr))
        self.assertEqual(spark.starts(), 1)
        # A header from it naming someone else: closed at once, not even the jump host's
        # identification line sent (libssh never had the connection).
        s = self.connect_from(self.stranger_addr)
        s.sendall(v2_header(LIAR, 40000, self.host, self.jump_port) + b"SSH-2.0-OpenSSH_9.2p1 liar\r\n")
        received, seconds = read_until_closed(s, 10)
        s.close()
        report("a header from an untrusted address under required: closed after %.2fs, having received %r"
               % (seconds, received[:80]))
        self.assertEqual(received, b"", "the jump host answered an address not in trusted_proxies")
        self.assertLess(seconds, 2.0, "not refused at once")
        self.assertEqual(gw.log_lines(LIAR), [], "the gateway believed an untrusted header")
        self.assertEqual(gw.log_lines("penalizing %s:" % self.proxy_addr), [])
        # The gateway keeps serving through HAProxy.
        self.assert_ok(self.jump(self.client_b_addr, "echo after"), "after\n")
        self.assert_named(gw, self.client_b_addr, not_named=(self.stranger_addr, LIAR))

    def test_half_a_header_is_cut_after_5s_while_others_log_in(self):
        spark, gw = self.start("required")
        self.assert_ok(self.jump(self.client_addr), what="the first login (wakes the spark)")
        half = self.connect_from(self.proxy_addr)
        opened = time.monotonic()
        half.sendall(V2_SIGNATURE[:8])  # then nothing
        # Meanwhile a login through HAProxy works, and the half header is still being waited for.
        self.assert_ok(self.jump(self.client_b_addr, "echo meanwhile"), "meanwhile\n")
        during = time.monotonic() - opened
        # (On a loaded machine the login may outlast the deadline; the cut time below still tells.)
        if during < 4.0:
            self.assertEqual(socket_state(half), "open",
                             "the half header was cut before 5s (the login took %.2fs)" % during)
        received, _ = read_until_closed(half, 10 - (time.monotonic() - opened))
        cut = time.monotonic() - opened
        half.close()
        report("half a PROXY header: cut after %.2fs; a login meanwhile took %.2fs" % (cut, during))
        self.assertEqual(received, b"", "the jump host answered a connection without its header")
        self.assertGreaterEqual(cut, 4.0, "cut long before the 5 s header deadline")
        gw.wait_log("jump: refusing connection from %s: no complete PROXY header within 5s" % self.proxy_addr)
        self.assertEqual(gw.log_lines("jump login from %s " % self.proxy_addr), [])
        self.assert_named(gw, self.client_b_addr)

    def test_the_header_deadline_is_login_grace_when_shorter(self):
        spark, gw = self.start("required", jump_extra={"login_grace": "2s"})
        half = self.connect_from(self.proxy_addr)
        opened = time.monotonic()
        half.sendall(b"PROXY TCP4 192.0.2.")  # then nothing
        received, seconds = read_until_closed(half, 8)
        half.close()
        report("half a PROXY v1 header with login_grace 2s: cut after %.2fs" % seconds)
        self.assertEqual(received, b"")
        self.assertGreaterEqual(time.monotonic() - opened, 1.5)
        self.assertLess(seconds, 4.5, "the header deadline did not follow login_grace (2s)")
        gw.wait_log("jump: refusing connection from %s: no complete PROXY header within 2s" % self.proxy_addr)
        self.assert_ok(self.jump(self.client_addr))
        self.assert_named(gw, self.client_addr)

    def test_silent_connections_from_a_trusted_peer_beyond_full_are_closed_at_once(self):
        """max_startups "5:30:10": at most 10 connections from trusted peers may be still sending
        their header. 30 silent ones from a trusted peer A: 20 closed at once, 10 held and cut at
        the 5 s header deadline. A login through HAProxy while they are held works: A holds all
        of `full` and HAProxy none, so HAProxy's connection takes A's oldest place (at 92e2b69
        the cap counted every trusted peer together and HAProxy's was refused); logins through
        HAProxy work after A's are gone too."""
        full, extra = 10, 20
        spark, gw = self.start("required", jump_extra={"max_startups": "5:30:%d" % full},
                               trusted=[self.proxy_addr, self.other_proxy_addr])
        self.assert_ok(self.jump(self.client_addr), what="the first login (wakes the spark)")
        opened = time.monotonic()
        silent = [self.connect_from(self.other_proxy_addr) for _ in range(full + extra)]
        self.addCleanup(lambda: [s.close() for s in silent])

        def closed():
            return [i for i, s in enumerate(silent) if socket_state(s) == "closed"]
        wait_until(lambda: len(closed()) >= extra, 3,
                   lambda: "%d of the %d connections beyond full to be closed at once" % (len(closed()), extra))
        at_once = time.monotonic() - opened
        still_open = [i for i, s in enumerate(silent) if socket_state(s) == "open"]
        report("%d silent connections from a trusted peer: %d closed within %.2fs, %d held"
               % (len(silent), len(closed()), at_once, len(still_open)))
        self.assertLess(at_once, 3.0)
        self.assertEqual(len(still_open), full, "held: %s" % still_open)
        self.assertEqual(still_open, list(range(full)), "the first `full` ones are the ones held")
        gw.wait_log("jump: refusing connection from %s: max_startups %d connections from proxies are still "
                    "sending their PROXY header" % (self.other_proxy_addr, full))

        # While they are held: a login through HAProxy (whose connection waits for its header for
        # a moment, too) takes the place of A's oldest.
        r = self.jump(self.client_b_addr, "echo during")
        during = time.monotonic() - opened
        states = [socket_state(s) for s in silent[:full]]
        report("a login through HAProxy while %d silent connections from another trusted peer were held "
               "(%d still held after it, %.2fs after they opened): %s"
               % (full, states.count("open"), during,
                  "works" if r.returncode == 0 else "refused (%s)" % r.stderr.strip().splitlines()[-1:]))
        self.assert_ok(r, "during\n", "ssh -J through HAProxy while a trusted peer held max_startups' full")
        self.assert_named(gw, self.client_b_addr)
        if during < 4.0:  # else A's may have reached their deadline meanwhile: the log below still tells
            self.assertEqual(states, ["closed"] + ["open"] * (full - 1),
                             "A's oldest is to give way to HAProxy's connection, and only it")
        self.assertEqual(gw.log_lines("refusing connection from %s:" % self.proxy_addr), [])
        # The displacement is a refusal too; after A's 20 it falls in the same 10 s window of the
        # rate-limited refusal log, so it may be only counted (measured, not asserted).
        made_room = gw.log_lines("to make room for %s" % self.proxy_addr)
        report("the \"to make room for\" line after A's flood: %s"
               % (made_room[0].split(" jump: ", 1)[-1] if made_room else "not written (counted in the window)"))

        # The held ones are cut at the header deadline (5 s), none answered.
        wait_until(lambda: len(closed()) == len(silent), 10 - (time.monotonic() - opened),
                   lambda: "all silent connections cut within 10s (still open: %d)"
                   % (len(silent) - len(closed())))
        gone = time.monotonic() - opened
        report("the held silent connections were all cut %.2fs after they opened" % gone)
        self.assertGreaterEqual(gone, 4.0, "the held ones were cut before the 5 s header deadline")
        self.assertEqual(gw.log_lines("jump login from %s " % self.other_proxy_addr), [])
        # Once they are gone, logins through HAProxy work.
        self.assert_ok(self.jump(self.client_b_addr, "echo after"), "after\n")
        self.assert_named(gw, self.client_b_addr)
        # What the refusal log wrote for the flood, once its 10 s window ended.
        summary = gw.wait_log("jump: refused ", " in the last 10s", timeout=max(1.0, 14 - (time.monotonic() - opened)))
        report("the refusal log's summary: %s" % summary.split(" jump: ", 1)[-1])

    # -- fairness --------------------------------------------------------------------------

    def test_penalties_weigh_the_client_behind_haproxy_not_haproxy(self):
        """Two failed logins (a key the jump host does not know) from client A through HAProxy
        penalize A (10 s each above a 15 s minimum); A is then refused even with a good key,
        while client B through the same HAProxy logs in. Were the gate to weigh HAProxy's address,
        B would be locked out with A."""
        spark, gw = self.start("required", jump_extra={
            "per_source_penalties": {"authfail": "10s", "noauth": "1s", "grace_exceeded": "1s",
                                     "min": "15s", "max": "1m"}})
        wrong_key = os.path.join(self.tmpdir, "wrong_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wrong", "-f", wrong_key],
                       check=True, timeout=30, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for attempt in (1, 2):
            r = self.jump(self.client_addr, identity=wrong_key)
            self.assert_refused(r, "a login with a key the jump host does not know")
            self.assertIn("Permission denied", r.stderr)
        gw.wait_log("jump: login from %s to %s: key %s is not authorized for it"
                    % (self.client_addr, SPARK, self.fingerprint(wrong_key)))
        gw.wait_log("jump: penalizing %s:" % self.client_addr)
        # A is locked out now, even with a good key...
        r = self.jump(self.client_addr)
        self.assert_refused(r, "a penalized client")
        gw.wait_log("jump: refusing connection from %s: penalized for" % self.client_addr)
        # ...while B, through the same HAProxy, gets in,
        self.assert_ok(self.jump(self.client_b_addr, "echo b"), "b\n")
        self.assert_named(gw, self.client_b_addr)
        # and A is still locked out after it (B's login did not end A's penalty).
        self.assert_refused(self.jump(self.client_addr), "a penalized client, after B's login")
        self.assertEqual(gw.log_lines("penalizing %s:" % self.proxy_addr), [], "HAProxy's address was penalized")
        self.assertEqual(gw.log_lines("refusing connection from %s:" % self.proxy_addr), [])
        self.assertEqual(gw.log_lines("jump login from %s " % self.client_addr), [])
        self.assertEqual(spark.starts(), 1)

    def test_a_trusted_flooder_gives_way_to_logins_through_haproxy(self):
        """max_startups "5:30:10", two trusted addresses: A holds all 10 places for connections
        still sending their header with silent connections (they fit: nothing is refused). A
        login through HAProxy (B, holding none) then works: it takes A's oldest place, and the
        log says so. A's own connections beyond the cap are refused at once, as A holds the most;
        none of A's is answered, all are cut at the 5 s header deadline, and HAProxy's address is
        never refused."""
        full, more = 10, 4
        flooder = self.other_proxy_addr
        spark, gw = self.start("required", jump_extra={"max_startups": "5:30:%d" % full},
                               trusted=[self.proxy_addr, flooder])
        self.assert_ok(self.jump(self.client_addr), what="the first login (wakes the spark)")
        opened = time.monotonic()
        held = [self.connect_from(flooder) for _ in range(full)]
        self.addCleanup(lambda: [s.close() for s in held])
        wait_until(lambda: accept_backlog(self.host, self.jump_port) == 0, 3,
                   "the gateway to accept A's connections")
        time.sleep(0.2)
        self.assertEqual([socket_state(s) for s in held], ["open"] * full, "A's `full` connections are held")
        self.assertEqual(gw.log_lines("jump: refusing connection"), [], "A's `full` connections fit")

        # A login through HAProxy: B holds none, A all of them.
        r = self.jump(self.client_b_addr, "echo during")
        login_took = time.monotonic() - opened
        states = [socket_state(s) for s in held]
        report("a login through HAProxy while a trusted peer held all %d places: %s, %.2fs after A's opened "
               "(%d of A's still held)" % (full, "works" if r.returncode == 0 else "refused (%s)"
                                          % r.stderr.strip().splitlines()[-1:], login_took, states.count("open")))
        self.assert_ok(r, "during\n", "ssh -J through HAProxy while a trusted peer held max_startups' full")
        self.assert_named(gw, self.client_b_addr, not_named=(self.proxy_addr, flooder))
        line = gw.wait_log("jump: refusing connection from %s: closed a connection still sending its PROXY header "
                           "to make room for %s" % (flooder, self.proxy_addr))
        report("logged: %s" % line.split(" jump: ", 1)[-1])
        self.assertLess(login_took, 4.0, "the login took too long to see the rest within A's 5 s hold")
        self.assertEqual(states, ["closed"] + ["open"] * (full - 1),
                         "A's oldest is to give way to HAProxy's connection, and only it")

        # A opens more: the place B's connection left (its header came at once) is A's again,
        # then A, holding the most, is refused at once.
        more_opened = time.monotonic()
        extra = [self.connect_from(flooder) for _ in range(more)]
        self.addCleanup(lambda: [s.close() for s in extra])
        wait_until(lambda: sum(socket_state(s) == "closed" for s in extra) >= more - 1, 2,
                   lambda: "A's connections beyond the cap to be refused at once: %s"
                   % [socket_state(s) for s in extra])
        snapshot = time.monotonic() - opened
        extra_states = [socket_state(s) for s in extra]
        held_states = [socket_state(s) for s in held]
        report("%d more from A while it held %d: %s within %.2fs"
               % (more, full - 1, extra_states, time.monotonic() - more_opened))
        self.assertLess(snapshot, 4.5, "too late to tell: A's first connections near their 5 s deadline")
        self.assertEqual(extra_states, ["open"] + ["closed"] * (more - 1),
                         "A takes back the one free place, then is refused")
        self.assertEqual(held_states, ["closed"] + ["open"] * (full - 1), "A's refusal closed none of its held")

        # None of A's is answered; all are cut at their header deadline.
        everything = held + extra
        wait_until(lambda: all(socket_state(s) != "open" for s in everything),
                   max(1.0, 10 - (time.monotonic() - more_opened)),
                   lambda: "A's connections to be cut: %s" % [socket_state(s) for s in everything])
        self.assertGreaterEqual(time.monotonic() - opened, 4.0, "A's held ones were cut before the 5 s deadline")
        self.assertEqual([socket_state(s) for s in everything].count("data"), 0, "one of A's was answered")
        self.assertEqual(gw.log_lines("jump login from %s " % flooder), [])
        self.assertEqual(gw.log_lines("refusing connection from %s:" % self.proxy_addr), [],
                         "HAProxy's address was refused")
        self.assertEqual(spark.starts(), 1)


if __name__ == "__main__":
    harness.main()
