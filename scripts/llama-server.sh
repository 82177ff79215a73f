#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server (llama-cpp-python[server], compiled here from PyPI), the
# real model server the remote backend's tests (tests/it/llama_server.rs) talk to.
#   scripts/llama-server.sh install   install it if missing (idempotent; prints the python path)
#   scripts/llama-server.sh python    print the venv's python if the server is installed, else exit 1
# The build compiles llama.cpp: ~10-15 minutes on 2 cores the first time. pip keeps the wheel in
# its cache (~/.cache/pip), so a fresh venv on the same machine installs in seconds.
#
# Environment:
#   GUARDGATE_LLAMA_VENV  venv location (default: $HOME/.cache/guardgate/llama-server-venv)
set -euo pipefail
VENV="${GUARDGATE_LLAMA_VENV:-$HOME/.cache/guardgate/llama-server-venv}"
# The version bench/model/run.sh measures against.
VERSION="0.3.36"

installed() {
    "$VENV/bin/python" - "$VERSION" <<'PY' >/dev/null 2>&1
import sys
import llama_cpp, llama_cpp.server.app, uvicorn  # noqa: F401
sys.exit(0 if llama_cpp.__version__ == sys.argv[1] else 1)
PY
}

case "${1:-install}" in
python)
    installed || exit 1
    echo "$VENV/bin/python"
    ;;
install)
    mkdir -p "$(dirname "$VENV")"
    # Two test runs installing at once would build twice into one venv.
    exec 9>"$VENV.lock"
    flock 9
    if installed; then
        echo "$VENV/bin/python"
        exit 0
    fi
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    echo "llama-server: installing llama-cpp-python[server]==$VERSION into $VENV (compiles llama.cpp the first time: ~10-15 min on 2 cores)" >&2
    # The ISA level of guardgate's own build (x86-64-v3), as bench/model/run.sh builds it: a
    # -march=native build crashed on an AMX host inside a VM.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "llama-cpp-python[server]==$VERSION" >&2
    installed
    echo "$VENV/bin/python"
    ;;
*)
    echo "usage: $0 install|python" >&2
    exit 2
    ;;
esac
