//! proxy-wasm glue: implements `filter_core::Host` over the proxy-wasm ABI. Thin by design: every
//! decision is made in `filter_core`; this file only moves bytes between Envoy and it.
//!
//! No panics: every host call's error is turned into "absent" / ignored (the filter core fails
//! closed on missing data), because a trapped VM fails every later request on the worker. The
//! SDK's wrappers of the calls that change a stream panic on a refusal, so those go through
//! `raw` instead.

mod raw;

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use filter_core::BundlePuller;
use filter_core::host::{Host, HostError, LogLevel, MetricKind, SharedDataError, SharedValue};
use filter_core::{FilterAction, Plugin, Stream};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};

/// The module's entry point (`_initialize`, exported by the macro): installs the root context.
mod entry {
    use super::Root;
    use proxy_wasm::traits::RootContext;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
        // After `set_log_level`, which installs the SDK's own hook: this one replaces it.
        std::panic::set_hook(Box::new(super::log_panic));
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { plugin: None, puller: None }) });
    }}
}

/// The panic hook: a panic is a bug (nothing untrusted may cause one), and the VM traps right
/// after it, failing every later request on the worker until Envoy replaces the VM. Say so at
/// critical level, with the panic's text and place, before the trap; a failure to log is
/// ignored (a panic inside the hook would abort without a word).
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let _ = hostcalls::log(
        proxy_wasm::types::LogLevel::Critical,
        &format!("portcullis: panic, the Wasm VM traps: {info}"),
    );
}

/// The proxy, reached through proxy-wasm host calls (acting on the current context).
struct WasmHost;

thread_local! {
    /// Envoy's log level as last read (at configure time and on every timer tick), so the request
    /// path does not cross into the host for every line it might write. Trace until first read.
    static PROXY_LOG_LEVEL: std::cell::Cell<LogLevel> = const { std::cell::Cell::new(LogLevel::Trace) };
}

/// Read Envoy's current log level (an admin `/logging` change shows at the next tick).
fn refresh_log_level() {
    use proxy_wasm::types::LogLevel as P;
    if let Ok(l) = hostcalls::get_log_level() {
        let l = match l {
            P::Trace => LogLevel::Trace,
            P::Debug => LogLevel::Debug,
            P::Info => LogLevel::Info,
            P::Warn => LogLevel::Warn,
            P::Error | P::Critical => LogLevel::Error,
        };
        PROXY_LOG_LEVEL.with(|c| c.set(l));
    }
}

fn level(l: LogLevel) -> proxy_wasm::types::LogLevel {
    match l {
        LogLevel::Trace => proxy_wasm::types::LogLevel::Trace,
        LogLevel::Debug => proxy_wasm::types::LogLevel::Debug,
        LogLevel::Info => proxy_wasm::types::LogLevel::Info,
        LogLevel::Warn => proxy_wasm::types::LogLevel::Warn,
        LogLevel::Error => proxy_wasm::types::LogLevel::Error,
    }
}

fn status_text(s: Status) -> String {
    format!("host call failed: {s:?}")
}

impl Host for WasmHost {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn log(&self, l: LogLevel, message: &str) {
        let _ = hostcalls::log(level(l), message);
    }

    fn log_enabled(&self, l: LogLevel) -> bool {
        l >= PROXY_LOG_LEVEL.with(std::cell::Cell::get)
    }

    fn get_shared_data(&self, key: &str) -> Result<SharedValue, HostError> {
        hostcalls::get_shared_data(key).map_err(|s| HostError(status_text(s)))
    }

    fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SharedDataError::CasMismatch),
            Err(s) => Err(SharedDataError::Other(status_text(s))),
        }
    }

    fn get_property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) {
        let _ = raw::set_property(key, value);
    }

    fn env_var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = raw::set_header(raw::REQUEST_HEADERS, name, value);
    }

    fn remove_request_trailer(&self, name: &str) {
        let _ = raw::set_header(raw::REQUEST_TRAILERS, name, None);
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, start, len)
            .ok()
            .flatten()
    }

    fn replace_request_body(&self, body: &[u8]) {
        let _ = raw::set_buffer(raw::REQUEST_BODY, body);
    }

    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, start, len)
            .ok()
            .flatten()
    }

    fn replace_response_body(&self, body: &[u8]) {
        let _ = raw::set_buffer(raw::RESPONSE_BODY, body);
    }

    fn response_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpResponseHeaders).unwrap_or_default()
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        let _ = raw::set_header(raw::RESPONSE_HEADERS, name, value);
    }

    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let _ = raw::send_local_response(status, headers, body);
    }

    fn resume_request(&self) {
        let _ = raw::resume_request();
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            Some(body),
            Vec::new(),
            Duration::from_millis(timeout_ms),
        )
        .map_err(|s| HostError(status_text(s)))
    }

    fn http_call_response_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default()
    }

    fn http_call_response_body(&self, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, len)
            .ok()
            .flatten()
    }

    fn dispatch_grpc_call(
        &self,
        upstream: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        // The SDK's wrapper registers the token with its dispatcher (so the answer reaches this
        // context); the statuses Envoy returns for a call are the ones it handles.
        hostcalls::dispatch_grpc_call(
            upstream,
            service,
            method,
            Vec::new(),
            Some(message),
            Duration::from_millis(timeout_ms),
        )
        .map_err(|s| HostError(status_text(s)))
    }

    fn grpc_call_response(&self, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, len)
            .ok()
            .flatten()
    }

    fn open_grpc_stream(
        &self,
        upstream: &str,
        service: &str,
        method: &str,
    ) -> Result<u32, HostError> {
        hostcalls::open_grpc_stream(upstream, service, method, Vec::new())
            .map_err(|s| HostError(status_text(s)))
    }

    fn send_grpc_stream_message(
        &self,
        token: u32,
        message: &[u8],
        end: bool,
    ) -> Result<(), HostError> {
        hostcalls::send_grpc_stream_message(token, Some(message), end)
            .map_err(|s| HostError(status_text(s)))
    }

    fn close_grpc_stream(&self, token: u32) {
        let _ = hostcalls::close_grpc_stream(token);
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(t, name).map_err(|s| HostError(status_text(s)))
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = hostcalls::increment_metric(id, delta);
    }

    fn set_tick_period_ms(&self, period_ms: u64) {
        let _ = hostcalls::set_tick_period(Duration::from_millis(period_ms));
    }
}

