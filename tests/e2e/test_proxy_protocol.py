#!/usr/bin/env python3
"""The real client behind a proxy (issue 19): a real HAProxy in front of the gateway (mode tcp,
send-proxy-v2 and send-proxy) passes the client's address in a PROXY header, and the gateway logs
and wakes for that client, not HAProxy; HAProxy's health checks (LOCAL) wake nothing; a header
from an address not in trusted_proxies, and a missing one where required, are refused."""
import os
import shutil
import socket
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_port, wait_until  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
TURNED_AWAY = "spark_gateway_connections_turned_away_total"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(source, source_port, destination, destination_port):
    """A PROXY v2 PROXY-command header for a TCP over IPv4 connection."""
    addresses = socket.inet_aton(source) + socket.inet_aton(destination) + struct.pack(
        "!HH", source_port, destination_port)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def sibling(host, last):
    """Another loopback address in the test's own 127.x.y.0/24: "127.1.2.3", 77 -> "127.1.2.77"."""
    return host.rsplit(".", 1)[0] + "." + str(last)


@unittest.skipUnless(os.path.exists(HAPROXY), "haproxy is not installed")
class ProxyProtocol(harness.GatewayTestCase):

    def setUp(self):
        super().setUp()
        # Three loopback addresses of this test: the ssh client's, HAProxy's own when it
        # connects to the gateway (the trusted proxy), and one nobody trusts.
        last = int(self.host.rsplit(".", 1)[1])
        self.client_addr = sibling(self.host, (last + 1) % 250 + 2)
        self.proxy_addr = sibling(self.host, (last + 2) % 250 + 2)
        self.stranger_addr = sibling(self.host, (last + 3) % 250 + 2)

    def start(self, proxy_protocol, send="send-proxy-v2", check=False):
        spark = self.add_spark("brave-dolphin")
        self.enable_admin()
        cfg = self.config_dict(spark_limits={"brave-dolphin": {"proxy_protocol": proxy_protocol}})
        cfg["trusted_proxies"] = [self.proxy_addr + "/32"]
        self.write_config_dict(cfg)
        gw = self.start_gateway()
        self.front_port = free_port(self.host)
        checks = " check inter 300ms" if check else ""
        config = os.path.join(self.tmpdir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write("\n".join([
                "global",
                "  maxconn 100",
                "defaults",
                "  mode tcp",
                "  timeout connect 5s",
                "  timeout client 60s",
                "  timeout server 60s",
                "frontend ssh",
                "  bind %s:%d" % (self.host, self.front_port),
                "  default_backend gateway",
                "backend gateway",
                "  server gw %s:%d %s source %s%s" % (self.host, spark.listen_port, send, self.proxy_addr, checks),
                ""]))
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", config], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        self.addCleanup(self._stop, haproxy)
        wait_until(lambda: self._listening(self.host, self.front_port) or haproxy.poll() is not None, 20,
                   "haproxy to listen")
        if haproxy.poll() is not None:
            self.fail("haproxy exited: %s" % haproxy.stderr.read().decode())
        return spark, gw

    @staticmethod
    def _stop(proc):
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()

    @staticmethod
    def _listening(host, port):
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    def ssh_through_haproxy(self, spark, command):
        return self.ssh(spark, command, port=self.front_port, extra=("-b", self.client_addr))

    def turned_away(self, reason):
        return self.metric(TURNED_AWAY, spark="brave-dolphin", reason=reason)

    def assert_client_named(self, gw):
        gw.wait_log("spark brave-dolphin: connection from %s:" % self.client_addr)
        gw.wait_log("waking for a connection from %s" % self.client_addr)
        self.assertEqual(gw.log_lines("connection from %s:" % self.proxy_addr), [],
                         "the gateway named the proxy, not the client")
        self.assertEqual(self.spark_status("brave-dolphin")["last_client"], self.client_addr)

    def test_haproxy_send_proxy_v2_names_the_client(self):
        spark, gw = self.start("required")
        r = self.ssh_through_haproxy(spark, "echo through haproxy")
        self.assert_ssh_ok(r, "through haproxy\n")
        self.assertEqual(spark.starts(), 1)
        self.assert_client_named(gw)

    def test_haproxy_send_proxy_v1_names_the_client(self):
        spark, gw = self.start("required", send="send-proxy")
        r = self.ssh_through_haproxy(spark, "echo v1")
        self.assert_ssh_ok(r, "v1\n")
        self.assert_client_named(gw)

    def test_haproxy_health_checks_wake_nothing(self):
        spark, gw = self.start("required", check=True)
        wait_until(lambda: (self.turned_away("proxy_local") or 0) >= 3, 20, "three LOCAL health checks")
        self.assertEqual(spark.starts(), 0, "a health check woke the spark")
        # The spark still wakes for a person.
        self.assert_ssh_ok(self.ssh_through_haproxy(spark, "true"))
        self.assertEqual(spark.starts(), 1)

    def test_a_header_from_an_untrusted_address_is_refused(self):
        spark, gw = self.start("optional")
        s = socket.create_connection((self.host, spark.listen_port), timeout=10,
                                     source_address=(self.stranger_addr, 0))
        # It claims to be someone else.
        s.sendall(v2_header("203.0.113.9", 40000, self.host, spark.listen_port) + b"SSH-2.0-liar\r\n")
        s.settimeout(10)
        try:
            self.assertEqual(s.recv(100), b"", "the gateway answered an untrusted PROXY header")
        except ConnectionResetError:
            pass
        s.close()
        wait_until(lambda: self.turned_away("proxy_refused") == 1, 10, "the untrusted header counted")
        gw.wait_log("turned away a connection from %s" % self.stranger_addr, "not in trusted_proxies")
        self.assertEqual(gw.log_lines("203.0.113.9"), [], "the gateway believed an untrusted header")
        self.assertEqual(spark.starts(), 0)
        # With "optional", the same address without a header is an ordinary client.
        self.assert_ssh_ok(self.ssh(spark, "echo plain", extra=("-b", self.stranger_addr)), "plain\n")

    def test_a_missing_header_is_refused_where_required(self):
        spark, gw = self.start("required")
        # Straight to the gateway, not through HAProxy: from the trusted proxy's own address
        # without a header, and from any other address.
        for source in (self.proxy_addr, self.stranger_addr):
            r = self.ssh(spark, "true", extra=("-b", source))
            self.assertNotEqual(r.returncode, 0, "ssh without a PROXY header got through from %s" % source)
        wait_until(lambda: self.turned_away("proxy_refused") == 2, 10, "both counted as proxy_refused")
        self.assertEqual(spark.starts(), 0)


if __name__ == "__main__":
    harness.main()
