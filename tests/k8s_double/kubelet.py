"""A fake deployment controller + scheduler + kubelet for the API double.

It turns a Deployment's spec.replicas into Pods the way a cluster does (one thread, writing
straight to the store, so every step is a real watch event):

  Deployment exists            ReplicaSet NAME-<template hash> (ADDED; labels and selector = the
                               template's + pod-template-hash; ownerReferences: the Deployment,
                               controller=true, blockOwnerDeletion=true), spec.replicas = the
                               Deployment's (0 for the ReplicaSets of older templates), status
                               replicas/readyReplicas/availableReplicas/observedGeneration
                               following its pods (pkg/controller/deployment, sync.go and
                               pkg/controller/replicaset)
  replicas >= 1, no live pod   Pod NAME-<template hash>-<5 chars> created (ADDED; phase Pending,
                               labels = template labels + pod-template-hash; ownerReferences:
                               its ReplicaSet, controller=true; names as
                               pkg/controller/deployment + names.SimpleNameGenerator make them,
                               alphabet from apimachinery pkg/util/rand/rand.go)
  scheduled                    spec.nodeName, condition PodScheduled (MODIFIED)
  sandbox up                   podIP/podIPs/hostIP/startTime, container waiting ContainerCreating
                               (MODIFIED); the IP comes from the test's allocator and must be in
                               127.0.0.0/8
  after start_delay            the REAL sshd is started on podIP:port through the test's
                               launcher; phase Running, container running, not ready (MODIFIED)
  sshd answers a TCP connect   conditions Ready/ContainersReady True, container ready (MODIFIED)
  replicas -> 0 / deleted      deletionTimestamp + deletionGracePeriodSeconds (MODIFIED), the
                               container stopped: SIGTERM to the sshd AND every process of the
                               pod (its per-connection sshds and the users' sessions, which
                               setsid() away), SIGKILL to survivors after `kill_grace` (see
                               proctree.py); containers terminated with the exit code seen, not
                               ready (MODIFIED), then the pod is removed (DELETED)

A Deployment deleted (or deleted and created again: ownership goes by UID) takes its
ReplicaSets and their pods with it, as the garbage collector does. Pods created directly through
the API (no owner) are left alone: neither adopted nor run (a test writes their status).

Deployment status (replicas, updatedReplicas, readyReplicas, availableReplicas,
unavailableReplicas, observedGeneration, Available/Progressing conditions) follows, written only
when it changes; zero counters are left out as DeploymentStatus's omitempty fields are.

Scenarios per Deployment (set_scenario): "normal"; "image-pull-failure" (stays Pending, container
waiting ErrImagePull / ImagePullBackOff with the kubelet's messages); "crash-loop" (Running, then
terminated with exit code 1 and waiting CrashLoopBackOff, restartCount growing, never ready);
"never-ready" (Running with an IP, nothing listening). If a pod's sshd dies on its own, the rest
of its container (open ssh sessions included) is killed at once, as the runtime does when a
container's main process exits, and the container is restarted (restartCount + 1), as
restartPolicy Always does. FakeKubelet.stop() stops every container the same way.
"""

import copy
import ipaddress
import os
import random
import socket
import subprocess
import threading
import time

from . import proctree
from . import status
from .store import rfc3339, random_suffix, template_hash

SCENARIOS = ("normal", "image-pull-failure", "crash-loop", "never-ready")
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
TARGET_PORT_ANNOTATION = "spark-gateway/target-port"
# Put into the environment of a pod's sshd and (through sshd's SetEnv) of its ssh sessions: the
# stand-in for the container's cgroup, so the kubelet finds every process of the pod even after
# the sshd died and its children were reparented.
POD_TAG_VAR = "K8S_DOUBLE_POD_UID"


class LoopbackIpAllocator:
    """Hands out unique random 127.a.b.c addresses (a >= 1, so never 127.0.0.x) that can be
    bound here, never twice (reuse=False) or not while in use (reuse=True)."""

    def __init__(self, avoid=(), reuse=False, rng=None):
        self._avoid = set(avoid)
        self._used = set()
        self._reuse = reuse
        self._rng = rng or random.SystemRandom()
        self._lock = threading.Lock()

    def __call__(self, pod=None):
        return self.allocate(pod)

    def allocate(self, pod=None):
        with self._lock:
            for _ in range(1000):
                ip = "127.%d.%d.%d" % (self._rng.randint(1, 254), self._rng.randint(0, 255),
                                       self._rng.randint(1, 254))
                if ip in self._used or ip in self._avoid:
                    continue
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                        s.bind((ip, 0))
                except OSError:
                    continue
                self._used.add(ip)
                return ip
        raise RuntimeError("no free loopback address")

    def release(self, ip):
        if self._reuse:
            with self._lock:
                self._used.discard(ip)


