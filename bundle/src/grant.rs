//! Task grants: an orchestrator's signed statement "principal P runs under intent I until `exp`",
//! optionally bound to one run and narrowed to some tools and hosts.
//!
//! The agent cannot widen what a grant says: the intent comes from the orchestrator's signature,
//! not from a header the agent picks, and the narrowing lists can only take away from what the
//! intent allows. A grant travels in header `x-portcullis-grant`.
//!
//! A grant is a token in the envelope of [`crate::signed_token`] whose payload is the canonical
//! JSON of
//!
//! ```json
//! {"exp":<unix s>,"hosts":["<glob>",...],"iat":<unix s>,"intent":"<name>",
//!  "kid":"ed25519:<16 hex>","nonce":"<32 hex>","principal":"<id>","run":"<id>",
//!  "tools":["<glob>",...],"v":1}
//! ```
//!
//! (`hosts`, `run` and `tools` are optional), signed over `"portcullis/grant/v1\0" || payload`.
//! The `nonce` is the grant id. Format details: `docs/grants.md`.

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use crate::matchers::glob_match;
use crate::signed_token::{self, ClaimError, Kind};

/// Domain separator of grant signatures.
pub const GRANT_DOMAIN: &[u8] = b"portcullis/grant/v1\0";
/// The longest grant [`verify`] reads, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The longest `principal`, in bytes.
pub const MAX_PRINCIPAL_BYTES: usize = 1024;
/// The longest `intent`, `run`, and entry of `tools` or `hosts`, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The most entries in `tools` or in `hosts`.
pub const MAX_LIST_ENTRIES: usize = 64;
/// The header an agent (or its orchestrator) sends a grant in.
pub const GRANT_HEADER: &str = "x-portcullis-grant";

const KIND: Kind<GrantError> = Kind {
    domain: GRANT_DOMAIN,
    max_bytes: MAX_TOKEN_BYTES,
    required: &["exp", "iat", "intent", "nonce", "principal"],
    optional: &["hosts", "run", "tools"],
    malformed: GrantError::Malformed,
    unknown_key: GrantError::UnknownKey,
    bad_signature: GrantError::BadSignature,
};

/// What a grant says, before it is signed ([`mint`]'s input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantClaims {
    /// The intent (a name the policy pack defines) the principal runs under.
    pub intent: String,
    /// The principal the grant is for, exactly as the filter names the verified identity.
    pub principal: String,
    /// A run id: the session the principal's actions under this grant belong to.
    pub run: Option<String>,
    /// Tool name globs the grant narrows the intent to (`None`: no narrowing).
    pub tools: Option<Vec<String>>,
    /// Host globs the grant narrows the intent to (`None`: no narrowing).
    pub hosts: Option<Vec<String>>,
    /// Issue time (unix seconds).
    pub issued_s: u64,
    /// Expiry (unix seconds); the grant is valid while `now < expires_s`.
    pub expires_s: u64,
    /// Fresh randomness: the grant id.
    pub nonce: [u8; 16],
}

impl GrantClaims {
    fn payload_text(&self, key: &SigningKey) -> String {
        let mut m = Map::new();
        m.insert("intent".into(), Value::from(self.intent.as_str()));
        m.insert("principal".into(), Value::from(self.principal.as_str()));
        m.insert("iat".into(), Value::from(self.issued_s));
        m.insert("exp".into(), Value::from(self.expires_s));
        m.insert("nonce".into(), Value::from(hex::encode(self.nonce)));
        if let Some(run) = &self.run {
            m.insert("run".into(), Value::from(run.as_str()));
        }
        if let Some(tools) = &self.tools {
            m.insert("tools".into(), Value::from(tools.clone()));
        }
        if let Some(hosts) = &self.hosts {
            m.insert("hosts".into(), Value::from(hosts.clone()));
        }
        signed_token::payload_text(m, key)
    }

