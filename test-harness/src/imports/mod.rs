//! The functions the host exposes to the module, and the linker that binds them.
//!
//! Strictness: every import of the module must be a function the proxy-wasm ABI v0.2.1 (or the
//! WASI subset Envoy provides) defines, or loading fails naming it. ABI functions the harness
//! does not implement (gRPC, shared queues, foreign functions) trap when called, with a message
//! naming the hostcall, so a test can never pass by accident through a silent `OK`.

/// Returns the status of a `Result<_, Status>` from the hostcall, or unwraps the value.
macro_rules! try_status {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return Ok(crate::abi::Status::code(status)),
        }
    };
}

mod common;
mod http;
mod wasi;

use std::collections::BTreeSet;

use anyhow::{Result, anyhow, bail};
use wasmtime::{Caller, Engine, ExternType, Linker, Module, Val};

use crate::guest::{CallerGuest, HostcallResult};
use crate::state::HostState;

pub(crate) fn ok() -> HostcallResult {
    Ok(0)
}

/// ABI functions the harness deliberately does not implement; calling one fails the test.
const UNIMPLEMENTED: &[&str] = &[
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_call_foreign_function",
];

/// WASI functions Envoy provides beyond the spec's list; the harness answers `NOSYS`
/// (`sched_yield`: success).
const WASI_NOSYS: &[&str] = &[
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_prestat_dir_name",
    "path_open",
    "poll_oneoff",
];

macro_rules! link {
    ($linker:ident, $defined:ident, $module:literal, $name:literal, $f:path, ($($arg:ident : $ty:ty),*)) => {
        $linker.func_wrap(
            $module,
            $name,
            |mut caller: Caller<'_, HostState>, $($arg: $ty),*| -> Result<i32> {
                $f(&mut CallerGuest::new(&mut caller), $($arg),*)
            },
        )?;
        $defined.insert(($module, $name));
    };
}

