#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run):
#   setup -> cargo fmt --check -> cargo clippy -> cargo build -> deploy checks -> policy lint/test
#   (rules; one policy through the small model) -> llama.cpp server -> cargo test (PostgreSQL tests
#   included) -> SDK suite -> the review page in headless Chromium
# Everything is built once, with the release profile: the in-process model is unusably slow
# unoptimised, and building mistral.rs in two profiles would not fit CI's time.
# Every step runs even when an earlier independent one failed (a fmt slip does not hide test
# results); the test steps are skipped only when the build they need failed. Exits non-zero if
# anything failed. The last line is the test count over cargo test and the SDK suite together.
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default: ./target, which setup links to ~/.cache/guardgate/target)
#   GUARDGATE_VENV     Python venv for the SDK suite (default: $HOME/.cache/guardgate/venv)
#   PYTEST_ARGS        extra arguments for pytest (e.g. "-x -k anthropic")
#   CARGO_TEST_TIMEOUT seconds allowed for `cargo test`, compile included (default 2400)
#   SDK_TEST_TIMEOUT   seconds allowed for the SDK suite (default 600)
#   BROWSER_TEST_TIMEOUT seconds allowed for the browser test (default 300)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# rustup installs cargo here; a non-login shell (CI) may not have it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# cargo's own default, which setup links outside the clone so the build outlives it.
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${GUARDGATE_VENV:-$HOME/.cache/guardgate/venv}"
export GUARDGATE_VENV="$VENV"

LOGS="$(mktemp -d "${TMPDIR:-/tmp}/guardgate-test.XXXXXX")"
trap 'rm -rf "$LOGS"' EXIT

failed_steps=()
results=()
passed_total=0
failed_total=0

section() {
    printf '\n==================== %s ====================\n' "$*"
}

# step NAME CMD...: runs CMD under a header, records the outcome, returns its status.
step() {
    local name="$1" start=$SECONDS rc=0
    shift
    section "$name"
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        results+=("$name: ok ($((SECONDS - start))s)")
    else
        results+=("$name: FAILED (exit $rc, $((SECONDS - start))s)")
        failed_steps+=("$name")
    fi
    return "$rc"
}

skip() {
    section "$1"
    echo "skipped: $2"
    results+=("$1: SKIPPED ($2)")
    failed_steps+=("$1")
}

# ---- setup ---------------------------------------------------------------------------------
if ! step "setup" scripts/setup.sh; then
    echo "setup failed: cannot run the checks" >&2
    exit 1
fi

# ---- static checks -------------------------------------------------------------------------
step "cargo fmt --check" cargo fmt --check || true
step "cargo clippy" cargo clippy --all-targets -- -D warnings || true

# ---- build ---------------------------------------------------------------------------------
built=1
step "cargo build" cargo build --release --bins --examples || built=0

# ---- deploy/: Dockerfile, compose file, Kubernetes manifests (no Docker or cluster needed) --
step "deploy checks" scripts/validate-deploy.sh || true

# ---- the shipped policy packs: lint clean, and their case files run (deterministic backend) ----
policy_checks() {
    local bin="$TARGET/release/guardgate"
    "$bin" policy lint policies/ &&
        "$bin" policy test policies/general policies/teen-safety --report-dir "$LOGS/policy-report"
}
if [ "$built" -eq 1 ]; then
    step "policy lint + policy test" policy_checks || true
else
    skip "policy lint + policy test" "the build failed"
fi

# ---- one policy end to end with the small default model ------------------------------------
# What is under test is the path (model load, warm-up, every case through mistral.rs, reports),
# not a 135M model's judgement: exit 1 (thresholds not met) is fine, a classifier error is not.
# One policy shows the path; the six teen-safety policies take minutes with a model whose answer
# is the same for every case, so they run as a benchmark (bench/model/policy-packs.sh).
model_policy_test() {
    local bin="$TARGET/release/guardgate" out="$LOGS/policy-report-small-model" rc=0
    local policy=policies/teen-safety/dangerous-activities.md
    "$bin" policy test "$policy" --backend small -c config/guardgate.toml \
        --report-dir "$out" --max-failures 3 || rc=$?
    if [ "$rc" -gt 1 ]; then
        echo "policy test with the small model: exit $rc"
        return 1
    fi
    python3 scripts/check-policy-report.py "$out/report.json" "$policy"
}
if [ "$built" -eq 1 ]; then
    step "policy test, small model" model_policy_test || true
else
    skip "policy test, small model" "the build failed"
fi

# ---- a real model server for the remote backend's tests -------------------------------------
# llama.cpp's server (llama-cpp-python[server]): compiled once (~15 min on 2 cores), then found in
# its venv or installed from pip's wheel cache in seconds. With it required, tests/it/llama_server.rs
# fails instead of skipping when the server is missing.
step "llama.cpp server" scripts/llama-server.sh install || true
export GUARDGATE_REQUIRE_LLAMA_SERVER=1

