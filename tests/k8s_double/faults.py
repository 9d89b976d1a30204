"""Fault knobs of the API double. All are thread-safe and take effect on the next request (or,
for the watch knobs, within ~50 ms on open watch streams).

    api.faults.delay = 2.0                 # hold every request 2 s before handling it
    api.faults.delay_response = 2.0        # handle it (commit!), then answer 2 s late
    api.faults.answer_late(5, count=1, method="PATCH", path=r"/deployments/brave-dolphin/scale$")
                                           # only the next such call: applied, answered 5 s late
    api.faults.hold(5, count=1, method="PATCH", path=r"/scale$")
                                           # only the next such call: held 5 s, then handled only
                                           # if its client is still there
    rule = api.faults.fail(count=3, method="PATCH", path=r"/scale$")   # next 3 matching -> 500
    api.faults.fail(count=1, code=429)     # flow control's 429: text/plain, Retry-After: 1
    api.faults.fail()                      # every request -> 500 InternalError, until cleared
    api.faults.clear_failures()
    api.faults.watch_max_duration = 5      # end every watch stream after 5 s (cleanly)
    api.faults.watch_lag = 2.0             # the watch cache lags 2 s behind storage (GET/LIST do not)
    api.faults.close_watches()             # end every open watch stream now (cleanly)
    api.faults.expire_watches()            # send ERROR 410 Expired on every open watch, then end it
    api.faults.conflict_on_precondition = True  # every PATCH/PUT carrying metadata.resourceVersion -> 409
    api.faults.refuse_token(tok, mode="forbidden"|"close"|"hang")
    api.faults.hang = True                 # accept connections but never answer (nor stream)
    api.faults.reset()                     # all of the above off
"""

import re
import threading


class _RequestMatch:
    """Which requests a rule applies to. count None = every matching request until removed;
    otherwise the next `count` ones. method / path (a regular expression searched in the path)
    / verb (get, list, watch, create, update, patch, delete) / when (a predicate on the
    RequestRecord, e.g. on its .json body: `when=lambda rec: (rec.json or {}).get("spec") ==
    {"replicas": 1}`) narrow what matches."""

    def __init__(self, count=None, method=None, path=None, verb=None, when=None):
        self.remaining = count
        self.method = method.upper() if method else None
        self.path = re.compile(path) if path else None
        self.verb = verb
        self.when = when
        self.hits = 0

    def matches(self, method, path, verb, rec=None):
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method and self.method != method:
            return False
        if self.path and not self.path.search(path):
            return False
        if self.verb and self.verb != verb:
            return False
        if self.when is not None and not self.when(rec):
            return False
        return True


class FailRule(_RequestMatch):
    """Answers matching requests with an error Status instead of handling them."""

    def __init__(self, count=None, method=None, path=None, verb=None, code=500, reason=None,
                 message=None, close=False, retry_after=None, when=None):
        super().__init__(count, method, path, verb, when)
        self.code = code
        self.reason = reason
        self.message = message
        self.close = close
        self.retry_after = retry_after

    def __repr__(self):
        return "FailRule(code=%s, method=%s, path=%s, remaining=%s, hits=%d)" % (
            self.code, self.method, self.path and self.path.pattern, self.remaining, self.hits)


