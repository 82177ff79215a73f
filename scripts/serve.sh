#!/usr/bin/env bash
# Sets up a fresh machine and runs the gateway with the default config (config/guardgate.toml):
# OpenAI and Anthropic routes on 127.0.0.1:8080, admin on 127.0.0.1:9090, the general policy pack.
#   scripts/serve.sh                       # default config
#   scripts/serve.sh --config my.toml      # any other config
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
# Also links ./target, the build directory, and prepares third_party/ (patched mistral.rs) and the
# small default model in models/.
GUARDGATE_SKIP_VENV=1 scripts/setup.sh
# The same targets as scripts/test.sh: `--bin guardgate` alone resolves a different feature set for
# shared dependencies and would compile mistral.rs a second time (~10 minutes).
cargo build --release --bins --examples
mkdir -p var
if [ "$#" -eq 0 ]; then
    set -- --config config/guardgate.toml
fi
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/guardgate" serve "$@"