# ---- Rust tests ----------------------------------------------------------------------------
cargo_tests() {
    # --no-fail-fast: run every test binary even when one fails, so the report is complete.
    # The time limit turns a hung test into a failure instead of a stalled CI run.
    # The review store's PostgreSQL tests start a private cluster; here a missing PostgreSQL is a
    # failure, not a skip.
    GUARDGATE_REQUIRE_PG=1 timeout --kill-after=30 "${CARGO_TEST_TIMEOUT:-2400}" cargo test --release --no-fail-fast 2>&1 |
        tee "$LOGS/cargo-test.log"
    local rc="${PIPESTATUS[0]}"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "cargo test: timed out after ${CARGO_TEST_TIMEOUT:-2400}s (a test hung?)"
    fi
    # The patched mistralrs-quant's own kernel tests (its F32 prefill panels and its Q8_0 decoding
    # kernel against candle's); the model tests above run that code too, but only these check
    # its numbers.
    cargo test --release -p mistralrs-quant --lib gguf:: 2>&1 | tee -a "$LOGS/cargo-test.log"
    local rc_quant="${PIPESTATUS[0]}"
    [ "$rc" -ne 0 ] && return "$rc"
    return "$rc_quant"
}
if [ "$built" -eq 1 ]; then
    step "cargo test" cargo_tests || true
    # "test result: ok. 12 passed; 0 failed; 0 ignored; ..." once per test binary and doc-tests.
    read -r p f < <(awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed;?$/) p += $(i - 1)
                if ($(i) ~ /^failed;?$/) f += $(i - 1)
            }
        } END { print p + 0, f + 0 }' "$LOGS/cargo-test.log")
    passed_total=$((passed_total + p))
    failed_total=$((failed_total + f))
    results+=("  cargo test: $p passed, $f failed")
else
    skip "cargo test" "the build failed"
fi

# ---- SDK compatibility suite (official Python SDKs against the real binary) -----------------
sdk_tests() {
    local bin="$TARGET/release/guardgate" mock="$TARGET/release/examples/mock_upstream"
    # shellcheck disable=SC2086 # PYTEST_ARGS is a word list on purpose
    GUARDGATE_BIN="$bin" MOCK_UPSTREAM_BIN="$mock" \
        timeout --kill-after=30 "${SDK_TEST_TIMEOUT:-600}" "$VENV/bin/python" -m pytest tests/sdk --junitxml="$LOGS/sdk.xml" ${PYTEST_ARGS:-}
}
if [ "$built" -eq 1 ]; then
    step "SDK tests (pytest tests/sdk)" sdk_tests || true
    if [ -f "$LOGS/sdk.xml" ]; then
        read -r p f < <("$VENV/bin/python" - "$LOGS/sdk.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
tests = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(tests - bad - skipped, bad)
PY
        )
    else
        p=0 f=0
    fi
    passed_total=$((passed_total + p))
    failed_total=$((failed_total + f))
    results+=("  SDK tests: $p passed, $f failed")
else
    skip "SDK tests (pytest tests/sdk)" "the build failed"
fi

# ---- the review page in a real browser (headless Chromium + chromedriver, selenium) -----------
browser_tests() {
    local bin="$TARGET/release/guardgate" mock="$TARGET/release/examples/mock_upstream"
    # shellcheck disable=SC2086 # PYTEST_ARGS is a word list on purpose
    GUARDGATE_BIN="$bin" MOCK_UPSTREAM_BIN="$mock" GUARDGATE_REQUIRE_BROWSER=1 \
        timeout --kill-after=30 "${BROWSER_TEST_TIMEOUT:-300}" "$VENV/bin/python" -m pytest tests/browser \
        -p no:cacheprovider -ra --timeout 120 --junitxml="$LOGS/browser.xml" ${PYTEST_ARGS:-}
}
if [ "$built" -eq 1 ]; then
    step "browser tests (pytest tests/browser)" browser_tests || true
    if [ -f "$LOGS/browser.xml" ]; then
        read -r p f < <("$VENV/bin/python" - "$LOGS/browser.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
tests = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(tests - bad - skipped, bad)
PY
        )
    else
        p=0 f=0
    fi
    passed_total=$((passed_total + p))
    failed_total=$((failed_total + f))
    results+=("  browser tests: $p passed, $f failed")
else
    skip "browser tests (pytest tests/browser)" "the build failed"
fi

# ---- summary -------------------------------------------------------------------------------
section "summary"
printf '%s\n' "${results[@]}"
if [ "${#failed_steps[@]}" -gt 0 ]; then
    echo "FAILED: ${failed_steps[*]}"
fi
echo "total: $passed_total passed, $failed_total failed"
[ "${#failed_steps[@]}" -eq 0 ]
