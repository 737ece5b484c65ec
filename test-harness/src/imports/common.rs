//! Hostcalls that are not about one HTTP stream: logging, clocks, timers, properties and filter
//! state, shared data, metrics, and context bookkeeping.

use crate::abi::{LogLevel, MetricType, Status, split_property_path};
use crate::guest::{Guest, HostcallResult, copy_out, read_bytes, write_u32, write_u64};
use crate::state::{CasOutcome, Deferred};

use super::ok;

/// `proxy_log(level, message_data, message_size)`.
pub(crate) fn proxy_log(g: &mut dyn Guest, level: i32, ptr: u32, len: u32) -> HostcallResult {
    g.state().count("proxy_log");
    let Some(level) = LogLevel::from_raw(level) else {
        return Ok(Status::BadArgument.code());
    };
    let message = try_status!(read_bytes(g, ptr, len));
    let message = String::from_utf8_lossy(&message).into_owned();
    g.state().log(level, message);
    ok()
}

/// `proxy_get_log_level(return_log_level)`.
pub(crate) fn proxy_get_log_level(g: &mut dyn Guest, ret: u32) -> HostcallResult {
    g.state().count("proxy_get_log_level");
    let level = g.state().log_level.raw();
    try_status!(write_u32(g, ret, level.cast_unsigned()));
    ok()
}

/// `proxy_get_current_time_nanoseconds(return_time)`.
pub(crate) fn proxy_get_current_time_nanoseconds(g: &mut dyn Guest, ret: u32) -> HostcallResult {
    g.state().count("proxy_get_current_time_nanoseconds");
    let now = g.state().realtime_ns;
    try_status!(write_u64(g, ret, now));
    ok()
}

/// `proxy_set_tick_period_milliseconds(tick_period)`. The period belongs to the plugin (root)
/// context, as in Envoy; 0 disables the timer.
pub(crate) fn proxy_set_tick_period_milliseconds(g: &mut dyn Guest, period: u32) -> HostcallResult {
    g.state().count("proxy_set_tick_period_milliseconds");
    g.state().tick_period_ms = period;
    ok()
}

/// `proxy_set_effective_context(context_id)`: OK for the plugin context or a live stream;
/// `BAD_ARGUMENT` otherwise.
pub(crate) fn proxy_set_effective_context(g: &mut dyn Guest, ctx: u32) -> HostcallResult {
    g.state().count("proxy_set_effective_context");
    let st = g.state();
    let live = ctx == st.root_ctx || st.streams.get(&ctx).is_some_and(|s| !s.deleted);
    if !live {
        return Ok(Status::BadArgument.code());
    }
    st.effective_ctx = ctx;
    ok()
}

/// `proxy_done()`: OK when the effective context is waiting for it (its `proxy_on_done`
/// returned false), `NOT_FOUND` otherwise.
pub(crate) fn proxy_done(g: &mut dyn Guest) -> HostcallResult {
    g.state().count("proxy_done");
    let st = g.state();
    let ctx = st.effective_ctx;
    if !st.pending_done.remove(&ctx) {
        return Ok(Status::NotFound.code());
    }
    st.deferred.push(Deferred::Done { ctx });
    ok()
}

/// Looks up a property the way Envoy does for the paths a test can provide: the stream's
/// properties, then the host's, then the plugin built-ins, then filter state written with
/// `proxy_set_property` (a one-segment path `x` reads filter state `wasm.x`).
fn lookup_property(g: &mut dyn Guest, path: &[u8]) -> Option<Vec<u8>> {
    let st = g.state();
    if let Some(v) = st
        .effective_stream()
        .and_then(|s| s.properties.get(path).cloned())
    {
        return Some(v);
    }
    if let Some(v) = st.properties.get(path) {
        return Some(v.clone());
    }
    let segments = split_property_path(path);
    match segments.as_slice() {
        [one] if one.as_slice() == b"plugin_name" => Some(st.plugin_name.clone().into_bytes()),
        [one] if one.as_slice() == b"plugin_root_id" => Some(st.root_id_name.clone().into_bytes()),
        [one] if one.as_slice() == b"plugin_vm_id" => Some(st.vm_id.clone().into_bytes()),
        [one] => {
            let key = format!("wasm.{}", String::from_utf8_lossy(one));
            st.effective_stream()
                .and_then(|s| s.filter_state.get(&key).cloned())
        }
        _ => None,
    }
}

