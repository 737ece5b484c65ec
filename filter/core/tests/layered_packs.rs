//! Layered packs through the filter (docs/layers.md): the example set of
//! `examples/policies/layers` (baseline, payments pack assigned by namespace and host, audit-mode
//! trial) loaded from a signed envelope, egress requests decided by every applicable pack, and
//! the receipts that say which pack decided. Each test drives `Stream` over the mock host.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::PathBuf;
use std::rc::Rc;

use base64::Engine as _;
use bundle::keys::{format_verifying_key, key_id};
use bundle::layers::{Assign, Manifest, PackEntry, encode_set, sign_set};
use bundle::verdict::Mode;
use ed25519_dalek::SigningKey;
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use serde_json::{Value, json};
use testkit::fixtures::{BUNDLE_KEY_SEED, RECEIPT_KEY_SEED, key, public_key_line, secret_key_line};

const START_MS: u64 = 1_800_000_000_000;
const PAYMENTS_WORKLOAD: &str = "spiffe://cluster.local/ns/payments/sa/refunder";
const SEARCH_WORKLOAD: &str = "spiffe://cluster.local/ns/search/sa/crawler";
/// The payments team's key (it owns and signs the payments pack).
const TEAM_KEY_SEED: u8 = 9;

fn example(pack: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/policies/layers")
        .join(pack)
        .join("policy.pcl")
}

fn compiled(pack: &str, signer: &SigningKey) -> Vec<u8> {
    let src = std::fs::read_to_string(example(pack)).unwrap();
    let ast = policy::syntax::parse(&src).unwrap();
    bundle::sign(&policy::codegen::compile(&ast).unwrap(), signer).unwrap()
}

struct Pack {
    id: &'static str,
    dir: &'static str,
    mode: Mode,
    assign: Vec<Assign>,
    owner: SigningKey,
    signed_by: SigningKey,
}

/// The example set: baseline (platform key), payments (team key), dlp-trial (audit).
fn example_packs() -> Vec<Pack> {
    let platform = key(BUNDLE_KEY_SEED);
    let team = key(TEAM_KEY_SEED);
    vec![
        Pack {
            id: "baseline",
            dir: "baseline",
            mode: Mode::Enforce,
            assign: vec![],
            owner: platform.clone(),
            signed_by: platform.clone(),
        },
        Pack {
            id: "payments",
            dir: "payments",
            mode: Mode::Enforce,
            assign: vec![
                Assign::Namespace("payments".into()),
                Assign::Host("api.stripe.com".into()),
            ],
            owner: team.clone(),
            signed_by: team,
        },
        Pack {
            id: "dlp-trial",
            dir: "dlp-trial",
            mode: Mode::Audit,
            assign: vec![Assign::Host("*".into())],
            owner: platform.clone(),
            signed_by: platform,
        },
    ]
}

/// The signed envelope of `packs`, signed by the platform (bundle) key.
fn envelope(packs: &[Pack]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = packs
        .iter()
        .map(|p| compiled(p.dir, &p.signed_by))
        .collect();
    let manifest = Manifest {
        name: "acme-agents".into(),
        version: "2026.12.1".into(),
        packs: packs
            .iter()
            .zip(&bytes)
            .map(|(p, b)| PackEntry {
                id: p.id.into(),
                mode: p.mode,
                assign: p.assign.clone(),
                owner: key_id(&p.owner.verifying_key()),
                owner_key: format_verifying_key(&p.owner.verifying_key()),
                hash: hex::encode(
                    bundle::Bundle::from_bytes(b, &bundle::Trust::AllowUnsigned)
                        .unwrap()
                        .info()
                        .content_hash,
                ),
            })
            .collect(),
    };
    let parts: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let unsigned = encode_set(&serde_json::to_vec(&manifest).unwrap(), &parts).unwrap();
    sign_set(&unsigned, &key(BUNDLE_KEY_SEED)).unwrap()
}

fn config(set: &[u8]) -> Vec<u8> {
    json!({
        "bundle": { "inline_base64": base64::engine::general_purpose::STANDARD.encode(set) },
        "trusted_bundle_keys": [public_key_line(BUNDLE_KEY_SEED)],
        "signing_key": { "inline": secret_key_line(RECEIPT_KEY_SEED) },
        "session": { "key": { "source": "header", "name": "x-agent-run" } },
        "http": { "inspect_bodies": true },
    })
    .to_string()
    .into_bytes()
}

