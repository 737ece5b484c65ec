//! The `wasi_snapshot_preview1` functions the proxy-wasm spec lists, as Envoy provides them:
//! stdout/stderr become log lines, the environment is the VM's configured variables, clocks are
//! the host's simulated clock, randomness is deterministic.

use crate::abi::errno;
use crate::guest::{Guest, HostcallResult, read_bytes, write_u32, write_u64};

/// `fd_write(fd, iovec, iovec_size, return_written)`: fd 1 logs at INFO, fd 2 at ERROR (one
/// entry per line); any other fd is `BADF`; bad pointers are `FAULT`.
pub(crate) fn fd_write(
    g: &mut dyn Guest,
    fd: i32,
    iovs: u32,
    iovs_len: u32,
    ret_written: u32,
) -> HostcallResult {
    g.state().count("fd_write");
    let fd = match fd {
        1 => 1usize,
        2 => 2usize,
        _ => return Ok(errno::BADF),
    };
    let Some(table_len) = iovs_len.checked_mul(8) else {
        return Ok(errno::FAULT);
    };
    let Ok(table) = read_bytes(g, iovs, table_len) else {
        return Ok(errno::FAULT);
    };
    let mut data = Vec::new();
    for entry in table.chunks_exact(8) {
        let (ptr, len) = entry.split_at(4);
        let ptr = u32::from_le_bytes(ptr.try_into().unwrap_or_default());
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default());
        let Ok(bytes) = read_bytes(g, ptr, len) else {
            return Ok(errno::FAULT);
        };
        data.extend_from_slice(&bytes);
    }
    let written = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if write_u32(g, ret_written, written).is_err() {
        return Ok(errno::FAULT);
    }
    g.state().write_fd(fd, &data);
    Ok(errno::SUCCESS)
}

fn environ_strings(g: &mut dyn Guest) -> Vec<Vec<u8>> {
    g.state()
        .env
        .iter()
        .map(|(k, v)| {
            let mut s = format!("{k}={v}").into_bytes();
            s.push(0);
            s
        })
        .collect()
}

