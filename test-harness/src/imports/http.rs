//! Hostcalls about HTTP streams and call-outs: header maps, body buffers, stream control, local
//! responses, `proxy_http_call`, `proxy_get_status`. Availability rules follow Envoy's wasm
//! `Context` (a map or buffer is reachable only while Envoy still holds it for the filter).

use crate::abi::{
    BufferType, MapType, Pairs, Status, StreamType, deserialize_pairs, serialize_pairs,
};
use crate::guest::{Guest, HostcallResult, copy_out, read_bytes, write_u32};
use crate::state::{
    Deferred, Direction, HostState, HttpCall, HttpCallState, LocalReplyRequest, Phase,
};

use super::ok;

fn direction(st: &mut HostState, request: bool) -> Option<&mut Direction> {
    let stream = st.effective_stream()?;
    Some(if request {
        &mut stream.req
    } else {
        &mut stream.resp
    })
}

/// The map as the filter may read it now, or `None` when Envoy holds no such map.
fn readable_map(st: &mut HostState, map: MapType) -> Option<Pairs> {
    let in_log = st.phase == Phase::Log;
    match map {
        MapType::RequestHeaders | MapType::ResponseHeaders => {
            let dir = direction(st, map == MapType::RequestHeaders)?;
            let visible = if in_log {
                dir.headers_seen
            } else {
                dir.headers_accessible
            };
            visible.then(|| dir.headers.clone())
        }
        // Envoy has no request trailers in the access-log phase; response trailers it keeps.
        MapType::RequestTrailers | MapType::ResponseTrailers => {
            let request = map == MapType::RequestTrailers;
            let dir = direction(st, request)?;
            let visible = if in_log {
                !request && dir.trailers_seen
            } else {
                dir.trailers_accessible
            };
            visible.then(|| dir.trailers.clone())
        }
        MapType::HttpCallResponseHeaders => st.call_response.as_ref().map(|r| r.headers.clone()),
        MapType::HttpCallResponseTrailers => st.call_response.as_ref().map(|r| r.trailers.clone()),
        // gRPC metadata never exists in the harness.
        MapType::GrpcInitialMetadata | MapType::GrpcTrailingMetadata => None,
    }
}

/// The map the filter may modify now, or `None` (`BAD_ARGUMENT`).
fn writable_map(st: &mut HostState, map: MapType) -> Option<&mut Pairs> {
    if st.phase == Phase::Log {
        return None;
    }
    match map {
        MapType::RequestHeaders | MapType::ResponseHeaders => {
            let dir = direction(st, map == MapType::RequestHeaders)?;
            dir.headers_accessible.then_some(&mut dir.headers)
        }
        // Only trailers that arrived: the harness does not let a filter add trailers to a stream
        // that had none (Envoy's `addDecodedTrailers` at end of stream), which Portcullis never does.
        MapType::RequestTrailers | MapType::ResponseTrailers => {
            let dir = direction(st, map == MapType::RequestTrailers)?;
            dir.trailers_accessible.then_some(&mut dir.trailers)
        }
        _ => None,
    }
}

fn check_header(st: &mut HostState, key: &str, value: &[u8]) {
    if value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        st.violation(format!(
            "header `{key}` set to a value containing CR, LF or NUL: {:?}",
            String::from_utf8_lossy(value)
        ));
    }
    let bad_byte = |(i, b): (usize, u8)| b <= b' ' || b >= 0x7f || (b == b':' && i > 0);
    if key.is_empty() || key.bytes().enumerate().any(bad_byte) {
        st.violation(format!(
            "header name `{key}` is not a valid HTTP field name"
        ));
    }
}

fn map_type(raw: i32) -> Result<MapType, Status> {
    MapType::from_raw(raw).ok_or(Status::BadArgument)
}

fn read_key(g: &mut dyn Guest, ptr: u32, len: u32) -> Result<String, Status> {
    let key = read_bytes(g, ptr, len)?;
    Ok(String::from_utf8_lossy(&key).to_ascii_lowercase())
}

/// `proxy_get_header_map_pairs(map_id, return_data, return_size)`. An unavailable map reads as
/// empty (Envoy's behaviour).
pub(crate) fn proxy_get_header_map_pairs(
    g: &mut dyn Guest,
    map: i32,
    ret_ptr: u32,
    ret_len: u32,
) -> HostcallResult {
    g.state().count("proxy_get_header_map_pairs");
    let map = try_status!(map_type(map));
    let pairs = readable_map(g.state(), map).unwrap_or_default();
    let bytes = serialize_pairs(&pairs);
    try_status!(copy_out(g, &bytes, ret_ptr, ret_len)?);
    ok()
}

