//! # gmlake-host
//!
//! A host-memory backend for gmlake (Linux): physical handles are `memfd` files, virtual ranges are
//! reserved address space (`PROT_NONE` anonymous mappings), and mapping a handle is `mmap` with
//! `MAP_FIXED | MAP_SHARED` of the file, so two views of one chunk really alias, as on a GPU. It lets
//! the allocator's tests check data rather than only bookkeeping, and lets a CPU-only user run
//! gmlake on ordinary memory.
//!
//! Like the CUDA driver, it maps whole handles only, refuses impossible calls, and a mapping cannot
//! be read or written until access is granted on it (`set_access`): until then it is `PROT_NONE`,
//! so a touch of memory the allocator forgot to grant access to faults, as on a GPU. Host memory has no
//! asynchronous work: events are complete as soon as recorded, synchronization returns at once.
//! Addresses it returns are real, readable and writable host addresses while allocated.

use gmlake_core::device::{DeviceBooks, DeviceResult};
use gmlake_core::{
    Device, DeviceError, DeviceErrorKind, DriverCall, EventHandle, PhysHandle, StreamHandle,
};
use rustix::fd::OwnedFd;
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, mmap_anonymous, mprotect, munmap, MapFlags, MprotectFlags, ProtFlags};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::c_void;
use std::time::Instant;

/// One machine's host memory as a gmlake device. `Send`; driven through `&mut self`.
pub struct HostDevice {
    granularity: u64,
    capacity: u64,
    next_handle: u64,
    next_event: u64,
    handles: HashMap<u64, Handle>,
    /// Reserved ranges: start -> size.
    ranges: BTreeMap<u64, u64>,
    /// Live mappings: start -> (size, handle).
    mappings: BTreeMap<u64, (u64, u64)>,
    events: HashSet<u64>,
    books: DeviceBooks,
}

struct Handle {
    fd: OwnedFd,
    size: u64,
    mappings: u32,
}

impl std::fmt::Debug for HostDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDevice")
            .field("granularity", &self.granularity)
            .field("capacity", &self.capacity)
            .finish()
    }
}

fn err(call: DriverCall, kind: DeviceErrorKind, what: String) -> DeviceError {
    DeviceError::new(call, kind, 0, what)
}

fn os_err(call: DriverCall, e: rustix::io::Errno, what: String) -> DeviceError {
    let kind = if e == rustix::io::Errno::NOMEM {
        DeviceErrorKind::OutOfMemory
    } else {
        DeviceErrorKind::Other
    };
    DeviceError::new(call, kind, e.raw_os_error() as i64, format!("{what}: {e}"))
}

impl HostDevice {
    /// A device of `capacity` bytes of host memory with a `granularity` (a power of two, at least
    /// the page size; 2 MiB mirrors the H200). Memory is committed only as it is written.
    pub fn new(capacity: u64, granularity: u64) -> HostDevice {
        HostDevice {
            granularity: granularity.max(4096).next_power_of_two(),
            capacity,
            next_handle: 1,
            next_event: 1,
            handles: HashMap::new(),
            ranges: BTreeMap::new(),
            mappings: BTreeMap::new(),
            events: HashSet::new(),
            books: DeviceBooks::default(),
        }
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut Self) -> DeviceResult<T>) -> DeviceResult<T> {
        let start = Instant::now();
        let r = f(self);
        self.books.driver_us += start.elapsed().as_secs_f64() * 1e6;
        r
    }

    /// Mappings exactly tiling `[addr, addr + size)`.
    fn tiling(&self, addr: u64, size: u64) -> Option<Vec<u64>> {
        let mut at = addr;
        let mut keys = Vec::new();
        for (&va, &(len, _)) in self.mappings.range(addr..addr.checked_add(size)?) {
            if va != at {
                return None;
            }
            at = va + len;
            keys.push(va);
        }
        (at == addr + size && !keys.is_empty()).then_some(keys)
    }
}

impl Drop for HostDevice {
    fn drop(&mut self) {
        for (&addr, &size) in &self.ranges {
            // SAFETY: the range was reserved by this device and nothing else uses it any more.
            unsafe {
                let _ = munmap(addr as *mut c_void, size as usize);
            }
        }
    }
}

