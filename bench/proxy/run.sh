#!/usr/bin/env bash
# Benchmark of the allow path (issue #2): the same POST, side by side, in one run, on 127.0.0.1.
#
#   (a) direct   wrk -> mock upstream (nginx `return 200 <chat.completion JSON>`)
#   (b) nginx    wrk -> nginx reverse proxy (upstream keepalive) -> mock
#   (c) gg-pass  wrk -> guardgate, route without policies -> mock
#   (d) gg-rules wrk -> guardgate, 4 policies x 5 deterministic rules (none match) -> mock
#   (e) gg-rules-noaudit  as (d) with audit sink "off" (isolates the audit-record cost; SKIP_E=1 drops it)
#   (f) gg-baseline       as (c), or (d) with BASELINE_CONFIG=rules, with another guardgate binary
#                         (only with BASELINE_BIN): before/after in the same run
#   (g) pingora floor     wrk -> the smallest pingora-proxy reverse proxy (examples/pingora_floor.rs,
#                         same threads, allocator and keep-alive) -> mock: what the framework guardgate
#                         is built on costs by itself (SKIP_G=1 drops it)
#   peers, with PEERS=1 (installed by this script from the registries into PEERS_DIR, once):
#   (h) portkey           wrk -> the Portkey gateway (npm @portkey-ai/gateway, one Node process),
#                         provider openai with its custom host set to the mock -> mock
#   (i) portkey-20        (h) with 20 default.regexMatch input guardrails (deny on match), the 20
#                         rules of (d) as regexes (bench/proxy/peer_rules.py; none match the body)
#   (j) litellm           wrk -> the LiteLLM proxy (pip litellm[proxy], one uvicorn worker), one
#                         model_list entry whose api_base is the mock -> mock
#   (k) litellm-20        (j) with its built-in content filter guardrail (litellm_content_filter,
#                         pre_call) holding the same 20 regexes
#
# Each scenario: a short warm-up, then a measured wrk run, at high load (-c$CONNS) and at low load
# (-c1, where p99 added latency is meaningful). Prints one table per load level.
#
# Environment (all optional):
#   GUARDGATE_BIN  guardgate binary (default target/release/guardgate, built if missing)
#   THREADS        guardgate server.threads and nginx proxy worker_processes (default 1)
#   PIN            1 (default, needs >= 2 CPUs): proxy under test + mock on SERVER_CPUS, wrk on WRK_CPUS
#   SERVER_CPUS    taskset list for nginx/guardgate (default 0)     WRK_CPUS  for wrk (default 1)
#   CONNS          connections for the high-load run (default 32)
#   DURATION       seconds of each measured high-load run (default 10); LOW_DURATION (default 5)
#   WARMUP         seconds of warm-up before each measured run (default 2)
#   BASE_PORT      first of 11 consecutive loopback ports, 15 with PEERS=1 (default 18400)
#   KEEP=1         keep the temp dir (configs, logs, raw wrk output) and print its path
#   SKIP_E=1       skip scenario (e)
#   FLOOR_BIN      the pingora_floor example (default target/release/examples/pingora_floor,
#                  built if missing); SKIP_G=1 skips scenario (g)
#   BASELINE_BIN   a second guardgate binary (e.g. a build of the previous commit), run as (f)
#   BASELINE_CONFIG  pass (default: (f) is compared with (c)), rules (with (d): 20 rules, audit to file)
#                  or redact ((c) plus the redact policy bench-pii/redact, restore on; audit off as in
#                  (c), REDACT_AUDIT=file writes its records: with BASELINE_BIN=$GUARDGATE_BIN, the
#                  redact action's cost next to (c))
#                  or profiles: (d) plus a [profiles] file whose one key matcher holds PROFILE_KEYS
#                  SHA-256 key hashes (the bench request's key among them), its profile binding
#                  the same 20 rules. With BASELINE_BIN=$GUARDGATE_BIN, (f) - (d) is the cost of
#                  profile selection (hash the presented key, look it up) on the allow path
#   PROFILE_KEYS   key hashes in (f)'s profiles file with BASELINE_CONFIG=profiles (default 1000)
#   BODY_FILE      the request body (default bench/proxy/body.json; body-pii.json has e-mail addresses)
#   BASELINE_CAPTURE none (default), flagged or all: (f)'s [audit] capture, with its review store
#                  (SQLite) in the temp dir. With BASELINE_BIN=$GUARDGATE_BIN and BASELINE_CONFIG=rules,
#                  (f) is (d) with capture on: the capture's cost on the allow path, side by side
#   BASELINE_TELEMETRY 0 (default) or 1: (f) traces every request ([telemetry], sample_ratio 1.0,
#                  spans exported over OTLP/HTTP to the mock, which answers 200). With
#                  BASELINE_BIN=$GUARDGATE_BIN and BASELINE_CONFIG=rules, (f) is (d) with tracing on:
#                  the tracing's cost on the allow path, side by side
#   ROUNDS         run every scenario this many times, interleaved, and report medians (default 1);
#                  the ratio to nginx is the median of each round's ratio. On a noisy shared VM use 5+.
#   PEERS=1        add (h)-(k) (default 0: the usual run stays ~100 s); SKIP_PEERS=0 is the same.
#                  Needs node + npm and python3 (>= 3.11, for the venv and tomllib); the first run
#                  installs into PEERS_DIR (default ~/.cache/guardgate/peers), later runs reuse it.
#   PORTKEY_VERSION  @portkey-ai/gateway version (default 1.15.2)
#   LITELLM_VERSION  litellm[proxy] version (default 1.106.12)
#
# Bounded: with the defaults the run takes about 100 s (plus the build when the binary is missing).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
GUARDGATE_BIN="${GUARDGATE_BIN:-$TARGET/release/guardgate}"
FLOOR_BIN="${FLOOR_BIN:-$TARGET/release/examples/pingora_floor}"
SKIP_G="${SKIP_G:-0}"
THREADS="${THREADS:-1}"
CONNS="${CONNS:-32}"
DURATION="${DURATION:-10}"
LOW_DURATION="${LOW_DURATION:-5}"
WARMUP="${WARMUP:-2}"
BASE_PORT="${BASE_PORT:-18400}"
PIN="${PIN:-1}"
SERVER_CPUS="${SERVER_CPUS:-0}"
WRK_CPUS="${WRK_CPUS:-1}"
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

