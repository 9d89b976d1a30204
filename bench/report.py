#!/usr/bin/env python3
"""bench/run's table: per contender the median over repetitions with (min-max), ratios to direct,
and the issue-7 targets beside spark-gateway's figures with a verdict.

Input: lines "metric contender rep value" (bench/run --out writes the same file).
Usage: bench/report.py RESULTS
"""

import math
import statistics
import sys

CONTENDERS = ["direct", "spark-gateway", "spark-gateway-1t", "haproxy", "haproxy-1t", "proxyd", "socat"]
GW = "spark-gateway"
# bench/jump.py: no jump host (ssh straight to the spark's sshd), OpenSSH's sshd as the jump host,
# the gateway's.
JUMP_CONTENDERS = ["direct", "openssh-jump", "spark-gateway-jump"]


def load(path):
    data = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4:
                continue
            metric, contender, rep, value = parts
            data.setdefault(metric, {}).setdefault(contender, {})[rep] = float(value)
    return data


def fmt(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    a = abs(x)
    if float(x).is_integer():
        return "%d" % x
    if a >= 100:
        return "%.0f" % x
    if a >= 10:
        return "%.1f" % x
    if a >= 1:
        return "%.2f" % x
    return "%.3f" % x


def cell(values, ratio_to=None, sign=False):
    if not values:
        return "-"
    med = statistics.median(values)
    s = ("+" if sign and med >= 0 else "") + fmt(med)
    if len(values) > 1:
        s += " (%s–%s)" % (fmt(min(values)), fmt(max(values)))
    if ratio_to:
        s += " **%.2f×**" % (med / ratio_to)
    return s


def nearest_rank(sorted_values, p):
    k = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(k, len(sorted_values)) - 1]