impl Device for HostDevice {
    fn granularity(&self) -> u64 {
        self.granularity
    }

    fn total_memory(&self) -> u64 {
        self.capacity
    }

    fn free_memory(&mut self) -> Option<u64> {
        Some(self.capacity.saturating_sub(self.books.handle_bytes))
    }

    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle> {
        let call = DriverCall::CreateHandle;
        self.timed(|d| {
            if size == 0 || !size.is_multiple_of(d.granularity) {
                return Err(err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("handle size {size} is not a multiple of the granularity"),
                ));
            }
            if d.books.handle_bytes + size > d.capacity {
                return Err(err(
                    call,
                    DeviceErrorKind::OutOfMemory,
                    format!(
                        "{size} bytes asked, {} of {} in use",
                        d.books.handle_bytes, d.capacity
                    ),
                ));
            }
            let fd = memfd_create("gmlake-chunk", MemfdFlags::CLOEXEC)
                .map_err(|e| os_err(call, e, "memfd_create".into()))?;
            ftruncate(&fd, size).map_err(|e| os_err(call, e, format!("ftruncate to {size}")))?;
            let id = d.next_handle;
            d.next_handle += 1;
            d.handles.insert(
                id,
                Handle {
                    fd,
                    size,
                    mappings: 0,
                },
            );
            d.books.handles += 1;
            d.books.handle_bytes += size;
            d.books.peak_handle_bytes = d.books.peak_handle_bytes.max(d.books.handle_bytes);
            Ok(PhysHandle(id))
        })
    }

    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()> {
        let call = DriverCall::ReleaseHandle;
        self.timed(|d| {
            let h = d.handles.get(&handle.0).ok_or_else(|| {
                err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("unknown handle {}", handle.0),
                )
            })?;
            if h.mappings > 0 {
                return Err(err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("handle {} is still mapped", handle.0),
                ));
            }
            let h = d.handles.remove(&handle.0).map(|h| h.size).unwrap_or(0);
            d.books.handles -= 1;
            d.books.handle_bytes -= h;
            Ok(())
        })
    }

    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64> {
        let call = DriverCall::ReserveRange;
        self.timed(|d| {
            let g = d.granularity;
            if size == 0 || !size.is_multiple_of(g) {
                return Err(err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("range size {size} is not a multiple of the granularity"),
                ));
            }
            let over = (size + g) as usize;
            let flags = MapFlags::PRIVATE | MapFlags::NORESERVE;
            // SAFETY: a new anonymous mapping at an address of the kernel's choosing.
            let p = unsafe { mmap_anonymous(std::ptr::null_mut(), over, ProtFlags::empty(), flags) }
                .map_err(|e| os_err(call, e, format!("reserving {size} bytes")))?
                as u64;
            // Trim to a granularity-aligned range.
            let start = p.div_ceil(g) * g;
            // SAFETY: unmapping the unused head and tail of the mapping just made.
            unsafe {
                if start > p {
                    let _ = munmap(p as *mut c_void, (start - p) as usize);
                }
                let end = p + over as u64;
                if end > start + size {
                    let _ = munmap((start + size) as *mut c_void, (end - start - size) as usize);
                }
            }
            d.ranges.insert(start, size);
            d.books.ranges += 1;
            Ok(start)
        })
    }

    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::FreeRange;
        self.timed(|d| {
            if d.ranges.get(&addr) != Some(&size) {
                return Err(err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("no range of {size} bytes at {addr:#x}"),
                ));
            }
            if d.mappings.range(addr..addr + size).next().is_some() {
                return Err(err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("range at {addr:#x} still has mappings"),
                ));
            }
            // SAFETY: the whole reserved range, with nothing mapped in it.
            unsafe { munmap(addr as *mut c_void, size as usize) }
                .map_err(|e| os_err(call, e, "munmap".into()))?;
            d.ranges.remove(&addr);
            d.books.ranges -= 1;
            Ok(())
        })
    }

    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()> {
        let call = DriverCall::Map;
        self.timed(|d| {
            let inside = d
                .ranges
                .range(..=addr)
                .next_back()
                .is_some_and(|(&va, &len)| addr + size <= va + len);
            let overlaps = d
                .mappings
                .range(..addr + size)
                .next_back()
                .is_some_and(|(&va, &(len, _))| va + len > addr);
            if !inside || overlaps || !addr.is_multiple_of(d.granularity) {
                return Err(err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("{addr:#x}+{size}: outside a range, misaligned or over a mapping"),
                ));
            }
            let h = d.handles.get_mut(&handle.0).ok_or_else(|| {
                err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("unknown handle {}", handle.0),
                )
            })?;
            if offset != 0 || size != h.size {
                return Err(err(
                    call,
                    DeviceErrorKind::NotSupported,
                    "only whole handles map (as with the CUDA driver)".into(),
                ));
            }
            let flags = MapFlags::SHARED | MapFlags::FIXED;
            // SAFETY: the address lies in a range this device reserved, where nothing is mapped.
            // No access until `set_access`, as with the CUDA driver.
            unsafe {
                mmap(
                    addr as *mut c_void,
                    size as usize,
                    ProtFlags::empty(),
                    flags,
                    &h.fd,
                    0,
                )
            }
            .map_err(|e| os_err(call, e, format!("mmap of {size} bytes at {addr:#x}")))?;
            h.mappings += 1;
            d.mappings.insert(addr, (size, handle.0));
            d.books.mappings += 1;
            Ok(())
        })
    }

    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::Unmap;
        self.timed(|d| {
            let keys = d.tiling(addr, size).ok_or_else(|| {
                err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("{addr:#x}+{size} is not whole mappings"),
                )
            })?;
            let flags = MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE;
            // SAFETY: replaces this device's own mappings by an inaccessible reservation.
            unsafe {
                mmap_anonymous(
                    addr as *mut c_void,
                    size as usize,
                    ProtFlags::empty(),
                    flags,
                )
            }
            .map_err(|e| os_err(call, e, format!("unmapping {size} bytes at {addr:#x}")))?;
            for k in keys {
                if let Some((_, h)) = d.mappings.remove(&k) {
                    if let Some(h) = d.handles.get_mut(&h) {
                        h.mappings -= 1;
                    }
                    d.books.mappings -= 1;
                }
            }
            Ok(())
        })
    }

    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::SetAccess;
        self.timed(|d| {
            d.tiling(addr, size).ok_or_else(|| {
                err(
                    call,
                    DeviceErrorKind::InvalidValue,
                    format!("{addr:#x}+{size} is not fully mapped"),
                )
            })?;
            // SAFETY: the range is wholly this device's own mappings (checked just above).
            unsafe {
                mprotect(
                    addr as *mut c_void,
                    size as usize,
                    MprotectFlags::READ | MprotectFlags::WRITE,
                )
            }
            .map_err(|e| {
                os_err(
                    call,
                    e,
                    format!("granting access to {size} bytes at {addr:#x}"),
                )
            })
        })
    }

    fn create_event(&mut self) -> DeviceResult<EventHandle> {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id);
        self.books.events += 1;
        Ok(EventHandle(id))
    }

    fn destroy_event(&mut self, event: EventHandle) -> DeviceResult<()> {
        if !self.events.remove(&event.0) {
            return Err(err(
                DriverCall::DestroyEvent,
                DeviceErrorKind::InvalidValue,
                format!("unknown event {}", event.0),
            ));
        }
        self.books.events -= 1;
        Ok(())
    }

    fn record_event(&mut self, event: EventHandle, _stream: StreamHandle) -> DeviceResult<()> {
        if self.events.contains(&event.0) {
            Ok(())
        } else {
            Err(err(
                DriverCall::RecordEvent,
                DeviceErrorKind::InvalidValue,
                format!("unknown event {}", event.0),
            ))
        }
    }

    fn query_event(&mut self, event: EventHandle) -> DeviceResult<bool> {
        // Host work is done when the call that enqueued it returned.
        if self.events.contains(&event.0) {
            Ok(true)
        } else {
            Err(err(
                DriverCall::QueryEvent,
                DeviceErrorKind::InvalidValue,
                format!("unknown event {}", event.0),
            ))
        }
    }

    fn synchronize_stream(&mut self, _stream: StreamHandle) -> DeviceResult<()> {
        Ok(())
    }

    fn synchronize_device(&mut self) -> DeviceResult<()> {
        Ok(())
    }

    fn books(&self) -> Option<DeviceBooks> {
        Some(self.books)
    }
}
