//! The proxy-wasm host calls that change a stream, declared here so that a refusal cannot trap
//! the VM. The Rust SDK's wrappers (`proxy_wasm::hostcalls::set_buffer`, `set_map_value`,
//! `send_http_response`, `resume_http_request`, `set_property`) `panic!` on any status but OK,
//! and the host does refuse some of these calls in some phases: Envoy answers `BAD_ARGUMENT` to a
//! write into a response body it no longer holds (a body the filter let go, then trailers). One
//! such panic traps the VM, and every later request of that worker fails with it. Here every
//! status is returned, as a number, for the caller to ignore or log: the filter core fails closed
//! on what it could not do.
//!
//! The ABI (proxy-wasm spec 0.2.1): the same imports the SDK declares, with `u32` in place of the
//! SDK's enums (identical at the Wasm level), so an unknown status from a newer host is a value,
//! not undefined behaviour.

// The only unsafe code of the project: host calls across the Wasm boundary.
#![allow(
    unsafe_code,
    reason = "proxy-wasm host calls are foreign functions; each call passes live slices only"
)]

/// `WasmResult::Ok`.
const OK: u32 = 0;

/// `MapType::HttpRequestHeaders`.
pub(crate) const REQUEST_HEADERS: u32 = 0;
/// `MapType::HttpRequestTrailers`.
pub(crate) const REQUEST_TRAILERS: u32 = 1;
/// `MapType::HttpResponseHeaders`.
pub(crate) const RESPONSE_HEADERS: u32 = 2;
/// `BufferType::HttpRequestBody`.
pub(crate) const REQUEST_BODY: u32 = 0;
/// `BufferType::HttpResponseBody`.
pub(crate) const RESPONSE_BODY: u32 = 1;
/// `StreamType::HttpRequest`.
const HTTP_REQUEST_STREAM: u32 = 0;

// Import names and shapes as the SDK declares them (`proxy_wasm::hostcalls`).
unsafe extern "C" {
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

fn status(s: u32) -> Result<(), u32> {
    if s == OK { Ok(()) } else { Err(s) }
}

/// Replace the whole body buffer `buffer` with `value`.
pub(crate) fn set_buffer(buffer: u32, value: &[u8]) -> Result<(), u32> {
    // SAFETY: the pointers and lengths describe live slices for the duration of the call; the
    // host copies what it needs before returning.
    status(unsafe { proxy_set_buffer_bytes(buffer, 0, usize::MAX, value.as_ptr(), value.len()) })
}

/// Set header `name` of `map` to `value`, or remove it (`None`).
pub(crate) fn set_header(map: u32, name: &str, value: Option<&str>) -> Result<(), u32> {
    // SAFETY: as in `set_buffer`.
    status(unsafe {
        match value {
            Some(v) => {
                proxy_replace_header_map_value(map, name.as_ptr(), name.len(), v.as_ptr(), v.len())
            }
            None => proxy_remove_header_map_value(map, name.as_ptr(), name.len()),
        }
    })
}

/// Answer the stream locally.
pub(crate) fn send_local_response(
    status_code: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), u32> {
    let map = serialize_map(headers);
    // SAFETY: as in `set_buffer`; a null details pointer with size 0 is the SDK's own call.
    status(unsafe {
        proxy_send_local_response(
            u32::from(status_code),
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

/// Resume a request the filter paused.
pub(crate) fn resume_request() -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(HTTP_REQUEST_STREAM) })
}

/// Set a filter-state property (one path segment).
pub(crate) fn set_property(key: &str, value: &[u8]) -> Result<(), u32> {
    // A one-segment path is the segment itself (segments are joined by NUL).
    // SAFETY: as in `set_buffer`.
    status(unsafe { proxy_set_property(key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
}

/// The proxy-wasm header map encoding: count, then (name length, value length) pairs, then each
/// name and value NUL-terminated; lengths little-endian `u32`.
fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&len32(map.len()));
    for (n, v) in map {
        out.extend_from_slice(&len32(n.len()));
        out.extend_from_slice(&len32(v.len()));
    }
    for (n, v) in map {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}
