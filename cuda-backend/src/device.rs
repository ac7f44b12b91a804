//! [`CudaVmm`]: one device's virtual memory management, on its primary context.

use crate::errors::{cuda_error, device_error, pinned_prop, rw_access};
use crate::{driver_present, vmm, CudaError};
use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys::{self, CUresult};
use gmlake_core::device::{DeviceBooks, DeviceResult};
use gmlake_core::ledger::Ledger;
use gmlake_core::{Device, DeviceErrorKind, DriverCall, EventHandle, PhysHandle, StreamHandle};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// The CUDA driver backend of one device: physical handles pinned on the device, virtual ranges,
/// mappings with read/write access for the device, and events, all on the device's *primary*
/// context (the one PyTorch's runtime uses), made current on whichever thread calls.
///
/// Streams are the caller's `CUstream` values (as `StreamHandle(stream as u64)`; 0 is the legacy
/// default stream); the backend never creates or destroys a stream. Events are created with timing
/// disabled. Every error names the driver call, its `CUresult` and the sizes involved.
///
/// Thread-safety: `Send` (the allocator that owns it serializes calls); the driver itself is
/// thread-safe. It keeps its own books of what it holds ([`Device::books`]) and the wall time spent
/// in driver calls, measured around each call.
pub struct CudaVmm {
    ordinal: i32,
    device: sys::CUdevice,
    /// The primary context, as an address (a `CUcontext` is a raw pointer and not `Send`).
    context: usize,
    total: u64,
    /// What the device holds, booked after each call the driver accepted.
    ledger: Ledger,
    driver_us: f64,
    timings: CallTimings,
    /// Whether handles are created exportable (as POSIX file descriptors, for CUDA IPC): until
    /// the driver refuses the handle type, as some platforms do.
    shareable: bool,
    /// The exported descriptor of each handle shared so far, closed when the handle is released.
    fds: HashMap<u64, OwnedFd>,
}

/// Wall time spent in driver calls, by kind, measured around each call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CallTimings {
    /// Calls made, by [`DriverCall::index`].
    pub calls: [u64; DriverCall::COUNT],
    /// Microseconds spent, by [`DriverCall::index`].
    pub us: [f64; DriverCall::COUNT],
    /// Mappings covered by `cuMemSetAccess` and `cuMemUnmap` calls (their cost grows with it).
    pub mappings_covered: [u64; 2],
}

impl CallTimings {
    /// Mean microseconds per call of `call`, if any was made.
    pub fn mean_us(&self, call: DriverCall) -> Option<f64> {
        let n = self.calls[call.index()];
        (n > 0).then(|| self.us[call.index()] / n as f64)
    }
}

impl std::fmt::Debug for CudaVmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaVmm")
            .field("ordinal", &self.ordinal)
            .field("granularity", &self.ledger.granularity())
            .field("total", &self.total)
            .finish()
    }
}

impl CudaVmm {
    /// Opens device `ordinal`: loads the driver, retains the device's primary context, checks that
    /// it supports virtual memory management, and reads its allocation granularity (the
    /// recommended one, `CU_MEM_ALLOC_GRANULARITY_RECOMMENDED`) and total memory.
    ///
    /// # Errors
    /// [`CudaError::NoDriver`] without a driver library (never a panic); [`CudaError::Driver`] for
    /// a bad ordinal or a driver failure; [`CudaError::NoVmm`] if the device cannot do virtual
    /// memory management.
    pub fn new(ordinal: i32) -> Result<CudaVmm, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        let at = || format!("device {ordinal}");
        result::init().map_err(cuda_error("cuInit", at))?;
        let device = result::device::get(ordinal).map_err(cuda_error("cuDeviceGet", at))?;
        use sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED as VMM;
        // SAFETY: `device` came from `device::get`.
        let vmm = unsafe { result::device::get_attribute(device, VMM) }
            .map_err(cuda_error("cuDeviceGetAttribute", at))?;
        if vmm == 0 {
            return Err(CudaError::NoVmm { ordinal });
        }
        // SAFETY: `device` came from `device::get`; released in `Drop`.
        let context = unsafe { result::primary_ctx::retain(device) }
            .map_err(cuda_error("cuDevicePrimaryCtxRetain", at))?;
        let mut this = CudaVmm {
            ordinal,
            device,
            context: context as usize,
            total: 0,
            ledger: Ledger::new(1, None),
            driver_us: 0.0,
            timings: CallTimings::default(),
            shareable: true,
            fds: HashMap::new(),
        };
        // From here on, `Drop` releases the primary context.
        this.bind().map_err(|e| CudaError::Driver {
            call: "cuCtxSetCurrent",
            result: e.message.clone(),
            code: e.code,
            detail: at(),
        })?;
        let prop = pinned_prop(device, false);
        use sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_RECOMMENDED as REC;
        // SAFETY: the driver is initialized; `prop` is valid.
        let gran = unsafe { vmm::granularity(&prop, REC) }
            .map_err(cuda_error("cuMemGetAllocationGranularity", at))?;
        // SAFETY: `device` came from `device::get`.
        let total = unsafe { result::device::total_mem(device) }
            .map_err(cuda_error("cuDeviceTotalMem", at))?;
        this.ledger = Ledger::new(gran as u64, None);
        this.total = total as u64;
        Ok(this)
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> i32 {
        self.ordinal
    }

