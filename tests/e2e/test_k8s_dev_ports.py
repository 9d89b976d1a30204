#!/usr/bin/env python3
"""Dev ports of discovered sparks (issue 20; k8s/spark_discovery.cpp): `kubernetes.ports` for
every spark plus the Deployment's `spark-gateway/ports` annotation (which wins for a name both
give), each given a gateway port from port_range and recorded as `spark-gateway/port.NAME`.

Real gateway -> Kubernetes API double -> fake kubelet. The fake kubelet's pods are a real sshd on
their own 127.a.b.c; this file wraps its launcher (PodHttpServers) so that a pod of a chosen
Deployment also runs `python3 -m http.server PORT --bind POD_IP` for each dev port it should
serve, inside the pod's "container" (the kubelet's container tag in its environment: it stops
with the pod). Each server serves a page naming its pod, address and port, with random bytes, so
a page read through the gateway proves which server in which pod answered.

What is shown:
  * port.web is written in the same conditional patch as the SSH port, in port_range, apart from
    it; listened on and listed by the API; a later Deployment gets other ports; a restarted
    gateway serves the recorded ports and writes none;
  * kubernetes.ports "8080,metrics=9100" with an annotation "web=3000,8080=8081": the spark's
    "8080" is its 8081 (a curl through it gets the 8081 server's page, not the 8080 one's),
    metrics stays, others get kubernetes.ports only; a dev port on the SSH port is dropped with
    an InvalidAnnotation Warning; port.web "80" is replaced from the range (InvalidPort);
  * adding api opens a listener and writes only port.api; moving web's pod port keeps its
    gateway port; removing web closes its listener (refused) and the SSH port stays and serves;
  * "web=http": an InvalidAnnotation Warning Event, logged once; SSH and kubernetes.ports served;
  * two replicas racing for a new Deployment's ports (the first write held 2 s): one 200, one
    409, both serve the recorded ports and reach the pod;
  * from asleep, 5 curls through the web port: one scale call, one Woken Event, every curl gets
    the page of the woken pod's server (which starts after its sshd: waited for, the spark is
    young); a refusing port on a spark older than defaults.port_grace closes at once, logged.

Three gateway bugs these tests found (fixed; each test says which):
  * test_a_removed_dev_ports_recorded_port_is_not_given_to_a_later_deployment: a removed dev
    port's port.NAME stayed recorded but was handed to the next new Deployment;
  * test_the_replica_losing_the_race_for_a_new_dev_port_keeps_serving_the_spark: the replica
    whose port.api write met a 409 stopped serving the whole spark until the next pass;
  * test_a_dev_port_without_a_free_gateway_port_leaves_ssh_served: a dev port that found no
    free port in port_range took the spark's SSH port down.

Whether a port is listened on is read from /proc/net/tcp (a LISTEN socket on the test's own
loopback address): no connection, so nothing is woken or counted. Loopback only; harness
defaults unless a test says why; every wait is bounded (wait_until)."""

import functools
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import PREFIX, KubernetesTestCase, Port, wait_until  # noqa: E402

harness.import_k8s_double()  # tests/ on sys.path, for k8s_double
from k8s_double.kubelet import POD_TAG_VAR  # noqa: E402

NAME = "brave-dolphin"
CURL_TIMEOUT = 60  # curl's own --max-time


def listening(host, port):
    """True if some socket LISTENs on host:port (IPv4), read from /proc/net/tcp: no connect."""
    want_ip = socket.inet_aton(host)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], fields[3]
            ip_hex, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port and struct.pack("<I", int(ip_hex, 16)) == want_ip:
                return True
    return False


