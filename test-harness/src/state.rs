//! Everything the host knows, kept in the wasmtime `Store` data (no globals: tests run in
//! parallel, each with its own `Host`). Plain data plus small helpers; the hostcalls in
//! `imports/` and the drivers in `host.rs` / `stream.rs` give it behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Memory, StoreLimits, TypedFunc};

use crate::abi::{LogLevel, MetricType, Pairs};

/// Which callback of the module is running; decides which buffers and maps a hostcall may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No callback is running.
    Idle,
    /// `_initialize` / `_start`.
    Start,
    /// `proxy_on_context_create`, `proxy_on_delete` and other bookkeeping callbacks.
    Lifecycle,
    /// `proxy_on_vm_start`.
    VmStart,
    /// `proxy_on_configure`: the plugin configuration buffer is readable.
    Configure,
    /// `proxy_on_tick`.
    Tick,
    /// `proxy_on_request_headers` .. `proxy_on_response_trailers`.
    Stream,
    /// `proxy_on_http_call_response`: the call-out response maps and body are readable.
    HttpCallResponse,
    /// `proxy_on_log`: Envoy's access-log phase; header maps are read-only.
    Log,
    /// `proxy_on_done`.
    Done,
}

/// One log line the module emitted (`proxy_log`, or a line written to stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Level; stdout lines are `Info` and stderr lines `Error`, as the spec says.
    pub level: LogLevel,
    /// The context whose callback was running (0 when none).
    pub context_id: u32,
    /// The message, lossily decoded as UTF-8.
    pub message: String,
}

/// A response the filter sent itself (`proxy_send_local_response`), as the client receives it:
/// after Envoy ran it back through the filter's response callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// The `status_code_details` string the filter gave (Envoy's response code details).
    pub details: String,
    /// Response headers as sent downstream (lowercase names; `:status` first).
    pub headers: Pairs,
    /// Response body as sent downstream.
    pub body: Vec<u8>,
    /// gRPC status the filter gave (`-1` when none).
    pub grpc_status: i32,
}

impl LocalResponse {
    /// The first value of a header (name compared case-insensitively), as UTF-8 text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The first value of `name` in `pairs`, compared case-insensitively, if it is UTF-8.
pub fn header_value<'a>(pairs: &'a Pairs, name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A local reply requested during a callback; Envoy sends it after the callback returns.
#[derive(Debug, Clone)]
pub(crate) struct LocalReplyRequest {
    pub(crate) status: u32,
    pub(crate) details: String,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Pairs,
    pub(crate) grpc_status: i32,
}

/// An HTTP call-out the filter dispatched with `proxy_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The token `proxy_http_call` returned.
    pub token: u32,
    /// The context that was effective when the call was made (the stream, for a filter using
    /// the Rust SDK from an HTTP context).
    pub context_id: u32,
    /// The upstream cluster name.
    pub cluster: String,
    /// Request headers, in order, names lowercased as Envoy stores them.
    pub headers: Pairs,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Pairs,
    /// Timeout in milliseconds (0 = none).
    pub timeout_ms: u32,
    /// Host clock (ms since the epoch) when dispatched.
    pub dispatched_at_ms: u64,
    /// Where the call stands.
    pub state: HttpCallState,
}

impl HttpCall {
    /// The first value of a request header of the call-out.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

/// Where an HTTP call-out stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCallState {
    /// Waiting for the test to answer it.
    Pending,
    /// Answered with a response.
    Answered,
    /// Failed (timeout or reset): the module was told with zero headers.
    Failed,
}

/// The response to a call-out, visible to hostcalls during `proxy_on_http_call_response`.
#[derive(Debug, Clone)]
pub(crate) struct CallResponse {
    pub(crate) headers: Pairs,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Pairs,
}

