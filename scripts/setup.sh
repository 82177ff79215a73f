#!/usr/bin/env bash
# Idempotent machine setup for building and testing guardgate on Debian (run as root, or with sudo):
#   - system packages: cmake, pkg-config, python3-venv (build and tests); postgresql (the review
#     store's PostgreSQL tests run a private cluster), chromium + chromium-driver (the review page's
#     browser test); nginx-light, wrk (benchmarks)
#   - ./target, the build directory of cargo and of every script: a link to $GUARDGATE_BUILD_DIR
#   - third_party/ (scripts/patch-deps.sh) and the small default model in models/
#     (scripts/fetch-default-model.sh)
#   - a Python venv with the SDK test suite's requirements (tests/sdk/requirements.txt)
# Safe to run repeatedly: it installs only what is missing and prints little when nothing is.
#
# Environment:
#   GUARDGATE_BUILD_DIR  where ./target points when this creates it (default: $HOME/.cache/guardgate/target)
#   GUARDGATE_VENV     venv location (default: $HOME/.cache/guardgate/venv)
#   GUARDGATE_PYTHON   interpreter used to create the venv (default: python3)
#   GUARDGATE_SKIP_VENV=1  no SDK-suite venv (used by scripts/serve.sh)
#   GUARDGATE_SKIP_MODEL=1 do not fetch the small default model
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GUARDGATE_VENV:-$HOME/.cache/guardgate/venv}"
PYTHON="${GUARDGATE_PYTHON:-python3}"
REQS="$ROOT/tests/sdk/requirements.txt"

log() { printf 'setup: %s\n' "$*"; }

# ---- system packages -------------------------------------------------------------------------
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# A C compiler and make (the linker, mimalloc, zstd and zlib-ng build C; cmake only recommends
# them), and patch-deps.sh's curl and patch: all "optional" in Debian, so a minimal image lacks them.
{ command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1; } || missing+=(build-essential)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v patch >/dev/null 2>&1 || missing+=(patch)
# Debian's python3 needs python3-venv (ensurepip) for `python3 -m venv` to work.
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    pkg_installed python3-venv || missing+=(python3-venv)
fi
# The review store's PostgreSQL tests start their own cluster with these binaries (the package's
# own cluster is never started: see policy-rc.d below).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# The review page's browser test (tests/browser): headless Chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# Benchmarks only: any nginx flavour will do.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)

if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "WARNING: no apt-get; install these by hand: ${missing[*]}"
    else
        SUDO=()
        if [ "$(id -u)" -ne 0 ]; then
            if command -v sudo >/dev/null 2>&1; then
                SUDO=(sudo)
            else
                log "WARNING: not root and no sudo; install these by hand: ${missing[*]}"
                missing=()
            fi
        fi
        if [ "${#missing[@]}" -gt 0 ]; then
            log "installing system packages: ${missing[*]}"
            # Keep package scripts from starting services (nginx would grab port 80).
            policy_rc=/usr/sbin/policy-rc.d
            added_policy=0
            if [ ! -e "$policy_rc" ]; then
                printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy_rc" >/dev/null
                "${SUDO[@]}" chmod +x "$policy_rc"
                added_policy=1
            fi
            rc=0
            {
                "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
                "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                    --no-install-recommends "${missing[@]}" >/dev/null
            } || rc=$?
            if [ "$added_policy" -eq 1 ]; then
                "${SUDO[@]}" rm -f "$policy_rc"
            fi
            if [ "$rc" -ne 0 ]; then
                log "ERROR: apt-get failed (exit $rc) installing: ${missing[*]}"
                exit "$rc"
            fi
        fi
    fi
fi

# ---- the Rust toolchain -------------------------------------------------------------------------
# Not installed here (rustup fetches it from its own servers, which a package registry is not):
# say so before anything needs it, rather than failing later with "cargo: command not found".
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    log "ERROR: no cargo: install Rust 1.85 or newer (https://rustup.rs), then run this again"
    exit 1
fi

# ---- the build directory ---------------------------------------------------------------------
# Plain cargo and the scripts all build into ./target. Made here, before any cargo command, as a
# link to a directory outside the clone: a fresh clone (CI makes one per run) then finds the last
# build there instead of compiling mistral.rs again (~40 minutes). An existing ./target, link or
# directory, is kept; with CARGO_TARGET_DIR set cargo does not use ./target, so none is made.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    if [ -L "$ROOT/target" ]; then
        mkdir -p "$(readlink -m "$ROOT/target")"
    elif [ ! -e "$ROOT/target" ]; then
        build_dir="${GUARDGATE_BUILD_DIR:-$HOME/.cache/guardgate/target}"
        mkdir -p "$build_dir"
        ln -s "$build_dir" "$ROOT/target"
        log "./target -> $build_dir"
    fi
fi

# ---- patched dependency sources and the small default model ---------------------------------
# Cargo.toml's [patch.crates-io] needs third_party/ before any cargo command.
"$ROOT/scripts/patch-deps.sh"
if [ "${GUARDGATE_SKIP_MODEL:-0}" != 1 ]; then
    "$ROOT/scripts/fetch-default-model.sh"
    "$ROOT/scripts/fetch-harmony-vocab.sh"
fi

# ---- Python venv for the SDK suite ---------------------------------------------------------
# The gateway itself needs no Python venv: scripts/serve.sh skips this part.
if [ "${GUARDGATE_SKIP_VENV:-0}" = 1 ]; then
    exit 0
fi
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv at $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi

# Re-install only when the requirements (or the interpreter) changed since the last install.
want="$( { cat "$REQS"; "$VENV/bin/python" -VV; } | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.guardgate-requirements.sha256"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ] || ! "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in ("openai", "anthropic", "pytest", "pytest_timeout", "selenium")) else 1)
PY
then
    log "installing Python requirements into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
    echo "$want" >"$stamp"
fi

# The Rust toolchain itself is not installed here (rustup needs the network); just say so.
for tool in "cargo --version" "cargo fmt --version" "cargo clippy --version"; do
    $tool >/dev/null 2>&1 || log "WARNING: '$tool' failed: install the Rust toolchain with rustfmt and clippy"
done

log "ok (venv: $VENV)"
