//! The native scenario runner: every `testdata/scenarios/*.json` through `filter_core` under the
//! mock host. The format, the driver and the checks are the testkit's (`testkit/`), shared with
//! the wasm runner in `test-harness/tests/scenarios.rs`; this file is only the mock host's
//! [`FilterUnderTest`].

#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed test panics with the runner's report"
)]

use std::rc::Rc;

use filter_core::mock::MockHost;
use filter_core::{FilterAction, Plugin, Stream};
use serde_json::json;
use testkit::format::{CallAnswer, Pair, Property};
use testkit::{Call, Failure, FilterUnderTest, Log, Observed, Reply, Setup, corpus};

/// `filter_core` under the mock host, one stream at a time.
struct Native {
    host: MockHost,
    plugin: Rc<Plugin>,
    stream: Option<Stream>,
    /// What the filter's last request callback (or the call-out answer) told the proxy.
    request_action: FilterAction,
    /// A call-out answer resumed the stream (or not): then that decides `forwarded`.
    resumed_by_call: bool,
    /// What the filter's last response callback told the proxy, if any ran.
    response_action: Option<FilterAction>,
    /// The request (response) of this stream had a body, possibly empty.
    request_had_body: bool,
    response_had_body: bool,
    /// Models a filter without trailers callbacks: trailers continue without asking it.
    trailers_callbacks: bool,
    logs_before: usize,
    calls_before: usize,
}

fn start(setup: &Setup) -> Result<Native, Failure> {
    let host = MockHost::new(setup.start_ms);
    for (k, v) in &setup.vm_env {
        host.state().env.insert(k.clone(), v.clone());
    }
    let plugin = Rc::new(Plugin::configure(&host, setup.plugin_config.as_bytes()));
    Ok(Native {
        host,
        plugin,
        stream: None,
        request_action: FilterAction::Continue,
        resumed_by_call: false,
        response_action: None,
        request_had_body: false,
        response_had_body: false,
        trailers_callbacks: setup.trailers_callbacks,
        logs_before: 0,
        calls_before: 0,
    })
}

impl Native {
    /// The host and the open stream, borrowed apart.
    fn parts(&mut self) -> Result<(&MockHost, &mut Stream), Failure> {
        let s = self.stream.as_mut().ok_or("no stream")?;
        Ok((&self.host, s))
    }
}

impl FilterUnderTest for Native {
    fn begin_step(&mut self) {
        self.logs_before = self.host.state().logs.len();
        self.calls_before = self.host.state().http_calls.len();
        self.stream = None;
        self.resumed_by_call = false;
        self.response_action = None;
        self.request_had_body = false;
        self.response_had_body = false;
    }

    fn now_ms(&self) -> u64 {
        self.host.state().now_ms
    }

    fn advance_ms(&mut self, ms: u64) {
        self.host.advance(ms);
    }

    fn tick(&mut self) -> Result<(), Failure> {
        self.plugin.on_tick(&self.host);
        Ok(())
    }

    fn request_headers(
        &mut self,
        headers: &[Pair],
        properties: &[Property],
        end_of_stream: bool,
    ) -> Result<(), Failure> {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        self.host.new_stream(headers);
        self.host.state().properties.clear();
        for p in properties {
            let segs: Vec<&str> = p.path.iter().map(String::as_str).collect();
            self.host.set_property(&segs, &p.value);
        }
        let mut stream = Stream::new(Rc::clone(&self.plugin));
        self.request_action = stream.on_request_headers(&self.host, end_of_stream);
        self.stream = Some(stream);
        Ok(())
    }

    fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<(), Failure> {
        // As Envoy with `allow_on_headers_stop_iteration`: the body buffers while the filter
        // pauses, and each call sees everything buffered so far.
        self.request_had_body = true;
        self.host.state().request_body.extend_from_slice(chunk);
        let total = self.host.state().request_body.len();
        let (host, s) = self.parts()?;
        self.request_action = s.on_request_body(host, total, end_of_stream);
        Ok(())
    }

    fn request_trailers(&mut self, _trailers: &[Pair]) -> Result<(), Failure> {
        // As in Envoy: a body the filter let go (or none at all) is gone by now.
        self.host.state().request_body_released =
            !self.request_had_body || self.request_action == FilterAction::Continue;
        // The trailer map itself is not part of the Host seam: the filter never reads it.
        self.request_action = if self.trailers_callbacks {
            let (host, s) = self.parts()?;
            s.on_request_trailers(host)
        } else {
            FilterAction::Continue
        };
        Ok(())
    }

    fn replied(&self) -> bool {
        self.host.state().local_response.is_some()
    }

