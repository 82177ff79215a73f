"""Fixtures for the SDK compatibility suite.

One mock upstream (`examples/mock_upstream.rs`) and one guardgate process are started per test
session on free loopback ports, with a throw-away config and policy directory. Each test then
talks to the gateway with the official OpenAI / Anthropic Python SDKs and inspects what reached
the mock through its `GET /__mock/requests` endpoint.

Binaries come from the environment (scripts/test.sh sets both after `cargo build --bins --examples`):
  GUARDGATE_BIN       path to the built `guardgate` binary
  MOCK_UPSTREAM_BIN   path to the built `mock_upstream` example
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

STARTUP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_S = 10.0

# Deterministic keyword policies: no model backend is needed to enforce them.
WEAPONS_POLICY = """+++
id = "test/weapons"
title = "Weapons (SDK test)"
version = "1.0.0"
action = "block"

[[codes]]
code = "W1"
title = "Instructions to build weapons"
severity = "high"

[[rules]]
id = "pipe-bomb"
code = "W1"
keywords = ["pipe bomb"]
+++
# Weapons (SDK test policy)

Requests for instructions to build explosive devices violate this policy (W1).
"""

FLAG_POLICY = """+++
id = "test/flag"
title = "Flag for review (SDK test)"
version = "1.0.0"
action = "annotate"

[[codes]]
code = "F1"
title = "Mentions the review phrase"
severity = "medium"

[[rules]]
id = "purple-elephant"
code = "F1"
keywords = ["purple elephant"]
+++
# Flag for review (SDK test policy)

Requests that mention a purple elephant are let through and annotated (F1).
"""

# Redaction with restore, bound on the /redact/... routes only: the model sees placeholders, the
# client its own values.
REDACT_POLICY = """+++
id = "pii/redact"
title = "PII redaction (SDK test)"
version = "1.0.0"
action = "redact"

[redact]
restore = true
+++
# PII redaction (SDK test policy)

E-mail addresses and the other detected kinds are replaced by placeholders upstream.
"""

# Blocks with its own refusal text, in three languages (tests/sdk/test_sdks.py reads them back).
REFUSAL_POLICY = """+++
id = "test/refused"
title = "Zorbles (SDK test)"
version = "1.0.0"
action = "block"

[[codes]]
code = "Z1"
title = "Forbidden zorbles"
severity = "high"

[[rules]]
id = "zorble"
code = "Z1"
keywords = ["forbidden zorble"]

[refusal]
message = "This request was blocked by our safety policy. Please ask in a different way."
language = "en"

[refusal.messages]
de = "Diese Anfrage wurde von unserer Sicherheitsrichtlinie blockiert."
ja = "このリクエストは安全ポリシーによりブロックされました。"
+++
# Zorbles (SDK test policy)

Requests and replies about forbidden zorbles violate this policy (Z1).
"""

# Blocks a word the default profile lets through: bound only by the tenant profile below.
TENANT_POLICY = """+++
id = "tenant/strict"
title = "Tenant's own rules (SDK test)"
version = "1.0.0"
action = "block"

[[codes]]
code = "T1"
title = "Mentions the tenant's banned word"
severity = "high"

[[rules]]
id = "zorble"
code = "T1"
keywords = ["zorble"]
+++
# Tenant's own rules (SDK test policy)

Requests that mention a zorble violate this tenant's policy (T1).
"""

# The API key of a tenant whose requests get the `tenant` profile; the profiles file holds only
# its SHA-256.
TENANT_KEY = "sk-tenant-guardgate-sdk-test-0123456789"

PROFILES_TOML = f"""# Written by tests/sdk/conftest.py
unknown_profile = "default"

[[profile]]
name = "standard"
default = true
policies = [{{ select = "test/*", directions = ["input", "output"] }}]

[[profile]]
name = "tenant"
policies = [{{ select = "test/*", directions = ["input", "output"] }}, {{ select = "tenant/*" }}]