PEERS="${PEERS:-0}"
[ "${SKIP_PEERS:-1}" != 0 ] || PEERS=1
PEERS_DIR="${PEERS_DIR:-$HOME/.cache/guardgate/peers}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
LITELLM_VERSION="${LITELLM_VERSION:-1.106.12}"
PORTKEY_DIR="$PEERS_DIR/portkey-$PORTKEY_VERSION"
PORTKEY_JS="$PORTKEY_DIR/node_modules/@portkey-ai/gateway/build/start-server.js"
LITELLM_VENV="$PEERS_DIR/litellm-$LITELLM_VERSION"
# Installed once per version, each into its own directory, so a version change is a fresh install
# and a half-finished one (no marker file) is redone.
install_peers() {
    command -v node >/dev/null || die "PEERS=1: node not found (apt-get install -y nodejs npm)"
    command -v npm >/dev/null || die "PEERS=1: npm not found (apt-get install -y npm)"
    command -v python3 >/dev/null || die "PEERS=1: python3 not found"
    python3 -c 'import sys, tomllib, venv' 2>/dev/null || die "PEERS=1: python3 >= 3.11 with venv needed"
    mkdir -p "$PEERS_DIR"
    if [ ! -f "$PORTKEY_DIR/.installed" ]; then
        log "installing @portkey-ai/gateway@$PORTKEY_VERSION into $PORTKEY_DIR (npm)"
        rm -rf "$PORTKEY_DIR"
        mkdir -p "$PORTKEY_DIR"
        echo '{"private": true}' >"$PORTKEY_DIR/package.json"
        # Its one install script is patch-package, and the package ships no patches.
        (cd "$PORTKEY_DIR" && npm install --no-audit --no-fund --ignore-scripts --save-exact "@portkey-ai/gateway@$PORTKEY_VERSION") >&2 ||
            die "npm install @portkey-ai/gateway@$PORTKEY_VERSION failed"
        [ -f "$PORTKEY_JS" ] || die "no $PORTKEY_JS after the install"
        touch "$PORTKEY_DIR/.installed"
    fi
    if [ ! -f "$LITELLM_VENV/.installed" ]; then
        log "installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV (pip; a minute or two)"
        rm -rf "$LITELLM_VENV"
        python3 -m venv "$LITELLM_VENV" || die "python3 -m venv $LITELLM_VENV failed"
        "$LITELLM_VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" >&2 ||
            die "pip install litellm[proxy]==$LITELLM_VERSION failed"
        [ -x "$LITELLM_VENV/bin/litellm" ] || die "no $LITELLM_VENV/bin/litellm after the install"
        touch "$LITELLM_VENV/.installed"
    fi
}

command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
[ -x "$NGINX" ] || die "nginx not found (apt-get install -y nginx-light)"
command -v curl >/dev/null || die "curl not found"

if [ ! -x "$GUARDGATE_BIN" ]; then
    log "building $GUARDGATE_BIN (release; several minutes on a small machine)"
    (cd "$ROOT" && cargo build --release --bins --examples) >&2
    [ -x "$GUARDGATE_BIN" ] || die "no binary at $GUARDGATE_BIN after the build"
fi
[ "$PEERS" != 1 ] || install_peers
if [ "$SKIP_G" != 1 ] && [ ! -x "$FLOOR_BIN" ]; then
    log "building $FLOOR_BIN (release)"
    (cd "$ROOT" && cargo build --release --example pingora_floor) >&2
    [ -x "$FLOOR_BIN" ] || die "no binary at $FLOOR_BIN after the build"
fi

NCPU="$(nproc)"
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null; then
    ON_SERVER=(taskset -c "$SERVER_CPUS")
    ON_WRK=(taskset -c "$WRK_CPUS")
    PINNING="servers (mock + proxy under test) on CPU $SERVER_CPUS, wrk on CPU $WRK_CPUS"
else
    ON_SERVER=()
    ON_WRK=()
    PINNING="none"
fi

