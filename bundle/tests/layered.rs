//! Layered bundles: the envelope (signatures per owner, hash pins, limits, hostile bytes, golden)
//! and how the verdicts of the applicable packs combine (strictest wins, modes, conflicts).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "test code: a failed unwrap, panic or index is a failed test; offsets are small"
)]

mod common;

use bundle::action::{Action, AuthMethod};
use bundle::format::Program;
use bundle::keys::{format_verifying_key, key_id, signing_key_from_seed};
use bundle::layers::{Assign, CONFLICT_RULE, Manifest, PackEntry, encode_set, sign_set};
use bundle::session::SessionState;
use bundle::verdict::{Decision, Mode, Modification};
use bundle::{Bundle, Limits, LoadError, PackSet, Trust, sign};
use common::*;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const NOW: u64 = 1_800_000_000_000;

fn platform() -> SigningKey {
    signing_key_from_seed([1; 32])
}
fn team_key() -> SigningKey {
    signing_key_from_seed([2; 32])
}

fn modify(reason: &str, m: Modification) -> bundle::format::DecisionDef {
    let mut d = dec(Decision::Modify, reason);
    d.modifications = vec![m];
    d
}

fn header(name: &str, value: &str) -> Modification {
    Modification::SetHeader {
        name: name.into(),
        value: value.into(),
    }
}

/// The baseline: allows by default, denies `paste`, tags `tagged` calls with `x-team: base`.
fn baseline() -> Program {
    let mut p = prog();
    p.pack = "baseline".into();
    p.default = dec(Decision::Allow, "baseline allows");
    p.rules = vec![
        rule(
            "no_paste",
            when(tool_is("paste")),
            dec(Decision::Deny, "no paste"),
        ),
        rule(
            "tag",
            when(tool_is("tagged")),
            modify("tag", header("x-team", "base")),
        ),
        rule(
            "redact",
            when(tool_is("both")),
            modify("redact", Modification::RedactSecrets),
        ),
    ];
    p
}

/// A team pack: allows `paste` (trying to loosen the baseline), denies `delete`, tags `tagged`
/// calls differently (a conflict) and strips a header on `both` (a merge).
fn team() -> Program {
    let mut p = prog();
    p.pack = "team".into();
    p.version = "2.0.0".into();
    p.default = dec(Decision::Allow, "team allows");
    p.rules = vec![
        rule(
            "paste_ok",
            when(tool_is("paste")),
            dec(Decision::Allow, "team may paste"),
        ),
        rule(
            "no_delete",
            when(tool_is("delete")),
            dec(Decision::Deny, "team never deletes"),
        ),
        rule(
            "tag",
            when(tool_is("tagged")),
            modify("tag", header("x-team", "team")),
        ),
        rule(
            "strip",
            when(tool_is("both")),
            modify(
                "strip",
                Modification::StripHeader {
                    name: "authorization".into(),
                },
            ),
        ),
    ];
    p
}

struct Layer {
    id: &'static str,
    mode: Mode,
    assign: Vec<Assign>,
    program: Program,
    owner: SigningKey,
    /// Sign the pack with this key instead of its owner's (a forgery).
    signed_by: Option<SigningKey>,
}

fn layer(id: &'static str, program: Program, owner: SigningKey, assign: Vec<Assign>) -> Layer {
    Layer {
        id,
        mode: Mode::Enforce,
        assign,
        program,
        owner,
        signed_by: None,
    }
}

fn manifest_and_packs(layers: &[Layer]) -> (Manifest, Vec<Vec<u8>>) {
    let packs: Vec<Vec<u8>> = layers
        .iter()
        .map(|l| {
            sign(
                &bundle::encode(&l.program),
                l.signed_by.as_ref().unwrap_or(&l.owner),
            )
            .unwrap()
        })
        .collect();
    let manifest = Manifest {
        name: "acme".into(),
        version: "7".into(),
        packs: layers
            .iter()
            .zip(&packs)
            .map(|(l, bytes)| PackEntry {
                id: l.id.into(),
                mode: l.mode,
                assign: l.assign.clone(),
                owner: key_id(&l.owner.verifying_key()),
                owner_key: format_verifying_key(&l.owner.verifying_key()),
                hash: hex::encode(
                    Bundle::from_bytes(bytes, &Trust::AllowUnsigned)
                        .unwrap()
                        .info()
                        .content_hash,
                ),
            })
            .collect(),
    };
    (manifest, packs)
}

