"""The object store behind the API double: etcd-like revisions, watch history, and the per-type
rules (defaulting, validation, generation, status) of the kube-apiserver registries it emulates.

Sources, by behaviour:
  * resourceVersion is one global, increasing integer, like etcd's revision (every write gets the
    next one; https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions says
    clients must treat it as opaque).
  * Update / optimistic concurrency: pkg/registry/generic/registry/store.go (Store.Update): a body
    without resourceVersion is an unconditional update when the strategy allows it (all types here
    do); otherwise a different resourceVersion is NewConflict(..., OptimisticLockErrorMsg).
  * A write that changes nothing is not written: no new resourceVersion, no watch event
    (GuaranteedUpdate in staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go compares bytes).
  * Deployment generation: PrepareForUpdate in pkg/registry/apps/deployment/strategy.go bumps
    metadata.generation when spec OR annotations change, and resets status on main-resource writes.
  * Scale subresource: pkg/registry/apps/deployment/storage/storage.go (scaleFromDeployment,
    scaleUpdatedObjectInfo): the Scale carries the Deployment's name/namespace/uid/
    resourceVersion/creationTimestamp; its resourceVersion is copied onto the Deployment, so a
    stale one is a Conflict on deployments.apps; an invalid Scale is Scale.autoscaling Invalid.
  * DELETE answers: finalizeDelete in store.go returns a Success Status (details.kind is the
    resource) unless the store sets ReturnDeletedObject (services, pods), which return the object.
  * Watch history and compaction: staging/src/k8s.io/apiserver/pkg/storage/cacher/watch_cache.go
    (getAllEventsSinceLocked): an RV older than the retained history is
    NewResourceExpired("too old resource version: %d (%d)").
  * JSON field presence follows the Go types' omitempty (staging/src/k8s.io/api/apps/v1/types.go,
    autoscaling/v1/types.go): Deployment spec.replicas is *int32, so an explicit 0 IS written;
    DeploymentStatus counters are omitempty int32s, so zeros are left out; Scale spec.replicas is an
    omitempty int32 (left out at 0) while Scale status.replicas is not omitempty.
"""

import base64
import copy
import json
import random
import re
import threading
import time
import uuid
from datetime import datetime, timezone

from . import patch as patchlib
from . import labelsel
from . import status

# apimachinery pkg/util/rand/rand.go: the alphabet of generated name suffixes and
# SafeEncodeString (no vowels, no look-alikes).
NAME_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def rfc3339(t=None):
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(t=None):
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def random_suffix(n=5, rng=random):
    return "".join(rng.choice(NAME_ALPHANUMS) for _ in range(n))


def safe_encode(s):
    return "".join(NAME_ALPHANUMS[ord(c) % len(NAME_ALPHANUMS)] for c in s)


def template_hash(template):
    """Like controller.ComputeHash: FNV-1a 32 of the pod template, safe-encoded."""
    h = 2166136261
    for b in json.dumps(template, sort_keys=True).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return safe_encode(str(h))


class ResourceType:
    """One served resource: where it lives in the URL space and how its store behaves."""

    def __init__(self, plural, kind, group, version, namespaced=True, return_deleted_object=False,
                 subresources=(), has_status=True, name_rule="subdomain"):
        self.plural, self.kind, self.group, self.version = plural, kind, group, version
        self.namespaced = namespaced
        self.return_deleted_object = return_deleted_object
        self.subresources = tuple(subresources)
        self.has_status = has_status
        self.name_rule = name_rule

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def list_kind(self):
        return self.kind + "List"

    @property
    def qualified(self):
        return status.qualified(self.group, self.plural)

    def __repr__(self):
        return "ResourceType(%s)" % self.qualified


RESOURCES = {
    "deployments": ResourceType("deployments", "Deployment", "apps", "v1",
                                subresources=("scale", "status")),
    # Written by the fake deployment controller (kubelet.py): one per Deployment template, owning
    # its pods. No scale subresource (nothing here uses it).
    "replicasets": ResourceType("replicasets", "ReplicaSet", "apps", "v1", subresources=("status",)),
    "pods": ResourceType("pods", "Pod", "", "v1", return_deleted_object=True, subresources=("status",)),
    "events": ResourceType("events", "Event", "", "v1", has_status=False),
    "services": ResourceType("services", "Service", "", "v1", return_deleted_object=True,
                             subresources=("status",), name_rule="dns1035"),
    "leases": ResourceType("leases", "Lease", "coordination.k8s.io", "v1", has_status=False),
}

# (group, version) -> {plural: ResourceType}
BY_GROUP_VERSION = {}
for _rt in RESOURCES.values():
    BY_GROUP_VERSION.setdefault((_rt.group, _rt.version), {})[_rt.plural] = _rt

