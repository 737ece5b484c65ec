//! The scenario file format of `testdata/scenarios/README.md` as types: the one definition every
//! runner reads. Every object is `deny_unknown_fields`: a member the format does not define (a
//! typo such as `trailer` for `trailers`) fails the file instead of being silently skipped.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A `[name, value]` header or trailer pair.
pub type Pair = (String, String);

/// One scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name (the file stem by convention).
    pub name: String,
    /// One line: what a user would notice.
    pub description: Option<String>,
    /// The policy, relative to the scenarios folder.
    pub policy: Option<String>,
    /// A JSON merge patch applied to the base plugin configuration.
    pub config: Option<Value>,
    /// The exact plugin configuration text instead of `config` (placeholders substituted).
    pub raw_config: Option<String>,
    /// VM environment variables (placeholders substituted in the values).
    pub vm_env: Option<BTreeMap<String, String>>,
    /// Properties every stream sees.
    pub properties: Option<Vec<Property>>,
    /// The streams, in order.
    pub steps: Vec<Step>,
}

/// A property value by exact path.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Property {
    /// The path segments `proxy_get_property` is asked for.
    pub path: Vec<String>,
    /// The value (its UTF-8 bytes).
    pub value: String,
}

/// One HTTP stream (or only a clock / timer step).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What the step shows.
    pub name: Option<String>,
    /// Milliseconds the clock moves before the step.
    pub advance_ms: Option<u64>,
    /// Whether the tick timer fires before the step.
    pub tick: Option<bool>,
    /// Properties added for this step (overriding the file's).
    pub properties: Option<Vec<Property>>,
    /// What the agent sends.
    pub request: Option<Request>,
    /// The answer to the call-out the filter made during the step.
    pub http_call_response: Option<CallAnswer>,
    /// What the upstream answers, when the request went upstream.
    pub response: Option<Response>,
    /// What must be observed.
    pub expect: Option<Expect>,
}

impl Step {
    /// The step's name, `?` when it has none.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("?")
    }

    /// Whether the request or the response of this step ends with trailers.
    pub fn ends_with_trailers(&self) -> bool {
        self.request.as_ref().is_some_and(|r| r.trailers.is_some())
            || self.response.as_ref().is_some_and(|r| r.trailers.is_some())
    }
}

/// What the agent sends.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Request headers in order, pseudo headers included.
    pub headers: Vec<Pair>,
    /// The body as JSON, serialized compactly.
    pub body: Option<Value>,
    /// The body as raw text.
    pub body_text: Option<String>,
    /// How many pieces the body is delivered in (default 1).
    pub chunks: Option<u64>,
    /// An approval token the runner mints and sends.
    pub approval: Option<Approval>,
    /// The request ends with these trailers instead of END_STREAM on its last data.
    pub trailers: Option<Vec<Pair>>,
}

/// An approval token the runner mints.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// `previous` (the last approval request's digest) or 64 hex digits.
    pub digest: Option<String>,
    /// `approver` or `stranger`.
    pub signer: Option<String>,
    /// The token's group.
    pub group: Option<String>,
    /// Issued-at relative to now, in seconds.
    pub issued_offset_s: Option<i64>,
    /// Lifetime in seconds.
    pub ttl_s: Option<u64>,
    /// The nonce byte (default: the step's index).
    pub nonce: Option<u8>,
    /// The exact header value instead of a minted token.
    pub raw: Option<String>,
}

/// The answer to the step's call-out: `"timeout"`, or a response.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum CallAnswer {
    /// The call-out fails.
    Timeout(Timeout),
    /// The context service answers.
    Response(CallResponse),
}

/// The string `"timeout"` and nothing else.
#[derive(Clone, Debug, Deserialize)]
pub enum Timeout {
    /// `"timeout"`.
    #[serde(rename = "timeout")]
    Timeout,
}

/// A context service's answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallResponse {
    /// HTTP status (default 200).
    pub status: Option<u64>,
    /// The body as JSON.
    pub body: Option<Value>,
    /// The body as raw text.
    pub body_text: Option<String>,
}