    /// The device's free and total memory in bytes as the driver reports them (`cuMemGetInfo`).
    ///
    /// # Errors
    /// On driver failure.
    pub fn mem_info(&mut self) -> Result<(u64, u64), CudaError> {
        self.bind().map_err(|e| CudaError::Driver {
            call: "cuCtxSetCurrent",
            result: e.message,
            code: e.code,
            detail: String::new(),
        })?;
        let (free, total) = result::mem_get_info().map_err(cuda_error("cuMemGetInfo", || {
            format!("device {}", self.ordinal)
        }))?;
        Ok((free as u64, total as u64))
    }

    /// Makes the primary context current on this thread if it is not.
    fn bind(&self) -> DeviceResult<()> {
        if result::ctx::get_current().is_ok_and(|c| c.is_some_and(|c| c as usize == self.context)) {
            return Ok(());
        }
        // SAFETY: the context was retained in `new` and is released only in `Drop`.
        unsafe { result::ctx::set_current(self.context as sys::CUcontext) }
            .map_err(device_error(DriverCall::SynchronizeDevice, || {
                format!("cuCtxSetCurrent on device {}", self.ordinal)
            }))
    }

    /// Imports a handle of `size` bytes that another process exported as the file descriptor
    /// `fd` (`cuMemImportFromShareableHandle`), booked as this device's own: release it with
    /// [`Device::release_handle`].
    ///
    /// # Errors
    /// On driver failure (a descriptor that is no exported handle, another device's memory).
    pub fn import_handle(&mut self, fd: &OwnedFd, size: u64) -> DeviceResult<PhysHandle> {
        let raw = fd.as_raw_fd();
        let h = self.timed(
            DriverCall::CreateHandle,
            |_| format!("cuMemImportFromShareableHandle of descriptor {raw} ({size} bytes)"),
            // SAFETY: the descriptor is open for the duration of the call.
            |_| unsafe { vmm::import_fd(raw) },
        )?;
        self.ledger.add_handle(h, size);
        Ok(PhysHandle(h))
    }

    /// Wall time spent in driver calls so far, by kind.
    pub fn timings(&self) -> CallTimings {
        self.timings
    }

    /// Binds the context, makes the call `f` of kind `call`, adds its wall time to the books, and
    /// converts a failure into the core's error, described by `what` (the sizes and addresses).
    fn timed<T>(
        &mut self,
        call: DriverCall,
        what: impl FnOnce(&Self) -> String,
        f: impl FnOnce(&Self) -> Result<T, DriverError>,
    ) -> DeviceResult<T> {
        self.bind()?;
        let start = Instant::now();
        let r = f(self);
        let us = start.elapsed().as_secs_f64() * 1e6;
        self.driver_us += us;
        self.timings.calls[call.index()] += 1;
        self.timings.us[call.index()] += us;
        r.map_err(|e| device_error(call, || what(self))(e))
    }

