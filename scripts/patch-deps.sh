#!/usr/bin/env bash
# Prepares third_party/<crate>: a published crate with the patches in patches/<crate>-<version>-*.patch
# applied.
#
# Why patches (each file says more):
# - mistralrs-core: on CPU, 0.8.1 never evicts its prefix cache (every finished sequence keeps its
#   KV cache forever), and its CPU attention kernel was the largest cost of prefill. See
#   docs/MODEL-NOTES.md. And its EOS list stopped every harmony (gpt-oss) answer at its first
#   token, and a sequence that ended on its first token (a binary verdict) ran one more
#   decoding step before the next request could start. And its GGUF tokenizer split every BPE
#   vocabulary with Llama 3's pattern, so SmolLM2 read tokens it was never trained on.
# - mistralrs-quant: a GGUF model on CPU can keep an F32 copy of its quantised weights for prefill
#   (3x faster there) while decoding stays on the quantised weights (`weights = "f32-prefill"`);
#   the copy is stored in the 16-row panels gemm's microkernel reads, so no prefill packs it again;
#   and decoding steps (up to 8 rows) of Q8_0 weights take a kernel that reads four rows per pass
#   and prefetches the next four (bit-identical to candle's, ~1.5x faster per token); and MXFP4
#   layers (gpt-oss's experts) load on the CPU, where they already had a dequantising forward.
# - pingora-core: its HTTP/1 client writes a request's header and body separately, so they reach the
#   upstream as two segments and wake it up twice (a method that sends both in one write); and a
#   graceful shutdown drops requests still in flight when the grace period ends (a hook that lets
#   the application wait for them first).
# - pingora-proxy: at the end of a graceful upgrade's hand-over, 0.9.1 drops a connection that was
#   accepted but has not sent its request header yet, so that request fails (issue #6).
# Each crate comes from the local cargo cache when present, else from static.crates.io, and must
# match the sha256 crates.io publishes for it (written below: a patched crate's Cargo.lock entry has
# no checksum). Idempotent: a stamp file records which patches were applied. Cargo.toml's
# [patch.crates-io] points at third_party/ (gitignored), so it must exist before cargo resolves
# anything: setup.sh, test.sh and serve.sh run this first, and plain cargo runs it through
# scripts/rustc-wrapper.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 'patch-deps: %s\n' "$*"; }

# cargo runs this too (scripts/rustc-wrapper.sh), so two builds started at once (an editor's
# `cargo check` next to a build) may run it together: one prepares, the other waits and finds it done.
mkdir -p "$ROOT/third_party"
exec 9>"$ROOT/third_party/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

# mistralrs-core's build script asks to be re-run when `.git/HEAD` changes. In a registry crate
# cargo ignores that; in a path dependency a missing file counts as changed, and every build would
# recompile mistral.rs (~10 minutes). A fixed, never-touched HEAD keeps it stable.
pin_git_head() {
    if [ ! -f "$1/.git/HEAD" ]; then
        mkdir -p "$1/.git"
        printf '0000000000000000000000000000000000000000\n' > "$1/.git/HEAD"
    fi
}

# prepare NAME VERSION SHA256 (the crates.io checksum of that release)
prepare() {
    local name="$1" version="$2" sha="$3"
    local dest="$ROOT/third_party/$name"
    local patches=("$ROOT"/patches/"$name-$version"-*.patch)
    local stamp_want
    stamp_want="$(cat "${patches[@]}" | sha256sum | cut -d' ' -f1) $sha"
    if [ -f "$dest/.guardgate-patched" ] && [ "$(cat "$dest/.guardgate-patched")" = "$stamp_want" ]; then
        pin_git_head "$dest"
        return 0
    fi

    local work
    work="$(mktemp -d "$ROOT/third_party.tmp.XXXXXX")"
    local crate="$work/$name-$version.crate"
    local cached
    cached="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -n1 || true)"
    if [ -n "$cached" ]; then
        cp "$cached" "$crate"
    else
        log "downloading $name $version from static.crates.io"
        curl -sSfL --retry 3 -o "$crate" "https://static.crates.io/crates/$name/$name-$version.crate"
    fi
    local got
    got="$(sha256sum "$crate" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
        log "ERROR: $name-$version.crate has sha256 $got, expected $sha"
        rm -rf "$work"
        exit 1
    fi
    tar -xzf "$crate" -C "$work"
    local p
    for p in "${patches[@]}"; do
        (cd "$work/$name-$version" && patch -p1 --quiet --forward < "$p") || {
            log "ERROR: $(basename "$p") does not apply"
            rm -rf "$work"
            exit 1
        }
    done
    printf '%s' "$stamp_want" > "$work/$name-$version/.guardgate-patched"
    pin_git_head "$work/$name-$version"
    mkdir -p "$ROOT/third_party"
    rm -rf "$dest.old"
    [ -e "$dest" ] && mv "$dest" "$dest.old"
    mv "$work/$name-$version" "$dest"
    rm -rf "$dest.old" "$work"
    log "prepared third_party/$name ($version + ${#patches[@]} patch(es))"
}

prepare mistralrs-core 0.8.1 a2b8b9e5c94491d9ceeded3a30291cb6af6ae74810a5776dd55e3bbb8b3429d4
prepare mistralrs-quant 0.8.1 980715493d252e9aaf0779c4c101576d67ef4dd9812bfd77a54987f6f17526f4
prepare pingora-core 0.9.1 a535f47f65fdcb003f9e1df04cd18e614c128dfe9388acce3f211ae38ac14d68
prepare pingora-proxy 0.9.1 8e3d5670490740405ecc8c6f75c3fcbce4d24f7adaffb355ca44550e7918e358