class DelayRule(_RequestMatch):
    """Makes matching requests slow. kind "answer_late": handled (writes committed) at once,
    answered `seconds` late. kind "hold": held `seconds` before handling; if the client has
    gone meanwhile the request is dropped unhandled (kube-apiserver cancels the request context
    of a client that went away, so a write that had not started is not applied)."""

    def __init__(self, kind, seconds, count=None, method=None, path=None, verb=None, when=None):
        if kind not in ("answer_late", "hold"):
            raise ValueError(kind)
        super().__init__(count, method, path, verb, when)
        self.kind = kind
        self.seconds = float(seconds)

    def __repr__(self):
        return "DelayRule(%s %gs, method=%s, path=%s, remaining=%s, hits=%d)" % (
            self.kind, self.seconds, self.method, self.path and self.path.pattern, self.remaining, self.hits)


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self._rules = []
        self._delays = []
        self._refused = {}
        self.delay = 0.0
        self.delay_response = 0.0
        self.watch_max_duration = None
        # Seconds the watch cache lags behind storage: every event reaches open watch streams
        # that long after its commit (in order; bookmarks queue behind the events they cover);
        # a new watch starts from the state and revision of that long ago, and one asking for a
        # newer resourceVersion waits up to 3 s for the cache, then gets the 504 "Too large
        # resource version" ERROR event. GET and LIST read storage: current state.
        self.watch_lag = 0.0
        self.conflict_on_precondition = False
        self.hang = False
        self.close_generation = 0  # bumped by close_watches(); watch loops compare
        self.expire_generation = 0  # bumped by expire_watches()
        self.injected = 0

    def reset(self):
        with self._lock:
            self._rules = []
            self._delays = []
            self._refused = {}
        self.delay = 0.0
        self.delay_response = 0.0
        self.watch_max_duration = None
        self.watch_lag = 0.0
        self.conflict_on_precondition = False
        self.hang = False

    # -- injected errors ------------------------------------------------------------------

    def fail(self, count=None, method=None, path=None, verb=None, code=500, reason=None,
             message=None, close=False, retry_after=None, when=None):
        """Adds a FailRule and returns it. close=True drops the connection instead of answering.

        code 429 without reason or message answers as kube-apiserver's flow control does: a
        text/plain "Too many requests, please try again later." with `Retry-After:
        retry_after` (default 1), not a Status. Otherwise the answer is a Status; with
        retry_after its details carry retryAfterSeconds and a Retry-After header goes out (as
        kube-apiserver does for any such Status)."""
        rule = FailRule(count, method, path, verb, code, reason, message, close, retry_after, when)
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule):
        """Removes a FailRule or a DelayRule."""
        with self._lock:
            for rules in (self._rules, self._delays):
                if rule in rules:
                    rules.remove(rule)

    def clear_failures(self):
        with self._lock:
            self._rules = []

    def take_failure(self, method, path, verb, rec=None):
        """The first rule matching this request (consuming one of its counts), or None."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, verb, rec):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    rule.hits += 1
                    self.injected += 1
                    return rule
        return None

    # -- slow answers, narrowed ------------------------------------------------------------

    def answer_late(self, seconds, count=None, method=None, path=None, verb=None, when=None):
        """The next `count` (or all) matching requests are handled at once (a write is
        committed) and answered `seconds` late: a client that gives up first sees a timeout
        although the server applied the call. Returns the DelayRule (.hits, .remaining)."""
        return self._add_delay(DelayRule("answer_late", seconds, count, method, path, verb, when))

    def hold(self, seconds, count=None, method=None, path=None, verb=None, when=None):
        """The next `count` (or all) matching requests wait `seconds` before being handled, and
        are dropped unhandled if their client went away meanwhile: a client that gives up first
        sees a timeout and the server applied nothing. Returns the DelayRule."""
        return self._add_delay(DelayRule("hold", seconds, count, method, path, verb, when))

    def _add_delay(self, rule):
        with self._lock:
            self._delays.append(rule)
        return rule

    def clear_delays(self):
        with self._lock:
            self._delays = []

    def take_delays(self, method, path, verb, rec=None):
        """(hold seconds, answer-late seconds) for this request: the first matching rule of each
        kind, consuming one of its counts."""
        out = {"hold": 0.0, "answer_late": 0.0}
        with self._lock:
            for kind in out:
                for rule in self._delays:
                    if rule.kind == kind and rule.matches(method, path, verb, rec):
                        if rule.remaining is not None:
                            rule.remaining -= 1
                        rule.hits += 1
                        self.injected += 1
                        out[kind] = rule.seconds
                        break
        return out["hold"], out["answer_late"]

    # -- per-client refusal (partition tests) ---------------------------------------------

    def refuse_token(self, token, mode="forbidden"):
        """Requests bearing `token` get a 403 (mode "forbidden"), a dropped connection
        ("close") or no answer at all ("hang")."""
        if mode not in ("forbidden", "close", "hang"):
            raise ValueError(mode)
        with self._lock:
            self._refused[token] = mode

    def unrefuse_token(self, token):
        with self._lock:
            self._refused.pop(token, None)

    def refusal(self, token):
        with self._lock:
            return self._refused.get(token)

    # -- watch streams --------------------------------------------------------------------

    def close_watches(self):
        self.close_generation += 1

    def expire_watches(self):
        self.expire_generation += 1
