//! A strict mock [`Host`] for tests, benches and the native scenario runner.
//!
//! It records everything the filter does (logs, header edits, local responses, call-outs, filter
//! state, metrics) and keeps shared data with Envoy's compare-and-swap semantics: every successful
//! write gives the key a fresh token from one process-wide counter; a write carrying a non-zero
//! token that differs from the key's current one fails with `CasMismatch`; a write to a key that
//! does not exist succeeds whatever the token (as in Envoy). Misuse the proxy would reject (a
//! second local response, reading a call-out response outside a callback, resuming a stream that
//! is not paused) is recorded in [`MockState::violations`], which tests assert empty.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;

use crate::host::{Host, HostError, LogLevel, MetricKind, SharedDataError, SharedValue};

/// A local response the filter sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// An HTTP call-out the filter dispatched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// Token returned to the filter.
    pub token: u32,
    /// Envoy cluster.
    pub cluster: String,
    /// Request headers (pseudo headers included).
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Timeout in milliseconds.
    pub timeout_ms: u64,
}

/// A gRPC call or stream the filter opened, and what it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcCall {
    /// Token returned to the filter.
    pub token: u32,
    /// The upstream (a serialized `GrpcService`).
    pub upstream: String,
    /// `service/method`.
    pub method: String,
    /// Messages sent (one for a unary call).
    pub messages: Vec<Vec<u8>>,
    /// A stream (not a unary call).
    pub stream: bool,
    /// The filter closed the stream.
    pub closed: bool,
}

/// A call-out response being delivered: (headers, body).
pub type CallResponse = (Vec<(String, String)>, Vec<u8>);

/// One metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: MetricKind,
    /// Current value.
    pub value: i64,
}

/// Everything the mock host holds. Public so tests can set up and inspect it.
#[derive(Debug, Default)]
pub struct MockState {
    /// Current time, ms since the Unix epoch.
    pub now_ms: u64,
    /// Every log line.
    pub logs: Vec<(LogLevel, String)>,
    /// Lines below this level are not wanted (`log_enabled` says so); `None` keeps every line.
    pub log_level: Option<LogLevel>,
    /// Shared data: key -> (value, cas token).
    pub shared: BTreeMap<String, (Vec<u8>, u32)>,
    /// Last cas token handed out.
    pub cas_counter: u32,
    /// Make the next N conditional shared-data writes fail with `CasMismatch` (simulates another
    /// worker writing in between).
    pub inject_cas_conflicts: u32,
    /// Make every shared-data write fail with `Other` (simulates a full or broken store).
    pub fail_shared_writes: bool,
    /// Properties: path segments -> value.
    pub properties: Vec<(Vec<String>, Vec<u8>)>,
    /// VM environment variables.
    pub env: BTreeMap<String, String>,
    /// Filter state as Envoy names it (`wasm.<key>`).
    pub filter_state: BTreeMap<String, Vec<u8>>,
    /// Current request headers.
    pub request_headers: Vec<(String, String)>,
    /// Current buffered request body.
    pub request_body: Vec<u8>,
    /// Current request trailers (what the filter may remove from).
    pub request_trailers: Vec<(String, String)>,
    /// Current response headers.
    pub response_headers: Vec<(String, String)>,
    /// The buffered response body (what the filter reads and may replace).
    pub response_body: Vec<u8>,
    /// Envoy no longer holds the request body for the filter (its last body callback let the
    /// data go, or no data came) while trailers are delivered: reads find nothing and a write is a
    /// violation (proxy-wasm's `set_buffer` fails there, and the Rust SDK panics on that: the VM
    /// crashes). The scenario runner sets it before the trailers callback; left false, the body is
    /// always there.
    pub request_body_released: bool,
    /// The same for the response body.
    pub response_body_released: bool,
    /// The local response, if the filter sent one on this stream.
    pub local_response: Option<LocalResponse>,
    /// How many times the filter resumed the current stream.
    pub resumed: u32,
    /// Every call-out dispatched (all streams).
    pub http_calls: Vec<HttpCall>,
    /// Make `dispatch_http_call` fail.
    pub fail_http_calls: bool,
    /// Every gRPC call and stream opened (all contexts).
    pub grpc_calls: Vec<GrpcCall>,
    /// Make gRPC calls and streams fail to open.
    pub fail_grpc_calls: bool,
    /// The gRPC message being delivered right now.
    pub grpc_message: Option<Vec<u8>>,
    /// The call-out response being delivered right now: (headers, body).
    pub call_response: Option<CallResponse>,
    /// Metrics by id (index).
    pub metrics: Vec<Metric>,
    /// Tick period requested.
    pub tick_period_ms: u64,
    /// Misuse the real proxy would reject.
    pub violations: Vec<String>,
}

