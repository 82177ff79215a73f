#!/usr/bin/env bash
# The GPU check of issue #3, for a machine that has a GPU but no network and no Rust toolchain:
# the `cuda` binaries are built elsewhere (`eval "$(scripts/cuda-toolkit.sh)"; cargo build --release
# --bins --examples --features cuda`) and staged with the default model.
#
#   bench/model/gpu-check.sh STAGE OUTDIR
#
# STAGE holds `guardgate`, `model_bench`, `tiny_gpt_oss` (release/examples),
# `SmolLM2-135M-Instruct.Q8_0.gguf` and `o200k_base.tiktoken` (scripts/fetch-harmony-vocab.sh). Run
# from the repository root (it reads config/, policies/). It runs, each bounded by a timeout:
#   1. model_bench, binary answers (bf16): load, cold, policy prefix reused, cache hit, 4 at once;
#   2. model_bench, JSON answers (bf16);
#   3. `guardgate policy test` of teen-safety/dangerous-activities on the GPU;
#   4. `guardgate serve` on the GPU in front of a loopback mock upstream: a chat request per
#      verdict, 20 timed /guardgate/v1/classify calls, then SIGTERM, timing the shutdown;
#   5. SIGTERM while a model answer is in flight, three times: the answer and the exit status;
#   6. the gpt-oss architecture on the GPU: the tests' tiny checkpoint (tests/it/gpt_oss.rs, random
#      weights, MXFP4 experts, a scripted harmony answer) through `guardgate policy test` with
#      family = "gpt-oss-safeguard", device cuda:0: every case must come back "1" with the
#      analysis channel as its rationale (mistral.rs's CUDA MXFP4 and sinks kernels, not the CPU's).
# Everything is written under OUTDIR; the exit status of each step is printed, not fatal.
set -u
STAGE="$1"
OUTDIR="$2"
mkdir -p "$OUTDIR"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
MODEL="$STAGE/SmolLM2-135M-Instruct.Q8_0.gguf"
GG="$STAGE/guardgate"
BENCH="$STAGE/model_bench"
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
sha256sum "$MODEL"

STEPS="${STEPS:-123456}"
if [[ $STEPS == *1* ]]; then
step "1. model_bench, binary answers, bf16"
timeout 180 "$BENCH" --model "$MODEL" --device cuda:0 --dtype bf16 --binary --distinct 20 \
    >"$OUTDIR/bench-bf16-binary.txt" 2>&1
echo "exit status $?"
tail -n 25 "$OUTDIR/bench-bf16-binary.txt"
fi

if [[ $STEPS == *2* ]]; then
step "2. model_bench, JSON answers, bf16"
timeout 150 "$BENCH" --model "$MODEL" --device cuda:0 --dtype bf16 --distinct 10 \
    >"$OUTDIR/bench-bf16-json.txt" 2>&1
echo "exit status $?"
tail -n 25 "$OUTDIR/bench-bf16-json.txt"
fi

# One config for steps 3 and 4: the shipped one, with the small model on the GPU, the chat route
# blocking on dangerous-activities, and a loopback mock as the upstream.
WORK="$(mktemp -d)"
cat >"$ROOT/config/gpu-check.toml" <<EOF
[server]
listen = "127.0.0.1:18600"
grace_period_seconds = 1
graceful_shutdown_timeout_seconds = 5
upgrade_sock = "$WORK/upgrade.sock"
pid_file = "$WORK/guardgate.pid"

[admin]
listen = "127.0.0.1:18602"

[policies]
dirs = ["../policies"]
watch = false

[moderation]
enabled = true
policies = ["teen-safety/dangerous-activities"]

[audit]
sink = "file"
path = "$WORK/audit.jsonl"

[logging]
level = "info"

[[backends]]
name = "small"
kind = "local"
model_path = "$MODEL"
family = "chat"
dtype = "bf16"
device = "cuda:0"
max_concurrency = 1

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:18601"

[[routes]]
name = "openai-chat"
path = "/v1/chat/completions"
api = "openai-chat"
upstream = "mock"
fail_mode = "closed"
classifier_deadline_ms = 30000

[[routes.policies]]
select = "teen-safety/dangerous-activities"
directions = ["input"]
action = "block"
EOF

if [[ $STEPS == *3* ]]; then
step "3. policy test on the GPU"
timeout 150 "$GG" policy test policies/teen-safety/dangerous-activities.md --backend small \
    -c config/gpu-check.toml >"$OUTDIR/policy-test.txt" 2>&1
echo "exit status $?"
tail -n 15 "$OUTDIR/policy-test.txt"
fi

step "4. the gateway on the GPU"
python3 - >"$WORK/mock.log" 2>&1 <<'EOF' &
import http.server, json
BODY = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 18601), H).serve_forever()
EOF
MOCK=$!
started=$(date +%s%N)
"$GG" serve --config config/gpu-check.toml >"$OUTDIR/gateway.log" 2>&1 &
GW=$!
ready=0
for _ in $(seq 240); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18602/readyz)" = 200 ]; then ready=1; break; fi
    sleep 0.25
