#!/usr/bin/env python3
"""Dev ports: a static spark's ports beside SSH ("ports": [{"name", "listen", "port"}]).

The spark here is a process spark whose command runs BOTH its real sshd and a real HTTP server
(`python3 -m http.server PORT --bind HOST`, HTTP/1.1 so a connection can be held open) in the
same process group, the HTTP server optionally a few seconds late. What is shown:

  * from asleep, 10 parallel curls to the web port and one ssh all get through on ONE wake (the
    wake is shared with SSH); every curl gets the very file served;
  * a dev server that starts 2 s after the spark: a curl from asleep waits for it (the spark is
    young) and gets the page, not an error;
  * a port nothing listens on in a spark running longer than port_grace: the connection is
    closed at once with a log line and a port_closed count, the spark stays running and no wake
    failed; while the spark is young (the default port_grace, 30 s) the same connection waits
    and is connected once the port answers, its first bytes intact;
  * a held keep-alive HTTP connection keeps the spark awake past its idle_timeout; the spark
    (and its dev server) sleeps once it closes;
  * a bare connect that closes at once wakes nothing (turned away, closed_silent); a silent
    client wakes it after wake_grace;
  * a wake that fails for a dev port's connection is the spark's failed wake, logged as one;
  * the API view lists the ports, `spark-gateway ports NAME` prints them (and -o json), the
    metrics carry the port label (promtool check metrics passes);
  * check-config refuses each bad ports config with its key path.

Loopback only; harness defaults (wake_timeout 30s, idle_timeout 1h) unless a test says why."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
CONNECTIONS = "spark_gateway_connections_total"
BYTES = "spark_gateway_bytes_total"
WAKES = "spark_gateway_wakes_total"
TURNED_AWAY = "spark_gateway_connections_turned_away_total"
NAME = "brave-dolphin"
CURL_TIMEOUT = 60  # seconds; curl's own --max-time, the harness's bound for a client


class DevSpark:
    """A process spark running its sshd and, beside it, a real HTTP server on `web_port`
    (serving `page`), and an `api_port` on which nothing ever listens. The gateway's addresses
    for them are web_listen and api_listen."""

    def __init__(self, env, name=NAME, web_delay=0, **spark_kw):
        self.spark = env.add_spark(name, **spark_kw)
        host = env.host
        self.host = host
        self.web_port = harness.free_port(host)     # the spark's own, on its target's host
        self.api_port = harness.free_port(host)     # nothing listens here
        self.web_listen = harness.free_port(host)   # the gateway's
        self.api_listen = harness.free_port(host)
        self.www = os.path.join(self.spark.dir, "www")
        os.makedirs(self.www)
        # A page no other server would serve: random, and big enough to take several segments.
        self.page = ("<html><body>%s</body></html>\n" % os.urandom(20000).hex()).encode()
        with open(os.path.join(self.www, "index.html"), "wb") as f:
            f.write(self.page)
        self.http_log = os.path.join(self.spark.dir, "http.log")
        server = ("exec python3 -m http.server %d --bind %s --directory %s --protocol HTTP/1.1"
                  % (self.web_port, host, self.www))
        if web_delay:
            server = "sleep %g; %s" % (web_delay, server)
        # The HTTP server in the background, then sshd in the foreground: one process group,
        # which the gateway stops as a whole.
        self.spark.command = [
            "/bin/sh", "-c",
            "echo start >> %s; (%s) >> %s 2>&1 & exec %s -D -e -f %s"
            % (self.spark.starts_file, server, self.http_log, harness.SSHD, self.spark.sshd_config)]

    def ports(self, with_api=False):
        ports = [{"name": "web", "listen": "%s:%d" % (self.host, self.web_listen), "port": self.web_port}]
        if with_api:
            ports.append({"name": "api", "listen": "%s:%d" % (self.host, self.api_listen),
                          "port": self.api_port})
        return ports

    def http_server_pids(self):
        return harness.find_pids(cmdline_contains="http.server %d " % self.web_port)


class DevPortsTestCase(harness.GatewayTestCase):

    def start_dev(self, web_delay=0, with_api=False, port_grace=None, defaults=None,
                  reaper_interval=None, **spark_kw):
        dev = DevSpark(self, web_delay=web_delay, **spark_kw)
        extra = {"ports": dev.ports(with_api)}
        if port_grace is not None:
            extra["port_grace"] = port_grace
        self.enable_admin()
        self.write_config(defaults=defaults, reaper_interval=reaper_interval, spark_limits={NAME: extra})
        gw = self.start_gateway()
        return dev, gw

    # -- clients ----------------------------------------------------------------------------

    def curl_args(self, dev, out):
        # --interface: from the test's own address, so the log lines can be told apart.
        return ["curl", "-s", "-S", "-f", "--max-time", str(CURL_TIMEOUT), "--interface", dev.host, "-o", out,
                "http://%s:%d/" % (dev.host, dev.web_listen)]

    def curl(self, dev):
        """One curl of the web port's index; returns (CompletedProcess, body bytes)."""
        out = os.path.join(self.tmpdir, "curl-%d.out" % time.monotonic_ns())
        try:
            r = subprocess.run(self.curl_args(dev, out), env=self.child_env(), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=CURL_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            self.fail("curl did not finish within %ds" % (CURL_TIMEOUT + 10))
        return r, self.read_file(out)

    @staticmethod
    def read_file(path):
        if not os.path.exists(path):
            return b""
        with open(path, "rb") as f:
            return f.read()

    def assert_page(self, dev, result, body, what="curl"):
        self.assertEqual(result.returncode, 0, "%s exited %d: %s" % (what, result.returncode, result.stderr))
        self.assertEqual(len(body), len(dev.page), "%s got %d bytes, not the %d-byte page" %
                         (what, len(body), len(dev.page)))
        self.assertEqual(body, dev.page, "%s got other bytes than the page served" % what)

    def connect(self, dev, listen_port):
        """A TCP connection to the gateway from the test's own address (so the log names it)."""
        return socket.create_connection((dev.host, listen_port), timeout=10, source_address=(dev.host, 0))

    @staticmethod
    def read_http_response(sock, timeout=30):
        """Reads one HTTP/1.1 response (headers, Content-Length body) off `sock`; returns
        (status line, headers dict, body). Fails if the connection ends first."""
        sock.settimeout(timeout)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("the connection ended inside the response headers: %r" % data[:300])
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "-1"))
        if length < 0:
            raise AssertionError("no Content-Length in %r" % head)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("the connection ended inside the body (%d of %d bytes)" % (len(rest), length))
            rest += chunk
        return lines[0], headers, rest

    def assert_closed_by_gateway(self, sock, within):
        """The gateway closes `sock` (EOF or a reset) within `within` seconds, sending nothing."""
        sock.settimeout(within)
        try:
            got = sock.recv(1024)
        except ConnectionResetError:
            return
        except socket.timeout:
            self.fail("the gateway kept the connection open for %gs" % within)
        self.assertEqual(got, b"", "the gateway sent bytes to a connection it should close")

    # -- metrics ----------------------------------------------------------------------------

    def scrape(self):
        return self.scrape_metrics(token="")

    def promtool_check(self, text):
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60, env=self.child_env())
        return p.returncode, p.stdout, p.stderr

    def wait_value(self, name, want, timeout=10, **labels):
        last = {}

        def check():
            last["v"] = self.scrape().get(name, **labels)
            return last["v"] == want
        wait_until(check, timeout, lambda: "%s%s == %s (last: %s)" % (name, labels, want, last.get("v")))


