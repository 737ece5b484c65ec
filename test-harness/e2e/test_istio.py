"""Istio manifests (istio/) and `policyc render` output: every object validates against the Istio
CRD schema of its kind/version (../shared/schemas/istio, read in place), strictly (an unknown field
is an error, as with `kubectl apply --validate=strict`), and the Envoy configuration each object
implies passes `envoy --mode validate` with the real filter .wasm and a real signed bundle."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import portcullis_e2e as pe

ISTIO = pe.REPO / "istio"
CRDS = pe.REPO.parent / "shared" / "schemas" / "istio" / "customresourcedefinitions.gen.yaml"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
NOT_OBJECTS = {"kustomization.yaml", "meshconfig-access-log.yaml"}


# ---------------------------------------------------------------- CRD schemas


def _strict(node: Any) -> Any:
    """An OpenAPI v3 (Kubernetes structural) schema as a JSON Schema: `nullable` becomes a null
    alternative, and objects with declared properties refuse unknown fields unless the schema
    preserves them (`x-kubernetes-preserve-unknown-fields`)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if k != "nullable"}
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict JSON schema of the whole object, for every served version."""
    schemas: dict[tuple[str, str], dict] = {}
    for crd in yaml.safe_load_all(CRDS.read_text()):
        if not crd:
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            schema.setdefault("properties", {}).update({
                "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                "metadata": {"type": "object", "required": ["name"],
                             "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                                            "labels": {"type": "object"}, "annotations": {"type": "object"}}},
            })
            schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
            schemas[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return schemas


def schema_errors(obj: dict) -> list[str]:
    """Why ``obj`` would be refused by the API server's schema check ([] when it is accepted)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    schema = crd_schemas().get(key)
    if schema is None:
        return [f"no served Istio CRD for apiVersion {key[0]} kind {key[1]}"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def manifest_files() -> list[Path]:
    """Every Kubernetes-object YAML file under istio/."""
    return sorted(p for p in ISTIO.rglob("*.yaml") if p.name not in NOT_OBJECTS)


def objects(path: Path) -> list[dict]:
    """The objects in one multi-document YAML file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(kind: str, path: Path) -> dict:
    """The single object of ``kind`` in ``path``."""
    found = [o for o in objects(path) if o["kind"] == kind]
    assert len(found) == 1, f"{path}: expected one {kind}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(ISTIO)))
def test_manifest_validates_against_its_crd(path: Path) -> None:
    docs = objects(path)
    assert docs, f"{path} holds no object"
    for obj in docs:
        errors = schema_errors(obj)
        assert not errors, f"{path}: {obj['kind']} {obj['metadata']['name']}:\n" + "\n".join(errors)


def test_schema_check_refuses_what_the_api_server_refuses() -> None:
    plugin = one("WasmPlugin", ISTIO / "header-only/wasmplugin.yaml")
    assert schema_errors(plugin) == []
    typo = copy.deepcopy(plugin)
    typo["spec"]["failStrategy"] = "FAIL_CLOSED"  # the Envoy spelling; WasmPlugin says FAIL_CLOSE
    assert any("failStrategy" in e for e in schema_errors(typo))
    unknown = copy.deepcopy(plugin)
    unknown["spec"]["allowOnHeadersStopIteration"] = True  # WasmPlugin cannot set it
    assert any("allowOnHeadersStopIteration" in e for e in schema_errors(unknown))
    bad_hash = copy.deepcopy(plugin)
    bad_hash["spec"]["sha256"] = "sha256:" + "0" * 64
    assert any("sha256" in e for e in schema_errors(bad_hash))
    old = dict(plugin, apiVersion="extensions.istio.io/v1")
    assert schema_errors(old) == ["no served Istio CRD for apiVersion extensions.istio.io/v1 kind WasmPlugin"]


def test_kustomizations_reference_existing_files_and_cover_every_manifest() -> None:
    covered: set[Path] = set()
    for kfile in ISTIO.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        assert k["kind"] == "Kustomization"
        for res in k["resources"]:
            target = (kfile.parent / res).resolve()
            assert target.exists(), f"{kfile}: resource {res} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{kfile}: {res} has no kustomization.yaml"
            else:
                covered.add(target)
    # Each manifest is part of some deployment, except the TrafficExtension, the alternative to the
    # WasmPlugin (applying both would install the filter twice).
    alternatives = {ISTIO / "header-only/trafficextension.yaml"}
    missing = [p for p in manifest_files() if p.name != "kustomization.yaml" and p.resolve() not in covered
               and p not in alternatives]
    assert not missing, f"manifests in no kustomization: {missing}"


# ---------------------------------------------------------------- implied Envoy configuration


def fill(text: str, subst: dict[str, str]) -> str:
    """Replace ``{{name}}`` placeholders."""
    for key, value in subst.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def local_code(wasm_config: dict) -> dict:
    """What istio-agent hands Envoy: the fetched module as a local file instead of the remote URL."""
    cfg = copy.deepcopy(wasm_config)
    cfg["config"]["vm_config"]["code"] = {"local": {"filename": str(pe.WASM)}}
    return cfg


def wasmplugin_filter(plugin: dict) -> dict:
    """The Envoy Wasm HTTP filter configuration Istio generates for a WasmPlugin (or a
    TrafficExtension's `wasm`): name `<namespace>.<name>`, root id = pluginName, pluginConfig as a
    JSON string, failStrategy FAIL_CLOSE -> FAIL_CLOSED, HOST env vars -> host_env_keys, and no
    `allow_on_headers_stop_iteration` (WasmPlugin cannot set it)."""
    spec = plugin["spec"].get("wasm", plugin["spec"])
    meta = plugin["metadata"]
    env = spec.get("vmConfig", {}).get("env", [])
    policy = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}
    return {
        "@type": WASM_TYPE,
        "config": {
            "name": f"{meta['namespace']}.{meta['name']}",
            "root_id": spec["pluginName"],
            "vm_config": {
                "vm_id": f"{meta['namespace']}.{meta['name']}",
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": str(pe.WASM)}},
                "environment_variables": {
                    "host_env_keys": [e["name"] for e in env if e.get("valueFrom") == "HOST"],
                    "key_values": {e["name"]: e.get("value", "") for e in env if e.get("valueFrom") != "HOST"},
                },
            },
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": json.dumps(spec["pluginConfig"], separators=(",", ":"))},
            "failure_policy": policy[spec["failStrategy"]],
        },
    }


def access_log_from_meshconfig(tmp: Path) -> list[dict]:
    """The Envoy file access log Istio builds from the meshConfig `envoyFileAccessLog` provider
    (labels -> json_format), written to a file under ``tmp`` instead of /dev/stdout."""
    mesh = yaml.safe_load((ISTIO / "telemetry/meshconfig-access-log.yaml").read_text())["meshConfig"]
    provider = one_provider(mesh, "portcullis-receipts")
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(tmp / "access.log"),
        "log_format": {"json_format": provider["envoyFileAccessLog"]["logFormat"]["labels"]}}}]


def one_provider(mesh: dict, name: str) -> dict:
    """The extension provider ``name`` of a meshConfig."""
    found = [p for p in mesh["extensionProviders"] if p["name"] == name]
    assert len(found) == 1, f"meshConfig has {len(found)} providers named {name}"
    return found[0]


def bootstrap(http_filters: list[dict], tmp: Path, clusters: list[dict] | None = None) -> dict:
    """A minimal Envoy bootstrap: one loopback listener with ``http_filters`` before the router."""
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                    ".HttpConnectionManager",
           "stat_prefix": "istio_check",
           "access_log": access_log_from_meshconfig(tmp),
           "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
           "http_filters": [*http_filters, {"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}

    def cluster(name: str) -> dict:
        return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]}}

    return {"node": {"id": "istio-check", "cluster": "istio-check"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": [{"name": "egress", "address": {"socket_address": {"address": "127.0.0.1",
                                                                                  "port_value": 0}},
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": [cluster("upstream"), *[cluster(c) for c in clusters or []]]}}


def envoy_validate(config: dict, tmp: Path, name: str) -> str:
    """Run `envoy --mode validate` on ``config``; returns Envoy's output, fails the test if refused."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.run([pe.envoy_binary(), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "OK" in out, f"envoy refused {name}:\n{out[-4000:]}"
    return out


def subst_for(keys: pe.Keys, bundle: Path) -> dict[str, str]:
    """Placeholder values: the bundle as base64 and the key that signed it."""
    return {"bundle": base64.b64encode(bundle.read_bytes()).decode(),
            "bundle_pub": keys.path("bundle", "pub").read_text().strip()}


def envoyfilter_patches(ef: dict) -> tuple[dict, dict]:
    """The EXTENSION_CONFIG and HTTP_FILTER patch values of a Portcullis EnvoyFilter; its third
    patch raises the listener buffer limit above the filter's default body limit (4 MiB)."""
    by_kind = {p["applyTo"]: p for p in ef["spec"]["configPatches"]}
    assert sorted(p["applyTo"] for p in ef["spec"]["configPatches"]) == ["EXTENSION_CONFIG", "HTTP_FILTER",
                                                                          "LISTENER"]
    listener = by_kind["LISTENER"]
    assert listener["match"]["context"] == by_kind["HTTP_FILTER"]["match"]["context"]
    assert listener["patch"] == {"operation": "MERGE", "value": {"per_connection_buffer_limit_bytes": 8 << 20}}
    return by_kind["EXTENSION_CONFIG"]["patch"]["value"], by_kind["HTTP_FILTER"]["patch"]


def check_envoyfilter_in_envoy(ef: dict, keys: pe.Keys, tmp: Path, name: str) -> None:
    """The EnvoyFilter's two patches, as Envoy receives them, pass `envoy --mode validate`:
    the `config_discovery` filter (reading the ECDS resource from a file instead of ADS) in a
    running Envoy that loads the resource and the bundle, the resource as an inline filter
    configuration, and the remote code reference exactly as written."""
    ext, http = envoyfilter_patches(ef)
    wasm = ext["typed_config"]
    cfg = wasm["config"]
    assert wasm["@type"] == WASM_TYPE
    assert cfg["allow_on_headers_stop_iteration"] is True
    assert cfg["failure_policy"] == "FAIL_CLOSED"
    assert http["operation"] == "INSERT_BEFORE"
    disc = http["value"]["config_discovery"]
    assert http["value"]["name"] == ext["name"]
    assert disc["config_source"]["initial_fetch_timeout"] == "0s"
    assert disc["type_urls"] == [WASM_TYPE]
    json.loads(cfg["configuration"]["value"])  # the plugin configuration is JSON

    ecds = {"version_info": "1", "resources": [
        {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "name": ext["name"],
         "typed_config": local_code(wasm)}]}
    discovered = copy.deepcopy(http["value"])
    assert discovered["config_discovery"]["config_source"].pop("ads") == {}
    # `--mode validate` does not read ECDS sources: a real Envoy loads the resource instead.
    log = ecds_loads_in_envoy(yaml.safe_dump(ecds), discovered, keys, tmp, name)
    assert "portcullis: loaded pack" in log
    inline = {"name": ext["name"], "typed_config": local_code(wasm)}
    envoy_validate(bootstrap([inline], tmp), tmp, f"{name}-inline")
    # The remote code reference exactly as written (istio-agent replaces it before Envoy loads it).
    remote = {"name": ext["name"], "typed_config": wasm}
    cluster = cfg["vm_config"]["code"]["remote"]["http_uri"]["cluster"]
    envoy_validate(bootstrap([remote], tmp, [cluster]), tmp, f"{name}-remote")


def ecds_loads_in_envoy(ecds_text: str, discovered: dict, keys: pe.Keys, tmp: Path, name: str) -> str:
    """Start Envoy with ``discovered`` (a `config_discovery` HTTP filter) reading ``ecds_text`` (a
    file-based ECDS DiscoveryResponse); wait until the resource is loaded (ECDS `config_reload`
    stat, no `config_fail`) and the filter has read its bundle. Returns Envoy's log."""
    ecds_dir = tmp / f"{name}-ecds"
    ecds_dir.mkdir(parents=True, exist_ok=True)
    (ecds_dir / "portcullis.yaml").write_text(ecds_text)
    filt = copy.deepcopy(discovered)
    filt["config_discovery"]["config_source"]["path_config_source"] = {
        "path": str(ecds_dir / "portcullis.yaml"), "watched_directory": {"path": str(ecds_dir)}}
    config = bootstrap([filt], tmp)
    admin = pe.free_port()
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = pe.free_port()
    path = tmp / f"{name}-run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = pe.Proc(f"envoy-{name}", [pe.envoy_binary(), "-c", str(path), "--concurrency", "1",
                                     "--disable-hot-restart", "--log-level", "warning",
                                     "--component-log-level", "wasm:info"],
                   tmp / f"envoy-{name}.log", {"PORTCULLIS_SIGNING_KEY": keys.secret_line("receipt")})
    prefix = f"extension_config_discovery.http_filter.{filt['name']}."

    def stats() -> dict[str, int]:
        status, body = pe.http_get(f"http://127.0.0.1:{admin}/stats?filter=^extension_config_discovery")
        if status != 200:
            return {}
        return {k.strip(): int(v) for k, _, v in (line.partition(":") for line in body.decode().splitlines())
                if k.startswith(prefix) and v.strip().isdigit()}

    try:
        pe.wait_until("ECDS resource loaded", lambda: stats().get(prefix + "config_reload", 0) >= 1
                      and "portcullis: loaded pack" in proc.tail(200), proc)
        assert stats().get(prefix + "config_fail", 0) == 0, proc.tail()
        return proc.log.read_text(errors="replace")
    finally:
        proc.stop()


