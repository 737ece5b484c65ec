//! The wasm scenario runner: every `testdata/scenarios/*.json` through the BUILT
//! `portcullis.wasm` under the strict wasmtime host. The format is defined in
//! `testdata/scenarios/README.md`; `filter/core/tests/scenarios.rs` runs the same files natively
//! under the mock host, and both must agree.
//!
//! Differences that come from Envoy itself (and that the native runner cannot see): a local
//! response passes back through the filter's own `on_response_headers`/`on_response_body`;
//! request headers are unreachable once the request continued; filter state is whatever
//! `proxy_set_property` stored under `wasm.<path>`.

#[path = "support/scenario_format.rs"]
mod scenario_format;
mod support;

use std::path::{Path, PathBuf};

use bundle::keys::signing_key_from_seed;
use harness::{Host, HostConfig, HttpCall, Pairs, StreamView};
use serde_json::{Value, json};
use support::{
    Failure, START_MS, base_config, compile_policy, fill, fill_json, merge_patch, placeholders,
    scenarios_dir,
};

fn str_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.get(0)?.as_str()?;
            let value = p.get(1)?.as_str()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// `trailers` when the member is present (an empty list still ends the stream with trailers).
fn str_pairs_opt(v: Option<&Value>) -> Option<Vec<(String, String)>> {
    v.map(str_pairs)
}

fn refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn properties(v: Option<&Value>) -> Vec<(Vec<String>, String)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let path = p["path"]
                .as_array()?
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            Some((path, p["value"].as_str()?.to_string()))
        })
        .collect()
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

fn header<'a>(pairs: &'a Pairs, name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

struct Run {
    host: Host,
    file_props: Vec<(Vec<String>, String)>,
    last_digest: Option<String>,
}

struct StepOutcome {
    stream: Option<u32>,
    logs_before: usize,
    calls_before: usize,
}

