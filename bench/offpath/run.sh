#!/usr/bin/env bash
# Benchmark of judgement off the request path (issue #37), side by side in one run, on 127.0.0.1:
# a mock upstream whose replies take a fixed 500 ms to their first byte (examples/mock_upstream,
# `x-mock-delay-ms`), the imitation model server answering every verdict after a fixed 300 ms
# (examples/imitation_model, the `remote` backend) and the small in-process model (SmolLM2-135M
# Q8_0, the `local` backend), one guardgate with a route per scenario, one policy
# (teen-safety/dangerous-activities; no rule matches the texts, so every verdict is the model's;
# verdict caches off; every request a different text).
#
#   (a) added latency: the route without a binding, and with the policy bound as `shadow` and as
#       `annotate` on each model; sequential requests, interleaved rounds; p50 and p99 of each, and
#       their difference from the route without a binding.
#   (b) input_mode: the policy bound as `block`, `before` (the default: verdict, then upstream)
#       against `parallel` (both at once); total latency against max(upstream, verdict), the
#       verdict's time read from each request's audit record.
#   (c) overload: `shadow` traffic at 10x what the background queue can judge
#       ([background] max_concurrent = 4 at 300 ms per verdict, or the local model's measured
#       verdict rate) for OVERLOAD_SECONDS: failed client requests, jobs shed and judged, and the
#       gateway's resident memory before, at its peak and after.
#
# Environment (all optional):
#   GUARDGATE_BIN  guardgate (default $CARGO_TARGET_DIR/release/guardgate)
#   EXAMPLES       folder of the mock_upstream, imitation_model and offpath_load examples
#                  (default $CARGO_TARGET_DIR/release/examples); build them with
#                  `cargo build --release --bins --examples`
#   MODEL_PATH     the small model's GGUF (default models/SmolLM2-135M-Instruct.Q8_0.gguf;
#                  scripts/fetch-default-model.sh); SKIP_LOCAL=1 leaves the in-process model out
#   N              requests per scenario in (a) (default 40), NB in (b) (default 20), split over
#   ROUNDS         interleaved rounds (default 2)
#   OVERLOAD_SECONDS  length of each (c) run (default 20); BG_PENDING [background] max_pending (64)
#   BASE_PORT      first of 4 consecutive loopback ports (default 18600)
#   KEEP=1         keep the work folder (configs, logs, audit, per-request lines) and print its path
#
# Bounded: every wait has a limit; with the defaults the run takes about 6 minutes (most of it the
# 500 ms upstream times the requests, and the local model's start-up).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
GUARDGATE_BIN="${GUARDGATE_BIN:-$TARGET/release/guardgate}"
EXAMPLES="${EXAMPLES:-$TARGET/release/examples}"
MODEL_PATH="${MODEL_PATH:-$ROOT/models/SmolLM2-135M-Instruct.Q8_0.gguf}"
SKIP_LOCAL="${SKIP_LOCAL:-0}"
N="${N:-40}"
NB="${NB:-20}"
ROUNDS="${ROUNDS:-2}"
OVERLOAD_SECONDS="${OVERLOAD_SECONDS:-20}"
BG_CONCURRENT=4
BG_PENDING="${BG_PENDING:-64}"
BASE_PORT="${BASE_PORT:-18600}"
UPSTREAM_MS=500
VERDICT_MS=300

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

for b in "$GUARDGATE_BIN" "$EXAMPLES/mock_upstream" "$EXAMPLES/imitation_model" "$EXAMPLES/offpath_load"; do
    [ -x "$b" ] || die "$b is missing: cargo build --release --bins --examples"
done
command -v curl >/dev/null || die "curl not found"
command -v python3 >/dev/null || die "python3 not found"
if [ "$SKIP_LOCAL" != 1 ] && [ ! -f "$MODEL_PATH" ]; then
    die "no model at $MODEL_PATH (scripts/fetch-default-model.sh, or SKIP_LOCAL=1)"
fi
MODELS=(imitation)
[ "$SKIP_LOCAL" = 1 ] || MODELS+=(local)

