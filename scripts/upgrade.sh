#!/usr/bin/env bash
# Zero-downtime binary/config upgrade of a guardgate running outside Kubernetes (VM, bare metal):
# pingora's graceful upgrade. The new process takes the listening sockets over the config's
# server.upgrade_sock, so no connection is refused while the old one finishes its requests.
#
#   scripts/upgrade.sh OLD_PID [CONFIG]      (CONFIG default: $GUARDGATE_CONFIG or config/guardgate.toml)
#
# Steps: check the new config -> start `guardgate serve -u` (it binds upgrade_sock and waits ~6 s
# for the listeners) -> SIGQUIT to OLD_PID (it sends its listeners, keeps accepting 5 s, then stops
# accepting, waits grace_period_seconds and drains up to graceful_shutdown_timeout_seconds) ->
# wait for the old process to exit -> check the new one's /readyz. Run it from the directory the
# old process was started in when upgrade_sock is a relative path (pingora resolves it against the
# working directory, not the config file).
#
# Environment: GUARDGATE_BIN (default: guardgate on PATH), GUARDGATE_LOG (new process's stderr,
# default: guardgate.upgrade.log), GUARDGATE_STDOUT (new process's stdout, where audit records go
# with `audit.sink = "stdout"`; default: guardgate.upgrade.stdout, appended), UPGRADE_TIMEOUT
# seconds to wait for each of: the new process opening the socket, the old process exiting
# (default 120).
# Clients using HTTP/1 keep-alive may see a connection closed when the old process drops idle
# connections; see README.md ("Deploy" > "Graceful upgrade").
set -euo pipefail

OLD_PID="${1:?usage: scripts/upgrade.sh OLD_PID [CONFIG]}"
CONFIG="${2:-${GUARDGATE_CONFIG:-config/guardgate.toml}}"
BIN="${GUARDGATE_BIN:-guardgate}"
LOG="${GUARDGATE_LOG:-guardgate.upgrade.log}"
# Never /dev/null: with the stdout audit sink (the default) that silently dropped every record.
OUT="${GUARDGATE_STDOUT:-guardgate.upgrade.stdout}"
TIMEOUT="${UPGRADE_TIMEOUT:-120}"

log() { printf 'upgrade: %s\n' "$*"; }
kill -0 "$OLD_PID" 2>/dev/null || { log "no process $OLD_PID"; exit 1; }

read -r SOCK ADMIN < <(python3 - "$CONFIG" <<'PY'
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
s, a = c.get("server", {}), c.get("admin", {})
addr = a.get("listen", "127.0.0.1:9090")
host, port = addr.rsplit(":", 1)
host = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
print(s.get("upgrade_sock", "/tmp/guardgate_upgrade.sock"), f"{host}:{port}")
PY
)

log "checking $CONFIG"
"$BIN" check-config --config "$CONFIG"

rm -f "$SOCK"
log "starting the new process (serve -u), waiting on $SOCK"
nohup "$BIN" serve -u --config "$CONFIG" </dev/null >>"$OUT" 2>>"$LOG" &
NEW_PID=$!
# It loads the config and compiles the policies first, then binds the socket.
for _ in $(seq 1 "$((TIMEOUT * 20))"); do
    [ -S "$SOCK" ] && break
    kill -0 "$NEW_PID" 2>/dev/null || { log "new process exited early: see $LOG"; exit 1; }
    sleep 0.05
done
[ -S "$SOCK" ] || { log "new process never opened $SOCK"; kill "$NEW_PID"; exit 1; }

log "SIGQUIT to $OLD_PID (hands over its listeners, then drains)"
kill -QUIT "$OLD_PID"
for _ in $(seq 1 "$((TIMEOUT * 10))"); do
    kill -0 "$OLD_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$OLD_PID" 2>/dev/null; then
    log "old process $OLD_PID still running after ${TIMEOUT}s"
    exit 1
fi
kill -0 "$NEW_PID" 2>/dev/null || { log "new process died: see $LOG"; exit 1; }
if command -v curl >/dev/null 2>&1; then
    curl -fsS "http://$ADMIN/readyz" >/dev/null || { log "new process not ready"; exit 1; }
fi
log "done: new pid $NEW_PID serving (log: $LOG)"