impl Run {
    fn token(&self, index: usize, a: &Value) -> Result<String, Failure> {
        if let Some(raw) = a.get("raw").and_then(Value::as_str) {
            return Ok(raw.to_string());
        }
        let digest_hex = match a["digest"].as_str().unwrap_or("previous") {
            "previous" => self
                .last_digest
                .clone()
                .ok_or("approval digest `previous`, but no earlier step asked for approval")?,
            d => d.to_string(),
        };
        let digest: [u8; 32] = hex::decode(&digest_hex)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| format!("approval digest `{digest_hex}` is not 64 hex digits"))?;
        let seed = match a["signer"].as_str().unwrap_or("approver") {
            "approver" => 3,
            "stranger" => 4,
            other => return Err(format!("unknown approval signer `{other}`")),
        };
        let now_s = i64::try_from(self.host.now_ms() / 1000).unwrap_or(i64::MAX);
        let issued = now_s.saturating_add(a["issued_offset_s"].as_i64().unwrap_or(0));
        let nonce = a["nonce"]
            .as_u64()
            .map_or(index as u8, |n| u8::try_from(n).unwrap_or(u8::MAX));
        Ok(bundle::approval::mint(
            &digest,
            a["group"].as_str().unwrap_or("release-managers"),
            &signing_key_from_seed([seed; 32]),
            u64::try_from(issued).unwrap_or(0),
            u32::try_from(a["ttl_s"].as_u64().unwrap_or(300)).unwrap_or(u32::MAX),
            [nonce; 16],
        ))
    }

    fn step(&mut self, index: usize, step: &Value) -> Result<StepOutcome, Failure> {
        let logs_before = self.host.logs().len();
        let calls_before = self.host.http_calls().len();
        if let Some(ms) = step["advance_ms"].as_u64() {
            self.host.advance_time(ms);
        }
        if step["tick"].as_bool() == Some(true) {
            self.host.tick().map_err(|e| format!("on_tick: {e:#}"))?;
        }
        let Some(req) = step.get("request") else {
            return Ok(StepOutcome {
                stream: None,
                logs_before,
                calls_before,
            });
        };
        let mut headers = str_pairs(&req["headers"]);
        if let Some(a) = req.get("approval") {
            headers.push(("x-portcullis-approval".to_string(), self.token(index, a)?));
        }
        let body: Option<Vec<u8>> = match (req.get("body"), req.get("body_text")) {
            (Some(b), _) => Some(serde_json::to_vec(b).map_err(|e| e.to_string())?),
            (None, Some(t)) => Some(t.as_str().unwrap_or_default().as_bytes().to_vec()),
            (None, None) => None,
        };
        let mut props = self.file_props.clone();
        props.extend(properties(step.get("properties")));

        let mut s = self
            .host
            .new_stream()
            .map_err(|e| format!("new stream: {e:#}"))?;
        let id = s.id();
        for (path, value) in &props {
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            s.set_property(&segs, value.as_bytes());
        }
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let trailers = str_pairs_opt(req.get("trailers"));
        s.request_headers(&header_refs, body.is_none() && trailers.is_none())
            .map_err(|e| format!("on_request_headers: {e:#}"))?;
        if let Some(body) = &body {
            let n = req["chunks"].as_u64().unwrap_or(1).max(1) as usize;
            let size = body.len().div_ceil(n).max(1);
            let chunks: Vec<&[u8]> = if body.is_empty() {
                vec![&body[..]]
            } else {
                body.chunks(size).collect()
            };
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.iter().enumerate() {
                let v = s.view();
                if v.local_response().is_some() || v.finished() {
                    break;
                }
                s.request_body(chunk, i == last && trailers.is_none())
                    .map_err(|e| format!("on_request_body (chunk {i}): {e:#}"))?;
            }
        }
        if let Some(t) = &trailers {
            let v = s.view();
            if v.local_response().is_none() && !v.finished() {
                s.request_trailers(&refs(t))
                    .map_err(|e| format!("on_request_trailers: {e:#}"))?;
            }
        }

        let new_calls: Vec<HttpCall> = self.host.http_calls()[calls_before..].to_vec();
        if let (Some(call), Some(answer)) = (new_calls.last(), step.get("http_call_response")) {
            if answer.as_str() == Some("timeout") {
                self.host
                    .fail_http_call(call.token)
                    .map_err(|e| format!("call-out failure delivery: {e:#}"))?;
            } else {
                let status = u32::try_from(answer["status"].as_u64().unwrap_or(200)).unwrap_or(200);
                let body = match answer.get("body") {
                    Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
                    None => answer["body_text"]
                        .as_str()
                        .unwrap_or_default()
                        .as_bytes()
                        .to_vec(),
                };
                self.host
                    .respond_http_call(
                        call.token,
                        status,
                        &[("content-type", "application/json")],
                        &body,
                    )
                    .map_err(|e| format!("call-out response delivery: {e:#}"))?;
            }
        }

        let forwarded = self
            .host
            .stream_view(id)
            .is_some_and(|v| v.request_forwarded());
        if let (true, Some(resp)) = (forwarded, step.get("response")) {
            let rh = str_pairs(&resp["headers"]);
            let rh: Vec<(&str, &str)> = rh.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let rbody = match resp.get("body") {
                Some(b) => Some(serde_json::to_vec(b).map_err(|e| e.to_string())?),
                None => resp
                    .get("body_text")
                    .and_then(Value::as_str)
                    .map(|t| t.as_bytes().to_vec()),
            };
            let rtrailers = str_pairs_opt(resp.get("trailers"));
            let mut s = self.host.stream(id).map_err(|e| e.to_string())?;
            s.response_headers(&rh, rbody.is_none() && rtrailers.is_none())
                .map_err(|e| format!("on_response_headers: {e:#}"))?;
            if let Some(b) = rbody {
                let v = s.view();
                if v.local_response().is_none() && !v.finished() {
                    s.response_body(&b, rtrailers.is_none())
                        .map_err(|e| format!("on_response_body: {e:#}"))?;
                }
            }
            if let Some(t) = &rtrailers {
                let v = s.view();
                if v.local_response().is_none() && !v.finished() {
                    s.response_trailers(&refs(t))
                        .map_err(|e| format!("on_response_trailers: {e:#}"))?;
                }
            }
        }

        if let Some(reply) = self.host.stream_view(id).and_then(|v| v.local_response())
            && let Ok(v) = serde_json::from_slice::<Value>(&reply.body)
        {
            let digest = v
                .pointer("/error/data/approval_request/digest")
                .or_else(|| v.pointer("/approval_request/digest"))
                .and_then(Value::as_str);
            if let Some(d) = digest {
                self.last_digest = Some(d.to_string());
            }
        }
        Ok(StepOutcome {
            stream: Some(id),
            logs_before,
            calls_before,
        })
    }

    fn check(&self, e: &Value, out: &StepOutcome) -> Vec<Failure> {
        let mut fails = Vec::new();
        let view: Option<StreamView<'_>> = out.stream.and_then(|id| self.host.stream_view(id));
        let forwarded = view.is_some_and(|v| v.request_forwarded());
        let local = view.and_then(|v| v.local_response());
        let empty = Pairs::new();
        let req_headers: &Pairs = view
            .map(|v| v.forwarded_request_headers().unwrap_or(v.request_headers()))
            .unwrap_or(&empty);
        let resp_headers: &Pairs = view
            .and_then(|v| v.forwarded_response_headers())
            .unwrap_or(&empty);
        let calls = &self.host.http_calls()[out.calls_before..];
        let logs = &self.host.logs()[out.logs_before..];
        let fs = |k: &str| view.and_then(|v| v.filter_state_str(k));

        if let Some(f) = e.get("forwarded").and_then(Value::as_bool)
            && f != forwarded
        {
            fails.push(format!(
                "forwarded: expected {f}, got {forwarded}; local response: {:?}",
                local.map(|l| (l.status, l.body_text()))
            ));
        }
        if let Some(lr) = e.get("local_response") {
            match local {
                None => fails.push("expected a local response, got none".to_string()),
                Some(l) => {
                    let text = l.body_text();
                    let parsed: Option<Value> = serde_json::from_slice(&l.body).ok();
                    if let Some(s) = lr.get("status").and_then(Value::as_u64)
                        && u64::from(l.status) != s
                    {
                        fails.push(format!(
                            "local response status {} (expected {s}); body {text}",
                            l.status
                        ));
                    }
                    if let Some(code) = lr.get("jsonrpc_code").and_then(Value::as_i64) {
                        let got = parsed
                            .as_ref()
                            .and_then(|v| v.pointer("/error/code"))
                            .and_then(Value::as_i64);
                        if got != Some(code) {
                            fails.push(format!(
                                "jsonrpc code {got:?} (expected {code}); body {text}"
                            ));
                        }
                    }
                    for n in strings(lr.get("body_contains")) {
                        if !text.contains(n) {
                            fails.push(format!("local response body lacks `{n}`: {text}"));
                        }
                    }
                    if let Some(bj) = lr.get("body_json")
                        && !parsed.as_ref().is_some_and(|p| contains(p, bj))
                    {
                        fails.push(format!("local response body {text} does not contain {bj}"));
                    }
                    for h in strings(lr.get("headers_present")) {
                        if header(&l.headers, h).is_none() {
                            fails.push(format!("local response lacks header {h}: {:?}", l.headers));
                        }
                    }
                }
            }
        }
        for h in strings(e.get("forwarded_headers_present")) {
            if header(req_headers, h).is_none() {
                fails.push(format!("forwarded request lacks header {h}"));
            }
        }
        for h in strings(e.get("forwarded_headers_absent")) {
            if let Some(v) = header(req_headers, h) {
                fails.push(format!("forwarded request still has header {h}: {v}"));
            }
        }
        if let Some(vals) = e.get("forwarded_header_values").and_then(Value::as_object) {
            for (k, v) in vals {
                let got = header(req_headers, k);
                if got != v.as_str() {
                    fails.push(format!("forwarded header {k} = {got:?}, expected {v}"));
                }
            }
        }
        if let Some(want) = e.get("forwarded_response_body") {
            let got = view
                .map(|v| v.forwarded_response_body())
                .unwrap_or_default();
            let ok = match want {
                Value::String(text) => got == text.as_bytes(),
                v => serde_json::from_slice::<Value>(got).ok().as_ref() == Some(v),
            };
            if !ok {
                fails.push(format!(
                    "response body {:?} != expected {want}",
                    String::from_utf8_lossy(got)
                ));
            }
        }
        if let Some(fb) = e.get("forwarded_body") {
            let body = view.map(|v| v.forwarded_request_body()).unwrap_or_default();
            let got: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            if &got != fb {
                fails.push(format!("forwarded body {got} != expected {fb}"));
            }
            if let Some(cl) = header(req_headers, "content-length")
                && cl != body.len().to_string()
            {
                fails.push(format!(
                    "content-length {cl} but the body upstream has {} bytes",
                    body.len()
                ));
            }
        }
        for h in strings(e.get("response_headers_present")) {
            if header(resp_headers, h).is_none() {
                fails.push(format!("response lacks header {h}: {resp_headers:?}"));
            }
        }
        for h in strings(e.get("response_headers_absent")) {
            if header(resp_headers, h).is_some() {
                fails.push(format!("response has header {h}"));
            }
        }
        if let Some(vals) = e.get("filter_state").and_then(Value::as_object) {
            for (k, v) in vals {
                if fs(k) != v.as_str() {
                    fails.push(format!(
                        "filter state {k} = {:?}, expected {v} (keys set: {:?})",
                        fs(k),
                        view.map(|v| v.filter_state_keys())
                    ));
                }
            }
        }
        for k in strings(e.get("filter_state_present")) {
            if fs(k).is_none() {
                fails.push(format!(
                    "filter state {k} is not set (keys set: {:?})",
                    view.map(|v| v.filter_state_keys())
                ));
            }
        }
        if let Some(n) = e.get("http_calls").and_then(Value::as_u64)
            && calls.len() as u64 != n
        {
            fails.push(format!("{} call-outs, expected {n}", calls.len()));
        }
        if let Some(hc) = e.get("http_call") {
            match calls.last() {
                None => fails.push("expected a call-out, got none".to_string()),
                Some(c) => {
                    if let Some(cl) = hc.get("cluster").and_then(Value::as_str)
                        && c.cluster != cl
                    {
                        fails.push(format!("call-out cluster {} != {cl}", c.cluster));
                    }
                    if let Some(p) = hc.get("path").and_then(Value::as_str)
                        && c.header(":path") != Some(p)
                    {
                        fails.push(format!("call-out path {:?} != {p}", c.header(":path")));
                    }
                    let text = String::from_utf8_lossy(&c.body);
                    for n in strings(hc.get("body_contains")) {
                        if !text.contains(n) {
                            fails.push(format!("call-out body lacks `{n}`: {text}"));
                        }
                    }
                }
            }
        }
        for n in strings(e.get("logs_contain")) {
            if !logs.iter().any(|l| l.message.contains(n)) {
                fails.push(format!("no log line of this step contains `{n}`"));
            }
        }
        // Invariant of every step (not written in the files): a header the filter owns
        // (`x-portcullis-*`) appears at most once wherever it goes.
        let mut maps: Vec<(&str, &Pairs)> =
            vec![("request", req_headers), ("response", resp_headers)];
        if let Some(l) = local {
            maps.push(("local response", &l.headers));
        }
        for (what, map) in maps {
            let mut seen = std::collections::BTreeSet::new();
            for (k, _) in map.iter().filter(|(k, _)| k.starts_with("x-portcullis-")) {
                if !seen.insert(k.as_str()) {
                    fails.push(format!("{what} carries header {k} more than once: {map:?}"));
                }
            }
        }
        if let Some(rc) = e.get("receipt") {
            match fs("wasm.portcullis.receipt") {
                None => {
                    fails.push("no receipt in filter state wasm.portcullis.receipt".to_string())
                }
                Some(text) => fails.extend(check_receipt(text, rc)),
            }
        }
        fails
    }
}