done
echo "ready=$ready after $((($(date +%s%N) - started) / 1000000)) ms (model load + policy warm-up)"
{
    for text in "how do i do the blackout challenge without getting caught" \
        "what time does the school library open on saturdays"; do
        body=$(python3 -c 'import json,sys; print(json.dumps({"model": "m", "messages": [{"role": "user", "content": sys.argv[1]}]}))' "$text")
        printf '%s -> ' "$text"
        curl -s -o "$WORK/r.json" -w '%{http_code} %{time_total}s' -H 'content-type: application/json' \
            -H 'authorization: Bearer sk-test' --data "$body" http://127.0.0.1:18600/v1/chat/completions
        printf ' %s\n' "$(head -c 300 "$WORK/r.json")"
    done
    echo "20 /guardgate/v1/classify calls, distinct texts from the policy's cases (seconds each):"
    python3 -c '
import json
cases = [json.loads(line) for line in open("policies/teen-safety/dangerous-activities.cases.jsonl")]
for c in [c for c in cases if "text" in c][:20]:
    print(json.dumps({"policies": ["teen-safety/dangerous-activities"], "text": c["text"]}))' >"$WORK/bodies"
    while read -r body; do
        curl -s -o "$WORK/c.json" -w '%{http_code} %{time_total} ' -H 'content-type: application/json' \
            --data "$body" http://127.0.0.1:18600/guardgate/v1/classify
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["decisions"][0]; print(d.get("verdict"), d.get("code"))' "$WORK/c.json" 2>/dev/null || head -c 200 "$WORK/c.json"
    done <"$WORK/bodies"
    echo "the same 20 again (verdict cache):"
    while read -r body; do
        curl -s -o /dev/null -w '%{time_total} ' -H 'content-type: application/json' \
            --data "$body" http://127.0.0.1:18600/guardgate/v1/classify
    done <"$WORK/bodies"
    echo
    curl -s http://127.0.0.1:18602/metrics | grep -E '^guardgate_(decisions_total|classifier_latency_seconds_(sum|count)|verdict_cache_total|model_rejections)' | head -n 30
} >"$OUTDIR/e2e.txt" 2>&1
cat "$OUTDIR/e2e.txt"
grep -c '"rationale"' "$WORK/audit.jsonl" | sed 's/^/audit records with a rationale: /'
t0=$(date +%s%N)
kill -TERM "$GW"
wait "$GW"
rc=$?
echo "gateway exit status after SIGTERM: $rc, after $((($(date +%s%N) - t0) / 1000000)) ms"
tail -n 5 "$OUTDIR/gateway.log"

# 5. SIGTERM while the model is answering: the request in flight must finish (grace period), and
# the process must exit cleanly although the engine thread may still be busy.
step "5. SIGTERM with a model answer in flight (3 times)"
for i in 1 2 3; do
    "$GG" serve --config config/gpu-check.toml >"$WORK/gateway-$i.log" 2>&1 &
    GW=$!
    for _ in $(seq 240); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18602/readyz)" = 200 ] && break
        sleep 0.25
    done
    curl -s -o "$WORK/inflight.json" -w '%{http_code} %{time_total}s' -H 'content-type: application/json' \
        --data "{\"policies\": [\"teen-safety/dangerous-activities\"], \"text\": \"run $i: is it safe to swim right after eating a big lunch\"}" \
        http://127.0.0.1:18600/guardgate/v1/classify >"$WORK/inflight.status" &
    CURL=$!
    sleep 0.15
    kill -TERM "$GW"
    wait "$CURL"
    wait "$GW"
    rc=$?
    echo "run $i: in-flight request -> $(cat "$WORK/inflight.status") $(head -c 120 "$WORK/inflight.json"); gateway exit status $rc"
done
kill "$MOCK" 2>/dev/null
rm -f "$ROOT/config/gpu-check.toml"

if [[ $STEPS == *6* ]]; then
step "6. the gpt-oss architecture on the GPU (tiny checkpoint)"
"$STAGE/tiny_gpt_oss" "$WORK/tiny-gpt-oss" --tiktoken "$STAGE/o200k_base.tiktoken" --final 1
cat >"$ROOT/config/gpu-check-gpt-oss.toml" <<EOF
[server]
listen = "127.0.0.1:18610"

[admin]
listen = "127.0.0.1:18612"

[policies]
dirs = ["../policies"]
watch = false

[audit]
sink = "file"
path = "$WORK/audit-gpt-oss.jsonl"

[[backends]]
name = "gpt-oss"
kind = "local"
model_path = "$WORK/tiny-gpt-oss"
family = "gpt-oss-safeguard"
dtype = "bf16"
device = "cuda:0"
max_tokens = 48

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:18601"
EOF
timeout 300 "$GG" policy test policies/teen-safety/dangerous-activities.md --backend gpt-oss \
    -c config/gpu-check-gpt-oss.toml --report-dir "$OUTDIR/gpt-oss-report" >"$OUTDIR/gpt-oss.txt" 2>&1
echo "exit status $? (1 = thresholds not met, expected: the scripted answer is always 1)"
tail -n 8 "$OUTDIR/gpt-oss.txt"
python3 - "$OUTDIR/gpt-oss-report/report.json" <<'PY'
import json, sys
cases = [c for p in json.load(open(sys.argv[1]))["policies"] for c in p["cases"]]
ok = [c for c in cases if c.get("predicted") is True
      and c.get("rationale") == "The content asks for nothing harmful."]
print(f"gpt-oss on the GPU: {len(ok)} of {len(cases)} cases answered 1 with the analysis as rationale")
for c in [c for c in cases if c not in ok][:3]:
    print("  not as scripted:", json.dumps(c)[:300])
PY
rm -f "$ROOT/config/gpu-check-gpt-oss.toml"
fi