def test_envoyfilter_ecds_pair_loads_in_envoy(keys: pe.Keys, demo_bundle: Path, tmp_path: Path) -> None:
    path = ISTIO / "body-inspection/envoyfilter-ecds.yaml"
    ef = yaml.safe_load(fill(path.read_text(), subst_for(keys, demo_bundle)))
    assert schema_errors(ef) == []
    check_envoyfilter_in_envoy(ef, keys, tmp_path, "envoyfilter")


@pytest.mark.parametrize("rel", ["header-only/wasmplugin.yaml", "header-only/trafficextension.yaml"])
def test_header_only_plugin_loads_in_envoy(rel: str, keys: pe.Keys, demo_bundle: Path, tmp_path: Path) -> None:
    doc = objects(ISTIO / rel)[0]
    spec = doc["spec"].get("wasm", doc["spec"])
    # Header-only: the filter must never pause at request headers (no MCP, no HTTP bodies).
    assert spec["pluginConfig"]["mcp"]["paths"] == []
    assert spec["pluginConfig"]["http"]["inspect_bodies"] is False
    assert spec["failStrategy"] == "FAIL_CLOSE"
    filled = yaml.safe_load(fill(yaml.safe_dump(doc), subst_for(keys, demo_bundle)))
    envoy_validate(bootstrap([{"name": "portcullis", "typed_config": wasmplugin_filter(filled)}], tmp_path),
                   tmp_path, "wasmplugin")