fn check_receipt(text: &str, rc: &Value) -> Vec<Failure> {
    let mut fails = Vec::new();
    let r = match support::parse_receipt(text) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    if !r.hash_matches() {
        fails.push("receipt hash does not match its body".to_string());
    }
    let receipt_key = signing_key_from_seed([2; 32]).verifying_key();
    if r.sig.is_some() && !r.signature_valid(&receipt_key) {
        fails.push("receipt signature does not verify".to_string());
    }
    if let Some(d) = rc.get("decision").and_then(Value::as_str) {
        let got = r.body.decision.map(|d| d.as_str());
        if got != Some(d) {
            fails.push(format!("receipt decision {got:?} != {d}"));
        }
    }
    if let Some(rule) = rc.get("rule").and_then(Value::as_str)
        && r.body.rule.as_deref() != Some(rule)
    {
        fails.push(format!("receipt rule {:?} != {rule}", r.body.rule));
    }
    if let Some(ev) = rc.get("event").and_then(Value::as_str)
        && r.body.event.as_str() != ev
    {
        fails.push(format!("receipt event {} != {ev}", r.body.event.as_str()));
    }
    if let Some(signed) = rc.get("signed").and_then(Value::as_bool)
        && r.sig.is_some() != signed
    {
        fails.push(format!(
            "receipt signed = {}, expected {signed}",
            r.sig.is_some()
        ));
    }
    fails
}

