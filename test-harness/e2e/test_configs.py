"""Every Envoy configuration in envoy-configs/ renders and passes `envoy --mode validate`
(which also loads the real filter .wasm with the rendered plugin configuration)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

import portcullis_e2e as pe

CASES = [("mcp-gateway", "FAIL_CLOSED"), ("egress-proxy", "FAIL_CLOSED"), ("hot-reload", "FAIL_CLOSED"),
         ("fault-behaviour", "FAIL_CLOSED"), ("fault-behaviour", "FAIL_RELOAD")]


@pytest.mark.parametrize(("folder", "failure_policy"), CASES)
def test_config_validates(folder: str, failure_policy: str, keys: pe.Keys, demo_bundle: Path, tmp_path: Path) -> None:
    values = {"LISTEN_PORT": "10000", "ADMIN_PORT": "9901", "UPSTREAM_PORT": "8080", "CONTEXT_PORT": "8081",
              "WASM": str(pe.WASM), "ACCESS_LOG": str(tmp_path / "access.log"), "FAILURE_POLICY": failure_policy}
    subst = pe.render.substitutions(str(demo_bundle), str(keys.path("bundle", "pub")),
                                    str(keys.path("approver", "pub")))
    cfg = pe.render.plugin_config(folder, subst)
    written = pe.render.render(folder, tmp_path, values, cfg)
    doc = yaml.safe_load(written["envoy"].read_text())
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    proc = subprocess.run([pe.envoy_binary(), "--mode", "validate", "-c", str(written["envoy"])],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "OK" in proc.stdout + proc.stderr
    # MCP's GET stream and long tool calls are SSE responses that stay open: a route deadline on
    # the whole response would cut them (504, or a reset stream) however healthy they are.
    routes = _routes_to(doc, "mcp_server")
    assert routes or folder == "egress-proxy"
    for route in routes:
        assert route.get("timeout") == "0s", route
    if folder == "hot-reload":
        ecds = yaml.safe_load(written["ecds"].read_text())
        wasm = ecds["resources"][0]["typed_config"]["config"]
        assert wasm["failure_policy"] == failure_policy
        assert wasm["allow_on_headers_stop_iteration"] is True


def _routes_to(node: object, cluster: str) -> list[dict]:
    """Every route action in a config document that sends to ``cluster``."""
    if isinstance(node, list):
        return [r for item in node for r in _routes_to(item, cluster)]
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("cluster") == cluster else []
    return found + [r for v in node.values() for r in _routes_to(v, cluster)]


def test_render_refuses_missing_values(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        pe.render.render("mcp-gateway", tmp_path, {"LISTEN_PORT": "1"}, "{}")


def test_plugin_config_never_holds_the_signing_key(keys: pe.Keys, demo_bundle: Path, tmp_path: Path) -> None:
    subst = pe.render.substitutions(str(demo_bundle), str(keys.path("bundle", "pub")),
                                    str(keys.path("approver", "pub")))
    written = pe.render.render("mcp-gateway", tmp_path, {
        "LISTEN_PORT": "1", "ADMIN_PORT": "2", "UPSTREAM_PORT": "3", "CONTEXT_PORT": "4", "WASM": "w",
        "ACCESS_LOG": "a"}, pe.render.plugin_config("mcp-gateway", subst))
    secret = keys.secret_line("receipt").split(":", 1)[1]
    assert secret not in written["envoy"].read_text()


def test_render_cli_names_the_missing_variable(tmp_path: Path) -> None:
    proc = subprocess.run([pe.PYTHON, str(pe.REPO / "envoy-configs/render.py"), "egress-proxy", "--out",
                           str(tmp_path), "--var", "LISTEN_PORT=1"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "--var ADMIN_PORT=" in proc.stderr


def test_plugin_patch_merges_and_deletes() -> None:
    cfg = pe.render.plugin_config("mcp-gateway", {"bundle": "QUJD", "bundle_pub": "pub", "approver_pub": "ap"},
                                  {"session": {"key": {"source": "traceparent"}}, "approvers": None})
    doc = __import__("json").loads(cfg)
    assert doc["session"] == {"key": {"source": "traceparent"}}
    assert "approvers" not in doc
    assert doc["bundle"] == {"inline_base64": "QUJD"}