/// `environ_sizes_get(return_count, return_buffer_size)`.
pub(crate) fn environ_sizes_get(
    g: &mut dyn Guest,
    ret_count: u32,
    ret_size: u32,
) -> HostcallResult {
    g.state().count("environ_sizes_get");
    let strings = environ_strings(g);
    let count = u32::try_from(strings.len()).unwrap_or(u32::MAX);
    let size = u32::try_from(strings.iter().map(Vec::len).sum::<usize>()).unwrap_or(u32::MAX);
    if write_u32(g, ret_count, count).is_err() || write_u32(g, ret_size, size).is_err() {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

/// `environ_get(return_array, return_buffer)`: pointers into the buffer, `KEY=VALUE\0` strings.
pub(crate) fn environ_get(g: &mut dyn Guest, array: u32, buffer: u32) -> HostcallResult {
    g.state().count("environ_get");
    let strings = environ_strings(g);
    let mut at = buffer;
    for (i, s) in strings.iter().enumerate() {
        let slot = u32::try_from(i)
            .ok()
            .and_then(|i| i.checked_mul(4))
            .and_then(|o| array.checked_add(o));
        let Some(slot) = slot else {
            return Ok(errno::FAULT);
        };
        if write_u32(g, slot, at).is_err() || !g.write(at, s) {
            return Ok(errno::FAULT);
        }
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        at = match at.checked_add(len) {
            Some(next) => next,
            None => return Ok(errno::FAULT),
        };
    }
    Ok(errno::SUCCESS)
}

/// `args_sizes_get(return_argc, return_argv_buffer_size)`: always zero arguments.
pub(crate) fn args_sizes_get(g: &mut dyn Guest, ret_argc: u32, ret_size: u32) -> HostcallResult {
    g.state().count("args_sizes_get");
    if write_u32(g, ret_argc, 0).is_err() || write_u32(g, ret_size, 0).is_err() {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

/// `args_get(return_argv, return_argv_buffer)`: nothing to write.
pub(crate) fn args_get(g: &mut dyn Guest, _argv: u32, _buf: u32) -> HostcallResult {
    g.state().count("args_get");
    Ok(errno::SUCCESS)
}

/// `clock_time_get(clock_id, precision, return_time)`: REALTIME (0) and MONOTONIC (1).
pub(crate) fn clock_time_get(
    g: &mut dyn Guest,
    clock: i32,
    _precision: i64,
    ret: u32,
) -> HostcallResult {
    g.state().count("clock_time_get");
    let now = match clock {
        0 => g.state().realtime_ns,
        1 => g.state().monotonic_ns,
        _ => return Ok(errno::NOTSUP),
    };
    if write_u64(g, ret, now).is_err() {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

/// Largest `random_get` request served (proxy-wasm-cpp-host's limit).
const MAX_RANDOM: u32 = 64 * 1024;

/// `random_get(buffer, size)`: deterministic bytes; more than 64 KiB is `INVAL`.
pub(crate) fn random_get(g: &mut dyn Guest, buf: u32, len: u32) -> HostcallResult {
    g.state().count("random_get");
    if len > MAX_RANDOM {
        return Ok(errno::INVAL);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    while bytes.len() < len as usize {
        bytes.extend_from_slice(&g.state().next_random().to_le_bytes());
    }
    bytes.truncate(len as usize);
    if len > 0 && !g.write(buf, &bytes) {
        return Ok(errno::FAULT);
    }
    Ok(errno::SUCCESS)
}

/// `fd_prestat_get(fd, return_prestat)`: no preopened directories (`BADF`), so the Rust
/// standard library stops asking.
pub(crate) fn fd_prestat_get(g: &mut dyn Guest, _fd: i32, _ret: u32) -> HostcallResult {
    g.state().count("fd_prestat_get");
    Ok(errno::BADF)
}

/// Any other WASI function a module may import: not supported (`NOSYS`).
pub(crate) fn nosys(g: &mut dyn Guest, name: &'static str) -> HostcallResult {
    g.state().count(name);
    Ok(errno::NOSYS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::LogLevel;
    use crate::guest::FakeGuest;

    #[test]
    fn stdout_and_stderr_become_log_lines() {
        let mut g = FakeGuest::new();
        g.put(1000, b"panicked at src/lib.rs:1:1:\noops");
        // Two iovecs: "panicked ...\n" and "oops".
        let mut iov = Vec::new();
        iov.extend_from_slice(&1000u32.to_le_bytes());
        iov.extend_from_slice(&28u32.to_le_bytes());
        iov.extend_from_slice(&1028u32.to_le_bytes());
        iov.extend_from_slice(&4u32.to_le_bytes());
        g.put(0, &iov);
        assert_eq!(fd_write(&mut g, 2, 0, 2, 100).unwrap(), errno::SUCCESS);
        assert_eq!(g.u32_at(100), 32);
        assert_eq!(g.state.logs.len(), 1);
        assert_eq!(g.state.logs[0].message, "panicked at src/lib.rs:1:1:");
        assert_eq!(g.state.logs[0].level, LogLevel::Error);
        g.state.flush_fds();
        assert_eq!(g.state.logs[1].message, "oops");
        assert_eq!(fd_write(&mut g, 3, 0, 2, 100).unwrap(), errno::BADF);
        assert_eq!(fd_write(&mut g, 1, 65530, 2, 100).unwrap(), errno::FAULT);
    }

    #[test]
    fn environment_is_served_in_wasi_layout() {
        let mut g = FakeGuest::new();
        g.state.env = vec![
            ("A".into(), "1".into()),
            ("PORTCULLIS_KEY".into(), "k".into()),
        ];
        assert_eq!(environ_sizes_get(&mut g, 0, 4).unwrap(), errno::SUCCESS);
        assert_eq!(g.u32_at(0), 2);
        assert_eq!(g.u32_at(4), 4 + 17);
        assert_eq!(environ_get(&mut g, 100, 200).unwrap(), errno::SUCCESS);
        assert_eq!(g.u32_at(100), 200);
        assert_eq!(g.u32_at(104), 204);
        assert_eq!(&g.mem[200..221], b"A=1\0PORTCULLIS_KEY=k\0");
        assert_eq!(environ_get(&mut g, 65534, 200).unwrap(), errno::FAULT);
    }

    #[test]
    fn clocks_and_randomness() {
        let mut g = FakeGuest::new();
        g.state.realtime_ns = 5;
        g.state.monotonic_ns = 7;
        assert_eq!(clock_time_get(&mut g, 0, 0, 8).unwrap(), errno::SUCCESS);
        assert_eq!(g.u64_at(8), 5);
        assert_eq!(clock_time_get(&mut g, 1, 0, 8).unwrap(), errno::SUCCESS);
        assert_eq!(g.u64_at(8), 7);
        assert_eq!(clock_time_get(&mut g, 2, 0, 8).unwrap(), errno::NOTSUP);
        assert_eq!(clock_time_get(&mut g, 0, 0, 65535).unwrap(), errno::FAULT);
        assert_eq!(random_get(&mut g, 100, 16).unwrap(), errno::SUCCESS);
        assert!(g.mem[100..116].iter().any(|b| *b != 0));
        assert_eq!(
            random_get(&mut g, 100, MAX_RANDOM + 1).unwrap(),
            errno::INVAL
        );
        assert_eq!(random_get(&mut g, 65530, 16).unwrap(), errno::FAULT);
    }
}
