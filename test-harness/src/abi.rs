//! Proxy-Wasm ABI v0.2.1 vocabulary: status codes, enums, and the wire formats
//! (serialized header maps, property paths) exactly as the specification writes them.

use std::fmt;

/// `proxy_status_t`: what every host function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// `OK`
    Ok = 0,
    /// `NOT_FOUND`
    NotFound = 1,
    /// `BAD_ARGUMENT`
    BadArgument = 2,
    /// `SERIALIZATION_FAILURE`
    SerializationFailure = 3,
    /// `PARSE_FAILURE`
    ParseFailure = 4,
    /// `INVALID_MEMORY_ACCESS`
    InvalidMemoryAccess = 6,
    /// `EMPTY`
    Empty = 7,
    /// `CAS_MISMATCH`
    CasMismatch = 8,
    /// `INTERNAL_FAILURE`
    InternalFailure = 10,
    /// `UNIMPLEMENTED`
    Unimplemented = 12,
}

impl Status {
    /// The value the module sees.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// `wasi_errno_t` values the harness returns.
pub(crate) mod errno {
    pub(crate) const SUCCESS: i32 = 0;
    pub(crate) const BADF: i32 = 8;
    pub(crate) const FAULT: i32 = 21;
    pub(crate) const INVAL: i32 = 28;
    pub(crate) const NOSYS: i32 = 52;
    pub(crate) const NOTSUP: i32 = 58;
}

/// `proxy_action_t`: what a stream callback returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `CONTINUE` (0): forward what was given.
    Continue,
    /// `PAUSE` (1): hold it (Envoy's StopIteration / StopIterationAndBuffer).
    Pause,
}

impl Action {
    /// Decodes the callback's return value; anything but 0 or 1 is not an action.
    pub(crate) fn from_raw(raw: i32) -> Option<Action> {
        match raw {
            0 => Some(Action::Continue),
            1 => Some(Action::Pause),
            _ => None,
        }
    }
}

/// `proxy_log_level_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
}

