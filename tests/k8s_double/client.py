"""A minimal Kubernetes REST client (standard library) for tests: plain requests and watch
streams, against the double or anything else that speaks the API. Useful to look at the double
over HTTP exactly as the gateway does.

    c = ApiClient(api.url, token=api.token, ca_file=api.ca_file)
    r = c.request("GET", "/apis/apps/v1/namespaces/spark/deployments")   # r.status, r.json
    w = c.watch("/apis/apps/v1/namespaces/spark/deployments", resourceVersion=rv,
                allowWatchBookmarks="true")
    ev = w.next(timeout=5)                # {"type": ..., "object": ...} or None
    w.wait_for(lambda e: e["type"] == "BOOKMARK", timeout=5)
    w.close()
"""

import http.client
import json
import queue
import ssl
import threading
import time
from urllib.parse import urlencode, urlsplit


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<Response %d %s>" % (self.status, self.body[:200])


class ApiClient:
    def __init__(self, url, token=None, ca_file=None, cert=None, timeout=10.0):
        u = urlsplit(url)
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80)
        self.token = token
        self.timeout = timeout
        self.context = None
        if self.scheme == "https":
            self.context = ssl.create_default_context(cafile=ca_file)
            if cert:
                self.context.load_cert_chain(cert[0], cert[1])

    def _conn(self, timeout=None):
        t = self.timeout if timeout is None else timeout
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=t, context=self.context)
        return http.client.HTTPConnection(self.host, self.port, timeout=t)

    def _headers(self, content_type=None, token=None, extra=None):
        h = {"Accept": "application/json"}
        tok = self.token if token is None else token
        if tok:
            h["Authorization"] = "Bearer " + tok
        if content_type:
            h["Content-Type"] = content_type
        h.update(extra or {})
        return h

    @staticmethod
    def _path(path, query):
        q = {k: v for k, v in (query or {}).items() if v is not None}
        return path + ("?" + urlencode(q) if q else "")

    def request(self, method, path, body=None, content_type=None, query=None, token=None, headers=None,
                timeout=None):
        """body: a dict/list (sent as JSON) or bytes. content_type defaults to application/json
        (application/merge-patch+json for PATCH). token="" sends no Authorization header."""
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        if content_type is None and body is not None:
            content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        conn = self._conn(timeout)
        try:
            conn.request(method, self._path(path, query), body=body,
                         headers=self._headers(content_type, token, headers))
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()

    def watch(self, path, token=None, timeout=30.0, **params):
        params.setdefault("watch", "1")
        return WatchStream(self, self._path(path, params), token, timeout)


class WatchStream:
    """Reads a watch response in a thread. `status` is the HTTP code, `events` every event so far
    (`arrivals[i]`: the time.monotonic() at which events[i] was read), `ended` is set when the
    stream ends (`clean` tells a final zero chunk from a cut)."""

    def __init__(self, client, path, token, timeout):
        self.events = []
        self.arrivals = []
        self._queue = queue.Queue()
        self.ended = threading.Event()
        self.clean = None
        self.error = None
        self.status = None
        self.headers = None
        self.body = b""
        self._conn = client._conn(timeout)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path, client._headers(token=token)), daemon=True)
        self._thread.start()
        self._started.wait(timeout)

    def _run(self, path, headers):
        try:
            self._conn.request("GET", path, headers=headers)
            resp = self._conn.getresponse()
            self.status, self.headers = resp.status, resp.getheaders()
            self._started.set()
            if resp.status != 200:
                self.body = resp.read()
                self.clean = True
                return
            if not resp.chunked:
                for line in resp:
                    self._line(line)
                self.clean = True
                return
            # Own chunk parsing: http.client's hides a cut connection as a normal end.
            fp, buf = resp.fp, b""
            while True:
                size_line = fp.readline(1024)
                if not size_line:
                    self.clean = False
                    return
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while fp.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    self.clean = True
                    return
                data = fp.read(size)
                if len(data) < size or fp.read(2) != b"\r\n":
                    self.clean = False
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._line(line)
        except Exception as e:  # cut connection, timeout, close()
            self.error = e
            self.clean = False
        finally:
            self._started.set()
            self.ended.set()
            self._queue.put(None)

    def _line(self, line):
        if not line.strip():
            return
        ev = json.loads(line)
        self.arrivals.append(time.monotonic())
        self.events.append(ev)
        self._queue.put(ev)

    def next(self, timeout=5.0):
        """The next event, or None if the stream ended or nothing came within timeout."""
        try:
            ev = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if ev is None:
            self._queue.put(None)
        return ev

    def wait_for(self, predicate, timeout=5.0):
        """Consumes events until predicate(event) is true; returns that event or raises
        AssertionError (naming what came) after timeout or when the stream ends."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("watch: no matching event within %gs; got %s" % (timeout, _brief(seen)))
            ev = self.next(left)
            if ev is None:
                if self.ended.is_set():
                    raise AssertionError("watch ended (clean=%s, error=%r) before a matching event; got %s"
                                         % (self.clean, self.error, _brief(seen)))
                continue
            seen.append(ev)
            if predicate(ev):
                return ev

    def close(self):
        try:
            if self._conn.sock is not None:
                self._conn.sock.shutdown(2)
        except OSError:
            pass
        self._conn.close()
        self.ended.wait(5)


def _brief(events):
    out = []
    for e in events:
        o = e.get("object") or {}
        m = o.get("metadata") or {}
        out.append("%s %s@%s" % (e.get("type"), m.get("name", o.get("reason", "")), m.get("resourceVersion")))
    return "[" + ", ".join(out) + "]"
