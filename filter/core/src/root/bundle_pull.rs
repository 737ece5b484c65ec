//! Pulling the policy bundle from a bundle server (`bundle.server` in the plugin configuration;
//! docs/deploy-istio.md, "Bundle server").
//!
//! The root context of each worker owns one [`BundlePuller`]. On its timer it sends a GET to the
//! configured Envoy cluster, with `If-None-Match` carrying the ETag of the bundle in force. A `304`
//! changes nothing. A `200` body is a candidate: it must match the pin (`sha256`, when given) and
//! verify against `trusted_bundle_keys` before anything changes; then the root context swaps in a
//! new [`Plugin`] built from the same configuration with the fetched bundle (new requests use it,
//! requests in flight finish with the old one, sessions in shared data carry over, as with an ECDS
//! push). Anything else — no answer, a timeout, another status, an oversized, unsigned, untrusted,
//! corrupt or mis-pinned body — keeps the bundle in force (the last good one) and is counted and
//! logged. With no bundle in force yet (no inline bundle, no good fetch) every request is denied.

use bundle::Trust;
use sha2::{Digest as _, Sha256};

use super::Plugin;
use crate::config::{self, BundleServer};
use crate::error::PullError;
use crate::host::{Host, LogLevel, MetricKind};
use crate::limits::MAX_BUNDLE_BYTES;

/// The timer period the puller needs (it polls on the root context's tick).
pub const PULL_TICK_MS: u64 = 1000;

/// Outcome of one fetch, as counted in `portcullis_bundle_loads_<result>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadResult {
    /// A new bundle was verified and is now in force.
    Ok,
    /// The server answered 304 (or sent the bundle already in force).
    NotModified,
    /// No usable answer: dispatch failed, timeout, reset, status other than 200/304, oversize.
    FetchError,
    /// A body that is not an acceptable bundle (pin mismatch, unsigned, untrusted, corrupt).
    BadBundle,
}

impl LoadResult {
    const ALL: [LoadResult; 4] = [
        LoadResult::Ok,
        LoadResult::NotModified,
        LoadResult::FetchError,
        LoadResult::BadBundle,
    ];

    /// The metric name.
    pub fn metric(self) -> &'static str {
        match self {
            LoadResult::Ok => "portcullis_bundle_loads_ok",
            LoadResult::NotModified => "portcullis_bundle_loads_not_modified",
            LoadResult::FetchError => "portcullis_bundle_loads_fetch_error",
            LoadResult::BadBundle => "portcullis_bundle_loads_bad_bundle",
        }
    }
}

/// One worker's bundle poller (lives in the root context).
#[derive(Debug)]
pub struct BundlePuller {
    config: Vec<u8>,
    server: BundleServer,
    trusted: Vec<ed25519_dalek::VerifyingKey>,
    etag: Option<String>,
    in_force: Option<[u8; 32]>,
    pending: Option<u32>,
    next_poll_ms: u64,
    tick_ms: u64,
    metric_ids: Vec<(LoadResult, u32)>,
}

impl BundlePuller {
    /// A puller for this plugin configuration, or `None` when it names no bundle server (or is
    /// invalid: the plugin then denies everything and there is nothing to poll for). Asks the
    /// host for a timer of at most [`PULL_TICK_MS`] (the receipt timer copes with a faster tick).
    pub fn new(host: &dyn Host, config: &[u8]) -> Option<BundlePuller> {
        let cfg = config::parse(config).ok()?;
        let server = cfg.bundle_server?;
        let in_force = (!cfg.bundle.is_empty()).then(|| Sha256::digest(&cfg.bundle).into());
        let metric_ids = LoadResult::ALL
            .iter()
            .filter_map(|r| {
                host.define_metric(MetricKind::Counter, r.metric())
                    .ok()
                    .map(|id| (*r, id))
            })
            .collect();
        let tick = match cfg.receipts.tick_ms {
            0 => PULL_TICK_MS,
            t => t.min(PULL_TICK_MS),
        };
        host.set_tick_period_ms(tick);
        Some(BundlePuller {
            config: config.to_vec(),
            server,
            trusted: cfg.trusted_bundle_keys,
            etag: None,
            in_force,
            pending: None,
            next_poll_ms: 0,
            tick_ms: tick,
            metric_ids,
        })
    }

