//! What a scenario step needs from a filter, whatever runs it (the mock host, the built `.wasm`
//! under the wasmtime host, ...), and what it reads back.

use std::collections::BTreeMap;

use crate::format::{CallAnswer, Pair, Property, Scenario};
use crate::{corpus, fixtures};

/// Why a run failed, in words.
pub type Failure = String;

/// How a filter is started for one scenario.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The plugin configuration (`proxy_on_configure`), placeholders filled.
    pub plugin_config: String,
    /// VM environment variables, placeholders filled.
    pub vm_env: Vec<(String, String)>,
    /// Clock start, ms since the Unix epoch.
    pub start_ms: u64,
    /// `false` models a filter built without the trailers callbacks: the proxy then continues
    /// the stream at trailers without asking it (used to show trailers steps would catch it).
    pub trailers_callbacks: bool,
}

impl Setup {
    /// The setup of a scenario: its policy compiled and signed, the base configuration patched
    /// with `config` (or `raw_config`), every placeholder filled.
    pub fn for_scenario(sc: &Scenario) -> Result<Setup, Failure> {
        let bundle_b64 = match &sc.policy {
            Some(p) => fixtures::signed_bundle_b64(&corpus::scenarios_dir().join(p))?,
            None => String::new(),
        };
        let map = fixtures::placeholders(&bundle_b64);
        let plugin_config = match &sc.raw_config {
            Some(raw) => fixtures::fill(raw, &map),
            None => {
                let mut c = fixtures::scenario_base_config();
                if let Some(patch) = &sc.config {
                    fixtures::merge_patch(&mut c, patch);
                }
                fixtures::fill_json(&mut c, &map);
                c.to_string()
            }
        };
        let vm_env = sc
            .vm_env
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), fixtures::fill(v, &map)))
            .collect();
        Ok(Setup {
            plugin_config,
            vm_env,
            start_ms: fixtures::START_MS,
            trailers_callbacks: true,
        })
    }
}

/// One filter driven through scenario steps. A step calls, in order: [`begin_step`], the clock
/// and timer, then for a request [`request_headers`], [`request_body`] per piece and
/// [`request_trailers`] while [`replied`] is false, [`answer_call`], and when [`forwarded`] the
/// response callbacks likewise; then [`observe`].
///
/// [`begin_step`]: FilterUnderTest::begin_step
/// [`request_headers`]: FilterUnderTest::request_headers
/// [`request_body`]: FilterUnderTest::request_body
/// [`request_trailers`]: FilterUnderTest::request_trailers
/// [`replied`]: FilterUnderTest::replied
/// [`answer_call`]: FilterUnderTest::answer_call
/// [`forwarded`]: FilterUnderTest::forwarded
/// [`observe`]: FilterUnderTest::observe
pub trait FilterUnderTest {
    /// A step starts: [`observe`](FilterUnderTest::observe) reports logs and call-outs from here.
    fn begin_step(&mut self);
    /// The clock, ms since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Moves the clock.
    fn advance_ms(&mut self, ms: u64);
    /// Fires the tick timer.
    fn tick(&mut self) -> Result<(), Failure>;
    /// Opens a new stream that sees `properties` and delivers its request headers (names as the
    /// scenario wrote them).
    fn request_headers(
        &mut self,
        headers: &[Pair],
        properties: &[Property],
        end_of_stream: bool,
    ) -> Result<(), Failure>;
    /// Delivers one piece of the request body.
    fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<(), Failure>;
    /// Ends the request with trailers.
    fn request_trailers(&mut self, trailers: &[Pair]) -> Result<(), Failure>;
    /// The stream is over for the proxy: the filter answered locally (or it ended otherwise), so
    /// nothing more is delivered to it.
    fn replied(&self) -> bool;
    /// Answers the most recent call-out the filter dispatched during this step; does nothing
    /// when it dispatched none.
    fn answer_call(&mut self, answer: &CallAnswer) -> Result<(), Failure>;
    /// The request went upstream (headers, body and trailers), with no local response.
    fn forwarded(&self) -> bool;
    /// Delivers the upstream's response headers.
    fn response_headers(&mut self, headers: &[Pair], end_of_stream: bool) -> Result<(), Failure>;
    /// Delivers the upstream's response body (one piece).
    fn response_body(&mut self, body: &[u8], end_of_stream: bool) -> Result<(), Failure>;
    /// Ends the response with trailers.
    fn response_trailers(&mut self, trailers: &[Pair]) -> Result<(), Failure>;
    /// What came out of the filter during this step.
    fn observe(&self) -> Observed;
}

/// A local response as the agent receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers (lowercase names).
    pub headers: Vec<Pair>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A call-out the filter dispatched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Call {
    /// Upstream cluster.
    pub cluster: String,
    /// Request headers (lowercase names).
    pub headers: Vec<Pair>,
    /// Request body.
    pub body: Vec<u8>,
}

/// One log line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log {
    /// Level, as the host names it.
    pub level: String,
    /// The message.
    pub message: String,
}

/// What came out of the filter during one step (a step without a request leaves the stream
/// parts empty).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The request went upstream.
    pub forwarded: bool,
    /// The filter's local response, if it sent one.
    pub local_response: Option<Reply>,
    /// Request headers after the filter ran (what goes upstream).
    pub request_headers: Vec<Pair>,
    /// The request body upstream received.
    pub request_body: Vec<u8>,
    /// Response headers after the filter ran.
    pub response_headers: Vec<Pair>,
    /// The response body the agent received (nothing while the filter holds the response).
    pub response_body: Vec<u8>,
    /// Filter state by the key Envoy's access log uses (`wasm.portcullis.decision`).
    pub filter_state: BTreeMap<String, String>,
    /// Call-outs dispatched during the step.
    pub http_calls: Vec<Call>,
    /// Log lines of the step.
    pub logs: Vec<Log>,
    /// Misuse of the host the real proxy would reject (fails the step whatever it expects).
    pub host_errors: Vec<String>,
}