    /// `cuMemCreate` of `size` bytes (a granularity multiple) in the memory of `location` (GPU
    /// `ordinal`: this one, or a peer), booked in the ledger. Handles are created exportable until
    /// the platform refuses; then plain ones from then on (sharing with other processes is then
    /// refused by `export_handle`).
    fn create_in(
        &mut self,
        location: sys::CUdevice,
        ordinal: i32,
        size: u64,
    ) -> DeviceResult<PhysHandle> {
        let create = |s: &mut Self| {
            s.timed(
                DriverCall::CreateHandle,
                |_| format!("cuMemCreate of {size} bytes on device {ordinal}"),
                // SAFETY: a context is current; the core passes granularity multiples (the same
                // on every GPU of a node).
                |s| unsafe { vmm::create(size as usize, &pinned_prop(location, s.shareable)) },
            )
        };
        let h = match create(self) {
            Err(e) if self.shareable && e.kind != DeviceErrorKind::OutOfMemory => {
                self.shareable = false;
                create(self)
                    .inspect_err(|_| self.shareable = true)
                    .map_err(|_| e)?
            }
            r => r?,
        };
        self.ledger.add_handle(h, size);
        Ok(PhysHandle(h))
    }
}

impl Drop for CudaVmm {
    fn drop(&mut self) {
        // SAFETY: the context was retained in `new`.
        let _ = unsafe { result::primary_ctx::release(self.device) };
    }
}

impl Device for CudaVmm {
    fn granularity(&self) -> u64 {
        self.ledger.granularity()
    }

    fn total_memory(&self) -> u64 {
        self.total
    }

    fn free_memory(&mut self) -> Option<u64> {
        self.mem_info().ok().map(|(free, _)| free)
    }

    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle> {
        self.create_in(self.device, self.ordinal, size)
    }

    /// The GPUs whose memory this one can access (`cuDeviceCanAccessPeer`), by ordinal; none if
    /// the driver cannot tell.
    fn peers(&self) -> Vec<u32> {
        let count = result::device::get_count().unwrap_or(0);
        (0..count)
            .filter(|&i| i != self.ordinal)
            .filter(|&i| {
                result::device::get(i).is_ok_and(|peer| {
                    // SAFETY: the driver was initialized in `new`; both devices are valid.
                    unsafe { vmm::can_access_peer(self.device, peer) }.unwrap_or(false)
                })
            })
            .map(|i| i as u32)
            .collect()
    }

    /// A handle in the memory of GPU `peer` (`cuMemCreate` with that location); mapped here and
    /// granted this device's access like any other ([`Device::set_access`]), it is reached over
    /// NVLink or PCIe.
    fn create_peer_handle(&mut self, peer: u32, size: u64) -> DeviceResult<PhysHandle> {
        let dev = result::device::get(peer as i32).map_err(|e| {
            device_error(DriverCall::CreateHandle, || {
                format!("cuDeviceGet of peer device {peer}")
            })(e)
        })?;
        self.create_in(dev, peer as i32, size)
    }

    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()> {
        self.timed(
            DriverCall::ReleaseHandle,
            |_| format!("cuMemRelease of handle {:#x}", handle.0),
            // SAFETY: the handle came from `create_handle` (the core's contract).
            |_| unsafe { vmm::release(handle.0) },
        )?;
        self.ledger.remove_handle(handle.0);
        self.fds.remove(&handle.0);
        Ok(())
    }

