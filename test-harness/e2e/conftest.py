"""pytest fixtures for the end-to-end suite: built artifacts, keys, compiled bundles, and a
per-test process stack (Envoy + servers on free loopback ports, always stopped at teardown).

A missing piece (filter .wasm, policyc, a policyc subcommand) makes the tests that need it FAIL
with a message naming it; nothing is skipped silently.
"""

from __future__ import annotations

import string
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import portcullis_e2e as pe  # noqa: E402

POLICIES = Path(__file__).resolve().parent / "policies"


@pytest.fixture(scope="session")
def artifacts() -> None:
    """The release .wasm and policyc exist (scripts/setup builds them)."""
    try:
        pe.require_artifacts()
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def keys(artifacts: None, tmp_path_factory: pytest.TempPathFactory) -> pe.Keys:
    """Bundle, receipt and approver key pairs (policyc keygen), plus a stranger key nobody trusts."""
    try:
        k = pe.Keys.generate(tmp_path_factory.mktemp("keys"))
        pe.policyc("keygen", "--out", str(k.dir / "stranger"))
        return k
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)


def compile_or_fail(source: Path, out: Path, keys: pe.Keys) -> Path:
    """Compile + sign ``source``; a compiler failure fails the test with policyc's output."""
    try:
        return pe.compile_bundle(source, out, keys)
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def demo_bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/policies/demo compiled and signed with the bundle key."""
    return compile_or_fail(pe.DEMO_POLICY, tmp_path_factory.mktemp("bundles") / "demo.bundle", keys)


@pytest.fixture(scope="session")
def egress_bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """policies/egress.pcl compiled and signed."""
    return compile_or_fail(POLICIES / "egress.pcl", tmp_path_factory.mktemp("bundles") / "egress.bundle", keys)


def reload_policy(tmp: Path, version: int, verb: str) -> Path:
    """policies/reload.pcl with its version and run_tests decision filled in."""
    text = string.Template((POLICIES / "reload.pcl").read_text()).substitute(VERSION=version, VERB=verb)
    path = tmp / f"reload-v{version}.pcl"
    path.write_text(text)
    return path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[pe.Stack]:
    """A process stack in this test's tmp dir; every process is stopped at teardown."""
    with pe.stack(tmp_path / "run") as s:
        yield s


def start_gateway(stack: pe.Stack, keys: pe.Keys, bundle: Path) -> pe.Stack:
    """Workbench (SSE responses) behind the mcp-gateway Envoy with ``bundle``; a start that fails
    fails the test with Envoy's output."""
    stack.workbench()
    try:
        stack.envoy("mcp-gateway", keys, bundle)
    except pe.E2EError as e:
        pytest.fail(str(e), pytrace=False)
    return stack


@pytest.fixture
def gateway(stack: pe.Stack, keys: pe.Keys, demo_bundle: Path) -> pe.Stack:
    """Workbench (SSE responses) behind the mcp-gateway Envoy with the demo pack."""
    return start_gateway(stack, keys, demo_bundle)
