#!/usr/bin/env python3
"""Self-check of the e2e harness and of OpenSSH on this machine, without the gateway.

If these fail, the other e2e tests cannot tell anything about the gateway: fix the machine
(openssh-server/openssh-client installed, loopback usable) first.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class HarnessSelfCheck(harness.GatewayTestCase):
    NEEDS_GATEWAY = False

    def test_sshd_direct(self):
        spark = self.add_spark("direct-check")
        self.assertFalse(spark.sshd_running())
        sshd = spark.start_sshd_directly()
        harness.wait_until(lambda: not harness.tcp_connect_refused(self.host, spark.target_port)
                           or sshd.poll() is not None,
                           10, "sshd to listen on %s:%d" % (self.host, spark.target_port))
        if sshd.poll() is not None:
            self.fail("sshd exited: %s" % sshd.stderr.read().decode())
        self.assertTrue(spark.sshd_running())
        r = self.ssh(spark, "echo hello", port=spark.target_port)
        self.assert_ssh_ok(r, "hello\n")
        sshd.terminate()
        sshd.wait(timeout=10)
        spark.wait_sshd_gone(5)

    def test_wait_until_fails_with_message(self):
        with self.assertRaisesRegex(AssertionError, "waiting for the impossible"):
            harness.wait_until(lambda: False, 0.1, "the impossible")


if __name__ == "__main__":
    harness.main()
