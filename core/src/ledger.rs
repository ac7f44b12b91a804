//! The books of a device's virtual memory, and the CUDA driver's rules for it: physical handles,
//! reserved ranges, mappings and access, with the checks that `cuMemCreate`, `cuMemRelease`,
//! `cuMemAddressReserve`/`Free`, `cuMemMap`, `cuMemUnmap` and `cuMemSetAccess` apply. Every
//! backend keeps one: the simulated device and the host-memory device to refuse what the driver
//! refuses, the CUDA device for its books ([`DeviceBooks`]).
//!
//! Each call comes in two halves: `check_*` says whether the driver would accept it (an error
//! names the call and the sizes), and the recording half (`add_*`, `remove_*`, `grant_access`)
//! books it once the backend has made it. A backend whose own operation can fail in between (an
//! `mmap`, the driver itself) records only what succeeded. Each half is O(log n) in the objects
//! held, except where it says otherwise.
//!
//! Thread-safety: a plain value.

use crate::device::{DeviceBooks, DeviceError, DeviceErrorKind, DeviceResult, DriverCall};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The CUDA driver's answer to mapping part of a handle: `CUDA_ERROR_NOT_SUPPORTED` (801), seen on
/// the H200 (driver 580.159).
pub const NOT_SUPPORTED_CODE: i64 = 801;

#[derive(Clone, Debug)]
struct HandleEntry {
    size: u64,
    mappings: u32,
}

#[derive(Clone, Debug)]
struct MappingEntry {
    size: u64,
    handle: u64,
    /// Access granted since it was mapped.
    access: bool,
}

/// What a device holds, and its granularity and capacity.
#[derive(Clone, Debug)]
pub struct Ledger {
    granularity: u64,
    capacity: Option<u64>,
    // Ordered by id, which grows with each creation: handles made together sit together, so that
    // releasing many in order touches memory in order.
    handles: BTreeMap<u64, HandleEntry>,
    ranges: BTreeMap<u64, u64>,
    mappings: BTreeMap<u64, MappingEntry>,
    used: u64,
    peak_used: u64,
    events: u64,
}

fn invalid(call: DriverCall, what: String) -> DeviceError {
    DeviceError::new(call, DeviceErrorKind::InvalidValue, 1, what)
}

impl Ledger {
    /// Empty books for a device of `granularity` bytes (a power of two) that refuses handles past
    /// `capacity` bytes in all (`None`: the backend finds out itself, as the CUDA driver does).
    pub fn new(granularity: u64, capacity: Option<u64>) -> Ledger {
        Ledger {
            granularity,
            capacity,
            handles: BTreeMap::new(),
            ranges: BTreeMap::new(),
            mappings: BTreeMap::new(),
            used: 0,
            peak_used: 0,
            events: 0,
        }
    }

    /// The granularity in bytes.
    pub fn granularity(&self) -> u64 {
        self.granularity
    }

    /// The capacity in bytes, if the books enforce one.
    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// Changes the capacity (what is held stays held).
    pub fn set_capacity(&mut self, capacity: Option<u64>) {
        self.capacity = capacity;
    }

    fn aligned(&self, x: u64) -> bool {
        x.is_multiple_of(self.granularity)
    }