/// `proxy_get_header_map_size(map_id, return_size)`: the serialized size.
pub(crate) fn proxy_get_header_map_size(g: &mut dyn Guest, map: i32, ret: u32) -> HostcallResult {
    g.state().count("proxy_get_header_map_size");
    let map = try_status!(map_type(map));
    let Some(pairs) = writable_map(g.state(), map).map(|p| p.clone()) else {
        return Ok(Status::BadArgument.code());
    };
    let size = u32::try_from(serialize_pairs(&pairs).len()).unwrap_or(u32::MAX);
    try_status!(write_u32(g, ret, size));
    ok()
}

/// `proxy_set_header_map_pairs(map_id, data, size)`: replaces the whole map.
pub(crate) fn proxy_set_header_map_pairs(
    g: &mut dyn Guest,
    map: i32,
    ptr: u32,
    len: u32,
) -> HostcallResult {
    g.state().count("proxy_set_header_map_pairs");
    let map = try_status!(map_type(map));
    let bytes = try_status!(read_bytes(g, ptr, len));
    let pairs = match deserialize_pairs(&bytes) {
        Ok(p) => p,
        Err(e) => {
            g.state()
                .violation(format!("proxy_set_header_map_pairs: {e}"));
            return Ok(Status::BadArgument.code());
        }
    };
    let st = g.state();
    let lowered: Pairs = pairs
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    for (k, v) in &lowered {
        check_header(st, k, v);
    }
    let Some(target) = writable_map(st, map) else {
        return Ok(Status::BadArgument.code());
    };
    *target = lowered;
    ok()
}

/// `proxy_get_header_map_value(map_id, key_data, key_size, return_value_data, return_value_size)`:
/// the first value of the key (names compare case-insensitively).
pub(crate) fn proxy_get_header_map_value(
    g: &mut dyn Guest,
    map: i32,
    key_ptr: u32,
    key_len: u32,
    ret_ptr: u32,
    ret_len: u32,
) -> HostcallResult {
    g.state().count("proxy_get_header_map_value");
    let map = try_status!(map_type(map));
    let key = try_status!(read_key(g, key_ptr, key_len));
    let st = g.state();
    let Some(pairs) = readable_map(st, map) else {
        // Envoy: NOT_FOUND in the access-log phase, BAD_ARGUMENT otherwise.
        let status = if st.phase == Phase::Log {
            Status::NotFound
        } else {
            Status::BadArgument
        };
        return Ok(status.code());
    };
    let Some((_, value)) = pairs.into_iter().find(|(k, _)| *k == key) else {
        return Ok(Status::NotFound.code());
    };
    try_status!(copy_out(g, &value, ret_ptr, ret_len)?);
    ok()
}

/// Reads a (map, key, value) edit, checks it, and applies `edit` to the writable map.
#[expect(clippy::too_many_arguments, reason = "the ABI arguments plus the edit")]
fn edit_header(
    g: &mut dyn Guest,
    name: &'static str,
    map: i32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
    edit: fn(&mut Pairs, String, Vec<u8>),
) -> HostcallResult {
    g.state().count(name);
    let map = try_status!(map_type(map));
    let key = try_status!(read_key(g, key_ptr, key_len));
    let value = try_status!(read_bytes(g, value_ptr, value_len));
    let st = g.state();
    check_header(st, &key, &value);
    let Some(target) = writable_map(st, map) else {
        return Ok(Status::BadArgument.code());
    };
    edit(target, key, value);
    ok()
}

