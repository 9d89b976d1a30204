"""Label and field selectors, as the `labelSelector` / `fieldSelector` query parameters take them.

Label selector syntax and matching follow k8s.io/apimachinery pkg/labels/selector.go: a
comma-separated list of requirements, each `key`, `!key`, `key=v`, `key==v`, `key!=v`,
`key in (a,b)`, `key notin (a,b)`, `key>n`, `key<n`; `!=` and `notin` also match objects that
lack the key (documented on https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/).
Field selectors support `=`, `==`, `!=` on the fields each resource registers (metadata.name and
metadata.namespace everywhere, plus e.g. status.phase for pods); others answer 400
"field label not supported" like the registries' conversion functions.
"""

import re

from . import status

_KEY_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class Requirement:
    def __init__(self, key, op, values=()):
        self.key, self.op, self.values = key, op, tuple(values)

    def matches(self, labels):
        has = self.key in labels
        v = labels.get(self.key)
        if self.op in ("=", "==", "in"):
            return has and v in self.values
        if self.op in ("!=", "notin"):
            return not has or v not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in (">", "<"):
            if not has:
                return False
            try:
                lhs = int(v)
            except ValueError:
                return False
            rhs = int(self.values[0])
            return lhs > rhs if self.op == ">" else lhs < rhs
        return False

    def __repr__(self):
        return "Requirement(%r, %r, %r)" % (self.key, self.op, self.values)


class LabelSelector:
    def __init__(self, requirements=()):
        self.requirements = list(requirements)

    def matches(self, labels):
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self):
        return not self.requirements


def _bad(text, why):
    return status.bad_request("unable to parse requirement: %s (in %r)" % (why, text))


def _split_top_level(text):
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key, text):
    if not _KEY_RE.match(key) or len(key.split("/")[-1]) > 63:
        raise _bad(text, "invalid label key %r" % key)


def _check_value(value, text):
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise _bad(text, "invalid label value: %r" % value)


def parse_label_selector(text):
    """Parses a labelSelector query value; raises ApiError(400) if it is malformed."""
    text = (text or "").strip()
    if not text:
        return LabelSelector()
    reqs = []
    for part in _split_top_level(text):
        p = part.strip()
        if not p:
            raise _bad(text, "found '', expected: identifier")
        m = re.match(r"^(\S+?)\s+(in|notin)\s*\((.*)\)$", p)
        if m:
            key, op, vals = m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",")]
            _check_key(key, text)
            for v in vals:
                _check_value(v, text)
            reqs.append(Requirement(key, op, vals))
            continue
        if p.startswith("!"):
            key = p[1:].strip()
            _check_key(key, text)
            reqs.append(Requirement(key, "!"))
            continue
        m = re.match(r"^([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(.*)$", p)
        if m:
            key, op, val = m.group(1), m.group(2), m.group(3).strip()
            _check_key(key, text)
            if op in (">", "<"):
                if not re.match(r"^-?\d+$", val):
                    raise _bad(text, "for 'Gt', 'Lt' operators, the value must be an integer")
            else:
                _check_value(val, text)
            reqs.append(Requirement(key, op, [val]))
            continue
        if re.match(r"^\S+$", p):
            _check_key(p, text)
            reqs.append(Requirement(p, "exists"))
            continue
        raise _bad(text, "found %r, expected: in, notin, =, ==, !=, gt, lt" % p)
    return LabelSelector(reqs)


def selector_from_label_selector_object(sel):
    """metav1.LabelSelector (matchLabels + matchExpressions) -> LabelSelector."""
    reqs = []
    for k, v in sorted((sel or {}).get("matchLabels", {}).items()):
        reqs.append(Requirement(k, "=", [v]))
    for e in (sel or {}).get("matchExpressions", []) or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(e.get("operator"))
        if op:
            reqs.append(Requirement(e.get("key", ""), op, e.get("values") or []))
    return LabelSelector(reqs)


def label_selector_string(sel):
    """metav1.LabelSelectorAsSelector(...).String(): requirements sorted by key, as the Scale's
    status.selector shows them ("app=x,tier in (a,b)")."""
    items = []
    for k, v in (sel or {}).get("matchLabels", {}).items():
        items.append((k, "%s=%s" % (k, v)))
    for e in (sel or {}).get("matchExpressions", []) or []:
        k, op, vals = e.get("key", ""), e.get("operator"), sorted(e.get("values") or [])
        if op == "In":
            items.append((k, "%s in (%s)" % (k, ",".join(vals))))
        elif op == "NotIn":
            items.append((k, "%s notin (%s)" % (k, ",".join(vals))))
        elif op == "Exists":
            items.append((k, k))
        elif op == "DoesNotExist":
            items.append((k, "!" + k))
    return ",".join(s for _, s in sorted(items, key=lambda x: x[0]))


# --------------------------------------------------------------------------------------------
# Field selectors

COMMON_FIELDS = ("metadata.name", "metadata.namespace")
EXTRA_FIELDS = {
    "pods": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    "events": ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "services": ("spec.clusterIP", "spec.type"),
    "replicasets": ("status.replicas",),
}


def _field_value(obj, path):
    if path == "source":
        return (obj.get("source") or {}).get("component", "")
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


class FieldSelector:
    def __init__(self, terms=()):
        self.terms = list(terms)

    def matches(self, obj):
        for field, op, value in self.terms:
            actual = _field_value(obj, field)
            if (op == "!=") == (actual == value):
                return False
        return True

    def exact(self, field):
        for f, op, v in self.terms:
            if f == field and op in ("=", "=="):
                return v
        return None


def parse_field_selector(text, resource):
    text = (text or "").strip()
    if not text:
        return FieldSelector()
    allowed = COMMON_FIELDS + EXTRA_FIELDS.get(resource, ())
    terms = []
    for part in text.split(","):
        m = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise status.bad_request("invalid selector: '%s'; can't understand '%s'" % (text, part))
        field, op, value = m.groups()
        if field not in allowed:
            raise status.bad_request("field label not supported: %s" % field)
        terms.append((field, op, value))
    return FieldSelector(terms)
