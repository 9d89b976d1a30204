"""An HTTP(S) server that answers like kube-apiserver for the calls spark-gateway makes.

What it emulates, and where the behaviour comes from (kubernetes/kubernetes unless noted; the
page https://kubernetes.io/docs/reference/using-api/api-concepts/ is the user-facing summary):

  * Request flow: authentication (401, staging/src/k8s.io/apiserver/pkg/endpoints/filters/
    authentication.go), then authorization (403 with the RBAC message of
    .../handlers/responsewriters/errors.go forbiddenMessage), then the handler (404, 405, 409,
    415, 422, ...). Errors are always metav1.Status objects (see status.py).
  * Bearer tokens (Authorization: Bearer ...), and client certificates in HTTPS mode (CN = user,
    O = groups). A token is bound to one service account and its namespace(s): any other
    namespace, or a cluster-wide list, is Forbidden.
  * LIST: {kind: XList, apiVersion, metadata: {resourceVersion[, continue, remainingItemCount]},
    items: [...]}; items carry no kind/apiVersion. resourceVersion / resourceVersionMatch / limit
    / continue as described on the api-concepts page ("Resource versions", "Retrieving large
    results sets in chunks"); an RV newer than the store waits up to 3 s and then answers 504
    "Too large resource version" (storage/cacher/watch_cache.go waitUntilFreshAndBlock).
  * WATCH (watch=1): HTTP 200, Content-Type application/json, Transfer-Encoding chunked, one
    JSON event per line (handlers/watch.go WatchServer.HandleHTTP). Without resourceVersion (or
    with "0") the stream starts with synthetic ADDED events for the current state; with an RV it
    replays history after it. An RV older than the retained history does NOT fail the HTTP
    request: the response is 200 and carries one ERROR event whose object is a 410 Expired Status
    ("too old resource version: X (Y)"), then the stream ends. That is storage/cacher/cacher.go
    Watch: "once we have passed authn/authz/admission, and successfully parsed a resource
    version, other errors must fail with a watch event of type ERROR" (newErrWatcher).
    Label/field selectors filter events as cache_watcher.go convertToWatchEvent does (an object
    that stops matching yields DELETED with its previous content). BOOKMARK events (only with
    allowWatchBookmarks=true) carry the current RV every `bookmark_interval` seconds (real:
    defaultBookmarkFrequency = 1 minute) and 2 s before the watch deadline
    (cache_watcher.go nextBookmarkTime). timeoutSeconds ends the stream cleanly.
  * PATCH: Content-Type must be one of the patch types (handlers/patch.go), else 415
    UnsupportedMediaType. merge-patch applies RFC 7386; metadata.resourceVersion in the patch is
    an optimistic-concurrency precondition -> 409 Conflict.
  * The scale subresource (autoscaling/v1 Scale), Deployments, Pods, Events, Leases, Services.
"""

import collections
import copy
import json
import os
import random
import secrets
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import pki
from . import labelsel
from . import status
from .faults import Faults
from .store import BY_GROUP_VERSION, RESOURCES, Store, decode_continue, encode_continue, without_type

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's default request body limit (3 MiB)
PUBLIC_PATHS = ("/version", "/version/", "/healthz", "/livez", "/readyz")

# What kubectl's discovery needs to know about each served resource.
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SHORT_NAMES = {"deployments": ["deploy"], "replicasets": ["rs"], "pods": ["po"], "events": ["ev"], "services": ["svc"]}


class Identity:
    """Who a credential authenticates as, and which namespaces it may touch.

    namespaces=None means every namespace and the cluster scope (like cluster-admin)."""

    def __init__(self, user, groups=(), namespaces=("spark",)):
        self.user = user
        self.groups = tuple(groups)
        self.namespaces = None if namespaces is None else tuple(namespaces)

    def __repr__(self):
        return "Identity(%r, namespaces=%r)" % (self.user, self.namespaces)


def service_account_user(namespace, name):
    return "system:serviceaccount:%s:%s" % (namespace, name)


