#!/usr/bin/env python3
"""Issue 17, the log: strings from outside cannot forge log lines, and a flood of refused
connections is a line at once and then one count per 10 s, not a line per connection.
Loopback only; every wait has a deadline."""

import ctypes
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_port, wait_until  # noqa: E402

# The gateway's text format: every line starts with its timestamp and level.
LINE_START = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2} "
                        r"(trace|debug|info|warning|error|critical) ")
FORGED = "2030-01-01T00:00:00.000+00:00 info spark forged-fox: jump login from 6.6.6.6 (key SHA256:forged)"


def libssh_login_attempt(host, port, user, public_key_file, timeout=20):
    """Offers `public_key_file` for `user` (any bytes, newlines too: OpenSSH's client refuses such
    names itself) with libssh's client, through ctypes; returns libssh's answer (an int)."""
    lib = ctypes.CDLL("libssh.so.4")
    lib.ssh_new.restype = ctypes.c_void_p
    lib.ssh_options_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.ssh_connect.argtypes = [ctypes.c_void_p]
    lib.ssh_userauth_try_publickey.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    lib.ssh_pki_import_pubkey_file.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.ssh_key_free.argtypes = [ctypes.c_void_p]
    lib.ssh_disconnect.argtypes = [ctypes.c_void_p]
    lib.ssh_free.argtypes = [ctypes.c_void_p]
    lib.ssh_get_error.argtypes = [ctypes.c_void_p]
    lib.ssh_get_error.restype = ctypes.c_char_p
    host_opt, port_opt, user_opt, timeout_opt, process_config_opt = 0, 1, 4, 9, 38  # enum ssh_options_e
    session = lib.ssh_new()
    key = ctypes.c_void_p()
    try:
        no = ctypes.c_int(0)
        lib.ssh_options_set(session, process_config_opt, ctypes.byref(no))  # no ~/.ssh/config
        lib.ssh_options_set(session, host_opt, ctypes.c_char_p(host.encode()))
        p = ctypes.c_uint(port)
        lib.ssh_options_set(session, port_opt, ctypes.byref(p))
        lib.ssh_options_set(session, user_opt, ctypes.c_char_p(user.encode()))
        t = ctypes.c_long(timeout)
        lib.ssh_options_set(session, timeout_opt, ctypes.byref(t))
        if lib.ssh_connect(session) != 0:
            raise AssertionError("libssh could not connect: %s" % lib.ssh_get_error(session).decode())
        if lib.ssh_pki_import_pubkey_file(public_key_file.encode(), ctypes.byref(key)) != 0:
            raise AssertionError("cannot read %s" % public_key_file)
        return lib.ssh_userauth_try_publickey(session, None, key)
    finally:
        if key:
            lib.ssh_key_free(key)
        lib.ssh_disconnect(session)
        lib.ssh_free(session)


class HostileLogs(harness.GatewayTestCase):

    def write_config_with(self, sparks, spark_limits=None, jump=None):
        cfg = self.config_dict(sparks=sparks, spark_limits=spark_limits)
        if jump:
            cfg["jump"] = jump
        self.write_config_dict(cfg)

    def assert_every_line_is_a_log_line(self, gw):
        for line in gw.log().splitlines():
            self.assertRegex(line, LINE_START, "a line of the log is not one the gateway wrote")

    def test_a_user_name_with_a_newline_stays_on_one_line(self):
        spark = self.add_spark("brave-dolphin")
        jump_port = free_port(self.host)
        self.write_config_with([spark], jump={"listen": "%s:%d" % (self.host, jump_port),
                                              "authorized_keys": self.jump_authorized_keys()})
        gw = self.start_gateway()
        for login in ("x\n" + FORGED, "y\r\x1b[2K" + FORGED, "z\x1b]0;pwned\x07"):
            libssh_login_attempt(self.host, jump_port, login, self.user_key + ".pub")
        line = gw.wait_log("jump: login from", "no such spark", "\\n" + FORGED[:20])
        self.assertIn('as "x\\n2030-01-01T00:00:00.000+00:00 info spark forged-fox', line)
        gw.wait_log("jump: login from", 'as "y\\r\\x1b[2K2030-01-01T00:00:00.000+00:00')
        gw.wait_log("jump: login from", 'as "z\\x1b]0;pwned\\x07"')
        self.assertNotIn("\x1b", gw.log())
        self.assertNotIn("\r", gw.log())
        self.assertEqual([l for l in gw.log().splitlines() if l.startswith(FORGED[:30])], [],
                         "a forged line reached the log")
        self.assert_every_line_is_a_log_line(gw)

    def test_a_flood_of_refused_connections_is_one_line_and_a_count(self):
        spark = self.add_spark("brave-dolphin")
        self.write_config_with([spark], spark_limits={"brave-dolphin": {"max_connections": 1}})
        gw = self.start_gateway()
        session = self.ssh_background(spark, "echo started; sleep 120")
        session.wait_output("started", timeout=60)

        refused = 0
        started = time.monotonic()
        for _ in range(300):
            with socket.create_connection((self.host, spark.listen_port), timeout=10) as s:
                s.settimeout(10)
                if s.recv(1) == b"":  # closed at once: refused
                    refused += 1
        self.assertEqual(refused, 300)
        flood_took = time.monotonic() - started

        first = gw.wait_log("spark brave-dolphin: refusing connection from 127.", timeout=5)
        self.assertIn(": 1 connection open (sparks[].max_connections 1)", first)
        lines = gw.log_lines("brave-dolphin", "refus")
        self.assertLessEqual(len(lines), 2 + int(flood_took / 10),
                             "%d lines for 300 refusals:\n%s" % (len(lines), "\n".join(lines[:5])))

        def counted():
            return sum(int(re.search(r"refused ([\d,]+) connections", line).group(1).replace(",", ""))
                       for line in gw.log_lines("spark brave-dolphin: refused "))
        # Then a count per 10 s; every refusal is in one (the first window's count includes the
        # line written at once).
        gw.wait_log("spark brave-dolphin: refused ", " connections in the last 10s, last from 127.", timeout=25)
        wait_until(lambda: counted() >= 300, 25, lambda: "counts adding up to 300 (so far %d)" % counted())
        self.assertEqual(counted(), 300)
        self.assertLessEqual(len(gw.log_lines("brave-dolphin", "refus")), 2 + int((time.monotonic() - started) / 10))
        self.assertTrue(session.running(), "the open session was disturbed by the flood")

    def test_a_flood_of_refused_jump_logins_is_one_line_and_a_count(self):
        jump_port = free_port(self.host)
        self.write_config_with([], jump={"listen": "%s:%d" % (self.host, jump_port),
                                         "authorized_keys": self.jump_authorized_keys(),
                                         "max_sessions": 1})
        gw = self.start_gateway()
        holder = socket.create_connection((self.host, jump_port), timeout=10)  # takes the one session
        self.addCleanup(holder.close)
        started = time.monotonic()
        for _ in range(200):
            with socket.create_connection((self.host, jump_port), timeout=10) as s:
                s.settimeout(10)
                while s.recv(4096):
                    pass
        first = gw.wait_log("jump: refusing connection from 127.", ": max_sessions (1) reached", timeout=5)
        self.assertNotIn("refused", first)
        lines = gw.log_lines("jump: refus")
        self.assertLessEqual(len(lines), 2 + int((time.monotonic() - started) / 10), "\n".join(lines[:5]))
        summary = gw.wait_log("jump: refused ", " connections in the last 10s, last from 127.", timeout=25)
        self.assertIn(": max_sessions (1) reached", summary)


if __name__ == "__main__":
    harness.main()