[[match]]
api_key_sha256 = ["{hashlib.sha256(TENANT_KEY.encode()).hexdigest()}"]
profile = "tenant"
"""

# Proxies from the environment must never see loopback test traffic.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _require_bin(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.exit(
            f"{var} is not set: point it at the built binary "
            "(run scripts/test.sh, or `cargo build --bins --examples` and export "
            "GUARDGATE_BIN=$CARGO_TARGET_DIR/release/guardgate "
            "MOCK_UPSTREAM_BIN=$CARGO_TARGET_DIR/release/examples/mock_upstream)",
            returncode=4,
        )
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.exit(f"{var}={value} is not an executable file", returncode=4)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
    """A plain HTTP call that ignores proxy settings; returns (status, body) for any status."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        # SIGINT: pingora's fast shutdown; the mock exits on Ctrl-C too.
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=SHUTDOWN_TIMEOUT_S)


# Servers started here run in their own sessions (so a Ctrl-C in the terminal reaches pytest
# only), which also takes them out of the process group that `timeout` signals: when the suite is
# stopped from outside, stop them here rather than leave them holding their ports.
_LIVE: list[subprocess.Popen] = []


def _stop_all() -> None:
    for p in _LIVE:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    _stop_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, _on_sigterm)


def _spawn(name: str, argv: list[str], log: Path, cwd: Path) -> Proc:
    f = open(log, "wb")
    try:
        p = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RUST_BACKTRACE": "1"},
        )
    finally:
        f.close()
    _LIVE.append(p)
    return Proc(name, p, log)


def _wait_ready(proc: Proc, url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with status {proc.popen.returncode} before it was ready; "
                f"log ({proc.log}):\n{_tail(proc.log)}"
            )
        try:
            status, body = http("GET", url, timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError(
        f"{proc.name} not ready at {url} after {STARTUP_TIMEOUT_S:.0f}s (last: {last}); "
        f"log ({proc.log}):\n{_tail(proc.log)}"
    )


def _config(listen: int, admin: int, mock_url: str, tmp: Path, extra: str = "") -> str:
    q = json.dumps  # TOML basic strings accept JSON string escapes
    routes = [
        ("openai-chat", "/v1/chat/completions", "openai-chat", "openai"),
        ("openai-completions", "/v1/completions", "openai-completions", "openai"),
        ("openai-responses", "/v1/responses", "openai-responses", "openai"),
        ("anthropic-messages", "/v1/messages", "anthropic-messages", "anthropic"),
    ]
    route_toml = "".join(
        f"""
[[routes]]
name = {q(name)}
path = {q(path)}
api = {q(api)}
upstream = {q(up)}
fail_mode = "closed"
classifier_deadline_ms = 2000
[[routes.policies]]
select = "test/*"
directions = ["input", "output"]
[routes.output]
window_chars = 60
overlap_chars = 20
max_hold_ms = 500
"""
        for name, path, api, up in routes
    )
    # The same APIs under /redact, bound to the redact policy only.
    route_toml += "".join(
        f"""
[[routes]]
name = {q("redact-" + name)}
path = {q("/redact" + path)}
api = {q(api)}
upstream = {q(up)}
fail_mode = "closed"
[[routes.policies]]
select = "pii/redact"
"""
        for name, path, api, up in routes
    )
    return f"""# Written by tests/sdk/conftest.py
[server]
listen = "127.0.0.1:{listen}"
threads = 2
grace_period_seconds = 0
graceful_shutdown_timeout_seconds = 1
upgrade_sock = {q(str(tmp / "upgrade.sock"))}
pid_file = {q(str(tmp / "guardgate.pid"))}

[admin]
listen = "127.0.0.1:{admin}"

[policies]
dirs = ["policies"]
watch = false
poll_interval_ms = 0

[audit]
sink = "file"
path = "audit.jsonl"

[logging]
json = false
level = "info"

[[upstreams]]
name = "openai"
base_url = {q(mock_url)}
auth_header = "authorization"
connect_timeout_ms = 2000
read_timeout_ms = 10000

[[upstreams]]
name = "anthropic"
base_url = {q(mock_url)}
auth_header = "x-api-key"
connect_timeout_ms = 2000
read_timeout_ms = 10000
{route_toml}
[unmatched]
action = "passthrough"
upstream = "openai"
{extra}"""


@dataclass
class Stack:
    """The running mock upstream and gateway."""

    tmp: Path
    base_url: str  # the gateway's traffic listener, http://127.0.0.1:PORT
    admin_url: str
    mock_url: str
    procs: list[Proc] = field(default_factory=list)

    def mock_requests(self) -> list[dict[str, Any]]:
        """What the mock upstream received since the last reset (method, path, headers, body)."""
        status, body = http("GET", f"{self.mock_url}/__mock/requests")
        assert status == 200, f"mock /__mock/requests answered {status}"
        return json.loads(body)

    def mock_reset(self) -> None:
        status, _ = http("GET", f"{self.mock_url}/__mock/reset")
        assert status == 200, f"mock /__mock/reset answered {status}"

    def admin_json(self, path: str) -> Any:
        status, body = http("GET", f"{self.admin_url}{path}")
        assert status == 200, f"admin {path} answered {status}: {body[:300]!r}"
        return json.loads(body)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} log ({p.log}) ---\n{_tail(p.log)}" for p in self.procs)

    def stop(self) -> None:
        # Gateway first, so it never sees its upstream vanish mid-request.
        for p in reversed(self.procs):
            p.stop()