class SshdProcess:
    """A running sshd started by SshdLauncher: the main process of a pod's container.

    `container_tag` ("K8S_DOUBLE_POD_UID=<uid>") is in the environment of the sshd and of every
    ssh session it serves."""

    def __init__(self, proc, config, log_path, container_tag=None):
        self.proc, self.config, self.log_path = proc, config, log_path
        self.container_tag = container_tag

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode

    def alive(self):
        return self.proc.poll() is None

    def stop(self, grace=2.0):
        """Stops the whole container: the sshd and every process of its sessions (SIGTERM,
        SIGKILL after `grace`). Returns the processes that would not die (normally [])."""
        root = self.proc.pid if self.proc.returncode is None else None  # not reaped: still ours
        left = proctree.kill_container(root, self.container_tag, grace=grace, poll=self.proc.poll)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            left.append(self.proc.pid)
        return left

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class SshdLauncher:
    """Starts a real OpenSSH sshd for a pod: `launcher(ip, port, pod)` writes
    <workdir>/<pod name>/sshd_config (ListenAddress ip:port, the given host key and
    authorized_keys, the test's environment tag) and runs `sshd -D -e -f` on it, with `env`
    (which should carry the harness tag so teardown finds it; the config path under workdir is a
    second handle)."""

    def __init__(self, workdir, host_key, authorized_keys, env=None, sshd="/usr/sbin/sshd",
                 tag_var=None, tag_value=None, extra_config=()):
        self.workdir = workdir
        self.host_key = host_key
        self.authorized_keys = authorized_keys
        self.env = env
        self.sshd = sshd
        self.tag_var, self.tag_value = tag_var, tag_value
        self.extra_config = list(extra_config)
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def __call__(self, ip, port, pod):
        name = pod["metadata"]["name"]
        d = os.path.join(self.workdir, name)
        os.makedirs(d, exist_ok=True)
        config = os.path.join(d, "sshd_config")
        lines = ["ListenAddress %s:%d" % (ip, port),
                 "HostKey %s" % self.host_key,
                 "AuthorizedKeysFile %s" % self.authorized_keys,
                 "StrictModes no",
                 "PidFile none",
                 "UsePAM no",
                 "MaxStartups 100:30:200",
                 "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no",
                 "PermitRootLogin prohibit-password",
                 "AllowTcpForwarding yes",
                 "Subsystem sftp internal-sftp",
                 "LogLevel INFO"]
        # One SetEnv line: sshd uses the first SetEnv directive only.
        container_tag = "%s=%s" % (POD_TAG_VAR, pod["metadata"].get("uid") or name)
        setenv = [container_tag]
        if self.tag_var:
            setenv.append("%s=%s" % (self.tag_var, self.tag_value))
        lines.append("SetEnv " + " ".join(setenv))
        lines += self.extra_config
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")
        env = dict(os.environ if self.env is None else self.env)
        env[POD_TAG_VAR] = container_tag.split("=", 1)[1]
        log_path = os.path.join(d, "sshd.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([self.sshd, "-D", "-e", "-f", config], env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        return SshdProcess(proc, config, log_path, container_tag)


def controller_ref(obj):
    """metadata.ownerReferences' entry with controller=true (at most one), or None."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def _owner_ref(obj):
    meta = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion") or "apps/v1", "kind": obj.get("kind") or "Deployment",
            "name": meta["name"], "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


class _PodState:
    def __init__(self, name, deployment, tmpl_hash, scenario, start_delay, deployment_uid=None):
        self.name = name
        self.deployment = deployment
        self.deployment_uid = deployment_uid  # ownership goes by UID: a re-created Deployment is another
        self.hash = tmpl_hash
        self.scenario = scenario
        self.start_delay = start_delay
        self.step = "schedule"
        self.next_at = 0.0
        self.ip = None
        self.port = None
        self.sshd = None
        self.ready = False
        self.restarts = 0
        self.terminating = False
        self.started_at = None
        self.pull_toggle = False


class FakeKubelet:
    """FakeKubelet(api, ip_allocator=..., sshd_launcher=..., start_delay=0.3).start()

      api              a KubeApiDouble (or anything with .store and .namespace)
      ip_allocator     callable(pod) -> "127.x.y.z" (default LoopbackIpAllocator())
      sshd_launcher    callable(ip, port, pod) -> handle with stop() (and alive()), e.g.
                       SshdLauncher; a subprocess.Popen is accepted too. None: nothing is
                       started, so pods never become ready.
      start_delay      seconds from "sandbox up" to "container running" (per Deployment:
                       set_scenario(name, start_delay=...))
      probe_interval   readiness probe period (TCP connect to podIP:port)
      termination_delay seconds between "containers stopped" and the pod's removal
      kill_grace       seconds between SIGTERM and SIGKILL when a container is stopped (real:
                       the pod's terminationGracePeriodSeconds, 30 by default)
      crash_interval   crash-loop period; pull_retry_interval image-pull-failure period
    """

    def __init__(self, api, namespace=None, ip_allocator=None, sshd_launcher=None, start_delay=0.3,
                 probe_interval=0.05, termination_delay=0.2, crash_interval=0.5, pull_retry_interval=0.5,
                 node_name="k8s-double-node", host_ip="127.0.0.1", kill_grace=2.0):
        self.store = api.store
        self.namespace = namespace or api.namespace
        self.ip_allocator = ip_allocator or LoopbackIpAllocator()
        self.sshd_launcher = sshd_launcher
        self.start_delay = start_delay
        self.probe_interval = probe_interval
        self.termination_delay = termination_delay
        self.kill_grace = kill_grace
        self.crash_interval = crash_interval
        self.pull_retry_interval = pull_retry_interval
        self.node_name = node_name
        self.host_ip = host_ip
        self.errors = []
        self._scenarios = {}
        self._pods = {}  # pod name -> _PodState
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._rng = random.Random()

    # -- control --------------------------------------------------------------------------

    def set_scenario(self, deployment, scenario="normal", start_delay=None):
        if scenario not in SCENARIOS:
            raise ValueError("unknown scenario %r (one of %s)" % (scenario, ", ".join(SCENARIOS)))
        with self._lock:
            self._scenarios[deployment] = (scenario, start_delay)
        self._poke()

    def start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="k8s-double-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stops the loop and every container it started (each sshd with all its sessions).
        The pods stay in the store as they are."""
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            states = list(self._pods.values())
        for st in states:
            self._stop_sshd(st)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _poke(self):
        with self.store.cond:
            self.store.cond.notify_all()

    # -- queries --------------------------------------------------------------------------

    def pods_of(self, deployment, include_terminating=False):
        with self._lock:
            names = [st.name for st in self._pods.values() if st.deployment == deployment
                     and (include_terminating or not st.terminating)]
        out = []
        for n in names:
            p = self.store.find("pods", self.namespace, n)
            if p is not None:
                out.append(p)
        return out

    def pod_of(self, deployment):
        """The live (non-terminating) pod of the deployment, or None."""
        pods = self.pods_of(deployment)
        return pods[0] if pods else None

    def sshd_of(self, pod_name):
        with self._lock:
            st = self._pods.get(pod_name)
            return st.sshd if st else None

    def sshd_handles(self):
        with self._lock:
            return [st.sshd for st in self._pods.values() if st.sshd is not None]

    # -- the loop -------------------------------------------------------------------------

    def _run(self):
        seen = -1
        while not self._stop.is_set():
            try:
                self._reconcile()
            except Exception as e:  # keep the cluster alive; tests read .errors
                self.errors.append("reconcile: %r" % (e,))
            with self._lock:
                timers = [st.next_at for st in self._pods.values() if st.next_at]
            now = time.monotonic()
            wait = min([0.5] + [max(0.0, t - now) for t in timers])
            with self.store.cond:
                if self.store.rv == seen and wait > 0 and not self._stop.is_set():
                    self.store.cond.wait(wait)
                seen = self.store.rv

    def _scenario_of(self, deployment):
        with self._lock:
            scenario, delay = self._scenarios.get(deployment, ("normal", None))
        return scenario, (self.start_delay if delay is None else delay)

    def _reconcile(self):
        ns = self.namespace
        deployments = {d["metadata"]["name"]: d for d in self.store.list("deployments", ns)[0]}
        now = time.monotonic()
        # Pods deleted through the API (they got a deletionTimestamp) or gone altogether.
        with self._lock:
            states = list(self._pods.values())
        for st in states:
            pod = self.store.find("pods", ns, st.name)
            if pod is None:
                self._forget(st)
                continue
            if pod["metadata"].get("deletionTimestamp") and not st.terminating:
                self._begin_termination(st, pod)
        live_uids = {d["metadata"]["uid"] for d in deployments.values()}
        # ReplicaSets whose Deployment is gone (garbage collection, by owner UID).
        replicasets = {}
        for rs in self.store.list("replicasets", ns)[0]:
            ref = controller_ref(rs)
            if ref and ref.get("kind") == "Deployment" and ref.get("uid") not in live_uids:
                self.store.remove("replicasets", ns, rs["metadata"]["name"])
                continue
            replicasets[rs["metadata"]["name"]] = rs
        # Desired state per Deployment.
        for name, d in deployments.items():
            desired = d.get("spec", {}).get("replicas", 1)
            h = template_hash(d["spec"]["template"])
            uid = d["metadata"]["uid"]
            rs = self._sync_replicasets(d, h, desired, replicasets)
            with self._lock:
                live = [st for st in self._pods.values()
                        if st.deployment_uid == uid and not st.terminating]
            stale = [st for st in live if st.hash != h]
            for st in stale:  # template changed: recreate
                self._terminate(st)
            live = [st for st in live if st.hash == h]
            if desired > len(live) and rs is not None:
                for _ in range(desired - len(live)):
                    self._create_pod(d, h, rs)
            elif desired < len(live):
                for st in sorted(live, key=lambda s: s.name)[desired:]:
                    self._terminate(st)
        # Pods whose Deployment is gone (garbage collection).
        with self._lock:
            orphans = [st for st in self._pods.values()
                       if st.deployment_uid not in live_uids and not st.terminating]
        for st in orphans:
            self._terminate(st)
        # Timers.
        with self._lock:
            due = [st for st in self._pods.values() if st.next_at and st.next_at <= now]
        for st in due:
            self._advance(st)
        # Liveness of started sshds.
        with self._lock:
            running = [st for st in self._pods.values() if st.sshd is not None and not st.terminating]
        for st in running:
            alive = st.sshd.alive() if hasattr(st.sshd, "alive") else st.sshd.poll() is None
            if not alive:
                self._container_died(st)
        for name, d in deployments.items():
            self._update_deployment_status(d)
            self._update_replicaset_status(d)

    # -- pod lifecycle --------------------------------------------------------------------

    def _sync_replicasets(self, d, h, desired, replicasets):
        """The Deployment's ReplicaSets (those it controls, by UID): the current template's one
        exists with `desired` replicas, older ones are scaled to 0 and pruned beyond
        revisionHistoryLimit. Returns the current one (None if it cannot be created)."""
        ns, dname, uid = self.namespace, d["metadata"]["name"], d["metadata"]["uid"]
        owned = [rs for rs in replicasets.values()
                 if (controller_ref(rs) or {}).get("uid") == uid]
        current_name = "%s-%s" % (dname, h)
        current = next((rs for rs in owned if rs["metadata"]["name"] == current_name), None)
        if current is None:
            template = copy.deepcopy(d["spec"]["template"])
            tmeta = template.setdefault("metadata", {})
            tmeta["labels"] = dict(tmeta.get("labels") or {}, **{"pod-template-hash": h})
            selector = copy.deepcopy(d["spec"]["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": current_name, "labels": dict(tmeta["labels"]),
                               "annotations": {"deployment.kubernetes.io/desired-replicas": str(desired),
                                               "deployment.kubernetes.io/max-replicas": str(desired + 1),
                                               "deployment.kubernetes.io/revision": str(len(owned) + 1)},
                               "ownerReferences": [_owner_ref(d)]},
                  "spec": {"replicas": desired, "selector": selector, "template": template}}
            try:
                current = self.store.create("replicasets", ns, rs)
            except status.ApiError as e:  # a name taken by a ReplicaSet that is not this Deployment's
                self.errors.append("replicaset %s: %s" % (current_name, e))
                return None
            replicasets[current_name] = current
            owned.append(current)
        for rs in owned:
            want = desired if rs is current else 0
            if rs["spec"].get("replicas", 1) != want:
                def scale(obj, want=want):
                    obj["spec"]["replicas"] = want
                    obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
                    obj["metadata"].setdefault("annotations", {})[
                        "deployment.kubernetes.io/desired-replicas"] = str(desired)
                updated = self.store.mutate("replicasets", ns, rs["metadata"]["name"], scale)
                if rs is current and updated is not None:
                    current = updated
        old = sorted((rs for rs in owned if rs is not current),
                     key=lambda rs: int(rs["metadata"].get("annotations", {}).get(
                         "deployment.kubernetes.io/revision", "0")))
        limit = d["spec"].get("revisionHistoryLimit", 10)
        for rs in old[:max(0, len(old) - limit)]:
            self.store.remove("replicasets", ns, rs["metadata"]["name"])
        return current

    def _update_replicaset_status(self, d):
        uid = d["metadata"]["uid"]
        with self._lock:
            live = [st for st in self._pods.values() if st.deployment_uid == uid and not st.terminating]
        for rs in self.store.list("replicasets", self.namespace)[0]:
            if (controller_ref(rs) or {}).get("uid") != uid:
                continue
            h = rs["metadata"].get("labels", {}).get("pod-template-hash")
            mine = [st for st in live if st.hash == h]
            replicas, ready = len(mine), sum(1 for st in mine if st.ready)

            def write(obj, replicas=replicas, ready=ready):
                s = {"replicas": replicas}  # not omitempty; the other counters are
                for key, value in (("fullyLabeledReplicas", replicas), ("readyReplicas", ready),
                                   ("availableReplicas", ready),
                                   ("observedGeneration", obj["metadata"].get("generation", 1))):
                    if value:
                        s[key] = value
                obj["status"] = s
            self.store.mutate("replicasets", self.namespace, rs["metadata"]["name"], write)

    def _create_pod(self, d, h, rs):
        dname = d["metadata"]["name"]
        template = copy.deepcopy(d["spec"]["template"])
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels["pod-template-hash"] = h
        scenario, delay = self._scenario_of(dname)
        for _ in range(10):
            name = "%s-%s-%s" % (dname, h, random_suffix(rng=self._rng))
            if self.store.find("pods", self.namespace, name) is None:
                break
        meta = {"name": name, "generateName": "%s-%s-" % (dname, h), "labels": labels,
                "ownerReferences": [_owner_ref(rs)]}
        if template.get("metadata", {}).get("annotations"):
            meta["annotations"] = dict(template["metadata"]["annotations"])
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec", {}),
               "status": {"phase": "Pending", "qosClass": "BestEffort"}}
        self.store.create("pods", self.namespace, pod, validate=False)
        st = _PodState(name, dname, h, scenario, delay, deployment_uid=d["metadata"]["uid"])
        st.port = self._target_port(d)
        st.next_at = time.monotonic()
        with self._lock:
            self._pods[name] = st

    @staticmethod
    def _target_port(d):
        ann = (d["metadata"].get("annotations") or {}).get(TARGET_PORT_ANNOTATION)
        if ann:
            try:
                return int(ann)
            except ValueError:
                pass
        for c in d["spec"]["template"]["spec"].get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("containerPort"):
                    return int(p["containerPort"])
        return 22

    def _mutate(self, st, fn):
        return self.store.mutate("pods", self.namespace, st.name, fn)

    def _container_name(self, pod):
        cs = pod["spec"].get("containers") or [{}]
        return cs[0].get("name", "spark"), cs[0].get("image", "")

    def _conditions(self, st, pod, ready):
        now = rfc3339()
        old = {c["type"]: c for c in pod["status"].get("conditions", [])}

        def cond(type_, value, reason=None, message=None):
            c = {"type": type_, "status": value}
            prev = old.get(type_)
            c["lastProbeTime"] = None
            c["lastTransitionTime"] = prev["lastTransitionTime"] if prev and prev["status"] == value else now
            if reason:
                c["reason"] = reason
            if message:
                c["message"] = message
            return c

        cname = self._container_name(pod)[0]
        not_ready_msg = "containers with unready status: [%s]" % cname
        return [cond("PodReadyToStartContainers", "True"),
                cond("Initialized", "True"),
                cond("Ready", "True") if ready else cond("Ready", "False", "ContainersNotReady", not_ready_msg),
                cond("ContainersReady", "True") if ready else cond("ContainersReady", "False",
                                                                    "ContainersNotReady", not_ready_msg),
                cond("PodScheduled", "True")]

    def _container_status(self, pod, state, ready=False, started=False, restarts=0, last_state=None):
        cname, image = self._container_name(pod)
        cs = {"name": cname, "state": state, "lastState": last_state or {}, "ready": ready,
              "restartCount": restarts, "image": image, "imageID": "", "started": started}
        if "running" in state or "terminated" in state or last_state:
            cs["imageID"] = "%s@sha256:%s" % (image.split(":")[0], "0" * 64)
            cs["containerID"] = "containerd://%s" % ("%064x" % abs(hash((pod["metadata"]["uid"], restarts))))[:64]
        return cs

    def _advance(self, st):
        st.next_at = 0.0
        if st.terminating:
            return self._finish_termination(st)
        now = time.monotonic()
        if st.step == "schedule":
            def bind(p):
                p["spec"]["nodeName"] = self.node_name
                p["status"]["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                              "lastTransitionTime": rfc3339()}]
            self._mutate(st, bind)
            st.step, st.next_at = "sandbox", now
        elif st.step == "sandbox":
            pod = self.store.find("pods", self.namespace, st.name)
            if pod is None:
                return
            try:
                ip = self.ip_allocator(pod)
                if ipaddress.ip_address(ip) not in LOOPBACK:
                    raise ValueError("pod IP %s is outside 127.0.0.0/8" % ip)
            except Exception as e:
                self.errors.append("ip allocation for %s: %s" % (st.name, e))
                st.next_at = now + 1.0
                return
            st.ip = ip
            cname, image = self._container_name(pod)
            if st.scenario == "image-pull-failure":
                waiting = self._pull_waiting(image, first=True)
                st.step, st.next_at = "pull-backoff", now + self.pull_retry_interval
            else:
                waiting = {"waiting": {"reason": "ContainerCreating"}}
                st.step, st.next_at = "start", now + st.start_delay

            def sandbox(p):
                s = p["status"]
                s["conditions"] = self._conditions(st, p, False)
                s["hostIP"] = self.host_ip
                s["hostIPs"] = [{"ip": self.host_ip}]
                s["podIP"] = ip
                s["podIPs"] = [{"ip": ip}]
                s["startTime"] = rfc3339()
                s["containerStatuses"] = [self._container_status(p, waiting)]
            self._mutate(st, sandbox)
        elif st.step == "pull-backoff":
            pod = self.store.find("pods", self.namespace, st.name)
            if pod is None:
                return
            st.pull_toggle = not st.pull_toggle
            waiting = self._pull_waiting(self._container_name(pod)[1], first=not st.pull_toggle)
            self._mutate(st, lambda p: p["status"].__setitem__(
                "containerStatuses", [self._container_status(p, waiting)]))
            st.next_at = now + self.pull_retry_interval
        elif st.step in ("start", "restart"):
            self._run_container(st)
        elif st.step == "probing":
            if self._probe(st):
                self._set_ready(st, True)
                st.step = "ready"
            else:
                st.next_at = now + self.probe_interval
        elif st.step == "crash":
            self._crash(st)

    def _pull_waiting(self, image, first):
        if first:
            return {"waiting": {"reason": "ErrImagePull", "message": (
                'failed to pull and unpack image "%s": failed to resolve reference "%s": %s: not found'
                % (image, image, image))}}
        return {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "%s"' % image}}

    def _run_container(self, st):
        now = time.monotonic()
        pod = self.store.find("pods", self.namespace, st.name)
        if pod is None:
            return
        if st.scenario == "normal" and self.sshd_launcher is not None:
            try:
                st.sshd = self.sshd_launcher(st.ip, st.port, pod)
            except Exception as e:
                self.errors.append("sshd launch for %s: %s" % (st.name, e))
                st.sshd = None
        st.started_at = rfc3339()
        last = (pod["status"].get("containerStatuses") or [{}])[0].get("lastState") if st.restarts else None

        def running(p):
            s = p["status"]
            s["phase"] = "Running"
            s["conditions"] = self._conditions(st, p, False)
            s["containerStatuses"] = [self._container_status(
                p, {"running": {"startedAt": st.started_at}}, ready=False, started=True,
                restarts=st.restarts, last_state=last)]
        self._mutate(st, running)
        if st.scenario == "crash-loop":
            st.step, st.next_at = "crash", now + self.crash_interval
        elif st.scenario == "never-ready":
            st.step = "idle"
        else:
            st.step, st.next_at = "probing", now

    def _crash(self, st):
        now = time.monotonic()
        finished = rfc3339()
        st.restarts += 1
        backoff = min(10 * 2 ** (st.restarts - 1), 300)

        def crashed(p):
            cname = self._container_name(p)[0]
            last = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": st.started_at or finished,
                                   "finishedAt": finished,
                                   "containerID": "containerd://%064x" % st.restarts}}
            waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                "back-off %ds restarting failed container=%s pod=%s_%s(%s)"
                % (backoff, cname, st.name, self.namespace, p["metadata"]["uid"]))}}
            s = p["status"]
            s["conditions"] = self._conditions(st, p, False)
            s["containerStatuses"] = [self._container_status(p, waiting, restarts=st.restarts, last_state=last)]
        self._mutate(st, crashed)
        st.step, st.next_at = "restart", now + self.crash_interval

    def _container_died(self, st):
        """The sshd exited on its own: the rest of the container dies with it (when a container's
        main process exits, the runtime kills what is left in its cgroup, open ssh sessions
        included), and restartPolicy Always restarts the container."""
        exit_code = getattr(st.sshd, "returncode", None)
        tag = getattr(st.sshd, "container_tag", None)
        if tag:  # the sshd is gone, so its children were reparented: find them by the tag
            left = proctree.kill_container(None, tag, grace=0)
            if left:
                self.errors.append("pod %s: processes survived SIGKILL: %r" % (st.name, left))
        st.sshd = None
        st.restarts += 1
        finished = rfc3339()
        if exit_code is not None and exit_code < 0:  # killed by a signal: 128 + signal, as runtimes report
            exit_code = 128 - exit_code

        def died(p):
            last = {"terminated": {"exitCode": exit_code if exit_code is not None else 1,
                                   "reason": "Error", "startedAt": st.started_at or finished,
                                   "finishedAt": finished}}
            s = p["status"]
            s["conditions"] = self._conditions(st, p, False)
            s["containerStatuses"] = [self._container_status(p, {"waiting": {"reason": "ContainerCreating"}},
                                                             restarts=st.restarts, last_state=last)]
        self._mutate(st, died)
        st.ready = False
        st.step, st.next_at = "restart", time.monotonic() + min(st.start_delay, 0.2)

    def _probe(self, st):
        try:
            with socket.create_connection((st.ip, st.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _set_ready(self, st, ready):
        st.ready = ready

        def mark(p):
            s = p["status"]
            s["conditions"] = self._conditions(st, p, ready)
            for cs in s.get("containerStatuses", []):
                cs["ready"] = ready
        self._mutate(st, mark)

    # -- termination ----------------------------------------------------------------------

    def _terminate(self, st):
        """The controller deletes the pod (graceful: deletionTimestamp first)."""
        try:
            self.store.delete("pods", self.namespace, st.name)
        except status.ApiError:
            pass
        pod = self.store.find("pods", self.namespace, st.name)
        if pod is None:
            self._forget(st)
            return
        self._begin_termination(st, pod)

    def _begin_termination(self, st, pod):
        st.terminating = True
        st.ready = False
        exit_code = self._stop_sshd(st)
        if exit_code is None:
            exit_code = 0

        def stopped(p):
            s = p["status"]
            finished = rfc3339()
            if s.get("containerStatuses"):
                s["conditions"] = self._conditions(st, p, False)
                for cs in s["containerStatuses"]:
                    started = (cs.get("state", {}).get("running") or {}).get("startedAt", finished)
                    cs["state"] = {"terminated": {"exitCode": exit_code,
                                                  "reason": "Completed" if exit_code == 0 else "Error",
                                                  "startedAt": started, "finishedAt": finished}}
                    cs["ready"] = False
                    cs["started"] = False
        self._mutate(st, stopped)
        st.next_at = time.monotonic() + self.termination_delay

    def _finish_termination(self, st):
        self.store.remove("pods", self.namespace, st.name)
        self._forget(st)

    def _stop_sshd(self, st):
        """Stops the pod's container as a runtime does: SIGTERM to the sshd and every process
        under it or tagged as the pod's (sessions included: they setsid() out of the sshd's
        session), SIGKILL to survivors after kill_grace. The tree is collected before anything
        is signalled (see proctree.kill_container). Returns the sshd's exit code as a runtime
        reports it (128 + signal when killed by one), or None if no sshd ran."""
        h = st.sshd
        st.sshd = None
        if h is None:
            return None
        try:
            root = getattr(h, "pid", None)
            if getattr(h, "returncode", None) is not None:
                root = None  # already exited and reaped: the pid may belong to someone else now
            poll = getattr(h, "poll", None) or getattr(getattr(h, "proc", None), "poll", None)
            left = proctree.kill_container(root, getattr(h, "container_tag", None), grace=self.kill_grace,
                                           poll=poll)
            if left:
                self.errors.append("pod %s: processes survived SIGKILL: %r" % (st.name, left))
            if hasattr(h, "stop"):
                h.stop()  # reaps (everything is gone already) or stops a handle of another kind
            else:  # a Popen
                h.wait(timeout=5)
        except Exception as e:
            self.errors.append("sshd stop for %s: %s" % (st.name, e))
        code = getattr(h, "returncode", None)
        if code is None:
            code = getattr(getattr(h, "proc", None), "returncode", None)
        if code is not None and code < 0:  # killed by a signal: 128 + signal, as runtimes report
            code = 128 - code
        return code

    def _forget(self, st):
        self._stop_sshd(st)
        with self._lock:
            self._pods.pop(st.name, None)
        if st.ip and hasattr(self.ip_allocator, "release"):
            self.ip_allocator.release(st.ip)

    # -- deployment status ----------------------------------------------------------------

    def _update_deployment_status(self, d):
        name = d["metadata"]["name"]
        desired = d["spec"].get("replicas", 1)
        h = template_hash(d["spec"]["template"])
        uid = d["metadata"]["uid"]
        with self._lock:
            live = [st for st in self._pods.values() if st.deployment_uid == uid and not st.terminating]
        replicas = len(live)
        updated = sum(1 for st in live if st.hash == h)
        ready = sum(1 for st in live if st.ready)
        available = ready
        unavailable = max(desired - available, 0)
        max_unavailable = desired * 25 // 100
        rs_name = "%s-%s" % (name, h)

        def write(obj):
            old = obj.get("status") or {}
            old_conds = {c["type"]: c for c in old.get("conditions", [])}
            now = rfc3339()

            def cond(type_, value, reason, message):
                prev = old_conds.get(type_)
                c = {"type": type_, "status": value}
                same = prev is not None and prev["status"] == value
                unchanged = same and prev.get("reason") == reason and prev.get("message") == message
                c["lastUpdateTime"] = prev["lastUpdateTime"] if unchanged else now
                c["lastTransitionTime"] = prev["lastTransitionTime"] if same else now
                c["reason"] = reason
                c["message"] = message
                return c

            s = {}
            gen = obj["metadata"].get("generation", 1)
            s["observedGeneration"] = gen
            for key, value in (("replicas", replicas), ("updatedReplicas", updated), ("readyReplicas", ready),
                               ("availableReplicas", available), ("unavailableReplicas", unavailable)):
                if value:
                    s[key] = value
            avail_ok = available >= desired - max_unavailable
            conds = [cond("Available", "True" if avail_ok else "False",
                          "MinimumReplicasAvailable" if avail_ok else "MinimumReplicasUnavailable",
                          "Deployment has minimum availability." if avail_ok
                          else "Deployment does not have minimum availability.")]
            done = updated == desired and available == desired and replicas == desired
            conds.append(cond("Progressing", "True", "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                              ('ReplicaSet "%s" has successfully progressed.' if done
                               else 'ReplicaSet "%s" is progressing.') % rs_name))
            order = {"Progressing": 0, "Available": 1}
            if old_conds:
                conds.sort(key=lambda c: list(old_conds).index(c["type"]) if c["type"] in old_conds else 9)
            else:
                conds.sort(key=lambda c: order[c["type"]])
            s["conditions"] = conds
            obj["status"] = s
        self.store.mutate("deployments", self.namespace, name, write)
