"""The Kubernetes API double (tests/k8s_double, docs/kubernetes-api-double.md) for the kubernetes
backend's tests: KubernetesDoubleMixin.start_k8s_double() (part of GatewayTestCase) runs it and a
fake kubelet whose pods are real sshds of this test; KubernetesMixin (KubernetesTestCase) adds a
gateway configured for it: Deployments as sparks, their ports, /readyz; and several gateway
replicas against one cluster (start_replica(), Replica)."""

import copy
import datetime
import json
import os
import socket
import sys
import urllib.error
import urllib.request

from .metrics import scrape
from .processes import TAG_VAR, BackgroundProcess, free_port, free_port_range, random_loopback_host, wait_until

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


TARGET_PORT = 2222  # the pods' sshd (each pod has its own address, so one port for all)
PREFIX = "spark-gateway/"


class Port:
    """What the harness's ssh helpers need to reach a port."""

    def __init__(self, port):
        self.listen_port = port


def rfc3339(t):
    """Epoch seconds -> RFC 3339 in UTC with milliseconds, as the gateway writes annotations."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(text):
    """RFC 3339 (with or without fractional seconds, Z or an offset) -> epoch seconds. The API
    server writes whole seconds, the gateway milliseconds."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Replica:
    """One gateway replica of several against one cluster, started by
    KubernetesMixin.start_replica() (as the pods of one gateway Deployment would be).

    name         its Lease identity (leader_election.identity) and its folder tmpdir/NAME
    host         its loopback address: its admin listener and its spark ports listen there
    admin_port   its admin listener's port on host; url is http://HOST:ADMIN_PORT
    token        its own API token, "token-NAME": the double's request log (rec.token) tells who
                 wrote what, and kube.faults.refuse_token(token) cuts it off
    admin_token  the bearer token call() sends (None: its admin API has no token)
    config_path, state_dir   tmpdir/NAME/config.json, tmpdir/NAME/state
    gateway      its Gateway process (a new one after KubernetesMixin.run_replica())
    """

    def __init__(self, name, host, admin_port, token, config_path, state_dir, admin_token=None):
        self.name, self.host, self.admin_port, self.token = name, host, admin_port, token
        self.config_path, self.state_dir, self.admin_token = config_path, state_dir, admin_token
        self.url = "http://%s:%d" % (host, admin_port)
        self.gateway = None

    def __repr__(self):
        return self.name

    def call(self, method, path, body=None, timeout=60):
        """Calls its admin API; returns (status, decoded JSON or text), or (None, None) when
        nothing answers. A mutation carries a JSON content type (a tokenless admin takes no
        "simple", browser-forgeable one) and `body` as JSON; every call the admin token, if any."""
        headers = {"Authorization": "Bearer " + self.admin_token} if self.admin_token else {}
        data = None
        if method != "GET":
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(self.url + path, method=method, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        except OSError:
            return None, None
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def readyz(self, timeout=2):
        """(status, body) of GET /readyz; (None, None) when nothing answers."""
        return self.call("GET", "/readyz", timeout=timeout)

    def leads(self):
        """Whether its /readyz says it holds the Lease."""
        status, body = self.readyz()
        return bool(isinstance(body, dict) and body.get("leader"))

    def spark(self, name, timeout=5):
        """Its admin API's view of spark `name` (a dict), or None unless that answers 200."""
        status, body = self.call("GET", "/api/v1/sparks/" + name, timeout=timeout)
        return body if status == 200 else None

    def state(self, name, timeout=5):
        """The "state" of spark(name), or None."""
        s = self.spark(name, timeout=timeout)
        return s and s.get("state")

    def metric(self, name, **labels):
        """Its name{labels} in one scrape of its /metrics (None if it does not export it)."""
        return scrape(self.url + "/metrics", timeout=2).get(name, **labels)

    def log_lines(self, *parts, since=0):
        return self.gateway.log_lines(*parts, since=since)


class KubernetesMixin:
    """A cluster (the API double) and a gateway with a "kubernetes" section, for
    KubernetesTestCase: Deployments with the gateway's annotations, the ports it gives them,
    /readyz; several gateway replicas (start_replica()). Uses GatewayTestCase's
    start_k8s_double(), config_dict(), write_config_dict(), start_gateway(), ssh_args() and api()."""

    def start_cluster(self, tls=False, **kw):
        self.k8s = self.start_k8s_double(tls=tls, **kw)
        self.kube = self.k8s.api
        self.replica_list = []  # what start_replica() started, in order
        return self.k8s

    def add_deployment(self, name, port=None, replicas=0, **annotations):
        ann = {PREFIX + "target-port": str(TARGET_PORT)}
        if port is not None:
            ann[PREFIX + "port"] = str(port)
        ann.update({PREFIX + k.replace("_", "-"): v for k, v in annotations.items()})
        self.kube.create_deployment(name, annotations=ann, replicas=replicas, target_port=TARGET_PORT)

    def write_k8s_config(self, defaults=None, auth="token", sparks=(), flush_interval=None, **k8s_kw):
        cfg = self.config_dict(sparks=list(sparks), defaults=defaults, flush_interval=flush_interval)
        section = {"namespace": self.k8s.namespace, "listen_host": self.host,
                   "api_server": self.k8s.url, "port_range": "%d-%d" % self.port_range(),
                   "request_timeout": "3s"}
        if auth == "token":
            section["token_file"] = self.k8s.token_file
        if self.k8s.ca_file:
            section["ca_file"] = self.k8s.ca_file
        section.update(k8s_kw)
        cfg["kubernetes"] = section
        self.write_config_dict(cfg)
        return self.config_path

    def start_replica(self, name, config=None, kubernetes=None, admin_token=None, **config_kw):
        """Starts gateway replica `name` against this test's cluster (start_cluster() first), waits
        for its /readyz to answer 200 and returns its Replica. Each replica has its own:

          * loopback address: the test's own for the first replica, a fresh random 127.x.y.z for
            each later one;
          * admin listener on a free port there, without a token unless `admin_token` (written
            to tmpdir/NAME/admin-token; Replica.call() sends it);
          * folder tmpdir/NAME: config.json, state_dir "state" (relative to the config),
            k8s-token holding its API token "token-NAME", registered with the double;
          * kubernetes section: this cluster's namespace and API server, the test's port_range(),
            listen_host its address, its token file; then the keys of `kubernetes`
            (request_timeout, leader_election...); a leader_election, if the config has one,
            gets identity NAME.

        The config starts from `config` (a dict, copied: e.g. deploy/'s) or else from
        config_dict(sparks=[], **config_kw) (defaults, limits, flush_interval, reaper_interval...);
        the admin section is replaced."""
        host = self.host if not self.replica_list else random_loopback_host()
        rdir = os.path.join(self.tmpdir, name)
        os.makedirs(rdir, exist_ok=True)
        token = "token-" + name
        self.kube.add_token(token)
        token_file = os.path.join(rdir, "k8s-token")
        with open(token_file, "w") as f:
            f.write(token + "\n")
        replica = Replica(name, host, free_port(host), token, os.path.join(rdir, "config.json"),
                          os.path.join(rdir, "state"), admin_token)
        cfg = copy.deepcopy(config) if config is not None else self.config_dict(sparks=[], **config_kw)
        cfg["state_dir"] = "state"
        cfg["admin"] = {"listen": "%s:%d" % (host, replica.admin_port)}
        if admin_token is not None:
            cfg["admin"]["token_file"] = os.path.join(rdir, "admin-token")
            with open(cfg["admin"]["token_file"], "w") as f:
                f.write(admin_token + "\n")
        k = cfg.setdefault("kubernetes", {})
        k.update({"namespace": self.k8s.namespace, "listen_host": host, "api_server": self.k8s.url,
                  "token_file": token_file, "port_range": "%d-%d" % self.port_range()})
        k.update(copy.deepcopy(kubernetes or {}))
        if "leader_election" in k:
            k["leader_election"] = dict(k["leader_election"], identity=name)
        self.write_config_dict(cfg, replica.config_path)
        self.replica_list.append(replica)
        return self.run_replica(replica)

    def run_replica(self, replica):
        """Starts replica's gateway from its config (again, after it was stopped or killed) and
        waits for its /readyz to answer 200; returns the replica."""
        replica.gateway = self.start_gateway(config_path=replica.config_path)
        wait_until(lambda: replica.readyz()[0] == 200, 20,
                   "replica %s to list the cluster (/readyz 200)" % replica.name)
        return replica

    def ssh_via(self, replica, port, command):
        """ssh to gateway port `port` on replica's address, in the background; returns the
        BackgroundProcess."""
        p = BackgroundProcess(self.ssh_args(Port(port), command, host=replica.host), self.child_env())
        self.background.append(p)
        return p

    def port_range(self):
        if not hasattr(self, "_range"):
            self._range = free_port_range(self.host, 21)
        return self._range

    def start_k8s_gateway(self, **kw):
        self.write_k8s_config(**kw)
        gw = self.start_gateway()
        wait_until(lambda: self.readyz() == 200, 20, "the gateway to list the cluster (/readyz 200)")
        return gw

    def readyz(self):
        status, _ = self.api_call("GET", "/readyz")
        return status

    def api_call(self, method, path):
        if not getattr(self, "admin", None):
            return 200, None
        return self.api(method, path)

    def deployment(self, name):
        return self.kube.get("deployments", name)

    def annotation(self, name, key):
        return (self.deployment(name)["metadata"].get("annotations") or {}).get(PREFIX + key)

    def replicas(self, name):
        return self.deployment(name)["spec"].get("replicas", 0)

    def spark_port(self, name, timeout=15):
        """The port the gateway gave `name`, once a running gateway listens on it: the
        annotation is written before the listener opens, so a connect right after seeing it
        could be refused."""
        port = int(wait_until(lambda: self.annotation(name, "port"), timeout,
                              "the gateway to give %s a port annotation" % name))
        running = [gw for gw in self.gateways if gw.proc.poll() is None]
        if running:
            wait_until(lambda: any(gw.log_lines("spark %s: listening on" % name, ":%d " % port)
                                   for gw in running),
                       timeout, "a gateway to listen for %s on port %d" % (name, port))
        return port

    def wait_listening(self, port, timeout=15):
        def up():
            try:
                with socket.create_connection((self.host, port), timeout=1):
                    return True
            except OSError:
                return False
        # A bare TCP connect to a sleeping spark would wake it; only call this for running ones
        # or right before a connect anyway.
        return wait_until(up, timeout, "a listener on %s:%d" % (self.host, port))

    def log_line(self, gw, *parts, timeout=15):
        return gw.wait_log(*parts, timeout=timeout)