# ------------------------------------------------------------------------------------------


class WakeThroughDevPortTest(DevPortsTestCase):

    def test_ten_curls_and_an_ssh_from_asleep_share_one_wake(self):
        dev, gw = self.start_dev()
        spark = dev.spark
        self.assertEqual(self.spark_status(NAME)["state"], "sleeping")
        self.assertEqual(spark.starts(), 0)
        self.assertFalse(dev.http_server_pids(), "the dev server runs before any wake")

        outs = [os.path.join(self.tmpdir, "parallel-%d.out" % i) for i in range(10)]
        curls = [self.popen(self.curl_args(dev, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for out in outs]
        session = self.ssh_background(spark, "echo hello-from-ssh")
        for i, (p, out) in enumerate(zip(curls, outs)):
            try:
                _, err = p.communicate(timeout=CURL_TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                self.fail("curl %d did not finish within %ds" % (i, CURL_TIMEOUT + 10))
            body = self.read_file(out)
            self.assert_page(dev, subprocess.CompletedProcess(p.args, p.returncode, b"", err.decode()),
                             body, "curl %d" % i)
        self.assertEqual(session.wait(), 0, "ssh failed: %r" % session.stderr)
        self.assertEqual(session.stdout, "hello-from-ssh\n")

        self.assertEqual(spark.starts(), 1, "ten curls and an ssh at once started the spark more than once")
        self.assertEqual(self.spark_status(NAME)["wakes"], 1)
        e = self.scrape()
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="success"), 1)
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="failure"), 0)
        wait_until(lambda: self.scrape().get(CONNECTIONS, spark=NAME, outcome="spliced", port="web") == 10,
                   10, "the 10 curls counted as spliced on port web")
        e = self.scrape()
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="spliced"), 1, "the ssh, without a port label")
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="port_closed", port="web"), 0)
        # Each curl is one line naming the port.
        wait_until(lambda: len(gw.log_lines("spark %s: connection from %s:" % (NAME, self.host),
                                            "to port web closed after")) == 10,
                   10, "10 'connection from ... to port web closed after' lines")

    def test_a_dev_server_starting_late_is_waited_for_from_asleep(self):
        # The dev server starts 2 s after the spark (its sshd at once): the spark is young, so a
        # refusing port is a server still starting, retried within wake_timeout.
        dev, gw = self.start_dev(web_delay=2)
        t0 = time.monotonic()
        r, body = self.curl(dev)
        took = time.monotonic() - t0
        self.assert_page(dev, r, body)
        self.assertGreaterEqual(took, 2.0, "the page came before the dev server can have started")
        self.assertEqual(dev.spark.starts(), 1)
        self.assertEqual(gw.log_lines("does not answer"), [])
        e = self.scrape()
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="spliced", port="web"), 1)
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="port_closed", port="web"), 0)
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="success"), 1)
        gw.wait_log("spark %s: connection from %s:" % (NAME, self.host), "to port web (sleeping)")

    def test_a_wake_failed_for_a_dev_port_is_the_sparks_failed_wake(self):
        # A spark whose command exits at once: the dev port's connection is closed, and the
        # failure is the spark's (no port label), logged as the wake that failed.
        dev = DevSpark(self)
        dev.spark.command = ["/bin/sh", "-c", "echo start >> %s; exit 3" % dev.spark.starts_file]
        self.enable_admin()
        self.write_config(spark_limits={NAME: {"ports": dev.ports()}})
        gw = self.start_gateway()
        s = self.connect(dev, dev.web_listen)
        client_port = s.getsockname()[1]
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assert_closed_by_gateway(s, within=35)  # wake_timeout 30s
        s.close()
        line = gw.wait_log("connection from %s:%d to port web closed" % (self.host, client_port))
        self.assertGreaterEqual(dev.spark.starts(), 1)
        e = self.scrape()
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="wake_failed"), 1,
                         "a failed wake for a dev port is the spark's")
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="port_closed", port="web"), 0)
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="spliced", port="web"), 0)
        self.assertGreaterEqual(e.value(WAKES, spark=NAME, outcome="failure"), 1)
        self.assertEqual([l for n, l, v in e.samples if n == CONNECTIONS and l.get("port")
                          and l["outcome"] not in ("spliced", "port_closed")], [],
                         "a dev port's series other than spliced and port_closed")
        # docs/operations.md: a connection's line says "closed: wake failed: REASON", for a dev
        # port as for SSH (whose line said so before dev ports).
        r = self.ssh(dev.spark, "true")
        self.assertNotEqual(r.returncode, 0)
        ssh_line = gw.wait_log("spark %s: connection from" % NAME, "closed",
                               since=gw.log().index(line) + len(line))
        self.assertTrue("to port web closed: wake failed: " in line and " closed: wake failed: " in ssh_line,
                        "connection lines without 'closed: wake failed: REASON':\n%s\n%s" % (line, ssh_line))