/// One direction (request or response) of an HTTP stream, modelled on Envoy's filter manager
/// with `allow_on_headers_stop_iteration: true`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Direction {
    /// The header map (lowercase names), as the filter has left it.
    pub(crate) headers: Pairs,
    /// The headers callback has run.
    pub(crate) headers_seen: bool,
    /// The filter may read and modify the header map (Envoy drops its pointer once the filter
    /// continues).
    pub(crate) headers_accessible: bool,
    /// Headers went on (upstream for the request, downstream for the response).
    pub(crate) forwarded_headers: Option<Pairs>,
    /// Current chunk, or everything buffered while the filter pauses.
    pub(crate) buffer: Vec<u8>,
    /// The filter may read and modify `buffer`.
    pub(crate) body_accessible: bool,
    /// The last body callback returned Pause: new data is appended to `buffer`.
    pub(crate) buffering: bool,
    /// The host delivered end_of_stream in this direction.
    pub(crate) end_seen: bool,
    /// End of stream went on.
    pub(crate) end_forwarded: bool,
    /// Body bytes that went on.
    pub(crate) forwarded_body: Vec<u8>,
    /// The trailer map (lowercase names), as the filter has left it; trailers end the stream.
    pub(crate) trailers: Pairs,
    /// The trailers callback has run.
    pub(crate) trailers_seen: bool,
    /// The filter may read and modify the trailer map (from its trailers callback until the
    /// direction continues).
    pub(crate) trailers_accessible: bool,
    /// Trailers went on.
    pub(crate) forwarded_trailers: Option<Pairs>,
}

/// The host's record of one HTTP stream (an HTTP context of the module).
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamState {
    /// Properties this stream sees (joined path -> value), on top of the host's.
    pub(crate) properties: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Filter state Envoy would hold (`wasm.` + property path -> value).
    pub(crate) filter_state: BTreeMap<String, Vec<u8>>,
    /// Every filter state write, in order (Envoy keeps only the last; tests may want all).
    pub(crate) filter_state_writes: Vec<(String, Vec<u8>)>,
    pub(crate) req: Direction,
    pub(crate) resp: Direction,
    /// A local reply was requested during the running callback (not yet sent).
    pub(crate) local_requested: bool,
    pub(crate) local_response: Option<LocalResponse>,
    /// Envoy reset the stream (`proxy_close_stream`, or a local reply after the response started).
    pub(crate) reset: bool,
    /// on_log / on_done ran; no more stream callbacks.
    pub(crate) finished: bool,
    /// on_delete ran: the context id is gone.
    pub(crate) deleted: bool,
}

/// Work Envoy defers until the running VM call returns.
#[derive(Debug, Clone)]
pub(crate) enum Deferred {
    Continue { ctx: u32, request: bool },
    Close { ctx: u32 },
    LocalReply { ctx: u32, reply: LocalReplyRequest },
    Done { ctx: u32 },
}

/// Envoy shared data: key -> (value, compare-and-swap token). Shared between `Host`s only when a
/// test hands the same handle to several of them (several Envoy workers of one VM id).
#[derive(Debug, Clone, Default)]
pub struct SharedData {
    inner: Arc<Mutex<SharedDataInner>>,
}

#[derive(Debug, Default)]
struct SharedDataInner {
    map: BTreeMap<Vec<u8>, (Vec<u8>, u32)>,
    last_cas: u32,
}

impl SharedDataInner {
    fn next_cas(&mut self) -> u32 {
        self.last_cas = self.last_cas.wrapping_add(1);
        if self.last_cas == 0 {
            self.last_cas = 1;
        }
        self.last_cas
    }
}

/// Result of a compare-and-swap write to shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// Stored.
    Stored,
    /// The token did not match the stored one; nothing changed.
    Mismatch,
}

impl SharedData {
    /// A new, empty store.
    pub fn new() -> SharedData {
        SharedData::default()
    }

