//! The native scenario runner: every `testdata/scenarios/*.json` through `filter_core` under the
//! mock host. The format is defined in `testdata/scenarios/README.md`; the wasm runner in
//! `test-harness/tests/scenarios.rs` runs the same files against the built `.wasm`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test code: a failed unwrap is a failed test"
)]
#![allow(
    clippy::collapsible_if,
    reason = "each check reads `if the scenario asks for X { if X differs { fail } }`"
)]

#[path = "../../../test-harness/tests/support/scenario_format.rs"]
mod scenario_format;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use base64::Engine as _;
use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};
use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use serde_json::{Value, json};

const START_MS: u64 = 1_800_000_000_000;

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scenarios")
}

fn placeholders(bundle_b64: &str) -> Vec<(String, String)> {
    let pubkey =
        |seed: u8| format_verifying_key(&signing_key_from_seed([seed; 32]).verifying_key());
    vec![
        ("{{bundle_pub}}".into(), pubkey(1)),
        (
            "{{receipt_secret}}".into(),
            format_signing_key(&signing_key_from_seed([2; 32])),
        ),
        ("{{receipt_pub}}".into(), pubkey(2)),
        ("{{approver_pub}}".into(), pubkey(3)),
        ("{{stranger_pub}}".into(), pubkey(4)),
        ("{{bundle}}".into(), bundle_b64.to_owned()),
    ]
}

fn substitute_str(s: &str, map: &[(String, String)]) -> String {
    let mut out = s.to_owned();
    for (k, v) in map {
        out = out.replace(k.as_str(), v);
    }
    out
}

fn substitute(v: &mut Value, map: &[(String, String)]) {
    match v {
        Value::String(s) => *s = substitute_str(s, map),
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, map)),
        Value::Object(o) => o.values_mut().for_each(|x| substitute(x, map)),
        _ => {}
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn base_config() -> Value {
    json!({
        "bundle": { "inline_base64": "{{bundle}}" },
        "trusted_bundle_keys": ["{{bundle_pub}}"],
        "signing_key": { "inline": "{{receipt_secret}}" },
        "approvers": { "release-managers": ["{{approver_pub}}"] },
        "context_services": {
            "risk": { "cluster": "context-risk", "authority": "risk.internal", "path": "/decide" }
        },
        "mcp": { "paths": ["/mcp"], "server_name": "workbench" }
    })
}

fn compile_policy(path: &Path) -> String {
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ast = policy::syntax::parse(&src)
        .unwrap_or_else(|d| panic!("{}: policy does not parse: {d:?}", path.display()));
    let unsigned = policy::codegen::compile(&ast)
        .unwrap_or_else(|e| panic!("{}: policy does not compile: {e:?}", path.display()));
    let signed = bundle::sign(&unsigned, &signing_key_from_seed([1; 32])).unwrap();
    base64::engine::general_purpose::STANDARD.encode(signed)
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_ascii_lowercase(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn properties(v: Option<&Value>) -> Vec<(Vec<String>, String)> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let path = p["path"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_owned())
                        .collect();
                    (path, p["value"].as_str().unwrap().to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Recursive subset match: objects by member, everything else by equality.
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| contains(av, ev))),
        _ => actual == expected,
    }
}

