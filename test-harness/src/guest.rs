//! Checked access to the module's linear memory. Every read and write is bounds-checked; a bad
//! pointer becomes the status the spec lists (`INVALID_MEMORY_ACCESS`, or `FAULT` for WASI),
//! never a host panic. Hostcalls are written against the `Guest` trait so they can be unit-tested
//! on a plain byte vector (`FakeGuest`) as well as run on a real module (`CallerGuest`).

use anyhow::{Result, anyhow};
use wasmtime::Caller;

use crate::abi::Status;
use crate::state::HostState;

/// What a hostcall needs from the module: its memory, its allocator, and the host state.
pub(crate) trait Guest {
    /// The host state.
    fn state(&mut self) -> &mut HostState;
    /// `len` bytes at `ptr`, or `None` when any of them is outside memory.
    fn read(&mut self, ptr: u32, len: u32) -> Option<Vec<u8>>;
    /// Writes `data` at `ptr`; false (and nothing written) when it does not fit.
    fn write(&mut self, ptr: u32, data: &[u8]) -> bool;
    /// Calls the module's allocator. `Ok(None)`: it returned 0 or a block outside memory.
    /// `Err`: the module trapped.
    fn allocate(&mut self, size: u32) -> Result<Option<u32>>;
}

/// Outcome of a hostcall: `Ok(status)` goes back to the module; `Err` traps it.
pub(crate) type HostcallResult = Result<i32>;

/// Reads `len` bytes at `ptr`.
pub(crate) fn read_bytes(g: &mut dyn Guest, ptr: u32, len: u32) -> Result<Vec<u8>, Status> {
    if len == 0 {
        return Ok(Vec::new());
    }
    g.read(ptr, len).ok_or(Status::InvalidMemoryAccess)
}

/// Writes a little-endian u32 at `ptr`.
pub(crate) fn write_u32(g: &mut dyn Guest, ptr: u32, value: u32) -> Result<(), Status> {
    if g.write(ptr, &value.to_le_bytes()) {
        Ok(())
    } else {
        Err(Status::InvalidMemoryAccess)
    }
}

/// Writes a little-endian u64 at `ptr`.
pub(crate) fn write_u64(g: &mut dyn Guest, ptr: u32, value: u64) -> Result<(), Status> {
    if g.write(ptr, &value.to_le_bytes()) {
        Ok(())
    } else {
        Err(Status::InvalidMemoryAccess)
    }
}

/// Hands `data` to the module the way proxy-wasm-cpp-host does: allocate a block with the
/// module's allocator, copy, then write the block's address to `ptr_ptr` and the size to
/// `size_ptr`. Empty data allocates nothing and writes address 0, size 0.
/// `Ok(Err(status))`: a bad pointer or a failed allocation; `Err`: the module trapped.
pub(crate) fn copy_out(
    g: &mut dyn Guest,
    data: &[u8],
    ptr_ptr: u32,
    size_ptr: u32,
) -> Result<Result<(), Status>> {
    let size = match u32::try_from(data.len()) {
        Ok(size) => size,
        Err(_) => return Ok(Err(Status::InvalidMemoryAccess)),
    };
    let mut addr = 0u32;
    if size > 0 {
        addr = match g.allocate(size)? {
            Some(addr) => addr,
            None => return Ok(Err(Status::InvalidMemoryAccess)),
        };
        if !g.write(addr, data) {
            return Ok(Err(Status::InvalidMemoryAccess));
        }
    }
    if let Err(s) = write_u32(g, ptr_ptr, addr) {
        return Ok(Err(s));
    }
    Ok(write_u32(g, size_ptr, size))
}

/// The `Guest` of a real module, inside a hostcall.
pub(crate) struct CallerGuest<'a, 'c> {
    caller: &'a mut Caller<'c, HostState>,
}

impl<'a, 'c> CallerGuest<'a, 'c> {
    pub(crate) fn new(caller: &'a mut Caller<'c, HostState>) -> CallerGuest<'a, 'c> {
        CallerGuest { caller }
    }
}

