#!/usr/bin/env python3
"""Side-by-side table for scripts/compare-irc.sh.

Usage: table.py RESULTS_DIR SERVER... -- SCENARIO...

Reads RESULTS_DIR/SERVER.SCENARIO.json (the stdout of `ringtalk-bench SCENARIO --json`, one JSON object) and
prints, per scenario, the bench's common figures and every numeric entry of its `figures` object, one column
per server, then the ratio ringtalk/peer for each other server. Rows that are zero or absent for every
server are left out, and so are the bench's `limits` (the same for every server); microsecond figures
are shown in milliseconds. A missing or unreadable result shows as
"failed" and the tail of RESULTS_DIR/SERVER.SCENARIO.err is printed under the table.
"""

import json
import math
import os
import sys

# (label, path into the report, scale, unit): the figures every scenario reports.
COMMON = [
    ("clients logged in", "setup.logged_in", 1, ""),
    ("setup time", "setup.seconds", 1, "s"),
    ("deliveries/s", "deliveries.per_second", 1, ""),
    ("delivered", "deliveries.delivered", 1, ""),
    ("expected", "deliveries.expected", 1, ""),
    ("dropped (slow readers)", "deliveries.dropped", 1, ""),
    ("latency p50", "latency.p50_us", 1e-3, "ms"),
    ("latency p90", "latency.p90_us", 1e-3, "ms"),
    ("latency p99", "latency.p99_us", 1e-3, "ms"),
    ("latency p99.9", "latency.p999_us", 1e-3, "ms"),
    ("latency max", "latency.max_us", 1e-3, "ms"),
    ("latency samples", "latency.count", 1, ""),
    ("errors", "errors", 1, ""),
    ("server RSS per user", "server.rss_per_user_bytes", 1e-3, "kB"),
    ("server RSS growth", "server.rss_growth_bytes", 1e-6, "MB"),
    ("server CPU in setup", "server.cpu_setup_s", 1, "s"),
    ("server cores used", "server.cpu_cores_used", 1, ""),
]


def load(path):
    """The report in `path`: the whole file as JSON, else its last line that parses as an object."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
            except ValueError:
                continue
    return None


def get(report, path):
    """The value at a dotted path; a dict of counters (like `errors`) is summed."""
    value = report
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, dict):
        nums = [v for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return sum(nums) if nums else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def flatten(value, prefix=""):
    """Numeric leaves of `value` as (dotted path, number), in document order."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield prefix, value


PERCENTILES = ["count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"]


def figure_order(keys):
    """Sort key that keeps figures in document order but lists a latency's percentiles in rising order
    (the bench's JSON has them alphabetically: p99 after p999)."""
    def key(k):
        group, _, leaf = k.rpartition(".")
        first = min(i for i, other in enumerate(keys) if other.rpartition(".")[0] == group)
        rank = PERCENTILES.index(leaf) if group and leaf in PERCENTILES else keys.index(k)
        return (first, rank)
    return key


def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return "-"
    return f"{a / b:.2f}"


def main(argv):
    if "--" not in argv[1:]:
        sys.exit(__doc__)
    sep = argv.index("--")
    results, servers, scenarios = argv[1], argv[2:sep], argv[sep + 1:]
    base, peers = servers[0], servers[1:]
    header = ["", *servers, *(f"{base}/{p}" for p in peers)]

    for scenario in scenarios:
        reports = {s: load(os.path.join(results, f"{s}.{scenario}.json")) for s in servers}
        rows = []
        for label, path, scale, unit in COMMON:
            vals = {s: (get(reports[s], path) if reports[s] else None) for s in servers}
            if all(v is None for v in vals.values()):
                continue
            vals = {s: (v * scale if v is not None else None) for s, v in vals.items()}
            if path != "errors" and all(not v for v in vals.values()):
                continue  # a figure this scenario does not measure
            rows.append((f"{label} ({unit})" if unit else label, vals))
        # The scenario's own figures, in the order the first report that has them lists them.
        seen = []
        for s in servers:
            figures = (reports[s] or {}).get("figures")
            for key, _ in flatten(figures if isinstance(figures, dict) else {}):
                if key not in seen:
                    seen.append(key)
        for key in sorted(seen, key=figure_order(seen)):
            if key.startswith("limits."):
                continue  # the bench's and machine's limits: the same for every server
            vals = {s: (get(reports[s].get("figures", {}), key) if reports[s] else None) for s in servers}
            if all(not v for v in vals.values()):
                continue
            label = key
            if key.endswith("_us"):
                label = key[:-3] + " (ms)"
                vals = {s: (v / 1e3 if v is not None else None) for s, v in vals.items()}
            rows.append((label, vals))
        for s in servers:
            if reports[s] is None:
                rows.insert(0, ("result", {t: ("failed" if reports[t] is None else "ok") for t in servers}))
                break

        table = [header]
        for label, vals in rows:
            table.append([label, *(fmt(vals[s]) for s in servers), *(ratio(vals[base], vals[p]) for p in peers)])
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        print(f"\n== {scenario} ==")
        for n, r in enumerate(table):
            print("  " + "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
            if n == 0:
                print("  " + "  ".join("-" * w for w in widths))
        for s in servers:
            report = reports[s]
            if report is None:
                err = os.path.join(results, f"{s}.{scenario}.err")
                try:
                    with open(err, encoding="utf-8", errors="replace") as f:
                        tail = f.read().splitlines()[-5:]
                except OSError:
                    tail = []
                print(f"  {s}: no result" + ("; its stderr ends:" if tail else ""))
                for line in tail:
                    print(f"    {line}")
            else:
                for note in report.get("notes") or []:
                    print(f"  {s}: {note}")
                for sample in (report.get("error_samples") or [])[:3]:
                    print(f"  {s} error: {sample}")


if __name__ == "__main__":
    main(sys.argv)
