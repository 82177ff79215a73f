#!/usr/bin/env bash
# Several policies in one model call (docs/BENCHMARKS.md, "Several policies in one model call"):
# `guardgate policy test` on the six teen-safety case files, one model call per policy against
# one joint call per case (`--joint`), with the small in-process model (`small` in
# config/guardgate.toml) and with the imitation model server (examples/imitation_model.rs), and
# a table of both side by side.
#   bench/model/joint.sh [--limit N] [--delay-ms MS] [--only small|imitation]
# --limit: cases per policy file, half of each label (default 10; the small model takes ~1-2 min
# per 10 cases and mode on 2 vCPUs); --delay-ms: the imitation server's time per answer (100).
# Cases run one at a time (--concurrency 1), so a case's latency is its calls' own.
# GUARDGATE_BIN / GUARDGATE_IMITATION name prebuilt binaries; otherwise they are built.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
LIMIT=10
DELAY=100
ONLY=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --limit) LIMIT="$2"; shift 2 ;;
        --delay-ms) DELAY="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${GUARDGATE_BIN:-}" ] || [ -z "${GUARDGATE_IMITATION:-}" ]; then
    cargo build --release --bins --examples
fi
BIN="${GUARDGATE_BIN:-$TARGET/release/guardgate}"
IMITATION="${GUARDGATE_IMITATION:-$TARGET/release/examples/imitation_model}"
OUT="$ROOT/target/joint-bench"
mkdir -p "$OUT"

run() { # backend config mode
    local flag=()
    [ "$3" = joint ] && flag=(--joint)
    "$BIN" policy test policies/teen-safety --backend "$1" -c "$2" --limit "$LIMIT" \
        --concurrency 1 "${flag[@]}" --report-dir "$OUT/$1-$3" >"$OUT/$1-$3.txt" 2>&1 || true
    tail -n 8 "$OUT/$1-$3.txt"
}

backends=()
if [ "$ONLY" != imitation ]; then
    for mode in per-policy joint; do
        echo "== small, $mode, $LIMIT cases per policy =="
        run small config/guardgate.toml "$mode"
    done
    backends+=(small)
fi
if [ "$ONLY" != small ]; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$IMITATION" "127.0.0.1:$PORT" "$DELAY" >"$OUT/imitation.log" 2>&1 &
    IMITATION_PID=$!
    trap 'kill "$IMITATION_PID" 2>/dev/null || true' EXIT
    for _ in $(seq 50); do
        grep -q listening "$OUT/imitation.log" && break
        sleep 0.1
    done
    cat >"$OUT/imitation.toml" <<EOF
[[upstreams]]
name = "none"
base_url = "http://127.0.0.1:9"

[[backends]]
name = "imitation"
kind = "remote"
base_url = "http://127.0.0.1:$PORT/v1"
model = "imitation"
family = "chat"
timeout_ms = 10000
max_concurrency = 8
EOF
    for mode in per-policy joint; do
        echo "== imitation ($DELAY ms per answer), $mode, $LIMIT cases per policy =="
        run imitation "$OUT/imitation.toml" "$mode"
    done
    backends+=(imitation)
fi

python3 - "$OUT" "${backends[@]}" <<'PY'
import json, statistics, sys
out, backends = sys.argv[1], sys.argv[2:]
def load(b, mode):
    return json.load(open(f"{out}/{b}-{mode}/report.json"))["policies"]
fmt = lambda x: "-" if x is None else f"{x:.3f}"
for b in backends:
    single, joint = load(b, "per-policy"), load(b, "joint")
    print(f"\n{b}: per-policy F1 (n cases), one call per policy | one joint call")
    for s, j in zip(single, joint):
        print(f"  {s['id']:<34} {s['n']:>3}  {fmt(s['metrics']['f1']):>6} | {fmt(j['metrics']['f1']):>6}")
    def cost(pols):
        cases = [c for p in pols for c in p["cases"]]
        mean = lambda xs: sum(xs) / len(cases)
        get = lambda k: mean([c.get(k) or 0 for c in cases])
        ms = [c["latency_us"] / 1000 for c in cases]
        return [get("model_calls"), get("prompt_tokens"), get("completion_tokens"),
                get("prefill_ms"), get("decode_ms"), mean(ms)], statistics.median(ms)
    n = len(single)
    s1, _ = cost(single)
    sj, pj = cost(joint)
    # A case judged for one policy is one policy's share of a request: a request judged against
    # all n costs n times the mean case (its calls one after another, as on a one-sequence
    # engine). No per-policy-mode run judges each case against all n, so that row has no p50.
    print(f"  per request judged against all {n} policies (means; p50 of the joint cases):")
    head = ["model calls", "prompt tok", "answer tok", "prefill ms", "decode ms", "mean ms", "p50 ms"]
    print("  " + f"{'mode':<12}" + "".join(f"{h:>12}" for h in head))
    row = lambda name, xs, p50: print("  " + f"{name:<12}" + "".join(f"{x:>12.1f}" for x in xs) + f"{p50:>12}")
    row("per-policy", [x * n for x in s1], "-")
    row("joint", sj, f"{pj:.1f}")
PY
