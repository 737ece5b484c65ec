//! The wasm scenario runner: every `testdata/scenarios/*.json` through the BUILT
//! `portcullis.wasm` under the strict wasmtime host. The format, the driver and the checks are
//! the testkit's (`testkit/`), shared with the native runner in `filter/core/tests/scenarios.rs`;
//! this file is only the wasm host's [`FilterUnderTest`].
//!
//! Differences that come from Envoy itself (and that the native runner cannot see): a local
//! response passes back through the filter's own `on_response_headers`/`on_response_body`;
//! request headers are unreachable once the request continued; filter state is whatever
//! `proxy_set_property` stored under `wasm.<path>`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed test panics with the runner's report"
)]

use harness::{FilterModule, Host, HostConfig, Pairs, StreamView};
use serde_json::{Value, json};
use testkit::format::{CallAnswer, Pair, Property};
use testkit::{Call, Failure, FilterUnderTest, Log, Observed, Reply, Setup, corpus};

/// The built module under the wasmtime host, one stream at a time.
struct Wasm {
    host: Host,
    stream: Option<u32>,
    logs_before: usize,
    calls_before: usize,
}

fn module() -> &'static FilterModule {
    match harness::build::filter_module() {
        Ok(m) => m,
        Err(e) => panic!("cannot load the filter: {e:#}"),
    }
}

fn start(setup: &Setup) -> Result<Wasm, Failure> {
    let mut hc = HostConfig::new(setup.plugin_config.clone()).with_start_ms(setup.start_ms);
    if let Some(clusters) = clusters_of(&setup.plugin_config) {
        hc = hc.with_clusters(clusters);
    }
    for (k, v) in &setup.vm_env {
        hc = hc.with_env(k.clone(), v.clone());
    }
    if !setup.trailers_callbacks {
        // Envoy continues a stream at trailers when the module does not export these.
        hc = hc
            .without_export("proxy_on_request_trailers")
            .without_export("proxy_on_response_trailers");
    }
    let host = Host::start(module(), hc).map_err(|e| format!("{e:#}"))?;
    Ok(Wasm {
        host,
        stream: None,
        logs_before: 0,
        calls_before: 0,
    })
}

/// The call-out clusters of a configuration (the host refuses call-outs to any other).
/// The clusters the configuration calls out to: its context services and its credentials' STSs.
fn clusters_of(config: &str) -> Option<Vec<String>> {
    let v: Value = serde_json::from_str(config).ok()?;
    let cluster = |s: &Value| s.get("cluster").and_then(Value::as_str).map(str::to_owned);
    let mut out: Vec<String> = v
        .get("context_services")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|services| services.values().filter_map(cluster))
        .collect();
    if let Some(c) = v.get("credentials") {
        out.extend(c.get("sts").and_then(cluster));
        if let Some(defs) = c.get("definitions").and_then(Value::as_object) {
            out.extend(defs.values().filter_map(|d| d.get("sts").and_then(cluster)));
        }
    }
    (v.get("context_services").is_some() || v.get("credentials").is_some()).then_some(out)
}

/// A callback's outcome as the driver wants it: what the filter told the proxy is read back
/// from the stream's view, a trap or host error is the step's failure.
fn callback<T>(what: &str, r: anyhow::Result<T>) -> Result<(), Failure> {
    r.map(|_| ()).map_err(|e| format!("{what}: {e:#}"))
}

fn refs(pairs: &[Pair]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn text_pairs(pairs: &Pairs) -> Vec<Pair> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

impl Wasm {
    fn view(&self) -> Option<StreamView<'_>> {
        self.stream.and_then(|id| self.host.stream_view(id))
    }

    fn open(&mut self) -> Result<harness::Stream<'_>, Failure> {
        let id = self.stream.ok_or("no stream")?;
        self.host.stream(id).map_err(|e| format!("{e:#}"))
    }
}

impl FilterUnderTest for Wasm {
    fn begin_step(&mut self) {
        self.logs_before = self.host.logs().len();
        self.calls_before = self.host.http_calls().len();
        self.stream = None;
    }

    fn now_ms(&self) -> u64 {
        self.host.now_ms()
    }

    fn advance_ms(&mut self, ms: u64) {
        self.host.advance_time(ms);
    }

    fn tick(&mut self) -> Result<(), Failure> {
        self.host
            .tick()
            .map(|_| ())
            .map_err(|e| format!("on_tick: {e:#}"))
    }

    fn request_headers(
        &mut self,
        headers: &[Pair],
        properties: &[Property],
        end_of_stream: bool,
    ) -> Result<(), Failure> {
        let mut s = self
            .host
            .new_stream()
            .map_err(|e| format!("new stream: {e:#}"))?;
        let id = s.id();
        for p in properties {
            let segs: Vec<&str> = p.path.iter().map(String::as_str).collect();
            s.set_property(&segs, p.value.as_bytes());
        }
        let result = s.request_headers(&refs(headers), end_of_stream);
        self.stream = Some(id);
        callback("on_request_headers", result)
    }

    fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<(), Failure> {
        let r = self.open()?.request_body(chunk, end_of_stream);
        callback("on_request_body", r)
    }