    fn pinned_and_in_force(&self) -> bool {
        self.server.sha256.is_some() && self.server.sha256 == self.in_force
    }

    fn count(&self, host: &dyn Host, r: LoadResult) {
        if let Some((_, id)) = self.metric_ids.iter().find(|(m, _)| *m == r) {
            host.increment_metric(*id, 1);
        }
    }

    fn where_from(&self) -> String {
        format!("{}{}", self.server.cluster, self.server.path)
    }

    /// The timer: send a fetch when one is due and none is outstanding.
    pub fn on_tick(&mut self, host: &dyn Host) {
        let now = host.now_ms();
        if self.pending.is_some() || now < self.next_poll_ms || self.pinned_and_in_force() {
            return;
        }
        self.next_poll_ms = now.saturating_add(self.server.poll_interval_ms);
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", "GET"),
            (":path", &self.server.path),
            (":authority", &self.server.authority),
            ("accept", "application/octet-stream"),
        ];
        if let Some(etag) = &self.etag {
            headers.push(("if-none-match", etag));
        }
        match host.dispatch_http_call(&self.server.cluster, &headers, b"", self.server.timeout_ms) {
            Ok(token) => self.pending = Some(token),
            Err(e) => self.fail(host, &PullError::Dispatch(e.0)),
        }
    }

    /// A call-out answered. Returns the plugin to swap in when a new good bundle arrived; `None`
    /// otherwise (not our call, unchanged, or refused: the bundle in force stays).
    pub fn on_response(&mut self, host: &dyn Host, token: u32, body_size: usize) -> Option<Plugin> {
        if self.pending != Some(token) {
            return None;
        }
        self.pending = None;
        match self.handle(host, body_size) {
            Ok(None) => {
                self.count(host, LoadResult::NotModified);
                None
            }
            Ok(Some(plugin)) => {
                self.count(host, LoadResult::Ok);
                // The new plugin set the receipt timer's period; keep the puller's.
                host.set_tick_period_ms(self.tick_ms);
                Some(plugin)
            }
            Err(e) => {
                self.fail(host, &e);
                None
            }
        }
    }

    /// Log and count a failed fetch.
    fn fail(&self, host: &dyn Host, e: &PullError) {
        host.log(
            LogLevel::Error,
            &format!(
                "portcullis: bundle fetch from {}: {e}; keeping the bundle in force",
                self.where_from()
            ),
        );
        self.count(host, LoadResult::of(e));
    }

    /// Read the answer: the plugin with the new bundle, `None` when the bundle in force is still
    /// current, or why the answer cannot be used.
    fn handle(&mut self, host: &dyn Host, body_size: usize) -> Result<Option<Plugin>, PullError> {
        let headers = host.http_call_response_headers();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let status = header(":status").ok_or(PullError::NoAnswer)?;
        match status.as_str() {
            "304" => return Ok(None),
            "200" => {}
            _ => return Err(PullError::Status(status)),
        }
        if body_size > MAX_BUNDLE_BYTES {
            return Err(PullError::TooLarge {
                size: body_size,
                max: MAX_BUNDLE_BYTES,
            });
        }
        let body = host.http_call_response_body(body_size).unwrap_or_default();
        if body.is_empty() {
            return Err(PullError::Empty);
        }
        let sha: [u8; 32] = Sha256::digest(&body).into();
        if let Some(pin) = self.server.sha256
            && pin != sha
        {
            return Err(PullError::NotPinned {
                got: hex::encode(sha),
                pinned: hex::encode(pin),
            });
        }
        if self.in_force == Some(sha) {
            self.etag = header("etag");
            return Ok(None);
        }
        bundle::PackSet::from_bytes(&body, &Trust::Keys(self.trusted.clone()))
            .map_err(PullError::Refused)?;
        let plugin = Plugin::configure_with(host, &self.config, Some(&body));
        if let Some(e) = plugin.error() {
            // Not the bundle's fault (e.g. the signing key); the new plugin would deny everything.
            return Err(PullError::Unusable(e.clone()));
        }
        self.in_force = Some(sha);
        self.etag = header("etag");
        Ok(Some(plugin))
    }
}

