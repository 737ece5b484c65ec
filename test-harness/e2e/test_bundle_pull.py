"""Bundle server (pull): a real Envoy whose Portcullis filter polls a bundle server on loopback
(`bundle.server`, docs/deploy-istio.md "Bundle server"). A bad push (untrusted signer, corrupt
bytes, server error) does not change enforcement; a good push takes effect on the next poll;
polls are conditional (ETag / If-None-Match); loads are counted in Envoy metrics."""

from __future__ import annotations

import base64
import json
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import portcullis_e2e as pe
from test_istio import bootstrap

POLICY = """pack "pull" {
  version "VERSION"
  mode enforce
  default deny "not allowed"
}

rule reads {
  when kind == http and operation == "GET"
  VERB "version VERSION decides reads"
}
"""
POLL_S = 5  # the smallest poll interval the filter accepts


class BundleServer:
    """Serves one bundle at /pull.bundle with an ETag; answers If-None-Match with 304."""

    def __init__(self) -> None:
        self.body = b""
        self.etag = ""
        self.status = 200
        self.requests: list[dict[str, str | None]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                with outer.lock:
                    outer.requests.append({"path": self.path, "if_none_match": self.headers.get("if-none-match"),
                                           "etag": outer.etag, "status": str(outer.status)})
                    body, etag, status = outer.body, outer.etag, outer.status
                if status != 200:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif etag and self.headers.get("if-none-match") == etag:
                    self.send_response(304)
                    self.send_header("etag", etag)
                    self.end_headers()
                else:
                    self.send_response(200)
                    self.send_header("etag", etag)
                    self.send_header("content-type", "application/octet-stream")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, body: bytes, etag: str, status: int = 200) -> int:
        """Serve ``body``; returns how many requests were seen before it (to wait for a poll)."""
        with self.lock:
            self.body, self.etag, self.status = body, etag, status
            return len(self.requests)

    def served_since(self, n: int) -> list[dict[str, str | None]]:
        with self.lock:
            return self.requests[n:]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Upstream:
    """The protected API: answers 200 to everything."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[BundleServer, Upstream]]:
    b, u = BundleServer(), Upstream()
    yield b, u
    b.stop()
    u.stop()


def compile_version(tmp: Path, version: str, verb: str, keys: pe.Keys, signer: str = "bundle") -> bytes:
    src = tmp / f"pull-{version}-{signer}.pcl"
    src.write_text(POLICY.replace("VERSION", version).replace("VERB", verb))
    out = tmp / f"pull-{version}-{signer}.bundle"
    pe.policyc("build", str(src), "-o", str(out), "--sign", str(keys.dir / f"{signer}.key"))
    return out.read_bytes()


def start_envoy(tmp: Path, keys: pe.Keys, bundle_port: int, upstream_port: int,
                inline: bytes | None) -> tuple[pe.Proc, int, int]:
    """Envoy with the filter pulling from the bundle server; returns (proc, listen port, admin port)."""
    bundle_cfg: dict = {"server": {"cluster": "bundle_server", "authority": "bundles.internal",
                                   "path": "/pull.bundle", "poll_interval_s": POLL_S, "timeout_ms": 2000}}
    if inline is not None:
        bundle_cfg["inline_base64"] = base64.b64encode(inline).decode()
    plugin = {"bundle": bundle_cfg, "trusted_bundle_keys": [keys.path("bundle", "pub").read_text().strip()],
              "signing_key": {"env": "PORTCULLIS_SIGNING_KEY"}, "mcp": {"paths": []}}
    wasm = {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": {
        "name": "portcullis", "root_id": "portcullis",
        "vm_config": {"vm_id": "portcullis", "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(pe.WASM)}},
                      "environment_variables": {"host_env_keys": ["PORTCULLIS_SIGNING_KEY"]}},
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(plugin)},
        "failure_policy": "FAIL_CLOSED", "allow_on_headers_stop_iteration": True}}
    cfg = bootstrap([{"name": "portcullis", "typed_config": wasm}], tmp, ["bundle_server"])
    listen, admin = pe.free_port(), pe.free_port()
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen
    for cluster in cfg["static_resources"]["clusters"]:
        port = {"upstream": upstream_port, "bundle_server": bundle_port}[cluster["name"]]
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
            "port_value"] = port
    path = tmp / "envoy-pull.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = pe.Proc("envoy-pull", [pe.envoy_binary(), "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
                                  "--log-level", "warning", "--component-log-level", "wasm:info"],
                   tmp / "envoy-pull.log", {"PORTCULLIS_SIGNING_KEY": keys.secret_line("receipt")})
    pe.wait_until("envoy /ready", lambda: pe.http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, proc)
    return proc, listen, admin


def status_of_get(listen: int) -> int:
    return pe.http_get(f"http://127.0.0.1:{listen}/repos/x")[0]


def test_bad_push_keeps_enforcement_good_push_takes_effect(
        artifacts: None, keys: pe.Keys, servers: tuple[BundleServer, Upstream], tmp_path: Path) -> None:
    bundle_server, upstream = servers
    v1 = compile_version(tmp_path, "1.0.0", "allow", keys)
    v2 = compile_version(tmp_path, "2.0.0", "deny", keys)
    stranger = compile_version(tmp_path, "3.0.0", "allow", keys, signer="stranger")
    bundle_server.publish(v1, '"v1"')
    proc, listen, admin = start_envoy(tmp_path, keys, bundle_server.port, upstream.port, inline=None)
    try:
        # No inline bundle: denied until the first fetch, then v1 (allow) is enforced.
        pe.wait_until("v1 fetched", lambda: status_of_get(listen) == 200, proc, 30)
        # Envoy runs one root context per worker plus one on the main thread: each polls.
        loads_v1 = pe.wasm_metric(admin, "portcullis_bundle_loads_ok")
        assert loads_v1 >= 1
        # The next poll is conditional and answered 304.
        n = len(bundle_server.served_since(0))
        pe.wait_until("a conditional poll", lambda: len(bundle_server.served_since(n)) >= 1, proc, 3 * POLL_S)
        assert bundle_server.served_since(n)[0]["if_none_match"] == '"v1"'
        pe.wait_until("304 counted", lambda: pe.wasm_metric(admin, "portcullis_bundle_loads_not_modified") >= 1, proc,
                      3 * POLL_S)
        loads_v1 = pe.wasm_metric(admin, "portcullis_bundle_loads_ok")  # every root context has polled by now

        # Bad pushes: a bundle signed by a key nobody trusts, corrupt bytes, a server error.
        for body, etag, status in ((stranger, '"stranger"', 200), (v2[: len(v2) // 2], '"torn"', 200),
                                   (b"", "", 500)):
            seen = bundle_server.publish(body, etag, status)
            pe.wait_until(f"bad push {etag or status} fetched",
                          lambda seen=seen: len(bundle_server.served_since(seen)) >= 1, proc, 3 * POLL_S)
            pe.wait_until("the refusal is handled", lambda: "keeping the bundle in force" in proc.tail(400)
                          and status_of_get(listen) in (200, 403), proc, 5)
            assert status_of_get(listen) == 200, f"enforcement changed after a bad push ({etag or status})"
        pe.wait_until("bad pushes counted", lambda: pe.wasm_metric(admin, "portcullis_bundle_loads_bad_bundle") >= 2
                      and pe.wasm_metric(admin, "portcullis_bundle_loads_fetch_error") >= 1, proc, 3 * POLL_S)
        log = proc.tail(400)
        assert "bundle refused" in log and "status 500" in log
        assert status_of_get(listen) == 200, "enforcement changed after the bad pushes"
        assert pe.wasm_metric(admin, "portcullis_bundle_loads_ok") == loads_v1

        # The good push takes effect on the next poll.
        seen = bundle_server.publish(v2, '"v2"')
        pe.wait_until("v2 fetched", lambda: len(bundle_server.served_since(seen)) >= 1, proc, 3 * POLL_S)
        # Each root context (one per worker, one on the main thread) polls on its own timer, so the
        # worker that serves requests may fetch up to one interval after the first fetch seen.
        pe.wait_until("v2 enforced", lambda: status_of_get(listen) == 403, proc, 3 * POLL_S)
        assert pe.wasm_metric(admin, "portcullis_bundle_loads_ok") > loads_v1
        assert "loaded pack `pull` version `2.0.0`" in proc.tail(400)
        status, body = pe.http_get(f"http://127.0.0.1:{listen}/repos/x")
        assert status == 403 and b"version 2.0.0 decides reads" in body
    finally:
        proc.stop()