fn envelope(m: &Manifest, packs: &[Vec<u8>]) -> Vec<u8> {
    let parts: Vec<&[u8]> = packs.iter().map(Vec::as_slice).collect();
    let unsigned = encode_set(&serde_json::to_vec(m).unwrap(), &parts).unwrap();
    sign_set(&unsigned, &platform()).unwrap()
}

fn build(layers: &[Layer]) -> Vec<u8> {
    let (m, packs) = manifest_and_packs(layers);
    envelope(&m, &packs)
}

fn trusted() -> Trust {
    Trust::Keys(vec![platform().verifying_key()])
}

fn set(layers: &[Layer]) -> PackSet {
    PackSet::from_bytes(&build(layers), &trusted()).unwrap()
}

fn agent(mut a: Action, id: &str) -> Action {
    a.identity.agent.id = Some(id.into());
    a.identity.agent.auth = AuthMethod::Jwt;
    a
}

fn standard() -> PackSet {
    set(&[
        layer("baseline", baseline(), platform(), vec![]),
        layer(
            "team",
            team(),
            team_key(),
            vec![Assign::Agent("agent-payments-*".into())],
        ),
    ])
}

fn eval(s: &PackSet, a: &Action) -> (bundle::verdict::Verdict, Vec<bundle::layers::LayerOutcome>) {
    s.evaluate_layered(a, &SessionState::new(NOW), NOW)
}

#[test]
fn the_baseline_deny_beats_a_team_allow() {
    let s = standard();
    let (v, o) = eval(
        &s,
        &agent(call("paste", serde_json::json!({})), "agent-payments-1"),
    );
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, "no_paste");
    assert_eq!(o.len(), 2, "both packs apply");
    assert!(o[0].winner && o[0].decision == Decision::Deny && o[0].assigned == "baseline");
    assert!(!o[1].winner && o[1].decision == Decision::Allow);
    assert_eq!(o[1].assigned, "agent:agent-payments-*");
    assert_eq!(o[1].rule, "paste_ok");
    // Every matched rule of every pack is recorded.
    let matched: Vec<_> = v.matched.iter().map(|m| m.rule.as_str()).collect();
    assert_eq!(matched, ["no_paste", "paste_ok"]);
}

#[test]
fn a_team_deny_wins_where_it_is_assigned_and_nowhere_else() {
    let s = standard();
    let delete = call("delete", serde_json::json!({}));
    let (v, o) = eval(&s, &agent(delete.clone(), "agent-payments-1"));
    assert_eq!(
        (v.decision, v.deciding_rule.as_str()),
        (Decision::Deny, "no_delete")
    );
    assert!(o[1].winner);
    // Another agent: the team pack does not apply.
    let (v, o) = eval(&s, &agent(delete.clone(), "agent-search-1"));
    assert_eq!(v.decision, Decision::Allow);
    assert_eq!(o.len(), 1);
    // An agent id that is only a claim selects nothing.
    let mut claimed = agent(delete, "agent-payments-1");
    claimed.identity.agent.auth = AuthMethod::None;
    assert_eq!(eval(&s, &claimed).0.decision, Decision::Allow);
}

#[test]
fn assignment_by_host_and_server() {
    let s = set(&[
        layer("baseline", baseline(), platform(), vec![]),
        layer(
            "team",
            team(),
            team_key(),
            vec![Assign::Server("payments-*".into())],
        ),
    ]);
    let mut a = call("delete", serde_json::json!({}));
    a.target.server = "payments-mcp".into();
    assert_eq!(eval(&s, &a).0.decision, Decision::Deny);
    a.target.server = "search-mcp".into();
    assert_eq!(eval(&s, &a).0.decision, Decision::Allow);

    let mut p = team();
    p.rules = vec![rule(
        "no_post",
        when(bundle::format::Pred::Cmp(
            bundle::format::FieldRef::Operation,
            bundle::format::CmpOp::Eq,
            bundle::format::Lit::Str("POST".into()),
        )),
        dec(Decision::Deny, "no posts there"),
    )];
    let s = set(&[
        layer("baseline", baseline(), platform(), vec![]),
        layer(
            "team",
            p,
            team_key(),
            vec![Assign::Host("*.stripe.com".into())],
        ),
    ]);
    let (v, o) = eval(&s, &http("POST", "api.stripe.com", 10));
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(o[1].assigned, "host:*.stripe.com");
    assert_eq!(
        eval(&s, &http("POST", "api.github.com", 10)).0.decision,
        Decision::Allow
    );
}