    /// Whether these claims, signed by `key`, make a grant that [`verify`] reads: every text claim
    /// non-empty and within its limit, at most [`MAX_LIST_ENTRIES`] per list, `exp` after `iat`,
    /// and the whole token within [`MAX_TOKEN_BYTES`]. `policyc grant` checks this before minting.
    pub fn check(&self, key: &SigningKey) -> Result<(), ClaimError> {
        signed_token::check_text("intent", &self.intent, MAX_NAME_BYTES)?;
        signed_token::check_text("principal", &self.principal, MAX_PRINCIPAL_BYTES)?;
        if let Some(run) = &self.run {
            signed_token::check_text("run", run, MAX_NAME_BYTES)?;
        }
        if let Some(tools) = &self.tools {
            signed_token::check_list("tools", tools, MAX_LIST_ENTRIES, MAX_NAME_BYTES)?;
        }
        if let Some(hosts) = &self.hosts {
            signed_token::check_list("hosts", hosts, MAX_LIST_ENTRIES, MAX_NAME_BYTES)?;
        }
        if self.expires_s <= self.issued_s {
            return Err(ClaimError::Lifetime);
        }
        signed_token::check_len(&KIND, &self.payload_text(key))
    }
}

/// A verified grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The grant id: lowercase hex of the nonce (what receipts record).
    pub grant_id: String,
    /// The granted intent.
    pub intent: String,
    /// The principal it is for (equal to the one [`verify`] was asked about).
    pub principal: String,
    /// The run id, when the grant names one.
    pub run: Option<String>,
    /// Tool name globs the intent is narrowed to (`None`: no narrowing; empty: no tool).
    pub tools: Option<Vec<String>>,
    /// Host globs the intent is narrowed to (`None`: no narrowing; empty: no host).
    pub hosts: Option<Vec<String>>,
    /// Issue time (unix seconds).
    pub issued_s: u64,
    /// Expiry (unix seconds).
    pub expires_s: u64,
    /// The orchestrator's key id.
    pub key_id: String,
}

impl Grant {
    /// Whether the grant lets the principal call tool `name`: always when it does not narrow
    /// tools, else when a glob of `tools` matches the whole name (`*` any run of characters, `?`
    /// one character, as in the policy language; case-sensitive). This only narrows: the filter
    /// still requires the intent itself to allow the tool.
    pub fn allows_tool(&self, name: &str) -> bool {
        self.tools
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| glob_match(g, name)))
    }

    /// Whether the grant lets the principal reach `host`: always when it does not narrow hosts,
    /// else when a glob of `hosts` matches the whole host, ignoring ASCII case (`*` any run of
    /// characters, `?` one character). This only narrows, like [`Grant::allows_tool`].
    pub fn allows_host(&self, host: &str) -> bool {
        self.hosts.as_ref().is_none_or(|globs| {
            let host = host.to_ascii_lowercase();
            globs
                .iter()
                .any(|g| glob_match(&g.to_ascii_lowercase(), &host))
        })
    }
}

/// Why a grant was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not a grant (shape, encoding, JSON, non-canonical payload, members, limits, too long).
    #[error("the task grant is malformed")]
    Malformed,
    /// Signed by a key that is not a configured grant key.
    #[error("the task grant is signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the task grant's signature is not valid")]
    BadSignature,
    /// Issued for another principal.
    #[error("the task grant is for another principal")]
    WrongPrincipal,
    /// Issued in the future (beyond the allowed clock skew).
    #[error("the task grant is not valid yet")]
    NotYetValid,
    /// Past its expiry.
    #[error("the task grant has expired")]
    Expired,
}

impl GrantError {
    /// A stable snake_case name for logs, receipts and error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantError::Malformed => "malformed",
            GrantError::UnknownKey => "unknown_key",
            GrantError::BadSignature => "bad_signature",
            GrantError::WrongPrincipal => "wrong_principal",
            GrantError::NotYetValid => "not_yet_valid",
            GrantError::Expired => "expired",
        }
    }
}

/// Sign `g` with the orchestrator's `key`. Claims that [`GrantClaims::check`] refuses make a token
/// that [`verify`] refuses (as malformed).
pub fn mint(g: &GrantClaims, key: &SigningKey) -> String {
    signed_token::seal(GRANT_DOMAIN, &g.payload_text(key), key)
}

fn claims(p: &signed_token::Payload) -> Option<Grant> {
    Some(Grant {
        grant_id: hex::encode(p.nonce()?),
        intent: p.text("intent", MAX_NAME_BYTES)?,
        principal: p.text("principal", MAX_PRINCIPAL_BYTES)?,
        run: p.optional_text("run", MAX_NAME_BYTES)?,
        tools: p.optional_list("tools", MAX_LIST_ENTRIES, MAX_NAME_BYTES)?,
        hosts: p.optional_list("hosts", MAX_LIST_ENTRIES, MAX_NAME_BYTES)?,
        issued_s: p.u64("iat")?,
        expires_s: p.u64("exp")?,
        key_id: p.kid().to_owned(),
    })
}

