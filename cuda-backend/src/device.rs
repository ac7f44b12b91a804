//! [`CudaVmm`]: one device's virtual memory management, on its primary context.

use crate::errors::{cuda_error, device_error, pinned_prop, rw_access};
use crate::{driver_present, vmm, CudaError};
use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys::{self, CUresult};
use gmlake_core::device::{DeviceBooks, DeviceResult};
use gmlake_core::{Device, DriverCall, EventHandle, PhysHandle, StreamHandle};
use std::collections::{BTreeMap, HashMap};
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
    granularity: u64,
    total: u64,
    books: DeviceBooks,
    /// Live handles and their sizes, for the books.
    handle_sizes: HashMap<u64, u64>,
    /// Live mappings: start -> size, so that an unmap over several mappings is counted right.
    mappings: BTreeMap<u64, u64>,
    timings: CallTimings,
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
            .field("granularity", &self.granularity)
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
            granularity: 0,
            total: 0,
            books: DeviceBooks::default(),
            handle_sizes: HashMap::new(),
            mappings: BTreeMap::new(),
            timings: CallTimings::default(),
        };
        // From here on, `Drop` releases the primary context.
        this.bind().map_err(|e| CudaError::Driver {
            call: "cuCtxSetCurrent",
            result: e.message.clone(),
            code: e.code,
            detail: at(),
        })?;
        let prop = pinned_prop(device);
        use sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_RECOMMENDED as REC;
        // SAFETY: the driver is initialized; `prop` is valid.
        let gran = unsafe { vmm::granularity(&prop, REC) }
            .map_err(cuda_error("cuMemGetAllocationGranularity", at))?;
        // SAFETY: `device` came from `device::get`.
        let total = unsafe { result::device::total_mem(device) }
            .map_err(cuda_error("cuDeviceTotalMem", at))?;
        this.granularity = gran as u64;
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

    /// Wall time spent in driver calls so far, by kind.
    pub fn timings(&self) -> CallTimings {
        self.timings
    }

    /// Binds the context, makes the call, and adds its wall time to the books.
    fn timed<T>(
        &mut self,
        call: DriverCall,
        f: impl FnOnce(&Self) -> DeviceResult<T>,
    ) -> DeviceResult<T> {
        self.bind()?;
        let start = Instant::now();
        let r = f(self);
        let us = start.elapsed().as_secs_f64() * 1e6;
        self.books.driver_us += us;
        self.timings.calls[call.index()] += 1;
        self.timings.us[call.index()] += us;
        r
    }

    fn mappings_in(&self, addr: u64, size: u64) -> Vec<u64> {
        self.mappings
            .range(addr..addr.saturating_add(size))
            .map(|(&a, _)| a)
            .collect()
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
        self.granularity
    }

    fn total_memory(&self) -> u64 {
        self.total
    }

    fn free_memory(&mut self) -> Option<u64> {
        self.mem_info().ok().map(|(free, _)| free)
    }

    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle> {
        let h = self.timed(DriverCall::CreateHandle, |s| {
            let prop = pinned_prop(s.device);
            // SAFETY: a context is current; the core passes granularity multiples.
            unsafe { vmm::create(size as usize, &prop) }
                .map_err(device_error(DriverCall::CreateHandle, || {
                    format!("cuMemCreate of {size} bytes on device {}", s.ordinal)
                }))
        })?;
        self.books.handles += 1;
        self.books.handle_bytes += size;
        self.handle_sizes.insert(h, size);
        self.books.peak_handle_bytes = self.books.peak_handle_bytes.max(self.books.handle_bytes);
        Ok(PhysHandle(h))
    }

    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()> {
        self.timed(DriverCall::ReleaseHandle, |_| {
            // SAFETY: the handle came from `create_handle` (the core's contract).
            unsafe { vmm::release(handle.0) }
                .map_err(device_error(DriverCall::ReleaseHandle, || {
                    format!("cuMemRelease of handle {:#x}", handle.0)
                }))
        })?;
        self.books.handles -= 1;
        self.books.handle_bytes -= self.handle_sizes.remove(&handle.0).unwrap_or(0);
        Ok(())
    }

    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64> {
        let va = self.timed(DriverCall::ReserveRange, |s| {
            // SAFETY: a context is current.
            unsafe { vmm::address_reserve(size as usize, s.granularity as usize) }.map_err(
                device_error(DriverCall::ReserveRange, || {
                    format!("cuMemAddressReserve of {size} bytes")
                }),
            )
        })?;
        self.books.ranges += 1;
        Ok(va)
    }

    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.timed(DriverCall::FreeRange, |_| {
            // SAFETY: the range came from `reserve_range`, with nothing mapped (the core's contract).
            unsafe { vmm::address_free(addr, size as usize) }
                .map_err(device_error(DriverCall::FreeRange, || {
                    format!("cuMemAddressFree of {size} bytes at {addr:#x}")
                }))
        })?;
        self.books.ranges -= 1;
        Ok(())
    }

    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()> {
        self.timed(DriverCall::Map, |_| {
            // SAFETY: arguments as the core's contract guarantees (aligned, inside a reserved range).
            unsafe { vmm::map(addr, size as usize, offset as usize, handle.0) }.map_err(
                device_error(DriverCall::Map, || {
                    format!(
                        "cuMemMap of {size} bytes of handle {:#x} at offset {offset} to {addr:#x}",
                        handle.0
                    )
                }),
            )
        })?;
        self.books.mappings += 1;
        self.mappings.insert(addr, size);
        Ok(())
    }

    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.timed(DriverCall::Unmap, |_| {
            // SAFETY: the range covers whole mappings (the core's contract).
            unsafe { vmm::unmap(addr, size as usize) }
                .map_err(device_error(DriverCall::Unmap, || {
                    format!("cuMemUnmap of {size} bytes at {addr:#x}")
                }))
        })?;
        let gone = self.mappings_in(addr, size);
        self.books.mappings -= gone.len() as u64;
        self.timings.mappings_covered[1] += gone.len() as u64;
        for a in gone {
            self.mappings.remove(&a);
        }
        Ok(())
    }

    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()> {
        self.timings.mappings_covered[0] += self.mappings_in(addr, size).len() as u64;
        self.timed(DriverCall::SetAccess, |s| {
            let desc = rw_access(s.device);
            // SAFETY: the range is mapped (the core's contract).
            unsafe { vmm::set_access(addr, size as usize, &desc) }
                .map_err(device_error(DriverCall::SetAccess, || {
                    format!("cuMemSetAccess of {size} bytes at {addr:#x}")
                }))
        })
    }

    fn create_event(&mut self) -> DeviceResult<EventHandle> {
        let e = self.timed(DriverCall::CreateEvent, |_| {
            result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).map_err(
                device_error(DriverCall::CreateEvent, || "cuEventCreate".to_string()),
            )
        })?;
        self.books.events += 1;
        Ok(EventHandle(e as u64))
    }

    fn destroy_event(&mut self, event: EventHandle) -> DeviceResult<()> {
        self.timed(DriverCall::DestroyEvent, |_| {
            // SAFETY: the event came from `create_event`.
            unsafe { result::event::destroy(event.0 as sys::CUevent) }
                .map_err(device_error(DriverCall::DestroyEvent, || {
                    format!("cuEventDestroy of {:#x}", event.0)
                }))
        })?;
        self.books.events -= 1;
        Ok(())
    }

    fn record_event(&mut self, event: EventHandle, stream: StreamHandle) -> DeviceResult<()> {
        self.timed(DriverCall::RecordEvent, |_| {
            // SAFETY: the event came from `create_event`; the stream is the caller's.
            unsafe { result::event::record(event.0 as sys::CUevent, stream.0 as sys::CUstream) }
                .map_err(device_error(DriverCall::RecordEvent, || {
                    format!("cuEventRecord on stream {:#x}", stream.0)
                }))
        })
    }

    fn query_event(&mut self, event: EventHandle) -> DeviceResult<bool> {
        self.timed(DriverCall::QueryEvent, |_| {
            // SAFETY: the event came from `create_event`.
            match unsafe { result::event::query(event.0 as sys::CUevent) } {
                Ok(()) => Ok(true),
                Err(DriverError(CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
                Err(e) => Err(device_error(DriverCall::QueryEvent, || {
                    format!("cuEventQuery of {:#x}", event.0)
                })(e)),
            }
        })
    }

    fn synchronize_stream(&mut self, stream: StreamHandle) -> DeviceResult<()> {
        self.timed(DriverCall::SynchronizeStream, |_| {
            // SAFETY: the stream is the caller's.
            unsafe { result::stream::synchronize(stream.0 as sys::CUstream) }
                .map_err(device_error(DriverCall::SynchronizeStream, || {
                    format!("cuStreamSynchronize of {:#x}", stream.0)
                }))
        })
    }

    fn synchronize_device(&mut self) -> DeviceResult<()> {
        self.timed(DriverCall::SynchronizeDevice, |s| {
            result::ctx::synchronize().map_err(device_error(DriverCall::SynchronizeDevice, || {
                format!("cuCtxSynchronize on device {}", s.ordinal)
            }))
        })
    }

    fn books(&self) -> Option<DeviceBooks> {
        Some(self.books)
    }
}