#[test]
fn an_audit_pack_records_its_deny_and_a_warn_pack_tells_the_agent() {
    for mode in [Mode::Audit, Mode::Warn] {
        let mut t = layer("team", team(), team_key(), vec![Assign::Agent("*".into())]);
        t.mode = mode;
        let s = set(&[layer("baseline", baseline(), platform(), vec![]), t]);
        let (v, o) = eval(&s, &agent(call("delete", serde_json::json!({})), "a"));
        assert_eq!(v.decision, Decision::Allow, "{mode:?}");
        assert_eq!(
            v.would_be,
            Decision::Deny,
            "what enforcing the pack would do"
        );
        assert_eq!(o[1].decision, Decision::Deny);
        assert!(o[0].winner && !o[1].winner);
        assert_eq!(v.matched.last().unwrap().mode, mode);
        let warned = v.warnings.iter().any(|w| w.contains("team: no_delete"));
        assert_eq!(warned, mode == Mode::Warn, "{:?}", v.warnings);
    }
}

#[test]
fn rewrites_merge_and_conflicting_ones_fail_closed() {
    let s = standard();
    let (v, _) = eval(
        &s,
        &agent(call("both", serde_json::json!({})), "agent-payments-1"),
    );
    assert_eq!(v.decision, Decision::Modify);
    assert_eq!(
        v.modifications,
        [
            Modification::RedactSecrets,
            Modification::StripHeader {
                name: "authorization".into()
            }
        ]
    );
    let (v, o) = eval(
        &s,
        &agent(call("tagged", serde_json::json!({})), "agent-payments-1"),
    );
    assert_eq!(v.decision, Decision::Deny);
    assert_eq!(v.deciding_rule, CONFLICT_RULE);
    assert!(v.reason.contains("pack `team`"), "{}", v.reason);
    assert!(v.modifications.is_empty());
    assert!(o.iter().all(|o| o.decision == Decision::Modify));
    // Alone, the baseline's rewrite applies.
    let (v, _) = eval(
        &s,
        &agent(call("tagged", serde_json::json!({})), "someone-else"),
    );
    assert_eq!(v.modifications, [header("x-team", "base")]);
}

#[test]
fn a_plain_bundle_is_a_one_layer_set_evaluated_as_before() {
    let b = sign(&bundle::encode(&baseline()), &platform()).unwrap();
    let s = PackSet::from_bytes(&b, &trusted()).unwrap();
    assert!(!s.is_layered());
    let direct = Bundle::from_bytes(&b, &trusted()).unwrap();
    for tool in ["paste", "tagged", "other"] {
        let a = call(tool, serde_json::json!({}));
        let (v, o) = eval(&s, &a);
        assert!(o.is_empty(), "no layer outcomes for a single pack");
        assert_eq!(v, direct.evaluate(&a, &SessionState::new(NOW), NOW));
    }
    assert_eq!(s.set_info().name, "baseline");
}

#[test]
fn each_pack_must_be_signed_by_the_owner_its_entry_names() {
    // The team pack signed by the platform key, while the manifest names the team key: refused.
    let mut forged = layer("team", team(), team_key(), vec![Assign::Agent("*".into())]);
    forged.signed_by = Some(platform());
    let bytes = build(&[layer("baseline", baseline(), platform(), vec![]), forged]);
    match PackSet::from_bytes(&bytes, &trusted()) {
        Err(LoadError::Layer { pack, error }) => {
            assert_eq!(pack, "team");
            assert!(matches!(*error, LoadError::UnknownKey { .. }), "{error}");
        }
        other => panic!("expected the team pack to be refused, got {other:?}"),
    }
    // A stranger's key signing the team pack: refused the same way.
    let mut stranger = layer("team", team(), team_key(), vec![Assign::Agent("*".into())]);
    stranger.signed_by = Some(signing_key_from_seed([3; 32]));
    let bytes = build(&[layer("baseline", baseline(), platform(), vec![]), stranger]);
    assert!(matches!(
        PackSet::from_bytes(&bytes, &trusted()),
        Err(LoadError::Layer { .. })
    ));
}