/// Verify `token` as a grant for `principal` at `now_s` (unix seconds); `keys` are the configured
/// orchestrator keys (`task_grant_keys`).
///
/// Order of checks: shape, length, canonical payload, exact members and their limits
/// (`Malformed`), the key named by `kid` (`UnknownKey`), the signature (`BadSignature`), the
/// principal, compared exactly (`WrongPrincipal`), then time: `iat` more than
/// [`CLOCK_SKEW_S`](crate::signed_token::CLOCK_SKEW_S) ahead (`NotYetValid`), `now_s >= exp`
/// (`Expired`). Never panics.
pub fn verify(
    token: &str,
    keys: &[VerifyingKey],
    principal: &str,
    now_s: u64,
) -> Result<Grant, GrantError> {
    let g = signed_token::open(&KIND, token, claims, |kid| {
        signed_token::key_by_id(keys, kid)
    })?;
    if g.principal != principal {
        return Err(GrantError::WrongPrincipal);
    }
    if signed_token::issued_in_future(g.issued_s, now_s) {
        return Err(GrantError::NotYetValid);
    }
    if now_s >= g.expires_s {
        return Err(GrantError::Expired);
    }
    Ok(g)
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "test arithmetic on small constants"
)]
mod tests {
    use super::*;
    use crate::evidence::keys::{key_id, signing_key_from_seed};
    use crate::signed_token::testing;

    const NOW: u64 = 1_763_700_000;
    const P: &str = "spiffe://corp.example/ns/agents/sa/payroll-bot";

    fn claims() -> GrantClaims {
        GrantClaims {
            intent: "payroll_report".into(),
            principal: P.into(),
            run: Some("run-42".into()),
            tools: Some(vec!["read_*".into(), "query_db".into()]),
            hosts: Some(vec!["*.corp.example".into()]),
            issued_s: NOW,
            expires_s: NOW + 3600,
            nonce: [7; 16],
        }
    }

    fn key() -> SigningKey {
        signing_key_from_seed([21; 32])
    }

    fn keys() -> Vec<VerifyingKey> {
        vec![
            signing_key_from_seed([22; 32]).verifying_key(),
            key().verifying_key(),
        ]
    }

    fn grant(g: &GrantClaims) -> Grant {
        verify(&mint(g, &key()), &keys(), &g.principal, NOW).unwrap()
    }

    #[test]
    fn round_trip_with_every_claim() {
        let c = claims();
        assert_eq!(c.check(&key()), Ok(()));
        let g = grant(&c);
        assert_eq!(
            g,
            Grant {
                grant_id: "07".repeat(16),
                intent: "payroll_report".into(),
                principal: P.into(),
                run: Some("run-42".into()),
                tools: Some(vec!["read_*".into(), "query_db".into()]),
                hosts: Some(vec!["*.corp.example".into()]),
                issued_s: NOW,
                expires_s: NOW + 3600,
                key_id: key_id(&key().verifying_key()),
            }
        );
    }

    #[test]
    fn round_trip_without_optional_claims() {
        let c = GrantClaims {
            run: None,
            tools: None,
            hosts: None,
            ..claims()
        };
        let t = mint(&c, &key());
        let (payload, _) = testing::split(&t);
        assert!(!payload.contains("run") && !payload.contains("tools"));
        assert!(!payload.contains("hosts"), "{payload}");
        let g = grant(&c);
        assert_eq!((g.run, g.tools, g.hosts), (None, None, None));
    }