impl LoadResult {
    /// How a failed fetch is counted.
    fn of(e: &PullError) -> LoadResult {
        match e {
            PullError::Dispatch(_)
            | PullError::NoAnswer
            | PullError::Status(_)
            | PullError::TooLarge { .. } => LoadResult::FetchError,
            PullError::Empty
            | PullError::NotPinned { .. }
            | PullError::Refused(_)
            | PullError::Unusable(_) => LoadResult::BadBundle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;
    use crate::stream::Stream;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bundle::keys::{format_signing_key, format_verifying_key, signing_key_from_seed};
    use std::rc::Rc;

    const POLICY_ALLOW: &str = r#"pack "pull" {
  version "1.0.0"
  mode enforce
  default deny "not allowed"
}

rule reads {
  when kind == http and operation == "GET"
  allow "v1 allows reads"
}
"#;

    fn policy_deny() -> String {
        POLICY_ALLOW
            .replace("1.0.0", "2.0.0")
            .replace("allow \"v1 allows reads\"", "deny \"v2 denies reads\"")
    }

    fn bundle(src: &str, seed: u8) -> Vec<u8> {
        let ast = policy::syntax::parse(src).unwrap();
        let unsigned = policy::codegen::compile(&ast).unwrap();
        bundle::sign(&unsigned, &signing_key_from_seed([seed; 32])).unwrap()
    }

    fn config(inline: Option<&[u8]>, server: serde_json::Value) -> Vec<u8> {
        let mut b = serde_json::json!({ "server": server });
        if let Some(bytes) = inline {
            b["inline_base64"] = STANDARD.encode(bytes).into();
        }
        let trusted = format_verifying_key(&signing_key_from_seed([1; 32]).verifying_key());
        let receipt = format_signing_key(&signing_key_from_seed([9; 32]));
        serde_json::to_vec(&serde_json::json!({
            "bundle": b,
            "trusted_bundle_keys": [trusted],
            "signing_key": { "inline": receipt },
            "receipts": { "tick_ms": 0 }
        }))
        .unwrap()
    }

    fn server() -> serde_json::Value {
        serde_json::json!({"cluster": "bundles", "authority": "bundles.internal", "path": "/p.bundle", "poll_interval_s": 10})
    }

    /// The decision for a plain `GET http://api.example.com/x` under `plugin`.
    fn decide(host: &MockHost, plugin: &Rc<Plugin>) -> String {
        host.new_stream(vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/x".into()),
            (":authority".into(), "api.example.com".into()),
            (":scheme".into(), "http".into()),
        ]);
        let mut s = Stream::new(Rc::clone(plugin));
        let _ = s.on_request_headers(host, true);
        host.filter_state_str("wasm.portcullis.decision")
            .unwrap_or_default()
    }

    /// Poll and deliver `status`/`etag`/`body` as the server's answer.
    fn poll(
        host: &MockHost,
        p: &mut BundlePuller,
        status: Option<&str>,
        etag: Option<&str>,
        body: &[u8],
    ) -> Option<Plugin> {
        let before = host.state().http_calls.len();
        p.on_tick(host);
        let call = host.state().http_calls.get(before).cloned()?;
        let mut headers = Vec::new();
        if let Some(s) = status {
            headers.push((":status".to_owned(), s.to_owned()));
        }
        if let Some(e) = etag {
            headers.push(("etag".to_owned(), e.to_owned()));
        }
        host.state().call_response = Some((headers, body.to_vec()));
        let swapped = p.on_response(host, call.token, body.len());
        host.state().call_response = None;
        host.advance(10_000);
        swapped
    }