#[test]
fn the_envelope_must_be_signed_by_a_trusted_key() {
    let layers = [layer("baseline", baseline(), platform(), vec![])];
    let (m, packs) = manifest_and_packs(&layers);
    let parts: Vec<&[u8]> = packs.iter().map(Vec::as_slice).collect();
    let unsigned = encode_set(&serde_json::to_vec(&m).unwrap(), &parts).unwrap();
    assert_eq!(
        PackSet::from_bytes(&unsigned, &trusted()).unwrap_err(),
        LoadError::Unsigned
    );
    // The team's key may sign its pack, not the set.
    let by_team = sign_set(&unsigned, &team_key()).unwrap();
    assert!(matches!(
        PackSet::from_bytes(&by_team, &trusted()).unwrap_err(),
        LoadError::UnknownKey { .. }
    ));
    // Any altered byte of a signed set is refused.
    let good = sign_set(&unsigned, &platform()).unwrap();
    assert!(PackSet::from_bytes(&good, &trusted()).is_ok());
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(PackSet::from_bytes(&bad, &trusted()).is_err());
}

#[test]
fn the_manifest_pins_each_pack_and_is_checked() {
    let layers = [
        layer("baseline", baseline(), platform(), vec![]),
        layer("team", team(), team_key(), vec![Assign::Agent("*".into())]),
    ];
    let (m, packs) = manifest_and_packs(&layers);
    let refused = |m: &Manifest, packs: &[Vec<u8>]| {
        PackSet::from_bytes(&envelope(m, packs), &trusted())
            .unwrap_err()
            .to_string()
    };
    // Another bundle than the one pinned (same owner).
    let mut swapped = packs.clone();
    let mut other = team();
    other.rules.clear();
    swapped[1] = sign(&bundle::encode(&other), &team_key()).unwrap();
    assert!(refused(&m, &swapped).contains("not the one the manifest pins"));
    // The baseline must apply to every action.
    let mut first_assigned = m.clone();
    first_assigned.packs[0].assign = vec![Assign::Host("*".into())];
    assert!(refused(&first_assigned, &packs).contains("baseline"));
    // Ids are short and printable.
    let mut long = m.clone();
    long.packs[1].id = "x".repeat(bundle::limits::MAX_PACK_ID_BYTES + 1);
    assert!(refused(&long, &packs).contains("longer than 128 bytes"));
    let mut control = m.clone();
    control.packs[1].id = "team\nx".into();
    assert!(refused(&control, &packs).contains("not printable"));
    // Ids are unique.
    let mut dup = m.clone();
    dup.packs[1].id = "baseline".into();
    assert!(refused(&dup, &packs).contains("appears twice"));
    // The owner id is the owner key's.
    let mut lying = m.clone();
    lying.packs[1].owner = key_id(&platform().verifying_key());
    assert!(refused(&lying, &packs).contains("not the id of its owner_key"));
    // As many packs as entries.
    assert!(refused(&m, &packs[..1]).contains("lists 2 packs"));
    // Unknown manifest members are refused.
    let mut json = serde_json::to_value(&m).unwrap();
    json["extra"] = serde_json::json!(1);
    let parts: Vec<&[u8]> = packs.iter().map(Vec::as_slice).collect();
    let unsigned = encode_set(&serde_json::to_vec(&json).unwrap(), &parts).unwrap();
    let err = PackSet::from_bytes(&sign_set(&unsigned, &platform()).unwrap(), &trusted())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn every_layer_limit_trips() {
    let layers = [
        layer("baseline", baseline(), platform(), vec![]),
        layer(
            "team",
            team(),
            team_key(),
            vec![Assign::Agent("a".into()), Assign::Host("b".into())],
        ),
    ];
    let bytes = build(&layers);
    let trips = |limits: Limits, what: &str| match PackSet::from_bytes_with_limits(
        &bytes,
        &trusted(),
        &limits,
    ) {
        Err(LoadError::TooLarge { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected TooLarge({what}), got {other:?}"),
    };
    let d = Limits::default;
    trips(
        Limits {
            max_layers: 1,
            ..d()
        },
        "the number of packs in a layered bundle",
    );
    trips(
        Limits {
            max_manifest_bytes: 64,
            ..d()
        },
        "the layered bundle manifest in bytes",
    );
    trips(
        Limits {
            max_assign_rules: 1,
            ..d()
        },
        "the number of assignment rules of a pack",
    );
    trips(
        Limits {
            max_bundle_bytes: bytes.len() - 1,
            ..d()
        },
        "the bundle size in bytes",
    );
}

fn golden_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/bundles")
}

/// The layered envelope's golden (`layers-v1`): written once; it must keep loading and deciding,
/// and the envelope encoder must reproduce it byte for byte from its own manifest and packs
/// (the packs inside are single-pack bundles of their own format version, which may be older
/// than this build's).
#[test]
fn layers_v1_golden_keeps_loading() {
    let dir = golden_dir();
    if std::env::var_os("BLESS").is_some() && !dir.join("layers-v1.bundle").exists() {
        std::fs::write(dir.join("layers-v1.bundle"), build(&standard_layers())).unwrap();
        std::fs::write(
            dir.join("layers-v1.pub"),
            format_verifying_key(&platform().verifying_key()) + "\n",
        )
        .unwrap();
    }
    let golden = std::fs::read(dir.join("layers-v1.bundle"))
        .unwrap_or_else(|e| panic!("golden layers-v1 missing ({e}): run with BLESS=1"));
    let pk = bundle::keys::parse_verifying_key(
        &std::fs::read_to_string(dir.join("layers-v1.pub")).unwrap(),
    )
    .unwrap();
    let s = PackSet::from_bytes(&golden, &Trust::Keys(vec![pk])).unwrap();
    assert_eq!(&golden[..4], b"PCLS");
    assert_eq!(s.layers().len(), 2);
    assert_eq!(s.layers()[1].entry.id, "team");
    let (v, o) = eval(
        &s,
        &agent(call("paste", serde_json::json!({})), "agent-payments-1"),
    );
    assert_eq!((v.decision, o.len()), (Decision::Deny, 2));
    // Re-encode from its own parts: the same bytes.
    let (manifest, packs) = parts(&golden);
    let parsed: Manifest = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(parsed.packs[0].id, "baseline");
    let refs: Vec<&[u8]> = packs.iter().map(Vec::as_slice).collect();
    let unsigned = encode_set(&manifest, &refs).unwrap();
    assert!(
        sign_set(&unsigned, &platform()).unwrap() == golden,
        "the envelope encoder's output changed: bump SET_VERSION and add a golden"
    );
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The body of a signed or unsigned envelope.
fn body(set: &[u8]) -> &[u8] {
    let at = match set[40] {
        0 => 41,
        _ => 42 + usize::from(set[41]) + 64,
    };
    &set[at + 4..at + 4 + u32_at(set, at)]
}

/// The manifest JSON and the packs of an envelope, read by hand (independently of the decoder).
fn parts(set: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let b = body(set);
    let m = u32_at(b, 0);
    let manifest = b[4..4 + m].to_vec();
    let mut at = 4 + m;
    let count = u16::from_le_bytes([b[at], b[at + 1]]);
    at += 2;
    let mut packs = Vec::new();
    for _ in 0..count {
        let n = u32_at(b, at);
        packs.push(b[at + 4..at + 4 + n].to_vec());
        at += 4 + n;
    }
    assert_eq!(at, b.len());
    (manifest, packs)
}

fn standard_layers() -> Vec<Layer> {
    vec![
        layer("baseline", baseline(), platform(), vec![]),
        layer(
            "team",
            team(),
            team_key(),
            vec![Assign::Agent("agent-payments-*".into())],
        ),
    ]
}

/// A body in a correct envelope header and hash (reaches the manifest and pack decoders).
fn wrap(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"PCLS");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&Sha256::digest(body));
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn smoke(bytes: &[u8]) {
    if let Ok(s) = PackSet::from_bytes(bytes, &Trust::AllowUnsigned) {
        let _ = eval(&s, &agent(call("paste", serde_json::json!({})), "x"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        smoke(&bytes);
        smoke(&wrap(&bytes));
    }

    #[test]
    fn mutated_sets_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let signed = build(&standard_layers());
        let mut body = body(&signed).to_vec();
        for (at, v) in edits {
            let i = at.index(body.len());
            body[i] = v;
        }
        if truncate {
            body.truncate(cut.index(body.len()));
        }
        smoke(&wrap(&body));
    }
}