    #[test]
    fn payload_is_the_documented_canonical_form() {
        let (payload, _) = testing::split(&mint(&claims(), &key()));
        let expected = format!(
            "{{\"exp\":{},\"hosts\":[\"*.corp.example\"],\"iat\":{NOW},\"intent\":\"payroll_report\",\
             \"kid\":\"{}\",\"nonce\":\"{}\",\"principal\":\"{P}\",\"run\":\"run-42\",\
             \"tools\":[\"read_*\",\"query_db\"],\"v\":1}}",
            NOW + 3600,
            key_id(&key().verifying_key()),
            "07".repeat(16),
        );
        assert_eq!(payload, expected);
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let t = mint(&claims(), &key());
        let ks = keys();
        assert_eq!(
            verify(&t, &ks, "spiffe://corp.example/ns/agents/sa/other", NOW),
            Err(GrantError::WrongPrincipal)
        );
        // Exact comparison: no case folding, no prefix match.
        assert_eq!(
            verify(&t, &ks, &P.to_uppercase(), NOW),
            Err(GrantError::WrongPrincipal)
        );
        assert_eq!(
            verify(&t, &ks, &P[..P.len() - 1], NOW),
            Err(GrantError::WrongPrincipal)
        );
        assert_eq!(verify(&t, &ks, P, NOW + 3600), Err(GrantError::Expired));
        assert!(verify(&t, &ks, P, NOW + 3599).is_ok());
        assert_eq!(verify(&t, &ks, P, NOW - 61), Err(GrantError::NotYetValid));
        assert!(verify(&t, &ks, P, NOW - 60).is_ok());
        assert_eq!(verify(&t, &ks[..1], P, NOW), Err(GrantError::UnknownKey));
        assert_eq!(verify(&t, &[], P, NOW), Err(GrantError::UnknownKey));
    }

    #[test]
    fn error_names_are_stable() {
        let names: Vec<_> = [
            GrantError::Malformed,
            GrantError::UnknownKey,
            GrantError::BadSignature,
            GrantError::WrongPrincipal,
            GrantError::NotYetValid,
            GrantError::Expired,
        ]
        .into_iter()
        .map(GrantError::as_str)
        .collect();
        assert_eq!(
            names,
            [
                "malformed",
                "unknown_key",
                "bad_signature",
                "wrong_principal",
                "not_yet_valid",
                "expired"
            ]
        );
    }

    #[test]
    fn tampering_is_refused() {
        let t = mint(&claims(), &key());
        let ks = keys();
        let (payload, sig) = testing::split(&t);
        // A widened grant under the original signature.
        for (from, to) in [
            ("\"payroll_report\"".to_owned(), "\"admin_all\"".to_owned()),
            ("\"read_*\"".to_owned(), "\"*\"".to_owned()),
            (
                format!("\"exp\":{}", NOW + 3600),
                format!("\"exp\":{}", NOW + 9999),
            ),
            (
                format!("\"principal\":\"{P}\""),
                "\"principal\":\"p\"".to_owned(),
            ),
        ] {
            let forged = payload.replace(&from, &to);
            assert_ne!(forged, payload);
            assert_eq!(
                verify(&testing::with_payload(&forged, &sig), &ks, P, NOW),
                Err(GrantError::BadSignature),
                "{forged}"
            );
        }
        // One flipped bit of the payload's base64 text.
        let (p64, s64) = t.split_once('.').unwrap();
        let mut bytes = p64.as_bytes().to_vec();
        bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{}.{s64}", String::from_utf8(bytes).unwrap());
        assert!(matches!(
            verify(&flipped, &ks, P, NOW),
            Err(GrantError::BadSignature | GrantError::Malformed)
        ));
        assert_eq!(
            verify(&testing::flip_signature(&t), &ks, P, NOW),
            Err(GrantError::BadSignature)
        );
        // A grant signed as another kind of token (an approval) does not verify as a grant.
        let other = testing::resigned(crate::approval::APPROVAL_DOMAIN, &payload, &key());
        assert_eq!(verify(&other, &ks, P, NOW), Err(GrantError::BadSignature));
    }

