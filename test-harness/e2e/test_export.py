"""Export (AARM R8): Envoy's OpenTelemetry access logger sends one OTLP log record per request,
with Portcullis' decision, rule, session and receipt as attributes, to a collector — here a tiny
OTLP/gRPC LogsService on loopback in this process. STEP_UP and DEFER, and their resolution
(approved retry, context-service answer), are exported too; and the exported receipts verify
with `policyc receipts verify` like the file access log.

Config: envoy-configs/otel/ (envoy.yaml.tmpl + plugin-config.json), rendered here. Policy: the demo
pack (examples/policies/demo).
"""

from __future__ import annotations

import contextlib
import json
import string
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

import portcullis_e2e as pe
from raw import RawMcp

CONFIG = "otel"


def _value(v) -> object:
    """An OTLP AnyValue as a Python value."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


@dataclass
class Collector(logs_service_pb2_grpc.LogsServiceServicer):
    """Records every exported log record: {"resource", "body", "attributes", "time_unix_nano"}."""

    records: list[dict] = field(default_factory=list)
    log_names: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self.lock:
            for rl in request.resource_logs:
                resource = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    self.log_names.add(sl.scope.name)
                    for lr in sl.log_records:
                        self.records.append({
                            "resource": resource, "body": _value(lr.body),
                            "attributes": {kv.key: _value(kv.value) for kv in lr.attributes},
                            "time_unix_nano": lr.time_unix_nano})
        return logs_service_pb2.ExportLogsServiceResponse()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.records)

    def wait(self, what: str, check, timeout: float = 15.0) -> list[dict]:
        """Wait until ``check(records)`` holds; returns the records."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.snapshot()
            if check(recs):
                return recs
            time.sleep(0.1)
        raise AssertionError(f"{what}: not exported within {timeout}s; got {json.dumps(self.snapshot())[:3000]}")


@contextlib.contextmanager
def otlp_collector() -> Iterator[tuple[Collector, int]]:
    """A Collector serving OTLP/gRPC on a free loopback port: (collector, port); stopped at the end.
    Also used by the evidence report (evidence.py, row R8.1)."""
    c = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(c, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield c, port
    finally:
        server.stop(grace=None)


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    with otlp_collector() as c:
        yield c


def start_otel_gateway(stack: pe.Stack, keys: pe.Keys, bundle: Path, otel_port: int) -> None:
    """Render envoy-configs/otel (every receipt signed: checkpoint_every 1) and start Envoy."""
    out = stack.dir / "envoy-otel"
    out.mkdir(parents=True, exist_ok=True)
    subst = pe.render.substitutions(str(bundle), str(keys.path("bundle", "pub")),
                                    str(keys.path("approver", "pub")))
    cfg = pe.render.plugin_config(CONFIG, subst, {"receipts": {"checkpoint_every": 1}})
    listen, admin = pe.free_port(), pe.free_port()
    values = {"ADMIN_PORT": str(admin), "LISTEN_PORT": str(listen), "ACCESS_LOG": str(out / "access.log"),
              "WASM": str(pe.WASM), "PLUGIN_CONFIG": json.dumps(cfg), "FAILURE_POLICY": "FAIL_CLOSED",
              "OTEL_PORT": str(otel_port), "UPSTREAM_PORT": str(stack.ports["workbench"]),
              "CONTEXT_PORT": str(stack.ports.get("context", pe.free_port()))}
    tmpl = (pe.REPO / "envoy-configs" / CONFIG / "envoy.yaml.tmpl").read_text()
    yaml_path = out / "envoy.yaml"
    yaml_path.write_text(string.Template(tmpl).substitute(values))
    argv = [pe.envoy_binary(), "-c", str(yaml_path), "--concurrency", "1", "--disable-hot-restart",
            "--log-level", "warning", "--file-flush-interval-msec", "100", "--component-log-level", "wasm:info"]
    proc = stack.start("envoy-otel", argv, {"PORTCULLIS_SIGNING_KEY": keys.secret_line("receipt")})
    stack.ports["envoy"], stack.ports["admin"] = listen, admin
    stack.files.update({"access_log": out / "access.log", "envoy_yaml": yaml_path, "envoy_log": proc.log})
    try:
        pe.wait_until("envoy /ready", lambda: pe.http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, proc)
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)


def receipts_in(record: dict) -> list[dict]:
    """The receipts (whole lines) in an exported record's portcullis.receipt attribute."""
    raw = record["attributes"].get("portcullis.receipt")
    if not raw or raw == "-":
        return []
    value = json.loads(raw)
    return value if isinstance(value, list) else [value]


def tool_record(records: list[dict], tool: str, decision: str | None = None) -> list[dict]:
    out = []
    for rec in records:
        for r in receipts_in(rec):
            action = r["body"].get("action") or {}
            if action.get("tool") == tool and (decision is None or rec["attributes"].get("portcullis.decision") == decision):
                out.append(rec)
                break
    return out