META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
              "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
              "annotations", "ownerReferences", "finalizers", "managedFields")


def ordered(rt, obj):
    """kind, apiVersion, metadata (in ObjectMeta order), then the rest, as Go encodes them."""
    out = {"kind": rt.kind, "apiVersion": rt.api_version}
    meta = obj.get("metadata") or {}
    m = {k: meta[k] for k in META_ORDER if k in meta}
    m.update({k: v for k, v in meta.items() if k not in m})
    out["metadata"] = m
    for k, v in obj.items():
        if k not in ("kind", "apiVersion", "metadata"):
            out[k] = v
    return out


def without_type(obj):
    """List items carry no kind/apiVersion in kube-apiserver's JSON."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def rv_of(obj):
    return int(obj["metadata"]["resourceVersion"])


# --------------------------------------------------------------------------------------------
# Name validation (k8s.io/apimachinery pkg/util/validation/validation.go)

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                 "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
                 "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
                     "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                     "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
               "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
               "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def validate_name(rt, name):
    if rt.name_rule == "dns1035":
        if len(name) > 63 or not _DNS1035_LABEL.match(name):
            return [status.invalid_field("metadata.name", name, DNS1035_MSG)]
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return [status.invalid_field("metadata.name", name, SUBDOMAIN_MSG)]
    return []


# --------------------------------------------------------------------------------------------
# Defaulting (apps/v1 and core/v1 SetDefaults_*), a subset covering what these objects use


def _image_pull_policy(image):
    ref = image.split("@")[0]
    last = ref.rsplit("/", 1)[-1]
    if "@" in image:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def default_pod_spec(spec, template=False):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in spec.get("containers") or []:
        c.setdefault("resources", {})
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        if c.get("image"):
            c.setdefault("imagePullPolicy", _image_pull_policy(c["image"]))
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
    if not template:
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
    return spec


def default_deployment(obj):
    spec = obj.setdefault("spec", {})
    if "replicas" not in spec:
        spec["replicas"] = 1
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}), template=True)
    obj.setdefault("status", {})


def default_replicaset(obj):
    # SetDefaults_ReplicaSet: replicas 1 when absent; the pod template as a Deployment's.
    spec = obj.setdefault("spec", {})
    if "replicas" not in spec:
        spec["replicas"] = 1
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}), template=True)
    # ReplicaSetStatus.Replicas is not omitempty (the other counters are).
    obj.setdefault("status", {"replicas": 0})


def default_pod(obj):
    default_pod_spec(obj.setdefault("spec", {}))
    st = obj.setdefault("status", {})
    st.setdefault("phase", "Pending")
    st.setdefault("qosClass", "BestEffort")


def default_service(obj):
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for p in spec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        if "targetPort" not in p and "port" in p:
            p["targetPort"] = p["port"]
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    st = obj.setdefault("status", {})
    st.setdefault("loadBalancer", {})


DEFAULTERS = {"deployments": default_deployment, "replicasets": default_replicaset, "pods": default_pod,
              "services": default_service}


# --------------------------------------------------------------------------------------------
# Validation (pkg/apis/apps/validation, pkg/apis/core/validation, pkg/apis/coordination/validation)


def _nonneg(field, v):
    if isinstance(v, int) and not isinstance(v, bool) and v < 0:
        return [status.invalid_field(field, v, "must be greater than or equal to 0")]
    return []


def validate_deployment(obj, old=None):
    errs = []
    spec = obj.get("spec") or {}
    errs += _nonneg("spec.replicas", spec.get("replicas"))
    sel = spec.get("selector")
    if sel is None:
        errs.append(status.required_field("spec.selector"))
    elif not (sel.get("matchLabels") or sel.get("matchExpressions")):
        errs.append(status.invalid_field("spec.selector", status.GoRepr(status.go_label_selector(sel)),
                                         "empty selector is invalid for deployment"))
    else:
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not labelsel.selector_from_label_selector_object(sel).matches(labels):
            errs.append(status.invalid_field("spec.template.metadata.labels", labels,
                                             "`selector` does not match template `labels`"))
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    containers = pod_spec.get("containers")
    if not containers:
        errs.append(status.required_field("spec.template.spec.containers"))
    else:
        for i, c in enumerate(containers):
            if not c.get("name"):
                errs.append(status.required_field("spec.template.spec.containers[%d].name" % i))
            if not c.get("image"):
                errs.append(status.required_field("spec.template.spec.containers[%d].image" % i))
    if pod_spec.get("restartPolicy", "Always") != "Always":
        errs.append(status.FieldError("unsupported", "spec.template.spec.restartPolicy",
                                      pod_spec.get("restartPolicy"), 'supported values: "Always"'))
    errs += _nonneg("spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    errs += _nonneg("spec.minReadySeconds", spec.get("minReadySeconds"))
    if old is not None and (old.get("spec") or {}).get("selector") != sel:
        errs.append(status.invalid_field("spec.selector", status.GoRepr(status.go_label_selector(sel)),
                                         "field is immutable"))
    return errs


def validate_replicaset(obj, old=None):
    # pkg/apis/apps/validation ValidateReplicaSetSpec: the parts a Deployment shares.
    errs = []
    spec = obj.get("spec") or {}
    errs += _nonneg("spec.replicas", spec.get("replicas"))
    sel = spec.get("selector")
    if sel is None:
        errs.append(status.required_field("spec.selector"))
    elif not (sel.get("matchLabels") or sel.get("matchExpressions")):
        errs.append(status.invalid_field("spec.selector", status.GoRepr(status.go_label_selector(sel)),
                                         "empty selector is invalid for deployment"))
    else:
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not labelsel.selector_from_label_selector_object(sel).matches(labels):
            errs.append(status.invalid_field("spec.template.metadata.labels", labels,
                                             "`selector` does not match template `labels`"))
    if old is not None and (old.get("spec") or {}).get("selector") != sel:
        errs.append(status.invalid_field("spec.selector", status.GoRepr(status.go_label_selector(sel)),
                                         "field is immutable"))
    return errs


def validate_pod(obj, old=None):
    errs = []
    containers = (obj.get("spec") or {}).get("containers")
    if not containers:
        errs.append(status.required_field("spec.containers"))
    return errs


def validate_service(obj, old=None):
    errs = []
    spec = obj.get("spec") or {}
    if spec.get("type") not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.append(status.FieldError("unsupported", "spec.type", spec.get("type"),
                                      'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'))
    if spec.get("type") != "ExternalName" and not spec.get("ports"):
        errs.append(status.required_field("spec.ports"))
    ports = spec.get("ports") or []
    names, keys = set(), set()
    for i, p in enumerate(ports):
        # validateServicePort: a name is required once there are two ports, a DNS-1123 label,
        # unique; and no two ports share (protocol, port) (ValidateService).
        name = p.get("name") or ""
        if len(ports) > 1 and not name:
            errs.append(status.required_field("spec.ports[%d].name" % i))
        elif name:
            if len(name) > 63 or not _DNS1123_LABEL.match(name):
                errs.append(status.invalid_field("spec.ports[%d].name" % i, name, DNS1123_LABEL_MSG))
            if name in names:
                errs.append(status.FieldError("duplicate", "spec.ports[%d].name" % i, name))
            names.add(name)
        port = p.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            errs.append(status.invalid_field("spec.ports[%d].port" % i, port,
                                             "must be between 1 and 65535, inclusive"))
        key = (p.get("protocol") or "TCP", port)
        if key in keys:
            errs.append(status.FieldError("duplicate", "spec.ports[%d]" % i, status.GoRepr(
                'core.ServicePort{Name:"", Protocol:"%s", AppProtocol:(*string)(nil), Port:%s, '
                'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}' % key)))
        keys.add(key)
    # validateLoadBalancerClassField (pkg/apis/core/validation): only for LoadBalancer, and fixed
    # once set while the type stays LoadBalancer.
    cls = spec.get("loadBalancerClass")
    if cls is not None and spec.get("type") != "LoadBalancer":
        errs.append(status.invalid_field("spec.loadBalancerClass", cls,
                                         "may only be used when `type` is 'LoadBalancer'"))
    if old is not None:
        old_spec = old.get("spec") or {}
        if (old_spec.get("type") == "LoadBalancer" and spec.get("type") == "LoadBalancer"
                and old_spec.get("loadBalancerClass") != cls):
            errs.append(status.invalid_field("spec.loadBalancerClass", cls, "may not change once set"))
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP") and spec.get("clusterIP") != old_ip:
            errs.append(status.invalid_field("spec.clusterIPs[0]", [spec.get("clusterIP")],
                                             "may not change once set"))
    return errs


def validate_lease(obj, old=None):
    spec = obj.get("spec") or {}
    errs = []
    d = spec.get("leaseDurationSeconds")
    if d is not None and (not isinstance(d, int) or d <= 0):
        errs.append(status.invalid_field("spec.leaseDurationSeconds", d, "must be greater than 0"))
    errs += _nonneg("spec.leaseTransitions", spec.get("leaseTransitions"))
    return errs


def validate_event(obj, old=None):
    errs = []
    ns = (obj.get("metadata") or {}).get("namespace", "")
    inv = obj.get("involvedObject") or {}
    if inv.get("namespace") and ns and inv["namespace"] != ns:
        errs.append(status.invalid_field("involvedObject.namespace", inv["namespace"],
                                         "does not match event.namespace"))
    return errs


def _go_json_type(v):
    """How encoding/json names a JSON value in an UnmarshalTypeError."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), "null")