class PodHttpServers:
    """Wraps the fake kubelet's sshd launcher: a pod of Deployment D also runs an HTTP server for
    each port of serve[D], bound to the pod's address, in the pod's container."""

    def __init__(self, env, kubelet):
        self.env = env
        self.serve = {}  # deployment name -> [pod ports]
        self.pages = {}  # (deployment, port) -> bytes served by its newest pod
        self.launched = []  # (deployment, pod name, pod ip, port)
        self.procs = []
        self._lock = threading.Lock()
        self._sshd = kubelet.sshd_launcher
        kubelet.sshd_launcher = self.launch

    def launch(self, ip, port, pod):
        handle = self._sshd(ip, port, pod)  # the container's main process, as before
        dname = (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/instance")
        uid = pod["metadata"].get("uid") or pod["metadata"]["name"]
        for p in self.serve.get(dname, ()):
            d = os.path.join(self.env.tmpdir, "www", pod["metadata"]["name"], str(p))
            os.makedirs(d, exist_ok=True)
            page = ("pod %s at %s:%d %s\n" % (pod["metadata"]["name"], ip, p, os.urandom(4000).hex())).encode()
            with open(os.path.join(d, "index.html"), "wb") as f:
                f.write(page)
            env = self.env.child_env()
            env[POD_TAG_VAR] = uid  # the container's processes: stopped with the pod
            with open(os.path.join(d, "http.log"), "ab") as log:
                proc = subprocess.Popen(["python3", "-m", "http.server", str(p), "--bind", ip, "--directory", d],
                                 env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
            with self._lock:
                self.procs.append(proc)
                self.pages[(dname, p)] = page
                self.launched.append((dname, pod["metadata"]["name"], ip, p))
        return handle

    def reap(self):
        with self._lock:
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def page(self, deployment, port):
        with self._lock:
            return self.pages.get((deployment, port))


class DevPortsK8sTestCase(KubernetesTestCase):

    def start(self, http=None, **gateway_kw):
        """The cluster (pods of http's Deployments serving those ports), the admin API, and
        returns (kube handle, pod servers); the gateway is started by the test."""
        self.start_cluster()
        self.pods = PodHttpServers(self, self.k8s.kubelet)
        self.addCleanup(self.pods.reap)
        self.pods.serve.update(http or {})
        self.enable_admin()
        return self.pods

    # -- what the gateway recorded and serves ------------------------------------------------

    def recorded(self, name):
        """{annotation key after the prefix: value} of every port annotation (port, port.NAME)."""
        ann = self.deployment(name)["metadata"].get("annotations") or {}
        return {k[len(PREFIX):]: v for k, v in ann.items()
                if k == PREFIX + "port" or k.startswith(PREFIX + "port.")}

    def dev_port(self, name, port_name, timeout=15):
        return int(wait_until(lambda: self.annotation(name, "port." + port_name), timeout,
                              "the gateway to record %s's port.%s" % (name, port_name)))

    def view_ports(self, name, api=None):
        status, body = (api or self.api)("GET", "/api/v1/sparks/" + name)
        if status != 200:
            return None
        # name, port, listen: what this file checks (the view may carry more, such as a url).
        return sorted(({k: p.get(k) for k in ("name", "port", "listen")} for p in body["ports"]),
                      key=lambda p: p["name"])

    def wait_view(self, name, want, api=None, timeout=15):
        want = sorted(want, key=lambda p: p["name"])
        last = {}

        def check():
            last["v"] = self.view_ports(name, api)
            return last["v"] == want
        wait_until(check, timeout, lambda: "the API view of %s to list ports %s (last: %s)" % (name, want, last.get("v")))

    def wait_listening(self, port, host=None, timeout=15):
        host = host or self.host
        wait_until(lambda: listening(host, port), timeout, "a listener on %s:%d" % (host, port))

    def port_claims(self, name):
        """The PATCHes of deployments/NAME that write a port annotation."""
        out = []
        for r in self.kube.requests(method="PATCH", resource="deployments", name=name):
            ann = ((r.json or {}).get("metadata") or {}).get("annotations") or {}
            if not r.subresource and any(k == PREFIX + "port" or k.startswith(PREFIX + "port.") for k in ann):
                out.append(r)
        return out

    def in_range(self, port):
        lo, hi = self.port_range()
        return lo <= port <= hi

    # -- clients ------------------------------------------------------------------------------

    def curl(self, port, host=None):
        """curl http://host:port/ from the test's own address; returns (CompletedProcess, body)."""
        host = host or self.host
        out = os.path.join(self.tmpdir, "curl-%d.out" % time.monotonic_ns())
        try:
            r = subprocess.run(["curl", "-s", "-S", "-f", "--max-time", str(CURL_TIMEOUT), "--interface", self.host,
                                "-o", out, "http://%s:%d/" % (host, port)],
                               env=self.child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=CURL_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            self.fail("curl did not finish within %ds" % (CURL_TIMEOUT + 10))
        body = b""
        if os.path.exists(out):
            with open(out, "rb") as f:
                body = f.read()
        return r, body

    def assert_page(self, result, body, want, what="curl"):
        self.assertEqual(result.returncode, 0, "%s exited %d: %s" % (what, result.returncode, result.stderr))
        self.assertIsNotNone(want, "%s: no pod served this page" % what)
        self.assertEqual(body, want, "%s got %d bytes, not the %d-byte page the pod serves: %r"
                         % (what, len(body), len(want), body[:120]))


# ------------------------------------------------------------------------------------------


class RecordedDevPorts(DevPortsK8sTestCase):

    def test_annotation_port_is_recorded_in_the_range_served_and_never_given_to_a_later_deployment(self):
        self.start()
        self.add_deployment(NAME, ports="web=3000")
        gw = self.start_k8s_gateway()
        ssh = self.spark_port(NAME)
        web = self.dev_port(NAME, "web")
        self.assertTrue(self.in_range(ssh) and self.in_range(web), (ssh, web, self.port_range()))
        self.assertNotEqual(web, ssh)
        # One conditional patch gave both.
        claims = self.port_claims(NAME)
        self.assertEqual(len(claims), 1, claims)
        self.assertEqual(claims[0].status, 200)
        self.assertEqual(claims[0].json["metadata"]["annotations"],
                         {PREFIX + "port": str(ssh), PREFIX + "port.web": str(web)})
        self.assertIn("resourceVersion", claims[0].json["metadata"], "the port claim is conditional")
        gw.wait_log("spark %s: given port %d (%sport.web)" % (NAME, web, PREFIX))
        # Listened on, shown by the API, and the spark not woken by any of it.
        self.wait_listening(web)
        self.wait_view(NAME, [{"name": "web", "port": 3000, "listen": "%s:%d" % (self.host, web)}])
        self.assertEqual(self.replicas(NAME), 0)

        # A Deployment created later (same dev port name) gets other ports.
        self.add_deployment("calm-otter", ports="web=3000")
        other_ssh = self.spark_port("calm-otter")
        other_web = self.dev_port("calm-otter", "web")
        self.assertEqual(len({ssh, web, other_ssh, other_web}), 4, (ssh, web, other_ssh, other_web))
        self.assertTrue(self.in_range(other_ssh) and self.in_range(other_web))
        self.wait_listening(other_web)
        self.assertEqual(self.recorded(NAME), {"port": str(ssh), "port.web": str(web)})

        # A restarted gateway serves the recorded ports and writes none again.
        gw.kill()
        wait_until(lambda: not listening(self.host, web), 10, "the killed gateway's web listener to go")
        claims_before = len(self.port_claims(NAME)) + len(self.port_claims("calm-otter"))
        self.start_k8s_gateway()
        self.wait_view(NAME, [{"name": "web", "port": 3000, "listen": "%s:%d" % (self.host, web)}])
        self.wait_view("calm-otter", [{"name": "web", "port": 3000, "listen": "%s:%d" % (self.host, other_web)}])
        for port in (ssh, web, other_ssh, other_web):
            self.wait_listening(port)
        self.assertEqual(len(self.port_claims(NAME)) + len(self.port_claims("calm-otter")), claims_before)
        self.assertEqual(self.recorded(NAME), {"port": str(ssh), "port.web": str(web)})

    def test_kubernetes_ports_for_every_spark_and_the_annotation_wins_for_a_name_both_give(self):
        # kubernetes.ports "8080,metrics=9100": every spark has a port named "8080" (its 8080)
        # and "metrics" (9100). brave-dolphin's annotation gives "8080" again, as its 8081, and
        # adds web: its "8080" is 8081 (the annotation's), the others stay.
        pods = self.start(http={NAME: [8080, 8081, 3000]})
        self.add_deployment(NAME, ports="web=3000,8080=8081")
        self.add_deployment("calm-otter")
        # The pods' sshd listens on TARGET_PORT (2222): a dev port there is dropped, warned.
        self.add_deployment("lazy-lynx", ports="web=3000,shell=%d" % harness.TARGET_PORT)
        gw = self.start_k8s_gateway(ports="8080,metrics=9100")
        names = (NAME, "calm-otter", "lazy-lynx")
        ssh = {n: self.spark_port(n) for n in names}
        got = {n: {k: int(v) for k, v in self.recorded(n).items()} for n in names}

        def view(name, **ports):
            return [{"name": k, "port": v, "listen": "%s:%d" % (self.host, got[name]["port." + k])}
                    for k, v in ports.items()]
        wait_until(lambda: all(self.annotation(n, "port.metrics") for n in names), 15, "port.metrics on every spark")
        got = {n: {k: int(v) for k, v in self.recorded(n).items()} for n in names}
        self.assertEqual(set(got[NAME]), {"port", "port.8080", "port.metrics", "port.web"}, got[NAME])
        self.assertEqual(set(got["calm-otter"]), {"port", "port.8080", "port.metrics"}, got["calm-otter"])
        self.assertEqual(set(got["lazy-lynx"]), {"port", "port.8080", "port.metrics", "port.web"}, got["lazy-lynx"])
        every = [p for n in names for p in got[n].values()]
        self.assertEqual(len(every), len(set(every)), "a gateway port given twice: %s" % got)
        self.assertTrue(all(self.in_range(p) for p in every), got)
        self.assertEqual({n: got[n]["port"] for n in names}, ssh)

        self.wait_view(NAME, view(NAME, **{"8080": 8081, "metrics": 9100, "web": 3000}))
        self.wait_view("calm-otter", view("calm-otter", **{"8080": 8080, "metrics": 9100}))
        self.wait_view("lazy-lynx", view("lazy-lynx", **{"8080": 8080, "metrics": 9100, "web": 3000}))
        for p in every:
            self.wait_listening(p)
        ev = wait_until(lambda: self.kube.events("lazy-lynx", reason="InvalidAnnotation"), 10,
                        "an InvalidAnnotation Event for lazy-lynx's dev port on its SSH port")
        self.assertEqual(ev[0]["type"], "Warning")
        self.assertIn("dev port %d is the spark's SSH port" % harness.TARGET_PORT, ev[0]["message"])
        self.assertEqual(self.kube.events(NAME, reason="InvalidAnnotation"), [])
        self.assertEqual(self.kube.events("calm-otter", reason="InvalidAnnotation"), [])

        # Through brave-dolphin's port "8080": the pod's 8081 answers, not its 8080 (which also runs).
        r, body = self.curl(got[NAME]["port.8080"])
        self.assert_page(r, body, pods.page(NAME, 8081), "curl of the port named 8080")
        self.assertNotEqual(body, pods.page(NAME, 8080))
        r, body = self.curl(got[NAME]["port.web"])
        self.assert_page(r, body, pods.page(NAME, 3000), "curl of the web port")
        self.assertEqual(len(self.kube.scale_requests(NAME)), 1)


    def test_a_recorded_dev_port_outside_port_range_is_replaced_not_listened_on(self):
        # Whoever may annotate a Deployment must not make the gateway listen on another port
        # of its host: port.web "80" (bindable here, as root) is replaced by one of the range.
        self.start()
        self.add_deployment(NAME, ports="web=3000", **{"port.web": "80"})
        gw = self.start_k8s_gateway()
        ssh = self.spark_port(NAME)
        ev = wait_until(lambda: self.kube.events(NAME, reason="InvalidPort"), 10, "an InvalidPort Event")
        self.assertEqual(ev[0]["type"], "Warning")
        self.assertIn("%sport.web \"80\" is outside kubernetes.port_range" % PREFIX, ev[0]["message"])
        web = int(wait_until(lambda: self.annotation(NAME, "port.web") != "80" and self.annotation(NAME, "port.web"),
                             15, "port.web to be rewritten"))
        self.assertTrue(self.in_range(web))
        self.assertNotEqual(web, ssh)
        self.wait_view(NAME, [{"name": "web", "port": 3000, "listen": "%s:%d" % (self.host, web)}])
        self.wait_listening(web)
        self.assertFalse(listening(self.host, 80))

    def test_a_dev_port_without_a_free_gateway_port_leaves_ssh_served(self):
        # port_range has two ports, both taken by SSH ports. brave-dolphin then asks for a dev
        # port: none is free. As for a bad ports annotation (served with kubernetes.ports only)
        # and a dev port on the SSH port (dropped, warned), the dev port that cannot be served
        # must not take the spark's SSH port down with it.
        self.start()
        lo = self.port_range()[0]
        self.add_deployment(NAME)
        self.add_deployment("calm-otter")
        gw = self.start_k8s_gateway(port_range="%d-%d" % (lo, lo + 1))
        ssh = self.spark_port(NAME)
        other = self.spark_port("calm-otter")
        self.assertEqual({ssh, other}, {lo, lo + 1})
        self.kube.annotate("deployments", NAME, **{PREFIX + "ports": "web=3000"})
        ev = wait_until(lambda: self.kube.events(NAME, reason="NoFreePort"), 10, "a NoFreePort Event")
        self.assertEqual(ev[0]["type"], "Warning")
        self.assertIsNone(self.annotation(NAME, "port.web"))
        # The Event is written while a discovery pass runs: a later pass (calm-otter changed)
        # shows what that one published.
        since = gw.log_size()
        self.kube.annotate("deployments", "calm-otter", **{PREFIX + "idle-timeout": "2h"})
        gw.wait_log("kubernetes: discovered sparks changed", "changed calm-otter", since=since)
        status, body = self.api("GET", "/api/v1/sparks/" + NAME)
        self.assertTrue(status == 200 and listening(self.host, ssh),
                        "no free port for web took %s's SSH port %d down (API view %s, listening %s): %s"
                        % (NAME, ssh, status, listening(self.host, ssh), gw.log_lines("spark %s" % NAME)
                           + gw.log_lines("removed %s" % NAME)))
        self.assertEqual(body["ports"], [])
        self.assert_ssh_ok(self.ssh(Port(ssh), "echo ssh"), "ssh\n")


class ChangedAnnotation(DevPortsK8sTestCase):

    def test_adding_and_removing_dev_ports_opens_and_closes_their_listeners(self):
        self.start()
        self.add_deployment(NAME, ports="web=3000")
        gw = self.start_k8s_gateway()
        ssh = self.spark_port(NAME)
        web = self.dev_port(NAME, "web")
        self.wait_listening(web)

        self.kube.annotate("deployments", NAME, **{PREFIX + "ports": "web=3000,api=4000"})
        api = self.dev_port(NAME, "api")
        self.assertTrue(self.in_range(api))
        self.assertNotIn(api, (ssh, web))
        self.wait_listening(api)
        self.wait_view(NAME, [{"name": "web", "port": 3000, "listen": "%s:%d" % (self.host, web)},
                              {"name": "api", "port": 4000, "listen": "%s:%d" % (self.host, api)}])
        self.assertEqual(self.annotation(NAME, "port"), str(ssh))
        self.assertEqual(self.annotation(NAME, "port.web"), str(web))
        (added,) = self.port_claims(NAME)[1:]
        self.assertEqual(added.json["metadata"]["annotations"], {PREFIX + "port.api": str(api)},
                         "adding api writes only its port")

        # web moves to another port in the pod: its gateway port stays.
        self.kube.annotate("deployments", NAME, **{PREFIX + "ports": "web=3001,api=4000"})
        self.wait_view(NAME, [{"name": "web", "port": 3001, "listen": "%s:%d" % (self.host, web)},
                              {"name": "api", "port": 4000, "listen": "%s:%d" % (self.host, api)}])
        self.assertEqual(self.annotation(NAME, "port.web"), str(web))
        self.assertEqual(len(self.port_claims(NAME)), 2, "a port written again")

        self.kube.annotate("deployments", NAME, **{PREFIX + "ports": "api=4000"})
        wait_until(lambda: harness.tcp_connect_refused(self.host, web), 15, "web's listener to close")
        self.assertFalse(listening(self.host, web))
        self.wait_view(NAME, [{"name": "api", "port": 4000, "listen": "%s:%d" % (self.host, api)}])
        self.assertTrue(listening(self.host, api))
        self.assertTrue(listening(self.host, ssh))
        self.assertEqual(self.annotation(NAME, "port"), str(ssh), "the SSH port moved")
        self.assertEqual(self.annotation(NAME, "port.api"), str(api))
        self.assert_ssh_ok(self.ssh(Port(ssh), "echo still"), "still\n")
        self.assertEqual(self.replicas(NAME), 1)

    def test_a_removed_dev_ports_recorded_port_is_not_given_to_a_later_deployment(self):
        # A recorded port is never handed to another spark. web is removed from brave-dolphin's
        # annotation; its port.web stays recorded on the Deployment. calm-otter, created after
        # that, must not be given that port: when web comes back, brave-dolphin (older) wins
        # its recorded port.web, and calm-otter would lose its SSH port (PortConflict, not served).
        self.start()
        self.add_deployment(NAME, ports="web=3000")
        gw = self.start_k8s_gateway()
        ssh = self.spark_port(NAME)
        web = self.dev_port(NAME, "web")
        self.wait_listening(web)
        self.kube.annotate("deployments", NAME, **{PREFIX + "ports": None})
        wait_until(lambda: not listening(self.host, web), 15, "web's listener to close")
        recorded_web = self.annotation(NAME, "port.web")

        self.add_deployment("calm-otter")
        later = self.spark_port("calm-otter")
        self.assertNotEqual(later, ssh)
        given_away = recorded_web is not None and later == int(recorded_web)
        # web comes back: both sparks must stay served, each on ports of its own.
        since = gw.log_size()
        self.kube.annotate("deployments", NAME, **{PREFIX + "ports": "web=3000"})
        web_again = self.dev_port(NAME, "web")
        self.wait_view(NAME, [{"name": "web", "port": 3000, "listen": "%s:%d" % (self.host, web_again)}])
        gw.wait_log("kubernetes: discovered sparks changed", since=since)
        status, body = self.api("GET", "/api/v1/sparks/calm-otter")
        lost = {"calm-otter in the API": status,
                "PortConflict Events on calm-otter": [e["message"] for e in self.kube.events(
                    "calm-otter", reason="PortConflict")],
                "%s's web now listens on" % NAME: web_again,
                "gateway log": gw.log_lines("calm-otter", since=since)}
        self.assertTrue(status == 200 and not lost["PortConflict Events on calm-otter"],
                        "putting web back on %s took calm-otter's port %d away: %s%s" % (
                            NAME, later, lost, "; calm-otter had been given port %d while it was still recorded "
                            "as %s's port.web" % (later, NAME) if given_away else ""))
        self.assertFalse(given_away, "calm-otter was given port %d while it was recorded as %s's port.web"
                         % (later, NAME))
        self.assert_ssh_ok(self.ssh(Port(later), "echo later"), "later\n")


class BadAnnotation(DevPortsK8sTestCase):

    def test_an_unparseable_ports_annotation_is_a_warning_and_kubernetes_ports_are_served(self):
        pods = self.start(http={NAME: [8080]})
        self.add_deployment(NAME, ports="web=http")
        gw = self.start_k8s_gateway(ports="8080")
        ssh = self.spark_port(NAME)
        p8080 = self.dev_port(NAME, "8080")
        ev = wait_until(lambda: self.kube.events(NAME, reason="InvalidAnnotation"), 10, "an InvalidAnnotation Event")
        self.assertEqual(len(ev), 1, ev)
        self.assertEqual(ev[0]["type"], "Warning")
        self.assertEqual(ev[0]["involvedObject"]["kind"], "Deployment")
        self.assertIn(PREFIX + "ports", ev[0]["message"])
        self.assertIn("web=http", ev[0]["message"])
        self.assertIn("serving only kubernetes.ports", ev[0]["message"])
        self.assertEqual(len(gw.log_lines("spark %s:" % NAME, "web=http")), 1, "the warning logged once")
        self.assertIsNone(self.annotation(NAME, "port.web"))
        self.wait_view(NAME, [{"name": "8080", "port": 8080, "listen": "%s:%d" % (self.host, p8080)}])
        self.wait_listening(p8080)
        self.assert_ssh_ok(self.ssh(Port(ssh), "echo ssh"), "ssh\n")
        r, body = self.curl(p8080)
        self.assert_page(r, body, pods.page(NAME, 8080), "curl of kubernetes.ports' 8080")
        self.assertEqual(len(self.kube.scale_requests(NAME)), 1)


class TwoReplicas(DevPortsK8sTestCase):
    """Two replicas (KubernetesMixin.start_replica): no leader election, the gateway's
    request_timeout."""

    @staticmethod
    def api_of(replica):
        """wait_view()'s api= for a replica: its admin API, 10 s a call."""
        return functools.partial(replica.call, timeout=10)

    def test_two_replicas_racing_for_a_new_deployments_ports_serve_the_same_recorded_ports(self):
        pods = self.start(http={NAME: [3000]})
        replicas = [self.start_replica("gw-%d" % i) for i in range(2)]
        hosts = [r.host for r in replicas]
        # Both replicas see the new Deployment at once and both write its ports. The first
        # write to arrive is held 2 s, so the second lands first and the first meets a 409.
        claim = "\"%sport\"" % PREFIX
        hold = self.kube.faults.hold(2.0, count=1, method="PATCH", path=r"/deployments/%s$" % NAME,
                                     when=lambda rec: claim.encode() in (rec.body or b""))
        self.add_deployment(NAME, ports="web=3000,api=4000")
        ssh = int(wait_until(lambda: self.annotation(NAME, "port"), 15, "a port annotation"))
        web, api = self.dev_port(NAME, "web"), self.dev_port(NAME, "api")
        self.assertEqual(len({ssh, web, api}), 3)
        wait_until(lambda: len(self.port_claims(NAME)) >= 2 and all(r.status for r in self.port_claims(NAME)),
                   15, lambda: "both replicas to try to record the ports (claims: %s)" % self.port_claims(NAME))
        claims = self.port_claims(NAME)
        self.assertEqual(hold.hits, 1)
        self.assertEqual(sorted(r.status for r in claims), [200, 409], claims)
        self.assertEqual(len({r.token for r in claims}), 2, "both replicas wrote")
        (won,) = [r for r in claims if r.status == 200]
        self.assertEqual(won.json["metadata"]["annotations"],
                         {PREFIX + "port": str(ssh), PREFIX + "port.web": str(web), PREFIX + "port.api": str(api)})
        loser = [replica.gateway for replica in replicas if replica.token != won.token][0]
        loser.wait_log("spark %s: cannot record its ports" % NAME, "409")
        # Both serve the recorded ports.
        for replica, host in zip(replicas, hosts):
            self.wait_view(NAME, [{"name": "web", "port": 3000, "listen": "%s:%d" % (host, web)},
                                  {"name": "api", "port": 4000, "listen": "%s:%d" % (host, api)}],
                           api=self.api_of(replica))
            for port in (ssh, web, api):
                self.wait_listening(port, host)
        self.assertEqual(len(self.port_claims(NAME)), 2, "a third port write")
        # And both reach the pod's web server (one wake between them).
        for host in hosts:
            r, body = self.curl(web, host)
            self.assert_page(r, body, pods.page(NAME, 3000), "curl through %s" % host)
        self.assertEqual(len([r for r in self.kube.scale_requests(NAME) if r.status == 200]), 1)

    def test_the_replica_losing_the_race_for_a_new_dev_port_keeps_serving_the_spark(self):
        # A served spark gets a new dev port: both replicas write port.api, one meets a 409
        # (the first write is held 2 s so the race is certain). The spark itself did not change
        # hands: the replica that lost must go on serving it (SSH and web) and adopt api.
        self.start()
        self.add_deployment(NAME, ports="web=3000")
        replicas = [self.start_replica("gw-%d" % i) for i in range(2)]
        hosts = [r.host for r in replicas]
        ssh = int(wait_until(lambda: self.annotation(NAME, "port"), 15, "a port annotation"))
        web = self.dev_port(NAME, "web")
        for replica, host in zip(replicas, hosts):
            replica.gateway.wait_log("spark %s: listening on %s:%d " % (NAME, host, ssh))
            self.wait_listening(web, host)
        sizes = [replica.gateway.log_size() for replica in replicas]
        claim = "\"%sport.api\"" % PREFIX
        hold = self.kube.faults.hold(2.0, count=1, method="PATCH", path=r"/deployments/%s$" % NAME,
                                     when=lambda rec: claim.encode() in (rec.body or b""))
        gaps = {h: 0 for h in hosts}  # samples in which a replica's SSH port was not listened on
        stop = threading.Event()

        def watch_listeners():
            while not stop.is_set():
                for h in hosts:
                    if not listening(h, ssh):
                        gaps[h] += 1
                time.sleep(0.002)
        watcher = threading.Thread(target=watch_listeners, daemon=True)
        watcher.start()
        self.addCleanup(stop.set)
        self.kube.annotate("deployments", NAME, **{PREFIX + "ports": "web=3000,api=4000"})
        api = self.dev_port(NAME, "api")
        wait_until(lambda: len(self.port_claims(NAME)) >= 3 and all(r.status for r in self.port_claims(NAME)),
                   15, lambda: "both replicas to write port.api (claims: %s)" % self.port_claims(NAME))
        self.assertEqual(hold.hits, 1)
        new = self.port_claims(NAME)[1:]
        self.assertEqual(sorted(r.status for r in new), [200, 409], new)
        (won,) = [r for r in new if r.status == 200]
        loser_index = [i for i, replica in enumerate(replicas) if replica.token != won.token][0]
        loser = replicas[loser_index].gateway
        loser.wait_log("spark %s: cannot record its ports" % NAME, "409", since=sizes[loser_index])
        for replica, host in zip(replicas, hosts):
            self.wait_view(NAME, [{"name": "web", "port": 3000, "listen": "%s:%d" % (host, web)},
                                  {"name": "api", "port": 4000, "listen": "%s:%d" % (host, api)}],
                           api=self.api_of(replica))
            self.wait_listening(api, host)
        stop.set()
        watcher.join(5)
        dropped = [(hosts[i], replica.log_lines("kubernetes: discovered sparks changed", "removed %s" % NAME,
                                                since=sizes[i]))
                   for i, replica in enumerate(replicas)]
        self.assertFalse([d for d in dropped if d[1]],
                         "a replica stopped serving %s when its port.api write met a 409: %s (SSH port %d not "
                         "listened on in %s samples)" % (NAME, [d for d in dropped if d[1]], ssh, gaps))
        self.assertEqual(gaps, {h: 0 for h in hosts}, "SSH port %d not listened on" % ssh)


class WakeThroughDevPort(DevPortsK8sTestCase):

    def test_curl_from_asleep_wakes_the_spark_once_and_gets_the_pods_page(self):
        pods = self.start(http={NAME: [3000]})
        self.add_deployment(NAME, ports="web=3000")
        gw = self.start_k8s_gateway()
        self.spark_port(NAME)
        web = self.dev_port(NAME, "web")
        self.wait_listening(web)
        self.assertEqual(self.replicas(NAME), 0)
        self.assertIsNone(self.k8s.kubelet.pod_of(NAME))

        results = [None] * 5

        def run(i):
            results[i] = self.curl(web)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CURL_TIMEOUT + 20)
        pod = self.k8s.kubelet.pod_of(NAME)
        self.assertIsNotNone(pod)
        ip = pod["status"]["podIP"]
        page = pods.page(NAME, 3000)
        self.assertIn(("pod %s at %s:3000 " % (pod["metadata"]["name"], ip)).encode(), page or b"")
        for i, (r, body) in enumerate(results):
            self.assert_page(r, body, page, "curl %d" % i)
        scale = self.kube.scale_requests(NAME)
        self.assertEqual(len(scale), 1, scale)
        self.assertEqual(scale[0].json["spec"], {"replicas": 1})
        self.assertEqual(self.replicas(NAME), 1)
        woken = self.kube.events(NAME, reason="Woken")
        self.assertEqual(len(woken), 1)
        self.assertIn("Woken by a connection from %s" % self.host, woken[0]["message"])
        wait_until(lambda: len(gw.log_lines("spark %s: connection from %s:" % (NAME, self.host),
                                            "to port web closed after")) == 5,
                   10, "5 'to port web closed after' lines")
        # The pod's HTTP server starts after its sshd: the young spark's port was waited for.
        self.assertEqual(gw.log_lines("does not answer"), [])

    def test_a_refusing_port_on_a_spark_older_than_port_grace_closes_the_connection(self):
        # defaults.port_grace 1s (30 s by default): discovered sparks take it, and the spark is
        # older than that a second after its wake. Nothing listens on api's 4000 in the pod.
        self.start(http={NAME: [3000]})
        self.add_deployment(NAME, ports="web=3000,api=4000")
        gw = self.start_k8s_gateway(defaults={"port_grace": "1s"})
        ssh = self.spark_port(NAME)
        api = self.dev_port(NAME, "api")
        self.wait_listening(api)
        self.assert_ssh_ok(self.ssh(Port(ssh), "echo up"), "up\n")
        woke = time.monotonic()
        wait_until(lambda: time.monotonic() - woke > 1.5, 5, "the spark to be older than port_grace")
        s = socket.create_connection((self.host, api), timeout=10, source_address=(self.host, 0))
        client_port = s.getsockname()[1]
        t0 = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(10)
        try:
            got = s.recv(1024)
        except ConnectionResetError:
            got = b""
        except socket.timeout:
            self.fail("the gateway kept a connection to a refusing port open for 10s")
        took = time.monotonic() - t0
        s.close()
        self.assertEqual(got, b"")
        self.assertLess(took, 3.0, "closing took %.2fs (wake_timeout 30s): port_grace not applied" % took)
        gw.wait_log("spark %s: connection from %s:%d to port api closed: port 4000 does not answer in the spark"
                    % (NAME, self.host, client_port))
        self.assertEqual(self.replicas(NAME), 1)
        self.assertEqual(len(self.kube.scale_requests(NAME)), 1)


if __name__ == "__main__":
    harness.main()
