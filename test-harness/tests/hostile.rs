//! Untrusted bytes through the BUILT filter must never trap the VM (in Envoy one trap fails every
//! later request on that worker) and never leave a request hanging: every request either goes
//! upstream or gets a local answer. All 318 JSONTestSuite parser cases (valid, invalid and
//! implementation-defined JSON) are sent as MCP request bodies, whole and split in chunks, on ONE
//! host — a trap anywhere fails every case after it.

use harness::{Host, HostConfig};

const HEADERS: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/mcp"),
    (":authority", "workbench"),
    (":scheme", "http"),
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
    ("mcp-session-id", "hostile"),
];

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir =
        testkit::corpus::scenarios_dir().join("../../../shared/corpora/JSONTestSuite/test_parsing");
    let mut cases: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    cases.sort();
    cases
}

/// Sends `body` in `chunks` pieces; returns whether the filter answered it locally, or what went
/// wrong.
fn send(host: &mut Host, body: &[u8], chunks: usize) -> Result<bool, String> {
    let mut s = host.new_stream().map_err(|e| format!("{e:#}"))?;
    s.request_headers(HEADERS, body.is_empty())
        .map_err(|e| format!("{e:#}"))?;
    if !body.is_empty() {
        let size = body.len().div_ceil(chunks).max(1);
        let pieces: Vec<&[u8]> = body.chunks(size).collect();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let v = s.view();
            if v.local_response().is_some() || v.finished() {
                break;
            }
            s.request_body(piece, i == last)
                .map_err(|e| format!("{e:#}"))?;
        }
    }
    let v = s.view();
    if !(v.request_forwarded() || v.local_response().is_some()) {
        return Err("the request was neither forwarded nor answered (left hanging)".to_string());
    }
    if let Some(reply) = v.local_response()
        && !(200..600).contains(&reply.status)
    {
        return Err(format!("local reply with status {}", reply.status));
    }
    Ok(v.local_response().is_some())
}

#[test]
fn no_json_test_suite_case_traps_the_filter_or_leaves_a_request_hanging() {
    let module = match harness::build::filter_module() {
        Ok(m) => m,
        Err(e) => panic!("cannot load the filter: {e:#}"),
    };
    let config = HostConfig::new(
        testkit::fixtures::scenario_config(
            &testkit::corpus::scenarios_dir().join("policies/basic.pcl"),
        )
        .unwrap(),
    )
    .with_start_ms(testkit::fixtures::START_MS)
    .with_clusters(["context-risk"]);
    let mut host = Host::start(module, config).unwrap();
    let cases = corpus();
    assert_eq!(cases.len(), 318, "JSONTestSuite test_parsing has 318 cases");
    for (name, body) in &cases {
        for chunks in [1, 3] {
            let local = match send(&mut host, body, chunks) {
                Ok(local) => local,
                Err(e) => panic!("{name} in {chunks} chunk(s): {e}"),
            };
            // Whatever is not a JSON object cannot be a JSON-RPC request: it must be refused,
            // never forwarded unchecked.
            if body.first() != Some(&b'{') {
                assert!(local, "{name} in {chunks} chunk(s) was forwarded upstream");
            }
        }
    }
}