def typed_decode_error(kind, obj):
    """The error decoding `obj` into its Go type gives, for the fields the gateway writes whose
    JSON type the double would otherwise not check (ObjectMeta.ResourceVersion is a string,
    ScaleSpec.Replicas an int32), or None."""
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    if rv is not None and not isinstance(rv, str):
        return ("json: cannot unmarshal %s into Go struct field ObjectMeta.metadata.resourceVersion of type string"
                % _go_json_type(rv))
    if kind == "Scale":
        r = (obj.get("spec") or {}).get("replicas")
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float))):
            return ("json: cannot unmarshal %s into Go struct field ScaleSpec.spec.replicas of type int32"
                    % _go_json_type(r))
        if isinstance(r, float) and not r.is_integer():
            return ("json: cannot unmarshal number %s into Go struct field ScaleSpec.spec.replicas of type int32"
                    % json.dumps(r))
    return None


def _decode_into(kind, obj, patched):
    """Raises what kube-apiserver answers when a PUT body (400 BadRequest from
    transformDecodeError, staging/src/k8s.io/apiserver/pkg/endpoints/handlers) or a patched
    object (422 Invalid on the field "patch", jsonPatcher.applyPatchToCurrentObject in
    handlers/patch.go) does not fit the Go type."""
    msg = typed_decode_error(kind, obj)
    if msg is None:
        return
    if patched:
        raise status.invalid("", "", "", [status.invalid_field(
            "patch", json.dumps(obj, separators=(",", ":")), msg)])
    raise status.bad_request("%s in version %s cannot be handled as a %s: %s" % (kind, status.go_quote("v1"), kind, msg))