/// The mock host. Interior mutability, because [`Host`] methods take `&self` (as proxy-wasm's).
#[derive(Debug, Default)]
pub struct MockHost {
    state: RefCell<MockState>,
}

impl MockHost {
    /// A host whose clock reads `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        let host = MockHost::default();
        host.state().now_ms = now_ms;
        host
    }

    fn grpc_open(
        &self,
        upstream: &str,
        service: &str,
        method: &str,
        message: Option<&[u8]>,
        stream: bool,
    ) -> Result<u32, HostError> {
        let mut s = self.state();
        if s.fail_grpc_calls {
            return Err(HostError("the cluster is not there".into()));
        }
        // gRPC tokens are numbered apart from HTTP call-out tokens.
        let token = u32::try_from(s.grpc_calls.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1000);
        s.grpc_calls.push(GrpcCall {
            token,
            upstream: upstream.to_owned(),
            method: format!("{service}/{method}"),
            messages: message.map(<[u8]>::to_vec).into_iter().collect(),
            stream,
            closed: false,
        });
        Ok(token)
    }

    /// Mutable access to the state (do not hold it across a call into the filter).
    pub fn state(&self) -> RefMut<'_, MockState> {
        self.state.borrow_mut()
    }

    /// Start a new HTTP stream: clears the per-stream fields, keeps shared data, logs, metrics.
    pub fn new_stream(&self, request_headers: Vec<(String, String)>) {
        let mut s = self.state();
        s.request_headers = request_headers;
        s.request_body.clear();
        s.request_trailers.clear();
        s.response_headers.clear();
        s.response_body.clear();
        s.request_body_released = false;
        s.response_body_released = false;
        s.local_response = None;
        s.resumed = 0;
        s.call_response = None;
        s.filter_state.clear();
    }

    /// Set a property.
    pub fn set_property(&self, path: &[&str], value: &str) {
        let mut s = self.state();
        let path: Vec<String> = path.iter().map(|p| (*p).to_owned()).collect();
        s.properties.retain(|(p, _)| *p != path);
        s.properties.push((path, value.as_bytes().to_vec()));
    }

    /// Advance the clock.
    pub fn advance(&self, ms: u64) {
        let mut s = self.state();
        s.now_ms = s.now_ms.saturating_add(ms);
    }

    /// A filter state value as a string (`wasm.`-prefixed name).
    pub fn filter_state_str(&self, name: &str) -> Option<String> {
        let s = self.state.borrow();
        s.filter_state
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The first request header with this name.
    pub fn request_header(&self, name: &str) -> Option<String> {
        let s = self.state.borrow();
        s.request_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    let name = name.to_ascii_lowercase();
    match value {
        Some(v) => {
            let mut done = false;
            // Header names compare without case, as in Envoy's header map.
            headers.retain_mut(|(n, val)| {
                if !n.eq_ignore_ascii_case(&name) {
                    return true;
                }
                if done {
                    return false;
                }
                done = true;
                *val = v.to_owned();
                true
            });
            if !done {
                headers.push((name, v.to_owned()));
            }
        }
        None => headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name)),
    }
}

impl Host for MockHost {
    fn now_ms(&self) -> u64 {
        self.state.borrow().now_ms
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.state().logs.push((level, message.to_owned()));
    }

    fn log_enabled(&self, level: LogLevel) -> bool {
        self.state.borrow().log_level.is_none_or(|min| level >= min)
    }