P_MOCK=$BASE_PORT
P_MODEL=$((BASE_PORT + 1))
P_GW=$((BASE_PORT + 2))
P_ADMIN=$((BASE_PORT + 3))
for p in $(seq "$BASE_PORT" $((BASE_PORT + 3))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p is already in use on 127.0.0.1 (set BASE_PORT)"
    fi
done

WORK="$(mktemp -d /tmp/guardgate-offpath-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the servers ------------------------------------------------------------------------------
"$EXAMPLES/mock_upstream" "127.0.0.1:$P_MOCK" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
"$EXAMPLES/imitation_model" "127.0.0.1:$P_MODEL" "$VERDICT_MS" >"$WORK/model.log" 2>&1 &
PIDS+=($!)

mkdir -p "$WORK/policies"
cp "$ROOT/policies/teen-safety/dangerous-activities.md" "$WORK/policies/"
POLICY="teen-safety/dangerous-activities"

route() { # name action backend input_mode
    cat <<TOML

[[routes]]
name = "$1"
path = "/$1/v1/chat/completions"
api = "openai-chat"
upstream = "mock"
classifier_deadline_ms = 30000
input_mode = "$4"
TOML
    [ "$2" = none ] && return
    cat <<TOML
[[routes.policies]]
select = "$POLICY"
directions = ["input"]
action = "$2"
backends = ["rules", "$3"]
TOML
}

{
    cat <<TOML
[server]
listen = "127.0.0.1:$P_GW"
threads = 1
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
upgrade_sock = "$WORK/upgrade.sock"
pid_file = "$WORK/guardgate.pid"

[admin]
listen = "127.0.0.1:$P_ADMIN"

[policies]
dirs = ["policies"]

[audit]
sink = "file"
path = "audit.jsonl"

[background]
max_concurrent = $BG_CONCURRENT
max_pending = $BG_PENDING

[[backends]]
name = "imitation"
kind = "remote"
base_url = "http://127.0.0.1:$P_MODEL/v1"
model = "openai/gpt-oss-safeguard-20b"
family = "gpt-oss-safeguard"
timeout_ms = 30000
max_retries = 0
max_concurrency = 64
cache_entries = 0

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:$P_MOCK"
connect_timeout_ms = 1000
read_timeout_ms = 10000
TOML
    if [ "$SKIP_LOCAL" != 1 ]; then
        # As config/guardgate.toml's `small`, with the verdict cache off.
        cat <<TOML

[[backends]]
name = "local"
kind = "local"
model_path = "$MODEL_PATH"
family = "chat"
dtype = "f32"
weights = "auto"
device = "cpu"
max_concurrency = 1
max_queue = 16
prefix_cache_entries = 16
cache_entries = 0
violation_thresholds = { "$POLICY" = 0.7876 }
TOML
    fi
    route none none - before
    for m in "${MODELS[@]}"; do
        route "shadow-$m" shadow "$m" before
        route "annotate-$m" annotate "$m" before
        route "before-$m" block "$m" before
        route "parallel-$m" block "$m" parallel
    done
} >"$WORK/guardgate.toml"

"$GUARDGATE_BIN" serve --config "$WORK/guardgate.toml" >"$WORK/guardgate.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
log "waiting for guardgate to be ready (the local model loads and warms its policy prefix)"
ready=0
for _ in $(seq 600); do
    kill -0 "$GW_PID" 2>/dev/null || { tail -20 "$WORK/guardgate.log" >&2; die "guardgate exited"; }
    if curl -sf "http://127.0.0.1:$P_ADMIN/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.5
done
[ "$ready" = 1 ] || die "guardgate not ready after 300 s"

metric() { # name{labels} -> value (0 when absent)
    curl -sf "http://127.0.0.1:$P_ADMIN/metrics" | awk -v m="$1" '$1 == m { print $2; f = 1 } END { if (!f) print 0 }'
}
drain() { # waits (at most 180 s) until no background job is queued or running
    for _ in $(seq 900); do
        [ "$(metric guardgate_background_pending)" = 0 ] && return 0
        sleep 0.2
    done
    log "background queue not drained after 180 s"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status" 2>/dev/null || echo 0; }
load() { # route requests out-file [extra args]
    local name=$1 n=$2 out=$3
    shift 3
    "$EXAMPLES/offpath_load" --url "http://127.0.0.1:$P_GW/$name/v1/chat/completions" --n "$n" \
        --header "x-mock-delay-ms: $UPSTREAM_MS" --tag "$name-$(basename "$out")" --out "$out" "$@"
}

# One request per route first: connections, the model's first call, nothing measured.
for name in none $(for m in "${MODELS[@]}"; do printf 'shadow-%s annotate-%s before-%s parallel-%s ' "$m" "$m" "$m" "$m"; done); do
    load "$name" 1 "$WORK/warmup-$name.txt" >/dev/null
done
drain

# ---- (a) added latency, (b) input_mode -----------------------------------------------------
mkdir -p "$WORK/a" "$WORK/b"
A_ROUTES=(none)
B_ROUTES=()
for m in "${MODELS[@]}"; do
    A_ROUTES+=("shadow-$m" "annotate-$m")
    B_ROUTES+=("before-$m" "parallel-$m")
done
for r in $(seq "$ROUNDS"); do
    for name in "${A_ROUTES[@]}"; do
        log "(a) round $r/$ROUNDS: $name"
        load "$name" $((N / ROUNDS)) "$WORK/a/$name.$r.txt" >/dev/null
        drain
    done
    for name in "${B_ROUTES[@]}"; do
        log "(b) round $r/$ROUNDS: $name"
        load "$name" $((NB / ROUNDS)) "$WORK/b/$name.$r.txt" >/dev/null
        drain
    done
done

# ---- (c) overload --------------------------------------------------------------------------------
mkdir -p "$WORK/c"
for m in "${MODELS[@]}"; do
    if [ "$m" = imitation ]; then
        capacity=$(python3 -c "print($BG_CONCURRENT * 1000 / $VERDICT_MS)")
    else
        # One verdict at a time (max_concurrency = 1): the rate is 1 / its verdict time, as (b)
        # measured it before the upstream call.
        capacity=$(python3 "$HERE/report.py" verdict-rate "$WORK" "before-local")
    fi
    # Each client waits ~UPSTREAM_MS per request: clients = 10 x capacity x that time.
    conc=$(python3 -c "import math; print(max(1, math.ceil(10 * $capacity * $UPSTREAM_MS / 1000)))")
    log "(c) shadow-$m: 10 x $capacity verdicts/s with $conc clients for $OVERLOAD_SECONDS s"
    shed0=$(metric 'guardgate_background_jobs_total{result="shed"}')
    done0=$(metric 'guardgate_background_jobs_total{result="done"}')
    rss0=$(rss_kb)
    peak=$rss0
    load "shadow-$m" 1000000 "$WORK/c/shadow-$m.txt" --conc "$conc" --seconds "$OVERLOAD_SECONDS" \
        >"$WORK/c/shadow-$m.summary" &
    lp=$!
    while kill -0 "$lp" 2>/dev/null; do
        now=$(rss_kb)
        [ "$now" -gt "$peak" ] && peak=$now
        sleep 0.25
    done
    wait "$lp"
    {
        echo "capacity=$capacity"
        echo "clients=$conc"
        echo "seconds=$OVERLOAD_SECONDS"
        echo "shed=$(python3 -c "print(int(float('$(metric 'guardgate_background_jobs_total{result="shed"}')') - float('$shed0')))")"
        echo "judged=$(python3 -c "print(int(float('$(metric 'guardgate_background_jobs_total{result="done"}')') - float('$done0')))")"
        echo "pending=$(metric guardgate_background_pending)"
        echo "rss0=$rss0"
        echo "peak=$peak"
    } >"$WORK/c/shadow-$m.env"
    drain
    echo "rss_drained=$(rss_kb)" >>"$WORK/c/shadow-$m.env"
done

# ---- the tables ----------------------------------------------------------------------------------
cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "$("$GUARDGATE_BIN" --version 2>/dev/null || echo guardgate) (checkout $commit), $(nproc) CPUs ($cpu), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "upstream TTFB ${UPSTREAM_MS} ms, imitation verdict ${VERDICT_MS} ms, [background] max_concurrent = $BG_CONCURRENT, max_pending = $BG_PENDING; N=$N NB=$NB ROUNDS=$ROUNDS"
python3 "$HERE/report.py" tables "$WORK" "$UPSTREAM_MS" "$POLICY"