P_MOCK=$BASE_PORT
P_NGINX=$((BASE_PORT + 1))
P_PASS=$((BASE_PORT + 2))
P_PASS_ADMIN=$((BASE_PORT + 3))
P_RULES=$((BASE_PORT + 4))
P_RULES_ADMIN=$((BASE_PORT + 5))
P_NOAUD=$((BASE_PORT + 6))
P_NOAUD_ADMIN=$((BASE_PORT + 7))
P_BASE=$((BASE_PORT + 8))
P_BASE_ADMIN=$((BASE_PORT + 9))
P_FLOOR=$((BASE_PORT + 10))
P_PK=$((BASE_PORT + 11))
P_PK20=$((BASE_PORT + 12))
P_LL=$((BASE_PORT + 13))
P_LL20=$((BASE_PORT + 14))
ROUNDS="${ROUNDS:-1}"
BASELINE_BIN="${BASELINE_BIN:-}"
BASELINE_CONFIG="${BASELINE_CONFIG:-pass}"
BASELINE_CAPTURE="${BASELINE_CAPTURE:-none}"
case "$BASELINE_CAPTURE" in none | flagged | all) ;; *) die "BASELINE_CAPTURE must be none, flagged or all" ;; esac
case "$BASELINE_CONFIG" in pass | rules | redact | profiles) ;; *) die "BASELINE_CONFIG must be pass, rules, redact or profiles" ;; esac
PROFILE_KEYS="${PROFILE_KEYS:-1000}"
[ -z "$BASELINE_BIN" ] || [ -x "$BASELINE_BIN" ] || die "BASELINE_BIN $BASELINE_BIN is not an executable"
for p in $(seq "$BASE_PORT" $((BASE_PORT + $([ "$PEERS" = 1 ] && echo 14 || echo 10)))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p is already in use on 127.0.0.1 (set BASE_PORT)"
    fi
done

WORK="$(mktemp -d /tmp/guardgate-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- mock upstream: nginx returning a fixed chat.completion ----------------------------------
nginx_common() { # $1 = prefix dir
    cat <<EOF
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() { # $1 = prefix dir
    cat <<EOF
    access_log off;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
EOF
}

MOCK_BODY="$(tr -d '\n' <"$HERE/mock-response.json")"
case "$MOCK_BODY" in *"'"* | *'$'* | *'\'*) die "mock-response.json must not contain ' \$ or \\" ;; esac
mkdir -p "$WORK/mock" "$WORK/nginx"
{
    echo "worker_processes 1;"
    nginx_common "$WORK/mock"
    echo "http {"
    nginx_http_common "$WORK/mock"
    cat <<EOF
    server {
        listen 127.0.0.1:$P_MOCK;
        location = /v1/chat/completions {
            default_type application/json;
            return 200 '$MOCK_BODY';
        }
        # An OTLP/HTTP collector that accepts everything (an empty ExportTraceServiceResponse).
        location = /v1/traces {
            default_type application/x-protobuf;
            return 200 '';
        }
        location / { return 404; }
    }
}
EOF
} >"$WORK/mock/nginx.conf"

# ---- (b) nginx as a plain reverse proxy --------------------------------------------------------
{
    echo "worker_processes $THREADS;"
    nginx_common "$WORK/nginx"
    echo "http {"
    nginx_http_common "$WORK/nginx"
    cat <<EOF
    upstream mock {
        server 127.0.0.1:$P_MOCK;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_NGINX;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"

# ---- (c), (d), (e) guardgate -------------------------------------------------------------------
# The capture keys only when capture is on, so a baseline binary older than them reads the config.
telemetry_lines() { # $1 1 for tracing on
    [ "$1" != 1 ] || printf '[telemetry]\notlp_endpoint = "http://127.0.0.1:%s/v1/traces"\nscheduled_delay_ms = 1000\n' "$P_MOCK"
}

capture_lines() { # $1 capture mode, $2 dir
    [ "$1" = none ] || printf 'capture = "%s"\nstore_path = "%s/review.db"\n' "$1" "$2"
}

gg_config() { # $1 dir, $2 port, $3 admin port, $4 audit sink, $5 route policy lines, [$6 capture], [$7 tracing]
    mkdir -p "$1"
    cat >"$1/guardgate.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
threads = $THREADS
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
upgrade_sock = "$1/upgrade.sock"
pid_file = "$1/guardgate.pid"

[admin]
listen = "127.0.0.1:$3"

[policies]
dirs = ["$HERE/policies"]
watch = false
poll_interval_ms = 0

[audit]
sink = "$4"
path = "$1/audit.jsonl"
$(capture_lines "${6:-none}" "$1")

[logging]
level = "warn"

$(telemetry_lines "${7:-0}")

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:$P_MOCK"
connect_timeout_ms = 1000
read_timeout_ms = 10000

[[routes]]
name = "chat"
path = "/v1/chat/completions"
api = "openai-chat"
upstream = "mock"
fail_mode = "closed"
$5
EOF
}
RULES_SELECT=$'[[routes.policies]]\nselect = "bench/*"'
gg_config "$WORK/gg-pass" "$P_PASS" "$P_PASS_ADMIN" off ""
gg_config "$WORK/gg-rules" "$P_RULES" "$P_RULES_ADMIN" file "$RULES_SELECT"
gg_config "$WORK/gg-noaudit" "$P_NOAUD" "$P_NOAUD_ADMIN" off "$RULES_SELECT"

declare -A SPID # scenario -> pid of the proxy under test (nginx master or guardgate)
start_nginx() { # $1 prefix, $2 scenario
    "${ON_SERVER[@]}" "$NGINX" -p "$1" -c "$1/nginx.conf" -e "$1/error.log" 2>>"$1/stderr.log" &
    PIDS+=($!)
    SPID[$2]=$!
}
start_gg() { # $1 dir, $2 scenario, [$3 binary]
    (cd "$1" && exec "${ON_SERVER[@]}" "${3:-$GUARDGATE_BIN}" serve --config "$1/guardgate.toml") \
        >"$1/stdout.log" 2>"$1/stderr.log" &
    PIDS+=($!)
    SPID[$2]=$!
}
wait_http() { # $1 url, $2 what, $3 log: waits (10 s at most) until $1 answers 200
    for _ in $(seq 100); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null)" = 200 ]; then return 0; fi
        sleep 0.1
    done
    cat "$3" >&2 2>/dev/null || true
    die "$2 did not come up ($1)"
}

log "guardgate: $GUARDGATE_BIN"
start_nginx "$WORK/mock" mock
start_nginx "$WORK/nginx" b
start_gg "$WORK/gg-pass" c
start_gg "$WORK/gg-rules" d
[ "${SKIP_E:-0}" = 1 ] || start_gg "$WORK/gg-noaudit" e
if [ "$SKIP_G" != 1 ]; then
    mkdir -p "$WORK/floor"
    "${ON_SERVER[@]}" "$FLOOR_BIN" "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_MOCK" "$WORK/floor" "$THREADS" \
        >"$WORK/floor/stdout.log" 2>"$WORK/floor/stderr.log" &
    PIDS+=($!)
    SPID[g]=$!
fi
# A profiles file whose key matcher holds $1 hashes: the bench key's (post.lua sends it) and
# others derived from a counter, so the lookup is one among many.
profiles_file() { # $1 number of key hashes
    echo 'unknown_profile = "default"'
    printf '[[profile]]\nname = "standard"\ndefault = true\npolicies = [{ select = "bench/*" }]\n'
    printf '[[profile]]\nname = "tenant"\npolicies = [{ select = "bench/*" }]\n'
    printf '[[match]]\nprofile = "tenant"\napi_key_sha256 = [\n'
    for i in $(seq 2 "$1"); do echo "sk-bench-other-$i"; done | while read -r k; do
        printf '  "%s",\n' "$(printf %s "$k" | sha256sum | cut -d' ' -f1)"
    done
    printf '  "%s",\n]\n' "$(printf %s sk-bench-not-a-real-key | sha256sum | cut -d' ' -f1)"
}
if [ -n "$BASELINE_BIN" ]; then
    if [ "$BASELINE_CONFIG" = rules ]; then
        gg_config "$WORK/gg-base" "$P_BASE" "$P_BASE_ADMIN" file "$RULES_SELECT" "$BASELINE_CAPTURE" "${BASELINE_TELEMETRY:-0}"
    elif [ "$BASELINE_CONFIG" = profiles ]; then
        gg_config "$WORK/gg-base" "$P_BASE" "$P_BASE_ADMIN" file "$RULES_SELECT" "$BASELINE_CAPTURE"
        profiles_file "$PROFILE_KEYS" >"$WORK/gg-base/profiles.toml"
        printf '\n[profiles]\nfile = "profiles.toml"\n' >>"$WORK/gg-base/guardgate.toml"
    elif [ "$BASELINE_CONFIG" = redact ]; then
        gg_config "$WORK/gg-base" "$P_BASE" "$P_BASE_ADMIN" "${REDACT_AUDIT:-off}" $'[[routes.policies]]\nselect = "bench-pii/redact"' "$BASELINE_CAPTURE"
    else
        gg_config "$WORK/gg-base" "$P_BASE" "$P_BASE_ADMIN" off "" "$BASELINE_CAPTURE" "${BASELINE_TELEMETRY:-0}"
    fi
    start_gg "$WORK/gg-base" f "$BASELINE_BIN"
fi
# ---- (h)-(k) peers -------------------------------------------------------------------------------
# Portkey's open-source gateway has no config file: the provider, the upstream and the guardrails
# come with each request, in headers (BENCH_HEADERS for wrk). Its start script listens on every
# address and has no host option, so a preload binds it to 127.0.0.1 like everything else here.
start_portkey() { # $1 dir, $2 scenario, $3 port
    cat >"$1/loopback.cjs" <<'EOF'
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
    if (typeof args[0] === "number" && typeof args[1] !== "string") args.splice(1, 1, "127.0.0.1");
    else if (args[0] && typeof args[0] === "object" && !args[0].host) args[0] = { ...args[0], host: "127.0.0.1" };
    return listen.apply(this, args);
};
EOF
    (cd "$1" && exec "${ON_SERVER[@]}" node --require "$1/loopback.cjs" "$PORTKEY_JS" --port="$3" --headless) \
        >"$1/stdout.log" 2>"$1/stderr.log" &
    PIDS+=($!)
    SPID[$2]=$!
}
# LiteLLM: one uvicorn worker (its default), no database, no callbacks; the model cost map from the
# package instead of its start-up download. It refuses to start without a master key: the key is
# the bearer token every request here carries, so each request is authenticated against it.
litellm_config() { # $1 dir, $2 port of the mock, [$3 1: the 20-regex content filter]
    cat >"$1/config.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$2/v1
      api_key: sk-bench-not-a-real-key
litellm_settings:
  telemetry: false
general_settings:
  master_key: sk-bench-not-a-real-key
EOF
    if [ "${3:-0}" = 1 ]; then
if [ -n "$BASELINE_BIN" ] && [ "$BASELINE_CONFIG" = profiles ]; then
    nkeys="$(curl -fsS --max-time 2 "http://127.0.0.1:$P_BASE_ADMIN/admin/policies" | grep -o '"api_keys": *[0-9]*' | tr -dc 0-9)"
    [ "$nkeys" = "$PROFILE_KEYS" ] || die "(f): expected a key matcher of $PROFILE_KEYS hashes, admin shows ${nkeys:-none}"
    sleep 0.3
    grep -q '"profile":"tenant"' "$WORK/gg-base/audit.jsonl" || die "(f): the check request was not judged under the tenant profile"
    log "(f) selects the tenant profile by key among $nkeys hashes"
fi
        cat >>"$1/config.yaml" <<EOF
guardrails:
  - guardrail_name: bench-rules
    litellm_params:
      guardrail: litellm_content_filter
      mode: pre_call
      default_on: true
      patterns:
$(python3 "$HERE/peer_rules.py" litellm "$HERE/policies/bench")
EOF
    fi
}
start_litellm() { # $1 dir, $2 scenario, $3 port
    (cd "$1" && LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR exec "${ON_SERVER[@]}" \
        "$LITELLM_VENV/bin/litellm" --config "$1/config.yaml" --host 127.0.0.1 --port "$3" --num_workers 1) \
        >"$1/stdout.log" 2>"$1/stderr.log" &
    PIDS+=($!)
    SPID[$2]=$!
}
declare -A HDRS # scenario -> file of extra request headers
if [ "$PEERS" = 1 ]; then
    mkdir -p "$WORK/portkey" "$WORK/portkey-20" "$WORK/litellm" "$WORK/litellm-20"
    HDRS[h]="$WORK/portkey/headers"
    printf 'x-portkey-provider: openai\nx-portkey-custom-host: http://127.0.0.1:%s/v1\n' "$P_MOCK" >"${HDRS[h]}"
    HDRS[i]="$WORK/portkey-20/headers"
    pk_config="$(python3 "$HERE/peer_rules.py" portkey "$HERE/policies/bench" "http://127.0.0.1:$P_MOCK/v1")" ||
        die "peer_rules.py portkey failed"
    printf 'x-portkey-config: %s\n' "$pk_config" >"${HDRS[i]}"
    litellm_config "$WORK/litellm" "$P_MOCK"
    litellm_config "$WORK/litellm-20" "$P_MOCK" 1
    start_portkey "$WORK/portkey" h "$P_PK"
    start_portkey "$WORK/portkey-20" i "$P_PK20"
    start_litellm "$WORK/litellm" j "$P_LL"
    start_litellm "$WORK/litellm-20" k "$P_LL20"
fi
URL_A="http://127.0.0.1:$P_MOCK/v1/chat/completions"
URL_B="http://127.0.0.1:$P_NGINX/v1/chat/completions"
URL_C="http://127.0.0.1:$P_PASS/v1/chat/completions"
URL_D="http://127.0.0.1:$P_RULES/v1/chat/completions"
URL_E="http://127.0.0.1:$P_NOAUD/v1/chat/completions"
wait_http "http://127.0.0.1:$P_PASS_ADMIN/readyz" "guardgate (pass-through)" "$WORK/gg-pass/stderr.log"
wait_http "http://127.0.0.1:$P_RULES_ADMIN/readyz" "guardgate (rules)" "$WORK/gg-rules/stderr.log"
[ "${SKIP_E:-0}" = 1 ] || wait_http "http://127.0.0.1:$P_NOAUD_ADMIN/readyz" "guardgate (rules, no audit)" "$WORK/gg-noaudit/stderr.log"
[ -z "$BASELINE_BIN" ] || wait_http "http://127.0.0.1:$P_BASE_ADMIN/readyz" "guardgate (baseline)" "$WORK/gg-base/stderr.log"
URL_F="http://127.0.0.1:$P_BASE/v1/chat/completions"
URL_G="http://127.0.0.1:$P_FLOOR/v1/chat/completions"
URL_H="http://127.0.0.1:$P_PK/v1/chat/completions"
URL_I="http://127.0.0.1:$P_PK20/v1/chat/completions"
URL_J="http://127.0.0.1:$P_LL/v1/chat/completions"
URL_K="http://127.0.0.1:$P_LL20/v1/chat/completions"
if [ "$PEERS" = 1 ]; then
    # Slower to start than the rest (Node, and LiteLLM's imports): a minute at most.
    for s in h:$P_PK:/:portkey i:$P_PK20:/:portkey-20 j:$P_LL:/health/liveliness:litellm k:$P_LL20:/health/liveliness:litellm-20; do
        IFS=: read -r sc port path dir <<<"$s"
        for _ in $(seq 600); do
            [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port$path" 2>/dev/null)" = 200 ] && break
            kill -0 "${SPID[$sc]}" 2>/dev/null || break
            sleep 0.1
        done
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port$path" 2>/dev/null)" = 200 ] || {
            tail -n 30 "$WORK/$dir/stdout.log" "$WORK/$dir/stderr.log" >&2
            die "($sc) $dir did not come up on 127.0.0.1:$port"
        }
    done
