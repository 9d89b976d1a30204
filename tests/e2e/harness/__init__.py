"""End-to-end test harness for spark-gateway.

Runs the real gateway binary against real OpenSSH (Debian's /usr/sbin/sshd and ssh/scp clients),
on loopback only. Every test gets:

  * its own temporary directory holding keys, sshd configs, the gateway config and logs;
  * its own random 127.x.y.z address, so test processes running in parallel (CTest -j) cannot
    collide on ports;
  * a teardown that always kills the gateway and every process it or the test left behind
    (found through /proc, by the temp dir path in the command line or by an environment tag
    that every process started by the test inherits), and that dumps the gateway log when the
    test failed. SPARK_E2E_KEEP=1 keeps the temp dir; SPARK_GATEWAY_BIN names the binary.

Nothing here sleeps to hide a race: waits go through wait_until(), which polls a condition with a
deadline and fails with a message naming what it waited for. Every loop is bounded.

Modules, by job (this file re-exports what tests use, so `import harness` is enough):

  processes   wait_until, /proc scanning (find_pids), killing a test's leftovers, temp dirs,
              loopback addresses and free ports, BackgroundProcess, EchoServer
  files       random payloads and their hashes, atomic writes
  sshd        keys, Spark (a real sshd per spark), the ssh/scp clients (SshMixin)
  gateway     the binary (SPARK_GATEWAY_BIN), Gateway (a running `serve`, its log), config
              writing, admin API and CLI (GatewayMixin)
  metrics     the one /metrics scraper: Exposition (parsed text format), scrape(url),
              metric(name, **labels) -> value or None when the series is absent (MetricsMixin)
  kubernetes  the Kubernetes API double and fake kubelet (KubernetesDoubleMixin); a gateway with
              Deployments as sparks (KubernetesMixin, KubernetesTestCase); several gateway
              replicas against one cluster (KubernetesMixin.start_replica() -> Replica)
  testcase    GatewayTestCase: the per-test environment and teardown, with the mixins above;
              KubernetesTestCase

Standard library only.
"""

import unittest

from . import metrics
from .files import count_lines, sha256_file, write_atomically, write_random_file
from .gateway import DEFAULT_GATEWAY_BIN, READY_TIMEOUT, REPO_ROOT, Gateway, gateway_bin
from .kubernetes import (PREFIX, TARGET_PORT, K8sDoubleHandle, Port, Replica, import_k8s_double, parse_rfc3339,
                         rfc3339)
from .metrics import Exposition
from .processes import (SSH_TIMEOUT, TAG_VAR, BackgroundProcess, EchoServer, describe_pids, find_pids,
                        free_port, is_alive, proc_cmdline, proc_fd_count, proc_state, proc_thread_count,
                        random_loopback_host, tcp_connect_refused, wait_until)
from .sshd import SSHD, Spark
from .testcase import GatewayTestCase, KubernetesTestCase

__all__ = [
    "BackgroundProcess", "DEFAULT_GATEWAY_BIN", "EchoServer", "Exposition", "Gateway", "GatewayTestCase",
    "K8sDoubleHandle", "KubernetesTestCase", "PREFIX", "Port", "READY_TIMEOUT", "REPO_ROOT", "Replica",
    "SSHD", "SSH_TIMEOUT", "Spark", "TAG_VAR", "TARGET_PORT", "count_lines", "describe_pids", "find_pids",
    "free_port", "gateway_bin", "import_k8s_double", "is_alive", "main", "metrics", "parse_rfc3339",
    "proc_cmdline", "proc_fd_count", "proc_state", "proc_thread_count", "random_loopback_host", "rfc3339",
    "sha256_file", "tcp_connect_refused", "wait_until", "write_atomically", "write_random_file",
]


def main():
    unittest.main(verbosity=2)