fn approval_digest(body: &Value) -> Option<String> {
    body.pointer("/error/data/approval_request/digest")
        .or_else(|| body.pointer("/approval_request/digest"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

struct Run {
    name: String,
    host: MockHost,
    plugin: Rc<Plugin>,
    file_props: Vec<(Vec<String>, String)>,
    last_digest: Option<String>,
    /// Model a filter without trailers callbacks: trailers continue without asking it.
    ignore_trailers: bool,
}

/// `trailers` when the member is present (an empty list still ends the stream with trailers).
fn trailers_of(v: &Value) -> Option<Vec<(String, String)>> {
    v.get("trailers").map(pairs)
}

impl Run {
    fn fail(&self, step: &str, msg: String) -> ! {
        let logs: Vec<String> = self
            .host
            .state()
            .logs
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        panic!(
            "scenario `{}`, step `{step}`: {msg}\nlogs:\n{}",
            self.name,
            logs.join("\n")
        );
    }

    fn step(&mut self, index: usize, step: &Value) {
        let sname = step["name"].as_str().unwrap_or("?").to_owned();
        let logs_before = self.host.state().logs.len();
        let calls_before = self.host.state().http_calls.len();
        if let Some(ms) = step["advance_ms"].as_u64() {
            self.host.advance(ms);
        }
        if step["tick"].as_bool() == Some(true) {
            self.plugin.on_tick(&self.host);
        }
        let mut forwarded = false;
        if let Some(req) = step.get("request") {
            let mut headers = pairs(&req["headers"]);
            if let Some(a) = req.get("approval") {
                headers.push(("x-portcullis-approval".into(), self.token(index, a, &sname)));
            }
            self.host.new_stream(headers);
            let mut props = self.file_props.clone();
            props.extend(properties(step.get("properties")));
            self.host.state().properties.clear();
            for (p, v) in &props {
                let segs: Vec<&str> = p.iter().map(String::as_str).collect();
                self.host.set_property(&segs, v);
            }
            let body: Option<Vec<u8>> = if let Some(b) = req.get("body") {
                Some(serde_json::to_vec(b).unwrap())
            } else {
                req.get("body_text")
                    .map(|t| t.as_str().unwrap().as_bytes().to_vec())
            };
            let trailers = trailers_of(req);
            let mut stream = Stream::new(Rc::clone(&self.plugin));
            let mut action =
                stream.on_request_headers(&self.host, body.is_none() && trailers.is_none());
            if let Some(body) = &body
                && self.host.state().local_response.is_none()
            {
                let n = req["chunks"].as_u64().unwrap_or(1).max(1) as usize;
                let size = body.len().div_ceil(n).max(1);
                let chunks: Vec<&[u8]> = if body.is_empty() {
                    vec![&body[..]]
                } else {
                    body.chunks(size).collect()
                };
                let last = chunks.len() - 1;
                for (i, c) in chunks.iter().enumerate() {
                    self.host.state().request_body.extend_from_slice(c);
                    let total = self.host.state().request_body.len();
                    let end = i == last && trailers.is_none();
                    action = stream.on_request_body(&self.host, total, end);
                    if self.host.state().local_response.is_some() {
                        break;
                    }
                }
            }
            if trailers.is_some() && self.host.state().local_response.is_none() {
                // As in Envoy: a body the filter let go (or none at all) is gone by now.
                self.host.state().request_body_released =
                    body.is_none() || action == FilterAction::Continue;
                // The trailer map itself is not part of the Host seam: the filter never reads it.
                action = if self.ignore_trailers {
                    FilterAction::Continue
                } else {
                    stream.on_request_trailers(&self.host)
                };
            }
            forwarded =
                action == FilterAction::Continue && self.host.state().local_response.is_none();
            let new_calls = self.host.state().http_calls.len() > calls_before;
            if new_calls && let Some(answer) = step.get("http_call_response") {
                let token = self.host.state().http_calls.last().unwrap().token;
                let (headers, body) = if answer.as_str() == Some("timeout") {
                    (vec![], vec![])
                } else {
                    let status = answer["status"].as_u64().unwrap_or(200).to_string();
                    let body = match answer.get("body") {
                        Some(b) => serde_json::to_vec(b).unwrap(),
                        None => answer["body_text"]
                            .as_str()
                            .unwrap_or("")
                            .as_bytes()
                            .to_vec(),
                    };
                    (
                        vec![
                            (":status".to_owned(), status),
                            ("content-type".to_owned(), "application/json".to_owned()),
                        ],
                        body,
                    )
                };
                let len = body.len();
                self.host.state().call_response = Some((headers, body));
                stream.on_http_call_response(&self.host, token, len);
                self.host.state().call_response = None;
                forwarded =
                    self.host.state().resumed > 0 && self.host.state().local_response.is_none();
            }
            if forwarded && let Some(resp) = step.get("response") {
                self.host.state().response_headers = pairs(&resp["headers"]);
                let mut raction = stream.on_response_headers(&self.host);
                let rbody = match resp.get("body") {
                    Some(b) => Some(serde_json::to_vec(b).unwrap()),
                    None => resp
                        .get("body_text")
                        .and_then(Value::as_str)
                        .map(|t| t.as_bytes().to_vec()),
                };
                let rtrailers = trailers_of(resp);
                let had_body = rbody.is_some();
                if let Some(b) = rbody {
                    let len = b.len();
                    self.host.state().response_body = b;
                    raction = stream.on_response_body(&self.host, len, rtrailers.is_none());
                }
                if rtrailers.is_some() {
                    self.host.state().response_body_released =
                        !had_body || raction == FilterAction::Continue;
                    raction = if self.ignore_trailers {
                        FilterAction::Continue
                    } else {
                        stream.on_response_trailers(&self.host)
                    };
                }
                if raction == FilterAction::Pause {
                    // The filter still holds the response at its end: the agent got nothing.
                    self.host.state().response_body.clear();
                }
            }
            let local = self.host.state().local_response.clone();
            if let Some(l) = &local
                && let Ok(v) = serde_json::from_slice::<Value>(&l.body)
                && let Some(d) = approval_digest(&v)
            {
                self.last_digest = Some(d);
            }
        }
        let violations = self.host.state().violations.clone();
        if !violations.is_empty() {
            self.fail(&sname, format!("host misuse: {violations:?}"));
        }
        if let Some(expect) = step.get("expect") {
            self.check(&sname, expect, forwarded, logs_before, calls_before);
        }
    }

    fn token(&self, index: usize, a: &Value, sname: &str) -> String {
        if let Some(raw) = a.get("raw") {
            return raw.as_str().unwrap().to_owned();
        }
        let digest_hex = match a["digest"].as_str().unwrap_or("previous") {
            "previous" => self
                .last_digest
                .clone()
                .unwrap_or_else(|| self.fail(sname, "no previous approval request".into())),
            d => d.to_owned(),
        };
        let digest: [u8; 32] = hex::decode(digest_hex).unwrap().try_into().unwrap();
        let seed = match a["signer"].as_str().unwrap_or("approver") {
            "approver" => 3,
            "stranger" => 4,
            other => self.fail(sname, format!("unknown signer {other}")),
        };
        let now_s = (self.host.state().now_ms / 1000) as i64;
        let issued = (now_s + a["issued_offset_s"].as_i64().unwrap_or(0)) as u64;
        let nonce = a["nonce"].as_u64().map_or(index as u8, |n| n as u8);
        bundle::approval::mint(
            &digest,
            a["group"].as_str().unwrap_or("release-managers"),
            &signing_key_from_seed([seed; 32]),
            issued,
            a["ttl_s"].as_u64().unwrap_or(300) as u32,
            [nonce; 16],
        )
    }

    fn check(
        &self,
        sname: &str,
        e: &Value,
        forwarded: bool,
        logs_before: usize,
        calls_before: usize,
    ) {
        let st = self.host.state();
        let local = st.local_response.clone();
        let headers_after = st.request_headers.clone();
        let response_headers = st.response_headers.clone();
        let response_body = st.response_body.clone();
        let filter_state = st.filter_state.clone();
        let calls: Vec<_> = st.http_calls[calls_before..].to_vec();
        let logs: Vec<String> = st.logs[logs_before..]
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        let body = st.request_body.clone();
        drop(st);
        let fail = |m: String| -> ! { self.fail(sname, m) };
        if let Some(f) = e.get("forwarded").and_then(Value::as_bool) {
            if f != forwarded {
                fail(format!(
                    "forwarded: expected {f}, got {forwarded}; local response: {:?}",
                    local
                        .as_ref()
                        .map(|l| (l.status, String::from_utf8_lossy(&l.body).into_owned()))
                ));
            }
        }
        if let Some(lr) = e.get("local_response") {
            let Some(l) = &local else {
                fail("expected a local response, got none".into())
            };
            let text = String::from_utf8_lossy(&l.body).into_owned();
            if let Some(s) = lr.get("status").and_then(Value::as_u64) {
                if u64::from(l.status) != s {
                    fail(format!(
                        "local response status {} (expected {s}); body {text}",
                        l.status
                    ));
                }
            }
            let parsed: Option<Value> = serde_json::from_slice(&l.body).ok();
            if let Some(code) = lr.get("jsonrpc_code").and_then(Value::as_i64) {
                let got = parsed
                    .as_ref()
                    .and_then(|v| v.pointer("/error/code"))
                    .and_then(Value::as_i64);
                if got != Some(code) {
                    fail(format!(
                        "jsonrpc code {got:?} (expected {code}); body {text}"
                    ));
                }
            }
            for needle in lr
                .get("body_contains")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let n = needle.as_str().unwrap();
                if !text.contains(n) {
                    fail(format!("local response body lacks `{n}`: {text}"));
                }
            }
            if let Some(bj) = lr.get("body_json") {
                if !parsed.as_ref().is_some_and(|p| contains(p, bj)) {
                    fail(format!("local response body {text} does not contain {bj}"));
                }
            }
            for h in lr
                .get("headers_present")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let h = h.as_str().unwrap();
                if !l.headers.iter().any(|(n, _)| n == h) {
                    fail(format!("local response lacks header {h}: {:?}", l.headers));
                }
            }
        }
        let header = |name: &str| {
            headers_after
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        for h in e
            .get("forwarded_headers_present")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if header(h.as_str().unwrap()).is_none() {
                fail(format!("forwarded request lacks header {h}"));
            }
        }
        for h in e
            .get("forwarded_headers_absent")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(v) = header(h.as_str().unwrap()) {
                fail(format!("forwarded request still has header {h}: {v}"));
            }
        }
        if let Some(vals) = e.get("forwarded_header_values").and_then(Value::as_object) {
            for (k, v) in vals {
                if header(k).as_deref() != v.as_str() {
                    fail(format!(
                        "forwarded header {k} = {:?}, expected {v}",
                        header(k)
                    ));
                }
            }
        }
        if let Some(fb) = e.get("forwarded_body") {
            let got: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if &got != fb {
                fail(format!("forwarded body {got} != expected {fb}"));
            }
            if let Some(cl) = header("content-length") {
                if cl != body.len().to_string() {
                    fail(format!(
                        "content-length {cl} but body has {} bytes",
                        body.len()
                    ));
                }
            }
        }
        if let Some(want) = e.get("forwarded_response_body") {
            if let Err(m) = check_response_body(&response_body, want) {
                fail(m);
            }
        }
        let rheader = |name: &str| response_headers.iter().any(|(n, _)| n == name);
        for h in e
            .get("response_headers_present")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rheader(h.as_str().unwrap()) {
                fail(format!("response lacks header {h}"));
            }
        }
        for h in e
            .get("response_headers_absent")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if rheader(h.as_str().unwrap()) {
                fail(format!("response has header {h}"));
            }
        }
        let fs = |k: &str| {
            filter_state
                .get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        if let Some(vals) = e.get("filter_state").and_then(Value::as_object) {
            for (k, v) in vals {
                if fs(k).as_deref() != v.as_str() {
                    fail(format!("filter state {k} = {:?}, expected {v}", fs(k)));
                }
            }
        }
        for k in e
            .get("filter_state_present")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if fs(k.as_str().unwrap()).is_none() {
                fail(format!("filter state {k} is not set"));
            }
        }
        if let Some(n) = e.get("http_calls").and_then(Value::as_u64) {
            if calls.len() as u64 != n {
                fail(format!("{} call-outs, expected {n}", calls.len()));
            }
        }
        if let Some(hc) = e.get("http_call") {
            let Some(c) = calls.last() else {
                fail("no call-out".into())
            };
            if let Some(cl) = hc.get("cluster").and_then(Value::as_str) {
                if c.cluster != cl {
                    fail(format!("call-out cluster {} != {cl}", c.cluster));
                }
            }
            if let Some(p) = hc.get("path").and_then(Value::as_str) {
                let got = c
                    .headers
                    .iter()
                    .find(|(n, _)| n == ":path")
                    .map(|(_, v)| v.as_str());
                if got != Some(p) {
                    fail(format!("call-out path {got:?} != {p}"));
                }
            }
            let text = String::from_utf8_lossy(&c.body);
            for n in hc
                .get("body_contains")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !text.contains(n.as_str().unwrap()) {
                    fail(format!("call-out body lacks {n}: {text}"));
                }
            }
        }
        for n in e
            .get("logs_contain")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let n = n.as_str().unwrap();
            if !logs.iter().any(|l| l.contains(n)) {
                fail(format!("no log line contains `{n}`"));
            }
        }
        if let Some(rc) = e.get("receipt") {
            let Some(text) = fs("wasm.portcullis.receipt") else {
                fail("no receipt in filter state".into())
            };
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| fail(format!("receipt is not JSON: {e}")));
            let last = match &v {
                Value::Array(a) => a.last().cloned().unwrap_or(Value::Null),
                other => other.clone(),
            };
            let r = bundle::receipt::Receipt::from_json(&last.to_string())
                .unwrap_or_else(|e| fail(format!("receipt does not parse: {e}")));
            if !r.hash_matches() {
                fail("receipt hash does not match its body".into());
            }
            let receipt_key = signing_key_from_seed([2; 32]).verifying_key();
            if r.sig.is_some() && !r.signature_valid(&receipt_key) {
                fail("receipt signature does not verify".into());
            }
            if let Some(d) = rc.get("decision").and_then(Value::as_str) {
                let got = r.body.decision.map(|d| d.as_str());
                if got != Some(d) {
                    fail(format!("receipt decision {got:?} != {d}"));
                }
            }
            if let Some(rule) = rc.get("rule").and_then(Value::as_str) {
                if r.body.rule.as_deref() != Some(rule) {
                    fail(format!("receipt rule {:?} != {rule}", r.body.rule));
                }
            }
            if let Some(ev) = rc.get("event").and_then(Value::as_str) {
                if r.body.event.as_str() != ev {
                    fail(format!("receipt event {} != {ev}", r.body.event.as_str()));
                }
            }
            if let Some(s) = rc.get("signed").and_then(Value::as_bool) {
                if r.sig.is_some() != s {
                    fail(format!(
                        "receipt signed = {}, expected {s}",
                        r.sig.is_some()
                    ));
                }
            }
        }
    }
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_file(path: &Path) {
    run_value(&load(path), false);
}

