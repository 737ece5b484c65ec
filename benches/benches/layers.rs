//! The cost of layered packs per action (docs/layers.md): the example baseline evaluated as a
//! plain bundle, as a one-layer set (what every single-pack bundle now is), and the example's
//! three-pack set on an action all three packs apply to.
//!
//! Run: `cargo bench -p portcullis-benches --bench layers -- --warm-up-time 1 --measurement-time 3`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code: a failed setup aborts the run"
)]

use std::hint::black_box;
use std::path::PathBuf;

use bundle::action::Action;
use bundle::layers::{Assign, Manifest, PackEntry, encode_set};
use bundle::session::SessionState;
use bundle::verdict::Mode;
use bundle::{Bundle, PackSet, Trust};
use criterion::{Criterion, criterion_group, criterion_main};

const NOW: u64 = 1_800_000_000_000;

fn compiled(pack: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies/layers")
        .join(pack)
        .join("policy.pcl");
    let src = std::fs::read_to_string(path).unwrap();
    policy::codegen::compile(&policy::syntax::parse(&src).unwrap()).unwrap()
}

fn set() -> PackSet {
    let owner = bundle::keys::signing_key_from_seed([1; 32]).verifying_key();
    let packs: Vec<(&str, Mode, Vec<Assign>)> = vec![
        ("baseline", Mode::Enforce, vec![]),
        (
            "payments",
            Mode::Enforce,
            vec![Assign::Host("api.stripe.com".into())],
        ),
        ("dlp-trial", Mode::Audit, vec![Assign::Host("*".into())]),
    ];
    let bytes: Vec<Vec<u8>> = packs.iter().map(|(id, ..)| compiled(id)).collect();
    let manifest = Manifest {
        name: "bench".into(),
        version: "1".into(),
        packs: packs
            .iter()
            .zip(&bytes)
            .map(|((id, mode, assign), b)| PackEntry {
                id: (*id).into(),
                mode: *mode,
                assign: assign.clone(),
                owner: bundle::keys::key_id(&owner),
                owner_key: bundle::keys::format_verifying_key(&owner),
                hash: Bundle::from_bytes(b, &Trust::AllowUnsigned)
                    .unwrap()
                    .info()
                    .content_hash
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            })
            .collect(),
    };
    let parts: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let env = encode_set(&serde_json::to_vec(&manifest).unwrap(), &parts).unwrap();
    PackSet::from_bytes(&env, &Trust::AllowUnsigned).unwrap()
}

fn bench(c: &mut Criterion) {
    let action: Action = serde_json::from_str(
        r#"{"kind":"http","operation":"POST","target":{"host":"api.stripe.com","port":443,"path":"/v1/charges","scheme":"https"}}"#,
    )
    .unwrap();
    let state = SessionState::new(NOW);
    let plain = Bundle::from_bytes(&compiled("baseline"), &Trust::AllowUnsigned).unwrap();
    let one = PackSet::from_bytes(&compiled("baseline"), &Trust::AllowUnsigned).unwrap();
    let three = set();
    assert_eq!(three.evaluate_layered(&action, &state, NOW).1.len(), 3);
    let mut g = c.benchmark_group("layers");
    g.bench_function("plain bundle", |b| {
        b.iter(|| black_box(plain.evaluate(black_box(&action), &state, NOW)))
    });
    g.bench_function("one-layer set", |b| {
        b.iter(|| black_box(one.evaluate_layered(black_box(&action), &state, NOW)))
    });
    g.bench_function("three applicable packs", |b| {
        b.iter(|| black_box(three.evaluate_layered(black_box(&action), &state, NOW)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
