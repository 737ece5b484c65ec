//! The floor under Portcullis in the load benchmark's breakdown (`benches/load/run --variants
//! adnm...`): what any Rust proxy-wasm filter costs in Envoy before it does any work.
//!
//! Plugin configuration `"headers"`: continue at once (the price of a Wasm filter in the chain:
//! context creation, one V8 entry per callback). `"body"`: hold the request until its end and copy
//! the whole body into the VM, as a filter that inspects bodies must (plus Envoy's buffering),
//! then continue. Nothing is parsed or decided. `"props"`: as `"headers"`, plus 8 filter-state
//! writes (`set_property`) of 64 bytes each; `"hdrs"`: plus 8 request-header writes of 64 bytes:
//! the cost of one crossing out of the VM, measured in Envoy.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Headers }) });
}}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Headers,
    Body,
    Props,
    Hdrs,
}

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
            _ => Mode::Headers,
        };
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { mode: self.mode }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    mode: Mode,
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
            _ => {}
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