def main():
    data = load(sys.argv[1])

    def vals(metric, c):
        return list(data.get(metric, {}).get(c, {}).values())

    def med(metric, c):
        v = vals(metric, c)
        return statistics.median(v) if v else None

    def added(metric, c):
        """Per repetition: contender minus direct of the same repetition."""
        d = data.get(metric, {}).get("direct", {})
        x = data.get(metric, {}).get(c, {})
        return [x[r] - d[r] for r in x if r in d]

    rows = []

    def verdict(ok):
        return "n/a" if ok is None else ("**met**" if ok else "**missed**")

    def throughput(metric, title, target, check):
        d = med(metric, "direct")
        cells = [cell(vals(metric, c), None if c == "direct" else d) for c in CONTENDERS]
        g, h = med(metric, GW), med(metric, "haproxy")
        ok = None if g is None or d is None else check(g, d, h)
        rows.append([title] + cells + [target, verdict(ok)])

    throughput("stream1_gbps", "1 TCP stream, Gbit/s", "≥ 0.85× direct and > HAProxy",
               lambda g, d, h: g >= 0.85 * d and (h is None or g > h))
    throughput("stream8_gbps", "8 streams, Gbit/s (sum)", "≥ 0.85× direct",
               lambda g, d, h: g >= 0.85 * d)
    throughput("conns_per_s", "new connections/s (connect, 1 B echo, close; 4 clients)", "≥ HAProxy",
               lambda g, d, h: h is None or g >= h)
    info = vals("conns_per_s", "spark-gateway-info-log")
    if info:
        d = med("conns_per_s", "direct")
        rows.append(["… spark-gateway at the default log level (info)", "", cell(info, d)] + [""] * (len(CONTENDERS) - 2)
                    + ["(for reference)", ""])

    def rtt(metric, title, limit):
        cells = []
        for c in CONTENDERS:
            cells.append(cell(vals(metric, c)) if c == "direct" else cell(added(metric, c), sign=True))
        a = added(metric, GW)
        ok = None if not a else statistics.median(a) <= limit
        rows.append([title] + cells + ["≤ +%d µs over direct" % limit, verdict(ok)])

    rtt("rtt1cpu_p50_us", "64 B round trip p50, µs, all on one CPU (others: added)", 10)
    rtt("rtt1cpu_p99_us", "64 B round trip p99, µs, all on one CPU (others: added)", 50)
    rtt("rtt_p50_us", "64 B round trip p50, µs, as scheduled (others: added)", 10)
    rtt("rtt_p99_us", "64 B round trip p99, µs, as scheduled (others: added)", 50)

    for streams in (1, 8):
        metric = "busy%d_pct" % streams
        if metric in data:
            rows.append(["machine CPU busy during %d stream%s, %% of all CPUs" % (streams, "s" if streams > 1 else "")]
                        + [cell(vals(metric, c)) for c in CONTENDERS] + ["(what limits throughput)", ""])

    for metric, title, target in [("cpu1_s_per_gib", "CPU s per GiB, proxy process, 1 stream", "≤ HAProxy"),
                                  ("cpu8_s_per_gib", "CPU s per GiB, proxy process, 8 streams", "≤ HAProxy")]:
        cells = [cell(vals(metric, c)) if c != "direct" else "-" for c in CONTENDERS]
        g, h = med(metric, GW), med(metric, "haproxy")
        ok = None if g is None or h is None else g <= h
        rows.append([title] + cells + [target, verdict(ok)])

    for metric, title, p50_max, p99_max in [
            ("wake_listen_to_byte_ms", "wake: target listening → first byte at the client, ms", 20, 60),
            ("wake_total_minus_boot_ms", "wake: connect → first byte, minus the server's boot time, ms", None, None),
            ("wake_connect_to_start_ms", "… of which connect → the spark's process started, ms", None, None)]:
        w = sorted(vals(metric, GW))
        if not w:
            continue
        p50, p99 = statistics.median(w), nearest_rank(w, 99)
        text = "p50 %s, p99 %s (min %s, max %s; %d wakes)" % (fmt(p50), fmt(p99), fmt(w[0]), fmt(w[-1]), len(w))
        if p50_max is None:
            rows.append([title, "", text] + [""] * (len(CONTENDERS) - 2) + ["(for reference)", ""])
        else:
            rows.append([title, "", text] + [""] * (len(CONTENDERS) - 2) + ["p50 ≤ %d, p99 ≤ %d" % (p50_max, p99_max),
                         verdict(p50 <= p50_max and p99 <= p99_max)])

    def idle(metric, title, target=None, check=None):
        if metric not in data:
            return
        cells = []
        for c in CONTENDERS:
            v = data[metric].get(c)
            cells.append(" / ".join(fmt(v[r]) for r in sorted(v)) if v else "")
        g = data[metric].get(GW)
        ok = None if not g or check is None else all(check(x) for x in g.values())
        rows.append([title] + cells + [target or "", verdict(ok) if check else ""])

    n = data.get("idle_opened", {}).get(GW, {})
    opened = int(min(n.values())) if n else 0
    idle("idle_kib_per_conn", "%d idle connections: RSS growth per connection, KiB (round 1 / 2)" % opened,
         "≤ 6 KB (5.86 KiB)", lambda x: x <= 6000 / 1024)
    idle("idle_growth_mib", "… RSS growth in all, MiB", "≤ 48 MB (45.8 MiB)", lambda x: x <= 48e6 / 2**20)
    idle("idle_rss_after_kib", "… RSS after closing them, KiB over the baseline", "back to baseline (≤ 1 MiB)",
         lambda x: x <= 1024)
    idle("idle_fds_after", "… open fds after closing them, over the baseline", "back to baseline",
         lambda x: x <= 0)

    header = ["metric"] + CONTENDERS + ["target (spark-gateway)", "verdict"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    jump_table(data, vals, med, verdict)
    many_sparks_table(data, vals, med, verdict)


def many_sparks_table(data, vals, med, verdict):
    """bench/many_sparks.py's round: 1,000 sleeping Deployments discovered at start (issue 22's
    targets: at most 16 KiB per spark, every listener within 2 s)."""
    if "many_to_listening_s" not in data:
        return
    rows = []

    def row(metric, title, target=None, check=None):
        g = med(metric, GW)
        ok = None if check is None or g is None else check(g)
        rows.append([title, cell(vals(metric, GW)), target or "(for reference)", verdict(ok) if check else ""])

    row("many_to_listening_s", "start → every spark's listener open, s", "≤ 2 s", lambda g: g <= 2)
    row("many_rss_kib_per_spark", "RSS per spark, KiB (over the same gateway with none)", "≤ 16 KiB",
        lambda g: g <= 16)
    row("many_rss_empty_mib", "… RSS with no spark, MiB")
    row("many_writes_at_start", "API writes at start (ports already recorded)", "0", lambda g: g == 0)
    row("many_idle_cpu_pct", "idle CPU with the sparks, % of one CPU")
    row("many_idle_cpu_pct_empty", "… with none, % of one CPU")
    row("many_idle_requests", "API requests while idle (beyond the open watches)")
    print()
    header = ["1,000 discovered sparks", GW, "target", "verdict"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def jump_table(data, vals, med, verdict):
    """bench/jump.py's round: the gateway's jump host against OpenSSH's sshd as one (issue 22's
    targets: setup within OpenSSH + 10%, bulk at least 0.9x OpenSSH)."""
    if "jump_setup_warm_ms" not in data:
        return
    gw, ossh = "spark-gateway-jump", "openssh-jump"
    rows = []

    def row(metric, title, target=None, check=None):
        o = med(metric, ossh)
        cells = [cell(vals(metric, c), o if c == gw and o else None) for c in JUMP_CONTENDERS]
        g = med(metric, gw)
        ok = None if check is None or g is None or o is None else check(g, o)
        rows.append([title] + cells + [target or "(for reference)", verdict(ok) if check else ""])

    row("jump_setup_warm_ms", "`ssh -J … true`, spark running, ms (ratio to OpenSSH)", "≤ OpenSSH + 10%",
        lambda g, o: g <= 1.1 * o)
    row("jump_setup_cold_ms", "`ssh -J … true`, spark asleep, ms")
    row("jump_spark_boot_ms", "… of which the spark's sshd: exec to listening, ms")
    row("jump_bulk_up_mib_s", "bulk up through `ssh -J`, MiB/s (ratio to OpenSSH)", "≥ 0.9× OpenSSH",
        lambda g, o: g >= 0.9 * o)
    row("jump_bulk_down_mib_s", "bulk down through `ssh -J`, MiB/s (ratio to OpenSSH)", "≥ 0.9× OpenSSH",
        lambda g, o: g >= 0.9 * o)
    print()
    header = ["jump host"] + JUMP_CONTENDERS + ["target (spark-gateway-jump)", "verdict"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