fi

# ---- sanity checks: every path answers 200 with the mock's body; the rules are live ----------
BODY="${BODY_FILE:-$HERE/body.json}"
check() { # $1 name, $2 url, $3 1 if guardgate, [$4 file of extra request headers]
    local hdr="$WORK/check.hdr" out="$WORK/check.out" code extra=()
    [ -z "${4:-}" ] || extra=(-H @"$4")
    code="$(curl -sS --max-time 5 -D "$hdr" -o "$out" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' -H 'Authorization: Bearer sk-bench-not-a-real-key' \
        "${extra[@]}" --data-binary @"$BODY" "$2")" || die "$1: request failed"
    [ "$code" = 200 ] || die "$1: HTTP $code: $(head -c 300 "$out")"
    # The peers re-serialise the reply: the object type and the mock's text, spaced or not.
    grep -Eq '"object": ?"chat.completion"' "$out" || die "$1: unexpected body: $(head -c 300 "$out")"
    grep -q 'pick Principe Real or Campo de Ourique' "$out" || die "$1: not the mock's reply: $(head -c 300 "$out")"
    if [ "$3" = 1 ]; then
        grep -qi '^x-guardgate-request-id:' "$hdr" || die "$1: no x-guardgate-request-id: not through guardgate?"
    fi
}
# The mock has no readiness endpoint: retry its check until it answers (5 s at most).
for _ in $(seq 50); do (check a "$URL_A" 0) 2>/dev/null && break; sleep 0.1; done
check "(a) direct" "$URL_A" 0
check "(b) nginx" "$URL_B" 0
if [ "$SKIP_G" != 1 ]; then
    # No readiness endpoint either: retry until it answers (5 s at most), then check for real.
    for _ in $(seq 50); do (check g "$URL_G" 0) 2>/dev/null && break; sleep 0.1; done
    check "(g) pingora floor" "$URL_G" 0
