"""The one /metrics scraper: fetches and parses the Prometheus text exposition (format 0.0.4)
and looks series up.

A missing series has one meaning everywhere: get() (and MetricsMixin.metric()) return None, or
the `default` the caller passes explicitly (default=0.0 for "a counter not exported yet counts
as 0"). value() is the assertion form: exactly one such sample, else AssertionError. A series is
named by its metric name and its complete label set: metric("x", spark="a") does not match
x{spark="a",outcome="b"}; find() is the subset match."""

import re
import urllib.request

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(r"^(%s)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$" % _NAME)
_LABEL_START = re.compile(r"[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*\"")
_LABEL_END = re.compile(r"[ \t]*(,|$)")


def _parse_labels(text, line):
    labels = {}
    i, n = 0, len(text)
    while i < n:
        m = _LABEL_START.match(text, i)
        if not m:
            raise ValueError("bad labels in line %r" % line)
        name, i = m.group(1), m.end()
        value = []
        while True:
            if i >= n:
                raise ValueError("unterminated label value in line %r" % line)
            c = text[i]
            if c == "\\":
                nxt = text[i + 1:i + 2]
                value.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        if name in labels:
            raise ValueError("duplicate label %r in line %r" % (name, line))
        labels[name] = "".join(value)
        m = _LABEL_END.match(text, i)
        if not m:
            raise ValueError("bad labels in line %r" % line)
        i = m.end()
    return labels


def _parse_value(text):
    special = {"+Inf": float("inf"), "-Inf": float("-inf"), "NaN": float("nan")}
    return special[text] if text in special else float(text)


class Exposition:
    """A parsed scrape: TYPE per family and every sample as (name, labels dict, value). Raises
    ValueError on a line that is not valid text exposition."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.samples = []
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    if parts[2] in self.types:
                        raise ValueError("second TYPE line for %s" % parts[2])
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError("unparsable sample line %r" % line)
            labels = _parse_labels(m.group(2), line) if m.group(2) else {}
            self.samples.append((m.group(1), labels, _parse_value(m.group(3))))

    def family_of(self, sample_name):
        if sample_name in self.types:
            return sample_name
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample_name[:-len(suffix)]
            if sample_name.endswith(suffix) and self.types.get(base) in ("histogram", "summary"):
                return base
        return None

    def find(self, name, **labels):
        """Samples named `name` whose labels include `labels`."""
        return [(n, l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]

    def get(self, name, default=None, **labels):
        """The value of the sample named `name` with exactly these labels; `default` (None unless
        given) when there is no such sample."""
        hits = [v for n, l, v in self.samples if n == name and l == labels]
        if len(hits) > 1:
            raise AssertionError("%d samples %s%s in one scrape" % (len(hits), name, labels))
        return hits[0] if hits else default

    def value(self, name, **labels):
        """The one sample named `name` with exactly these labels (fails if there is not one)."""
        hits = [v for n, l, v in self.samples if n == name and l == labels]
        if len(hits) != 1:
            raise AssertionError("expected exactly one sample %s%s, found %d; samples of that "
                                 "name: %s" % (name, labels, len(hits), self.find(name)))
        return hits[0]


def scrape(url, timeout=10):
    """GETs `url` (an admin listener's .../metrics, no token) and parses it. An HTTP error status
    raises urllib.error.HTTPError."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return Exposition(r.read().decode())


class MetricsMixin:
    """Scraping this test's gateway (its admin listener), for GatewayTestCase."""

    def scrape_metrics(self, token=None):
        """GET /metrics through self.api() (token as there: None sends the configured one, ""
        none); asserts 200 and returns the Exposition."""
        status, text = self.api("GET", "/metrics", token=token)
        self.assertEqual(status, 200, "GET /metrics answered %s: %r" % (status, text))
        self.assertIsInstance(text, str)
        return Exposition(text)

    def metric(self, name, default=None, **labels):
        """One scrape's value of name{labels} (exactly those labels); `default` (None unless
        given) when the gateway does not export that series."""
        return self.scrape_metrics().get(name, default, **labels)