class PortNotAnsweringTest(DevPortsTestCase):

    def test_a_closed_port_on_an_old_spark_closes_the_connection_at_once(self):
        # port_grace 1s (default 30s) so that the spark is "running longer than port_grace"
        # a second after its wake, instead of half a minute.
        dev, gw = self.start_dev(with_api=True, port_grace="1s")
        spark = dev.spark
        self.assert_ssh_ok(self.ssh(spark, "echo up"), "up\n")
        self.assertEqual(spark.starts(), 1)
        time.sleep(1.5)  # the premise: the spark has been running longer than port_grace (1s)

        s = self.connect(dev, dev.api_listen)
        client_port = s.getsockname()[1]
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assert_closed_by_gateway(s, within=10)
        took = time.monotonic() - t0
        s.close()
        self.assertLess(took, 3.0, "closing the connection to a closed port took %.2fs (wake_timeout 30s)" % took)

        line = gw.wait_log("spark %s: connection from %s:%d to port api closed: port %d does not answer in "
                           "the spark (" % (NAME, self.host, client_port, dev.api_port))
        self.assertIn("refused", line.lower(), line)
        # The spark stays up: no failed wake, no sleep, still serving its other ports.
        self.assertEqual(self.spark_status(NAME)["state"], "running")
        self.assertTrue(spark.sshd_running())
        self.assertEqual(spark.starts(), 1)
        self.assertIsNone(self.spark_status(NAME)["last_wake_error"])
        e = self.scrape()
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="port_closed", port="api"), 1)
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="spliced", port="api"), 0)
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="wake_failed"), 0)
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="upstream_failed"), 0)
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="failure"), 0)
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="success"), 1)
        self.assertEqual(gw.log_lines("wake failed"), [])
        r, body = self.curl(dev)
        self.assert_page(dev, r, body, "a curl of the web port after the api port was closed")
        self.assertEqual(spark.starts(), 1)

    def test_a_port_that_never_answers_is_given_up_at_wake_timeout(self):
        # wake_timeout 3s (harness: 30s) so giving up on a young spark's port takes seconds. From
        # asleep the spark is young: the port is retried, then the connection closed at
        # wake_timeout; the spark woke fine and stays up.
        dev, gw = self.start_dev(with_api=True, wake_timeout="3s")
        s = self.connect(dev, dev.api_listen)
        client_port = s.getsockname()[1]
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assert_closed_by_gateway(s, within=15)
        took = time.monotonic() - t0
        s.close()
        self.assertGreaterEqual(took, 2.5, "a young spark's refusing port was given up after %.2fs, "
                                "before wake_timeout (3s)" % took)
        self.assertLess(took, 8.0, "the connection outlived wake_timeout (3s): %.2fs" % took)
        line = gw.wait_log("spark %s: connection from %s:%d to port api closed: port %d does not answer in "
                           "the spark (" % (NAME, self.host, client_port, dev.api_port))
        self.assertIn("wake_timeout 3s", line)
        self.assertEqual(self.spark_status(NAME)["state"], "running")
        self.assertEqual(dev.spark.starts(), 1)
        e = self.scrape()
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="port_closed", port="api"), 1)
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="success"), 1)
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="failure"), 0)
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="wake_failed"), 0)

    def test_a_client_leaving_a_young_sparks_wait_for_its_port_ends_it(self):
        # At the default wake_timeout (5m): a browser that gives up on a dev server still
        # starting must not hold an open connection (and so the spark awake) for 5 minutes. Its
        # request, bigger than what the greeting reads, is still unread when it leaves.
        dev, gw = self.start_dev(with_api=True)
        self.assert_ssh_ok(self.ssh(dev.spark, "echo up"), "up\n")
        s = self.connect(dev, dev.api_listen)
        client_port = s.getsockname()[1]
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 2000 + b"\r\n\r\n")
        wait_until(lambda: self.spark_status(NAME)["open_connections"] == 1, 10, "the connection to be open")
        s.close()
        left = time.monotonic()
        line = gw.wait_log("spark %s: connection from %s:%d to port api closed: the client left while port %d "
                           "was awaited" % (NAME, self.host, client_port, dev.api_port), timeout=10)
        self.assertLess(time.monotonic() - left, 5.0, line)
        wait_until(lambda: self.spark_status(NAME)["open_connections"] == 0, 5, "the connection to be closed")
        e = self.scrape()
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="port_closed", port="api"), 0)
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="failure"), 0)

    def test_a_closed_port_on_a_young_spark_waits_until_it_answers(self):
        # The default port_grace (30 s): a spark woken a moment ago is young, so a port that
        # refuses is retried; once something listens there, the waiting connection gets it,
        # its first bytes unchanged.
        dev, gw = self.start_dev(with_api=True)
        self.assert_ssh_ok(self.ssh(dev.spark, "echo up"), "up\n")
        s = self.connect(dev, dev.api_listen)
        s.sendall(b"PING api\n")
        s.settimeout(2.0)
        try:
            got = s.recv(1024)
            self.fail("the connection to a refusing port of a young spark ended (%r) instead of waiting" % got)
        except socket.timeout:
            pass  # still open, waiting: the property
        self.assertEqual(gw.log_lines("does not answer"), [])

        # Now "the dev server" starts: the test listens on the spark's api port itself.
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((dev.host, dev.api_port))
        server.listen(4)
        server.settimeout(10)
        try:
            conn, _ = server.accept()
        except socket.timeout:
            self.fail("the gateway did not connect to the port within 10s of it answering (retry every 250ms)")
        with conn:
            conn.settimeout(10)
            got = b""
            while len(got) < len(b"PING api\n"):
                chunk = conn.recv(1024)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(got, b"PING api\n", "the client's first bytes did not reach the port intact")
            conn.sendall(b"PONG\n")
            s.settimeout(10)
            self.assertEqual(s.recv(1024), b"PONG\n")
        s.close()
        e = self.scrape()
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="spliced", port="api"), 1)
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="port_closed", port="api"), 0)
        self.assertEqual(dev.spark.starts(), 1)


