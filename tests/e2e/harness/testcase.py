"""GatewayTestCase, the base class of every e2e test: a fresh environment per test (temp dir,
keys, loopback address) and a teardown that always runs. The test-facing methods come from the
mixins of the other modules (sshd, gateway, metrics, kubernetes)."""

import getpass
import os
import subprocess
import sys
import unittest

from .gateway import GatewayMixin, gateway_bin
from .kubernetes import KubernetesDoubleMixin, KubernetesMixin
from .metrics import MetricsMixin
from .processes import TAG_VAR, kill_tagged, make_tmpdir, random_loopback_host, remove_tmpdir, tagged_pids
from .sshd import SshMixin, make_keys


class GatewayTestCase(SshMixin, GatewayMixin, MetricsMixin, KubernetesDoubleMixin, unittest.TestCase):
    """Base class: a fresh environment (temp dir, keys, loopback address) per test."""

    NEEDS_GATEWAY = True  # False only for the harness self-check

    def setUp(self):
        super().setUp()
        self.bin = gateway_bin()
        if self.NEEDS_GATEWAY and not (os.path.isfile(self.bin) and os.access(self.bin, os.X_OK)):
            self.fail("spark-gateway binary not found or not executable at %s "
                      "(set SPARK_GATEWAY_BIN)" % self.bin)
        self.tmpdir = make_tmpdir()
        self.addCleanup(self._cleanup)  # runs even if the rest of setUp fails
        self.host = random_loopback_host()
        self.user = getpass.getuser()
        self.gateways = []
        self.background = []
        self.sparks = []
        self.host_key, self.user_key, self.authorized_keys = make_keys(self.tmpdir)
        self.config_path = os.path.join(self.tmpdir, "config.json")
        self.state_dir = os.path.join(self.tmpdir, "state")
        self.admin = None  # set by enable_admin()

    # -- environment ---------------------------------------------------------------------

    def child_env(self):
        env = dict(os.environ)
        env.pop("SSH_AUTH_SOCK", None)
        env[TAG_VAR] = self.tmpdir
        return env

    def popen(self, args, **kw):
        kw.setdefault("env", self.child_env())
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(args, **kw)
        self.addCleanup(self._reap, p)
        return p

    @staticmethod
    def _reap(p):
        if p.poll() is None:
            p.kill()
        try:
            p.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            pass

    # -- teardown ------------------------------------------------------------------------

    def leftover_pids(self):
        return tagged_pids(self.tmpdir)

    def kill_leftovers(self):
        """SIGKILLs every process started from this test's temp dir; bounded."""
        kill_tagged(self.tmpdir)

    def _test_failed(self):
        """True if the test (or its setUp) failed so far. Called from a cleanup, where
        outcome.success cannot be trusted (the cleanup's own executor resets it)."""
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        errors = getattr(outcome, "errors", None)  # Python <= 3.10 collects them here
        if errors:
            return any(exc_info is not None for _, exc_info in errors)
        result = getattr(outcome, "result", None)  # Python >= 3.11 reports them at once
        if result is None:
            return False
        return any(getattr(test, "test_case", test) is self
                   for test, _ in list(result.failures) + list(result.errors))

    def _cleanup(self):
        failed = self._test_failed()
        for gw in self.gateways:
            gw.kill()
        for p in self.background:
            p.kill()
        self.kill_leftovers()
        if failed:
            for gw in self.gateways:
                gw.dump_log(self.id())
            for p in self.background:
                sys.stderr.write("==== background %r: rc=%s\nstdout=%r\nstderr=%r\n"
                                 % (p.args[-1], p.proc.returncode, p.stdout, p.stderr))
        remove_tmpdir(self.tmpdir)


class KubernetesTestCase(KubernetesMixin, GatewayTestCase):
    """A GatewayTestCase whose sparks are Deployments in the Kubernetes API double."""