/// What the upstream answers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// Response headers in order.
    pub headers: Vec<Pair>,
    /// The body as JSON, serialized compactly.
    pub body: Option<Value>,
    /// The body as raw text.
    pub body_text: Option<String>,
    /// The response ends with these trailers instead of END_STREAM on its body.
    pub trailers: Option<Vec<Pair>>,
}

/// What must be observed. Every member is optional; only the ones written are checked.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The request went upstream.
    pub forwarded: Option<bool>,
    /// The filter answered locally, so.
    pub local_response: Option<LocalResponse>,
    /// Request headers present after the filter ran.
    pub forwarded_headers_present: Option<Vec<String>>,
    /// Request headers absent after the filter ran.
    pub forwarded_headers_absent: Option<Vec<String>>,
    /// Exact values of forwarded request headers.
    pub forwarded_header_values: Option<BTreeMap<String, String>>,
    /// The body the upstream received, as JSON.
    pub forwarded_body: Option<Value>,
    /// The response body the agent receives: JSON, or a string compared byte for byte.
    pub forwarded_response_body: Option<Value>,
    /// Response headers present after the filter ran.
    pub response_headers_present: Option<Vec<String>>,
    /// Response headers absent after the filter ran.
    pub response_headers_absent: Option<Vec<String>>,
    /// Exact filter state values.
    pub filter_state: Option<BTreeMap<String, String>>,
    /// Filter state keys that must be set.
    pub filter_state_present: Option<Vec<String>>,
    /// Number of call-outs during the step.
    pub http_calls: Option<u64>,
    /// The step's last call-out.
    pub http_call: Option<HttpCall>,
    /// Substrings of some log line of the step.
    pub logs_contain: Option<Vec<String>>,
    /// The step's receipt.
    pub receipt: Option<Receipt>,
}

/// The local response's expected shape.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: Option<u16>,
    /// `error.code` of the JSON-RPC error body.
    pub jsonrpc_code: Option<i64>,
    /// Substrings of the body.
    pub body_contains: Option<Vec<String>>,
    /// Members the parsed body must contain (recursive subset match).
    pub body_json: Option<Value>,
    /// Headers the reply carries.
    pub headers_present: Option<Vec<String>>,
}

/// The step's last call-out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// Upstream cluster.
    pub cluster: Option<String>,
    /// `:path` header.
    pub path: Option<String>,
    /// Substrings of the body.
    pub body_contains: Option<Vec<String>>,
}

/// The step's receipt.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Enforced decision (`ALLOW`, `DENY`, ...).
    pub decision: Option<String>,
    /// Deciding rule.
    pub rule: Option<String>,
    /// Event kind.
    pub event: Option<String>,
    /// Whether it carries a signature.
    pub signed: Option<bool>,
}

impl Scenario {
    /// A scenario from its JSON: every member known, every value of the right type, and the
    /// combinations the README forbids refused. The error names the offending member.
    pub fn from_json(v: &Value) -> Result<Scenario, String> {
        let sc = Scenario::deserialize(v).map_err(|e| format!("not a scenario file: {e}"))?;
        sc.validate()?;
        Ok(sc)
    }

    /// A scenario from its text (see [`Scenario::from_json`]).
    pub fn from_text(text: &str) -> Result<Scenario, String> {
        let sc: Scenario =
            serde_json::from_str(text).map_err(|e| format!("not a scenario file: {e}"))?;
        sc.validate()?;
        Ok(sc)
    }

    fn validate(&self) -> Result<(), String> {
        for (i, step) in self.steps.iter().enumerate() {
            let bad = |what: &str| Err(format!("step {i} `{}`: {what}", step.label()));
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

    /// The file with only its first `n` steps, and the trailers of every step but the last of
    /// them removed: those streams end with END_STREAM on their last data instead (which must
    /// not change what they expect), so only the last step depends on trailers.
    pub fn up_to_with_trailers_only_last(&self, n: usize) -> Scenario {
        let mut out = self.clone();
        out.steps.truncate(n);
        let last = out.steps.len().saturating_sub(1);
        for step in out.steps.iter_mut().take(last) {
            if let Some(r) = &mut step.request {
                r.trailers = None;
            }
            if let Some(r) = &mut step.response {
                r.trailers = None;
            }
        }
        out
    }
}