/// Builds the linker for `module`: the hostcalls, WASI, and trapping stand-ins for the
/// unimplemented ABI functions it imports. Fails on imports that are not part of the ABI.
pub(crate) fn linker(engine: &Engine, module: &Module) -> Result<Linker<HostState>> {
    let mut l: Linker<HostState> = Linker::new(engine);
    let mut defined: BTreeSet<(&str, &str)> = BTreeSet::new();
    let d = &mut defined;

    link!(l, d, "env", "proxy_log", common::proxy_log, (a: i32, b: u32, c: u32));
    link!(l, d, "env", "proxy_get_log_level", common::proxy_get_log_level, (a: u32));
    link!(l, d, "env", "proxy_get_current_time_nanoseconds",
        common::proxy_get_current_time_nanoseconds, (a: u32));
    link!(l, d, "env", "proxy_set_tick_period_milliseconds",
        common::proxy_set_tick_period_milliseconds, (a: u32));
    link!(l, d, "env", "proxy_set_effective_context", common::proxy_set_effective_context, (a: u32));
    link!(l, d, "env", "proxy_done", common::proxy_done, ());
    link!(l, d, "env", "proxy_get_property", common::proxy_get_property,
        (a: u32, b: u32, c: u32, e: u32));
    link!(l, d, "env", "proxy_set_property", common::proxy_set_property,
        (a: u32, b: u32, c: u32, e: u32));
    link!(l, d, "env", "proxy_get_shared_data", common::proxy_get_shared_data,
        (a: u32, b: u32, c: u32, e: u32, f: u32));
    link!(l, d, "env", "proxy_set_shared_data", common::proxy_set_shared_data,
        (a: u32, b: u32, c: u32, e: u32, f: u32));
    link!(l, d, "env", "proxy_define_metric", common::proxy_define_metric,
        (a: i32, b: u32, c: u32, e: u32));
    link!(l, d, "env", "proxy_increment_metric", common::proxy_increment_metric, (a: u32, b: i64));
    link!(l, d, "env", "proxy_record_metric", common::proxy_record_metric, (a: u32, b: u64));
    link!(l, d, "env", "proxy_get_metric", common::proxy_get_metric, (a: u32, b: u32));

    link!(l, d, "env", "proxy_get_header_map_pairs", http::proxy_get_header_map_pairs,
        (a: i32, b: u32, c: u32));
    link!(l, d, "env", "proxy_get_header_map_size", http::proxy_get_header_map_size,
        (a: i32, b: u32));
    link!(l, d, "env", "proxy_set_header_map_pairs", http::proxy_set_header_map_pairs,
        (a: i32, b: u32, c: u32));
    link!(l, d, "env", "proxy_get_header_map_value", http::proxy_get_header_map_value,
        (a: i32, b: u32, c: u32, e: u32, f: u32));
    link!(l, d, "env", "proxy_add_header_map_value", http::proxy_add_header_map_value,
        (a: i32, b: u32, c: u32, e: u32, f: u32));
    link!(l, d, "env", "proxy_replace_header_map_value", http::proxy_replace_header_map_value,
        (a: i32, b: u32, c: u32, e: u32, f: u32));
    link!(l, d, "env", "proxy_remove_header_map_value", http::proxy_remove_header_map_value,
        (a: i32, b: u32, c: u32));
    link!(l, d, "env", "proxy_get_buffer_bytes", http::proxy_get_buffer_bytes,
        (a: i32, b: u32, c: u32, e: u32, f: u32));
    link!(l, d, "env", "proxy_set_buffer_bytes", http::proxy_set_buffer_bytes,
        (a: i32, b: u32, c: u32, e: u32, f: u32));
    link!(l, d, "env", "proxy_get_buffer_status", http::proxy_get_buffer_status,
        (a: i32, b: u32, c: u32));
    link!(l, d, "env", "proxy_continue_stream", http::proxy_continue_stream, (a: i32));
    link!(l, d, "env", "proxy_close_stream", http::proxy_close_stream, (a: i32));
    link!(l, d, "env", "proxy_send_local_response", http::proxy_send_local_response,
        (a: u32, b: u32, c: u32, e: u32, f: u32, h: u32, i: u32, j: i32));
    link!(l, d, "env", "proxy_http_call", http::proxy_http_call,
        (a: u32, b: u32, c: u32, e: u32, f: u32, h: u32, i: u32, j: u32, k: u32, m: u32));
    link!(l, d, "env", "proxy_get_status", http::proxy_get_status, (a: u32, b: u32, c: u32));

    const W: &str = "wasi_snapshot_preview1";
    link!(l, d, "wasi_snapshot_preview1", "fd_write", wasi::fd_write,
        (a: i32, b: u32, c: u32, e: u32));
    link!(l, d, "wasi_snapshot_preview1", "environ_sizes_get", wasi::environ_sizes_get,
        (a: u32, b: u32));
    link!(l, d, "wasi_snapshot_preview1", "environ_get", wasi::environ_get, (a: u32, b: u32));
    link!(l, d, "wasi_snapshot_preview1", "args_sizes_get", wasi::args_sizes_get,
        (a: u32, b: u32));
    link!(l, d, "wasi_snapshot_preview1", "args_get", wasi::args_get, (a: u32, b: u32));
    link!(l, d, "wasi_snapshot_preview1", "clock_time_get", wasi::clock_time_get,
        (a: i32, b: i64, c: u32));
    link!(l, d, "wasi_snapshot_preview1", "random_get", wasi::random_get, (a: u32, b: u32));
    link!(l, d, "wasi_snapshot_preview1", "fd_prestat_get", wasi::fd_prestat_get,
        (a: i32, b: u32));
    l.func_wrap(
        W,
        "proc_exit",
        |_caller: Caller<'_, HostState>, code: i32| -> Result<()> {
            bail!("the module called wasi proc_exit({code}); Envoy never expects this")
        },
    )?;
    d.insert((W, "proc_exit"));
    l.func_wrap(
        W,
        "sched_yield",
        |_caller: Caller<'_, HostState>| -> Result<i32> { Ok(0) },
    )?;
    d.insert((W, "sched_yield"));

    let mut unknown = Vec::new();
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        if defined.contains(&(m, name)) {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            unknown.push(format!("{m}.{name} (not a function)"));
            continue;
        };
        if m == "env" && UNIMPLEMENTED.contains(&name) {
            let message = format!(
                "unexpected hostcall env.{name}: the proxy-wasm test harness does not implement it"
            );
            l.func_new(
                m,
                name,
                ty,
                move |_c, _params: &[Val], _results: &mut [Val]| Err(anyhow!("{message}")),
            )?;
        } else if m == W && WASI_NOSYS.contains(&name) {
            let name_static: &'static str = WASI_NOSYS
                .iter()
                .find(|n| **n == name)
                .copied()
                .unwrap_or("wasi");
            l.func_new(
                m,
                name,
                ty,
                move |mut c, _params: &[Val], results: &mut [Val]| {
                    let status = wasi::nosys(&mut CallerGuest::new(&mut c), name_static)?;
                    if let Some(slot) = results.first_mut() {
                        *slot = Val::I32(status);
                    }
                    Ok(())
                },
            )?;
        } else {
            unknown.push(format!("{m}.{name}"));
        }
    }
    if !unknown.is_empty() {
        bail!(
            "the module imports functions that proxy-wasm ABI v0.2.1 hosts (Envoy) do not provide: {}",
            unknown.join(", ")
        );
    }
    Ok(l)
}
