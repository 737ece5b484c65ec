//! The scenario file format of `testdata/scenarios/README.md` as types, shared by both runners
//! (`test-harness/tests/scenarios.rs` includes it as a module; `filter/core/tests/scenarios.rs`
//! includes this same file by path). Every object is `deny_unknown_fields`: a member the format
//! does not define (a typo such as `trailer` for `trailers`) fails the scenario instead of being
//! silently skipped. The runners check a file with [`check`] before running it.

#![allow(
    dead_code,
    reason = "the types exist to be deserialized: they refuse what they lack"
)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A `[name, value]` header or trailer pair.
pub type Pair = (String, String);

/// One scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub policy: Option<String>,
    pub config: Option<Value>,
    pub raw_config: Option<String>,
    pub vm_env: Option<BTreeMap<String, String>>,
    pub properties: Option<Vec<Property>>,
    pub steps: Vec<Step>,
}

/// A property value by exact path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Property {
    pub path: Vec<String>,
    pub value: String,
}

/// One HTTP stream (or only a clock / timer step).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: Option<String>,
    pub advance_ms: Option<u64>,
    pub tick: Option<bool>,
    pub properties: Option<Vec<Property>>,
    pub request: Option<Request>,
    pub http_call_response: Option<CallAnswer>,
    pub response: Option<Response>,
    pub expect: Option<Expect>,
}

/// What the agent sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub headers: Vec<Pair>,
    pub body: Option<Value>,
    pub body_text: Option<String>,
    pub chunks: Option<u64>,
    pub approval: Option<Approval>,
    /// The request ends with these trailers instead of END_STREAM on its last data.
    pub trailers: Option<Vec<Pair>>,
}

/// An approval token the runner mints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub digest: Option<String>,
    pub signer: Option<String>,
    pub group: Option<String>,
    pub issued_offset_s: Option<i64>,
    pub ttl_s: Option<u64>,
    pub nonce: Option<u8>,
    pub raw: Option<String>,
}

/// The answer to the step's call-out: `"timeout"`, or a response.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CallAnswer {
    Timeout(Timeout),
    Response(CallResponse),
}

/// The string `"timeout"` and nothing else.
#[derive(Debug, Deserialize)]
pub enum Timeout {
    #[serde(rename = "timeout")]
    Timeout,
}

/// A context service's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallResponse {
    pub status: Option<u64>,
    pub body: Option<Value>,
    pub body_text: Option<String>,
}

/// What the upstream answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub headers: Vec<Pair>,
    pub body: Option<Value>,
    pub body_text: Option<String>,
    /// The response ends with these trailers instead of END_STREAM on its body.
    pub trailers: Option<Vec<Pair>>,
}

/// What must be observed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub forwarded: Option<bool>,
    pub local_response: Option<LocalResponse>,
    pub forwarded_headers_present: Option<Vec<String>>,
    pub forwarded_headers_absent: Option<Vec<String>>,
    pub forwarded_header_values: Option<BTreeMap<String, String>>,
    pub forwarded_body: Option<Value>,
    pub forwarded_response_body: Option<Value>,
    pub response_headers_present: Option<Vec<String>>,
    pub response_headers_absent: Option<Vec<String>>,
    pub filter_state: Option<BTreeMap<String, String>>,
    pub filter_state_present: Option<Vec<String>>,
    pub http_calls: Option<u64>,
    pub http_call: Option<HttpCall>,
    pub logs_contain: Option<Vec<String>>,
    pub receipt: Option<Receipt>,
}

/// The local response's expected shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalResponse {
    pub status: Option<u16>,
    pub jsonrpc_code: Option<i64>,
    pub body_contains: Option<Vec<String>>,
    pub body_json: Option<Value>,
    pub headers_present: Option<Vec<String>>,
}

/// The step's last call-out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    pub cluster: Option<String>,
    pub path: Option<String>,
    pub body_contains: Option<Vec<String>>,
}

/// The step's receipt.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub decision: Option<String>,
    pub rule: Option<String>,
    pub event: Option<String>,
    pub signed: Option<bool>,
}

/// Checks a scenario against the format: every member known, every value of the right type,
/// and the combinations the README forbids refused. The error names the offending member.
pub fn check(sc: &Value) -> Result<(), String> {
    let typed = Scenario::deserialize(sc).map_err(|e| format!("not a scenario file: {e}"))?;
    for (i, step) in typed.steps.iter().enumerate() {
        let name = step.name.as_deref().unwrap_or("?");
        let bad = |what: &str| Err(format!("step {i} `{name}`: {what}"));
        if let Some(r) = &step.request
            && r.body.is_some()
            && r.body_text.is_some()
        {
            return bad("request has both `body` and `body_text`");
        }
        if let Some(r) = &step.response
            && r.body.is_some()
            && r.body_text.is_some()
        {
            return bad("response has both `body` and `body_text`");
        }
        if step.response.is_some() && step.request.is_none() {
            return bad("a `response` needs a `request`");
        }
    }
    Ok(())
}
