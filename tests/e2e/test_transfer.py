#!/usr/bin/env python3
"""Bytes go through the gateway untouched: a 64 MiB stream, scp both ways, and an ssh -L
port forward (which multiplexes extra channels over the spliced connection)."""
import hashlib
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import wait_until  # noqa: E402

BIG = 64 * 1024 * 1024


class TransferTest(harness.GatewayTestCase):
    """On the default data plane: a data thread per core (two workers on a two-core machine)."""
    LIMITS = None

    def setUp(self):
        super().setUp()
        self.spark = self.add_spark("brave-dolphin")
        self.write_config(limits=self.LIMITS)
        self.gw = self.start_gateway()

    def test_64mib_stream_through_sha256sum(self):
        src = os.path.join(self.tmpdir, "random.bin")
        digest = harness.write_random_file(src, BIG)
        with open(src, "rb") as f:
            r = self.ssh(self.spark, "sha256sum", stdin=f, timeout=300)
        self.assert_ssh_ok(r)
        self.assertEqual(r.stdout.split()[0], digest,
                         "bytes changed on the way through the gateway")
        self.assertEqual(self.spark.starts(), 1)

    def test_64mib_stream_back_to_client(self):
        # The other direction: the remote side sends, the client hashes.
        src = os.path.join(self.tmpdir, "random.bin")
        digest = harness.write_random_file(src, BIG)
        r = self.ssh(self.spark, "cat %s" % src, timeout=300, text=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout), BIG)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), digest)

    def test_scp_upload_and_download(self):
        src = os.path.join(self.tmpdir, "upload.bin")
        remote = os.path.join(self.tmpdir, "remote.bin")
        back = os.path.join(self.tmpdir, "download.bin")
        digest = harness.write_random_file(src, 8 * 1024 * 1024 + 12345)

        r = self.scp(self.spark, src, ":" + remote, timeout=180)
        self.assertEqual(r.returncode, 0, "scp upload failed: %s" % r.stderr)
        self.assertEqual(harness.sha256_file(remote), digest, "upload corrupted")

        r = self.scp(self.spark, ":" + remote, back, timeout=180)
        self.assertEqual(r.returncode, 0, "scp download failed: %s" % r.stderr)
        self.assertEqual(harness.sha256_file(back), digest, "download corrupted")
        self.assertEqual(self.spark.starts(), 1)

    def test_local_port_forward(self):
        echo = harness.EchoServer(self.host)
        self.addCleanup(echo.close)
        fwd_port = harness.free_port(self.host)
        ssh = self.ssh_background(
            self.spark, None,
            extra=["-N", "-o", "ExitOnForwardFailure=yes",
                   "-L", "%s:%d:%s:%d" % (self.host, fwd_port, echo.host, echo.port)])

        def connect():
            if not ssh.running():
                raise AssertionError("ssh -L exited with %s: %s"
                                     % (ssh.proc.returncode, ssh.stderr))
            try:
                return socket.create_connection((self.host, fwd_port), timeout=5)
            except ConnectionRefusedError:
                return None
        conn = wait_until(connect, 60, "the ssh -L forward port to accept connections")
        with conn:
            conn.settimeout(30)
            payload = os.urandom(256 * 1024)
            conn.sendall(payload)
            got = bytearray()
            deadline = time.monotonic() + 30
            while len(got) < len(payload) and time.monotonic() < deadline:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got.extend(chunk)
            self.assertEqual(bytes(got), payload, "forwarded bytes came back different")
        ssh.kill()
        self.assertEqual(self.spark.starts(), 1)


class TransferOnTheMainThreadTest(TransferTest):
    """The same transfers with `limits.data_threads: 0`: the main io_context splices too."""
    LIMITS = {"data_threads": 0}

    def setUp(self):
        super().setUp()
        self.gw.wait_log("0 data threads", timeout=5)


class DataThreadsTest(harness.GatewayTestCase):

    def test_parallel_sessions_over_two_data_threads(self):
        # Connections are dealt out to the data workers in turn: four at once use both, each
        # with its own pipes and buffer. Every byte must still arrive where it was sent.
        spark = self.add_spark("brave-dolphin")
        self.write_config(limits={"data_threads": 2})
        gw = self.start_gateway()
        gw.wait_log("2 data threads", timeout=5)

        def thread_names():
            names = set()
            for task in os.listdir("/proc/%d/task" % gw.pid):
                try:
                    with open("/proc/%d/task/%s/comm" % (gw.pid, task)) as f:
                        names.add(f.read().strip())
                except OSError:  # a thread that ended meanwhile
                    pass
            return names
        # Each worker names itself once it runs, which may be after the "ready" line (it was
        # read at once and failed under ASan): wait for the names themselves.
        wait_until(lambda: {"data-0", "data-1"} <= thread_names(), 10,
                   lambda: "threads data-0 and data-1 (gateway threads: %s)" % sorted(thread_names()))

        sessions = []
        for i in range(4):
            src = os.path.join(self.tmpdir, "parallel-%d.bin" % i)
            digest = harness.write_random_file(src, 16 * 1024 * 1024)
            f = open(src, "rb")
            self.addCleanup(f.close)
            sessions.append((self.ssh_background(spark, "sha256sum", stdin=f), digest))
        for ssh, digest in sessions:
            self.assertEqual(ssh.wait(timeout=300), 0, ssh.stderr)
            self.assertEqual(ssh.stdout.split()[0], digest, "bytes changed on a data thread")
        self.assertEqual(spark.starts(), 1)

    def test_bad_data_threads_is_refused_with_its_range(self):
        self.add_spark("brave-dolphin")
        self.write_config(limits={"data_threads": -1})
        r = self.run_gateway_cli("check-config", self.config_path)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("limits.data_threads: expected a whole number from 0 to 64", r.stderr + r.stdout)


if __name__ == "__main__":
    harness.main()