def test_decisions_and_receipts_are_exported_over_otlp(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path,
                                                       collector: tuple[Collector, int], tmp_path: Path) -> None:
    col, port = collector
    stack.workbench(json_response=True)
    start_otel_gateway(stack, keys, demo_bundle, port)
    with RawMcp(stack.mcp_url) as mcp:
        assert mcp.initialize().status == 200 and mcp.session_id
        assert mcp.call("read_file", {"path": "/repo/README.md"}).error_code is None
        denied = mcp.call("delete_branch", {"branch": "release"})
        assert denied.error_code == -32040, denied.text
        session = mcp.session_id
    recs = col.wait("read_file and delete_branch records",
                    lambda rs: tool_record(rs, "read_file") and tool_record(rs, "delete_branch"))
    [allowed] = tool_record(recs, "read_file")
    [deny] = tool_record(recs, "delete_branch")
    for rec, decision, rule in ((allowed, "ALLOW", "read_repo"), (deny, "DENY", "no_branch_deletion")):
        a = rec["attributes"]
        assert a["portcullis.decision"] == decision and a["portcullis.rule"] == rule, a
        assert a["portcullis.session"] == session and a["mcp.session.id"] == session
        assert a["mcp.method.name"] == "tools/call" and a["http.request.method"] == "POST"
        [receipt] = receipts_in(rec)
        assert receipt["body"]["decision"] == decision and receipt["body"]["rule"] == rule
        assert receipt["body"]["session"] == session and receipt["sig"], "every receipt signed here"
        assert rec["resource"]["service.name"] == "portcullis-gateway"
        assert rec["body"].startswith(f"portcullis {decision} tools/call")
    assert a["http.response.status_code"] == "200"  # a JSON-RPC error travels in a 200
    # The exported receipts are a receipt log on their own: a SOC verifies them from the OTLP
    # stream without the file access log.
    exported = tmp_path / "otlp-receipts.jsonl"
    exported.write_text("".join(json.dumps({"receipt": r["attributes"]["portcullis.receipt"]}) + "\n"
                                for r in col.snapshot()
                                if r["attributes"].get("portcullis.session") == session))
    out = pe.policyc("receipts", "verify", str(exported), "--pub", str(keys.path("receipt", "pub")), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok: every receipt is intact and attested" in out.stdout


def test_step_up_and_defer_and_their_resolution_are_exported(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path,
                                                             collector: tuple[Collector, int]) -> None:
    col, port = collector
    stack.workbench(json_response=True)
    stack.context_service("allow")
    start_otel_gateway(stack, keys, demo_bundle, port)
    args = {"env": "production", "version": "v2.4.1"}
    with RawMcp(stack.mcp_url) as mcp:
        assert mcp.initialize().status == 200
        first = mcp.call("deploy", args)
        assert first.error_code == -32041, first.text
        req = first.message["error"]["data"]["approval_request"]
        token = pe.policyc("approve", "--digest", req["digest"], "--group", req["group"],
                           "--key", str(keys.path("approver", "key")), "--ttl", "15m").stdout.strip()
        approved = mcp.call("deploy", args, {"x-portcullis-approval": token})
        assert approved.error_code is None, approved.text
        mail = mcp.call("send_email", {"to": "x@outside.example", "subject": "hi", "body": "b"})
        assert mail.error_code is None, mail.text
    recs = col.wait("step-up, approval and defer records",
                    lambda rs: len(tool_record(rs, "deploy")) >= 2 and tool_record(rs, "send_email"))
    # STEP_UP: the request that asked for approval ...
    [step_up] = tool_record(recs, "deploy", "STEP_UP")
    assert step_up["attributes"]["portcullis.rule"] == "production_deploy"
    [r] = receipts_in(step_up)
    assert r["body"]["decision"] == "STEP_UP" and r["body"]["action"]["digest"] == req["digest"]
    # ... and its resolution: the approved retry, naming the token.
    [resolved] = tool_record(recs, "deploy", "ALLOW")
    [r] = receipts_in(resolved)
    assert r["body"]["approval"]["group"] == "release-managers", r["body"]
    assert r["body"]["approval"]["token_id"]
    assert r["body"]["action"]["digest"] == req["digest"]
    # DEFER and its resolution (the context service said allow) in one record: both receipts.
    [deferred] = tool_record(recs, "send_email")
    assert deferred["attributes"]["portcullis.decision"] == "ALLOW", deferred["attributes"]
    events = [(x["body"]["event"], x["body"]["decision"]) for x in receipts_in(deferred)]
    assert events[0] == ("action", "DEFER"), events
    assert events[-1][0] == "defer_resolved" and events[-1][1] == "ALLOW", events
    assert deferred["attributes"]["portcullis.rule"] == "external_email"