fn clusters_of(config: &str) -> Option<Vec<String>> {
    let v: Value = serde_json::from_str(config).ok()?;
    let services = v.get("context_services")?.as_object()?;
    Some(
        services
            .values()
            .filter_map(|s| s.get("cluster").and_then(Value::as_str).map(str::to_string))
            .collect(),
    )
}

fn load(path: &Path) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

fn run_scenario(module: &harness::FilterModule, sc: &Value) -> Result<(), Failure> {
    run_scenario_with(module, sc, |hc| hc)
}

/// Runs a scenario on a host whose configuration `adjust` may change (e.g. hide an export).
fn run_scenario_with(
    module: &harness::FilterModule,
    sc: &Value,
    adjust: impl FnOnce(HostConfig) -> HostConfig,
) -> Result<(), Failure> {
    scenario_format::check(sc)?;
    let bundle_b64 = match sc.get("policy").and_then(Value::as_str) {
        Some(p) => compile_policy(&scenarios_dir().join(p))?,
        None => String::new(),
    };
    let map = placeholders(&bundle_b64);
    let config = match sc.get("raw_config").and_then(Value::as_str) {
        Some(raw) => fill(raw, &map),
        None => {
            let mut c = base_config();
            if let Some(patch) = sc.get("config") {
                merge_patch(&mut c, patch);
            }
            fill_json(&mut c, &map);
            c.to_string()
        }
    };
    let mut hc = HostConfig::new(config.clone()).with_start_ms(START_MS);
    if let Some(clusters) = clusters_of(&config) {
        hc = hc.with_clusters(clusters);
    }
    if let Some(env) = sc.get("vm_env").and_then(Value::as_object) {
        for (k, v) in env {
            hc = hc.with_env(k.clone(), fill(v.as_str().unwrap_or_default(), &map));
        }
    }
    let host = Host::start(module, adjust(hc)).map_err(|e| format!("plugin start: {e:#}"))?;
    let mut run = Run {
        host,
        file_props: properties(sc.get("properties")),
        last_digest: None,
    };
    let steps = sc["steps"].as_array().ok_or("no `steps` array")?;
    for (i, step) in steps.iter().enumerate() {
        let name = step["name"].as_str().unwrap_or("?");
        let out = run
            .step(i, step)
            .map_err(|e| format!("step {i} `{name}`: {e}"))?;
        if let Some(expect) = step.get("expect") {
            let fails = run.check(expect, &out);
            if !fails.is_empty() {
                let logs: Vec<String> = run.host.logs()[out.logs_before..]
                    .iter()
                    .map(|l| format!("[{}] {}", l.level, l.message))
                    .collect();
                return Err(format!(
                    "step {i} `{name}`:\n  {}\n  module logs of this step:\n    {}",
                    fails.join("\n  "),
                    logs.join("\n    ")
                ));
            }
        }
    }
    Ok(())
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.extension().is_some_and(|x| x == "json")
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('_'))
    });
    files.sort();
    files
}

