#!/usr/bin/env python3
"""Checks that a `guardgate policy test` report covers every case of the given policies, with no
classifier error: a run that skipped cases or failed to classify them is not a run of the path.

Usage: check-policy-report.py REPORT_JSON POLICY_FILE_OR_DIR...
"""
import json
import pathlib
import sys


def case_files(path):
    p = pathlib.Path(path)
    if p.is_dir():
        return sorted(p.glob("*.cases.jsonl"))
    return [p.with_name(p.name[: -len(p.suffix)] + ".cases.jsonl")]


report = json.load(open(sys.argv[1]))
files = [f for arg in sys.argv[2:] for f in case_files(arg)]
want = {str(f): sum(1 for line in open(f) if line.strip()) for f in files}
got = {p["cases_path"]: p for p in report["policies"]}
bad = [
    f"{path}: {got[path]['n'] if path in got else 'missing'} of {n} cases, "
    f"{got[path]['errors'] if path in got else '-'} errors"
    for path, n in want.items()
    if path not in got or got[path]["n"] != n or got[path]["errors"]
]
print(
    f"{len(got)} policies, {sum(p['n'] for p in got.values())} cases through backend "
    f"{report['backend']!r}, {sum(p['errors'] for p in got.values())} classifier errors"
)
if not want or bad:
    sys.exit("incomplete run: " + "; ".join(bad or ["no case files"]))
