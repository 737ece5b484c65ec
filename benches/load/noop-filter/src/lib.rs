//! The floor under Portcullis in the load benchmark's breakdown (`benches/load/run --variants
//! adnm...`): what any Rust proxy-wasm filter costs in Envoy before it does any work.
//!
//! Plugin configuration `"headers"`: continue at once (the price of a Wasm filter in the chain:
//! context creation, one V8 entry per callback). `"body"`: hold the request until its end and copy
//! the whole body into the VM, as a filter that inspects bodies must (plus Envoy's buffering),
//! then continue. Nothing is parsed or decided. `"props"`: as `"headers"`, plus 8 filter-state
//! writes (`set_property`) of 64 bytes each; `"hdrs"`: plus 8 request-header writes of 64 bytes:
//! the cost of one crossing out of the VM, measured in Envoy. `"mimic"`: no work, but the
//! hostcalls Portcullis makes for an allowed egress GET, with values of its sizes (read the
//! request headers, the peer's SAN and the clock; write the decision and a 1,110-byte receipt
//! header to the request and to the response, four filter-state values of which an 830-byte
//! receipt, one counter: 12 calls, as `benches/cost/run` counts d's): what Envoy's side of those
//! calls costs.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Headers, metric: 0 }) });
}}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Headers,
    Body,
    Props,
    Hdrs,
    Mimic,
}

/// The sizes of what Portcullis writes for an allowed egress GET (variant d of the benchmark).
const RECEIPT_JSON_BYTES: usize = 830;
const RECEIPT_HEADER_BYTES: usize = 1110;

/// Writes per request in the `props` / `hdrs` modes.
const WRITES: usize = 8;
const NAMES: [&str; WRITES] = [
    "x-bench-0",
    "x-bench-1",
    "x-bench-2",
    "x-bench-3",
    "x-bench-4",
    "x-bench-5",
    "x-bench-6",
    "x-bench-7",
];

struct Root {
    mode: Mode,
    /// The `mimic` mode's counter.
    metric: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .filter(|_| size > 0)
            .unwrap_or_default();
        self.mode = match config.as_slice() {
            b"body" => Mode::Body,
            b"props" => Mode::Props,
            b"hdrs" => Mode::Hdrs,
            b"mimic" => Mode::Mimic,
            _ => Mode::Headers,
        };
        if self.mode == Mode::Mimic {
            self.metric = proxy_wasm::hostcalls::define_metric(
                proxy_wasm::types::MetricType::Counter,
                "bench_mimic_allowed",
            )
            .unwrap_or_default();
        }
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            mode: self.mode,
            metric: self.metric,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    mode: Mode,
    metric: u32,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let value = "v".repeat(64);
        match self.mode {
            Mode::Body if !end_of_stream => return Action::Pause,
            Mode::Props => {
                for name in NAMES {
                    self.set_property(vec![name], Some(value.as_bytes()));
                }
            }
            Mode::Hdrs => {
                for name in NAMES {
                    self.set_http_request_header(name, Some(&value));
                }
            }
            Mode::Mimic => {
                std::hint::black_box(self.get_http_request_headers());
                std::hint::black_box(
                    self.get_property(vec!["connection", "uri_san_peer_certificate"]),
                );
                std::hint::black_box(self.get_current_time());
                let receipt = "r".repeat(RECEIPT_HEADER_BYTES);
                self.set_http_request_header("x-portcullis-decision", Some("ALLOW"));
                self.set_http_request_header("x-portcullis-receipt", Some(&receipt));
                self.set_property(vec!["portcullis.decision"], Some(b"ALLOW"));
                self.set_property(vec!["portcullis.rule"], Some(b"allow_github_reads"));
                self.set_property(vec!["portcullis.session"], Some(b"anonymous:10.0.0.1"));
                let json = "j".repeat(RECEIPT_JSON_BYTES);
                self.set_property(vec!["portcullis.receipt"], Some(json.as_bytes()));
                let _ = proxy_wasm::hostcalls::increment_metric(self.metric, 1);
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        if self.mode == Mode::Mimic {
            let receipt = "r".repeat(RECEIPT_HEADER_BYTES);
            self.set_http_response_header("x-portcullis-decision", Some("ALLOW"));
            self.set_http_response_header("x-portcullis-receipt", Some(&receipt));
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if self.mode != Mode::Body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        std::hint::black_box(body);
        Action::Continue
    }
}