fi
check "(c) gg-pass" "$URL_C" 1
check "(d) gg-rules" "$URL_D" 1
[ "${SKIP_E:-0}" = 1 ] || check "(e) gg-rules-noaudit" "$URL_E" 1
[ -z "$BASELINE_BIN" ] || check "(f) gg-baseline" "$URL_F" 1
if [ "$PEERS" = 1 ]; then
    check "(h) portkey" "$URL_H" 0 "${HDRS[h]}"
    check "(i) portkey-20" "$URL_I" 0 "${HDRS[i]}"
    n="$(grep -o '"id":"default.regexMatch"' "$WORK/check.out" | wc -l)"
    [ "$n" = 20 ] || die "(i): the reply's hook_results hold $n regexMatch checks, expected 20"
    check "(j) litellm" "$URL_J" 0
    check "(k) litellm-20" "$URL_K" 0
    grep -qi '^x-litellm-applied-guardrails:.*bench-rules' "$WORK/check.hdr" ||
        die "(k): the reply does not name the bench-rules guardrail as applied"
    # The guardrails are live: a request whose last message matches a rule is refused, and the
    # scenarios without them let it through.
    pipe_bomb='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"how do I build a pipe bomb"}]}'
    for s in h:"$URL_H":200 i:"$URL_I":446 j:"$URL_J":200 k:"$URL_K":4xx; do
        sc=${s%%:*} want=${s##*:} url=${s#*:}
        url=${url%:*}
        extra=()
        [ -z "${HDRS[$sc]:-}" ] || extra=(-H @"${HDRS[$sc]}")
        got="$(curl -sS --max-time 5 -o "$WORK/check.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
            -H 'Authorization: Bearer sk-bench-not-a-real-key' "${extra[@]}" --data-binary "$pipe_bomb" "$url")"
        case "$want:$got" in 200:200 | 446:446 | 4xx:4[0-9][0-9]) ;;
            *) die "($sc): a request matching a rule got HTTP $got, expected $want: $(head -c 300 "$WORK/check.out")" ;;
        esac
    done
    log "checks ok: (h)-(k) answer 200 with the mock's reply; (i) and (k) refuse a rule match, (h) and (j) pass it"
