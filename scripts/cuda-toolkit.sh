#!/usr/bin/env bash
# A CUDA 13.0 toolkit for `cargo build --features cuda` on a machine without one (no GPU needed to
# build): nvcc, headers and libraries come from NVIDIA's PyPI wheels, unpacked into one CUDA_HOME.
#   eval "$(scripts/cuda-toolkit.sh)"   # prints the exports; idempotent
#   cargo build --release --features cuda --bins --examples
#
# Why 13.0 and not the newest: candle loads its kernels as PTX, which the GPU driver compiles; a
# driver only reads PTX up to its own CUDA version (580-series drivers: 13.0).
# What a wheel does not carry is the driver library: the build links `-lcuda` (cudarc's
# dynamic-linking feature), so a stub libcuda.so with the soname of the real one (libcuda.so.1) is
# built from cudarc's own list of driver functions. At run time the real driver is used.
# CUDA_COMPUTE_CAP picks the GPU generation the kernels are compiled for (90: H100/H200).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${GUARDGATE_CUDA_DIR:-$HOME/.cache/guardgate/cuda-13.0}"
CAP="${CUDA_COMPUTE_CAP:-90}"
WHEELS=(
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)
log() { printf 'cuda-toolkit: %s\n' "$*" >&2; }

HOME_DIR="$DEST/nvidia/cu13"
if [ ! -x "$HOME_DIR/bin/nvcc" ] || [ ! -e "$HOME_DIR/lib/libcuda.so" ]; then
    log "downloading ${#WHEELS[@]} wheels from PyPI (~700 MB) into $DEST"
    mkdir -p "$DEST/wheels"
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$DEST/wheels" "${WHEELS[@]}" >&2
    for w in "$DEST"/wheels/*.whl; do
        unzip -q -o "$w" 'nvidia/*' -d "$DEST"
    done
    chmod +x "$HOME_DIR"/bin/* "$HOME_DIR"/nvvm/bin/* 2>/dev/null || true
    # The linker wants unversioned names; the wheels ship only the sonames.
    (
        cd "$HOME_DIR/lib"
        for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done
        ln -sf libcurand.so.10 libcurand.so
    )
    # cudarc is fetched by cargo (which needs third_party/ to resolve); its driver bindings name
    # every function the stub must define.
    (cd "$ROOT" && scripts/patch-deps.sh >&2 && cargo fetch -q >&2)
    bindings="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -n1)"
    mkdir -p "$HOME_DIR/lib/stubs"
    grep -oE '\bfn cu[A-Za-z0-9_]+\(' "$bindings" | sort -u |
        sed -E 's/fn (cu[A-Za-z0-9_]+)\(/int \1(void) { return 999; }/' > "$HOME_DIR/lib/stubs/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$HOME_DIR/lib/stubs/libcuda.so" \
        "$HOME_DIR/lib/stubs/libcuda_stub.c"
    ln -sf stubs/libcuda.so "$HOME_DIR/lib/libcuda.so"
    log "CUDA $("$HOME_DIR/bin/nvcc" --version | grep -o 'release [0-9.]*') ready in $HOME_DIR"
fi
cat <<EOF
export CUDA_HOME="$HOME_DIR"
export CUDA_PATH="$HOME_DIR"
export PATH="$HOME_DIR/bin:\$PATH"
export LIBRARY_PATH="$HOME_DIR/lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="$CAP"
export CARGO_TARGET_DIR="\${CARGO_TARGET_DIR:-$HOME/.cache/guardgate/target-cuda}"
EOF