    fn get_shared_data(&self, key: &str) -> Result<SharedValue, HostError> {
        let s = self.state.borrow();
        Ok(match s.shared.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedDataError> {
        let mut s = self.state();
        if s.fail_shared_writes {
            return Err(SharedDataError::Other("shared data write refused".into()));
        }
        let current = s.shared.get(key).map(|(_, c)| *c);
        if let (Some(cur), Some(want)) = (current, cas) {
            if want != 0 && s.inject_cas_conflicts > 0 {
                s.inject_cas_conflicts = s.inject_cas_conflicts.saturating_sub(1);
                // Someone else wrote in between: bump the token so the retry sees a new value.
                s.cas_counter = s.cas_counter.wrapping_add(1);
                let next = s.cas_counter;
                if let Some(entry) = s.shared.get_mut(key) {
                    entry.1 = next;
                }
                return Err(SharedDataError::CasMismatch);
            }
            if want != 0 && want != cur {
                return Err(SharedDataError::CasMismatch);
            }
        }
        s.cas_counter = s.cas_counter.wrapping_add(1);
        let next = s.cas_counter;
        s.shared.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }

    fn get_property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        s.properties
            .iter()
            .find(|(p, _)| p.len() == path.len() && p.iter().zip(path).all(|(a, b)| a == b))
            .map(|(_, v)| v.clone())
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) {
        self.state()
            .filter_state
            .insert(format!("wasm.{key}"), value.to_vec());
    }

    fn env_var(&self, name: &str) -> Option<String> {
        self.state.borrow().env.get(name).cloned()
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        self.state.borrow().request_headers.clone()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        set_header(&mut self.state().request_headers, name, value);
    }

    fn remove_request_trailer(&self, name: &str) {
        set_header(&mut self.state().request_trailers, name, None);
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        if s.request_body_released {
            return None;
        }
        let end = start.saturating_add(len).min(s.request_body.len());
        s.request_body.get(start..end).map(<[u8]>::to_vec)
    }

    fn replace_request_body(&self, body: &[u8]) {
        let mut s = self.state();
        if s.request_body_released {
            s.violations
                .push("request body replaced after Envoy let it go (the VM would crash)".into());
            return;
        }
        s.request_body = body.to_vec();
    }

    fn response_headers(&self) -> Vec<(String, String)> {
        self.state.borrow().response_headers.clone()
    }

    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        if s.response_body_released {
            return None;
        }
        let end = start.saturating_add(len).min(s.response_body.len());
        s.response_body.get(start..end).map(<[u8]>::to_vec)
    }

    fn replace_response_body(&self, body: &[u8]) {
        let mut s = self.state();
        if s.response_body_released {
            s.violations
                .push("response body replaced after Envoy let it go (the VM would crash)".into());
            return;
        }
        s.response_body = body.to_vec();
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        set_header(&mut self.state().response_headers, name, value);
    }