    fn lock(&self) -> MutexGuard<'_, SharedDataInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value and CAS token stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.lock().map.get(key).cloned()
    }

    /// Stores `value` under `key` as Envoy does: a non-zero `cas` must equal the stored token
    /// when the key exists (a missing key accepts any token); every write gets a new token.
    pub fn set(&self, key: &[u8], value: &[u8], cas: u32) -> CasOutcome {
        let mut inner = self.lock();
        let token = inner.next_cas();
        match inner.map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return CasOutcome::Mismatch;
                }
                *entry = (value.to_vec(), token);
            }
            None => {
                inner.map.insert(key.to_vec(), (value.to_vec(), token));
            }
        }
        CasOutcome::Stored
    }

    /// All keys, sorted.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.lock().map.keys().cloned().collect()
    }
}

/// A metric the module defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// Name given to `proxy_define_metric`.
    pub name: String,
    /// Its type.
    pub kind: MetricType,
    /// Counter or gauge value.
    pub value: u64,
    /// Histogram samples, in order.
    pub samples: Vec<u64>,
}

/// Metrics store. Like Envoy, every `proxy_define_metric` returns a fresh id whose low two
/// bits carry the type; ids that name the same (type, name) share one value.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) by_name: BTreeMap<(u8, String), Metric>,
    pub(crate) ids: BTreeMap<u32, (u8, String)>,
    pub(crate) next: u32,
}

pub(crate) fn metric_type_bits(kind: MetricType) -> u8 {
    match kind {
        MetricType::Counter => 0,
        MetricType::Gauge => 1,
        MetricType::Histogram => 2,
    }
}

impl Metrics {
    pub(crate) fn define(&mut self, kind: MetricType, name: &str) -> u32 {
        self.next = self.next.wrapping_add(1);
        let bits = metric_type_bits(kind);
        let id = (self.next << 2) | u32::from(bits);
        let key = (bits, name.to_string());
        self.by_name.entry(key.clone()).or_insert_with(|| Metric {
            name: name.to_string(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        self.ids.insert(id, key);
        id
    }

    pub(crate) fn by_id(&mut self, id: u32) -> Option<&mut Metric> {
        let key = self.ids.get(&id)?;
        self.by_name.get_mut(key)
    }
}

/// The host state stored in the wasmtime `Store`.
pub(crate) struct HostState {
    pub(crate) memory: Option<Memory>,
    pub(crate) malloc: Option<TypedFunc<u32, u32>>,
    pub(crate) limits: StoreLimits,
    pub(crate) realtime_ns: u64,
    pub(crate) monotonic_ns: u64,
    pub(crate) log_level: LogLevel,
    pub(crate) logs: Vec<LogEntry>,
    /// Partial stdout / stderr lines not yet ended by a newline.
    pub(crate) fd_lines: [Vec<u8>; 2],
    pub(crate) env: Vec<(String, String)>,
    pub(crate) rng: u64,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) plugin_name: String,
    pub(crate) root_id_name: String,
    pub(crate) vm_id: String,
    pub(crate) root_ctx: u32,
    pub(crate) phase: Phase,
    pub(crate) current_ctx: u32,
    pub(crate) effective_ctx: u32,
    pub(crate) tick_period_ms: u32,
    pub(crate) properties: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) streams: BTreeMap<u32, StreamState>,
    pub(crate) shared: SharedData,
    pub(crate) metrics: Metrics,
    pub(crate) http_calls: Vec<HttpCall>,
    pub(crate) known_clusters: Option<BTreeSet<String>>,
    pub(crate) call_response: Option<CallResponse>,
    /// `(code, message)` that `proxy_get_status` reports.
    pub(crate) call_status: (u32, String),
    pub(crate) deferred: Vec<Deferred>,
    pub(crate) violations: Vec<String>,
    pub(crate) pending_done: BTreeSet<u32>,
    pub(crate) buffer_limit: usize,
    /// How many times each hostcall was made (diagnostics).
    pub(crate) hostcall_counts: BTreeMap<&'static str, u64>,
}

impl HostState {
    /// The stream whose context is effective, if the effective context is a live stream.
    pub(crate) fn effective_stream(&mut self) -> Option<&mut StreamState> {
        let ctx = self.effective_ctx;
        self.streams.get_mut(&ctx).filter(|s| !s.deleted)
    }