/// `proxy_get_property(path_data, path_size, return_value_data, return_value_size)`.
pub(crate) fn proxy_get_property(
    g: &mut dyn Guest,
    path_ptr: u32,
    path_len: u32,
    ret_ptr: u32,
    ret_len: u32,
) -> HostcallResult {
    g.state().count("proxy_get_property");
    let path = try_status!(read_bytes(g, path_ptr, path_len));
    let Some(value) = lookup_property(g, &path) else {
        return Ok(Status::NotFound.code());
    };
    try_status!(copy_out(g, &value, ret_ptr, ret_len)?);
    ok()
}

/// `proxy_set_property(path_data, path_size, value_data, value_size)`: stores filter state
/// `wasm.<path>` exactly as Envoy does (the raw path bytes, NULs included, so a multi-segment
/// path does NOT produce a dotted key). `NOT_FOUND` without a stream (Envoy has no stream info).
pub(crate) fn proxy_set_property(
    g: &mut dyn Guest,
    path_ptr: u32,
    path_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostcallResult {
    g.state().count("proxy_set_property");
    let path = try_status!(read_bytes(g, path_ptr, path_len));
    let value = try_status!(read_bytes(g, value_ptr, value_len));
    let key = format!("wasm.{}", String::from_utf8_lossy(&path));
    let Some(stream) = g.state().effective_stream() else {
        return Ok(Status::NotFound.code());
    };
    stream
        .filter_state_writes
        .push((key.clone(), value.clone()));
    stream.filter_state.insert(key, value);
    ok()
}

/// `proxy_get_shared_data(key_data, key_size, return_value_data, return_value_size, return_cas)`.
pub(crate) fn proxy_get_shared_data(
    g: &mut dyn Guest,
    key_ptr: u32,
    key_len: u32,
    ret_ptr: u32,
    ret_len: u32,
    ret_cas: u32,
) -> HostcallResult {
    g.state().count("proxy_get_shared_data");
    let key = try_status!(read_bytes(g, key_ptr, key_len));
    let Some((value, cas)) = g.state().shared.get(&key) else {
        return Ok(Status::NotFound.code());
    };
    try_status!(copy_out(g, &value, ret_ptr, ret_len)?);
    try_status!(write_u32(g, ret_cas, cas));
    ok()
}

/// `proxy_set_shared_data(key_data, key_size, value_data, value_size, cas)`.
pub(crate) fn proxy_set_shared_data(
    g: &mut dyn Guest,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
    cas: u32,
) -> HostcallResult {
    g.state().count("proxy_set_shared_data");
    let key = try_status!(read_bytes(g, key_ptr, key_len));
    let value = try_status!(read_bytes(g, value_ptr, value_len));
    match g.state().shared.set(&key, &value, cas) {
        CasOutcome::Stored => ok(),
        CasOutcome::Mismatch => Ok(Status::CasMismatch.code()),
    }
}

/// `proxy_define_metric(metric_type, name_data, name_size, return_metric_id)`.
pub(crate) fn proxy_define_metric(
    g: &mut dyn Guest,
    kind: i32,
    name_ptr: u32,
    name_len: u32,
    ret_id: u32,
) -> HostcallResult {
    g.state().count("proxy_define_metric");
    let Some(kind) = MetricType::from_raw(kind) else {
        return Ok(Status::BadArgument.code());
    };
    let name = try_status!(read_bytes(g, name_ptr, name_len));
    let name = String::from_utf8_lossy(&name).into_owned();
    let id = g.state().metrics.define(kind, &name);
    try_status!(write_u32(g, ret_id, id));
    ok()
}

fn metric_kind_of_id(id: u32) -> Option<MetricType> {
    match id & 3 {
        0 => Some(MetricType::Counter),
        1 => Some(MetricType::Gauge),
        2 => Some(MetricType::Histogram),
        _ => None,
    }
}

/// `proxy_increment_metric(metric_id, delta)`: counters take only positive deltas
/// (`BAD_ARGUMENT` otherwise, as in Envoy); gauges go both ways; histograms cannot be
/// incremented (`BAD_ARGUMENT`).
pub(crate) fn proxy_increment_metric(g: &mut dyn Guest, id: u32, delta: i64) -> HostcallResult {
    g.state().count("proxy_increment_metric");
    let kind = metric_kind_of_id(id);
    let st = g.state();
    match kind {
        Some(MetricType::Counter) => {
            let Some(m) = st.metrics.by_id(id) else {
                return Ok(Status::NotFound.code());
            };
            if delta <= 0 {
                return Ok(Status::BadArgument.code());
            }
            m.value = m.value.saturating_add(delta.unsigned_abs());
            ok()
        }
        Some(MetricType::Gauge) => {
            let Some(m) = st.metrics.by_id(id) else {
                return Ok(Status::NotFound.code());
            };
            if delta >= 0 {
                m.value = m.value.saturating_add(delta.unsigned_abs());
            } else {
                let by = delta.unsigned_abs();
                if by > m.value {
                    let name = m.name.clone();
                    st.violation(format!("gauge `{name}` decremented below zero"));
                    return ok();
                }
                m.value -= by;
            }
            ok()
        }
        _ => Ok(Status::BadArgument.code()),
    }
}

/// `proxy_record_metric(metric_id, value)`: counters add (as Envoy does), gauges are set,
/// histograms record a sample.
pub(crate) fn proxy_record_metric(g: &mut dyn Guest, id: u32, value: u64) -> HostcallResult {
    g.state().count("proxy_record_metric");
    let Some(m) = g.state().metrics.by_id(id) else {
        return Ok(Status::NotFound.code());
    };
    match m.kind {
        MetricType::Counter => m.value = m.value.saturating_add(value),
        MetricType::Gauge => m.value = value,
        MetricType::Histogram => m.samples.push(value),
    }
    ok()
}

/// `proxy_get_metric(metric_id, return_value)`: `BAD_ARGUMENT` for histograms.
pub(crate) fn proxy_get_metric(g: &mut dyn Guest, id: u32, ret: u32) -> HostcallResult {
    g.state().count("proxy_get_metric");
    if metric_kind_of_id(id) == Some(MetricType::Histogram) || metric_kind_of_id(id).is_none() {
        return Ok(Status::BadArgument.code());
    }
    let Some(m) = g.state().metrics.by_id(id) else {
        return Ok(Status::NotFound.code());
    };
    let value = m.value;
    try_status!(write_u64(g, ret, value));
    ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::join_property_path;
    use crate::guest::FakeGuest;
    use crate::state::StreamState;

    const OK: i32 = 0;
    const NOT_FOUND: i32 = 1;
    const BAD_ARGUMENT: i32 = 2;
    const INVALID_MEMORY_ACCESS: i32 = 6;
    const CAS_MISMATCH: i32 = 8;

    fn with_stream(g: &mut FakeGuest, ctx: u32) {
        g.state.streams.insert(ctx, StreamState::default());
        g.state.effective_ctx = ctx;
    }

    #[test]
    fn log_checks_level_and_memory() {
        let mut g = FakeGuest::new();
        g.put(10, b"hello");
        assert_eq!(proxy_log(&mut g, 2, 10, 5).unwrap(), OK);
        assert_eq!(g.state.logs.last().unwrap().message, "hello");
        assert_eq!(g.state.logs.last().unwrap().level, LogLevel::Info);
        assert_eq!(proxy_log(&mut g, 6, 10, 5).unwrap(), BAD_ARGUMENT);
        assert_eq!(
            proxy_log(&mut g, 2, 65535, 5).unwrap(),
            INVALID_MEMORY_ACCESS
        );
        assert_eq!(g.state.logs.len(), 1);
    }

    #[test]
    fn time_and_log_level_go_to_checked_pointers() {
        let mut g = FakeGuest::new();
        g.state.realtime_ns = 1_800_000_000_000_000_000;
        assert_eq!(proxy_get_current_time_nanoseconds(&mut g, 8).unwrap(), OK);
        assert_eq!(g.u64_at(8), 1_800_000_000_000_000_000);
        assert_eq!(
            proxy_get_current_time_nanoseconds(&mut g, 65532).unwrap(),
            INVALID_MEMORY_ACCESS
        );
        assert_eq!(proxy_get_log_level(&mut g, 16).unwrap(), OK);
        assert_eq!(g.u32_at(16), 2);
    }

    #[test]
    fn shared_data_get_set_and_cas_mismatch() {
        let mut g = FakeGuest::new();
        g.put(0, b"portcullis/s/abc");
        g.put(100, b"state-1");
        g.put(200, b"state-2");
        // Missing key.
        assert_eq!(
            proxy_get_shared_data(&mut g, 0, 16, 300, 304, 308).unwrap(),
            NOT_FOUND
        );
        assert_eq!(proxy_set_shared_data(&mut g, 0, 16, 100, 7, 0).unwrap(), OK);
        assert_eq!(
            proxy_get_shared_data(&mut g, 0, 16, 300, 304, 308).unwrap(),
            OK
        );
        assert_eq!(g.returned(300, 304), b"state-1");
        let cas = g.u32_at(308);
        assert_ne!(cas, 0);
        // Another worker writes in between.
        g.state.shared.set(b"portcullis/s/abc", b"other", 0);
        assert_eq!(
            proxy_set_shared_data(&mut g, 0, 16, 200, 7, cas).unwrap(),
            CAS_MISMATCH
        );
        assert_eq!(g.state.shared.get(b"portcullis/s/abc").unwrap().0, b"other");
        // Re-read and retry with the fresh token.
        assert_eq!(
            proxy_get_shared_data(&mut g, 0, 16, 300, 304, 308).unwrap(),
            OK
        );
        let fresh = g.u32_at(308);
        assert_eq!(
            proxy_set_shared_data(&mut g, 0, 16, 200, 7, fresh).unwrap(),
            OK
        );
        assert_eq!(
            g.state.shared.get(b"portcullis/s/abc").unwrap().0,
            b"state-2"
        );
        // Bad pointers.
        assert_eq!(
            proxy_set_shared_data(&mut g, 65530, 16, 200, 7, 0).unwrap(),
            INVALID_MEMORY_ACCESS
        );
        assert_eq!(
            proxy_get_shared_data(&mut g, 0, 16, 300, 304, 65534).unwrap(),
            INVALID_MEMORY_ACCESS
        );
    }

    #[test]
    fn properties_come_from_the_stream_then_the_host_else_not_found() {
        let mut g = FakeGuest::new();
        with_stream(&mut g, 2);
        let path = join_property_path(&["connection", "uri_san_peer_certificate"]);
        g.put(0, &path);
        let plen = path.len() as u32;
        assert_eq!(
            proxy_get_property(&mut g, 0, plen, 100, 104).unwrap(),
            NOT_FOUND
        );
        g.state
            .properties
            .insert(path.clone(), b"spiffe://host".to_vec());
        assert_eq!(proxy_get_property(&mut g, 0, plen, 100, 104).unwrap(), OK);
        assert_eq!(g.returned(100, 104), b"spiffe://host");
        g.state
            .streams
            .get_mut(&2)
            .unwrap()
            .properties
            .insert(path.clone(), b"spiffe://stream".to_vec());
        assert_eq!(proxy_get_property(&mut g, 0, plen, 100, 104).unwrap(), OK);
        assert_eq!(g.returned(100, 104), b"spiffe://stream");
    }

    #[test]
    fn set_property_stores_envoy_filter_state_under_the_wasm_prefix() {
        let mut g = FakeGuest::new();
        with_stream(&mut g, 2);
        g.put(0, b"portcullis.decision");
        g.put(100, b"DENY");
        assert_eq!(proxy_set_property(&mut g, 0, 19, 100, 4).unwrap(), OK);
        let st = &g.state.streams[&2];
        assert_eq!(st.filter_state["wasm.portcullis.decision"], b"DENY");
        // Read back through get_property with the same one-segment path.
        assert_eq!(proxy_get_property(&mut g, 0, 19, 200, 204).unwrap(), OK);
        assert_eq!(g.returned(200, 204), b"DENY");
        // A two-segment path is NOT the dotted key (Envoy keeps the NUL).
        g.put(300, b"wasm\0portcullis.rule");
        assert_eq!(proxy_set_property(&mut g, 300, 20, 100, 4).unwrap(), OK);
        assert!(
            !g.state.streams[&2]
                .filter_state
                .contains_key("wasm.portcullis.rule")
        );
        // No stream: NOT_FOUND, as Envoy without stream info.
        g.state.effective_ctx = 1;
        assert_eq!(
            proxy_set_property(&mut g, 0, 19, 100, 4).unwrap(),
            NOT_FOUND
        );
    }

    #[test]
    fn metrics_follow_envoy_rules() {
        let mut g = FakeGuest::new();
        g.put(0, b"portcullis_denied");
        assert_eq!(proxy_define_metric(&mut g, 0, 0, 17, 100).unwrap(), OK);
        let counter = g.u32_at(100);
        assert_eq!(
            proxy_define_metric(&mut g, 3, 0, 17, 100).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(proxy_increment_metric(&mut g, counter, 2).unwrap(), OK);
        assert_eq!(
            proxy_increment_metric(&mut g, counter, 0).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(
            proxy_increment_metric(&mut g, counter, -1).unwrap(),
            BAD_ARGUMENT
        );
        assert_eq!(proxy_record_metric(&mut g, counter, 3).unwrap(), OK);
        assert_eq!(proxy_get_metric(&mut g, counter, 200).unwrap(), OK);
        assert_eq!(g.u64_at(200), 5);
        assert_eq!(proxy_get_metric(&mut g, 4 * 77, 200).unwrap(), NOT_FOUND);
        assert_eq!(proxy_define_metric(&mut g, 1, 0, 17, 100).unwrap(), OK);
        let gauge = g.u32_at(100);
        assert_eq!(proxy_record_metric(&mut g, gauge, 10).unwrap(), OK);
        assert_eq!(proxy_increment_metric(&mut g, gauge, -4).unwrap(), OK);
        assert_eq!(proxy_get_metric(&mut g, gauge, 200).unwrap(), OK);
        assert_eq!(g.u64_at(200), 6);
        assert_eq!(proxy_define_metric(&mut g, 2, 0, 17, 100).unwrap(), OK);
        let hist = g.u32_at(100);
        assert_eq!(proxy_record_metric(&mut g, hist, 42).unwrap(), OK);
        assert_eq!(proxy_get_metric(&mut g, hist, 200).unwrap(), BAD_ARGUMENT);
        assert_eq!(
            proxy_increment_metric(&mut g, hist, 1).unwrap(),
            BAD_ARGUMENT
        );
    }

    #[test]
    fn effective_context_must_exist_and_done_must_be_pending() {
        let mut g = FakeGuest::new();
        g.state.root_ctx = 1;
        assert_eq!(proxy_set_effective_context(&mut g, 1).unwrap(), OK);
        assert_eq!(
            proxy_set_effective_context(&mut g, 9).unwrap(),
            BAD_ARGUMENT
        );
        with_stream(&mut g, 2);
        assert_eq!(proxy_set_effective_context(&mut g, 2).unwrap(), OK);
        assert_eq!(proxy_done(&mut g).unwrap(), NOT_FOUND);
        g.state.pending_done.insert(2);
        assert_eq!(proxy_done(&mut g).unwrap(), OK);
        assert_eq!(g.state.deferred.len(), 1);
    }
}