/// The root context: one plugin per configuration.
struct Root {
    plugin: Option<Rc<Plugin>>,
    /// Polls the bundle server when the configuration names one (`bundle.server`).
    puller: Option<BundlePuller>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(p) = &mut self.puller
            && let Some(new) = p.on_response(&WasmHost, token_id, body_size)
        {
            // New streams use the new bundle; streams in flight keep theirs. The old plugin's
            // timer stops with it, so it signs what it alone knew was unsigned.
            if let Some(old) = self.plugin.replace(Rc::new(new)) {
                old.on_done(&WasmHost);
            }
        }
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if let Some(p) = &self.plugin {
            p.on_grpc_call_response(&WasmHost, token_id, status_code, response_size);
        }
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        if let Some(p) = &self.plugin {
            p.on_grpc_stream_message(&WasmHost, token_id, message_size);
        }
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        if let Some(p) = &self.plugin {
            p.on_grpc_stream_close(&WasmHost, token_id, status_code);
        }
    }

    /// Envoy is stopping this plugin (shutdown, or a new configuration replaces it).
    fn on_done(&mut self) -> bool {
        if let Some(p) = &self.plugin {
            p.on_done(&WasmHost);
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        refresh_log_level();
        let config = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        if let Some(old) = self
            .plugin
            .replace(Rc::new(Plugin::configure(&WasmHost, &config)))
        {
            old.on_done(&WasmHost);
        }
        self.puller = BundlePuller::new(&WasmHost, &config);
        // Always accept: a bad configuration yields a plugin that denies every request with
        // the reason, which is clearer to operators than a plugin that fails to load.
        true
    }

    fn on_tick(&mut self) {
        refresh_log_level();
        if let Some(p) = &self.plugin {
            p.on_tick(&WasmHost);
        }
        if let Some(p) = &mut self.puller {
            p.on_tick(&WasmHost);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let plugin = match &self.plugin {
            Some(p) => Rc::clone(p),
            // Not configured: a plugin with no configuration denies everything.
            None => Rc::new(Plugin::configure(&WasmHost, b"")),
        };
        Some(Box::new(Http {
            stream: Stream::new(plugin),
            #[cfg(feature = "fault-injection")]
            trap_body: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Test builds only (`--features fault-injection`, never in the release module): trap the VM when
/// the request carries `x-portcullis-fault: trap` (here) or `trap-body` (at its body), so the
/// end-to-end tests can watch Envoy's `failure_policy` deal with a real trap
/// (test-harness/e2e/test_trap.py). Read before the filter strips `x-portcullis-*` headers;
/// returns whether to trap at the body.
#[cfg(feature = "fault-injection")]
fn fault_requested() -> bool {
    let asked = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-portcullis-fault")
        .ok()
        .flatten();
    if asked.as_deref() == Some("trap") {
        trap();
    }
    asked.as_deref() == Some("trap-body")
}

/// The fault-injection trap itself (a panic is `unreachable` in the VM).
#[cfg(feature = "fault-injection")]
#[expect(
    clippy::panic,
    reason = "the fault-injection test build traps on purpose"
)]
fn trap() {
    panic!("portcullis fault injection: x-portcullis-fault");
}

/// One HTTP stream.
struct Http {
    stream: Stream,
    /// Fault-injection test builds: trap when the body arrives.
    #[cfg(feature = "fault-injection")]
    trap_body: bool,
}

fn action(a: FilterAction) -> Action {
    match a {
        FilterAction::Continue => Action::Continue,
        FilterAction::Pause => Action::Pause,
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.stream
            .on_http_call_response(&WasmHost, token_id, body_size);
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.stream
            .on_grpc_call_response(&WasmHost, token_id, status_code, response_size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        {
            self.trap_body = fault_requested();
        }
        action(self.stream.on_request_headers(&WasmHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        if self.trap_body {
            trap();
        }
        action(
            self.stream
                .on_request_body(&WasmHost, body_size, end_of_stream),
        )
    }

    /// Trailers end the request body like END_STREAM does: the SDK's default (Continue) would let
    /// a body that never carried END_STREAM go upstream undecided.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_request_trailers(&WasmHost))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        action(self.stream.on_response_headers(&WasmHost))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.stream
                .on_response_body(&WasmHost, body_size, end_of_stream),
        )
    }

    /// Trailers end the response body too: a held result is checked before it is released.
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_response_trailers(&WasmHost))
    }

    /// The stream is over, however it ended: what it still awaited is handed over.
    fn on_log(&mut self) {
        self.stream.on_log(&WasmHost);
    }
}
