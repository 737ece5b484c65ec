"""Layered packs through a real Envoy (docs/layers.md): the example set of
examples/policies/layers built the way its README says (the payments team signs its own pack, the
platform builds and signs the set with `policyc build --manifest`), loaded into the egress proxy.
Every applicable pack decides, the strictest wins, and each access log receipt names the packs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import portcullis_e2e as pe

EXAMPLE = pe.REPO / "examples/policies/layers"
PAYMENTS = {"x-agent-run": "run-payments", "x-workload-id": "spiffe://cluster.local/ns/payments/sa/refunder"}
SEARCH = {"x-agent-run": "run-search", "x-workload-id": "spiffe://cluster.local/ns/search/sa/crawler"}


@pytest.fixture(scope="module")
def layered_bundle(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example set, built as its README says; the platform key is the e2e bundle key."""
    work = tmp_path_factory.mktemp("layers") / "layers"
    shutil.copytree(EXAMPLE, work)
    (work / "keys").mkdir()
    pe.policyc("keygen", "--out", str(work / "keys/payments"))
    pe.policyc("build", str(work / "payments/policy.pcl"), "-o", str(work / "payments.bundle"),
               "--sign", str(work / "keys/payments.key"))
    out = work / "acme.bundle"
    built = pe.policyc("build", "--manifest", str(work / "layers.toml"), "-o", str(out),
                       "--sign", str(keys.path("bundle", "key")))
    assert "3 packs" in built.stdout, built.stdout
    tested = pe.policyc("test", "--manifest", str(work / "layers.toml"))
    assert "0 failed" in tested.stdout, tested.stdout
    return out


@pytest.fixture
def proxy(stack: pe.Stack, keys: pe.Keys, layered_bundle: Path) -> Iterator[tuple[pe.Stack, httpx.Client]]:
    stack.egress_upstream()
    # The identity header is trusted here as an inner gateway would set it (docs/filter-config.md).
    stack.envoy("egress-proxy", keys, layered_bundle,
                patch={"identity": {"headers": {"workload": "x-workload-id"}},
                       "approvers": {"payments-leads": [keys.path("approver", "pub").read_text().strip()]}})
    with httpx.Client(proxy=f"http://127.0.0.1:{stack.ports['envoy']}", timeout=10) as client:
        yield stack, client


def layers_of(stack: pe.Stack, n: int) -> dict[str, dict]:
    """The `layers` of the n-th access log line's receipt, by pack id."""
    line = stack.wait_access_log(n)[n - 1]
    [body] = pe.receipts_of(line)
    assert body["bundle"]["pack"] == "acme-agents"
    return {layer["pack"]: layer for layer in body.get("layers", [])}


def test_the_strictest_pack_wins_and_every_receipt_names_the_packs(proxy) -> None:
    stack, client = proxy

    # 1. A payments agent tries a paste site its team pack allows: the baseline's DENY wins.
    r = client.post("http://pastebin.com/api/api_post.php", json={"text": "x"}, headers=PAYMENTS)
    assert r.status_code == 403, r.text
    assert r.json()["rule"] == "no_paste_sites"
    layers = layers_of(stack, 1)
    assert layers["baseline"]["winner"] and layers["baseline"]["decision"] == "DENY"
    assert layers["payments"]["decision"] == "ALLOW" and not layers["payments"]["winner"]
    assert layers["payments"]["assigned"] == "namespace:payments"
    assert layers["payments"]["rule"] == "payments_may_paste"
    assert "pastebin.com" not in [rec["host"] for rec in stack.upstream_requests("egress")]

    # 2. A refund at Stripe: the payments pack (selected by host) asks for approval.
    r = client.post("http://api.stripe.com/v1/refunds", json={"charge": "ch_1"}, headers=SEARCH)
    assert r.status_code == 428 and r.json()["decision"] == "STEP_UP", (r.status_code, r.text)
    assert r.json()["rule"] == "refunds_need_a_lead"
    layers = layers_of(stack, 2)
    assert layers["payments"]["winner"] and layers["payments"]["assigned"] == "host:api.stripe.com"
    assert layers["baseline"]["decision"] == "ALLOW"

    # 3. A chat webhook: the audit-mode trial's DENY is recorded; the baseline's rewrite applies.
    r = client.post("http://hooks.slack.com/services/T0/B0", json={"text": "done"},
                    headers={**SEARCH, "authorization": "Bearer abc"})
    assert r.status_code == 200, r.text
    assert r.headers.get("x-portcullis-decision") == "MODIFY"
    layers = layers_of(stack, 3)
    assert layers["dlp-trial"]["decision"] == "DENY" and layers["dlp-trial"]["mode"] == "audit"
    assert not layers["dlp-trial"]["winner"]
    assert "payments" not in layers, "the payments pack is not assigned to this request"
    [rec] = [rec for rec in stack.upstream_requests("egress") if rec["host"] == "hooks.slack.com"]
    assert pe.header(rec, "authorization") is None


def test_a_set_with_a_pack_signed_by_another_than_its_owner_is_refused(
        keys: pe.Keys, layered_bundle: Path, tmp_path: Path) -> None:
    work = tmp_path / "layers"
    shutil.copytree(layered_bundle.parent, work)
    # The payments pack rebuilt and signed with a key that is not the owner_key in the manifest.
    pe.policyc("keygen", "--out", str(tmp_path / "mallory"))
    pe.policyc("build", str(work / "payments/policy.pcl"), "-o", str(work / "payments.bundle"),
               "--sign", str(tmp_path / "mallory.key"))
    refused = pe.policyc("build", "--manifest", str(work / "layers.toml"), "-o", str(tmp_path / "x.bundle"),
                         "--sign", str(keys.path("bundle", "key")), check=False)
    assert refused.returncode == 1
    assert "refused against its owner_key" in refused.stderr, refused.stderr
