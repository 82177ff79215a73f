#!/usr/bin/env bash
# The in-process model benchmark (docs/BENCHMARKS.md, "In-process model"): guardgate's mistral.rs
# backend and, as the reference, llama.cpp (llama-cpp-python, compiled here from PyPI) on the same
# GGUF file, the same prompts and the same number of threads.
#   bench/model/run.sh [--threads N] [--policy FILE] [--distinct N] [--binary]
#   On CPU it runs guardgate twice (F32 prefill copies of the Q8_0 weights, the default; Q8_0 only),
#   then llama.cpp.
#   GPU host (issue #3): bench/model/run.sh --device cuda:0 --dtype bf16 [--binary]
#   builds with `--features cuda` and skips the llama.cpp reference (a CPU build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
VENV="${GUARDGATE_TOOLS_VENV:-$HOME/.cache/guardgate/tools-venv}"
THREADS=2
GPU=0
FEATURES=()
args=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --device)
            args+=("$1" "$2")
            case "$2" in cuda*) GPU=1; FEATURES=(--features cuda) ;; esac
            shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
# A CUDA build has other features than the CPU one: keep it in its own target dir.
if [ "$GPU" = 1 ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/guardgate/target-cuda}"
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
MODEL="$ROOT/models/SmolLM2-135M-Instruct.Q8_0.gguf"
scripts/patch-deps.sh
scripts/fetch-default-model.sh
cargo build --release --bins --examples "${FEATURES[@]}"
BENCH="$TARGET/release/examples/model_bench"
PROMPTS="$(mktemp)"
trap 'rm -f "$PROMPTS"' EXIT
"$BENCH" --model "$MODEL" --dump-prompts "$PROMPTS" "${args[@]}"

if [ "$GPU" = 1 ]; then
    echo "== guardgate (mistral.rs 0.8.1, Q8_0 weights) on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1) =="
    "$BENCH" --model "$MODEL" "${args[@]}"
    exit 0
fi
# The default (`weights = "auto"`: the small Q8_0 file gets F32 copies for prefill), then the same
# with the quantised weights only, as the baseline the default is measured against.
echo "== guardgate (mistral.rs 0.8.1), Q8_0 weights + F32 copies for prefill (the default), $THREADS threads =="
RAYON_NUM_THREADS="$THREADS" "$BENCH" --model "$MODEL" --threads "$THREADS" --weights auto "${args[@]}"
echo "== guardgate (mistral.rs 0.8.1), Q8_0 weights only, $THREADS threads =="
RAYON_NUM_THREADS="$THREADS" "$BENCH" --model "$MODEL" --threads "$THREADS" --weights quantized "${args[@]}"

if ! "$VENV/bin/python" -c 'import llama_cpp' >/dev/null 2>&1; then
    echo "== installing llama-cpp-python (compiles llama.cpp: several minutes) =="
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    # The ISA level of guardgate's own build (x86-64-v3: AVX2, FMA, F16C, BMI2), not -march=native:
    # the same instructions on both sides, and a native build on a host with AMX crashed in its
    # first multi-token decode inside a VM (SIGSEGV, on a Sapphire Rapids guest).
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        'llama-cpp-python==0.3.36'
fi
echo "== llama.cpp (llama-cpp-python), $THREADS threads =="
"$VENV/bin/python" bench/model/llama_cpp_ref.py --model "$MODEL" --prompts "$PROMPTS" --threads "$THREADS"