fn range(ptr: u32, len: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(ptr).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

impl Guest for CallerGuest<'_, '_> {
    fn state(&mut self) -> &mut HostState {
        self.caller.data_mut()
    }

    fn read(&mut self, ptr: u32, len: u32) -> Option<Vec<u8>> {
        let memory = self.caller.data().memory?;
        let data = memory.data(&*self.caller);
        let r = range(ptr, usize::try_from(len).ok()?, data.len())?;
        data.get(r).map(<[u8]>::to_vec)
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> bool {
        let Some(memory) = self.caller.data().memory else {
            return false;
        };
        let data = memory.data_mut(&mut *self.caller);
        let Some(r) = range(ptr, bytes.len(), data.len()) else {
            return false;
        };
        match data.get_mut(r) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    fn allocate(&mut self, size: u32) -> Result<Option<u32>> {
        let malloc = self
            .caller
            .data()
            .malloc
            .clone()
            .ok_or_else(|| anyhow!("module exports no allocator (proxy_on_memory_allocate)"))?;
        let addr = malloc.call(&mut *self.caller, size)?;
        if addr == 0 {
            return Ok(None);
        }
        let Some(memory) = self.caller.data().memory else {
            return Ok(None);
        };
        let mem_size = memory.data_size(&*self.caller);
        let len = usize::try_from(size)?;
        Ok(range(addr, len, mem_size).map(|_| addr))
    }
}

/// A `Guest` over a byte vector with a bump allocator, for unit tests of hostcalls.
#[cfg(test)]
pub(crate) struct FakeGuest {
    pub(crate) mem: Vec<u8>,
    pub(crate) next_alloc: u32,
    pub(crate) state: HostState,
    /// Make the allocator return 0 (out of memory).
    pub(crate) alloc_fails: bool,
}

#[cfg(test)]
impl FakeGuest {
    /// 64 KiB of memory; allocations start at 32 KiB.
    pub(crate) fn new() -> FakeGuest {
        FakeGuest {
            mem: vec![0; 65536],
            next_alloc: 32768,
            state: crate::host::test_state(),
            alloc_fails: false,
        }
    }

    /// Puts `bytes` at `ptr` (test setup).
    pub(crate) fn put(&mut self, ptr: u32, bytes: &[u8]) {
        let p = ptr as usize;
        self.mem[p..p + bytes.len()].copy_from_slice(bytes);
    }

    pub(crate) fn u32_at(&self, ptr: u32) -> u32 {
        let p = ptr as usize;
        u32::from_le_bytes(self.mem[p..p + 4].try_into().unwrap())
    }

    pub(crate) fn u64_at(&self, ptr: u32) -> u64 {
        let p = ptr as usize;
        u64::from_le_bytes(self.mem[p..p + 8].try_into().unwrap())
    }

    /// The block whose address is at `ptr_ptr` and size at `size_ptr`.
    pub(crate) fn returned(&self, ptr_ptr: u32, size_ptr: u32) -> Vec<u8> {
        let p = self.u32_at(ptr_ptr) as usize;
        let n = self.u32_at(size_ptr) as usize;
        self.mem[p..p + n].to_vec()
    }
}

#[cfg(test)]
impl Guest for FakeGuest {
    fn state(&mut self) -> &mut HostState {
        &mut self.state
    }
    fn read(&mut self, ptr: u32, len: u32) -> Option<Vec<u8>> {
        let r = range(ptr, len as usize, self.mem.len())?;
        Some(self.mem[r].to_vec())
    }
    fn write(&mut self, ptr: u32, bytes: &[u8]) -> bool {
        match range(ptr, bytes.len(), self.mem.len()) {
            Some(r) => {
                self.mem[r].copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
    fn allocate(&mut self, size: u32) -> Result<Option<u32>> {
        if self.alloc_fails {
            return Ok(None);
        }
        let addr = self.next_alloc;
        self.next_alloc += size;
        Ok(range(addr, size as usize, self.mem.len()).map(|_| addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_of_memory_are_invalid_memory_access() {
        let mut g = FakeGuest::new();
        assert_eq!(
            read_bytes(&mut g, 65530, 7),
            Err(Status::InvalidMemoryAccess)
        );
        assert_eq!(
            read_bytes(&mut g, u32::MAX, 2),
            Err(Status::InvalidMemoryAccess)
        );
        assert_eq!(read_bytes(&mut g, 65530, 6).unwrap().len(), 6);
        // Zero bytes at any address is fine (the SDK passes null for absent values).
        assert_eq!(read_bytes(&mut g, 0, 0), Ok(Vec::new()));
        assert_eq!(read_bytes(&mut g, u32::MAX, 0), Ok(Vec::new()));
    }

    #[test]
    fn writes_that_do_not_fit_change_nothing() {
        let mut g = FakeGuest::new();
        assert_eq!(
            write_u32(&mut g, 65533, 7),
            Err(Status::InvalidMemoryAccess)
        );
        assert!(g.mem[65533..].iter().all(|b| *b == 0));
        assert_eq!(write_u64(&mut g, 65528, 1), Ok(()));
    }

    #[test]
    fn copy_out_allocates_copies_and_reports_address_and_size() {
        let mut g = FakeGuest::new();
        copy_out(&mut g, b"hello", 100, 104).unwrap().unwrap();
        assert_eq!(g.returned(100, 104), b"hello");
        assert_eq!(g.u32_at(100), 32768);
    }

    #[test]
    fn copy_out_of_nothing_writes_null_and_zero() {
        let mut g = FakeGuest::new();
        g.put(100, &[9; 8]);
        copy_out(&mut g, b"", 100, 104).unwrap().unwrap();
        assert_eq!(g.u32_at(100), 0);
        assert_eq!(g.u32_at(104), 0);
        assert_eq!(g.next_alloc, 32768, "nothing allocated");
    }

    #[test]
    fn copy_out_to_a_bad_return_pointer_or_with_a_failing_allocator_is_reported() {
        let mut g = FakeGuest::new();
        assert_eq!(
            copy_out(&mut g, b"x", 70000, 104).unwrap(),
            Err(Status::InvalidMemoryAccess)
        );
        g.alloc_fails = true;
        assert_eq!(
            copy_out(&mut g, b"x", 100, 104).unwrap(),
            Err(Status::InvalidMemoryAccess)
        );
    }
}
