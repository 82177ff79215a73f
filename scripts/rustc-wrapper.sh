#!/bin/sh
# cargo's rustc-workspace-wrapper (.cargo/config.toml): it makes plain `cargo build` work on a fresh
# clone. Cargo.toml's [patch.crates-io] points at third_party/, which scripts/patch-deps.sh makes
# and git does not hold, and cargo resolves dependencies before it builds anything, so no build
# script could make it in time. What cargo does run before resolving is `rustc -vV` through this
# wrapper, whenever its cached answer in the target directory is missing or stale (a fresh clone
# always has a new wrapper, and the cache is keyed on its path and mtime): that call prepares
# third_party/ first. Every other call goes straight to rustc.
if [ "$#" -eq 2 ] && [ "$2" = "-vV" ]; then
    "$(dirname "$0")/patch-deps.sh" >&2 || exit 1
fi
exec "$@"