/// `proxy_add_header_map_value(map_id, key, key_size, value, value_size)`.
pub(crate) fn proxy_add_header_map_value(
    g: &mut dyn Guest,
    map: i32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostcallResult {
    edit_header(
        g,
        "proxy_add_header_map_value",
        map,
        key_ptr,
        key_len,
        value_ptr,
        value_len,
        |pairs, key, value| pairs.push((key, value)),
    )
}

/// `proxy_replace_header_map_value(map_id, key, key_size, value, value_size)`: sets the first
/// entry of the key and drops the others, or appends when absent.
pub(crate) fn proxy_replace_header_map_value(
    g: &mut dyn Guest,
    map: i32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostcallResult {
    edit_header(
        g,
        "proxy_replace_header_map_value",
        map,
        key_ptr,
        key_len,
        value_ptr,
        value_len,
        |pairs, key, value| {
            let mut seen = false;
            pairs.retain(|(k, _)| {
                let duplicate = *k == key && seen;
                seen |= *k == key;
                !duplicate
            });
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => pairs.push((key, value)),
            }
        },
    )
}

/// `proxy_remove_header_map_value(map_id, key, key_size)`: OK also when the key is absent.
pub(crate) fn proxy_remove_header_map_value(
    g: &mut dyn Guest,
    map: i32,
    key_ptr: u32,
    key_len: u32,
) -> HostcallResult {
    g.state().count("proxy_remove_header_map_value");
    let map = try_status!(map_type(map));
    let key = try_status!(read_key(g, key_ptr, key_len));
    let Some(target) = writable_map(g.state(), map) else {
        return Ok(Status::BadArgument.code());
    };
    target.retain(|(k, _)| *k != key);
    ok()
}

/// A buffer as a hostcall sees it.
enum Buffer {
    /// Envoy has no such buffer here: `NOT_FOUND`.
    Missing,
    /// Envoy hands over an empty, unmodifiable buffer (e.g. a body the filter already let go).
    Detached,
    /// Readable, not writable (configurations, call-out response body).
    Const(Vec<u8>),
    /// The live body buffer of a stream direction.
    Body { request: bool },
}

fn buffer(st: &mut HostState, kind: BufferType) -> Buffer {
    match kind {
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
            let request = kind == BufferType::HttpRequestBody;
            match direction(st, request) {
                Some(dir) if dir.body_accessible => Buffer::Body { request },
                _ => Buffer::Detached,
            }
        }
        BufferType::VmConfiguration => Buffer::Const(st.vm_config.clone()),
        BufferType::PluginConfiguration => {
            if st.phase == Phase::Configure {
                Buffer::Const(st.plugin_config.clone())
            } else {
                Buffer::Missing
            }
        }
        BufferType::HttpCallResponseBody => match &st.call_response {
            Some(r) => Buffer::Const(r.body.clone()),
            None => Buffer::Missing,
        },
        BufferType::DownstreamData | BufferType::UpstreamData | BufferType::GrpcReceiveBuffer => {
            Buffer::Detached
        }
        BufferType::ForeignFunctionArguments => Buffer::Missing,
    }
}

fn buffer_bytes(st: &mut HostState, b: &Buffer) -> Vec<u8> {
    match b {
        Buffer::Missing | Buffer::Detached => Vec::new(),
        Buffer::Const(v) => v.clone(),
        Buffer::Body { request } => direction(st, *request)
            .map(|d| d.buffer.clone())
            .unwrap_or_default(),
    }
}

/// `proxy_get_buffer_bytes(buffer_id, start, max_size, return_data, return_size)`: up to
/// `max_size` bytes from `start`; `start` past the end is `BAD_ARGUMENT`; nothing to return
/// writes nothing (as proxy-wasm-cpp-host).
pub(crate) fn proxy_get_buffer_bytes(
    g: &mut dyn Guest,
    kind: i32,
    start: u32,
    max_size: u32,
    ret_ptr: u32,
    ret_len: u32,
) -> HostcallResult {
    g.state().count("proxy_get_buffer_bytes");
    let Some(kind) = BufferType::from_raw(kind) else {
        return Ok(Status::BadArgument.code());
    };
    let st = g.state();
    let b = buffer(st, kind);
    if matches!(b, Buffer::Missing) {
        return Ok(Status::NotFound.code());
    }
    let data = buffer_bytes(st, &b);
    let start = start as usize;
    if start > data.len() {
        return Ok(Status::BadArgument.code());
    }
    let end = start.saturating_add(max_size as usize).min(data.len());
    let slice = data.get(start..end).unwrap_or_default();
    if slice.is_empty() {
        return ok();
    }
    try_status!(copy_out(g, slice, ret_ptr, ret_len)?);
    ok()
}

/// `proxy_set_buffer_bytes(buffer_id, start, size, data, data_size)`, with Envoy's semantics:
/// `start == 0` replaces the first `size` bytes (prepend when `size == 0`), `start >= length`
/// appends, anything in between is `BAD_ARGUMENT`. Read-only buffers are `BAD_ARGUMENT`.
pub(crate) fn proxy_set_buffer_bytes(
    g: &mut dyn Guest,
    kind: i32,
    start: u32,
    size: u32,
    ptr: u32,
    len: u32,
) -> HostcallResult {
    g.state().count("proxy_set_buffer_bytes");
    let Some(kind) = BufferType::from_raw(kind) else {
        return Ok(Status::BadArgument.code());
    };
    let st = g.state();
    let b = buffer(st, kind);
    let request = match b {
        Buffer::Missing => return Ok(Status::NotFound.code()),
        Buffer::Detached | Buffer::Const(_) => {
            // Envoy refuses, but only after checking the data pointer.
            try_status!(read_bytes(g, ptr, len));
            return Ok(Status::BadArgument.code());
        }
        Buffer::Body { request } => request,
    };
    let data = try_status!(read_bytes(g, ptr, len));
    let Some(dir) = direction(g.state(), request) else {
        return Ok(Status::NotFound.code());
    };
    let start = start as usize;
    if start == 0 {
        let drop = (size as usize).min(dir.buffer.len());
        let mut next = data;
        next.extend_from_slice(dir.buffer.get(drop..).unwrap_or_default());
        dir.buffer = next;
    } else if start >= dir.buffer.len() {
        dir.buffer.extend_from_slice(&data);
    } else {
        return Ok(Status::BadArgument.code());
    }
    ok()
}