    fn answer_call(&mut self, answer: &CallAnswer) -> Result<(), Failure> {
        let Some(token) = self.host.state().http_calls[self.calls_before..]
            .last()
            .map(|c| c.token)
        else {
            return Ok(());
        };
        let (headers, body) = match answer {
            CallAnswer::Timeout(_) => (vec![], vec![]),
            CallAnswer::Response(r) => {
                let body = testkit::body_bytes(r.body.as_ref(), r.body_text.as_deref())?;
                (
                    vec![
                        (":status".to_owned(), r.status.unwrap_or(200).to_string()),
                        ("content-type".to_owned(), "application/json".to_owned()),
                    ],
                    body.unwrap_or_default(),
                )
            }
        };
        let len = body.len();
        self.host.state().call_response = Some((headers, body));
        let (host, s) = self.parts()?;
        s.on_http_call_response(host, token, len);
        self.host.state().call_response = None;
        self.resumed_by_call = true;
        Ok(())
    }

    fn forwarded(&self) -> bool {
        let st = self.host.state();
        let went_on = if self.resumed_by_call {
            st.resumed > 0
        } else {
            self.stream.is_some() && self.request_action == FilterAction::Continue
        };
        went_on && st.local_response.is_none()
    }

    fn response_headers(&mut self, headers: &[Pair], _end_of_stream: bool) -> Result<(), Failure> {
        self.host.state().response_headers = headers.to_vec();
        let (host, s) = self.parts()?;
        self.response_action = Some(s.on_response_headers(host));
        Ok(())
    }

    fn response_body(&mut self, body: &[u8], end_of_stream: bool) -> Result<(), Failure> {
        self.response_had_body = true;
        self.host.state().response_body = body.to_vec();
        let (host, s) = self.parts()?;
        self.response_action = Some(s.on_response_body(host, body.len(), end_of_stream));
        Ok(())
    }

    fn response_trailers(&mut self, _trailers: &[Pair]) -> Result<(), Failure> {
        self.host.state().response_body_released =
            !self.response_had_body || self.response_action == Some(FilterAction::Continue);
        let action = if self.trailers_callbacks {
            let (host, s) = self.parts()?;
            s.on_response_trailers(host)
        } else {
            FilterAction::Continue
        };
        self.response_action = Some(action);
        Ok(())
    }

    fn observe(&self) -> Observed {
        let forwarded = self.forwarded();
        let st = self.host.state();
        let logs = st.logs[self.logs_before..]
            .iter()
            .map(|(level, message)| Log {
                level: format!("{level:?}").to_ascii_lowercase(),
                message: message.clone(),
            })
            .collect();
        let http_calls = st.http_calls[self.calls_before..]
            .iter()
            .map(|c| Call {
                cluster: c.cluster.clone(),
                headers: c.headers.clone(),
                body: c.body.clone(),
            })
            .collect();
        let host_errors = st.violations.clone();
        if self.stream.is_none() {
            return Observed {
                logs,
                http_calls,
                host_errors,
                ..Observed::default()
            };
        }
        Observed {
            forwarded,
            local_response: st.local_response.as_ref().map(|l| Reply {
                status: l.status,
                headers: l.headers.clone(),
                body: l.body.clone(),
            }),
            request_headers: st.request_headers.clone(),
            request_body: st.request_body.clone(),
            response_headers: st.response_headers.clone(),
            // The filter still holds the response at its end: the agent got nothing.
            response_body: if self.response_action == Some(FilterAction::Pause) {
                Vec::new()
            } else {
                st.response_body.clone()
            },
            filter_state: st
                .filter_state
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            http_calls,
            logs,
            host_errors,
        }
    }
}

#[test]
fn every_scenario_passes_natively() {
    if let Err(e) = testkit::run_corpus(start) {
        panic!("{e}");
    }
}

/// The runner must be able to fail: the same scenario with one expectation changed is refused.
#[test]
fn a_wrong_expectation_is_reported() {
    let original = corpus::load_json(&corpus::scenarios_dir().join("deny_default.json")).unwrap();
    let run = |v: &serde_json::Value| {
        testkit::Scenario::from_json(v).and_then(|sc| testkit::run_scenario(&sc, start))
    };
    assert_eq!(run(&original), Ok(()));
    let mut wrong = original;
    wrong["steps"][0]["expect"]["local_response"]["status"] = json!(599);
    let e = run(&wrong).unwrap_err();
    assert!(e.contains("local response status"), "{e}");
}

/// Every step that ends a stream with trailers fails when the filter ignores trailers.
#[test]
fn every_step_ending_with_trailers_fails_without_the_trailers_callbacks() {
    match testkit::trailers_guard(start) {
        Ok(checked) => assert!(checked >= 6, "only {checked} steps end with trailers"),
        Err(e) => panic!("{e}"),
    }
}
