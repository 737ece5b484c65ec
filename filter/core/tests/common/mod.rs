//! Fixtures shared by filter-core's integration tests: a scenario pack compiled and signed with the
//! test bundle key, and the plugin configuration around it (trusted bundle key, receipt signing
//! key). Each test file adds the members it needs on top.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "each test binary uses a subset; test code: a failed unwrap is a failed test"
)]

use std::rc::Rc;

use filter_core::Plugin;
use filter_core::mock::MockHost;
use serde_json::Value;

/// Seed of the filter's receipt signing key in the test config.
pub const RECEIPT_KEY_SEED: u8 = testkit::fixtures::RECEIPT_KEY_SEED;

/// The plugin configuration for `testdata/scenarios/policies/<pack>` (compiled and signed with
/// the test bundle key, see `testkit::fixtures::plugin_config`), with `extra`'s members added
/// (or replacing the base ones).
pub fn config(pack: &str, extra: Value) -> Vec<u8> {
    let path = testkit::corpus::scenarios_dir().join("policies").join(pack);
    testkit::fixtures::plugin_config(&path, &extra)
        .unwrap()
        .into_bytes()
}

/// A plugin configured with [`config`]; fails the test if the configuration is refused.
pub fn plugin(host: &MockHost, pack: &str, extra: Value) -> Rc<Plugin> {
    let p = Rc::new(Plugin::configure(host, &config(pack, extra)));
    assert_eq!(p.error(), None);
    p
}

/// Send one MCP POST (`body`, JSON) through a new stream of `plugin`: the MCP request headers
/// plus `extra` headers, then the body unless the filter already answered at headers time.
/// Returns the stream and what the last callback told the proxy.
pub fn send_mcp(
    host: &MockHost,
    plugin: &Rc<Plugin>,
    extra: &[(&str, &str)],
    body: &Value,
) -> (filter_core::Stream, filter_core::FilterAction) {
    let headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "workbench"),
        (":scheme", "http"),
        ("content-type", "application/json"),
    ]
    .iter()
    .chain(extra)
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    host.new_stream(headers);
    let bytes = serde_json::to_vec(body).unwrap();
    let mut stream = filter_core::Stream::new(Rc::clone(plugin));
    let mut a = stream.on_request_headers(host, false);
    if host.state().local_response.is_none() {
        host.state().request_body = bytes.clone();
        a = stream.on_request_body(host, bytes.len(), true);
    }
    (stream, a)
}

/// Every receipt line the filter wrote to the proxy log so far (checkpoints, session ends):
/// what `policyc receipts verify` reads from Envoy's own log.
pub fn logged_receipts(host: &MockHost) -> Vec<String> {
    host.state()
        .logs
        .iter()
        .filter_map(|(_, l)| l.strip_prefix("portcullis receipt "))
        .map(str::to_owned)
        .collect()
}

/// The value of the filter's metric `name` (0 when it was never counted).
pub fn metric(host: &MockHost, name: &str) -> i64 {
    host.state()
        .metrics
        .iter()
        .find(|m| m.name == name)
        .map_or(0, |m| m.value)
}

/// Protobuf as etcd writes it, for the tests that play etcd (`state_store.rs`,
/// `session_etcd.rs`).
pub mod etcd_wire {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        reason = "test code: small values"
    )]

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field.
    pub fn bytes_field(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(n << 3 | 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }

    /// A varint field.
    pub fn int_field(n: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(n << 3, &mut out);
        varint(v, &mut out);
        out
    }

    /// A `ResponseHeader` at store revision `rev`.
    pub fn header(rev: u64) -> Vec<u8> {
        bytes_field(1, &int_field(3, rev))
    }
}