    #[test]
    fn non_canonical_or_wrong_members_are_malformed_even_when_signed() {
        let ks = keys();
        let (payload, sig) = testing::split(&mint(&claims(), &key()));
        let spaced = payload.replacen(',', ", ", 1);
        assert_eq!(
            verify(&testing::with_payload(&spaced, &sig), &ks, P, NOW),
            Err(GrantError::Malformed)
        );
        let nonce = format!("\"nonce\":\"{}\"", "07".repeat(16));
        let cases = [
            // Not canonical: spacing, member order, a `\u` escape.
            spaced.clone(),
            payload
                .replacen("{\"exp\"", "{\"v\":1,\"exp\"", 1)
                .replacen(",\"v\":1}", "}", 1),
            payload.replace("payroll_report", "payroll\\u005freport"),
            // An extra member, a missing member, a duplicate member.
            payload.replacen("{", "{\"admin\":true,", 1),
            payload.replace("\"principal\"", "\"principaL\""),
            payload.replace(&format!("\"exp\":{},", NOW + 3600), ""),
            payload.replacen("{", &format!("{{\"exp\":{},", NOW + 99), 1),
            // Wrong types and values.
            payload.replace("\"v\":1", "\"v\":2"),
            payload.replace(&format!("\"iat\":{NOW}"), &format!("\"iat\":\"{NOW}\"")),
            payload.replace(&format!("\"iat\":{NOW}"), "\"iat\":-1"),
            payload.replace("\"run-42\"", "42"),
            payload.replace("\"run-42\"", "\"\""),
            payload.replace("\"payroll_report\"", "\"\""),
            payload.replace("[\"*.corp.example\"]", "\"*.corp.example\""),
            payload.replace("[\"*.corp.example\"]", "[\"*.corp.example\",7]"),
            payload.replace("[\"*.corp.example\"]", "[\"\"]"),
            payload.replace(&nonce, &format!("\"nonce\":\"{}\"", "07".repeat(15))),
            payload.replace(&nonce, &format!("\"nonce\":\"{}\"", "0A".repeat(16))),
            // Over the limits.
            payload.replace(
                "\"run-42\"",
                &format!("\"{}\"", "r".repeat(MAX_NAME_BYTES + 1)),
            ),
            payload.replace(
                "[\"*.corp.example\"]",
                &format!("[{}]", vec!["\"h\""; MAX_LIST_ENTRIES + 1].join(",")),
            ),
            // Not an object.
            "[]".to_owned(),
        ];
        for bad in cases {
            assert_ne!(bad, payload);
            // Properly signed, so only the payload checks can refuse it; an unknown key shows
            // they run before any key lookup.
            let t = testing::resigned(GRANT_DOMAIN, &bad, &key());
            assert_eq!(verify(&t, &ks, P, NOW), Err(GrantError::Malformed), "{bad}");
            assert_eq!(verify(&t, &[], P, NOW), Err(GrantError::Malformed), "{bad}");
        }
        // At the limits it still verifies.
        let at_limit = payload
            .replace("\"run-42\"", &format!("\"{}\"", "r".repeat(MAX_NAME_BYTES)))
            .replace(
                "[\"*.corp.example\"]",
                &format!("[{}]", vec!["\"h\""; MAX_LIST_ENTRIES].join(",")),
            );
        let t = testing::resigned(GRANT_DOMAIN, &at_limit, &key());
        assert!(verify(&t, &ks, P, NOW).is_ok());
    }

    #[test]
    fn garbage_and_oversize_are_malformed() {
        let ks = keys();
        let too_long = GrantClaims {
            tools: Some(vec!["t".repeat(MAX_NAME_BYTES); MAX_LIST_ENTRIES]),
            ..claims()
        };
        let long = mint(&too_long, &key());
        assert!(long.len() > MAX_TOKEN_BYTES);
        for t in [
            "",
            ".",
            "abc",
            "a.b.c",
            "!!!.???",
            "e30.AAAA",
            &"A".repeat(5000),
            &long,
        ] {
            assert_eq!(verify(t, &ks, P, NOW), Err(GrantError::Malformed), "{t}");
        }
        // Surrounding whitespace (as a header value may carry) is ignored.
        let t = mint(&claims(), &key());
        assert!(verify(&format!(" {t}\t"), &ks, P, NOW).is_ok());
    }

