//! A strict proxy-wasm (ABI v0.2.1) host on wasmtime that loads the built Portcullis `.wasm`
//! and drives it the way Envoy does, so the same scenario files that run natively against
//! `filter/core`'s mock host also run against the real module.
//!
//! # Use
//!
//! ```no_run
//! use harness::{Host, HostConfig, Action};
//!
//! # fn main() -> anyhow::Result<()> {
//! let module = harness::build::filter_module()?; // builds target/wasm32-wasip1/release/portcullis.wasm if stale
//! let mut h = Host::start(module, HostConfig::new(r#"{"bundle": {}}"#).with_env("KEY", "v"))?;
//! let mut s = h.new_stream()?;
//! let action = s.request_headers(&[(":method", "POST"), (":path", "/mcp")], false)?;
//! assert_eq!(action, Action::Pause);
//! s.request_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, true)?;
//! if let Some(reply) = s.local_response() {
//!     println!("{} {}", reply.status, reply.body_text());
//! }
//! let view = s.view();
//! println!("{:?}", view.forwarded_request_header("x-portcullis-decision"));
//! println!("{:?}", view.filter_state_str("wasm.portcullis.receipt"));
//! let id = s.id();
//! // (the stream borrows the host; use `h` again once `s` is no longer used)
//! for call in h.pending_http_calls() { println!("{} {:?}", call.cluster, call.header(":path")); }
//! # let token = 1;
//! h.respond_http_call(token, 200, &[("content-type", "application/json")], b"{}")?; // or h.fail_http_call(token)
//! let _ = h.stream_view(id);
//! h.advance_time(60_000);
//! h.tick()?;
//! println!("{} log lines, {:?}", h.logs().len(), h.metric("portcullis_decisions"));
//! # Ok(()) }
//! ```
//!
//! `PORTCULLIS_WASM=<path>` makes [`build::filter_wasm`] use that file instead of building.
//!
//! # What the host does (Envoy's behaviour, mirrored)
//!
//! - Lifecycle: `_initialize` (or `_start`), `proxy_on_context_create(1, 0)`,
//!   `proxy_on_vm_start`, `proxy_on_configure` with the plugin configuration buffer; a `false`
//!   from either makes [`Host::start`] fail. Each stream is a new context; it ends with
//!   `proxy_on_log`, `proxy_on_done`, `proxy_on_delete` (or waits for `proxy_done`).
//! - Streams: see [`stream`] for the exact body buffering, continue and local-response rules.
//!   Local responses run back through the filter's response callbacks, as in Envoy.
//! - Header maps: names lowercased; serialized exactly per the spec; a map is reachable only
//!   while Envoy holds it for the filter (e.g. request headers are gone once the request
//!   continued: reading one is `BAD_ARGUMENT`, which the Rust SDK turns into a panic — as in
//!   Envoy).
//! - Properties: test-provided values by exact path; `proxy_set_property(path, v)` stores filter
//!   state `wasm.<path>` (a multi-segment path keeps its NUL bytes, as in Envoy), readable with
//!   [`StreamView::filter_state`].
//! - Shared data with Envoy's CAS rules; metrics with Envoy's id scheme and rules; call-outs
//!   recorded and answered by the test ([`Host::respond_http_call`], [`Host::fail_http_call`]),
//!   delivered to the root context; ticks only when the test calls [`Host::tick`]; a simulated
//!   clock ([`Host::advance_time`]); deterministic `random_get`; stdout/stderr as log lines.
//!
//! # Strictness
//!
//! Every hostcall returns exactly the statuses the spec lists and bounds-checks every pointer.
//! Importing a function Envoy does not provide fails [`Host::start`]; calling an ABI function
//! the harness does not implement (gRPC, queues, foreign functions) traps with its name. A trap
//! fails the operation and every later one (Envoy fails requests on a crashed VM); the error
//! carries the module's last error output (a Rust panic message). Things Envoy would tolerate
//! silently but that are filter bugs (header values with CR/LF/NUL, two local responses,
//! continuing a non-stream context, pausing its own local response) fail the operation too and
//! stay listed in [`Host::violations`]. State lives in the wasmtime `Store`: hosts are
//! independent and tests can run in parallel.

pub mod abi;
pub mod build;
pub mod config;
mod deferred;
mod guest;
mod host;
mod imports;
pub mod state;
pub mod stream;

pub use abi::{Action, LogLevel, MetricType, Pairs, Status};
pub use config::HostConfig;
pub use host::{FilterModule, Host};
pub use state::{CasOutcome, HttpCall, HttpCallState, LocalResponse, LogEntry, Metric, SharedData};
pub use stream::{Stream, StreamView};
