#!/usr/bin/env python3
"""Wake only for people (issue 19): bare TCP connects, a port scan and HTTP bytes on the SSH
port leave a sleeping spark asleep (counted as turned away); a real ssh wakes it; a client that
waits silently for the server's banner wakes it after wake_grace; wake_on "connect" keeps the
old behaviour; a running spark's silent client gets the banner at once."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

TURNED_AWAY = "spark_gateway_connections_turned_away_total"


class WakeForPeople(harness.GatewayTestCase):

    def start(self, defaults=None, **spark_kw):
        spark = self.add_spark("brave-dolphin", **spark_kw)
        self.enable_admin()
        self.write_config(defaults=defaults)
        gw = self.start_gateway()
        return spark, gw

    def connect(self, spark):
        """A TCP connection from the test's own loopback address (so logs can name it)."""
        return socket.create_connection((spark.host, spark.listen_port), timeout=10,
                                        source_address=(spark.host, 0))

    def turned_away(self, reason):
        return self.metric(TURNED_AWAY, spark="brave-dolphin", reason=reason)

    def assert_closed_by_gateway(self, sock, within=10):
        """The gateway closes `sock` (EOF or a reset) within `within` seconds."""
        sock.settimeout(within)
        try:
            self.assertEqual(sock.recv(1024), b"", "the gateway sent bytes to a turned-away client")
        except ConnectionResetError:
            pass

    def test_bare_connects_and_a_port_scan_wake_nothing_and_ssh_still_does(self):
        spark, gw = self.start()
        # Five bare connects that close at once, then a scan: connect and close, 50 times (what
        # `nc -z` does), bounded.
        for _ in range(5):
            self.connect(spark).close()
        for _ in range(50):
            self.connect(spark).close()
        wait_until(lambda: self.turned_away("closed_silent") == 55, 20,
                   "55 connections counted as turned away (closed_silent)")
        self.assertEqual(spark.starts(), 0, "a bare connect woke the spark")
        self.assertEqual(self.spark_status("brave-dolphin")["state"], "sleeping")
        self.assertEqual(self.spark_status("brave-dolphin")["turned_away"], 55)
        # One line, then a count, not 55 lines.
        lines = gw.log_lines("turned away a connection from")
        self.assertEqual(len(lines), 1, "\n".join(lines))
        self.assertIn("closed before sending a byte", lines[0])
        self.assertIn(spark.host, lines[0])

        # A person's ssh wakes it as before.
        r = self.ssh(spark, "echo hello")
        self.assert_ssh_ok(r, "hello\n")
        self.assertEqual(spark.starts(), 1)
        self.assertEqual(self.turned_away("closed_silent"), 55, "the ssh was counted as a probe")
        # The status command shows the count too.
        out = self.admin_cli("status")
        self.assertEqual(out.returncode, 0, out.stderr)
        header, row = out.stdout.splitlines()[0], out.stdout.splitlines()[1]
        self.assertIn("TURNED AWAY", header)
        # Its column (the table is aligned: a value starts where its heading does).
        self.assertEqual(row[header.index("TURNED AWAY"):].split()[0], "55", out.stdout)

    def test_http_bytes_on_the_ssh_port_are_refused_without_a_wake(self):
        spark, gw = self.start()
        s = self.connect(spark)
        s.sendall(b"GET / HTTP/1.1\r\nHost: brave-dolphin\r\n\r\n")
        self.assert_closed_by_gateway(s)
        s.close()
        wait_until(lambda: self.turned_away("not_ssh") == 1, 10, "the HTTP client counted as not_ssh")
        gw.wait_log("turned away a connection from", 'not an SSH client: starts with "GET / HTTP/1.1')
        self.assertEqual(spark.starts(), 0, "HTTP bytes woke the spark")

    def test_a_silent_client_wakes_the_spark_after_wake_grace_and_gets_its_banner(self):
        spark, _ = self.start(defaults={"wake_grace": "1s"})
        s = self.connect(spark)
        t0 = time.monotonic()
        # The client that waits for the server to speak first: the spark wakes after the grace,
        # and its sshd's banner reaches the client.
        s.settimeout(30)
        banner = b""
        while b"\n" not in banner:
            chunk = s.recv(256)
            self.assertTrue(chunk, "the gateway closed a silent client instead of waking its spark")
            banner += chunk
        waited = time.monotonic() - t0
        s.close()
        self.assertTrue(banner.startswith(b"SSH-2.0-OpenSSH"), banner)
        self.assertEqual(spark.starts(), 1)
        self.assertGreaterEqual(waited, 1.0, "the spark woke before wake_grace for a silent client")
        self.assertIsNone(self.turned_away("closed_silent") or None)

    def test_the_first_bytes_reach_the_spark_unchanged(self):
        # A hand-written SSH client line, sent in two pieces: the gateway reads it to decide, and
        # sshd must still get all of it. sshd answers a client's identification with its key
        # exchange (KEXINIT), which follows its own banner: bytes after the banner line prove it
        # read ours.
        spark, _ = self.start()
        s = self.connect(spark)
        s.sendall(b"SSH-2.0-")
        time.sleep(0.05)  # two segments on purpose; not a wait for anything
        s.sendall(b"handmade_1.0\r\n")
        s.settimeout(30)
        got = b""
        while b"\n" not in got or len(got) <= got.index(b"\n") + 1:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "sshd closed the connection: it did not get the client's line intact (%r)" % got)
            got += chunk
        s.close()
        self.assertTrue(got.startswith(b"SSH-2.0-OpenSSH"), got)
        self.assertEqual(spark.starts(), 1)

    def test_wake_on_connect_wakes_at_the_connect(self):
        spark, _ = self.start(defaults={"wake_on": "connect"})
        self.connect(spark).close()
        wait_until(lambda: spark.starts() == 1, 20, "the bare connect to wake the spark (wake_on connect)")
        self.assertIsNone(self.turned_away("closed_silent") or None)

    def test_a_running_sparks_silent_client_gets_the_banner_at_once(self):
        # wake_grace 30s: a client of a running spark that waits for the banner must not wait it.
        spark, _ = self.start(defaults={"wake_grace": "30s"})
        self.assert_ssh_ok(self.ssh(spark, "true"))
        s = self.connect(spark)
        s.settimeout(10)
        banner = s.recv(256)
        s.close()
        self.assertTrue(banner.startswith(b"SSH-2.0-"), banner)


if __name__ == "__main__":
    harness.main()