    fn send_local_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut s = self.state();
        if s.local_response.is_some() {
            s.violations
                .push("send_local_response called twice on one stream".into());
            return;
        }
        s.local_response = Some(LocalResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        });
    }

    fn resume_request(&self) {
        let mut s = self.state();
        s.resumed = s.resumed.saturating_add(1);
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        let mut s = self.state();
        if s.fail_http_calls {
            return Err(HostError(format!("no cluster `{cluster}`")));
        }
        let token = u32::try_from(s.http_calls.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        s.http_calls.push(HttpCall {
            token,
            cluster: cluster.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
            timeout_ms,
        });
        Ok(token)
    }

    fn dispatch_grpc_call(
        &self,
        upstream: &str,
        service: &str,
        method: &str,
        message: &[u8],
        _timeout_ms: u64,
    ) -> Result<u32, HostError> {
        self.grpc_open(upstream, service, method, Some(message), false)
    }

    fn grpc_call_response(&self, len: usize) -> Option<Vec<u8>> {
        let mut s = self.state();
        match &s.grpc_message {
            Some(b) => b.get(..len.min(b.len())).map(<[u8]>::to_vec),
            None => {
                s.violations
                    .push("gRPC message read outside a callback".into());
                None
            }
        }
    }

    fn open_grpc_stream(
        &self,
        upstream: &str,
        service: &str,
        method: &str,
    ) -> Result<u32, HostError> {
        self.grpc_open(upstream, service, method, None, true)
    }

    fn send_grpc_stream_message(
        &self,
        token: u32,
        message: &[u8],
        _end: bool,
    ) -> Result<(), HostError> {
        let mut s = self.state();
        match s
            .grpc_calls
            .iter_mut()
            .find(|c| c.token == token && c.stream && !c.closed)
        {
            Some(c) => {
                c.messages.push(message.to_vec());
                Ok(())
            }
            None => Err(HostError("no such stream".into())),
        }
    }

    fn close_grpc_stream(&self, token: u32) {
        let mut s = self.state();
        if let Some(c) = s.grpc_calls.iter_mut().find(|c| c.token == token) {
            c.closed = true;
        }
    }

    fn http_call_response_headers(&self) -> Vec<(String, String)> {
        let mut s = self.state();
        match &s.call_response {
            Some((h, _)) => h.clone(),
            None => {
                s.violations
                    .push("call-out response headers read outside a callback".into());
                Vec::new()
            }
        }
    }

    fn http_call_response_body(&self, len: usize) -> Option<Vec<u8>> {
        let mut s = self.state();
        match &s.call_response {
            Some((_, b)) => b.get(..len.min(b.len())).map(<[u8]>::to_vec),
            None => {
                s.violations
                    .push("call-out response body read outside a callback".into());
                None
            }
        }
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let mut s = self.state();
        if let Some(i) = s.metrics.iter().position(|m| m.name == name) {
            return u32::try_from(i).map_err(|_| HostError("too many metrics".into()));
        }
        s.metrics.push(Metric {
            name: name.to_owned(),
            kind,
            value: 0,
        });
        u32::try_from(s.metrics.len().saturating_sub(1))
            .map_err(|_| HostError("too many metrics".into()))
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let mut s = self.state();
        let idx = usize::try_from(id).unwrap_or(usize::MAX);
        match s.metrics.get_mut(idx) {
            Some(m) => m.value = m.value.saturating_add(delta),
            None => s
                .violations
                .push(format!("increment of undefined metric {id}")),
        }
    }

    fn set_tick_period_ms(&self, period_ms: u64) {
        self.state().tick_period_ms = period_ms;
    }
}

impl MockHost {
    /// The value of a metric by name.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.state
            .borrow()
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_follows_envoy() {
        let h = MockHost::new(0);
        assert_eq!(h.get_shared_data("k").unwrap(), (None, None));
        h.set_shared_data("k", b"a", None).unwrap();
        let (v, cas) = h.get_shared_data("k").unwrap();
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        let cas = cas.unwrap();
        h.set_shared_data("k", b"b", Some(cas)).unwrap();
        // the old token is stale now
        assert_eq!(
            h.set_shared_data("k", b"c", Some(cas)),
            Err(SharedDataError::CasMismatch)
        );
        assert_eq!(
            h.get_shared_data("k").unwrap().0.as_deref(),
            Some(&b"b"[..])
        );
    }

    #[test]
    fn injected_conflict_then_success() {
        let h = MockHost::new(0);
        h.set_shared_data("k", b"a", None).unwrap();
        h.state().inject_cas_conflicts = 1;
        let cas = h.get_shared_data("k").unwrap().1;
        assert_eq!(
            h.set_shared_data("k", b"b", cas),
            Err(SharedDataError::CasMismatch)
        );
        let cas = h.get_shared_data("k").unwrap().1;
        h.set_shared_data("k", b"b", cas).unwrap();
    }

    #[test]
    fn second_local_response_is_a_violation() {
        let h = MockHost::new(0);
        h.send_local_response(403, &[], b"x");
        h.send_local_response(200, &[], b"y");
        assert_eq!(h.state().local_response.as_ref().unwrap().status, 403);
        assert_eq!(h.state().violations.len(), 1);
    }
}
