#!/usr/bin/env bash
# The in-process model benchmark (docs/BENCHMARKS.md, "In-process model"): guardgate's mistral.rs
# backend and, as the reference, llama.cpp (llama-cpp-python, compiled here from PyPI) on the same
# GGUF file, the same prompts and the same number of threads.
#   bench/model/run.sh [--threads N] [--policy FILE] [--distinct N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/guardgate/target}"
VENV="${GUARDGATE_TOOLS_VENV:-$HOME/.cache/guardgate/tools-venv}"
THREADS=2
args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
MODEL="$ROOT/models/SmolLM2-135M-Instruct.Q8_0.gguf"
scripts/patch-deps.sh
scripts/fetch-default-model.sh
cargo build --release --example model_bench
BENCH="$CARGO_TARGET_DIR/release/examples/model_bench"
PROMPTS="$(mktemp)"
trap 'rm -f "$PROMPTS"' EXIT
"$BENCH" --model "$MODEL" --dump-prompts "$PROMPTS" "${args[@]}"

echo "== guardgate (mistral.rs 0.8.1, F32 activations, Q8_0 weights), $THREADS threads =="
RAYON_NUM_THREADS="$THREADS" "$BENCH" --model "$MODEL" --threads "$THREADS" "${args[@]}"

if ! "$VENV/bin/python" -c 'import llama_cpp' >/dev/null 2>&1; then
    echo "== installing llama-cpp-python (compiles llama.cpp: several minutes) =="
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    CMAKE_ARGS="-DGGML_NATIVE=ON" "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        'llama-cpp-python==0.3.36'
fi
echo "== llama.cpp (llama-cpp-python), $THREADS threads =="
"$VENV/bin/python" bench/model/llama_cpp_ref.py --model "$MODEL" --prompts "$PROMPTS" --threads "$THREADS"
