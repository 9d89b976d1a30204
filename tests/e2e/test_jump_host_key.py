#!/usr/bin/env python3
"""Issue 17, the jump host's key: the generated key is written whole or not at all (a full disk
once left a 0-byte key that failed every later start), a bad one is replaced with a warning that
says so, and a key that cannot be had is reported with the command that fixes it.

The full disk is a 16 KiB tmpfs this test mounts (root only, as CI runs; skipped otherwise) and
unmounts in its cleanup. Loopback only; every wait has a deadline."""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_port  # noqa: E402

KEY_NAME = "jump_host_ed25519_key"


def key_fingerprint(private_key_file):
    r = subprocess.run(["ssh-keygen", "-l", "-f", private_key_file], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return None
    return r.stdout.split()[1]  # "256 SHA256:... comment (ED25519)"


def served_fingerprint(host, port):
    """The ed25519 host key the server at host:port presents, as a SHA256 fingerprint."""
    r = subprocess.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(port), host],
                       capture_output=True, text=True, timeout=30)
    lines = [l for l in r.stdout.splitlines() if l and not l.startswith("#")]
    if not lines:
        return None
    r = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=lines[0] + "\n", capture_output=True, text=True,
                       timeout=30)
    return r.stdout.split()[1] if r.returncode == 0 else None


class JumpHostKey(harness.GatewayTestCase):

    def setUp(self):
        super().setUp()
        self.jump_port = free_port(self.host)

    def write_jump_config(self, state_dir="state", host_keys=None):
        cfg = self.config_dict(sparks=[])
        cfg["state_dir"] = state_dir
        cfg["jump"] = {"listen": "%s:%d" % (self.host, self.jump_port), "authorized_keys": self.jump_authorized_keys()}
        if host_keys:
            cfg["jump"]["host_keys"] = host_keys
        self.write_config_dict(cfg)

    def start_and_fail(self):
        gw = self.start_gateway(wait_ready=False)
        code = gw.wait_exit(30)
        self.assertNotEqual(code, 0, gw.log())
        return gw

    def tiny_tmpfs(self, name, size="16k"):
        """A tmpfs of `size` at tmpdir/name, unmounted at cleanup (after the gateways are gone)."""
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a tmpfs needs root")
        path = os.path.join(self.tmpdir, name)
        os.makedirs(path)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "spark-e2e-full", path],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise unittest.SkipTest("cannot mount a tmpfs here: %s" % r.stderr.strip())
        self.addCleanup(self._unmount, path)
        return path

    def _unmount(self, path):
        for gw in self.gateways:
            gw.kill()
        if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)

    @staticmethod
    def fill(path):
        """Fills the file system at `path`; returns the filler file."""
        filler = os.path.join(path, "filler")
        with open(filler, "wb", buffering=0) as f:
            for _ in range(10000):  # bounded: the file system is 16 KiB
                try:
                    f.write(b"\0" * 4096)
                except OSError:
                    break
        return filler

    def test_an_empty_generated_key_is_replaced_with_a_warning(self):
        key = os.path.join(self.state_dir, KEY_NAME)
        os.makedirs(self.state_dir)
        open(key, "w").close()  # what a full disk used to leave behind
        self.write_jump_config()
        gw = self.start_gateway()
        warning = gw.wait_log("jump: host key %s was unusable (it is empty" % key)
        self.assertIn("generated a new one in its place", warning)
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        fingerprint = key_fingerprint(key)
        self.assertIsNotNone(fingerprint, "the new key does not load")
        gw.wait_log("jump: host key ssh-ed25519 %s" % fingerprint)
        self.assertEqual(served_fingerprint(self.host, self.jump_port), fingerprint)
        # The next start keeps it.
        gw.stop()
        gw = self.start_gateway()
        self.assertEqual(key_fingerprint(key), fingerprint)
        self.assertEqual(gw.log_lines("was unusable"), [])

    def test_a_full_disk_leaves_no_key_behind_and_says_what_to_do(self):
        state = self.tiny_tmpfs("full-state")
        filler = self.fill(state)
        key = os.path.join(state, KEY_NAME)
        self.write_jump_config(state_dir=state)
        gw = self.start_and_fail()
        line = gw.wait_log("cannot write a new host key to %s" % key)
        self.assertIn("No space left on device", line)
        self.assertIn("free space in (or make writable) %s" % state, line)
        self.assertIn("ssh-keygen -t ed25519 -N '' -f %s" % key, line)
        self.assertFalse(os.path.exists(key), "a partial key was left behind")
        self.assertEqual(sorted(os.listdir(state)), ["filler"])

        # An empty key from an older gateway on the still-full disk: reported with the fix.
        open(key, "w").close()
        gw = self.start_and_fail()
        gw.wait_log("host key %s is unusable (it is empty" % key, "cannot write a new host key")
        self.assertEqual(os.path.getsize(key), 0)

        # Space again: the next start replaces it and serves.
        os.unlink(filler)
        gw = self.start_gateway()
        gw.wait_log("generated a new one in its place")
        self.assertEqual(served_fingerprint(self.host, self.jump_port), key_fingerprint(key))

    def test_a_configured_key_that_is_missing_is_reported_with_the_fix(self):
        missing = os.path.join(self.tmpdir, "secret", "ssh_host_ed25519_key")
        self.write_jump_config(host_keys=[missing])
        gw = self.start_and_fail()
        line = gw.wait_log("jump: cannot use host key %s: No such file or directory" % missing)
        self.assertIn("make one with `ssh-keygen -t ed25519 -N '' -f %s`" % missing, line)
        self.assertIn("docs/jump-host.md", line)
        # The command it names works, and then so does the gateway, with that key.
        os.makedirs(os.path.dirname(missing))
        command = re.search(r"`(ssh-keygen [^`]+)`", line).group(1)
        subprocess.run(command, shell=True, check=True, timeout=30, stdout=subprocess.DEVNULL)
        self.start_gateway()
        self.assertEqual(served_fingerprint(self.host, self.jump_port), key_fingerprint(missing))


if __name__ == "__main__":
    harness.main()