_STACK: Stack | None = None


def _start_stack(tmp: Path, extra: str = "") -> Stack:
    guardgate = _require_bin("GUARDGATE_BIN")
    mock_bin = _require_bin("MOCK_UPSTREAM_BIN")
    (tmp / "policies").mkdir(exist_ok=True)
    (tmp / "policies" / "weapons.md").write_text(WEAPONS_POLICY)
    (tmp / "policies" / "flag.md").write_text(FLAG_POLICY)
    (tmp / "policies" / "redact.md").write_text(REDACT_POLICY)
    (tmp / "policies" / "refused.md").write_text(REFUSAL_POLICY)

    procs: list[Proc] = []
    try:
        # A free port can be taken between the probe and the bind: retry with fresh ones.
        for attempt in range(3):
            port = _free_port()
            mock = _spawn("mock_upstream", [str(mock_bin), f"127.0.0.1:{port}"], tmp / f"mock.{attempt}.log", tmp)
            try:
                _wait_ready(mock, f"http://127.0.0.1:{port}/__mock/requests")
                procs.append(mock)
                mock_url = f"http://127.0.0.1:{port}"
                break
            except RuntimeError:
                mock.stop()
                if attempt == 2:
                    raise
        for attempt in range(3):
            listen, admin = _free_port(), _free_port()
            while admin == listen:
                admin = _free_port()
            cfg = tmp / "guardgate.toml"
            cfg.write_text(_config(listen, admin, mock_url, tmp, extra))
            gw = _spawn(
                "guardgate", [str(guardgate), "serve", "--config", str(cfg)], tmp / f"guardgate.{attempt}.log", tmp
            )
            try:
                _wait_ready(gw, f"http://127.0.0.1:{admin}/readyz")
                procs.append(gw)
                return Stack(tmp, f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{admin}", mock_url, procs)
            except RuntimeError:
                gw.stop()
                if attempt == 2:
                    raise
    except BaseException:
        for p in reversed(procs):
            p.stop()
        raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def stack():
    global _STACK
    with tempfile.TemporaryDirectory(prefix="guardgate-sdk-") as d:
        s = _start_stack(Path(d))
        _STACK = s
        try:
            yield s
        finally:
            _STACK = None
            s.stop()


@pytest.fixture(scope="session")
def profiled_stack():
    """A second gateway whose requests are judged under policy profiles (`PROFILES_TOML`)."""
    with tempfile.TemporaryDirectory(prefix="guardgate-sdk-profiles-") as d:
        tmp = Path(d)
        (tmp / "profiles.toml").write_text(PROFILES_TOML)
        (tmp / "policies").mkdir()
        (tmp / "policies" / "tenant.md").write_text(TENANT_POLICY)
        s = _start_stack(tmp, '\n[profiles]\nfile = "profiles.toml"\n')
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(autouse=True)
def _fresh_mock(request):
    """Every test starts with an empty request log at the mock."""
    for name in ("stack", "profiled_stack"):
        if name in request.fixturenames:
            request.getfixturevalue(name).mock_reset()
    yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and _STACK is not None:
        report.sections.append(("guardgate / mock logs (tail)", _STACK.logs()))
    return report