fn plugin(host: &MockHost, packs: &[Pack]) -> Rc<Plugin> {
    let p = Rc::new(Plugin::configure(host, &config(&envelope(packs))));
    assert_eq!(p.error(), None);
    p
}

struct Outcome {
    forwarded: bool,
    status: Option<u16>,
    decision: String,
    rule: String,
    /// The receipt body.
    receipt: Value,
    /// The request headers as they went upstream.
    upstream_headers: Vec<(String, String)>,
}

impl Outcome {
    /// The receipt's layer records, by pack id: (decision, rule, assigned, mode, winner).
    fn layer(&self, id: &str) -> Option<(String, String, String, String, bool)> {
        self.receipt["layers"].as_array()?.iter().find_map(|l| {
            (l["pack"] == id).then(|| {
                (
                    l["decision"].as_str().unwrap().to_owned(),
                    l["rule"].as_str().unwrap().to_owned(),
                    l["assigned"].as_str().unwrap().to_owned(),
                    l["mode"].as_str().unwrap().to_owned(),
                    l["winner"].as_bool().unwrap(),
                )
            })
        })
    }
}

/// One egress request of workload `who` (its mTLS peer certificate).
fn egress(
    host: &MockHost,
    p: &Rc<Plugin>,
    who: &str,
    method: &str,
    authority: &str,
    path: &str,
) -> Outcome {
    host.set_property(&["connection", "uri_san_peer_certificate"], who);
    // One run per workload (a session belongs to one principal).
    let run = format!("run-{}", who.rsplit('/').next().unwrap());
    let body = b"{\"amount\": 100}".to_vec();
    host.new_stream(
        [
            (":method", method),
            (":path", path),
            (":authority", authority),
            (":scheme", "https"),
            ("content-type", "application/json"),
            ("content-length", "15"),
            ("authorization", "Bearer abc"),
            ("x-agent-run", &run),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect(),
    );
    let mut s = Stream::new(Rc::clone(p));
    let mut a = s.on_request_headers(host, false);
    if a == FilterAction::Pause && host.state().local_response.is_none() {
        host.state().request_body = body.clone();
        a = s.on_request_body(host, body.len(), true);
    }
    let st = host.state();
    let fs = |k: &str| {
        st.filter_state
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let receipt: Value =
        serde_json::from_str(&fs("wasm.portcullis.receipt")).unwrap_or(Value::Null);
    Outcome {
        forwarded: a == FilterAction::Continue && st.local_response.is_none(),
        status: st.local_response.as_ref().map(|r| r.status),
        decision: fs("wasm.portcullis.decision"),
        rule: fs("wasm.portcullis.rule"),
        receipt: receipt["body"].clone(),
        upstream_headers: st.request_headers.clone(),
    }
}

#[test]
fn a_team_pack_cannot_loosen_what_the_baseline_denies() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, &example_packs());
    let o = egress(
        &host,
        &p,
        PAYMENTS_WORKLOAD,
        "POST",
        "pastebin.com",
        "/api/api_post.php",
    );
    assert!(!o.forwarded);
    assert_eq!(o.status, Some(403));
    assert_eq!(
        (o.decision.as_str(), o.rule.as_str()),
        ("DENY", "no_paste_sites")
    );
    assert_eq!(
        o.layer("baseline").unwrap(),
        (
            "DENY".into(),
            "no_paste_sites".into(),
            "baseline".into(),
            "enforce".into(),
            true
        )
    );
    assert_eq!(
        o.layer("payments").unwrap(),
        (
            "ALLOW".into(),
            "payments_may_paste".into(),
            "namespace:payments".into(),
            "enforce".into(),
            false
        )
    );
    assert_eq!(o.receipt["bundle"]["pack"], "acme-agents");
}