    /// Whether a handle of `size` bytes may be created: a positive multiple of the granularity
    /// that fits the capacity (else `OutOfMemory`).
    pub fn check_create(&self, size: u64) -> DeviceResult<()> {
        let call = DriverCall::CreateHandle;
        if size == 0 || !self.aligned(size) {
            return Err(invalid(
                call,
                format!("handle size {size} is not a positive multiple of the granularity"),
            ));
        }
        match self.capacity {
            Some(cap) if self.used.saturating_add(size) > cap => Err(DeviceError::new(
                call,
                DeviceErrorKind::OutOfMemory,
                2,
                format!(
                    "{size} bytes requested, {} of {cap} bytes in use",
                    self.used
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Books a created handle.
    pub fn add_handle(&mut self, id: u64, size: u64) {
        self.handles.insert(id, HandleEntry { size, mappings: 0 });
        self.used += size;
        self.peak_used = self.peak_used.max(self.used);
    }

    /// The size of handle `id`, if it may be released: known, and mapped nowhere.
    pub fn check_release(&self, id: u64) -> DeviceResult<u64> {
        let call = DriverCall::ReleaseHandle;
        let h = self
            .handles
            .get(&id)
            .ok_or_else(|| invalid(call, format!("unknown handle {id}")))?;
        if h.mappings != 0 {
            return Err(invalid(
                call,
                format!("handle {id} is still mapped {} times", h.mappings),
            ));
        }
        Ok(h.size)
    }

    /// The size of handle `id`, if it is live.
    pub fn handle_size(&self, id: u64) -> Option<u64> {
        self.handles.get(&id).map(|h| h.size)
    }

    /// Books a released handle.
    pub fn remove_handle(&mut self, id: u64) {
        if let Some(h) = self.handles.remove(&id) {
            self.used -= h.size;
        }
    }

    /// Whether `size` bytes of address space may be reserved: a positive multiple of the
    /// granularity.
    pub fn check_reserve(&self, size: u64) -> DeviceResult<()> {
        if size == 0 || !self.aligned(size) {
            return Err(invalid(
                DriverCall::ReserveRange,
                format!("range size {size} is not a positive multiple of the granularity"),
            ));
        }
        Ok(())
    }

    /// Books a reserved range.
    pub fn add_range(&mut self, va: u64, size: u64) {
        self.ranges.insert(va, size);
    }

    /// Whether the range may be freed: reserved exactly so, with nothing mapped in it.
    pub fn check_free_range(&self, va: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::FreeRange;
        if self.ranges.get(&va) != Some(&size) {
            return Err(invalid(
                call,
                format!("no range of {size} bytes was reserved at {va:#x}"),
            ));
        }
        if self.mappings.range(va..va + size).next().is_some() {
            return Err(invalid(
                call,
                format!("range at {va:#x} still has mappings"),
            ));
        }
        Ok(())
    }

    /// Books a freed range.
    pub fn remove_range(&mut self, va: u64) {
        self.ranges.remove(&va);
    }

    /// Whether `size` bytes of `handle` from `offset` may be mapped at `va`: aligned, inside a
    /// reserved range, over no mapping, and the whole of a known handle (the driver maps nothing
    /// less: `NotSupported`, code [`NOT_SUPPORTED_CODE`]).
    pub fn check_map(&self, va: u64, size: u64, handle: u64, offset: u64) -> DeviceResult<()> {
        let call = DriverCall::Map;
        if size == 0 || !self.aligned(va) || !self.aligned(size) || !self.aligned(offset) {
            return Err(invalid(
                call,
                format!("map of {size} bytes at {va:#x}, offset {offset}: not aligned"),
            ));
        }
        let inside = self
            .ranges
            .range(..=va)
            .next_back()
            .is_some_and(|(&r, &len)| va + size <= r + len);
        if !inside {
            return Err(invalid(
                call,
                format!("{va:#x}+{size} is not inside a reserved range"),
            ));
        }
        let overlaps = self
            .mappings
            .range(..va + size)
            .next_back()
            .is_some_and(|(&m, e)| m + e.size > va);
        if overlaps {
            return Err(invalid(call, format!("{va:#x}+{size} overlaps a mapping")));
        }
        let h = self
            .handles
            .get(&handle)
            .ok_or_else(|| invalid(call, format!("unknown handle {handle}")))?;
        if offset != 0 || size != h.size {
            return Err(DeviceError::new(
                call,
                DeviceErrorKind::NotSupported,
                NOT_SUPPORTED_CODE,
                format!(
                    "map of {size} bytes at offset {offset} of a {}-byte handle: only whole handles map",
                    h.size
                ),
            ));
        }
        Ok(())
    }

    /// Books a mapping (without access).
    pub fn add_mapping(&mut self, va: u64, size: u64, handle: u64) {
        if let Some(h) = self.handles.get_mut(&handle) {
            h.mappings += 1;
        }
        let access = false;
        self.mappings.insert(
            va,
            MappingEntry {
                size,
                handle,
                access,
            },
        );
    }

    /// The mappings exactly tiling `[va, va + size)`, by start, or an error for `call` (unmap and
    /// access need whole mappings). O(log n + mappings covered).
    pub fn check_tiled(&self, call: DriverCall, va: u64, size: u64) -> DeviceResult<Vec<u64>> {
        let fail = || {
            invalid(
                call,
                format!("{va:#x}+{size} is not covered by whole mappings"),
            )
        };
        let mut at = va;
        let mut keys = Vec::new();
        for (&m, e) in self
            .mappings
            .range(va..va.checked_add(size).ok_or_else(fail)?)
        {
            if m != at {
                return Err(fail());
            }
            at = m + e.size;
            keys.push(m);
        }
        if at != va + size || keys.is_empty() {
            return Err(fail());
        }
        Ok(keys)
    }

    /// The sizes of the mappings starting at `keys` (for costs by handle size).
    pub fn mapping_sizes<'a>(&'a self, keys: &'a [u64]) -> impl Iterator<Item = u64> + 'a {
        keys.iter()
            .map(|k| self.mappings.get(k).map_or(0, |m| m.size))
    }

    /// The mappings starting inside `[va, va + size)`, by start.
    pub fn mappings_in(&self, va: u64, size: u64) -> Vec<u64> {
        self.mappings
            .range(va..va.saturating_add(size))
            .map(|(&m, _)| m)
            .collect()
    }

    /// Books the unmapping of the mappings starting at `keys`.
    pub fn remove_mappings(&mut self, keys: &[u64]) {
        for k in keys {
            if let Some(m) = self.mappings.remove(k) {
                if let Some(h) = self.handles.get_mut(&m.handle) {
                    h.mappings -= 1;
                }
            }
        }
    }

    /// Books access granted to the mappings starting at `keys`.
    pub fn grant_access(&mut self, keys: &[u64]) {
        for k in keys {
            if let Some(m) = self.mappings.get_mut(k) {
                m.access = true;
            }
        }
    }

    /// Whether every byte of `[addr, addr + len)` lies in mappings with access granted.
    pub fn accessible(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len.max(1)) else {
            return false;
        };
        let mut at = addr;
        let first = self.mappings.range(..=addr).next_back();
        let rest = self.mappings.range(addr.saturating_add(1)..end);
        for (&va, m) in first.into_iter().chain(rest) {
            if va > at || !m.access {
                return false;
            }
            at = at.max(va + m.size);
            if at >= end {
                return true;
            }
        }
        false
    }

    /// Books an event created (`+1`) or destroyed (`-1`).
    pub fn count_event(&mut self, delta: i64) {
        self.events = self.events.saturating_add_signed(delta);
    }

    /// Bytes of live handles.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Peak bytes of live handles.
    pub fn peak_used(&self) -> u64 {
        self.peak_used
    }

    /// The books, with `driver_us` microseconds of driver time.
    pub fn books(&self, driver_us: f64) -> DeviceBooks {
        DeviceBooks {
            handles: self.handles.len() as u64,
            handle_bytes: self.used,
            peak_handle_bytes: self.peak_used,
            ranges: self.ranges.len() as u64,
            mappings: self.mappings.len() as u64,
            events: self.events,
            driver_us,
        }
    }
}

/// The three [`crate::Device`] methods a device whose memory is its `ledger` field answers from
/// the ledger alone (granularity, total memory as the ledger's capacity, free memory as the
/// capacity less what is used): written once for the simulated and host devices.
#[macro_export]
macro_rules! ledger_memory_methods {
    () => {
        fn granularity(&self) -> u64 {
            self.ledger.granularity()
        }

        fn total_memory(&self) -> u64 {
            self.ledger.capacity().unwrap_or(0)
        }

        fn free_memory(&mut self) -> Option<u64> {
            Some(self.total_memory().saturating_sub(self.ledger.used()))
        }
    };
}
