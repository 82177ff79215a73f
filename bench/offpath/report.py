#!/usr/bin/env python3
"""Tables of bench/offpath/run.sh from its work folder: the per-request lines of the load
generator (`request_id status latency_us`), the gateway's audit records and the overload runs'
counters.

  report.py tables WORK UPSTREAM_MS POLICY
  report.py verdict-rate WORK ROUTE     # 1 / the median verdict time of ROUTE's requests, per s
"""
import glob
import json
import math
import os
import sys


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[max(1, min(len(xs), math.ceil(q * len(xs)))) - 1]


def requests(work, part, route):
    """(request_id, status, latency ms) of every measured request of `route`."""
    out = []
    for path in sorted(glob.glob(os.path.join(work, part, f"{route}.*"))):
        if not path.endswith(".txt"):
            continue
        with open(path) as f:
            for line in f:
                rid, status, us = line.split()
                out.append((rid, int(status), int(us) / 1000.0))
    return out


def audit(work):
    recs = {}
    path = os.path.join(work, "audit.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                recs.setdefault(r["request_id"], []).append(r)
    return recs


def verdict_ms(recs, rid):
    for r in recs.get(rid, []):
        if r.get("direction") == "input" and r.get("effect") not in ("shed", "skipped"):
            return r["latency_us"] / 1000.0
    return None


def model_name(route):
    return "imitation model (300 ms)" if route.endswith("-imitation") else "small in-process model"


def table_a(work, recs):
    print("\n(a) Added latency of a shadow and of an annotate binding (sequential requests)")
    head = f"{'route':<34}{'n':>5}{'failed':>8}{'p50 ms':>10}{'p99 ms':>10}{'+p50 ms':>10}{'+p99 ms':>10}{'judged off path':>17}"
    print(head)
    print("-" * len(head))
    base = requests(work, "a", "none")
    b50, b99 = pct([l for _, _, l in base], 0.5), pct([l for _, _, l in base], 0.99)
    routes = ["none"] + sorted(
        {os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(work, "a", "*.txt"))} - {"none"},
        key=lambda r: (not r.endswith("imitation"), r),
    )
    for route in routes:
        rs = requests(work, "a", route)
        lat = [l for _, _, l in rs]
        failed = sum(1 for _, s, _ in rs if not 200 <= s < 300)
        p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
        if route == "none":
            label, d50, d99, judged = "no binding", "-", "-", "-"
        else:
            action = route.split("-")[0]
            label = f"{action}, {model_name(route)}"
            d50, d99 = f"{p50 - b50:+.2f}", f"{p99 - b99:+.2f}"
            off = [r for rid, _, _ in rs for r in recs.get(rid, []) if r.get("off_path")]
            done = sum(1 for r in off if r.get("verdict") in ("allow", "violation"))
            judged = f"{done}/{len(rs)}"
        print(f"{label:<34}{len(rs):>5}{failed:>8}{p50:>10.2f}{p99:>10.2f}{d50:>10}{d99:>10}{judged:>17}")


def table_b(work, recs, upstream_ms):
    print(f"\n(b) input_mode with a blocking binding: total against max(upstream {upstream_ms} ms, verdict)")
    head = f"{'route':<40}{'n':>4}{'blocked':>9}{'p50 total':>11}{'p50 verdict':>13}{'p50 max':>9}{'p50 sum':>9}{'total/max p50':>15}"
    print(head)
    print("-" * len(head))
    for m in ("imitation", "local"):
        for mode in ("before", "parallel"):
            route = f"{mode}-{m}"
            rs = requests(work, "b", route)
            if not rs:
                continue
            ok = [(rid, l) for rid, s, l in rs if 200 <= s < 300]
            rows = [(l, verdict_ms(recs, rid)) for rid, l in ok]
            rows = [(l, v) for l, v in rows if v is not None]
            tot = [l for l, _ in rows]
            ver = [v for _, v in rows]
            mx = [max(upstream_ms, v) for v in ver]
            sm = [upstream_ms + v for v in ver]
            ratio = [l / x for l, x in zip(tot, mx)]
            label = f"{mode}, {model_name(route)}"
            print(
                f"{label:<40}{len(rs):>4}{len(rs) - len(ok):>9}{pct(tot, 0.5):>11.1f}{pct(ver, 0.5):>13.1f}"
                f"{pct(mx, 0.5):>9.1f}{pct(sm, 0.5):>9.1f}{pct(ratio, 0.5):>15.3f}"
            )


def table_c(work):
    print("\n(c) The background queue under 10x overload (shadow traffic)")
    head = f"{'model':<26}{'verdicts/s':>11}{'offered/s':>10}{'x':>6}{'requests':>10}{'failed':>8}{'shed':>7}{'judged':>8}{'p50 ms':>8}{'p99 ms':>8}{'RSS MB before/peak/drained':>28}"
    print(head)
    print("-" * len(head))
    for path in sorted(glob.glob(os.path.join(work, "c", "*.env"))):
        route = os.path.basename(path)[: -len(".env")]
        env = dict(line.strip().split("=", 1) for line in open(path) if "=" in line)
        summary = dict(kv.split("=") for kv in open(path[: -len(".env")] + ".summary").read().split())
        rs = requests(work, "c", route)
        lat = [l for _, _, l in rs]
        cap = float(env["capacity"])
        offered = float(summary["rps"])
        mb = lambda k: f"{int(env.get(k, 0)) / 1024:.0f}"
        print(
            f"{model_name(route):<26}{cap:>11.1f}{offered:>10.1f}{offered / cap:>6.1f}{len(rs):>10}"
            f"{int(summary['failed']):>8}{env['shed']:>7}{env['judged']:>8}{pct(lat, 0.5):>8.1f}{pct(lat, 0.99):>8.1f}"
            f"{mb('rss0') + ' / ' + mb('peak') + ' / ' + mb('rss_drained'):>28}"
        )


def main():
    cmd, work = sys.argv[1], sys.argv[2]
    recs = audit(work)
    if cmd == "verdict-rate":
        ver = [verdict_ms(recs, rid) for rid, s, _ in requests(work, "b", sys.argv[3])]
        ver = [v for v in ver if v]
        print(f"{1000.0 / pct(ver, 0.5):.2f}")
    elif cmd == "tables":
        upstream_ms = float(sys.argv[3])
        table_a(work, recs)
        table_b(work, recs, upstream_ms)
        table_c(work)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