/// `proxy_get_buffer_status(buffer_id, return_size, return_flags)`.
pub(crate) fn proxy_get_buffer_status(
    g: &mut dyn Guest,
    kind: i32,
    ret_size: u32,
    ret_flags: u32,
) -> HostcallResult {
    g.state().count("proxy_get_buffer_status");
    let Some(kind) = BufferType::from_raw(kind) else {
        return Ok(Status::BadArgument.code());
    };
    let st = g.state();
    let b = buffer(st, kind);
    if matches!(b, Buffer::Missing) {
        return Ok(Status::NotFound.code());
    }
    let n = u32::try_from(buffer_bytes(st, &b).len()).unwrap_or(u32::MAX);
    try_status!(write_u32(g, ret_size, n));
    try_status!(write_u32(g, ret_flags, 0));
    ok()
}

/// `proxy_continue_stream(stream_type)`: resumes after the running callback returns (Envoy
/// defers it). The filter loses access to that direction's headers and body at once, as in
/// Envoy.
pub(crate) fn proxy_continue_stream(g: &mut dyn Guest, kind: i32) -> HostcallResult {
    g.state().count("proxy_continue_stream");
    let Some(kind) = StreamType::from_raw(kind) else {
        return Ok(Status::BadArgument.code());
    };
    let request = match kind {
        StreamType::HttpRequest => true,
        StreamType::HttpResponse => false,
        StreamType::Downstream => return ok(),
        StreamType::Upstream => return Ok(Status::Unimplemented.code()),
    };
    let st = g.state();
    let ctx = st.effective_ctx;
    let Some(dir) = direction(st, request) else {
        st.violation(format!(
            "proxy_continue_stream called in context {ctx}, which is not an HTTP stream (no effect in Envoy)"
        ));
        return ok();
    };
    dir.headers_accessible = false;
    dir.body_accessible = false;
    dir.trailers_accessible = false;
    st.deferred.push(Deferred::Continue { ctx, request });
    ok()
}

/// `proxy_close_stream(stream_type)`: resets the HTTP stream after the callback returns.
pub(crate) fn proxy_close_stream(g: &mut dyn Guest, kind: i32) -> HostcallResult {
    g.state().count("proxy_close_stream");
    let Some(kind) = StreamType::from_raw(kind) else {
        return Ok(Status::BadArgument.code());
    };
    if matches!(kind, StreamType::Downstream | StreamType::Upstream) {
        return ok();
    }
    let st = g.state();
    let ctx = st.effective_ctx;
    if st.effective_stream().is_none() {
        st.violation(format!(
            "proxy_close_stream called in context {ctx}, which is not an HTTP stream"
        ));
        return ok();
    }
    st.deferred.push(Deferred::Close { ctx });
    ok()
}

/// `proxy_send_local_response(status, details, details_size, body, body_size, headers,
/// headers_size, grpc_status)`: sent after the callback returns.
#[expect(clippy::too_many_arguments, reason = "mirrors the ABI signature")]
pub(crate) fn proxy_send_local_response(
    g: &mut dyn Guest,
    status: u32,
    details_ptr: u32,
    details_len: u32,
    body_ptr: u32,
    body_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    grpc_status: i32,
) -> HostcallResult {
    g.state().count("proxy_send_local_response");
    let details = try_status!(read_bytes(g, details_ptr, details_len));
    let body = try_status!(read_bytes(g, body_ptr, body_len));
    let headers = try_status!(read_bytes(g, headers_ptr, headers_len));
    let st = g.state();
    let headers = match deserialize_pairs(&headers) {
        Ok(h) => h,
        Err(e) => {
            st.violation(format!("proxy_send_local_response headers: {e}"));
            return Ok(Status::BadArgument.code());
        }
    };
    if !(100..=999).contains(&status) {
        st.violation(format!("proxy_send_local_response with status {status}"));
    }
    let headers: Pairs = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    for (k, v) in &headers {
        check_header(st, k, v);
    }
    let ctx = st.effective_ctx;
    let Some(stream) = st.effective_stream() else {
        st.violation(format!(
            "proxy_send_local_response called in context {ctx}, which is not an HTTP stream (Envoy ignores it)"
        ));
        return ok();
    };
    if stream.local_requested || stream.local_response.is_some() {
        st.violation(format!(
            "proxy_send_local_response called twice on stream {ctx}"
        ));
        return ok();
    }
    stream.local_requested = true;
    st.deferred.push(Deferred::LocalReply {
        ctx,
        reply: LocalReplyRequest {
            status,
            details: String::from_utf8_lossy(&details).into_owned(),
            body,
            headers,
            grpc_status,
        },
    });
    ok()
}