impl LogLevel {
    pub(crate) fn from_raw(raw: i32) -> Option<LogLevel> {
        Some(match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    pub(crate) fn raw(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        };
        f.write_str(s)
    }
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    ForeignFunctionArguments,
}

impl BufferType {
    pub(crate) fn from_raw(raw: i32) -> Option<BufferType> {
        Some(match raw {
            0 => BufferType::HttpRequestBody,
            1 => BufferType::HttpResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::HttpCallResponseBody,
            5 => BufferType::GrpcReceiveBuffer,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::ForeignFunctionArguments,
            _ => return None,
        })
    }
}

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    pub(crate) fn from_raw(raw: i32) -> Option<MapType> {
        Some(match raw {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_stream_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamType {
    HttpRequest,
    HttpResponse,
    Downstream,
    Upstream,
}

impl StreamType {
    pub(crate) fn from_raw(raw: i32) -> Option<StreamType> {
        Some(match raw {
            0 => StreamType::HttpRequest,
            1 => StreamType::HttpResponse,
            2 => StreamType::Downstream,
            3 => StreamType::Upstream,
            _ => return None,
        })
    }
}

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// 0: only goes up.
    Counter,
    /// 1: goes up and down, or is set.
    Gauge,
    /// 2: records samples.
    Histogram,
}

impl MetricType {
    pub(crate) fn from_raw(raw: i32) -> Option<MetricType> {
        Some(match raw {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// A header map as a list of (name, value) pairs, in order. Values are bytes because HTTP allows
/// non-UTF-8 values; names the harness stores are lowercase, as Envoy stores them.
pub type Pairs = Vec<(String, Vec<u8>)>;

/// Serializes a map in the spec's format: a 32-bit count, then a (key length, value length) pair
/// of 32-bit integers per entry, then each key and value followed by a NUL byte; all integers
/// little-endian. An empty map is the empty byte string (the spec allows `size=0`).
pub fn serialize_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let data: usize = pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
    out.extend_from_slice(&u32_len(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&u32_len(k.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&u32_len(v.as_ref().len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

fn u32_len(n: usize) -> u32 {
    // Maps the harness serializes come from tests and the module's 32-bit memory.
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Why a serialized map from the module was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairsError {
    /// The bytes end before the header or the data the header announces.
    Truncated,
    /// A key or value is not followed by the NUL byte the format requires.
    MissingNul,
    /// Bytes are left over after the last announced entry.
    TrailingBytes,
    /// A key is not UTF-8.
    KeyNotUtf8,
}

impl fmt::Display for PairsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            PairsError::Truncated => "serialized map is truncated",
            PairsError::MissingNul => "serialized map entry is not NUL-terminated",
            PairsError::TrailingBytes => "serialized map has bytes after its last entry",
            PairsError::KeyNotUtf8 => "serialized map key is not UTF-8",
        };
        f.write_str(s)
    }
}

impl std::error::Error for PairsError {}

/// Parses a map in the spec's format, strictly: the sizes must describe the bytes exactly.
/// Both empty forms the spec allows (zero bytes, or a single `0x00` byte) and a zero count
/// (`00 00 00 00`, what the Rust SDK writes) are the empty map.
pub fn deserialize_pairs(bytes: &[u8]) -> Result<Pairs, PairsError> {
    if bytes.is_empty() || bytes == [0] {
        return Ok(Vec::new());
    }
    let count = read_u32(bytes, 0).ok_or(PairsError::Truncated)? as usize;
    let header_end = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .ok_or(PairsError::Truncated)?;
    if header_end > bytes.len() {
        return Err(PairsError::Truncated);
    }
    let mut pos = header_end;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let klen = read_u32(bytes, 4 + i * 8).ok_or(PairsError::Truncated)? as usize;
        let vlen = read_u32(bytes, 8 + i * 8).ok_or(PairsError::Truncated)? as usize;
        let key = take_nul_terminated(bytes, &mut pos, klen)?;
        let value = take_nul_terminated(bytes, &mut pos, vlen)?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| PairsError::KeyNotUtf8)?;
        out.push((key, value.to_vec()));
    }
    if pos != bytes.len() {
        return Err(PairsError::TrailingBytes);
    }
    Ok(out)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let b: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn take_nul_terminated<'a>(
    bytes: &'a [u8],
    pos: &mut usize,
    len: usize,
) -> Result<&'a [u8], PairsError> {
    let end = pos.checked_add(len).ok_or(PairsError::Truncated)?;
    let data = bytes.get(*pos..end).ok_or(PairsError::Truncated)?;
    match bytes.get(end) {
        Some(0) => {}
        Some(_) => return Err(PairsError::MissingNul),
        None => return Err(PairsError::Truncated),
    }
    *pos = end + 1;
    Ok(data)
}

/// Splits a serialized property path (segments separated by NUL bytes, as the SDK writes it)
/// into its segments.
pub fn split_property_path(path: &[u8]) -> Vec<Vec<u8>> {
    if path.is_empty() {
        return Vec::new();
    }
    path.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
}

/// Joins property path segments the way the SDK serializes them (NUL-separated).
pub fn join_property_path<S: AsRef<[u8]>>(segments: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(s.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the specification: `{{"a": "1"}, {"b": "22"}}`.
    const SPEC_EXAMPLE: &[u8] = &[
        2, 0, 0, 0, // two entries
        1, 0, 0, 0, 1, 0, 0, 0, // "a" -> "1"
        1, 0, 0, 0, 2, 0, 0, 0, // "b" -> "22"
        b'a', 0, b'1', 0, b'b', 0, b'2', b'2', 0,
    ];

    #[test]
    fn serializes_the_spec_example_byte_for_byte() {
        assert_eq!(serialize_pairs(&[("a", "1"), ("b", "22")]), SPEC_EXAMPLE);
    }

    #[test]
    fn deserializes_the_spec_example() {
        let pairs = deserialize_pairs(SPEC_EXAMPLE).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"22".to_vec())
            ]
        );
    }

    #[test]
    fn all_three_empty_forms_are_the_empty_map() {
        assert!(deserialize_pairs(&[]).unwrap().is_empty());
        assert!(deserialize_pairs(&[0]).unwrap().is_empty());
        assert!(deserialize_pairs(&[0, 0, 0, 0]).unwrap().is_empty());
        assert!(serialize_pairs::<&str, &str>(&[]).is_empty());
    }

    #[test]
    fn empty_keys_and_values_round_trip() {
        let bytes = serialize_pairs(&[("", ""), ("x-empty", "")]);
        let back = deserialize_pairs(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], ("x-empty".to_string(), Vec::new()));
    }

    #[test]
    fn refuses_maps_whose_sizes_lie() {
        // Announces two entries but carries one.
        let mut lying = SPEC_EXAMPLE.to_vec();
        lying[0] = 3;
        assert_eq!(deserialize_pairs(&lying), Err(PairsError::Truncated));
        // Value not NUL-terminated.
        let mut no_nul = SPEC_EXAMPLE.to_vec();
        let last = no_nul.len() - 1;
        no_nul[last] = b'!';
        assert_eq!(deserialize_pairs(&no_nul), Err(PairsError::MissingNul));
        // Extra byte after the last entry.
        let mut trailing = SPEC_EXAMPLE.to_vec();
        trailing.push(0);
        assert_eq!(deserialize_pairs(&trailing), Err(PairsError::TrailingBytes));
        // A count so large the header cannot fit.
        assert_eq!(
            deserialize_pairs(&[0xff, 0xff, 0xff, 0xff]),
            Err(PairsError::Truncated)
        );
    }

    #[test]
    fn property_paths_split_on_nul() {
        let joined = join_property_path(&["connection", "uri_san_peer_certificate"]);
        assert_eq!(joined, b"connection\0uri_san_peer_certificate");
        assert_eq!(
            split_property_path(&joined),
            vec![b"connection".to_vec(), b"uri_san_peer_certificate".to_vec()]
        );
        assert!(split_property_path(b"").is_empty());
    }
}