    /// A POSIX file descriptor of the handle (`cuMemExportToShareableHandle`), made once and
    /// kept open until the handle is released, so that a receiving process can take it with
    /// `pidfd_getfd` for as long as the memory lives.
    fn export_handle(&mut self, handle: PhysHandle) -> DeviceResult<i64> {
        if let Some(fd) = self.fds.get(&handle.0) {
            return Ok(fd.as_raw_fd() as i64);
        }
        if !self.shareable {
            return Err(gmlake_core::DeviceError::new(
                DriverCall::ExportHandle,
                DeviceErrorKind::NotSupported,
                0,
                "the driver refused exportable (POSIX file descriptor) handles on this platform",
            ));
        }
        let fd = self.timed(
            DriverCall::ExportHandle,
            |_| format!("cuMemExportToShareableHandle of handle {:#x}", handle.0),
            // SAFETY: the handle is live and was created exportable (`shareable`).
            |_| unsafe { vmm::export_fd(handle.0) },
        )?;
        // SAFETY: the driver returned a new descriptor that nothing else owns.
        self.fds
            .insert(handle.0, unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(fd as i64)
    }

    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64> {
        let va = self.timed(
            DriverCall::ReserveRange,
            |_| format!("cuMemAddressReserve of {size} bytes"),
            // SAFETY: a context is current.
            |s| unsafe { vmm::address_reserve(size as usize, s.granularity() as usize) },
        )?;
        self.ledger.add_range(va, size);
        Ok(va)
    }

    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.timed(
            DriverCall::FreeRange,
            |_| format!("cuMemAddressFree of {size} bytes at {addr:#x}"),
            // SAFETY: the range came from `reserve_range`, with nothing mapped (the core's contract).
            |_| unsafe { vmm::address_free(addr, size as usize) },
        )?;
        self.ledger.remove_range(addr);
        Ok(())
    }

    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()> {
        self.timed(
            DriverCall::Map,
            |_| {
                format!(
                    "cuMemMap of {size} bytes of handle {:#x} at offset {offset} to {addr:#x}",
                    handle.0
                )
            },
            // SAFETY: arguments as the core's contract guarantees (aligned, inside a reserved range).
            |_| unsafe { vmm::map(addr, size as usize, offset as usize, handle.0) },
        )?;
        self.ledger.add_mapping(addr, size, handle.0);
        Ok(())
    }

    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.timed(
            DriverCall::Unmap,
            |_| format!("cuMemUnmap of {size} bytes at {addr:#x}"),
            // SAFETY: the range covers whole mappings (the core's contract).
            |_| unsafe { vmm::unmap(addr, size as usize) },
        )?;
        let gone = self.ledger.mappings_in(addr, size);
        self.timings.mappings_covered[1] += gone.len() as u64;
        self.ledger.remove_mappings(&gone);
        Ok(())
    }

    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.timings.mappings_covered[0] += self.ledger.mappings_in(addr, size).len() as u64;
        self.timed(
            DriverCall::SetAccess,
            |_| format!("cuMemSetAccess of {size} bytes at {addr:#x}"),
            // SAFETY: the range is mapped (the core's contract).
            |s| unsafe { vmm::set_access(addr, size as usize, &rw_access(s.device)) },
        )
    }

    fn create_event(&mut self) -> DeviceResult<EventHandle> {
        let e = self.timed(
            DriverCall::CreateEvent,
            |_| "cuEventCreate".to_string(),
            |_| result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING),
        )?;
        self.ledger.count_event(1);
        Ok(EventHandle(e as u64))
    }

    fn destroy_event(&mut self, event: EventHandle) -> DeviceResult<()> {
        self.timed(
            DriverCall::DestroyEvent,
            |_| format!("cuEventDestroy of {:#x}", event.0),
            // SAFETY: the event came from `create_event`.
            |_| unsafe { result::event::destroy(event.0 as sys::CUevent) },
        )?;
        self.ledger.count_event(-1);
        Ok(())
    }

    fn record_event(&mut self, event: EventHandle, stream: StreamHandle) -> DeviceResult<()> {
        self.timed(
            DriverCall::RecordEvent,
            |_| format!("cuEventRecord on stream {:#x}", stream.0),
            // SAFETY: the event came from `create_event`; the stream is the caller's.
            |_| unsafe {
                result::event::record(event.0 as sys::CUevent, stream.0 as sys::CUstream)
            },
        )
    }

    fn query_event(&mut self, event: EventHandle) -> DeviceResult<bool> {
        self.timed(
            DriverCall::QueryEvent,
            |_| format!("cuEventQuery of {:#x}", event.0),
            // SAFETY: the event came from `create_event`.
            |_| match unsafe { result::event::query(event.0 as sys::CUevent) } {
                Ok(()) => Ok(true),
                Err(DriverError(CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
                Err(e) => Err(e),
            },
        )
    }

    fn synchronize_stream(&mut self, stream: StreamHandle) -> DeviceResult<()> {
        self.timed(
            DriverCall::SynchronizeStream,
            |_| format!("cuStreamSynchronize of {:#x}", stream.0),
            // SAFETY: the stream is the caller's.
            |_| unsafe { result::stream::synchronize(stream.0 as sys::CUstream) },
        )
    }

    fn synchronize_device(&mut self) -> DeviceResult<()> {
        self.timed(
            DriverCall::SynchronizeDevice,
            |s| format!("cuCtxSynchronize on device {}", s.ordinal),
            |_| result::ctx::synchronize(),
        )
    }

    fn books(&self) -> Option<DeviceBooks> {
        Some(self.ledger.books(self.driver_us))
    }
}