class DevPortActivityTest(DevPortsTestCase):

    def test_a_held_http_connection_keeps_the_spark_awake_then_it_sleeps(self):
        # idle_timeout 3s and the reaper every 200ms (as in test_idle.py) so "past the idle
        # timeout" takes seconds, not hours.
        idle = 3.0
        dev, gw = self.start_dev(idle_timeout="3s", reaper_interval="200ms")
        spark = dev.spark
        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        s = self.connect(dev, dev.web_listen)
        s.sendall(request)
        status, headers, body = self.read_http_response(s)
        self.assertIn(" 200 ", status + " ")
        self.assertEqual(body, dev.page)
        self.assertEqual(spark.starts(), 1)

        # The property is "nothing happens during this span": more than twice idle_timeout with
        # the connection open and silent.
        time.sleep(2 * idle + 1.0)
        self.assertTrue(spark.sshd_running(), "the spark slept while a connection to its web port was open")
        self.assertEqual(self.spark_status(NAME)["state"], "running")
        self.assertEqual(self.spark_status(NAME)["open_connections"], 1)
        # The same connection still works end to end.
        s.sendall(request)
        status, _, body = self.read_http_response(s)
        self.assertIn(" 200 ", status + " ")
        self.assertEqual(body, dev.page)
        s.close()
        closed = time.monotonic()
        offset = gw.log_size()

        spark.wait_sshd_gone(15)
        slept_after = time.monotonic() - closed
        self.assertGreater(slept_after, idle / 2, "the spark slept %.2fs after the connection closed, before "
                           "idle_timeout (3s)" % slept_after)
        gw.wait_log("spark %s" % NAME, "sleep", since=offset, timeout=5)
        wait_until(lambda: not dev.http_server_pids(), 10,
                   lambda: "the dev server to stop with the spark (running: %s)"
                           % harness.describe_pids(dev.http_server_pids()))
        self.assertEqual(self.scrape().value("spark_gateway_sleeps_total", spark=NAME, reason="idle"), 1)
        self.assertEqual(spark.starts(), 1)

    def test_a_bare_connect_wakes_nothing_and_a_silent_client_wakes_after_wake_grace(self):
        dev, gw = self.start_dev()
        spark = dev.spark
        self.connect(dev, dev.web_listen).close()
        wait_until(lambda: self.scrape().get(TURNED_AWAY, spark=NAME, reason="closed_silent") == 1, 10,
                   "the bare connect counted as turned away (closed_silent)")
        self.assertEqual(spark.starts(), 0, "a bare connect to the web port woke the spark")
        self.assertEqual(self.spark_status(NAME)["state"], "sleeping")
        self.assertEqual(self.spark_status(NAME)["wakes"], 0)

        # A client that says nothing (a server-speaks-first protocol) wakes it after wake_grace
        # (1s, the default) and is then connected to the port.
        s = self.connect(dev, dev.web_listen)
        t0 = time.monotonic()
        wait_until(lambda: spark.starts() == 1, 15, "the silent client to wake the spark after wake_grace")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, "a silent client woke the spark before wake_grace")
        wait_until(lambda: self.scrape().get(CONNECTIONS, spark=NAME, outcome="spliced", port="web") == 1, 30,
                   "the silent client to be spliced to the web port")
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, body = self.read_http_response(s)
        self.assertEqual(body, dev.page)
        s.close()
        self.assertEqual(self.scrape().get(TURNED_AWAY, spark=NAME, reason="closed_silent"), 1)