class RequestRecord:
    """One request as the double saw it. `status` is filled in once answered (for a watch: 200 as
    soon as the stream starts); `events` counts the watch events sent on it."""

    def __init__(self, method, path, query, headers, body, client):
        self.time = time.time()
        self.method = method
        self.path = path
        self.query = query  # {name: [values]}
        self.headers = headers  # {Name: value}, as sent
        self.body = body
        self.client = client
        self.status = None
        self.response = None
        self.duration = None
        self.user = None
        self.verb = None
        self.namespace = None
        self.resource = None
        self.subresource = None
        self.name = None
        self.events = 0
        self.fault = None
        self.answer_late = 0.0  # seconds this answer is held back (faults.answer_late)

    def header(self, name, default=None):
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return default

    @property
    def content_type(self):
        return self.header("Content-Type")

    @property
    def json(self):
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    @property
    def token(self):
        auth = self.header("Authorization") or ""
        return auth[7:].strip() if auth.startswith("Bearer ") else None

    def param(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    @property
    def is_watch(self):
        return self.verb == "watch"

    def __repr__(self):
        q = "&".join("%s=%s" % (k, v[0]) for k, v in self.query.items())
        return "<%s %s%s -> %s>" % (self.method, self.path, "?" + q if q else "", self.status)


class _Drop(Exception):
    """Close the connection without an answer."""


class RequestInfo:
    """The resource attributes of a request (k8s.io/apiserver pkg/endpoints/request/requestinfo.go)."""

    def __init__(self):
        self.resource_request = False
        self.path = ""
        self.verb = ""
        self.api_prefix = ""
        self.group = ""
        self.version = ""
        self.namespace = ""
        self.resource = ""
        self.subresource = ""
        self.name = ""
        self.parts = []


def _truthy(v):
    return v in ("1", "true", "True", "TRUE", "t", "T")


def parse_request_info(method, path, query):
    info = RequestInfo()
    info.path = path
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        info.api_prefix, info.group, info.version, rest = "api", "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        info.api_prefix, info.group, info.version, rest = "apis", parts[1], parts[2], parts[3:]
    else:
        info.verb = method.lower()
        return info
    if not rest:
        info.verb = method.lower()
        return info
    info.resource_request = True
    if rest[0] == "namespaces" and len(rest) >= 3:
        info.namespace = rest[1]
        rest = rest[2:]
    elif rest[0] == "namespaces" and len(rest) == 2:
        info.resource, info.name = "namespaces", rest[1]
        rest = []
    if rest:
        info.resource = rest[0]
        info.name = rest[1] if len(rest) > 1 else ""
        info.subresource = rest[2] if len(rest) > 2 else ""
        info.parts = rest
    watch = _truthy((query.get("watch") or [""])[0])
    info.verb = {"GET": "get" if info.name else "list", "POST": "create", "PUT": "update",
                 "PATCH": "patch", "DELETE": "delete" if info.name else "deletecollection"}.get(
        method, method.lower())
    if watch and method == "GET":
        info.verb = "watch"
    return info


def _json_bytes(obj):
    # encoding/json output: compact, UTF-8; the Kubernetes JSON serializer ends it with "\n".
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def bookmark_object(rt, rv, style="full"):
    """The object of a BOOKMARK event. The watch cache sends an empty object of the watched type
    with only metadata.resourceVersion set (cacher.go: Object: c.newFunc()); encoded, Go's
    non-omitempty zero values show up too (style "full"). style "minimal" gives only
    kind/apiVersion/metadata.resourceVersion, as the api-concepts page shows it."""
    meta = {"resourceVersion": str(rv)}
    obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}
    if style == "minimal":
        return obj
    meta["creationTimestamp"] = None
    if rt.plural == "deployments":
        obj["spec"] = {"selector": None, "template": {"metadata": {"creationTimestamp": None},
                                                      "spec": {"containers": None}}, "strategy": {}}
        obj["status"] = {}
    elif rt.plural == "replicasets":
        obj["spec"] = {"selector": None, "template": {"metadata": {"creationTimestamp": None},
                                                      "spec": {"containers": None}}}
        obj["status"] = {"replicas": 0}
    elif rt.plural == "pods":
        obj["spec"] = {"containers": None}
        obj["status"] = {}
    elif rt.plural == "services":
        obj["spec"] = {}
        obj["status"] = {"loadBalancer": {}}
    elif rt.plural == "events":
        obj.update({"involvedObject": {}, "source": {}, "firstTimestamp": None, "lastTimestamp": None,
                    "eventTime": None, "reportingComponent": "", "reportingInstance": ""})
    elif rt.plural == "leases":
        obj["spec"] = {}
    return obj


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        api = self.server.api
        ctx = api._ssl_context
        if ctx is not None:
            self.request.settimeout(10)
            try:
                self.request = ctx.wrap_socket(self.request, server_side=True)
            except (ssl.SSLError, OSError):
                try:
                    self.request.close()
                except OSError:
                    pass
                raise _Drop()
            self.request.settimeout(None)
        api._track(self.request)
        super().setup()

    def handle(self):
        try:
            super().handle()
        except (_Drop, ConnectionError, ssl.SSLError, OSError, ValueError):
            self.close_connection = True
        finally:
            self.server.api._untrack(self.request)

    def finish(self):
        try:
            super().finish()
        except (OSError, ssl.SSLError, ValueError):
            pass
        if isinstance(self.request, ssl.SSLSocket):
            # wrap_socket detached the accepted socket, so the server's own shutdown_request()
            # no longer owns the descriptor: close the TLS socket here.
            try:
                self.request.close()
            except OSError:
                pass

    def send_response(self, code, message=None):
        # Go's net/http sends Date but no Server header.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def log_message(self, fmt, *args):
        pass

    def _serve(self):
        try:
            self.server.api._serve(self)
        except _Drop:
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, addr, api):
        self.api = api
        super().__init__(addr, _Handler)

    def handle_error(self, request, client_address):
        pass  # broken connections are expected (faults, client timeouts)


