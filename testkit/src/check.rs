//! One comparison of a step's expectation with what a filter did, for every implementation.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::filter::{Observed, Reply};
use crate::fixtures;
use crate::format::{Expect, LocalResponse, Pair};

/// Every way `observed` differs from `expect`, one line each (empty: the step passed). Also
/// checks what holds for every step whatever it expects: a header the filter owns
/// (`x-portcullis-*`) appears at most once wherever it goes.
pub fn check(expect: &Expect, observed: &Observed) -> Vec<String> {
    let mut fails = Vec::new();
    let o = observed;
    let local = o.local_response.as_ref();
    if let Some(f) = expect.forwarded
        && f != o.forwarded
    {
        fails.push(format!(
            "forwarded: expected {f}, got {}; local response: {:?}",
            o.forwarded,
            local.map(|l| (l.status, String::from_utf8_lossy(&l.body).into_owned()))
        ));
    }
    if let Some(lr) = &expect.local_response {
        match local {
            None => fails.push("expected a local response, got none".to_owned()),
            Some(l) => check_local(lr, l, &mut fails),
        }
    }
    let req = |name: &str| header(&o.request_headers, name);
    for h in expect.forwarded_headers_present.iter().flatten() {
        if req(h).is_none() {
            fails.push(format!("forwarded request lacks header {h}"));
        }
    }
    for h in expect.forwarded_headers_absent.iter().flatten() {
        if let Some(v) = req(h) {
            fails.push(format!("forwarded request still has header {h}: {v}"));
        }
    }
    for (k, v) in expect.forwarded_header_values.iter().flatten() {
        let got = req(k);
        if got != Some(v.as_str()) {
            fails.push(format!("forwarded header {k} = {got:?}, expected {v}"));
        }
    }
    if let Some(want) = &expect.forwarded_response_body {
        let got = &o.response_body;
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
    if let Some(fb) = &expect.forwarded_body {
        let body = &o.request_body;
        let got: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if &got != fb {
            fails.push(format!("forwarded body {got} != expected {fb}"));
        }
        if let Some(cl) = req("content-length")
            && cl != body.len().to_string()
        {
            fails.push(format!(
                "content-length {cl} but the body upstream has {} bytes",
                body.len()
            ));
        }
    }
    let resp = |name: &str| header(&o.response_headers, name);
    for h in expect.response_headers_present.iter().flatten() {
        if resp(h).is_none() {
            fails.push(format!(
                "response lacks header {h}: {:?}",
                o.response_headers
            ));
        }
    }
    for h in expect.response_headers_absent.iter().flatten() {
        if resp(h).is_some() {
            fails.push(format!("response has header {h}"));
        }
    }
    let fs = |k: &str| o.filter_state.get(k).map(String::as_str);
    let keys = || o.filter_state.keys().collect::<Vec<_>>();
    for (k, v) in expect.filter_state.iter().flatten() {
        if fs(k) != Some(v.as_str()) {
            fails.push(format!(
                "filter state {k} = {:?}, expected {v} (keys set: {:?})",
                fs(k),
                keys()
            ));
        }
    }
    for k in expect.filter_state_present.iter().flatten() {
        if fs(k).is_none() {
            fails.push(format!(
                "filter state {k} is not set (keys set: {:?})",
                keys()
            ));
        }
    }
    if let Some(n) = expect.http_calls
        && u64::try_from(o.http_calls.len()).ok() != Some(n)
    {
        fails.push(format!("{} call-outs, expected {n}", o.http_calls.len()));
    }
    if let Some(hc) = &expect.http_call {
        match o.http_calls.last() {
            None => fails.push("expected a call-out, got none".to_owned()),
            Some(c) => {
                if let Some(cl) = &hc.cluster
                    && c.cluster != *cl
                {
                    fails.push(format!("call-out cluster {} != {cl}", c.cluster));
                }
                let path = header(&c.headers, ":path");
                if let Some(p) = &hc.path
                    && path != Some(p.as_str())
                {
                    fails.push(format!("call-out path {path:?} != {p}"));
                }
                let text = String::from_utf8_lossy(&c.body);
                for n in hc.body_contains.iter().flatten() {
                    if !text.contains(n.as_str()) {
                        fails.push(format!("call-out body lacks `{n}`: {text}"));
                    }
                }
            }
        }
    }
    for n in expect.logs_contain.iter().flatten() {
        if !o.logs.iter().any(|l| l.message.contains(n.as_str())) {
            fails.push(format!("no log line of this step contains `{n}`"));
        }
    }
    let mut maps: Vec<(&str, &[Pair])> = vec![
        ("request", &o.request_headers),
        ("response", &o.response_headers),
    ];
    if let Some(l) = local {
        maps.push(("local response", &l.headers));
    }
    for (what, map) in maps {
        let mut seen = BTreeSet::new();
        for (k, _) in map.iter().filter(|(k, _)| k.starts_with("x-portcullis-")) {
            if !seen.insert(k.as_str()) {
                fails.push(format!("{what} carries header {k} more than once: {map:?}"));
            }
        }
    }
    if let Some(rc) = &expect.receipt {
        match fs("wasm.portcullis.receipt") {
            None => fails.push("no receipt in filter state wasm.portcullis.receipt".to_owned()),
            Some(text) => check_receipt(text, rc, &mut fails),
        }
    }
    fails
}

fn check_local(lr: &LocalResponse, l: &Reply, fails: &mut Vec<String>) {
    let text = String::from_utf8_lossy(&l.body);
    let parsed: Option<Value> = serde_json::from_slice(&l.body).ok();
    if let Some(s) = lr.status
        && l.status != s
    {
        fails.push(format!(
            "local response status {} (expected {s}); body {text}",
            l.status
        ));
    }
    if let Some(code) = lr.jsonrpc_code {
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
    for n in lr.body_contains.iter().flatten() {
        if !text.contains(n.as_str()) {
            fails.push(format!("local response body lacks `{n}`: {text}"));
        }
    }
    if let Some(bj) = &lr.body_json
        && !parsed.as_ref().is_some_and(|p| contains(p, bj))
    {
        fails.push(format!("local response body {text} does not contain {bj}"));
    }
    for h in lr.headers_present.iter().flatten() {
        if header(&l.headers, h).is_none() {
            fails.push(format!("local response lacks header {h}: {:?}", l.headers));
        }
    }
}

/// The receipt's hash, its signature against the receipt key when signed, and the members the
/// step expects.
fn check_receipt(text: &str, rc: &crate::format::Receipt, fails: &mut Vec<String>) {
    let r = match fixtures::parse_receipt(text) {
        Ok(r) => r,
        Err(e) => return fails.push(e),
    };
    if !r.hash_matches() {
        fails.push("receipt hash does not match its body".to_owned());
    }
    let receipt_key = fixtures::key(fixtures::RECEIPT_KEY_SEED).verifying_key();
    if r.sig.is_some() && !r.signature_valid(&receipt_key) {
        fails.push("receipt signature does not verify".to_owned());
    }
    if let Some(d) = &rc.decision {
        let got = r.body.decision.map(|d| d.as_str());
        if got != Some(d.as_str()) {
            fails.push(format!("receipt decision {got:?} != {d}"));
        }
    }
    if let Some(rule) = &rc.rule
        && r.body.rule.as_deref() != Some(rule.as_str())
    {
        fails.push(format!("receipt rule {:?} != {rule}", r.body.rule));
    }
    if let Some(ev) = &rc.event
        && r.body.event.as_str() != ev
    {
        fails.push(format!("receipt event {} != {ev}", r.body.event.as_str()));
    }
    if let Some(signed) = rc.signed
        && r.sig.is_some() != signed
    {
        fails.push(format!(
            "receipt signed = {}, expected {signed}",
            r.sig.is_some()
        ));
    }
}

/// The first header with this exact (lowercase) name.
fn header<'a>(pairs: &'a [Pair], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Recursive subset match: objects by member, everything else by equality.
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| contains(av, ev))),
        _ => actual == expected,
    }
}
