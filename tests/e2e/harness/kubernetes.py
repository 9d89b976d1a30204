"""The Kubernetes API double (tests/k8s_double, docs/kubernetes-api-double.md) for the kubernetes
backend's tests: KubernetesDoubleMixin.start_k8s_double() (part of GatewayTestCase) runs it and a
fake kubelet whose pods are real sshds of this test."""

import os
import sys

from .processes import TAG_VAR

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def import_k8s_double():
    """The tests/k8s_double package (puts tests/ on sys.path)."""
    if TESTS_DIR not in sys.path:
        sys.path.insert(0, TESTS_DIR)
    import k8s_double
    return k8s_double


class K8sDoubleHandle:
    """What start_k8s_double() returns.

    api         the KubeApiDouble (objects, request log, faults, tokens)
    kubelet     the FakeKubelet (None with kubelet=False)
    url         e.g. http://127.4.5.6:41234 (https://... with tls=True)
    token       the service account token; token_file holds it (rewrite it with
                api.rotate_token(token_file))
    ca_file     the CA bundle over HTTPS, else None
    namespace   the spark namespace
    client()    a k8s_double.ApiClient for this double (token and CA set)
    kubeconfig(path=None, **kw)  writes a kubeconfig (api.write_kubeconfig) and returns its path
    """

    def __init__(self, env, api, kubelet, token_file):
        self.env, self.api, self.kubelet, self.token_file = env, api, kubelet, token_file
        self.url, self.namespace = api.url, api.namespace

    @property
    def token(self):
        return self.api.token

    @property
    def ca_file(self):
        return self.api.ca_file

    def client(self, token=None):
        k8s = import_k8s_double()
        return k8s.ApiClient(self.api.url, token=self.api.token if token is None else token,
                             ca_file=self.api.ca_file)

    def kubeconfig(self, path=None, **kw):
        return self.api.write_kubeconfig(path or os.path.join(self.env.tmpdir, "kubeconfig"), **kw)


class KubernetesDoubleMixin:
    """start_k8s_double(), for GatewayTestCase. Uses the test's host, tmpdir, host_key,
    authorized_keys, child_env() and _test_failed()."""

    def start_k8s_double(self, namespace="spark", tls=False, kubelet=True, bookmark_interval=1.0,
                         start_delay=0.3, **api_kw):
        """Starts the Kubernetes API double on this test's loopback address (a free port) and, with
        kubelet=True, a fake kubelet whose pods run this test's sshd (host key, authorized_keys,
        environment tag), each on its own 127.x.y.z. Both are stopped at cleanup, before the
        harness kills leftovers; on failure the double's request log is dumped."""
        k8s = import_k8s_double()
        api = k8s.KubeApiDouble(host=self.host, port=0, namespace=namespace, tls=tls,
                                bookmark_interval=bookmark_interval,
                                workdir=os.path.join(self.tmpdir, "k8s-api"), **api_kw)
        api.start()
        self.addCleanup(api.stop)
        self.addCleanup(self._dump_k8s_requests, api)
        token_file = api.write_token_file(os.path.join(self.tmpdir, "k8s-token"))
        kl = None
        if kubelet:
            launcher = k8s.SshdLauncher(os.path.join(self.tmpdir, "k8s-pods"), self.host_key,
                                        self.authorized_keys, env=self.child_env(), tag_var=TAG_VAR,
                                        tag_value=self.tmpdir)
            kl = k8s.FakeKubelet(api, ip_allocator=k8s.LoopbackIpAllocator(avoid=(self.host,)),
                                 sshd_launcher=launcher, start_delay=start_delay)
            kl.start()
            self.addCleanup(kl.stop)
        return K8sDoubleHandle(self, api, kl, token_file)

    def _dump_k8s_requests(self, api):
        if not self._test_failed():
            return
        recs = api.requests()
        lines = ["%s %s%s -> %s%s" % (r.method, r.path,
                                      "?" + "&".join("%s=%s" % (k, v[0]) for k, v in r.query.items()) if r.query else "",
                                      r.status, " [fault: %s]" % r.fault if r.fault else "")
                 for r in recs[-200:]]
        sys.stderr.write("\n==== %s: Kubernetes API double requests (last %d of %d) ====\n%s\n==== end ====\n"
                         % (self.id(), len(lines), len(recs), "\n".join(lines)))