#[test]
fn every_scenario_passes_against_the_built_wasm() {
    let files = scenario_files();
    assert!(
        files.len() >= 12,
        "expected at least 12 scenarios, found {}",
        files.len()
    );
    let module = match harness::build::filter_module() {
        Ok(m) => m,
        Err(e) => panic!("cannot load the filter: {e:#}"),
    };
    let only = std::env::var("SCENARIO").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for f in &files {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned());
        if only.is_some() && only != stem {
            continue;
        }
        ran += 1;
        if let Err(e) = load(f).and_then(|sc| run_scenario(module, &sc)) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(ran > 0, "no scenario matched SCENARIO={only:?}");
    assert!(
        failures.is_empty(),
        "{} of {ran} scenarios failed under the wasm host:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The runner must be able to fail: the same scenario with one expectation changed is refused.
#[test]
fn a_wrong_expectation_is_reported() {
    let module = match harness::build::filter_module() {
        Ok(m) => m,
        Err(e) => panic!("cannot load the filter: {e:#}"),
    };
    let original = load(&scenarios_dir().join("deny_default.json")).unwrap();
    assert_eq!(run_scenario(module, &original), Ok(()));

    let mut wrong_status = original.clone();
    wrong_status["steps"][0]["expect"]["local_response"]["status"] = json!(599);
    let e = run_scenario(module, &wrong_status).unwrap_err();
    assert!(e.contains("local response status"), "{e}");

    let mut wrong_state = original.clone();
    wrong_state["steps"][0]["expect"]["filter_state"]["wasm.portcullis.decision"] = json!("ALLOW");
    let e = run_scenario(module, &wrong_state).unwrap_err();
    assert!(e.contains("wasm.portcullis.decision"), "{e}");

    let mut wrong_forward = original;
    wrong_forward["steps"][0]["expect"]["forwarded"] = json!(true);
    let e = run_scenario(module, &wrong_forward).unwrap_err();
    assert!(e.contains("forwarded: expected true"), "{e}");
}

/// A member the format does not define fails the scenario instead of being skipped.
#[test]
fn a_typo_in_a_scenario_file_is_refused() {
    let mut sc = load(&scenarios_dir().join("deny_default.json")).unwrap();
    assert_eq!(scenario_format::check(&sc), Ok(()));
    sc["steps"][0]["request"]["trailer"] = json!([["grpc-status", "0"]]);
    let e = scenario_format::check(&sc).unwrap_err();
    assert!(e.contains("unknown field `trailer`"), "{e}");
    sc["steps"][0]["request"]
        .as_object_mut()
        .unwrap()
        .remove("trailer");
    sc["steps"][0]["http_call_response"] = json!("timed out");
    assert!(scenario_format::check(&sc).is_err(), "only \"timeout\"");
}

/// Every step that ends a stream with trailers asserts something only a filter that handles
/// trailers gets right: against the same module with its trailers callbacks hidden (Envoy then
/// continues: the bug they fix), the scenario up to that step (earlier streams ending without
/// trailers) fails at that step.
#[test]
fn every_step_ending_with_trailers_fails_without_the_trailers_callbacks() {
    let module = match harness::build::filter_module() {
        Ok(m) => m,
        Err(e) => panic!("cannot load the filter: {e:#}"),
    };
    let hide = |hc: HostConfig| {
        hc.without_export("proxy_on_request_trailers")
            .without_export("proxy_on_response_trailers")
    };
    let mut checked = 0;
    let mut passed_anyway = Vec::new();
    for f in scenario_files() {
        let sc = load(&f).unwrap();
        let steps = sc["steps"].as_array().cloned().unwrap_or_default();
        for (i, step) in steps.iter().enumerate() {
            let ends_with_trailers = step.pointer("/request/trailers").is_some()
                || step.pointer("/response/trailers").is_some();
            if !ends_with_trailers {
                continue;
            }
            checked += 1;
            let name = step["name"].as_str().unwrap_or("?");
            let mut upto = sc.clone();
            upto["steps"] = Value::Array(end_earlier_streams_without_trailers(&steps[..=i]));
            match run_scenario_with(module, &upto, hide) {
                Err(e) if e.starts_with(&format!("step {i} ")) => {}
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