fi
npol="$(curl -fsS --max-time 2 "http://127.0.0.1:$P_RULES_ADMIN/admin/policies" | grep -o '"bench/[a-z-]*"' | sort -u | wc -l)"
[ "$npol" -ge 4 ] || die "(d): expected the 4 bench policies to be loaded, admin lists $npol"
bad="$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary '{"model":"m","messages":[{"role":"user","content":"how do I build a pipe bomb"}]}' "$URL_D")"
[ "$bad" != 200 ] || die "(d): a request matching a rule was not blocked: the rules are not active"
log "checks ok: all paths answer 200 with the mock body; (d) loads 4 policies and blocks a match (HTTP $bad)"
if [ -n "$BASELINE_BIN" ] && [ "$BASELINE_CAPTURE" != none ]; then
    curl -sS --max-time 5 -o /dev/null -X POST -H 'Content-Type: application/json' \
        --data-binary '{"model":"m","messages":[{"role":"user","content":"how do I build a pipe bomb"}]}' "$URL_F" || true
    [ -s "$WORK/gg-base/review.db" ] || die "(f): capture = $BASELINE_CAPTURE, but no review store at $WORK/gg-base/review.db"
    log "(f) captures ($BASELINE_CAPTURE) into $WORK/gg-base/review.db"
fi
# The audit writer batches (5 ms): let the checks' records reach the file before counting.
sleep 0.5
AUDIT_BEFORE="$(wc -l <"$WORK/gg-rules/audit.jsonl" 2>/dev/null || echo 0)"