VALIDATORS = {"deployments": validate_deployment, "replicasets": validate_replicaset, "pods": validate_pod, "services": validate_service,
              "leases": validate_lease, "events": validate_event}


# --------------------------------------------------------------------------------------------
# The store


class HistoryEvent:
    """One committed write. `time` is when (time.monotonic()), for the watch-lag fault."""
    __slots__ = ("rv", "type", "resource", "namespace", "name", "obj", "prev", "time")

    def __init__(self, rv, type_, resource, namespace, name, obj, prev, time_=None):
        self.rv, self.type, self.resource, self.namespace, self.name = rv, type_, resource, namespace, name
        self.obj, self.prev = obj, prev
        self.time = time.monotonic() if time_ is None else time_

    def __repr__(self):
        return "HistoryEvent(%d %s %s/%s/%s)" % (self.rv, self.type, self.resource, self.namespace, self.name)


class Subscription:
    """The events committed after subscribe(), for one resource (and namespace, if given), in
    order. Like a watch-cache watcher, it keeps receiving events whatever compaction does."""

    def __init__(self, store, resource, ns):
        self.store, self.resource, self.namespace = store, resource, ns
        self.queue = []

    def take(self):
        with self.store.cond:
            items, self.queue = self.queue, []
            return items

    def close(self):
        self.store.unsubscribe(self)


