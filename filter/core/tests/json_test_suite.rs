//! The strict JSON parser against JSONTestSuite (`../shared/corpora/JSONTestSuite/test_parsing`):
//! every `y_` case is valid JSON to the filter (never a parse error), every `n_` case refused, and
//! every `i_` case answered as documented in `docs/filter-normalization.md`. Two `y_` cases have
//! duplicate object keys: valid JSON syntax, but refused as an invalid request (-32600) because
//! servers disagree on which duplicate wins.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::PathBuf;

use filter_core::normalize::parse_json;

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpora/JSONTestSuite/test_parsing")
}

fn cases() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(suite_dir())
        .expect("JSONTestSuite directory")
        .map(|e| {
            let p = e.expect("dir entry").path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read case"))
        })
        .collect();
    out.sort();
    out
}

/// Valid JSON syntax with a repeated key: refused with -32600, never read.
const DUPLICATE_KEY_Y_CASES: &[&str] = &[
    "y_object_duplicated_key.json",
    "y_object_duplicated_key_and_value.json",
];

/// The documented answer for every implementation-defined case: `true` = accepted.
const I_CASES: &[(&str, bool)] = &[
    ("i_number_double_huge_neg_exp.json", true),
    ("i_number_huge_exp.json", false),
    ("i_number_neg_int_huge_exp.json", false),
    ("i_number_pos_double_huge_exp.json", false),
    ("i_number_real_neg_overflow.json", false),
    ("i_number_real_pos_overflow.json", false),
    ("i_number_real_underflow.json", true),
    ("i_number_too_big_neg_int.json", true),
    ("i_number_too_big_pos_int.json", true),
    ("i_number_very_big_negative_int.json", true),
    ("i_object_key_lone_2nd_surrogate.json", false),
    ("i_string_1st_surrogate_but_2nd_missing.json", false),
    ("i_string_1st_valid_surrogate_2nd_invalid.json", false),
    ("i_string_UTF-16LE_with_BOM.json", false),
    ("i_string_UTF-8_invalid_sequence.json", false),
    ("i_string_UTF8_surrogate_U+D800.json", false),
    ("i_string_incomplete_surrogate_and_escape_valid.json", false),
    ("i_string_incomplete_surrogate_pair.json", false),
    ("i_string_incomplete_surrogates_escape_valid.json", false),
    ("i_string_invalid_lonely_surrogate.json", false),
    ("i_string_invalid_surrogate.json", false),
    ("i_string_invalid_utf-8.json", false),
    ("i_string_inverted_surrogates_U+1D11E.json", false),
    ("i_string_iso_latin_1.json", false),
    ("i_string_lone_second_surrogate.json", false),
    ("i_string_lone_utf8_continuation_byte.json", false),
    ("i_string_not_in_unicode_range.json", false),
    ("i_string_overlong_sequence_2_bytes.json", false),
    ("i_string_overlong_sequence_6_bytes.json", false),
    ("i_string_overlong_sequence_6_bytes_null.json", false),
    ("i_string_truncated-utf-8.json", false),
    ("i_string_utf16BE_no_BOM.json", false),
    ("i_string_utf16LE_no_BOM.json", false),
    ("i_structure_500_nested_arrays.json", false),
    ("i_structure_UTF-8_BOM_empty_object.json", false),
];

#[test]
fn y_cases_are_accepted_and_n_cases_refused() {
    let all = cases();
    assert!(
        all.len() > 300,
        "expected the full suite, found {}",
        all.len()
    );
    let mut wrong = Vec::new();
    for (name, bytes) in &all {
        let got = parse_json(bytes, 64);
        if name.starts_with("y_") {
            match got {
                Ok(_) if !DUPLICATE_KEY_Y_CASES.contains(&name.as_str()) => {}
                Err(r) if DUPLICATE_KEY_Y_CASES.contains(&name.as_str()) => {
                    assert_eq!(r.jsonrpc_code, Some(-32600), "{name}");
                    assert!(r.reason.contains("duplicate key"), "{name}");
                }
                other => wrong.push(format!("{name}: {other:?}")),
            }
        } else if name.starts_with("n_") {
            match got {
                Ok(v) => wrong.push(format!("{name}: accepted as {v}")),
                Err(r) => {
                    // Syntax problems are parse errors; only duplicate keys are -32600.
                    assert_eq!(r.http_status, 400, "{name}");
                    assert!(
                        matches!(r.jsonrpc_code, Some(-32700) | Some(-32600)),
                        "{name}"
                    );
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn i_cases_answer_as_documented() {
    let all = cases();
    let i_names: Vec<&str> = all
        .iter()
        .filter(|(n, _)| n.starts_with("i_"))
        .map(|(n, _)| n.as_str())
        .collect();
    let documented: Vec<&str> = I_CASES.iter().map(|(n, _)| *n).collect();
    assert_eq!(i_names, documented, "every i_ case must be documented");
    let mut wrong = Vec::new();
    for (name, bytes) in all.iter().filter(|(n, _)| n.starts_with("i_")) {
        let expected = I_CASES.iter().find(|(n, _)| n == name).map(|(_, a)| *a);
        let got = parse_json(bytes, 64);
        if Some(got.is_ok()) != expected {
            wrong.push(format!("{name}: {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn documentation_lists_every_i_case() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/filter-normalization.md"),
    )
    .expect("docs/filter-normalization.md");
    for (name, accepted) in I_CASES {
        let line = doc
            .lines()
            .find(|l| l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("{name} not documented"));
        let word = if *accepted { "accepted" } else { "refused" };
        assert!(
            line.contains(word),
            "{name}: doc line should say {word}: {line}"
        );
    }
}

#[test]
fn huge_integers_beyond_u64_read_as_nearest_f64() {
    let v = parse_json(b"[123123123123123123123123123123]", 64).unwrap();
    assert_eq!(v[0].as_f64(), Some(1.2312312312312312e29));
    let v = parse_json(b"[-123123123123123123123123123123]", 64).unwrap();
    assert_eq!(v[0].as_f64(), Some(-1.2312312312312312e29));
}