class KubeApiDouble:
    """A kube-apiserver double on a loopback address.

    KubeApiDouble(host="127.0.0.1", port=0, namespace="spark", tls=False, ...).start()

      host, port        where to listen (port 0: a free port, kept across down()/up()).
      namespace         the spark namespace; created, and the one the default token is bound to.
      tls               serve HTTPS with a fresh CA (api.ca_file) instead of plain HTTP.
      require_auth      False = a `kubectl proxy`-like endpoint: requests without credentials act
                        as `proxy_identity` (default: the service account).
      anonymous_auth    True = requests without credentials are system:anonymous (so they get
                        403, as with kube-apiserver's default --anonymous-auth=true); False
                        (default) = 401.
      service_account   the default token's service account name (user
                        system:serviceaccount:<namespace>:<service_account>).
      token             the default token's value (random if None); api.token.
      bookmark_interval seconds between BOOKMARK events on watches that allow them.
      bookmark_style    "full" (the empty typed object, as the watch cache encodes it) or
                        "minimal" (kind/apiVersion/metadata.resourceVersion only).
      history_limit     keep only the last N watch events (None: all, until compact()).
      default_watch_timeout  (lo, hi) seconds for watches without timeoutSeconds (real: 30-60 min).
      workdir           where certificates and files go (a temp dir, removed by stop(), if None).
    """

    def __init__(self, host="127.0.0.1", port=0, namespace="spark", tls=False, require_auth=True,
                 anonymous_auth=False, service_account="spark-gateway", token=None,
                 bookmark_interval=1.0, bookmark_style="full", history_limit=None,
                 default_watch_timeout=(1800, 3600), workdir=None, namespaces=(), store=None,
                 proxy_identity=None):
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError("the API double only binds to loopback addresses, not %r" % host)
        self.host = host
        self.port = port
        self.namespace = namespace
        self.tls = tls
        self.require_auth = require_auth
        self.anonymous_auth = anonymous_auth
        self.bookmark_interval = bookmark_interval
        self.bookmark_style = bookmark_style
        self.default_watch_timeout = default_watch_timeout
        self.store = store or Store(history_limit=history_limit)
        for ns in (namespace,) + tuple(namespaces):
            self.store.add_namespace(ns)
        self.faults = Faults()
        self.service_account_user = service_account_user(namespace, service_account)
        self.token = token or "k8s-double-" + secrets.token_hex(16)
        self._tokens = {self.token: Identity(self.service_account_user,
                                             ("system:serviceaccounts", "system:serviceaccounts:" + namespace,
                                              "system:authenticated"), (namespace,))}
        self.proxy_identity = proxy_identity or Identity(self.service_account_user, (), (namespace,))
        self._cert_identities = {}
        self._denied = set()  # (user or None, verb, group, resource[/subresource])
        self._lock = threading.Lock()
        self._records = []
        self.counters = Counter()
        self._active_watches = set()
        self._conns = set()
        self._server = None
        self._thread = None
        self._generation = 0
        self._stopping = threading.Event()
        self.errors = []  # unexpected exceptions while serving (bugs in the double)
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="k8s-double-")
        os.makedirs(self.workdir, exist_ok=True)
        self.ca_file = self._ca_key = self._server_cert = self._server_key = None
        self._ssl_context = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self):
        if self.tls and self.ca_file is None:
            pki_dir = os.path.join(self.workdir, "pki")
            self.ca_file, self._ca_key = pki.make_ca(pki_dir)
            self._server_cert, self._server_key = pki.make_server_cert(pki_dir, self.ca_file, self._ca_key,
                                                                       self.host)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self._server_cert, self._server_key)
            ctx.load_verify_locations(self.ca_file)
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl_context = ctx
        self._stopping.clear()
        self._listen()
        return self

    def _listen(self):
        server = _HttpServer((self.host, self.port), self)
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="k8s-double-http", daemon=True)
        with self._lock:
            self._server, self._thread = server, thread
        thread.start()

    def _close_listener_and_connections(self):
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            self._generation += 1
            conns = list(self._conns)
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        """Stops serving, drops every connection (watches included) and removes the temp dir."""
        self._stopping.set()
        with self.store.cond:
            self.store.cond.notify_all()
        self._close_listener_and_connections()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def down(self):
        """Fault: the API server goes away. The listener closes (connects are refused) and every
        open connection, watches included, is cut without a final chunk. up() comes back on the
        same address and port; the stored objects and history are kept."""
        self._close_listener_and_connections()

    def up(self):
        if self._server is None:
            self._listen()

    @property
    def is_up(self):
        return self._server is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    # -- credentials ----------------------------------------------------------------------

    def add_token(self, token, user=None, namespaces=None, groups=("system:authenticated",)):
        """Accepts `token` from now on. user defaults to the service account; namespaces to the
        spark namespace (None in Identity terms = everything: pass namespaces="*")."""
        ns = None if namespaces == "*" else tuple(namespaces or (self.namespace,))
        with self._lock:
            self._tokens[token] = Identity(user or self.service_account_user, groups, ns)

    def remove_token(self, token):
        with self._lock:
            self._tokens.pop(token, None)

    def set_tokens(self, tokens):
        """Replaces the valid tokens (all bound to the service account): the way to emulate a
        bound token rotating. api.token becomes the first of them."""
        tokens = list(tokens)
        with self._lock:
            self._tokens = {t: Identity(self.service_account_user, ("system:authenticated",),
                                        (self.namespace,)) for t in tokens}
        if tokens:
            self.token = tokens[0]

    def rotate_token(self, path=None):
        """Issues a new token, invalidates the old ones, writes it to `path` if given (atomically,
        as the kubelet updates a projected token file); returns it."""
        new = "k8s-double-" + secrets.token_hex(16)
        self.set_tokens([new])
        if path:
            self.write_token_file(path, new)
        return new

    def write_token_file(self, path, token=None):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(token or self.token)
        os.replace(tmp, path)
        return path

    def client_cert(self, user=None, groups=("system:authenticated",), namespaces=None):
        """(cert_file, key_file) of a client certificate the HTTPS double accepts as `user`."""
        if not self.tls or self.ca_file is None:
            raise RuntimeError("client certificates need tls=True and start()")
        user = user or self.service_account_user
        cert, key = pki.make_client_cert(os.path.join(self.workdir, "pki"), self.ca_file, self._ca_key,
                                         user, groups)
        ns = None if namespaces == "*" else tuple(namespaces or (self.namespace,))
        with self._lock:
            self._cert_identities[user] = Identity(user, groups, ns)
        return cert, key

    def write_kubeconfig(self, path, token=None, client_cert=None, namespace=None):
        """A kubeconfig for this double: token auth (default), or client_cert=(cert, key)."""
        lines = ["apiVersion: v1", "kind: Config", "clusters:", "- name: k8s-double", "  cluster:",
                 "    server: %s" % self.url]
        if self.tls:
            lines.append("    certificate-authority: %s" % self.ca_file)
        lines += ["users:", "- name: k8s-double-user", "  user:"]
        if client_cert:
            lines += ["    client-certificate: %s" % client_cert[0], "    client-key: %s" % client_cert[1]]
        else:
            lines.append("    token: %s" % (token or self.token))
        lines += ["contexts:", "- name: k8s-double", "  context:", "    cluster: k8s-double",
                  "    user: k8s-double-user", "    namespace: %s" % (namespace or self.namespace),
                  "current-context: k8s-double"]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def deny(self, verb, resource, group=None, user=None):
        """RBAC: forbid `verb` on `resource` ("deployments", "deployments/scale", ...) for `user`
        (default: everyone). group defaults to the resource's own group."""
        base = resource.split("/")[0]
        if group is None:
            group = RESOURCES[base].group if base in RESOURCES else ""
        with self._lock:
            self._denied.add((user, verb, group, resource))

    def allow(self, verb, resource, group=None, user=None):
        base = resource.split("/")[0]
        if group is None:
            group = RESOURCES[base].group if base in RESOURCES else ""
        with self._lock:
            self._denied.discard((user, verb, group, resource))

    # -- request log ----------------------------------------------------------------------

    def _record(self, rec):
        with self._lock:
            self._records.append(rec)
            self.counters["requests"] += 1

    def requests(self, method=None, path=None, verb=None, resource=None, subresource=None, name=None,
                 status=None, path_contains=None):
        """Recorded requests (oldest first) matching every given filter. `path` is exact,
        `path_contains` a substring; `resource`/`subresource`/`verb` are the API attributes."""
        with self._lock:
            recs = list(self._records)
        out = []
        for r in recs:
            if method and r.method != method.upper():
                continue
            if path and r.path != path:
                continue
            if path_contains and path_contains not in r.path:
                continue
            if verb and r.verb != verb:
                continue
            if resource and r.resource != resource:
                continue
            if subresource is not None and (r.subresource or "") != subresource:
                continue
            if name and r.name != name:
                continue
            if status is not None and r.status != status:
                continue
            out.append(r)
        return out

    def scale_requests(self, name=None, namespace=None):
        """Scale calls: PATCH/PUT on deployments/NAME/scale, and writes of deployments/NAME itself
        that scale it UP (spec.replicas >= 1: the gateway's wake, which records last-activity in
        the same write). A sleep (replicas 0 on the Deployment) is not counted here."""
        def sets_replicas(r):
            if r.subresource == "scale":
                return True
            body = r.json if isinstance(r.json, dict) else {}
            replicas = (body.get("spec") or {}).get("replicas") if isinstance(body.get("spec"), dict) else None
            return not r.subresource and isinstance(replicas, int) and replicas >= 1
        return [r for r in self.requests(resource="deployments", name=name)
                if r.method in ("PATCH", "PUT") and sets_replicas(r)
                and (namespace is None or r.namespace == namespace)]

    def clear_requests(self):
        with self._lock:
            self._records = []
            self.counters.clear()

    def active_watches(self):
        """RequestRecords of the watch streams open right now."""
        with self._lock:
            return list(self._active_watches)

    def _track(self, conn):
        with self._lock:
            self._conns.add(conn)

    def _untrack(self, conn):
        with self._lock:
            self._conns.discard(conn)

    # -- objects (direct access for tests; no HTTP, no auth, no faults) ------------------

    @property
    def resource_version(self):
        return self.store.current_rv()

    def create_deployment(self, name, labels=None, annotations=None, replicas=0, match_labels=None,
                          template_labels=None, image="ghcr.io/spark/devbox:latest", target_port=22,
                          namespace=None, container_name="spark", env=None):
        """Creates a Deployment like a spark's: one container listening on target_port, the
        selector `match_labels` (default {"app.kubernetes.io/instance": name}), template labels =
        labels + match_labels + template_labels. Returns the stored object."""
        labels = dict(labels if labels is not None else {"app.kubernetes.io/part-of": "spark"})
        match_labels = dict(match_labels or {"app.kubernetes.io/instance": name})
        tlabels = dict(labels)
        tlabels.update(match_labels)
        tlabels.update(template_labels or {})
        container = {"name": container_name, "image": image,
                     "ports": [{"name": "ssh", "containerPort": target_port}]}
        if env:
            container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        meta = {"name": name, "labels": labels}
        if annotations:
            meta["annotations"] = dict(annotations)
        obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
               "spec": {"replicas": replicas, "selector": {"matchLabels": match_labels},
                        "template": {"metadata": {"labels": tlabels},
                                     "spec": {"containers": [container]}}}}
        return self.store.create("deployments", namespace or self.namespace, obj)

    def create(self, resource, obj, namespace=None):
        return self.store.create(resource, namespace or self.namespace, obj)

    def get(self, resource, name, namespace=None):
        """The stored object (a copy) or None."""
        return self.store.find(resource, namespace or self.namespace, name)

    def list(self, resource, namespace=None, label_selector=None):
        sel = labelsel.parse_label_selector(label_selector) if label_selector else None
        return self.store.list(resource, namespace or self.namespace, sel)[0]

    def patch(self, resource, name, patch, namespace=None, subresource=None,
              patch_type="application/merge-patch+json"):
        """Applies a merge patch (dict) exactly as a PATCH would (validation, preconditions,
        generation); raises status.ApiError like the HTTP call would answer."""
        body = json.dumps(patch).encode()
        return self.store.patch(resource, namespace or self.namespace, name, patch_type, body, subresource)

    def update(self, resource, obj, namespace=None):
        return self.store.update(resource, namespace or self.namespace, obj["metadata"]["name"], obj)

    def delete(self, resource, name, namespace=None):
        return self.store.delete(resource, namespace or self.namespace, name)

    def scale(self, name, replicas, namespace=None):
        """Sets spec.replicas through the scale subresource rules (no precondition)."""
        return self.store.update_scale(namespace or self.namespace, name, {"spec": {"replicas": replicas}})

    def annotate(self, resource, name, namespace=None, **annotations):
        """Sets (value) or removes (None) annotations; keys may contain '/' via a dict:
        api.annotate("deployments", "x", **{"spark-gateway/idle-timeout": "5m"})."""
        return self.patch(resource, name, {"metadata": {"annotations": annotations}}, namespace)

    def events(self, involved_name=None, reason=None, namespace=None):
        out = []
        for ev in self.list("events", namespace):
            if involved_name and (ev.get("involvedObject") or {}).get("name") != involved_name:
                continue
            if reason and ev.get("reason") != reason:
                continue
            out.append(ev)
        return out

    def compact(self, rv=None):
        """Drops watch history up to rv (default: now): resuming a watch from an older RV gets
        the ERROR 410 Expired event. Returns the new floor."""
        return self.store.compact(rv)

    # -- serving --------------------------------------------------------------------------

    def _serve(self, h):
        started = time.monotonic()
        split = urlsplit(h.path)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        headers = {k: v for k, v in h.headers.items()}
        body = self._read_body(h)
        rec = RequestRecord(h.command, path, query, headers, body, h.client_address)
        info = parse_request_info(h.command, path, query)
        rec.verb = info.verb
        rec.namespace = info.namespace or None
        rec.resource = info.resource or None
        rec.subresource = info.subresource or None
        rec.name = info.name or None
        self._record(rec)
        generation = self._generation
        try:
            self._faults_before(h, rec, info, generation)
            identity = self._authenticate(h, rec)
            rec.user = identity.user
            refusal = self.faults.refusal(rec.token) if rec.token else None
            if refusal == "forbidden":
                raise self._forbidden(identity, info)
            self._authorize(identity, info)
            self._handle(h, rec, info, identity, body, started)
        except status.ApiError as e:
            if e.raw is not None:
                self._respond(h, rec, e.code, None, started, raw=e.raw, content_type=e.content_type,
                              headers=e.headers)
            else:
                self._respond(h, rec, e.code, e.status, started, headers=e.headers)
        except (_Drop, OSError, ssl.SSLError):
            raise
        except Exception as e:  # a bug in the double: answer 500 and keep it for the test to see
            import traceback
            self.errors.append("%s %s: %s" % (rec.method, rec.path, traceback.format_exc()))
            if rec.status is None:
                self._respond(h, rec, 500, status.internal_error("k8s_double: %r" % (e,)).status, started)

    def _read_body(self, h):
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                line = h.rfile.readline(1024)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += h.rfile.read(size)
                h.rfile.readline(8)
                if len(data) > MAX_BODY:
                    raise _Drop()
            return bytes(data)
        n = int(h.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise _Drop()
        return h.rfile.read(n) if n else b""

    def _wait_while_hanging(self, generation, refusal_token=None):
        while not self._stopping.is_set() and generation == self._generation:
            hanging = self.faults.hang or (refusal_token is not None and
                                           self.faults.refusal(refusal_token) == "hang")
            if not hanging:
                return
            time.sleep(0.05)
        raise _Drop()

    def _faults_before(self, h, rec, info, generation):
        f = self.faults
        token = rec.token
        refusal = f.refusal(token) if token else None
        if f.hang or refusal == "hang":
            rec.fault = "hang"
            self._wait_while_hanging(generation, token)
        if refusal == "close":
            rec.fault = "close"
            raise _Drop()
        if f.delay:
            time.sleep(f.delay)
        hold, rec.answer_late = f.take_delays(rec.method, rec.path, info.verb, rec)
        if rec.answer_late:
            rec.fault = "answer_late"
        if hold:
            rec.fault = "hold"
            time.sleep(hold)
            if self._client_gone(h):  # its context is cancelled: nothing is applied
                rec.fault = "hold, client gone"
                raise _Drop()
        rule = f.take_failure(rec.method, rec.path, info.verb, rec)
        if rule is not None:
            rec.fault = "fail"
            if rule.close:
                raise _Drop()
            if rule.code == 500 and not rule.reason and not rule.retry_after:
                raise status.internal_error(rule.message or "injected failure (k8s_double fault)")
            if rule.code == 429 and not rule.reason and not rule.message:
                raise status.flow_control_rejection(rule.retry_after or 1)
            reason = rule.reason or {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "Timeout",
                                     409: "Conflict", 410: "Expired", 403: "Forbidden",
                                     401: "Unauthorized", 404: "NotFound"}.get(rule.code, "InternalError")
            details = {"retryAfterSeconds": rule.retry_after} if rule.retry_after else None
            raise status.ApiError(status.failure(rule.code, reason, rule.message or "injected failure", details))

    def _authenticate(self, h, rec):
        auth = rec.header("Authorization")
        if auth is not None:
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                raise status.unauthorized()
            with self._lock:
                identity = self._tokens.get(auth[7:].strip())
            if identity is None:
                if not self.require_auth:
                    return self.proxy_identity  # kubectl proxy replaces the client's credentials
                raise status.unauthorized()
            return identity
        if self._ssl_context is not None:
            try:
                cert = h.request.getpeercert()
            except (ValueError, OSError):
                cert = None
            if cert:
                cn, orgs = None, []
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            cn = v
                        elif k == "organizationName":
                            orgs.append(v)
                with self._lock:
                    known = self._cert_identities.get(cn)
                if cn:
                    return known or Identity(cn, orgs, (self.namespace,))
        if not self.require_auth:
            return self.proxy_identity
        if self.anonymous_auth:
            return Identity("system:anonymous", ("system:unauthenticated",), ())
        raise status.unauthorized()

    def _forbidden(self, identity, info):
        if not info.resource_request:
            return status.forbidden("", "", "", status.rbac_forbidden_message(
                identity.user, info.verb, "", "", "", "", path=info.path))
        msg = status.rbac_forbidden_message(identity.user, info.verb, info.resource, info.subresource,
                                            info.group, info.namespace)
        return status.forbidden(info.group, info.resource, info.name, msg)

    def _authorize(self, identity, info):
        if not info.resource_request:
            if info.path in PUBLIC_PATHS:
                return
            if identity.user == "system:anonymous":
                raise self._forbidden(identity, info)
            return
        if identity.namespaces is not None:
            if not info.namespace or info.namespace not in identity.namespaces:
                raise self._forbidden(identity, info)
            served = BY_GROUP_VERSION.get((info.group, info.version), {})
            if info.resource not in served:
                raise self._forbidden(identity, info)
        res = info.resource + ("/" + info.subresource if info.subresource else "")
        with self._lock:
            denied = ((None, info.verb, info.group, res) in self._denied
                      or (identity.user, info.verb, info.group, res) in self._denied)
        if denied:
            raise self._forbidden(identity, info)

    # -- responses ------------------------------------------------------------------------

    def _std_headers(self, h, content_type="application/json"):
        h.send_header("Audit-Id", str(uuid.uuid4()))
        h.send_header("Cache-Control", "no-cache, private")
        h.send_header("Content-Type", content_type)
        h.send_header("X-Kubernetes-Pf-Flowschema-Uid", "k8s-double-flowschema")
        h.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", "k8s-double-prioritylevel")

    def _respond(self, h, rec, code, obj, started, raw=None, content_type="application/json", headers=None):
        late = self.faults.delay_response + rec.answer_late
        if late:
            time.sleep(late)
        data = raw if raw is not None else _json_bytes(obj)
        rec.status = code
        rec.response = obj
        rec.duration = time.monotonic() - started
        with self._lock:
            self.counters["status %d" % code] += 1
        h.send_response(code)
        self._std_headers(h, content_type)
        headers = dict(headers or {})
        if code >= 400 and status.retry_after_of(obj) > 0:
            headers.setdefault("Retry-After", str(status.retry_after_of(obj)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    # -- dispatch -------------------------------------------------------------------------

    def _handle(self, h, rec, info, identity, body, started):
        if not info.resource_request:
            return self._non_resource(h, rec, info, started)
        served = BY_GROUP_VERSION.get((info.group, info.version), {})
        rt = served.get(info.resource)
        if rt is None:
            raise status.path_not_found()
        with self._lock:
            self.counters["%s %s%s" % (info.verb, info.resource,
                                        "/" + info.subresource if info.subresource else "")] += 1
        ns = info.namespace or None
        if ns is None and (info.name or info.verb not in ("list", "watch")):
            raise status.path_not_found()
        if len(info.parts) > 3:
            raise status.path_not_found()
        sub = info.subresource
        if sub and sub not in rt.subresources:
            raise status.path_not_found()
        method = h.command
        q = rec.query
        dry_run = "All" in q.get("dryRun", [])
        if not info.name:
            if method == "GET":
                if info.verb == "watch":
                    return self._watch(h, rec, rt, ns, None, started)
                return self._list(h, rec, rt, ns, started)
            if method == "POST":
                obj = self._decode_body(rec, rt.kind)
                created = self.store.create(rt.plural, ns, obj, dry_run=dry_run)
                return self._respond(h, rec, 201, created, started)
            if method == "DELETE":
                return self._delete_collection(h, rec, rt, ns, started, dry_run)
            raise status.method_not_allowed()
        name = info.name
        if sub == "scale":
            if method == "GET":
                return self._respond(h, rec, 200, self.store.get_scale(ns, name), started)
            if method == "PUT":
                scale = self._decode_body(rec, "Scale")
                self._conflict_storm(rec, rt, name, scale)
                return self._respond(h, rec, 200, self.store.update_scale(ns, name, scale, dry_run), started)
            if method == "PATCH":
                ptype = self._patch_type(rec)
                self._conflict_storm(rec, rt, name, None)
                return self._respond(h, rec, 200, self.store.patch(rt.plural, ns, name, ptype, body, "scale",
                                                                   dry_run), started)
            raise status.method_not_allowed()
        if method == "GET":
            if info.verb == "watch":
                return self._watch(h, rec, rt, ns, name, started)
            return self._respond(h, rec, 200, self.store.get(rt.plural, ns, name), started)
        if method == "PUT":
            obj = self._decode_body(rec, rt.kind)
            self._conflict_storm(rec, rt, name, obj)
            if rt.plural in self.store.CREATE_ON_UPDATE and not sub:
                written, created = self.store.update_or_create(rt.plural, ns, name, obj, dry_run)
                return self._respond(h, rec, 201 if created else 200, written, started)
            return self._respond(h, rec, 200, self.store.update(rt.plural, ns, name, obj, sub or None, dry_run),
                                 started)
        if method == "PATCH":
            ptype = self._patch_type(rec)
            self._conflict_storm(rec, rt, name, None)
            return self._respond(h, rec, 200, self.store.patch(rt.plural, ns, name, ptype, body, sub or None,
                                                               dry_run), started)
        if method == "DELETE" and not sub:
            options = self._delete_options(rec)
            return self._respond(h, rec, 200, self.store.delete(rt.plural, ns, name, options, dry_run), started)
        raise status.method_not_allowed()

    @staticmethod
    def _media_type(rec):
        ct = rec.content_type or ""
        return ct.split(";")[0].strip().lower()

    def _decode_body(self, rec, kind):
        mt = self._media_type(rec)
        if mt not in ("", "application/json"):
            raise status.unsupported_media_type(status.BODY_TYPES)
        try:
            obj = json.loads(rec.body.decode("utf-8")) if rec.body else None
        except (ValueError, UnicodeDecodeError) as e:
            raise status.bad_request("couldn't get version/kind; json parse error: %s" % e)
        if not isinstance(obj, dict):
            raise status.bad_request("couldn't get version/kind; json parse error: json: cannot unmarshal "
                                     "%s into Go value of type struct { APIVersion string "
                                     "\"json:\\\"apiVersion,omitempty\\\"\"; Kind string "
                                     "\"json:\\\"kind,omitempty\\\"\" }" % type(obj).__name__)
        if obj.get("kind") and obj["kind"] != kind:
            raise status.bad_request("%s in version %s cannot be handled as a %s: no kind %s is registered"
                                     % (kind, status.go_quote("v1"), kind, status.go_quote(obj["kind"])))
        return obj

    def _patch_type(self, rec):
        mt = self._media_type(rec)
        if mt not in status.PATCH_TYPES:
            raise status.unsupported_media_type(status.PATCH_TYPES)
        if mt == "application/apply-patch+yaml":
            raise status.internal_error("k8s_double does not emulate server-side apply "
                                        "(application/apply-patch+yaml)")
        return mt

    def _conflict_storm(self, rec, rt, name, obj):
        """Fault: answer 409 to every write that carries a resourceVersion precondition."""
        if not self.faults.conflict_on_precondition:
            return
        doc = obj if obj is not None else rec.json
        rv = None
        if isinstance(doc, dict):
            rv = (doc.get("metadata") or {}).get("resourceVersion")
        elif isinstance(doc, list):  # JSON patch: a test or replace of /metadata/resourceVersion
            for op in doc:
                if isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion":
                    rv = op.get("value")
        if rv:
            rec.fault = "conflict"
            self.faults.injected += 1
            raise status.conflict(rt.group, rt.plural, name)

    def _delete_options(self, rec):
        options = {}
        if rec.body:
            try:
                options = json.loads(rec.body) or {}
            except ValueError as e:
                raise status.bad_request("couldn't get version/kind; json parse error: %s" % e)
        if rec.param("gracePeriodSeconds") is not None:
            options["gracePeriodSeconds"] = int(rec.param("gracePeriodSeconds"))
        if rec.param("propagationPolicy"):
            options["propagationPolicy"] = rec.param("propagationPolicy")
        return options

    def _selectors(self, rec, rt, name=None):
        lsel = labelsel.parse_label_selector(rec.param("labelSelector", ""))
        fsel = labelsel.parse_field_selector(rec.param("fieldSelector", ""), rt.plural)
        if name:
            fsel.terms.append(("metadata.name", "=", name))
        return (None if lsel.empty() else lsel), (fsel if fsel.terms else None)

    def _parse_rv(self, rec, rt, value):
        try:
            rv = int(value)
            if rv < 0:
                raise ValueError
            return rv
        except ValueError:
            raise status.invalid(rt.group, rt.plural, "", [status.invalid_field(
                "resourceVersion", value, 'strconv.ParseUint: parsing %s: invalid syntax' % status.go_quote(value))])

    def _wait_fresh(self, rv):
        """Like the watch cache: wait up to 3 s for the store to reach rv; True if it did."""
        return self.store.wait_for_change(rv - 1, 3.0) >= rv

    def _cache_rv(self, lag):
        """The revision the watch cache has seen: the store's, or with the watch_lag fault the
        store's as of `lag` seconds ago."""
        if not lag:
            return self.store.current_rv()
        return self.store.rv_as_of(time.monotonic() - lag)

    def _wait_cache_fresh(self, rv, lag):
        """waitUntilFreshAndBlock (watch_cache.go): up to 3 s for the (lagging) watch cache to
        reach rv. True if it did."""
        if not lag:
            return rv <= self.store.current_rv() or self._wait_fresh(rv)
        deadline = time.monotonic() + 3.0
        while self._cache_rv(lag) < rv:  # bounded by the deadline
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping.is_set():
                return False
            time.sleep(min(0.02, left))
        return True

    # -- list -----------------------------------------------------------------------------

    def _list(self, h, rec, rt, ns, started):
        lsel, fsel = self._selectors(rec, rt)
        rv_param = rec.param("resourceVersion", "")
        match = rec.param("resourceVersionMatch", "")
        cont = rec.param("continue", "")
        limit = rec.param("limit")
        try:
            limit = int(limit) if limit not in (None, "") else 0
        except ValueError:
            raise status.bad_request("limit: Invalid value: %s" % status.go_quote(limit))
        at_rv, after = None, ""
        if cont:
            if rv_param:
                raise status.bad_request("specifying resource version is not allowed when using continue")
            at_rv, after = decode_continue(cont)
            if at_rv < self.store.floor:
                raise self._continue_expired(rt, ns, lsel, fsel, after)
        elif rv_param not in ("", "0"):
            rv = self._parse_rv(rec, rt, rv_param)
            if match == "Exact":
                at_rv = rv
            elif not self._wait_fresh(rv):
                raise status.too_large_resource_version(rv, self.store.current_rv())
        items, rv = self.store.list(rt.plural, ns, lsel, fsel, at_rv=at_rv)
        if after:
            items = [o for o in items if self._key(o) > after]
        meta = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            meta["continue"] = encode_continue(rv, self._key(items[-1]))
            meta["remainingItemCount"] = rest
        out = {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
               "items": [without_type(o) for o in items]}
        self._respond(h, rec, 200, out, started)

    @staticmethod
    def _key(obj):
        return "%s/%s" % (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

    def _continue_expired(self, rt, ns, lsel, fsel, after):
        items, rv = self.store.list(rt.plural, ns, lsel, fsel)
        items = [o for o in items if self._key(o) > after]
        meta = {"continue": encode_continue(rv, after)} if items else {}
        return status.ApiError(status.failure(
            410, "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start "
            "a new list without the continue parameter, or use the continue token in this response to "
            "retrieve the remainder of the results. Continuing with the provided token results in an "
            "inconsistent list - objects that were created, modified, or deleted between the time the first "
            "chunk was returned and now may show up in the list.", metadata=meta))

    def _delete_collection(self, h, rec, rt, ns, started, dry_run):
        lsel, fsel = self._selectors(rec, rt)
        items, _ = self.store.list(rt.plural, ns, lsel, fsel)
        deleted = []
        for o in items:
            try:
                r = self.store.delete(rt.plural, ns, o["metadata"]["name"], self._delete_options(rec), dry_run)
            except status.ApiError:
                continue
            deleted.append(without_type(r if r.get("kind") != "Status" else o))
        out = {"kind": rt.list_kind, "apiVersion": rt.api_version,
               "metadata": {"resourceVersion": str(self.store.current_rv())}, "items": deleted}
        self._respond(h, rec, 200, out, started)

    # -- watch ----------------------------------------------------------------------------

    def _convert(self, ev, lsel, fsel):
        """cache_watcher.go convertToWatchEvent: (type, object) or None if not of interest."""
        def passes(o):
            return (o is not None and (lsel is None or lsel.matches(o["metadata"].get("labels")))
                    and (fsel is None or fsel.matches(o)))
        cur = ev.type != "DELETED" and passes(ev.obj)
        old = ev.prev is not None and passes(ev.prev)
        if cur and not old:
            return "ADDED", ev.obj
        if cur and old:
            return "MODIFIED", ev.obj
        if old:
            prev = copy.deepcopy(ev.prev if ev.type != "DELETED" else ev.obj)
            prev["metadata"]["resourceVersion"] = str(ev.rv)
            return "DELETED", prev
        return None

    def _watch(self, h, rec, rt, ns, name, started):
        lsel, fsel = self._selectors(rec, rt, name)
        q = rec.param
        rv_param = q("resourceVersion", "")
        bookmarks = _truthy(q("allowWatchBookmarks", ""))
        send_initial = q("sendInitialEvents")
        timeout_s = q("timeoutSeconds")
        if timeout_s not in (None, ""):
            try:
                timeout_s = float(int(timeout_s))
            except ValueError:
                raise status.bad_request("timeoutSeconds: Invalid value: %s" % status.go_quote(timeout_s))
        else:
            lo, hi = self.default_watch_timeout
            timeout_s = random.uniform(lo, hi)
        start_rv = None if rv_param in ("", "0") else self._parse_rv(rec, rt, rv_param)
        # Watches open when close_watches()/expire_watches() is called are affected: capture the
        # generations before the client can see the stream start.
        gens = (self.faults.close_generation, self.faults.expire_generation)
        initial_state = start_rv is None or _truthy(send_initial or "")
        initial_end = _truthy(send_initial or "") and bookmarks
        # The watch cache may lag behind storage (faults.watch_lag): then it serves the state
        # and the events it has seen, each event `lag` seconds after its commit.
        lag = self.faults.watch_lag or 0.0
        error_event = None
        backlog, sub, pos = [], None, 0  # backlog: (commit time or None = at once, type, object)
        if start_rv is not None and not self._wait_cache_fresh(start_rv, lag):
            error_event = status.too_large_resource_version(start_rv, self._cache_rv(lag)).status
        else:
            with self.store.cond:
                try:
                    if initial_state:
                        at = self._cache_rv(lag) if lag else None
                        try:
                            items, pos = self.store.list(rt.plural, ns, lsel, fsel, at_rv=at)
                        except status.ApiError:  # lagging state compacted away: serve the current one
                            at = None
                            items, pos = self.store.list(rt.plural, ns, lsel, fsel)
                        backlog = [(None, "ADDED", o) for o in items]
                        if initial_end:  # WatchList: the end of the initial state is announced
                            bm = bookmark_object(rt, pos, self.bookmark_style)
                            bm["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
                            backlog.append((None, "BOOKMARK", bm))
                        since = pos if at is not None else None
                    else:
                        pos = since = start_rv
                    if since is not None:
                        for ev in self.store.events_since(since, rt.plural, ns):
                            c = self._convert(ev, lsel, fsel)
                            if c:
                                backlog.append((ev.time, c[0], c[1]))
                            pos = max(pos, ev.rv)
                    sub = self.store.subscribe(rt.plural, ns)
                except status.ApiError as e:
                    error_event = e.status
        late = self.faults.delay_response + rec.answer_late
        if late:
            time.sleep(late)
        rec.status = 200
        rec.duration = time.monotonic() - started
        h.send_response(200)
        self._std_headers(h)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        with self._lock:
            self._active_watches.add(rec)
            self.counters["watches"] += 1
        generation = self._generation
        try:
            if error_event is not None:
                self._send_event(h, rec, "ERROR", error_event)
                self._end_stream(h)
                return
            self._stream(h, rec, rt, lsel, fsel, sub, backlog, pos, bookmarks, timeout_s, generation, gens)
        except (OSError, ssl.SSLError, ValueError):
            h.close_connection = True
        finally:
            if sub is not None:
                sub.close()
            with self._lock:
                self._active_watches.discard(rec)

    def _send_event(self, h, rec, type_, obj):
        data = _json_bytes({"type": type_, "object": obj})
        h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        rec.events += 1
        with self._lock:
            self.counters["watch events"] += 1
            if type_ == "BOOKMARK":
                self.counters["bookmarks"] += 1

    @staticmethod
    def _end_stream(h):
        h.wfile.write(b"0\r\n\r\n")

    def _client_gone(self, h):
        """True once the watching client has closed its side. A watch client sends nothing while
        the stream is open, so anything readable is EOF (or, over TLS, a protocol record)."""
        sock = h.request
        try:
            r, _, _ = select.select([sock], [], [], 0)
            if not r:
                return False
            if not isinstance(sock, ssl.SSLSocket):
                return sock.recv(1, socket.MSG_PEEK) == b""
            sock.setblocking(False)
            try:
                return sock.recv(1) == b""
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return False
            finally:
                sock.setblocking(True)
        except (OSError, ValueError):
            return True

    def _stream(self, h, rec, rt, lsel, fsel, sub, backlog, pos, bookmarks, timeout_s, generation, gens):
        """Sends the backlog, then every change as it comes, until the deadline or a fault.

        Everything goes through one FIFO of (time, type, object), the time being an event's
        commit or the moment a bookmark was made (None: at once). The head goes out once its
        time is `watch_lag` (as set now) in the past: times never decrease along the queue, so
        events come in order, a bookmark never overtakes the events it covers, and clearing the
        lag lets everything queued out at once, like a cache catching up. A bookmark's RV is
        read together with the events taken before it, so without a lag too it never claims a
        revision whose events are still to be sent."""
        f = self.faults
        now = time.monotonic()
        deadline = now + timeout_s
        close_gen, expire_gen = gens
        last_rv = pos
        pending = collections.deque(backlog)

        def next_bookmark(t):
            nb = t + self.bookmark_interval
            pre = deadline - 2.0
            return pre if t < pre < nb else nb

        bookmark_at = next_bookmark(now)
        while True:
            if self._stopping.is_set() or generation != self._generation:
                raise OSError("server going down")
            now = time.monotonic()
            if f.hang or (rec.token and f.refusal(rec.token) == "hang"):
                time.sleep(0.05)
                continue
            if f.close_generation != close_gen or now >= deadline:
                break
            if f.watch_max_duration is not None and now - (deadline - timeout_s) >= f.watch_max_duration:
                break
            if f.expire_generation != expire_gen:
                self._send_event(h, rec, "ERROR", status.expired(
                    "The resourceVersion for the provided watch is too old.").status)
                break
            with self.store.cond:  # the events and the revision they bring the store to, together
                taken, store_rv = sub.take(), self.store.rv
            for ev in taken:
                c = self._convert(ev, lsel, fsel)
                if c:
                    pending.append((ev.time, c[0], c[1]))
                last_rv = max(last_rv, ev.rv)
            if bookmarks and now >= bookmark_at:
                # `now` was read before the take: every event committed before it is queued.
                rv = max(store_rv, last_rv)
                pending.append((now, "BOOKMARK", bookmark_object(rt, rv, self.bookmark_style)))
                bookmark_at = next_bookmark(now)
            lag = f.watch_lag or 0.0
            now = time.monotonic()
            while pending and (pending[0][0] is None or pending[0][0] + lag <= now):
                _, type_, obj = pending.popleft()
                self._send_event(h, rec, type_, obj)
            if self._client_gone(h):
                raise OSError("client went away")
            wait = min(0.25, max(0.0, deadline - now))
            if bookmarks:
                wait = min(wait, max(0.0, bookmark_at - now))
            if pending:
                wait = min(wait, max(0.0, pending[0][0] + lag - now))
            if f.watch_max_duration is not None or f.watch_lag:
                wait = min(wait, 0.05)  # a knob may change while we wait
            with self.store.cond:
                if not sub.queue and wait > 0:
                    self.store.cond.wait(wait)
        self._end_stream(h)

    # -- discovery and health -------------------------------------------------------------

    def _non_resource(self, h, rec, info, started):
        p = info.path.rstrip("/") or "/"
        if h.command != "GET":
            raise status.method_not_allowed()
        if p in ("/healthz", "/livez", "/readyz"):
            return self._respond(h, rec, 200, None, started, raw=b"ok", content_type="text/plain; charset=utf-8")
        if p == "/version":
            return self._respond(h, rec, 200, {
                "major": "1", "minor": "31", "gitVersion": "v1.31.0-k8s-double", "gitCommit": "k8s-double",
                "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
                "compiler": "gc", "platform": "linux/amd64"}, started)
        if p == "/api":
            return self._respond(h, rec, 200, {"kind": "APIVersions", "versions": ["v1"],
                                               "serverAddressByClientCIDRs": [
                                                   {"clientCIDR": "0.0.0.0/0",
                                                    "serverAddress": "%s:%d" % (self.host, self.port)}]},
                                 started)
        groups = sorted({g for g, _ in BY_GROUP_VERSION if g})
        if p == "/apis":
            return self._respond(h, rec, 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": "%s/v1" % g, "version": "v1"}],
                 "preferredVersion": {"groupVersion": "%s/v1" % g, "version": "v1"}} for g in groups]}, started)
        parts = [x for x in p.split("/") if x]
        gv = None
        if len(parts) == 2 and parts[0] == "api":
            gv = ("", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            gv = (parts[1], parts[2])
        elif len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            g = parts[1]
            return self._respond(h, rec, 200, {"kind": "APIGroup", "apiVersion": "v1", "name": g,
                                               "versions": [{"groupVersion": "%s/v1" % g, "version": "v1"}],
                                               "preferredVersion": {"groupVersion": "%s/v1" % g,
                                                                    "version": "v1"}}, started)
        if gv in BY_GROUP_VERSION:
            resources = []
            for rt in sorted(BY_GROUP_VERSION[gv].values(), key=lambda r: r.plural):
                r = {"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": True, "kind": rt.kind,
                     "verbs": VERBS}
                if rt.plural in SHORT_NAMES:
                    r["shortNames"] = SHORT_NAMES[rt.plural]
                resources.append(r)
                for sub in rt.subresources:
                    s = {"name": "%s/%s" % (rt.plural, sub), "singularName": "", "namespaced": True,
                         "kind": rt.kind, "verbs": ["get", "patch", "update"]}
                    if sub == "scale":
                        s.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
                    resources.append(s)
            gvs = "%s/%s" % gv if gv[0] else gv[1]
            return self._respond(h, rec, 200, {"kind": "APIResourceList", "apiVersion": "v1",
                                               "groupVersion": gvs, "resources": resources}, started)
        raise status.path_not_found()