    fn last_call_header(host: &MockHost, name: &str) -> Option<String> {
        let s = host.state();
        let call = s.http_calls.last()?;
        call.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn good_push_swaps_bad_push_keeps_the_last_good_bundle() {
        let host = MockHost::new(1_000_000);
        let v1 = bundle(POLICY_ALLOW, 1);
        let v2 = bundle(&policy_deny(), 1);
        let cfg = config(Some(&v1), server());
        let mut plugin = Rc::new(Plugin::configure(&host, &cfg));
        let mut p = BundlePuller::new(&host, &cfg).unwrap();
        assert_eq!(host.state().tick_period_ms, PULL_TICK_MS);
        assert_eq!(decide(&host, &plugin), "ALLOW");

        // A bundle signed by an untrusted key: refused, v1 stays.
        let stranger = bundle(&policy_deny(), 7);
        assert!(poll(&host, &mut p, Some("200"), Some("\"s\""), &stranger).is_none());
        assert_eq!(host.metric("portcullis_bundle_loads_bad_bundle"), Some(1));
        // Corrupt bytes, a 500 and no answer at all: refused, v1 stays.
        assert!(poll(&host, &mut p, Some("200"), None, b"PCLB garbage").is_none());
        assert!(poll(&host, &mut p, Some("500"), None, b"oops").is_none());
        assert!(poll(&host, &mut p, None, None, b"").is_none());
        assert_eq!(host.metric("portcullis_bundle_loads_bad_bundle"), Some(2));
        assert_eq!(host.metric("portcullis_bundle_loads_fetch_error"), Some(2));
        assert_eq!(decide(&host, &plugin), "ALLOW", "enforcement unchanged");
        assert_eq!(
            last_call_header(&host, "if-none-match"),
            None,
            "no ETag yet"
        );

        // The good push takes effect on this poll.
        let swapped = poll(&host, &mut p, Some("200"), Some("\"v2\""), &v2).unwrap();
        plugin = Rc::new(swapped);
        assert_eq!(host.metric("portcullis_bundle_loads_ok"), Some(1));
        assert_eq!(
            host.state().tick_period_ms,
            PULL_TICK_MS,
            "still polling after the swap"
        );
        assert_eq!(decide(&host, &plugin), "DENY");
        assert!(
            host.state()
                .logs
                .iter()
                .any(|(_, l)| l.contains("version `2.0.0`"))
        );

        // Next poll is conditional; 304 keeps v2.
        assert!(poll(&host, &mut p, Some("304"), None, b"").is_none());
        assert_eq!(
            last_call_header(&host, "if-none-match").as_deref(),
            Some("\"v2\"")
        );
        assert_eq!(host.metric("portcullis_bundle_loads_not_modified"), Some(1));
        assert_eq!(decide(&host, &plugin), "DENY");
    }

    #[test]
    fn polls_at_the_interval_and_one_at_a_time() {
        let host = MockHost::new(1_000_000);
        let cfg = String::from_utf8(config(Some(&bundle(POLICY_ALLOW, 1)), server()))
            .unwrap()
            .replace("\"tick_ms\":0", "\"tick_ms\":250");
        let mut p = BundlePuller::new(&host, cfg.as_bytes()).unwrap();
        assert_eq!(host.state().tick_period_ms, 250);
        p.on_tick(&host);
        p.on_tick(&host);
        assert_eq!(
            host.state().http_calls.len(),
            1,
            "one fetch outstanding at a time"
        );
        let call = host.state().http_calls.first().cloned().unwrap();
        assert_eq!(call.cluster, "bundles");
        assert!(call.headers.contains(&(":path".into(), "/p.bundle".into())));
        assert!(
            call.headers
                .contains(&(":authority".into(), "bundles.internal".into()))
        );
        host.state().call_response = Some((vec![(":status".into(), "304".into())], vec![]));
        p.on_response(&host, call.token, 0);
        host.state().call_response = None;
        p.on_tick(&host);
        assert_eq!(host.state().http_calls.len(), 1, "not before the interval");
        host.advance(10_000);
        p.on_tick(&host);
        assert_eq!(host.state().http_calls.len(), 2);
        // A response to somebody else's call is not ours.
        assert!(p.on_response(&host, 999, 0).is_none());
    }

    #[test]
    fn without_an_inline_bundle_everything_is_denied_until_the_first_good_fetch() {
        let host = MockHost::new(1_000_000);
        let cfg = config(None, server());
        let plugin = Rc::new(Plugin::configure(&host, &cfg));
        assert_eq!(
            plugin.error(),
            Some(&crate::error::FilterError::NoBundleYet)
        );
        assert_eq!(decide(&host, &plugin), "DENY");
        let mut p = BundlePuller::new(&host, &cfg).unwrap();
        let swapped = poll(&host, &mut p, Some("200"), None, &bundle(POLICY_ALLOW, 1)).unwrap();
        assert_eq!(decide(&host, &Rc::new(swapped)), "ALLOW");
    }

    #[test]
    fn a_pinned_reference_accepts_only_its_bundle_and_then_stops_polling() {
        let host = MockHost::new(1_000_000);
        let v1 = bundle(POLICY_ALLOW, 1);
        let v2 = bundle(&policy_deny(), 1);
        let mut srv = server();
        srv["sha256"] = hex::encode(Sha256::digest(&v1)).into();
        let cfg = config(None, srv);
        let mut p = BundlePuller::new(&host, &cfg).unwrap();
        assert!(
            poll(&host, &mut p, Some("200"), None, &v2).is_none(),
            "signed, but not the pinned one"
        );
        assert!(
            host.state()
                .logs
                .iter()
                .any(|(_, l)| l.contains("is not the pinned"))
        );
        assert!(poll(&host, &mut p, Some("200"), None, &v1).is_some());
        let calls = host.state().http_calls.len();
        p.on_tick(&host);
        assert_eq!(
            host.state().http_calls.len(),
            calls,
            "pinned bundle in force: no more polls"
        );
    }

    #[test]
    fn a_failed_dispatch_is_counted_and_retried_at_the_next_interval() {
        let host = MockHost::new(1_000_000);
        let cfg = config(Some(&bundle(POLICY_ALLOW, 1)), server());
        let mut p = BundlePuller::new(&host, &cfg).unwrap();
        host.state().fail_http_calls = true;
        p.on_tick(&host);
        assert_eq!(host.metric("portcullis_bundle_loads_fetch_error"), Some(1));
        host.state().fail_http_calls = false;
        p.on_tick(&host);
        assert!(host.state().http_calls.is_empty(), "no tight retry");
        host.advance(10_000);
        p.on_tick(&host);
        assert_eq!(host.state().http_calls.len(), 1);
    }

    #[test]
    fn server_settings_are_checked() {
        let bad = [
            (
                serde_json::json!({"cluster": "", "path": "/b"}),
                "`cluster`",
            ),
            (serde_json::json!({"cluster": "c", "path": "b"}), "`path`"),
            (
                serde_json::json!({"cluster": "c", "path": "/b", "poll_interval_s": 1}),
                "poll_interval_s",
            ),
            (
                serde_json::json!({"cluster": "c", "path": "/b", "timeout_ms": 5}),
                "timeout_ms",
            ),
            (
                serde_json::json!({"cluster": "c", "path": "/b", "sha256": "abc"}),
                "`sha256`",
            ),
            (
                serde_json::json!({"cluster": "c", "path": "/b", "etag": "x"}),
                "unknown field",
            ),
        ];
        for (srv, want) in bad {
            let e = config::parse(&config(None, srv.clone())).unwrap_err();
            assert!(e.0.contains(want), "{srv}: {e}");
        }
        let ok = config::parse(&config(None, server())).unwrap();
        let s = ok.bundle_server.unwrap();
        assert_eq!(
            (s.poll_interval_ms, s.timeout_ms, s.sha256),
            (10_000, config::bundle_server::DEFAULT_TIMEOUT_MS, None)
        );
        assert!(ok.bundle.is_empty());
    }
}
