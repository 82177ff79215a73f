#!/usr/bin/env python3
"""How much a `guardgate policy calibrate` result depends on its split: re-runs the calibration on
the report.json it wrote (every case's P(violation); no model needed) for seeds 1..N, with the same
split (sha256 of the little-endian seed and the case id, per label, half held out) and the same
threshold choice (maximum F1 on the calibration half, the highest of equals, rounded down to 4
decimals, compared in f32), and prints per policy how often the held-out F1 beats both the rules
alone and flagging every case.

Usage: calibration-seeds.py target/calibrate-report/report.json [N=50]
Needs numpy (f32 comparisons as the gateway makes them).
"""
import hashlib
import json
import struct
import sys

import numpy as np


def score(c):
    if c["outcome"] == "error":
        return np.float32(1.0 if c["label"] == 0 else 0.0)
    if c.get("score") is not None:
        return np.float32(c["score"])
    return np.float32(1.0 if c["predicted"] else 0.0)


def key(seed, case_id):
    d = hashlib.sha256(struct.pack("<Q", seed) + case_id.encode()).digest()
    return struct.unpack("<Q", d[:8])[0]


def f1(tp, fp, fn):
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def confusion(cases, flagged):
    tp = sum(1 for c, f in zip(cases, flagged) if c["label"] == 1 and f)
    fp = sum(1 for c, f in zip(cases, flagged) if c["label"] == 0 and f)
    fn = sum(1 for c, f in zip(cases, flagged) if c["label"] == 1 and not f)
    return tp, fp, fn


def round_down(s):
    return np.float32(np.floor(min(max(float(s), 0.0), 1.0) * 1e4) / 1e4)


def main():
    report = json.load(open(sys.argv[1]))
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    for p in report["policies"]:
        cases = p["cases"]
        wins, margins = 0, []
        for seed in range(1, n + 1):
            held = set()
            for label in (1, 0):
                ids = sorted(
                    (c["id"] for c in cases if c["label"] == label),
                    key=lambda i: (key(seed, i), i),
                )
                # Rust's f64::round: halves away from zero.
                held.update(ids[: int(len(ids) * 0.5 + 0.5)])
            cal = [c for c in cases if c["id"] not in held]
            out = [c for c in cases if c["id"] in held]
            cands = sorted(
                {round_down(score(c)) for c in cal if round_down(score(c)) > 0}
                | {np.float32(1.0)},
                reverse=True,
            )
            best = None
            for t in cands:
                f = f1(*confusion(cal, [score(c) >= t for c in cal]))
                if best is None or f > best[0] + 1e-12:
                    best = (f, t)
            t = best[1]
            model = f1(*confusion(out, [score(c) >= t for c in out]))
            rules = f1(
                *confusion(
                    out,
                    [c["predicted"] is True and c.get("backend") == "rules" for c in out],
                )
            )
            pos = sum(c["label"] for c in out)
            flag_all = 2 * pos / (len(out) + pos)
            margins.append(model - max(rules, flag_all))
            wins += margins[-1] > 1e-12
        print(
            f"{p['id']:<36} {wins:>3}/{n} splits beat max(rules, flag-all) held-out F1; "
            f"mean margin {np.mean(margins):+.3f} (sd {np.std(margins):.3f})"
        )


main()