/// `proxy_http_call(upstream, upstream_size, headers, headers_size, body, body_size, trailers,
/// trailers_size, timeout, return_token)`: recorded; the test answers or fails it later.
#[expect(clippy::too_many_arguments, reason = "mirrors the ABI signature")]
pub(crate) fn proxy_http_call(
    g: &mut dyn Guest,
    up_ptr: u32,
    up_len: u32,
    h_ptr: u32,
    h_len: u32,
    body_ptr: u32,
    body_len: u32,
    t_ptr: u32,
    t_len: u32,
    timeout_ms: u32,
    ret_token: u32,
) -> HostcallResult {
    g.state().count("proxy_http_call");
    let cluster = try_status!(read_bytes(g, up_ptr, up_len));
    let headers = try_status!(read_bytes(g, h_ptr, h_len));
    let body = try_status!(read_bytes(g, body_ptr, body_len));
    let trailers = try_status!(read_bytes(g, t_ptr, t_len));
    let st = g.state();
    let cluster = String::from_utf8_lossy(&cluster).into_owned();
    let (headers, trailers) = match (deserialize_pairs(&headers), deserialize_pairs(&trailers)) {
        (Ok(h), Ok(t)) => (h, t),
        (Err(e), _) | (_, Err(e)) => {
            st.violation(format!("proxy_http_call headers/trailers: {e}"));
            return Ok(Status::BadArgument.code());
        }
    };
    let headers: Pairs = headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    // Envoy takes the timeout as a signed int.
    if i32::try_from(timeout_ms).is_err() {
        return Ok(Status::BadArgument.code());
    }
    if let Some(known) = &st.known_clusters
        && !known.contains(&cluster)
    {
        return Ok(Status::BadArgument.code());
    }
    for required in [":path", ":method", ":authority"] {
        if !headers.iter().any(|(k, _)| k == required) {
            return Ok(Status::BadArgument.code());
        }
    }
    let token = u32::try_from(st.http_calls.len())
        .unwrap_or(u32::MAX)
        .wrapping_add(1);
    let call = HttpCall {
        token,
        context_id: st.effective_ctx,
        cluster,
        headers,
        body,
        trailers,
        timeout_ms,
        dispatched_at_ms: st.realtime_ns / 1_000_000,
        state: HttpCallState::Pending,
    };
    try_status!(write_u32(g, ret_token, token));
    g.state().http_calls.push(call);
    ok()
}

