//! The host seam: the only way filter logic reaches the proxy.
//!
//! `filter/wasm` implements [`Host`] over `proxy_wasm::hostcalls`; [`crate::mock::MockHost`]
//! implements it for tests. Every method is infallible from the caller's point of view or returns a
//! typed error; none may panic. Methods that act on "the current stream" (headers, bodies, local
//! responses, call-out responses) refer to the HTTP context the proxy is currently calling into.

/// What the proxy should do with the stream after a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterAction {
    /// Go on (forward headers / body).
    Continue,
    /// Hold the stream (buffering, waiting for a call-out, or answered locally).
    Pause,
}

/// Log severity, as in proxy-wasm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Very verbose.
    Trace,
    /// Debugging.
    Debug,
    /// Normal operation (decisions, checkpoints).
    Info,
    /// Something is wrong but the filter carries on.
    Warn,
    /// The filter fails closed because of this.
    Error,
}

/// Why a shared-data write failed (the statuses proxy-wasm's `set_shared_data` can return).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedDataError {
    /// The compare-and-swap token did not match: someone else wrote the key first.
    CasMismatch,
    /// Any other failure (e.g. the proxy refused the write).
    Other(String),
}

/// A host call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostError(pub String);

/// Metric kinds the filter defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Gauge (can go down).
    Gauge,
}

/// A value read from shared data with its compare-and-swap token.
pub type SharedValue = (Option<Vec<u8>>, Option<u32>);

/// Everything the filter needs from the proxy.
pub trait Host {
    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Write a log line.
    fn log(&self, level: LogLevel, message: &str);
    /// Whether a line at `level` would be kept (the proxy's log level, as last read). The request
    /// path asks before formatting a line nobody keeps: in Envoy each line is a crossing out of
    /// the VM, and the per-decision line is debug level.
    fn log_enabled(&self, level: LogLevel) -> bool;

    /// Read a shared-data key: `(value, cas)`; `(None, None)` when the key does not exist.
    fn get_shared_data(&self, key: &str) -> Result<SharedValue, HostError>;
    /// Write a shared-data key. With `cas = Some(c)` the write succeeds only if the key's current
    /// token is `c` (proxy-wasm semantics; `Some(0)`/`None` write unconditionally).
    fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError>;

    /// Read a property by path segments (`["connection", "uri_san_peer_certificate"]`).
    /// `None` when the property does not exist.
    fn get_property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Set filter state for the access log: Envoy stores it as `wasm.<key>`
    /// (e.g. key `portcullis.receipt` -> `%FILTER_STATE(wasm.portcullis.receipt:PLAIN)%`).
    fn set_filter_state(&self, key: &str, value: &[u8]);
    /// A VM environment variable (Envoy `vm_config.environment_variables`).
    fn env_var(&self, name: &str) -> Option<String>;

    /// The current request's headers, lowercase names, in order (pseudo headers included).
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Replace (`Some`) or remove (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// Remove every value of a request trailer (only while the trailers are being delivered).
    fn remove_request_trailer(&self, name: &str);
    /// `len` bytes of the buffered request body from `start`; `None` when there is none.
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replace the whole buffered request body.
    fn replace_request_body(&self, body: &[u8]);
    /// The current response's headers.
    fn response_headers(&self) -> Vec<(String, String)>;
    /// Replace (`Some`) or remove (`None`) a response header.
    fn set_response_header(&self, name: &str, value: Option<&str>);
    /// `len` bytes of the buffered response body from `start` (`None`: not available).
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replace the whole buffered response body.
    fn replace_response_body(&self, body: &[u8]);
    /// Answer the request locally (upstream is never contacted).
    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]);
    /// Continue a paused request (after a call-out resolved it).
    fn resume_request(&self);

    /// Dispatch an HTTP call-out to an Envoy cluster; returns its token.
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
    /// Headers of the call-out response being delivered (empty on timeout / reset).
    fn http_call_response_headers(&self) -> Vec<(String, String)>;
    /// Body of the call-out response being delivered.
    fn http_call_response_body(&self, len: usize) -> Option<Vec<u8>>;

    /// Dispatch a unary gRPC call to `upstream` (a serialized `GrpcService`); returns its token.
    /// The answer (or its failure) arrives as a gRPC call response with that token.
    fn dispatch_grpc_call(
        &self,
        upstream: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
    /// The message of the gRPC call response (or stream message) being delivered.
    fn grpc_call_response(&self, len: usize) -> Option<Vec<u8>>;
    /// Open a gRPC stream to `upstream`; returns its token.
    fn open_grpc_stream(
        &self,
        upstream: &str,
        service: &str,
        method: &str,
    ) -> Result<u32, HostError>;
    /// Send a message on an open gRPC stream.
    fn send_grpc_stream_message(
        &self,
        token: u32,
        message: &[u8],
        end: bool,
    ) -> Result<(), HostError>;
    /// Close a gRPC stream (half-close and let it end).
    fn close_grpc_stream(&self, token: u32);

    /// Define a metric; returns its id.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    /// Add `delta` to a metric.
    fn increment_metric(&self, id: u32, delta: i64);
    /// Ask for `on_tick` every `period_ms` (0 disables).
    fn set_tick_period_ms(&self, period_ms: u64);
}