    #[test]
    fn check_names_the_claim_that_cannot_be_minted() {
        let k = key();
        let with = |f: fn(&mut GrantClaims)| {
            let mut c = claims();
            f(&mut c);
            c.check(&k)
        };
        assert_eq!(with(|c| c.intent.clear()), Err(ClaimError::Empty("intent")));
        assert_eq!(
            with(|c| c.principal = "p".repeat(MAX_PRINCIPAL_BYTES + 1)),
            Err(ClaimError::TooLong {
                claim: "principal",
                max: MAX_PRINCIPAL_BYTES
            })
        );
        assert_eq!(
            with(|c| c.run = Some(String::new())),
            Err(ClaimError::Empty("run"))
        );
        assert_eq!(
            with(|c| c.tools = Some(vec!["t".into(); MAX_LIST_ENTRIES + 1])),
            Err(ClaimError::TooMany {
                claim: "tools",
                max: MAX_LIST_ENTRIES
            })
        );
        assert_eq!(
            with(|c| c.hosts = Some(vec!["h".repeat(MAX_NAME_BYTES + 1)])),
            Err(ClaimError::TooLong {
                claim: "hosts",
                max: MAX_NAME_BYTES
            })
        );
        assert_eq!(
            with(|c| c.expires_s = c.issued_s),
            Err(ClaimError::Lifetime)
        );
        assert!(matches!(
            with(|c| c.tools = Some(vec!["t".repeat(MAX_NAME_BYTES); MAX_LIST_ENTRIES])),
            Err(ClaimError::TokenTooLong {
                max: MAX_TOKEN_BYTES,
                ..
            })
        ));
        // Whatever `check` accepts verifies.
        let mut c = claims();
        c.tools = Some(vec!["t".repeat(MAX_NAME_BYTES); 8]);
        assert_eq!(c.check(&k), Ok(()));
        assert!(verify(&mint(&c, &k), &keys(), P, NOW).is_ok());
    }

    #[test]
    fn narrowing_by_tool_globs() {
        let g = grant(&claims());
        assert!(g.allows_tool("read_file"));
        assert!(g.allows_tool("read_"));
        assert!(g.allows_tool("query_db"));
        assert!(!g.allows_tool("query_db2"));
        assert!(!g.allows_tool("write_file"));
        assert!(!g.allows_tool("Read_file"), "tool names are case-sensitive");
        assert!(
            !g.allows_tool("x_read_file"),
            "a glob matches the whole name"
        );
        assert!(!g.allows_tool(""));
        let none = grant(&GrantClaims {
            tools: None,
            ..claims()
        });
        assert!(none.allows_tool("anything") && none.allows_tool(""));
        let empty = grant(&GrantClaims {
            tools: Some(vec![]),
            ..claims()
        });
        assert!(
            !empty.allows_tool("read_file"),
            "an empty list allows no tool"
        );
        let star = grant(&GrantClaims {
            tools: Some(vec!["*".into()]),
            ..claims()
        });
        assert!(star.allows_tool("anything"));
        let mid = grant(&GrantClaims {
            tools: Some(vec!["git_*_branch".into(), "db.?".into()]),
            ..claims()
        });
        assert!(mid.allows_tool("git_delete_branch") && mid.allows_tool("git__branch"));
        assert!(!mid.allows_tool("git_branch"));
        assert!(mid.allows_tool("db.q") && !mid.allows_tool("db.qq"));
    }

    #[test]
    fn narrowing_by_host_globs() {
        let g = grant(&claims());
        assert!(g.allows_host("api.corp.example"));
        assert!(g.allows_host("a.b.corp.example"));
        assert!(g.allows_host("API.Corp.Example"), "hosts ignore ASCII case");
        assert!(!g.allows_host("corp.example"));
        assert!(!g.allows_host("evil.example"));
        assert!(!g.allows_host("api.corp.example.evil.example"));
        let upper = grant(&GrantClaims {
            hosts: Some(vec!["Payroll.Corp.Example".into()]),
            ..claims()
        });
        assert!(upper.allows_host("payroll.corp.example"));
        assert!(!upper.allows_host("payroll.corp.example.evil"));
        let none = grant(&GrantClaims {
            hosts: None,
            ..claims()
        });
        assert!(none.allows_host("anywhere.example"));
        let empty = grant(&GrantClaims {
            hosts: Some(vec![]),
            ..claims()
        });
        assert!(!empty.allows_host("api.corp.example"));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::evidence::keys::signing_key_from_seed;
    use crate::signed_token::testing;
    use proptest::prelude::*;

    proptest! {
        /// Any text, and any payload bytes signed with a configured key, is a result, never a
        /// panic; whatever verifies is for the principal asked about.
        #[test]
        fn never_panics(text in ".{0,300}", payload in ".{0,300}") {
            let sk = signing_key_from_seed([21; 32]);
            let keys = [sk.verifying_key()];
            let _ = verify(&text, &keys, "p", 1_800_000_000);
            let t = testing::resigned(GRANT_DOMAIN, &payload, &sk);
            if let Ok(g) = verify(&t, &keys, "p", 1_800_000_000) {
                prop_assert_eq!(g.principal, "p");
            }
        }
    }
}
