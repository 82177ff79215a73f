#!/usr/bin/env bash
# Prepares third_party/mistralrs-core: the published mistralrs-core 0.8.1 crate with the patches in
# patches/ applied. Cargo.toml's [patch.crates-io] points at that directory, so run this once before
# the first cargo command on a fresh clone (scripts/setup.sh, test.sh and serve.sh all do).
#
# Why a patch: on CPU, mistral.rs 0.8.1 never evicts its prefix cache (every finished sequence keeps
# its KV cache forever; ~50-90 MB per request with the small default model). See docs/MODEL-NOTES.md.
# The crate comes from the local cargo cache when present, else from static.crates.io, and must match
# the sha256 that Cargo.lock pins. Idempotent: a stamp file records which patches were applied.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME=mistralrs-core
VERSION=0.8.1
SHA256=a2b8b9e5c94491d9ceeded3a30291cb6af6ae74810a5776dd55e3bbb8b3429d4
DEST="$ROOT/third_party/$NAME"
PATCHES=("$ROOT"/patches/"$NAME-$VERSION"-*.patch)

log() { printf 'patch-deps: %s\n' "$*"; }

# mistralrs-core's build script asks to be re-run when `.git/HEAD` changes. In a registry crate
# cargo ignores that; in a path dependency a missing file counts as changed, and every build would
# recompile mistral.rs (~10 minutes). A fixed, never-touched HEAD keeps it stable.
pin_git_head() {
    if [ ! -f "$1/.git/HEAD" ]; then
        mkdir -p "$1/.git"
        printf '0000000000000000000000000000000000000000\n' > "$1/.git/HEAD"
    fi
}

stamp_want="$(cat "${PATCHES[@]}" | sha256sum | cut -d' ' -f1) $SHA256"
if [ -f "$DEST/.guardgate-patched" ] && [ "$(cat "$DEST/.guardgate-patched")" = "$stamp_want" ]; then
    pin_git_head "$DEST"
    exit 0
fi

work="$(mktemp -d "$ROOT/third_party.tmp.XXXXXX")"
trap 'rm -rf "$work"' EXIT
crate="$work/$NAME-$VERSION.crate"
cached="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$NAME-$VERSION.crate" 2>/dev/null | head -n1 || true)"
if [ -n "$cached" ]; then
    cp "$cached" "$crate"
else
    log "downloading $NAME $VERSION from static.crates.io"
    curl -sSfL --retry 3 -o "$crate" "https://static.crates.io/crates/$NAME/$NAME-$VERSION.crate"
fi
got="$(sha256sum "$crate" | cut -d' ' -f1)"
if [ "$got" != "$SHA256" ]; then
    log "ERROR: $NAME-$VERSION.crate has sha256 $got, expected $SHA256"
    exit 1
fi
tar -xzf "$crate" -C "$work"
for p in "${PATCHES[@]}"; do
    (cd "$work/$NAME-$VERSION" && patch -p1 --quiet --forward < "$p") || {
        log "ERROR: $(basename "$p") does not apply"
        exit 1
    }
done
printf '%s' "$stamp_want" > "$work/$NAME-$VERSION/.guardgate-patched"
pin_git_head "$work/$NAME-$VERSION"
mkdir -p "$ROOT/third_party"
rm -rf "$DEST.old"
[ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mv "$work/$NAME-$VERSION" "$DEST"
rm -rf "$DEST.old"
log "prepared third_party/$NAME ($VERSION + ${#PATCHES[@]} patch(es))"