class Store:
    """Thread-safe. Objects are stored with kind/apiVersion; every getter returns deep copies.

    `cond` is notified on every committed write (and on compaction), so watch streams and the
    fake kubelet can wait for changes."""

    def __init__(self, namespaces=("default", "kube-system", "kube-public", "kube-node-lease"),
                 start_rv=1000, history_limit=None, rng=None):
        self.cond = threading.Condition(threading.RLock())
        self.rv = start_rv
        self.floor = start_rv  # every event with rv > floor is still in self.history
        self.history = []
        self.history_limit = history_limit
        self.objects = {}  # (resource, namespace, name) -> object
        self.namespaces = set(namespaces)
        self.rng = rng or random.Random()
        self._allocated_ips = set()
        self._allocated_node_ports = set()
        self._subscriptions = []

    # -- basics ---------------------------------------------------------------------------

    @staticmethod
    def rt(resource):
        return RESOURCES[resource]

    def current_rv(self):
        with self.cond:
            return self.rv

    def add_namespace(self, ns):
        with self.cond:
            self.namespaces.add(ns)

    def _commit(self, resource, ns, name, type_, obj, prev):
        """Stores (or removes) the object with the next revision and records the event."""
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj = ordered(RESOURCES[resource], obj)
        key = (resource, ns, name)
        if type_ == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        event = HistoryEvent(self.rv, type_, resource, ns, name, obj,
                             copy.deepcopy(prev) if prev is not None else None)
        self.history.append(event)
        for sub in self._subscriptions:
            if sub.resource == resource and (sub.namespace is None or sub.namespace == ns):
                sub.queue.append(event)
        if self.history_limit is not None:
            while len(self.history) > self.history_limit:
                self.floor = self.history.pop(0).rv
        self.cond.notify_all()
        return copy.deepcopy(obj)

    def _get_locked(self, resource, ns, name):
        obj = self.objects.get((resource, ns, name))
        if obj is None:
            rt = RESOURCES[resource]
            raise status.not_found(rt.group, rt.plural, name)
        return obj

    # -- reads ----------------------------------------------------------------------------

    def get(self, resource, ns, name):
        with self.cond:
            return copy.deepcopy(self._get_locked(resource, ns, name))

    def find(self, resource, ns, name):
        """get() that answers None instead of raising NotFound."""
        with self.cond:
            obj = self.objects.get((resource, ns, name))
            return copy.deepcopy(obj) if obj is not None else None

    def _select(self, resource, ns, label_sel, field_sel, source):
        out = []
        for (res, o_ns, name), obj in sorted(source.items()):
            if res != resource or (ns is not None and o_ns != ns):
                continue
            if label_sel is not None and not label_sel.matches(obj["metadata"].get("labels")):
                continue
            if field_sel is not None and not field_sel.matches(obj):
                continue
            out.append(obj)
        return out

    def list(self, resource, ns=None, label_selector=None, field_selector=None, at_rv=None):
        """(items, rv): deep copies sorted by namespace/name, at the current revision or, with
        at_rv, at that older revision (reconstructed from history; Expired if compacted)."""
        with self.cond:
            if at_rv is None or at_rv >= self.rv:
                source, rv = self.objects, self.rv
            else:
                source, rv = self._snapshot_locked(at_rv), at_rv
            return copy.deepcopy(self._select(resource, ns, label_selector, field_selector, source)), rv

    def _snapshot_locked(self, at_rv):
        if at_rv < self.floor:
            raise status.expired("The resourceVersion for the provided list is too old.")
        state = dict(self.objects)
        for ev in reversed(self.history):
            if ev.rv <= at_rv:
                break
            key = (ev.resource, ev.namespace, ev.name)
            if ev.type == "ADDED":
                state.pop(key, None)
            else:
                state[key] = ev.prev
        return state

    # -- watch history --------------------------------------------------------------------

    def events_since(self, rv, resource=None, ns=None):
        """History events with revision > rv (for one resource/namespace if given). Raises the
        watch cache's 410 Expired if events after rv were compacted away."""
        with self.cond:
            if rv < self.floor:
                raise status.too_old_resource_version(rv, self.floor)
            return [ev for ev in self.history
                    if ev.rv > rv and (resource is None or ev.resource == resource)
                    and (ns is None or ev.namespace == ns)]

    def subscribe(self, resource, ns=None):
        with self.cond:
            sub = Subscription(self, resource, ns)
            self._subscriptions.append(sub)
            return sub

    def unsubscribe(self, sub):
        with self.cond:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)

    def compact(self, rv=None):
        """Forgets history up to rv (default: everything so far), like an etcd compaction that
        the watch cache has caught up with: a watch resuming from an older RV gets 410."""
        with self.cond:
            target = self.rv if rv is None else min(int(rv), self.rv)
            self.history = [ev for ev in self.history if ev.rv > target]
            self.floor = max(self.floor, target)
            self.cond.notify_all()
            return self.floor

    def rv_as_of(self, t):
        """The revision the store had at monotonic time `t` (the newest event committed at or
        before it): what a watch cache lagging behind storage has seen. Where history no longer
        reaches back that far: the revision just before its oldest event (the current one if
        history is empty, i.e. all compacted)."""
        with self.cond:
            for ev in reversed(self.history):
                if ev.time <= t:
                    return ev.rv
            return self.history[0].rv - 1 if self.history else self.rv

    def wait_for_change(self, after_rv, timeout):
        """Blocks until the revision passes after_rv or timeout; returns the current revision."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv <= after_rv:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return self.rv

    # -- create ---------------------------------------------------------------------------

    def create(self, resource, ns, obj, dry_run=False, validate=True):
        rt = RESOURCES[resource]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") and meta["namespace"] != ns:
            raise status.bad_request("the namespace of the provided object does not match the namespace "
                                     "sent on the request")
        with self.cond:
            if ns not in self.namespaces:
                raise status.namespace_not_found(ns)
            if meta.get("resourceVersion"):
                raise status.internal_error("resourceVersion should not be set on objects to be created")
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                for _ in range(8):
                    name = meta["generateName"] + random_suffix(rng=self.rng)
                    if (resource, ns, name) not in self.objects:
                        break
            if not name:
                raise status.invalid(rt.group, rt.kind, "", [status.required_field(
                    "metadata.name", "name or generateName is required")])
            meta["name"] = name
            meta["namespace"] = ns
            obj = ordered(rt, obj)
            meta = obj["metadata"]
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "selfLink", "managedFields"):
                meta.pop(k, None)
            defaulter = DEFAULTERS.get(resource)
            if defaulter:
                defaulter(obj)
            if resource == "deployments":
                obj["status"] = {}
            if resource == "replicasets":
                obj["status"] = {"replicas": 0}
            if validate:
                errs = validate_name(rt, name) + VALIDATORS.get(resource, lambda o, old=None: [])(obj)
                if errs:
                    raise status.invalid(rt.group, rt.kind, name, errs)
            if (resource, ns, name) in self.objects:
                raise status.already_exists(rt.group, rt.plural, name)
            meta["uid"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            meta["creationTimestamp"] = rfc3339()
            if resource in ("deployments", "replicasets"):
                meta["generation"] = 1
            if resource == "services":
                self._allocate_service_locked(obj, None)
            obj = ordered(rt, obj)
            if dry_run:
                return copy.deepcopy(obj)
            return self._commit(resource, ns, name, "ADDED", obj, None)

    def _allocate_service_locked(self, obj, old):
        spec = obj["spec"]
        old_spec = (old or {}).get("spec") or {}
        if spec.get("type") == "ExternalName":
            return
        if not spec.get("clusterIP"):
            if old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
            else:
                while True:
                    ip = "10.96.%d.%d" % (self.rng.randint(0, 255), self.rng.randint(1, 254))
                    if ip not in self._allocated_ips:
                        break
                self._allocated_ips.add(ip)
                spec["clusterIP"] = ip
        spec["clusterIPs"] = [spec["clusterIP"]]
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old_spec.get("ports") or []}
            for p in spec.get("ports") or []:
                if not p.get("nodePort"):
                    prev = old_ports.get((p.get("port"), p.get("protocol")))
                    if prev:
                        p["nodePort"] = prev
                    else:
                        while True:
                            np = self.rng.randint(30000, 32767)
                            if np not in self._allocated_node_ports:
                                break
                        self._allocated_node_ports.add(np)
                        p["nodePort"] = np

    # -- update ---------------------------------------------------------------------------

    def _prepare_update(self, rt, old, new, subresource):
        """Applies the registry strategy's PrepareForUpdate and system-field rules."""
        meta, old_meta = new["metadata"], old["metadata"]
        if subresource == "status":
            kept = copy.deepcopy(old)
            kept["status"] = new.get("status", {})
            new = kept
            meta = new["metadata"]
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise status.invalid(rt.group, rt.kind, old_meta["name"], [
                status.invalid_field("metadata.uid", meta["uid"], "field is immutable")])
        if meta.get("name") != old_meta["name"]:
            raise status.invalid(rt.group, rt.kind, old_meta["name"], [
                status.invalid_field("metadata.name", meta.get("name"), "field is immutable")])
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "namespace"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta.pop("selfLink", None)
        defaulter = DEFAULTERS.get(rt.plural)
        if defaulter and subresource != "status":
            defaulter(new)
        if rt.has_status and subresource != "status" and rt.plural in ("deployments", "replicasets", "pods",
                                                                       "services"):
            new["status"] = copy.deepcopy(old.get("status", {}))
        if rt.plural == "deployments" and subresource != "status":
            if new.get("spec") != old.get("spec") or meta.get("annotations") != old_meta.get("annotations"):
                meta["generation"] = old_meta.get("generation", 1) + 1
        if rt.plural == "replicasets" and subresource != "status":
            # pkg/registry/apps/replicaset/strategy.go: the spec alone bumps a ReplicaSet's generation.
            if new.get("spec") != old.get("spec"):
                meta["generation"] = old_meta.get("generation", 1) + 1
        if rt.plural == "services" and subresource != "status":
            self._allocate_service_locked(new, old)
        return ordered(rt, new)

    def _update_locked(self, resource, ns, name, new, subresource=None, dry_run=False, validate=True):
        rt = RESOURCES[resource]
        old = self._get_locked(resource, ns, name)
        new = copy.deepcopy(new)
        new.setdefault("metadata", {})
        want = new["metadata"].get("resourceVersion")
        if want not in (None, ""):
            try:
                want_i = int(want)
            except (TypeError, ValueError):
                raise status.internal_error('strconv.ParseUint: parsing %s: invalid syntax' % status.go_quote(str(want)))
            if want_i != rv_of(old):
                raise status.conflict(rt.group, rt.plural, name)
        new = self._prepare_update(rt, old, new, subresource)
        if validate:
            errs = VALIDATORS.get(resource, lambda o, old=None: [])(new, old)
            old_meta, new_meta = old["metadata"], new["metadata"]
            added = [f for f in new_meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
            if old_meta.get("deletionTimestamp") and added:
                # ValidateObjectMetaUpdate (apimachinery/pkg/api/validation/objectmeta.go).
                errs.append(status.FieldError("forbidden", "metadata.finalizers", None,
                                              "no new finalizers can be added if the object is being deleted, "
                                              "found new finalizers []string{%s}"
                                              % ", ".join('"%s"' % f for f in added)))
            if errs:
                raise status.invalid(rt.group, rt.kind, name, errs)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)  # nothing changed: no write, no event
        if dry_run:
            return copy.deepcopy(new)
        if (old["metadata"].get("deletionTimestamp") and old["metadata"].get("deletionGracePeriodSeconds") == 0
                and not new["metadata"].get("finalizers")):
            # ShouldDeleteDuringUpdate (generic registry store.go): the last finalizer is gone.
            return self._commit(resource, ns, name, "DELETED", new, old)
        return self._commit(resource, ns, name, "MODIFIED", new, old)

    # Resources whose registry strategy says AllowCreateOnUpdate() (of those served here): a PUT
    # to a name that does not exist creates it (pkg/registry/coordination/lease/strategy.go).
    CREATE_ON_UPDATE = ("leases",)

    def update_or_create(self, resource, ns, name, obj, dry_run=False):
        """PUT of an object that may not exist (resource in CREATE_ON_UPDATE): (object, created).
        As the generic registry's Store.Update: a missing object is created, unless the body
        carries a metadata.uid, the UID precondition a PUT's object implies
        (rest.defaultUpdatedObjectInfo.Preconditions), which a missing object fails (409)."""
        with self.cond:
            if (resource, ns, name) in self.objects:
                return self.update(resource, ns, name, obj, dry_run=dry_run), False
            meta = obj.get("metadata") or {}
            if meta.get("name") not in (None, "") and meta["name"] != name:
                raise status.bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                         % (meta["name"], name))
            rt = RESOURCES[resource]
            if meta.get("uid"):
                raise status.conflict(rt.group, rt.plural, name,
                                      "Precondition failed: UID in precondition: %s, UID in object meta: "
                                      % meta["uid"])
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["name"] = name
            obj["metadata"].pop("resourceVersion", None)  # PrepareObjectForStorage: the server sets it
            return self.create(resource, ns, obj, dry_run=dry_run), True

    def update(self, resource, ns, name, obj, subresource=None, dry_run=False):
        """PUT: obj's metadata.resourceVersion, if set, is a precondition."""
        meta = obj.get("metadata") or {}
        if meta.get("name") not in (None, "") and meta["name"] != name:
            raise status.bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                     % (meta["name"], name))
        if meta.get("namespace") and meta["namespace"] != ns:
            raise status.bad_request("the namespace of the provided object does not match the namespace "
                                     "sent on the request")
        _decode_into(RESOURCES[resource].kind, obj, patched=False)
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["name"] = name
        with self.cond:
            return self._update_locked(resource, ns, name, obj, subresource, dry_run)

    def patch(self, resource, ns, name, patch_type, body, subresource=None, dry_run=False):
        """PATCH with a merge patch (also used for strategic merge, see docs) or a JSON patch,
        applied to the current object; a resourceVersion the patch sets is a precondition."""
        with self.cond:
            old = self._get_locked(resource, ns, name)
            base = self.scale_of(old) if subresource == "scale" else copy.deepcopy(old)
            if patch_type == "application/json-patch+json":
                patched = patchlib.apply_json_patch(base, body)
            else:
                patched = patchlib.apply_merge_patch(base, body)
            _decode_into("Scale" if subresource == "scale" else RESOURCES[resource].kind, patched, patched=True)
            if subresource == "scale":
                return self._write_scale_locked(ns, name, old, patched, dry_run)
            patched.setdefault("metadata", {})
            return self._update_locked(resource, ns, name, patched, subresource, dry_run)

    # -- scale subresource ----------------------------------------------------------------

    @staticmethod
    def scale_of(dep):
        meta = dep["metadata"]
        spec = {}
        replicas = dep.get("spec", {}).get("replicas")
        if replicas:  # ScaleSpec.Replicas is `json:"replicas,omitempty"`: 0 is left out
            spec["replicas"] = replicas
        st = {"replicas": dep.get("status", {}).get("replicas", 0)}
        sel = labelsel.label_selector_string(dep.get("spec", {}).get("selector"))
        if sel:
            st["selector"] = sel
        m = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": m, "spec": spec, "status": st}

    def get_scale(self, ns, name):
        with self.cond:
            return self.scale_of(self._get_locked("deployments", ns, name))

    def _write_scale_locked(self, ns, name, old, scale, dry_run):
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if replicas is None:
            replicas = 0
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            raise status.bad_request("json: cannot unmarshal %s into Go struct field ScaleSpec.spec.replicas "
                                     "of type int32" % type(replicas).__name__)
        if replicas < 0:
            raise status.invalid("autoscaling", "Scale", name, [
                status.invalid_field("spec.replicas", replicas, "must be greater than or equal to 0")])
        meta = scale.get("metadata") or {}
        if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
            raise status.conflict("apps", "deployments/scale", name,
                                  "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                                  % (meta["uid"], old["metadata"]["uid"]))
        dep = copy.deepcopy(old)
        dep["spec"]["replicas"] = replicas
        dep["metadata"]["resourceVersion"] = meta.get("resourceVersion") or ""
        new = self._update_locked("deployments", ns, name, dep, None, dry_run)
        return self.scale_of(new)

    def update_scale(self, ns, name, scale, dry_run=False):
        _decode_into("Scale", scale, patched=False)
        meta = scale.get("metadata") or {}
        if meta.get("name") not in (None, "") and meta["name"] != name:
            raise status.bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                     % (meta["name"], name))
        with self.cond:
            old = self._get_locked("deployments", ns, name)
            return self._write_scale_locked(ns, name, old, scale, dry_run)

    # -- delete ---------------------------------------------------------------------------

    def delete(self, resource, ns, name, options=None, dry_run=False):
        """DELETE. Pods bound to a node are deleted gracefully: they get deletionTimestamp and
        deletionGracePeriodSeconds (a MODIFIED event) and the kubelet removes them later."""
        rt = RESOURCES[resource]
        options = options or {}
        with self.cond:
            old = self._get_locked(resource, ns, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise status.conflict(rt.group, rt.plural, name,
                                      "the UID in the precondition (%s) does not match the UID in record (%s). "
                                      "The object might have been deleted and then recreated"
                                      % (pre["uid"], old["metadata"]["uid"]))
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise status.conflict(rt.group, rt.plural, name,
                                      "the ResourceVersion in the precondition (%s) does not match the "
                                      "ResourceVersion in record (%s). The object might have been modified"
                                      % (pre["resourceVersion"], old["metadata"]["resourceVersion"]))
            if dry_run:
                return copy.deepcopy(old) if rt.return_deleted_object else status.success(
                    name, rt.group, rt.plural, old["metadata"]["uid"])
            grace = options.get("gracePeriodSeconds")
            if resource == "pods" and (old.get("spec") or {}).get("nodeName"):
                if grace is None:
                    grace = (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                if grace > 0:
                    meta = old["metadata"]
                    if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds", grace) <= grace:
                        return copy.deepcopy(old)
                    new = copy.deepcopy(old)
                    new["metadata"]["deletionTimestamp"] = rfc3339(time.time() + grace)
                    new["metadata"]["deletionGracePeriodSeconds"] = grace
                    new = ordered(rt, new)
                    return self._commit(resource, ns, name, "MODIFIED", new, old)
            if old["metadata"].get("finalizers"):
                # updateForGracefulDeletionAndFinalizers (generic registry store.go): an object
                # with finalizers is only marked (deletionTimestamp now, grace 0) and answered as
                # it is; whoever owns the finalizers removes them, and the update that removes the
                # last one deletes it. A second DELETE changes nothing.
                if old["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(old)
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new = ordered(rt, new)
                return self._commit(resource, ns, name, "MODIFIED", new, old)
            gone = self._commit(resource, ns, name, "DELETED", old, old)
            if rt.return_deleted_object:
                return gone
            return status.success(name, rt.group, rt.plural, old["metadata"]["uid"])

    # -- internal writes (controllers, kubelet, tests) ------------------------------------

    def mutate(self, resource, ns, name, fn):
        """Applies fn(obj) to a copy of the stored object and commits it if anything changed
        (as a controller writing spec/status would: no validation, no generation bump). Returns
        the new object, or None if it does not exist."""
        with self.cond:
            old = self.objects.get((resource, ns, name))
            if old is None:
                return None
            new = copy.deepcopy(old)
            fn(new)
            new = ordered(RESOURCES[resource], new)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return copy.deepcopy(old)
            return self._commit(resource, ns, name, "MODIFIED", new, old)

    def remove(self, resource, ns, name):
        """Deletes at once (a force delete / the kubelet's final delete). Returns the last state
        or None if it was already gone."""
        with self.cond:
            old = self.objects.get((resource, ns, name))
            if old is None:
                return None
            return self._commit(resource, ns, name, "DELETED", old, old)


def encode_continue(rv, after_key):
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": after_key + "\u0000"}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token):
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        d = json.loads(raw)
        return int(d["rv"]), d["start"].rstrip("\u0000")
    except (ValueError, KeyError, TypeError):
        raise status.bad_request("continue key is not valid: illegal base64 data at input byte 0")