    fn request_trailers(&mut self, trailers: &[Pair]) -> Result<(), Failure> {
        let r = self.open()?.request_trailers(&refs(trailers));
        callback("on_request_trailers", r)
    }

    fn replied(&self) -> bool {
        self.view()
            .is_some_and(|v| v.local_response().is_some() || v.finished())
    }

    fn answer_call(&mut self, answer: &CallAnswer) -> Result<(), Failure> {
        let Some(token) = self.host.http_calls()[self.calls_before..]
            .last()
            .map(|c| c.token)
        else {
            return Ok(());
        };
        match answer {
            CallAnswer::Timeout(_) => self
                .host
                .fail_http_call(token)
                .map_err(|e| format!("call-out failure delivery: {e:#}")),
            CallAnswer::Response(r) => {
                let status = u32::try_from(r.status.unwrap_or(200)).unwrap_or(200);
                let body = testkit::body_bytes(r.body.as_ref(), r.body_text.as_deref())?;
                self.host
                    .respond_http_call(
                        token,
                        status,
                        &[("content-type", "application/json")],
                        &body.unwrap_or_default(),
                    )
                    .map_err(|e| format!("call-out response delivery: {e:#}"))
            }
        }
    }

    fn forwarded(&self) -> bool {
        self.view().is_some_and(|v| v.request_forwarded())
    }

    fn response_headers(&mut self, headers: &[Pair], end_of_stream: bool) -> Result<(), Failure> {
        let r = self.open()?.response_headers(&refs(headers), end_of_stream);
        callback("on_response_headers", r)
    }

    fn response_body(&mut self, body: &[u8], end_of_stream: bool) -> Result<(), Failure> {
        let r = self.open()?.response_body(body, end_of_stream);
        callback("on_response_body", r)
    }

    fn response_trailers(&mut self, trailers: &[Pair]) -> Result<(), Failure> {
        let r = self.open()?.response_trailers(&refs(trailers));
        callback("on_response_trailers", r)
    }

    fn observe(&self) -> Observed {
        let logs = self.host.logs()[self.logs_before..]
            .iter()
            .map(|l| Log {
                level: l.level.to_string(),
                message: l.message.clone(),
            })
            .collect();
        let http_calls = self.host.http_calls()[self.calls_before..]
            .iter()
            .map(|c| Call {
                cluster: c.cluster.clone(),
                headers: text_pairs(&c.headers),
                body: c.body.clone(),
            })
            .collect();
        let Some(v) = self.view() else {
            return Observed {
                logs,
                http_calls,
                ..Observed::default()
            };
        };
        Observed {
            forwarded: v.request_forwarded(),
            local_response: v.local_response().map(|l| Reply {
                status: u16::try_from(l.status).unwrap_or(u16::MAX),
                headers: text_pairs(&l.headers),
                body: l.body.clone(),
            }),
            request_headers: text_pairs(
                v.forwarded_request_headers().unwrap_or(v.request_headers()),
            ),
            request_body: v.forwarded_request_body().to_vec(),
            response_headers: v
                .forwarded_response_headers()
                .map(text_pairs)
                .unwrap_or_default(),
            response_body: v.forwarded_response_body().to_vec(),
            filter_state: v
                .filter_state_keys()
                .into_iter()
                .filter_map(|k| Some((k.to_owned(), v.filter_state_str(k)?.to_owned())))
                .collect(),
            http_calls,
            logs,
            // The strict host fails the callback itself on misuse.
            host_errors: Vec::new(),
        }
    }
}

#[test]
fn every_scenario_passes_against_the_built_wasm() {
    if let Err(e) = testkit::run_corpus(start) {
        panic!("under the wasm host: {e}");
    }
}

/// The runner must be able to fail: the same scenario with one expectation changed is refused.
#[test]
fn a_wrong_expectation_is_reported() {
    let original = corpus::load_json(&corpus::scenarios_dir().join("deny_default.json")).unwrap();
    let run = |v: &Value| {
        testkit::Scenario::from_json(v).and_then(|sc| testkit::run_scenario(&sc, start))
    };
    assert_eq!(run(&original), Ok(()));

    let mut wrong_status = original.clone();
    wrong_status["steps"][0]["expect"]["local_response"]["status"] = json!(599);
    let e = run(&wrong_status).unwrap_err();
    assert!(e.contains("local response status"), "{e}");

    let mut wrong_state = original.clone();
    wrong_state["steps"][0]["expect"]["filter_state"]["wasm.portcullis.decision"] = json!("ALLOW");
    let e = run(&wrong_state).unwrap_err();
    assert!(e.contains("wasm.portcullis.decision"), "{e}");

    let mut wrong_forward = original;
    wrong_forward["steps"][0]["expect"]["forwarded"] = json!(true);
    let e = run(&wrong_forward).unwrap_err();
    assert!(e.contains("forwarded: expected true"), "{e}");
}

/// Every step that ends a stream with trailers fails against the same module with its trailers
/// callbacks hidden (Envoy then continues: the bug they fix).
#[test]
fn every_step_ending_with_trailers_fails_without_the_trailers_callbacks() {
    match testkit::trailers_guard(start) {
        Ok(checked) => assert!(checked >= 6, "only {checked} steps end with trailers"),
        Err(e) => panic!("{e}"),
    }
}