    /// Records behaviour Envoy would tolerate silently but that is a bug in the filter; the
    /// driver turns it into a test failure when the current operation ends.
    pub(crate) fn violation(&mut self, message: impl Into<String>) {
        self.violations.push(message.into());
    }

    pub(crate) fn count(&mut self, name: &'static str) {
        *self.hostcall_counts.entry(name).or_insert(0) += 1;
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        let context_id = if self.effective_ctx != 0 {
            self.effective_ctx
        } else {
            self.current_ctx
        };
        self.logs.push(LogEntry {
            level,
            context_id,
            message,
        });
    }

    /// Appends stdout (fd 1) / stderr (fd 2) bytes; complete lines become log entries.
    pub(crate) fn write_fd(&mut self, fd: usize, bytes: &[u8]) {
        let level = if fd == 1 {
            LogLevel::Info
        } else {
            LogLevel::Error
        };
        let Some(line_buf) = self.fd_lines.get_mut(fd.wrapping_sub(1)) else {
            return;
        };
        line_buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(pos) = line_buf.iter().position(|b| *b == b'\n') {
            let rest = line_buf.split_off(pos + 1);
            let mut line = std::mem::replace(line_buf, rest);
            line.pop();
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        for line in lines {
            self.log(level, line);
        }
    }

    /// Flushes partial stdout/stderr lines (at the end of each VM call).
    pub(crate) fn flush_fds(&mut self) {
        for fd in [1usize, 2] {
            if let Some(buf) = self.fd_lines.get_mut(fd - 1)
                && !buf.is_empty()
            {
                let line = String::from_utf8_lossy(&std::mem::take(buf)).into_owned();
                let level = if fd == 1 {
                    LogLevel::Info
                } else {
                    LogLevel::Error
                };
                self.log(level, line);
            }
        }
    }

    /// Deterministic randomness (splitmix64), so a failing run can be replayed.
    pub(crate) fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_write_with_a_stale_token_is_refused_and_changes_nothing() {
        let shared = SharedData::new();
        assert_eq!(shared.set(b"k", b"v1", 0), CasOutcome::Stored);
        let (_, cas1) = shared.get(b"k").unwrap();
        assert_eq!(shared.set(b"k", b"v2", cas1), CasOutcome::Stored);
        let (value, cas2) = shared.get(b"k").unwrap();
        assert_eq!(value, b"v2");
        assert_ne!(cas1, cas2);
        // The first token is stale now.
        assert_eq!(shared.set(b"k", b"v3", cas1), CasOutcome::Mismatch);
        assert_eq!(shared.get(b"k").unwrap(), (b"v2".to_vec(), cas2));
        // Token 0 means "no check".
        assert_eq!(shared.set(b"k", b"v4", 0), CasOutcome::Stored);
        assert_eq!(shared.get(b"k").unwrap().0, b"v4");
    }

    #[test]
    fn cas_on_a_missing_key_is_accepted_like_envoy() {
        let shared = SharedData::new();
        assert_eq!(shared.set(b"new", b"x", 12345), CasOutcome::Stored);
        assert_eq!(shared.get(b"new").unwrap().0, b"x");
    }

    #[test]
    fn handles_share_one_store() {
        let a = SharedData::new();
        let b = a.clone();
        a.set(b"k", b"from a", 0);
        assert_eq!(b.get(b"k").unwrap().0, b"from a");
    }

    #[test]
    fn metric_ids_carry_their_type_and_share_values_by_name() {
        let mut m = Metrics::default();
        let c1 = m.define(MetricType::Counter, "requests");
        let c2 = m.define(MetricType::Counter, "requests");
        let g = m.define(MetricType::Gauge, "requests");
        assert_ne!(c1, c2);
        assert_eq!(c1 & 3, 0);
        assert_eq!(g & 3, 1);
        m.by_id(c1).unwrap().value += 2;
        assert_eq!(m.by_id(c2).unwrap().value, 2);
        assert_eq!(m.by_id(g).unwrap().value, 0);
        assert!(m.by_id(999).is_none());
    }
}
