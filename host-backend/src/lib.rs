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
use gmlake_core::ledger::Ledger;
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
    /// The books and the driver's rules, shared with the simulated device.
    ledger: Ledger,
    /// The memory file of each live handle.
    files: HashMap<u64, OwnedFd>,
    /// Reserved ranges: start -> size (released at drop).
    ranges: BTreeMap<u64, u64>,
    next_handle: u64,
    next_event: u64,
    events: HashSet<u64>,
    driver_us: f64,
}

impl std::fmt::Debug for HostDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDevice")
            .field("granularity", &self.ledger.granularity())
            .field("capacity", &self.ledger.capacity())
            .finish()
    }
}

fn os_err(call: DriverCall, e: rustix::io::Errno, what: String) -> DeviceError {
    let kind = if e == rustix::io::Errno::NOMEM {
        DeviceErrorKind::OutOfMemory
    } else {
        DeviceErrorKind::Other
    };
    DeviceError::new(call, kind, e.raw_os_error() as i64, format!("{what}: {e}"))
}

fn unknown_event(call: DriverCall, event: EventHandle) -> DeviceError {
    DeviceError::new(
        call,
        DeviceErrorKind::InvalidValue,
        1,
        format!("unknown event {}", event.0),
    )
}

impl HostDevice {
    /// A device of `capacity` bytes of host memory with a `granularity` (rounded up to a power of
    /// two of at least the page size; 2 MiB mirrors the H200). Memory is committed only as it is
    /// written.
    pub fn new(capacity: u64, granularity: u64) -> HostDevice {
        HostDevice {
            ledger: Ledger::new(granularity.max(4096).next_power_of_two(), Some(capacity)),
            files: HashMap::new(),
            ranges: BTreeMap::new(),
            next_handle: 1,
            next_event: 1,
            events: HashSet::new(),
            driver_us: 0.0,
        }
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut Self) -> DeviceResult<T>) -> DeviceResult<T> {
        let start = Instant::now();
        let r = f(self);
        self.driver_us += start.elapsed().as_secs_f64() * 1e6;
        r
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
    gmlake_core::ledger_memory_methods!();

    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle> {
        let call = DriverCall::CreateHandle;
        self.timed(|d| {
            d.ledger.check_create(size)?;
            let fd = memfd_create("gmlake-chunk", MemfdFlags::CLOEXEC)
                .map_err(|e| os_err(call, e, "memfd_create".into()))?;
            ftruncate(&fd, size).map_err(|e| os_err(call, e, format!("ftruncate to {size}")))?;
            let id = d.next_handle;
            d.next_handle += 1;
            d.files.insert(id, fd);
            d.ledger.add_handle(id, size);
            Ok(PhysHandle(id))
        })
    }

    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()> {
        self.timed(|d| {
            d.ledger.check_release(handle.0)?;
            d.ledger.remove_handle(handle.0);
            d.files.remove(&handle.0);
            Ok(())
        })
    }

    /// A handle's memory file: its descriptor, open for as long as the handle lives. Another
    /// process takes it with `pidfd_getfd` (or a Unix socket) and maps it with `mmap`.
    fn export_handle(&mut self, handle: PhysHandle) -> DeviceResult<i64> {
        use std::os::fd::AsRawFd;
        let call = DriverCall::ExportHandle;
        self.timed(|d| {
            d.files
                .get(&handle.0)
                .map(|f| f.as_raw_fd() as i64)
                .ok_or_else(|| {
                    DeviceError::new(
                        call,
                        DeviceErrorKind::InvalidValue,
                        0,
                        format!("unknown handle {:#x}", handle.0),
                    )
                })
        })
    }

    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64> {
        let call = DriverCall::ReserveRange;
        self.timed(|d| {
            d.ledger.check_reserve(size)?;
            let g = d.granularity();
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
            d.ledger.add_range(start, size);
            Ok(start)
        })
    }

    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::FreeRange;
        self.timed(|d| {
            d.ledger.check_free_range(addr, size)?;
            // SAFETY: the whole reserved range, with nothing mapped in it.
            unsafe { munmap(addr as *mut c_void, size as usize) }
                .map_err(|e| os_err(call, e, "munmap".into()))?;
            d.ranges.remove(&addr);
            d.ledger.remove_range(addr);
            Ok(())
        })
    }

    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()> {
        let call = DriverCall::Map;
        self.timed(|d| {
            d.ledger.check_map(addr, size, handle.0, offset)?;
            let fd = &d.files[&handle.0];
            let flags = MapFlags::SHARED | MapFlags::FIXED;
            // SAFETY: the address lies in a range this device reserved, where nothing is mapped.
            // No access until `set_access`, as with the CUDA driver.
            unsafe {
                mmap(
                    addr as *mut c_void,
                    size as usize,
                    ProtFlags::empty(),
                    flags,
                    fd,
                    0,
                )
            }
            .map_err(|e| os_err(call, e, format!("mmap of {size} bytes at {addr:#x}")))?;
            d.ledger.add_mapping(addr, size, handle.0);
            Ok(())
        })
    }

    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::Unmap;
        self.timed(|d| {
            let keys = d.ledger.check_tiled(call, addr, size)?;
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
            d.ledger.remove_mappings(&keys);
            Ok(())
        })
    }

    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        let call = DriverCall::SetAccess;
        self.timed(|d| {
            let keys = d.ledger.check_tiled(call, addr, size)?;
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
            })?;
            d.ledger.grant_access(&keys);
            Ok(())
        })
    }

    fn create_event(&mut self) -> DeviceResult<EventHandle> {
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id);
        Ok(EventHandle(id))
    }

    fn destroy_event(&mut self, event: EventHandle) -> DeviceResult<()> {
        if !self.events.remove(&event.0) {
            return Err(unknown_event(DriverCall::DestroyEvent, event));
        }
        Ok(())
    }

    fn record_event(&mut self, event: EventHandle, _stream: StreamHandle) -> DeviceResult<()> {
        match self.events.contains(&event.0) {
            true => Ok(()),
            false => Err(unknown_event(DriverCall::RecordEvent, event)),
        }
    }

    fn query_event(&mut self, event: EventHandle) -> DeviceResult<bool> {
        // Host work is done when the call that enqueued it returned.
        match self.events.contains(&event.0) {
            true => Ok(true),
            false => Err(unknown_event(DriverCall::QueryEvent, event)),
        }
    }

    fn synchronize_stream(&mut self, _stream: StreamHandle) -> DeviceResult<()> {
        Ok(())
    }

    fn synchronize_device(&mut self) -> DeviceResult<()> {
        Ok(())
    }

    fn books(&self) -> Option<DeviceBooks> {
        Some(DeviceBooks {
            events: self.events.len() as u64,
            ..self.ledger.books(self.driver_us)
        })
    }
}