/// Runs one scenario; `ignore_trailers` models a filter without trailers callbacks.
fn run_value(sc: &Value, ignore_trailers: bool) {
    if let Err(e) = scenario_format::check(sc) {
        panic!("{e}");
    }
    let name = sc["name"].as_str().unwrap_or("?").to_owned();
    let bundle_b64 = match sc.get("policy").and_then(Value::as_str) {
        Some(p) => compile_policy(&scenarios_dir().join(p)),
        None => String::new(),
    };
    let map = placeholders(&bundle_b64);
    let config = match sc.get("raw_config").and_then(Value::as_str) {
        Some(raw) => substitute_str(raw, &map),
        None => {
            let mut c = base_config();
            if let Some(patch) = sc.get("config") {
                merge_patch(&mut c, patch);
            }
            substitute(&mut c, &map);
            c.to_string()
        }
    };
    let host = MockHost::new(START_MS);
    if let Some(env) = sc.get("vm_env").and_then(Value::as_object) {
        for (k, v) in env {
            host.state()
                .env
                .insert(k.clone(), substitute_str(v.as_str().unwrap(), &map));
        }
    }
    let plugin = Rc::new(Plugin::configure(&host, config.as_bytes()));
    let mut run = Run {
        name,
        host,
        plugin,
        file_props: properties(sc.get("properties")),
        last_digest: None,
        ignore_trailers,
    };
    for (i, step) in sc["steps"].as_array().unwrap().iter().enumerate() {
        run.step(i, step);
    }
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.file_name().unwrap().to_string_lossy().starts_with('_')
        })
        .collect();
    files.sort();
    files
}