class DevPortViewsTest(DevPortsTestCase):

    def test_api_cli_and_metrics_show_the_ports(self):
        dev, gw = self.start_dev(with_api=True)
        spark = dev.spark
        web = {"name": "web", "port": dev.web_port, "listen": "%s:%d" % (self.host, dev.web_listen),
               "url": "http://%s:%d/" % (self.host, dev.web_listen)}
        api = {"name": "api", "port": dev.api_port, "listen": "%s:%d" % (self.host, dev.api_listen),
               "url": "http://%s:%d/" % (self.host, dev.api_listen)}
        view = self.spark_status(NAME)
        self.assertEqual(view["ports"], [web, api])
        status, body = self.api("GET", "/api/v1/sparks")
        self.assertEqual(status, 200)
        self.assertEqual([s["ports"] for s in body["sparks"] if s["name"] == NAME], [[web, api]])

        # The CLI: a table, ssh first, with --admin and --token-file given explicitly.
        token_file = os.path.join(self.tmpdir, "admin-token")
        r = self.admin_cli("ports", NAME, "--admin", self.admin["url"], "--token-file", token_file)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = [line.split() for line in r.stdout.splitlines()]
        self.assertEqual(rows[0], ["NAME", "PORT", "LISTEN", "URL"])
        ssh_listen = "%s:%d" % (self.host, spark.listen_port)
        self.assertEqual(rows[1][:3], ["ssh", str(spark.target_port), ssh_listen], r.stdout)
        self.assertEqual(" ".join(rows[1][3:]), "ssh -p %d %s" % (spark.listen_port, self.host), r.stdout)
        self.assertEqual(rows[2], ["web", str(dev.web_port), web["listen"], "http://%s/" % web["listen"]])
        self.assertEqual(rows[3], ["api", str(dev.api_port), api["listen"], "http://%s/" % api["listen"]])
        self.assertEqual(len(rows), 4, r.stdout)
        r = self.admin_cli("ports", NAME, "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        ssh = {"name": "ssh", "port": spark.target_port, "listen": ssh_listen, "url": "ssh://" + ssh_listen}
        self.assertEqual(view["ssh"], "ssh -p %d %s" % (spark.listen_port, self.host))
        self.assertEqual(view["ssh_url"], "ssh://" + ssh_listen)
        self.assertEqual(json.loads(r.stdout), [ssh, web, api])  # ssh first, as in the table
        r = self.admin_cli("ports", "no-such-spark")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("no-such-spark", r.stderr)

        # Metrics: a curl (web) and an ssh; a raw request to know the web port's bytes exactly.
        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        s = self.connect(dev, dev.web_listen)
        s.sendall(request)
        s.settimeout(30)
        received = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        s.close()
        self.assertTrue(received.endswith(dev.page), received[:200])
        self.assert_ssh_ok(self.ssh(spark, "echo hi"), "hi\n")
        self.wait_value(BYTES, len(request), spark=NAME, direction="client_to_spark", port="web")
        self.wait_value(BYTES, len(received), spark=NAME, direction="spark_to_client", port="web")
        e = self.scrape()
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="spliced", port="web"), 1)
        self.assertEqual(e.value(CONNECTIONS, spark=NAME, outcome="spliced"), 1, "SSH's, without a port label")
        ssh_up = e.value(BYTES, spark=NAME, direction="client_to_spark")
        self.assertGreater(ssh_up, 0)
        self.assertEqual(e.value(WAKES, spark=NAME, outcome="success"), 1)
        self.assertEqual([l for n, l, v in e.samples if n == WAKES and "port" in l], [],
                         "wakes carry a port label")
        # Label sets: SSH's series have none, the dev ports' exactly spark, outcome|direction, port.
        for name, key in ((CONNECTIONS, "outcome"), (BYTES, "direction")):
            for _, labels, _ in e.find(name, spark=NAME):
                self.assertIn(set(labels), ({"spark", key}, {"spark", key, "port"}), labels)
                if "port" in labels:
                    self.assertIn(labels["port"], ("web", "api"), labels)
        rc, out, err = self.promtool_check(e.text)
        self.assertEqual(rc, 0, "promtool check metrics failed (rc %d):\nstdout: %s\nstderr: %s" % (rc, out, err))

    def test_a_spark_without_ports_lists_none(self):
        spark = self.add_spark(NAME)
        self.enable_admin()
        self.write_config()
        self.start_gateway()
        self.assertEqual(self.spark_status(NAME)["ports"], [])
        r = self.admin_cli("ports", NAME)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = [line.split() for line in r.stdout.splitlines()]
        self.assertEqual(len(rows), 2, r.stdout)
        self.assertEqual(rows[1][:3], ["ssh", str(spark.target_port), "%s:%d" % (self.host, spark.listen_port)])
        self.assertEqual([l for n, l, v in self.scrape().samples if "port" in l], [],
                         "a spark without dev ports has port-labelled series")