def test_envoy_validate_refuses_a_broken_filter_config(tmp_path: Path) -> None:
    ef = yaml.safe_load((ISTIO / "body-inspection/envoyfilter-ecds.yaml").read_text())
    ext, _ = envoyfilter_patches(ef)
    broken = local_code(ext["typed_config"])
    broken["config"]["failure_policy"] = "FAIL_SHUT"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(bootstrap([{"name": "portcullis", "typed_config": broken}], tmp_path)))
    proc = subprocess.run([pe.envoy_binary(), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0


def test_access_log_provider_carries_the_receipt() -> None:
    mesh = yaml.safe_load((ISTIO / "telemetry/meshconfig-access-log.yaml").read_text())["meshConfig"]
    labels = one_provider(mesh, "portcullis-receipts")["envoyFileAccessLog"]["logFormat"]["labels"]
    assert labels["receipt"] == "%FILTER_STATE(wasm.portcullis.receipt:PLAIN)%"
    assert labels["decision"] == "%FILTER_STATE(wasm.portcullis.decision:PLAIN)%"
    tel = one("Telemetry", ISTIO / "telemetry/telemetry.yaml")
    assert [p["name"] for p in tel["spec"]["accessLogging"][0]["providers"]] == ["portcullis-receipts"]
    assert mesh["outboundTrafficPolicy"]["mode"] == "REGISTRY_ONLY"


# ---------------------------------------------------------------- scripts/package-wasm


def run_package(out: Path, wasm: Path = pe.WASM) -> subprocess.CompletedProcess[str]:
    """scripts/package-wasm on an existing module (no build)."""
    return subprocess.run([pe.PYTHON, str(pe.REPO / "scripts/package-wasm"), "--wasm", str(wasm), "--out", str(out),
                           "--tag", "1.2.3"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def blob(layout: Path, desc: dict) -> bytes:
    """The blob a descriptor names; its digest and size must match its content."""
    algo, _, hexd = desc["digest"].partition(":")
    assert algo == "sha256"
    data = (layout / "blobs/sha256" / hexd).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexd, f"blob {hexd} content does not match its digest"
    assert len(data) == desc["size"], f"blob {hexd}: size {len(data)} != descriptor {desc['size']}"
    return data


def test_package_wasm_writes_a_consistent_oci_layout(artifacts: None, tmp_path: Path) -> None:
    proc = run_package(tmp_path / "pkg")
    assert proc.returncode == 0, proc.stderr
    pkg = tmp_path / "pkg"
    module = pe.WASM.read_bytes()
    assert (pkg / "portcullis.wasm").read_bytes() == module
    assert (pkg / "portcullis.wasm.sha256").read_text() == f"{hashlib.sha256(module).hexdigest()}  portcullis.wasm\n"
    layout = pkg / "oci"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "1.2.3"
    manifest = json.loads(blob(layout, entry))
    assert (pkg / "portcullis.oci.digest").read_text().strip() == entry["digest"].removeprefix("sha256:")
    assert manifest["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json"
    json.loads(blob(layout, manifest["config"]))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.module.wasm.content.layer.v1+wasm"
    assert blob(layout, layer) == module
    # Nothing in the layout that no descriptor names.
    named = {entry["digest"], manifest["config"]["digest"], layer["digest"]}
    assert {f"sha256:{p.name}" for p in (layout / "blobs/sha256").iterdir()} == named
    # The tar holds exactly the layout, and is reproducible.
    with tarfile.open(pkg / "portcullis-oci.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    on_disk = {str(p.relative_to(layout)): p.read_bytes() for p in layout.rglob("*") if p.is_file()}
    assert members == on_disk
    first = (pkg / "portcullis-oci.tar").read_bytes()
    assert run_package(tmp_path / "pkg").returncode == 0
    assert (pkg / "portcullis-oci.tar").read_bytes() == first


def test_package_wasm_refuses_a_file_that_is_not_wasm(tmp_path: Path) -> None:
    fake = tmp_path / "fake.wasm"
    fake.write_bytes(b"#!/bin/sh\necho not wasm\n")
    proc = run_package(tmp_path / "pkg", fake)
    assert proc.returncode == 1
    assert "not a WebAssembly module" in proc.stderr
    assert not (tmp_path / "pkg" / "oci").exists()


# ---------------------------------------------------------------- policyc render


def render_cli(bundle: Path, target: str, keys: pe.Keys, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`policyc render BUNDLE --target TARGET --trusted-key bundle.pub EXTRA...`."""
    return pe.policyc("render", str(bundle), "--target", target, "--trusted-key", str(keys.path("bundle", "pub")),
                      *extra, check=check)


def plugin_config_file(folder: str, keys: pe.Keys, tmp: Path, patch: object | None = None) -> Path:
    """``envoy-configs/<folder>/plugin-config.json`` without the keys render sets, as a file."""
    subst = pe.render.substitutions(None, str(keys.path("bundle", "pub")), str(keys.path("approver", "pub")))
    cfg = json.loads(pe.render.plugin_config(folder, {**subst, "bundle": "x"}, patch))
    del cfg["bundle"], cfg["trusted_bundle_keys"]
    path = tmp / f"{folder}-plugin-config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_rendered_envoyfilter_validates_and_loads(keys: pe.Keys, demo_bundle: Path, tmp_path: Path) -> None:
    sha = "ab" * 32
    out = render_cli(demo_bundle, "istio-envoyfilter", keys, "--wasm",
                     "https://artifacts.example.com/portcullis.wasm", "--wasm-sha256", sha,
                     "--plugin-config", str(plugin_config_file("mcp-gateway", keys, tmp_path))).stdout
    [ef] = [d for d in yaml.safe_load_all(out) if d]
    assert schema_errors(ef) == []
    ext, _ = envoyfilter_patches(ef)
    assert ext["typed_config"]["config"]["vm_config"]["code"]["remote"]["sha256"] == sha
    plugin = json.loads(ext["typed_config"]["config"]["configuration"]["value"])
    assert base64.b64decode(plugin["bundle"]["inline_base64"]) == demo_bundle.read_bytes()
    check_envoyfilter_in_envoy(ef, keys, tmp_path, "rendered-envoyfilter")


def test_rendered_wasmplugin_validates_and_loads(keys: pe.Keys, egress_bundle: Path, tmp_path: Path) -> None:
    cfg = plugin_config_file("egress-proxy", keys, tmp_path, {"mcp": {"paths": []}, "http": {"inspect_bodies": False}})
    proc = render_cli(egress_bundle, "istio-wasmplugin", keys, "--wasm",
                      "oci://registry.example.com/portcullis/filter:0.1.0", "--plugin-config", str(cfg),
                      "--namespace", "agents", "--selector", "app=agent-egress")
    assert "note:" not in proc.stderr, "header-only config: no warning"
    [plugin] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert schema_errors(plugin) == []
    assert plugin["metadata"]["namespace"] == "agents"
    assert plugin["spec"]["selector"]["matchLabels"] == {"app": "agent-egress"}
    envoy_validate(bootstrap([{"name": "portcullis", "typed_config": wasmplugin_filter(plugin)}], tmp_path),
                   tmp_path, "rendered-wasmplugin")


def test_rendered_bundle_server_reference_validates(keys: pe.Keys, demo_bundle: Path) -> None:
    sha = hashlib.sha256(demo_bundle.read_bytes()).hexdigest()
    for target in ("istio-envoyfilter", "istio-wasmplugin"):
        proc = render_cli(demo_bundle, target, keys, "--wasm", "oci://r.example.com/p:1",
                          "--bundle-url", "https://bundles.example.com/p/demo.bundle", "--sha256", sha)
        [obj] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert schema_errors(obj) == [], target
        assert "inline_base64" not in proc.stdout


def test_rendered_ecds_switches_a_running_envoy(stack: pe.Stack, keys: pe.Keys, tmp_path: Path) -> None:
    """CI flow for plain Envoy: `policyc render --target ecds` written over the watched ECDS file
    (atomic rename) changes enforcement; a bundle signed by an untrusted key is not rendered."""
    from conftest import compile_or_fail, reload_policy
    from raw import RawMcp

    v1 = compile_or_fail(reload_policy(tmp_path, 1, "allow"), tmp_path / "v1.bundle", keys)
    v2 = compile_or_fail(reload_policy(tmp_path, 2, "deny"), tmp_path / "v2.bundle", keys)
    stack.workbench(json_response=True)
    stack.envoy("hot-reload", keys, v1)
    cfg = plugin_config_file("hot-reload", keys, tmp_path)

    def run_tests_rule(mcp: RawMcp) -> str | None:
        r = mcp.call("run_tests", {})
        assert r.status == 200
        m = r.message if isinstance(r.message, dict) else {}
        return ((m.get("error") or {}).get("data") or {}).get("rule") if "error" in m else None

    with RawMcp(stack.mcp_url, intent=None) as mcp:
        assert mcp.initialize().status == 200
        assert run_tests_rule(mcp) is None  # v1 allows
        stranger = tmp_path / "stranger.bundle"
        pe.policyc("build", str(reload_policy(tmp_path, 3, "allow")), "-o", str(stranger), "--sign",
                   str(keys.dir / "stranger.key"))
        refused = render_cli(stranger, "ecds", keys, "--wasm", str(pe.WASM), "--plugin-config", str(cfg),
                             check=False)
        assert refused.returncode == 1 and refused.stdout == ""
        rendered = render_cli(v2, "ecds", keys, "--wasm", str(pe.WASM), "--plugin-config", str(cfg)).stdout
        pe.render.write_atomic(stack.files["ecds"], rendered)
        rules: list[str | None] = []
        pe.wait_until("v2 enforced", lambda: rules.append(run_tests_rule(mcp)) or rules[-1] == "tests_v2",
                      None, 20)
        assert run_tests_rule(mcp) == "tests_v2"


def test_header_only_plugin_answers_bodies_without_pausing(keys: pe.Keys, egress_bundle: Path, tmp_path: Path) -> None:
    """The WasmPlugin's Envoy filter has no `allow_on_headers_stop_iteration`: with the header-only
    plugin configuration a POST with a body (to an MCP-looking path, too) is decided at the headers
    and answered, never left hanging; an unknown host is still denied."""
    import urllib.error
    import urllib.request

    doc = one("WasmPlugin", ISTIO / "header-only/wasmplugin.yaml")
    filled = yaml.safe_load(fill(yaml.safe_dump(doc), subst_for(keys, egress_bundle)))
    cfg = bootstrap([{"name": "portcullis", "typed_config": wasmplugin_filter(filled)}], tmp_path)
    assert "allow_on_headers_stop_iteration" not in json.dumps(cfg)
    admin, listen = pe.free_port(), pe.free_port()
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen
    path = tmp_path / "header-only.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = pe.Proc("envoy-header-only", [pe.envoy_binary(), "-c", str(path), "--concurrency", "1",
                                         "--disable-hot-restart", "--log-level", "warning"],
                   tmp_path / "envoy-header-only.log", {"PORTCULLIS_SIGNING_KEY": keys.secret_line("receipt")})

    def post(host: str, target: str) -> tuple[int, dict[str, str]]:
        req = urllib.request.Request(f"http://127.0.0.1:{listen}{target}", method="POST",
                                     data=b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}',
                                     headers={"host": host, "content-type": "application/json",
                                              "x-agent-run": "run-1"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers)

    try:
        pe.wait_until("envoy /ready", lambda: pe.http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, proc)
        # Allowed by the egress policy: forwarded (the test upstream is closed, so Envoy answers 503).
        status, headers = post("api.github.com", "/mcp")
        assert status == 503 and headers.get("x-portcullis-decision") in ("ALLOW", "MODIFY"), (status, headers)
        # Not on the allowlist: denied by the filter.
        status, _ = post("evil.example", "/upload")
        assert status == 403
    finally:
        proc.stop()


def test_the_etcd_cluster_patch_is_a_cluster_envoy_accepts(tmp_path: Path) -> None:
    """istio/state-etcd's CLUSTER patch, as the gateway's Envoy would get it (its certificate files
    replaced by real ones here): `envoy --mode validate` accepts it, and it speaks HTTP/2 (etcd's
    gRPC) with a health check, as docs/state.md asks."""
    from test_identity import Pki  # noqa: PLC0415 - the certificates of the identity tests

    pki = Pki.create(tmp_path / "pki")
    [patch] = one("EnvoyFilter", ISTIO / "state-etcd/envoyfilter-etcd-cluster.yaml")["spec"]["configPatches"]
    assert patch["applyTo"] == "CLUSTER"
    cluster = copy.deepcopy(patch["patch"]["value"])
    assert "http2_protocol_options" in json.dumps(cluster) and cluster["health_checks"][0]["grpc_health_check"] == {}
    text = json.dumps(cluster)
    for name, path in [("tls.crt", pki.server_cert), ("tls.key", pki.server_key), ("ca.crt", pki.ca_cert)]:
        text = text.replace(f"/etc/portcullis-etcd/{name}", str(path))
    bootstrap = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
                 "static_resources": {"clusters": [json.loads(text)]}}
    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    proc = subprocess.run([pe.envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