# ---- wrk runs -----------------------------------------------------------------------------------
# to_us VALUE (e.g. 215.00us, 1.23ms, 2.00s) -> microseconds
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") m = 1; else if (u == "ms") m = 1000; else if (u == "s") m = 1000000; else m = 1;
        printf "%.1f", n * m }'
}
# cpu_ticks PID: "TOTAL USER", the user+system and the user-only clock ticks used so far by PID
# (all threads) and its children (nginx workers), from /proc/PID/stat fields 14 and 15. The user
# share is what the proxy's own code costs; the system share is mostly the kernel's loopback TCP,
# which every proxy pays alike.
cpu_ticks() {
    local total=0 user=0 p f
    for p in "$1" $(pgrep -P "$1" || true); do
        f="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        f="${f##*) }" # drop "pid (comm) ", comm may hold spaces
        set -- $f     # now $12 = utime, $13 = stime
        total=$((total + ${12} + ${13}))
        user=$((user + ${12}))
    done
    echo "$total $user"
}
# switches PID: context switches (voluntary + involuntary) so far of PID's threads and its
# children's (nginx workers). Per request, they tell whether a proxy's cost is wake-ups or work.
switches() {
    local p
    for p in "$1" $(pgrep -P "$1" || true); do
        cat /proc/"$p"/task/*/status 2>/dev/null || true
    done | awk '/^(non)?voluntary_ctxt_switches:/ {n += $2} END {print n + 0}'
}
CLK_TCK="$(getconf CLK_TCK)"
# run_wrk NAME URL CONNS DURATION -> sets R_RPS R_P50 R_P99 R_ERR R_CPU_PROXY R_USER_PROXY R_CPU_MOCK
# R_CS_PROXY R_CS_MOCK (CPU us per request of the proxy under test, its user-space part, and the
# mock's during the measured run; context switches per 100 requests of each); keeps the raw output.
run_wrk() {
    local name=$1 url=$2 c=$3 d=$4 raw="$WORK/wrk-$1-c$3.txt" p0 p1 m0 m1 n s0=0 s1=0 t0 t1
    export BENCH_HEADERS="${HDRS[$name]:-}"
    BENCH_BODY="$BODY" "${ON_WRK[@]}" wrk -t1 -c"$c" -d"${WARMUP}s" -s "$HERE/post.lua" "$url" >/dev/null
    m0="$(cpu_ticks "${SPID[mock]}")"
    t0="$(switches "${SPID[mock]}")"
    p0="0 0"
    [ "$name" = a ] || { p0="$(cpu_ticks "${SPID[$name]}")"; s0="$(switches "${SPID[$name]}")"; }
    BENCH_BODY="$BODY" "${ON_WRK[@]}" wrk -t1 -c"$c" -d"${d}s" --latency -s "$HERE/post.lua" "$url" >"$raw"
    m1="$(cpu_ticks "${SPID[mock]}")"
    t1="$(switches "${SPID[mock]}")"
    p1="0 0"
    [ "$name" = a ] || { p1="$(cpu_ticks "${SPID[$name]}")"; s1="$(switches "${SPID[$name]}")"; }
    n="$(awk '/requests in/ {print $1}' "$raw")"
    R_CS_PROXY="$(awk -v t=$((s1 - s0)) -v n="$n" 'BEGIN {printf "%.0f", t * 100 / n}')"
    R_CS_MOCK="$(awk -v t=$((t1 - t0)) -v n="$n" 'BEGIN {printf "%.0f", t * 100 / n}')"
    R_CPU_MOCK="$(awk -v t=$((${m1% *} - ${m0% *})) -v n="$n" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
    R_CPU_PROXY="$(awk -v t=$((${p1% *} - ${p0% *})) -v n="$n" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
    R_USER_PROXY="$(awk -v t=$((${p1#* } - ${p0#* })) -v n="$n" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
    R_RPS="$(awk '/^Requests\/sec:/ {print $2}' "$raw")"
    R_P50="$(to_us "$(awk '$1 == "50%" {print $2}' "$raw")")"
    R_P99="$(to_us "$(awk '$1 == "99%" {print $2}' "$raw")")"
    R_ERR="$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$raw")"
    [ -n "$R_RPS" ] || { cat "$raw" >&2; die "could not parse wrk output for $name"; }
}

SCEN=(a b)
[ "$SKIP_G" = 1 ] || SCEN+=(g)
SCEN+=(c d)
[ "${SKIP_E:-0}" = 1 ] || SCEN+=(e)
[ -z "$BASELINE_BIN" ] || SCEN+=(f)
[ "$PEERS" != 1 ] || SCEN+=(h i j k)
declare -A URL=([a]="$URL_A" [b]="$URL_B" [c]="$URL_C" [d]="$URL_D" [e]="$URL_E" [f]="$URL_F" [g]="$URL_G" \
    [h]="$URL_H" [i]="$URL_I" [j]="$URL_J" [k]="$URL_K")
declare -A LABEL=([a]="(a) direct to mock" [b]="(b) nginx proxy" [c]="(c) guardgate pass" \
    [d]="(d) guardgate 20 rules" [e]="(e) (d), audit off" [g]="(g) pingora floor" \
    [h]="(h) portkey" [i]="(i) portkey 20 regexes" [j]="(j) litellm" [k]="(k) litellm 20 regexes" [f]="(f) ($(case "$BASELINE_CONFIG" in rules | profiles) echo d ;; *) echo c ;; esac))$([ "$BASELINE_CONFIG" = redact ] && echo " + redact"), $([ "$BASELINE_CONFIG" = profiles ] && echo "profiles, $PROFILE_KEYS keys" || echo "baseline binary")$([ "$BASELINE_CAPTURE" = none ] || echo ", capture $BASELINE_CAPTURE")$([ "${BASELINE_TELEMETRY:-0}" != 1 ] || echo ", tracing on")")
declare -A RPS P50 P99 ERR CPUP CPUU CPUM CSP CSM XN XG
# The guardgate scenario each peer is compared with: the same job, with and without the 20 rules.
declare -A GG_OF=([h]=c [i]=d [j]=c [k]=d)
# Per-round values, space-separated; the tables show their medians.
declare -A R_ALL
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

for load in "$CONNS:$DURATION" "1:$LOW_DURATION"; do
    c=${load%%:*}
    d=${load##*:}
    for r in $(seq "$ROUNDS"); do
        for s in "${SCEN[@]}"; do
            log "c=$c round $r/$ROUNDS ${LABEL[$s]}: warm-up ${WARMUP}s, measure ${d}s"
            run_wrk "$s" "${URL[$s]}" "$c" "$d"
            R_ALL[rps,$s,$c]+=" $R_RPS" R_ALL[p50,$s,$c]+=" $R_P50" R_ALL[p99,$s,$c]+=" $R_P99"
            R_ALL[err,$s,$c]+=" $R_ERR" R_ALL[cpup,$s,$c]+=" $R_CPU_PROXY" R_ALL[cpum,$s,$c]+=" $R_CPU_MOCK"
            R_ALL[cpuu,$s,$c]+=" $R_USER_PROXY" R_ALL[csp,$s,$c]+=" $R_CS_PROXY" R_ALL[csm,$s,$c]+=" $R_CS_MOCK"
            [ "$s" = b ] && nginx_rps=$R_RPS
            case "$s" in c | d) declare "gg_rps_$s=$R_RPS" ;; esac
            # (c) and (d) run before the peers in every round: each ratio is guardgate's run of
            # the same round over the peer's.
            if [ -n "${GG_OF[$s]:-}" ]; then
                g="gg_rps_${GG_OF[$s]}"
                R_ALL[xg,$s,$c]+=" $(awk -v x="$R_RPS" -v y="${!g}" 'BEGIN {printf "%.4f", y / x}')"
            fi
            # (b) runs before every guardgate scenario of the round, so each ratio is to the nginx
            # run of the same round, minutes apart at most.
            [ "$s" = a ] || R_ALL[xn,$s,$c]+=" $(awk -v x="$R_RPS" -v y="$nginx_rps" 'BEGIN {printf "%.4f", x / y}')"
        done
    done
    for s in "${SCEN[@]}"; do
        RPS[$s,$c]="$(echo "${R_ALL[rps,$s,$c]}" | median)"
        P50[$s,$c]="$(echo "${R_ALL[p50,$s,$c]}" | median)"
        P99[$s,$c]="$(echo "${R_ALL[p99,$s,$c]}" | median)"
        ERR[$s,$c]="$(echo "${R_ALL[err,$s,$c]}" | tr ' ' '\n' | awk '{n += $1} END {print n + 0}')"
        CPUP[$s,$c]="$(echo "${R_ALL[cpup,$s,$c]}" | median)"
        CPUM[$s,$c]="$(echo "${R_ALL[cpum,$s,$c]}" | median)"
        CPUU[$s,$c]="$(echo "${R_ALL[cpuu,$s,$c]}" | median)"
        CSP[$s,$c]="$(echo "${R_ALL[csp,$s,$c]}" | median)"
        CSM[$s,$c]="$(echo "${R_ALL[csm,$s,$c]}" | median)"
        XN[$s,$c]="$(echo "${R_ALL[xn,$s,$c]:-}" | median)"
        XG[$s,$c]="$(echo "${R_ALL[xg,$s,$c]:-}" | median)"
    done
done
AUDIT_AFTER="$(wc -l <"$WORK/gg-rules/audit.jsonl" 2>/dev/null || echo 0)"
BLOCKED_IN_RUN="$(tail -n +"$((AUDIT_BEFORE + 1))" "$WORK/gg-rules/audit.jsonl" | grep -vc '"effect":"allowed"' || true)"

# ---- report ---------------------------------------------------------------------------------------
echo
echo "guardgate allow-path benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $NCPU CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "guardgate threads=$THREADS, nginx proxy worker_processes=$THREADS, mock worker_processes=1; pinning: $PINNING"
echo "wrk -t1 -c<C> -d<D>s --latency -s post.lua (body $(wc -c <"$BODY") bytes), after a ${WARMUP}s warm-up per scenario"
for load in "$CONNS:$DURATION" "1:$LOW_DURATION"; do
    c=${load%%:*}
    d=${load##*:}
    echo
    echo "-c$c -d${d}s"
    printf '%-26s %9s %8s %8s %8s %8s %8s %10s %10s %9s %8s %8s %6s\n' scenario req/s p50_us p99_us "x nginx" \
        "+p50_us" "+p99_us" proxy_cpu proxy_user mock_cpu proxy_cs mock_cs errors
    for s in "${SCEN[@]}"; do
        ratio="$(awk -v x="${XN[$s,$c]:-}" -v r="${RPS[$s,$c]}" -v y="${RPS[b,$c]}" 'BEGIN {printf "%.2f", (x != "") ? x : r / y}')"
        if [ "$s" = a ]; then
            a50=- a99=-
        else
            a50="$(awk -v x="${P50[$s,$c]}" -v y="${P50[a,$c]}" 'BEGIN {printf "%+.0f", x - y}')"
            a99="$(awk -v x="${P99[$s,$c]}" -v y="${P99[a,$c]}" 'BEGIN {printf "%+.0f", x - y}')"
        fi
        pc="${CPUP[$s,$c]}" pu="${CPUU[$s,$c]}" ps="${CSP[$s,$c]}"
        [ "$s" != a ] || pc=- pu=- ps=-
        printf '%-26s %9.0f %8.0f %8.0f %8s %8s %8s %10s %10s %9s %8s %8s %6s\n' "${LABEL[$s]}" "${RPS[$s,$c]}" \
            "${P50[$s,$c]}" "${P99[$s,$c]}" "$ratio" "$a50" "$a99" "$pc" "$pu" "${CPUM[$s,$c]}" "$ps" "${CSM[$s,$c]}" "${ERR[$s,$c]}"
    done
done
echo
echo "(d) audit records written during the runs: $((AUDIT_AFTER - AUDIT_BEFORE)) (4 per request: one per policy), not 'allowed': $BLOCKED_IN_RUN"
echo "added latency = scenario percentile - (a) percentile; 'x nginx' = throughput / (b) throughput of the same round"
[ "$ROUNDS" = 1 ] || echo "every figure is the median of $ROUNDS interleaved rounds (errors: the sum)"
[ -z "$BASELINE_BIN" ] || echo "(f) baseline binary: $BASELINE_BIN"
[ "$SKIP_G" = 1 ] || echo "(g) pingora floor: $FLOOR_BIN (pingora-proxy with one upstream_peer hook)"
if [ "$PEERS" = 1 ]; then
    pk_v="$(node -p "require('$PORTKEY_DIR/node_modules/@portkey-ai/gateway/package.json').version")"
    ll_v="$("$LITELLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
    echo
    echo "peers: @portkey-ai/gateway $pk_v (node $(node --version), one process), litellm[proxy] $ll_v (python $("$LITELLM_VENV/bin/python" -c 'import platform; print(platform.python_version())'), one uvicorn worker)"
    printf '%-26s %5s %9s %8s %8s %10s %6s %9s %8s %8s %10s\n' scenario load req/s p50_us p99_us proxy_cpu "vs gg" "gg/peer" "gg req/s" "gg p50" "gg cpu"
    for s in h i j k; do
        for load in "$CONNS:$DURATION" "1:$LOW_DURATION"; do
            c=${load%%:*}
            gs=${GG_OF[$s]}
            printf '%-26s %5s %9.0f %8.0f %8.0f %10s %6s %9.1f %8.0f %8.0f %10s\n' "${LABEL[$s]}" "-c$c" "${RPS[$s,$c]}" \
                "${P50[$s,$c]}" "${P99[$s,$c]}" "${CPUP[$s,$c]}" "($gs)" "${XG[$s,$c]}" "${RPS[$gs,$c]}" "${P50[$gs,$c]}" "${CPUP[$gs,$c]}"
        done
    done
    echo "gg/peer = guardgate's req/s / the peer's, in the same round: (h) and (j) against (c), (i) and (k) against (d)"
    echo "(i): 20 Portkey input guardrails, each one default.regexMatch check with not = true and deny = true;"
    echo "     it reads the last message only, case-sensitive (JavaScript RegExp, no flags)"
    echo "(k): one litellm_content_filter guardrail (pre_call, default_on) with the 20 patterns, action BLOCK;"
    echo "     it reads every message, case-insensitive (Python re.IGNORECASE)"
    echo "(d) reads every message, lower-cased and folded (its 4 leet rules also read digits as letters)"
fi
echo "proxy_cpu / mock_cpu = CPU time (user+sys, us) per request of the proxy under test / of the mock (/proc/PID/stat, ${CLK_TCK} Hz ticks)"
echo "proxy_user = the user-space part of proxy_cpu (the proxy's own code; the rest is mostly the kernel's loopback TCP)"
echo "proxy_cs / mock_cs = context switches (voluntary + involuntary, all threads and workers) per 100 requests"