#[test]
fn assignment_by_identity_and_by_host() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, &example_packs());
    let loaded = host.state().logs.iter().any(|(_, l)| {
        l.contains("loaded layered set `acme-agents` version `2026.12.1`")
            && l.contains("`payments` 2.3.0 (enforce, 3 rules), `dlp-trial` 0.1.0 (audit, 1 rules)")
    });
    assert!(loaded, "{:?}", host.state().logs);
    // A DELETE at Stripe: the payments pack applies by host, whoever sends it.
    let o = egress(
        &host,
        &p,
        SEARCH_WORKLOAD,
        "DELETE",
        "api.stripe.com",
        "/v1/customers/c1",
    );
    assert_eq!(
        (o.decision.as_str(), o.rule.as_str()),
        ("DENY", "no_deletes_at_stripe")
    );
    assert_eq!(o.layer("payments").unwrap().2, "host:api.stripe.com");
    assert!(o.layer("payments").unwrap().4, "the team pack won");
    // A GitHub request of the payments namespace: selected by identity, no objection.
    let o = egress(
        &host,
        &p,
        PAYMENTS_WORKLOAD,
        "GET",
        "api.github.com",
        "/repos/acme/app",
    );
    assert!(o.forwarded);
    assert_eq!(o.layer("payments").unwrap().2, "namespace:payments");
    // The same request of another namespace: the payments pack does not apply.
    let o = egress(
        &host,
        &p,
        SEARCH_WORKLOAD,
        "GET",
        "api.github.com",
        "/repos/acme/app",
    );
    assert!(o.forwarded, "{}", o.rule);
    assert!(o.layer("payments").is_none(), "{}", o.receipt["layers"]);
    assert!(o.layer("baseline").unwrap().4);
}

#[test]
fn an_audit_pack_is_recorded_and_never_blocks() {
    let host = MockHost::new(START_MS);
    let p = plugin(&host, &example_packs());
    let o = egress(
        &host,
        &p,
        SEARCH_WORKLOAD,
        "POST",
        "hooks.slack.com",
        "/services/T0/B0",
    );
    assert!(o.forwarded, "the trial's DENY does not block: {}", o.rule);
    assert_eq!(o.decision, "MODIFY");
    assert_eq!(
        o.layer("dlp-trial").unwrap(),
        (
            "DENY".into(),
            "no_uploads_to_chat".into(),
            "host:*".into(),
            "audit".into(),
            false
        )
    );
    assert_eq!(
        o.receipt["would_be"], "DENY",
        "what enforcing every pack would do"
    );
    // The baseline's rewrite still applies.
    assert!(!o.upstream_headers.iter().any(|(k, _)| k == "authorization"));
    // Enforced, the same pack blocks it.
    let mut packs = example_packs();
    packs[2].mode = Mode::Enforce;
    let host = MockHost::new(START_MS);
    let p = plugin(&host, &packs);
    let o = egress(
        &host,
        &p,
        SEARCH_WORKLOAD,
        "POST",
        "hooks.slack.com",
        "/services/T0/B0",
    );
    assert_eq!(
        (o.decision.as_str(), o.rule.as_str()),
        ("DENY", "no_uploads_to_chat")
    );
}

#[test]
fn a_pack_signed_by_another_than_its_owner_is_refused() {
    let mut packs = example_packs();
    // The payments pack signed with the platform key, while the manifest names the team's.
    packs[1].signed_by = key(BUNDLE_KEY_SEED);
    let host = MockHost::new(START_MS);
    let p = Plugin::configure(&host, &config(&envelope(&packs)));
    let err = p.error().expect("the set is refused").to_string();
    assert!(err.contains("pack `payments`"), "{err}");
    // Fail closed: every request is denied.
    let p = Rc::new(p);
    let o = egress(&host, &p, SEARCH_WORKLOAD, "GET", "api.github.com", "/");
    assert!(!o.forwarded);
}

#[test]
fn a_single_pack_bundle_writes_no_layers() {
    let host = MockHost::new(START_MS);
    let single = compiled("baseline", &key(BUNDLE_KEY_SEED));
    let p = Rc::new(Plugin::configure(&host, &config(&single)));
    assert_eq!(p.error(), None);
    let o = egress(
        &host,
        &p,
        PAYMENTS_WORKLOAD,
        "POST",
        "pastebin.com",
        "/api/api_post.php",
    );
    assert_eq!(o.rule, "no_paste_sites");
    assert!(o.receipt.get("layers").is_none(), "{}", o.receipt);
    assert_eq!(o.receipt["bundle"]["pack"], "acme-baseline");
}