/// `proxy_get_status(return_code, return_message_data, return_message_size)`: the status of the
/// call-out being delivered (HTTP status, or 0 and "reset" for a failed one).
pub(crate) fn proxy_get_status(
    g: &mut dyn Guest,
    ret_code: u32,
    ret_msg: u32,
    ret_msg_len: u32,
) -> HostcallResult {
    g.state().count("proxy_get_status");
    let (code, message) = g.state().call_status.clone();
    try_status!(write_u32(g, ret_code, code));
    try_status!(copy_out(g, message.as_bytes(), ret_msg, ret_msg_len)?);
    ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::FakeGuest;
    use crate::state::{CallResponse, StreamState};

    const OK: i32 = 0;
    const NOT_FOUND: i32 = 1;
    const BAD_ARGUMENT: i32 = 2;
    const INVALID_MEMORY_ACCESS: i32 = 6;

    fn pairs(p: &[(&str, &str)]) -> Pairs {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    /// A guest whose effective context 2 is a stream paused in on_request_headers.
    fn paused_request() -> FakeGuest {
        let mut g = FakeGuest::new();
        let mut s = StreamState::default();
        s.req.headers = pairs(&[(":method", "POST"), (":path", "/mcp"), ("x-a", "1")]);
        s.req.headers_seen = true;
        s.req.headers_accessible = true;
        g.state.streams.insert(2, s);
        g.state.effective_ctx = 2;
        g.state.current_ctx = 2;
        g.state.phase = Phase::Stream;
        g
    }

    #[test]
    fn header_pairs_come_back_in_spec_format() {
        let mut g = paused_request();
        assert_eq!(proxy_get_header_map_pairs(&mut g, 0, 100, 104).unwrap(), OK);
        let back = deserialize_pairs(&g.returned(100, 104)).unwrap();
        assert_eq!(back, g.state.streams[&2].req.headers);
        assert_eq!(
            proxy_get_header_map_pairs(&mut g, 8, 100, 104).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(
            proxy_get_header_map_pairs(&mut g, 0, 65534, 104).unwrap(),
            INVALID_MEMORY_ACCESS
        );
    }

    #[test]
    fn header_values_are_case_insensitive_and_missing_is_not_found() {
        let mut g = paused_request();
        g.put(0, b"X-A");
        assert_eq!(
            proxy_get_header_map_value(&mut g, 0, 0, 3, 100, 104).unwrap(),
            OK
        );
        assert_eq!(g.returned(100, 104), b"1");
        g.put(0, b"x-b");
        assert_eq!(
            proxy_get_header_map_value(&mut g, 0, 0, 3, 100, 104).unwrap(),
            NOT_FOUND
        );
        assert_eq!(
            proxy_get_header_map_value(&mut g, 0, 65535, 3, 100, 104).unwrap(),
            INVALID_MEMORY_ACCESS
        );
    }

    #[test]
    fn add_replace_remove_lowercase_names() {
        let mut g = paused_request();
        g.put(0, b"X-Portcullis-Decision");
        g.put(100, b"ALLOW");
        g.put(200, b"DENY");
        assert_eq!(
            proxy_add_header_map_value(&mut g, 0, 0, 21, 100, 5).unwrap(),
            OK
        );
        assert_eq!(
            proxy_add_header_map_value(&mut g, 0, 0, 21, 100, 5).unwrap(),
            OK
        );
        assert_eq!(
            proxy_replace_header_map_value(&mut g, 0, 0, 21, 200, 4).unwrap(),
            OK
        );
        let h = &g.state.streams[&2].req.headers;
        let values: Vec<_> = h
            .iter()
            .filter(|(k, _)| k == "x-portcullis-decision")
            .collect();
        assert_eq!(values.len(), 1, "replace keeps one entry");
        assert_eq!(values[0].1, b"DENY");
        assert_eq!(proxy_remove_header_map_value(&mut g, 0, 0, 21).unwrap(), OK);
        assert_eq!(proxy_remove_header_map_value(&mut g, 0, 0, 21).unwrap(), OK);
        assert!(
            !g.state.streams[&2]
                .req
                .headers
                .iter()
                .any(|(k, _)| k == "x-portcullis-decision")
        );
    }

    #[test]
    fn headers_after_continue_are_gone_like_in_envoy() {
        let mut g = paused_request();
        g.state.streams.get_mut(&2).unwrap().req.headers_accessible = false;
        g.put(0, b"x-a");
        assert_eq!(
            proxy_get_header_map_value(&mut g, 0, 0, 3, 100, 104).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(
            proxy_add_header_map_value(&mut g, 0, 0, 3, 0, 3).unwrap(),
            BAD_ARGUMENT
        );
        // Pairs read as empty.
        assert_eq!(proxy_get_header_map_pairs(&mut g, 0, 100, 104).unwrap(), OK);
        assert_eq!(g.u32_at(104), 0);
        // In the access-log phase the map is readable again, missing keys are NOT_FOUND.
        g.state.phase = Phase::Log;
        assert_eq!(
            proxy_get_header_map_value(&mut g, 0, 0, 3, 100, 104).unwrap(),
            OK
        );
        assert_eq!(
            proxy_get_header_map_value(&mut g, 2, 0, 3, 100, 104).unwrap(),
            NOT_FOUND
        );
    }

    #[test]
    fn trailer_maps_exist_only_once_trailers_arrived_and_while_held() {
        let mut g = paused_request();
        g.put(0, b"x-t");
        g.put(10, b"v2");
        // No trailers yet: the map is not available (Envoy's getMap is null).
        assert_eq!(
            proxy_get_header_map_value(&mut g, 1, 0, 3, 100, 104).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(
            proxy_add_header_map_value(&mut g, 1, 0, 3, 10, 2).unwrap(),
            BAD_ARGUMENT,
            "the harness never lets a filter invent trailers"
        );
        let s = g.state.streams.get_mut(&2).unwrap();
        s.req.trailers = pairs(&[("x-t", "v1")]);
        s.req.trailers_seen = true;
        s.req.trailers_accessible = true;
        assert_eq!(
            proxy_get_header_map_value(&mut g, 1, 0, 3, 100, 104).unwrap(),
            OK
        );
        assert_eq!(g.returned(100, 104), b"v1");
        assert_eq!(
            proxy_replace_header_map_value(&mut g, 1, 0, 3, 10, 2).unwrap(),
            OK
        );
        assert_eq!(g.state.streams[&2].req.trailers, pairs(&[("x-t", "v2")]));
        // The response has none.
        assert_eq!(
            proxy_get_header_map_value(&mut g, 3, 0, 3, 100, 104).unwrap(),
            BAD_ARGUMENT
        );
        // Continuing drops access, as for headers and body.
        assert_eq!(proxy_continue_stream(&mut g, 0).unwrap(), OK);
        assert_eq!(
            proxy_get_header_map_value(&mut g, 1, 0, 3, 100, 104).unwrap(),
            BAD_ARGUMENT
        );
        // Envoy keeps no request trailers for the access log.
        g.state.phase = Phase::Log;
        assert_eq!(
            proxy_get_header_map_value(&mut g, 1, 0, 3, 100, 104).unwrap(),
            NOT_FOUND
        );
    }

    #[test]
    fn header_injection_is_a_violation() {
        let mut g = paused_request();
        g.put(0, b"x-evil");
        g.put(100, b"a\r\nset-cookie: x");
        assert_eq!(
            proxy_replace_header_map_value(&mut g, 0, 0, 6, 100, 16).unwrap(),
            OK
        );
        assert_eq!(g.state.violations.len(), 1);
    }

    #[test]
    fn set_header_map_pairs_replaces_and_refuses_malformed_maps() {
        let mut g = paused_request();
        let new = serialize_pairs(&[(":method", "POST"), ("Content-Length", "2")]);
        g.put(0, &new);
        assert_eq!(
            proxy_set_header_map_pairs(&mut g, 0, 0, new.len() as u32).unwrap(),
            OK
        );
        assert_eq!(
            g.state.streams[&2].req.headers,
            pairs(&[(":method", "POST"), ("content-length", "2")])
        );
        g.put(0, &[5, 0, 0, 0, 1]);
        assert_eq!(
            proxy_set_header_map_pairs(&mut g, 0, 0, 5).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(g.state.violations.len(), 1);
    }

    fn body_stream(body: &[u8]) -> FakeGuest {
        let mut g = paused_request();
        let s = g.state.streams.get_mut(&2).unwrap();
        s.req.buffer = body.to_vec();
        s.req.body_accessible = true;
        g
    }

    #[test]
    fn get_buffer_bytes_honours_start_and_max_size() {
        let mut g = body_stream(b"0123456789");
        assert_eq!(
            proxy_get_buffer_bytes(&mut g, 0, 2, 3, 100, 104).unwrap(),
            OK
        );
        assert_eq!(g.returned(100, 104), b"234");
        assert_eq!(
            proxy_get_buffer_bytes(&mut g, 0, 8, u32::MAX, 100, 104).unwrap(),
            OK
        );
        assert_eq!(g.returned(100, 104), b"89");
        assert_eq!(
            proxy_get_buffer_bytes(&mut g, 0, 11, 1, 100, 104).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(
            proxy_get_buffer_bytes(&mut g, 9, 0, 1, 100, 104).unwrap(),
            BAD_ARGUMENT
        );
        // Plugin configuration only during on_configure.
        assert_eq!(
            proxy_get_buffer_bytes(&mut g, 7, 0, 1, 100, 104).unwrap(),
            NOT_FOUND
        );
        // Call-out body only during the call-out callback.
        assert_eq!(
            proxy_get_buffer_bytes(&mut g, 4, 0, 1, 100, 104).unwrap(),
            NOT_FOUND
        );
    }

    #[test]
    fn set_buffer_bytes_follows_envoy_replace_and_append() {
        let mut g = body_stream(b"hello world");
        g.put(0, b"HELLO");
        assert_eq!(proxy_set_buffer_bytes(&mut g, 0, 0, 5, 0, 5).unwrap(), OK);
        assert_eq!(g.state.streams[&2].req.buffer, b"HELLO world");
        assert_eq!(proxy_set_buffer_bytes(&mut g, 0, 0, 0, 0, 5).unwrap(), OK);
        assert_eq!(g.state.streams[&2].req.buffer, b"HELLOHELLO world");
        assert_eq!(
            proxy_set_buffer_bytes(&mut g, 0, u32::MAX, 0, 0, 1).unwrap(),
            OK
        );
        assert_eq!(g.state.streams[&2].req.buffer, b"HELLOHELLO worldH");
        // Whole replacement with a size larger than the buffer.
        assert_eq!(
            proxy_set_buffer_bytes(&mut g, 0, 0, u32::MAX, 0, 2).unwrap(),
            OK
        );
        assert_eq!(g.state.streams[&2].req.buffer, b"HE");
        // Middle injection is refused by Envoy.
        assert_eq!(
            proxy_set_buffer_bytes(&mut g, 0, 1, 0, 0, 2).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(
            proxy_set_buffer_bytes(&mut g, 0, 0, 0, 65535, 2).unwrap(),
            INVALID_MEMORY_ACCESS
        );
        // VM configuration is read-only.
        assert_eq!(
            proxy_set_buffer_bytes(&mut g, 6, 0, 0, 0, 2).unwrap(),
            BAD_ARGUMENT
        );
    }

    #[test]
    fn a_released_body_reads_empty_and_refuses_writes() {
        let mut g = body_stream(b"abc");
        g.state.streams.get_mut(&2).unwrap().req.body_accessible = false;
        g.put(100, &[7; 8]);
        assert_eq!(
            proxy_get_buffer_bytes(&mut g, 0, 0, 3, 100, 104).unwrap(),
            OK
        );
        assert_eq!(g.u32_at(100), 0x0707_0707, "nothing written");
        assert_eq!(
            proxy_set_buffer_bytes(&mut g, 0, 0, 0, 0, 1).unwrap(),
            BAD_ARGUMENT
        );
    }

    #[test]
    fn call_out_response_is_readable_only_while_delivered() {
        let mut g = paused_request();
        g.state.call_response = Some(CallResponse {
            headers: pairs(&[(":status", "200")]),
            body: b"{\"decision\":\"allow\"}".to_vec(),
            trailers: Vec::new(),
        });
        assert_eq!(
            proxy_get_buffer_bytes(&mut g, 4, 0, 100, 100, 104).unwrap(),
            OK
        );
        assert_eq!(g.returned(100, 104), b"{\"decision\":\"allow\"}");
        g.put(0, b":status");
        assert_eq!(
            proxy_get_header_map_value(&mut g, 6, 0, 7, 100, 104).unwrap(),
            OK
        );
        assert_eq!(g.returned(100, 104), b"200");
        g.state.call_response = None;
        assert_eq!(
            proxy_get_header_map_value(&mut g, 6, 0, 7, 100, 104).unwrap(),
            BAD_ARGUMENT
        );
    }

    #[test]
    fn http_call_requires_pseudo_headers_and_a_known_cluster() {
        let mut g = paused_request();
        g.state.known_clusters = Some(["context-risk".to_string()].into_iter().collect());
        g.put(0, b"context-risk");
        let good = serialize_pairs(&[
            (":method", "POST"),
            (":path", "/decide"),
            (":authority", "risk.internal"),
        ]);
        let bad = serialize_pairs(&[(":method", "POST"), (":path", "/decide")]);
        g.put(100, &good);
        g.put(300, &bad);
        g.put(500, b"{}");
        let (gl, bl) = (good.len() as u32, bad.len() as u32);
        assert_eq!(
            proxy_http_call(&mut g, 0, 12, 300, bl, 500, 2, 0, 0, 1000, 600).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(
            proxy_http_call(&mut g, 0, 7, 100, gl, 500, 2, 0, 0, 1000, 600).unwrap(),
            BAD_ARGUMENT,
            "unknown cluster"
        );
        assert_eq!(
            proxy_http_call(&mut g, 0, 12, 100, gl, 500, 2, 0, 0, u32::MAX, 600).unwrap(),
            BAD_ARGUMENT,
            "negative timeout for Envoy"
        );
        assert_eq!(
            proxy_http_call(&mut g, 0, 12, 100, gl, 500, 2, 0, 0, 1000, 600).unwrap(),
            OK
        );
        let call = &g.state.http_calls[0];
        assert_eq!(g.u32_at(600), call.token);
        assert_eq!(call.cluster, "context-risk");
        assert_eq!(call.header(":path"), Some("/decide"));
        assert_eq!(call.body, b"{}");
        assert_eq!(call.context_id, 2);
    }

    #[test]
    fn local_response_is_deferred_and_only_once() {
        let mut g = paused_request();
        let h = serialize_pairs(&[("Content-Type", "application/json")]);
        g.put(0, &h);
        g.put(200, b"{}");
        let hl = h.len() as u32;
        assert_eq!(
            proxy_send_local_response(&mut g, 403, 0, 0, 200, 2, 0, hl, -1).unwrap(),
            OK
        );
        assert!(g.state.streams[&2].local_requested);
        match &g.state.deferred[..] {
            [Deferred::LocalReply { ctx: 2, reply }] => {
                assert_eq!(reply.status, 403);
                assert_eq!(
                    reply.headers,
                    pairs(&[("content-type", "application/json")])
                );
            }
            other => panic!("unexpected deferred work: {other:?}"),
        }
        assert_eq!(
            proxy_send_local_response(&mut g, 403, 0, 0, 200, 2, 0, hl, -1).unwrap(),
            OK
        );
        assert_eq!(g.state.violations.len(), 1);
    }

    #[test]
    fn continue_stream_defers_and_drops_access() {
        let mut g = paused_request();
        assert_eq!(proxy_continue_stream(&mut g, 0).unwrap(), OK);
        assert!(!g.state.streams[&2].req.headers_accessible);
        assert_eq!(g.state.deferred.len(), 1);
        assert_eq!(proxy_continue_stream(&mut g, 3).unwrap(), 12);
        assert_eq!(proxy_continue_stream(&mut g, 4).unwrap(), BAD_ARGUMENT);
        g.state.effective_ctx = 1;
        assert_eq!(proxy_continue_stream(&mut g, 0).unwrap(), OK);
        assert_eq!(g.state.violations.len(), 1, "continue on the root context");
    }
}