/// The panic message of a failed run, or `None` when it passed.
fn failure(run: impl FnOnce() + std::panic::UnwindSafe) -> Option<String> {
    let e = std::panic::catch_unwind(run).err()?;
    Some(
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    )
}

#[test]
fn every_scenario_passes_natively() {
    let files = scenario_files();
    assert!(
        files.len() >= 12,
        "expected at least 12 scenarios, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        if let Some(msg) = failure(|| run_file(f)) {
            failures.push(format!("{}:\n{msg}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// A member the format does not define fails the scenario instead of being skipped.
#[test]
fn a_typo_in_a_scenario_file_is_refused() {
    let mut sc = load(&scenarios_dir().join("deny_default.json"));
    assert_eq!(failure(|| run_value(&sc, false)), None);
    sc["steps"][0]["request"]["trailer"] = json!([["grpc-status", "0"]]);
    let msg = failure(|| run_value(&sc, false)).expect("a typo must fail the scenario");
    assert!(msg.contains("unknown field `trailer`"), "{msg}");
}

/// Every step that ends a stream with trailers asserts something only a filter that handles
/// trailers gets right: with the trailers callbacks ignored (the bug they fix: the stream goes
/// on undecided), the scenario up to that step (earlier streams ending without trailers) fails
/// at that step.
#[test]
fn every_step_ending_with_trailers_fails_without_the_trailers_callbacks() {
    let mut checked = 0;
    let mut passed_anyway = Vec::new();
    for f in scenario_files() {
        let sc = load(&f);
        let steps = sc["steps"].as_array().unwrap();
        for (i, step) in steps.iter().enumerate() {
            let ends_with_trailers = step
                .get("request")
                .and_then(|r| r.get("trailers"))
                .is_some()
                || step
                    .get("response")
                    .and_then(|r| r.get("trailers"))
                    .is_some();
            if !ends_with_trailers {
                continue;
            }
            checked += 1;
            let name = step["name"].as_str().unwrap_or("?");
            let mut upto = sc.clone();
            upto["steps"] = Value::Array(end_earlier_streams_without_trailers(&steps[..=i]));
            match failure(|| run_value(&upto, true)) {
                Some(msg) if msg.contains(&format!("step `{name}`:")) => {}
                other => {
                    passed_anyway.push(format!("{} step {i} `{name}`: {other:?}", f.display()))
                }
            }
        }
    }
    assert!(checked >= 6, "only {checked} steps end with trailers");
    assert!(
        passed_anyway.is_empty(),
        "these steps do not fail when the filter ignores trailers:\n{}",
        passed_anyway.join("\n")
    );
}

/// `forwarded_response_body`: a JSON value is compared as JSON; a string is the exact body text.
fn check_response_body(got: &[u8], want: &Value) -> Result<(), String> {
    match want {
        Value::String(text) => {
            if got != text.as_bytes() {
                return Err(format!(
                    "response body {:?} != expected {text:?}",
                    String::from_utf8_lossy(got)
                ));
            }
        }
        v => {
            let g: Value = serde_json::from_slice(got).unwrap_or(Value::Null);
            if &g != v {
                return Err(format!("response body {g} != expected {v}"));
            }
        }
    }
    Ok(())
}

/// `steps` with the trailers of every step but the last removed: those streams end with
/// END_STREAM on their last data instead (which must not change what they expect), so only the
/// last step depends on trailers.
fn end_earlier_streams_without_trailers(steps: &[Value]) -> Vec<Value> {
    let mut out = steps.to_vec();
    let last = out.len().saturating_sub(1);
    for step in out.iter_mut().take(last) {
        for part in ["request", "response"] {
            if let Some(Value::Object(m)) = step.get_mut(part) {
                m.remove("trailers");
            }
        }
    }
    out
}