class DevPortConfigTest(DevPortsTestCase):

    def setUp(self):
        super().setUp()
        self.a = self.add_spark("brave-dolphin")
        self.b = self.add_spark("calm-otter")

    def port(self, name, port, listen=None):
        return {"name": name, "listen": listen or "%s:%d" % (self.host, harness.free_port(self.host)),
                "port": port}

    def check(self, ports_a=None, ports_b=None, **extra_a):
        cfg = self.config_dict()
        if ports_a is not None:
            cfg["sparks"][0]["ports"] = ports_a
        if ports_b is not None:
            cfg["sparks"][1]["ports"] = ports_b
        cfg["sparks"][0].update(extra_a)
        path = os.path.join(self.tmpdir, "check-%d.json" % time.monotonic_ns())
        harness.write_atomically(path, json.dumps(cfg, indent=2))
        return self.run_gateway_cli("check-config", path)

    def assert_refused(self, result, path, *words):
        self.assertEqual(result.returncode, 2, "check-config accepted it: stdout=%r stderr=%r"
                         % (result.stdout, result.stderr))
        lines = [line for line in result.stderr.splitlines() if path + ":" in line]
        self.assertTrue(lines, "no error names %s: %r" % (path, result.stderr))
        for w in words:
            self.assertIn(w, lines[0])

    def test_a_valid_ports_config_passes(self):
        r = self.check([self.port("web", 3000), self.port("api", 8080)], [self.port("web", 3000)],
                       port_grace="10s")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_bad_ports_configs_are_refused_with_their_path(self):
        web = self.port("web", 3000)
        self.assert_refused(self.check([self.port("ssh", 3000)]), "sparks[0].ports[0].name", "ssh")
        self.assert_refused(self.check([web, self.port("web", 3001)]), "sparks[0].ports[1].name", "web")
        self.assert_refused(self.check([web, self.port("api", 3000)]), "sparks[0].ports[1].port", "3000")
        # A listen address used elsewhere: the spark's own SSH listen, another spark's SSH
        # listen, another port's of the same spark, another spark's dev port (the later
        # claimant is the one refused).
        self.assert_refused(self.check([self.port("web", 3000, listen=self.a.entry()["listen"])]),
                            "sparks[0].ports[0].listen", self.a.entry()["listen"])
        self.assert_refused(self.check(None, [self.port("web", 3000, listen=self.a.entry()["listen"])]),
                            "sparks[1].ports[0].listen", self.a.entry()["listen"], "sparks[0]")
        self.assert_refused(self.check([web, self.port("api", 3001, listen=web["listen"])]),
                            "sparks[0].ports[1].listen", web["listen"])
        self.assert_refused(self.check([web], [self.port("web", 3000, listen=web["listen"])]),
                            "sparks[1].ports[0].listen", web["listen"])
        # The SSH target's port is no dev port.
        r = self.check([self.port("web", self.a.target_port)])
        self.assert_refused(r, "sparks[0].ports[0].port", str(self.a.target_port))
        # Shape: not an array, a missing port, a bad port, an unknown key, a bad name.
        self.assert_refused(self.check({"web": 3000}), "sparks[0].ports")
        no_port = self.port("web", 1)
        del no_port["port"]
        self.assert_refused(self.check([no_port]), "sparks[0].ports[0].port")
        self.assert_refused(self.check([self.port("web", 70000)]), "sparks[0].ports[0].port")
        self.assert_refused(self.check([dict(web, path="/")]), "sparks[0].ports[0].path")
        self.assert_refused(self.check([self.port("Web_1", 3000)]), "sparks[0].ports[0].name")
        # port_grace: a duration, in the spark and in defaults.
        self.assert_refused(self.check([web], port_grace="soon"), "sparks[0].port_grace")
        cfg = self.config_dict(defaults={"port_grace": "soon"})
        path = os.path.join(self.tmpdir, "defaults.json")
        harness.write_atomically(path, json.dumps(cfg))
        self.assert_refused(self.run_gateway_cli("check-config", path), "defaults.port_grace")

    def test_every_problem_is_listed_at_once(self):
        r = self.check([self.port("ssh", 3000), self.port("web", 3000)])
        self.assert_refused(r, "sparks[0].ports[0].name")
        self.assert_refused(r, "sparks[0].ports[1].port")


if __name__ == "__main__":
    harness.main()
