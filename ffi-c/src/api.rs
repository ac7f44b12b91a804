//! The C entry points.

use crate::device::AnyDevice;
use crate::error::{guard, invalid, Failure};
use crate::gmlake_status;
use crate::out::{get_into, get_into_or};
use crate::stats::{gmlake_stats, stats_json};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, SharedAllocator, StreamHandle};
use gmlake_cuda::CudaVmm;
use gmlake_host::HostDevice;
use std::ffi::{c_char, c_void, CStr, CString};

/// An allocator for one device. Opaque; create it with `gmlake_create_cuda`,
/// `gmlake_create_host` or `gmlake_create_simulated`, destroy it with `gmlake_destroy`. Safe to use from several threads.
pub struct gmlake_allocator {
    pub(crate) inner: SharedAllocator<AnyDevice>,
}

static VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };

/// The library's version, such as "0.1.0". A static string; never null.
#[unsafe(no_mangle)]
pub extern "C" fn gmlake_version() -> *const c_char {
    VERSION.as_ptr()
}

fn config(text: *const c_char) -> Result<Config, Failure> {
    if text.is_null() {
        return Ok(Config::default());
    }
    // SAFETY: the caller passes a NUL-terminated string (documented).
    let text = unsafe { CStr::from_ptr(text) }
        .to_str()
        .map_err(|_| invalid("the configuration is not UTF-8"))?;
    Config::parse(text).map_err(|e| Failure::from(gmlake_core::Error::Config(e)))
}

pub(crate) fn new_allocator(
    device: AnyDevice,
    cfg: Config,
) -> Result<Box<gmlake_allocator>, Failure> {
    Ok(Box::new(gmlake_allocator {
        inner: SharedAllocator::new(Allocator::new(device, cfg)?),
    }))
}

fn create(device: AnyDevice, cfg: Config, out: *mut *mut gmlake_allocator) -> Result<(), Failure> {
    let boxed = new_allocator(device, cfg)?;
    // SAFETY: `out` was checked non-null by the caller of this helper.
    unsafe { *out = Box::into_raw(boxed) };
    Ok(())
}

/// Creates an allocator on CUDA device `device` (an ordinal, as for `cudaSetDevice`), configured by
/// `config` (`"frag_limit:64MB,reuse_limit:10"`; NULL or "" for the defaults). On success `*out`
/// receives the allocator.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` if `out` is NULL or `config` is not UTF-8;
/// `GMLAKE_ERROR_CONFIG` for a bad configuration; `GMLAKE_ERROR_NO_DEVICE` without a CUDA driver,
/// for a bad ordinal or a device without virtual memory management; `GMLAKE_ERROR_DEVICE` if a
/// driver call failed.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_create_cuda(
    device: i32,
    config_text: *const c_char,
    out: *mut *mut gmlake_allocator,
) -> gmlake_status {
    guard("gmlake_create_cuda", || {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let cfg = config(config_text)?;
        let dev = CudaVmm::new(device)?;
        create(AnyDevice::Cuda(dev), cfg, out)
    })
}

/// Creates an allocator on a simulated device of `capacity` bytes (2 MiB granularity): it keeps
/// the books of a GPU's virtual memory in host memory, for tests and planning. Its addresses hold
/// no memory: never dereference them.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` if `out` is NULL, `capacity` is 0 or `config` is not
/// UTF-8; `GMLAKE_ERROR_CONFIG` for a bad configuration.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_create_simulated(
    capacity: u64,
    config_text: *const c_char,
    out: *mut *mut gmlake_allocator,
) -> gmlake_status {
    guard("gmlake_create_simulated", || {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        if capacity == 0 {
            return Err(invalid("capacity is 0"));
        }
        let cfg = config(config_text)?;
        create(
            AnyDevice::Simulated(SimulatedDevice::new(capacity)),
            cfg,
            out,
        )
    })
}

/// Creates an allocator on `capacity` bytes of this machine's memory (Linux): its physical handles
/// are memory files, and stitched blocks really alias them, as on a GPU. Its addresses are
/// ordinary host addresses, readable and writable by the CPU while allocated, so a program can
/// check its data without a GPU. Memory is committed only as it is written. `granularity` is the
/// handle granularity in bytes, rounded up to a power of two of at least the page size; 0 means
/// 2 MiB, the H200's.
///
/// Errors: as `gmlake_create_simulated`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_create_host(
    capacity: u64,
    granularity: u64,
    config_text: *const c_char,
    out: *mut *mut gmlake_allocator,
) -> gmlake_status {
    guard("gmlake_create_host", || {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        if capacity == 0 {
            return Err(invalid("capacity is 0"));
        }
        let cfg = config(config_text)?;
        let granularity = if granularity == 0 {
            2 << 20
        } else {
            granularity
        };
        create(
            AnyDevice::Host(HostDevice::new(capacity, granularity)),
            cfg,
            out,
        )
    })
}

pub(crate) fn with<R>(
    a: *const gmlake_allocator,
    f: impl FnOnce(&mut Allocator<AnyDevice>) -> Result<R, Failure>,
) -> Result<R, Failure> {
    if a.is_null() {
        return Err(invalid("the allocator is NULL"));
    }
    // SAFETY: a non-null allocator pointer came from a create function and is not destroyed yet
    // (documented); the shared allocator locks itself.
    let a = unsafe { &*a };
    a.inner.with(f)
}

/// Allocates `size` bytes for use on `stream` (a `cudaStream_t`/`CUstream`; NULL is the legacy
/// default stream). `*out` receives the device address, aligned to 512 bytes, usable at once on
/// `stream`. Ownership: free it with `gmlake_free`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`, a size of 0 or above
/// 1 PiB; `GMLAKE_ERROR_OUT_OF_MEMORY` when it does not fit even after releasing cached memory
/// (the message gives requested, reserved, allocated and free bytes); `GMLAKE_ERROR_DEVICE` if a
/// driver call failed. `*out` is set to NULL on any error.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_malloc(
    a: *mut gmlake_allocator,
    size: usize,
    stream: *mut c_void,
    out: *mut *mut c_void,
) -> gmlake_status {
    get_into_or("gmlake_malloc", a, out, Some(std::ptr::null_mut()), |a| {
        Ok(a.malloc(size as u64, StreamHandle(stream as u64))? as *mut c_void)
    })
}

/// Frees an allocation made by `gmlake_malloc` on this allocator. The memory is reused at once on
/// the allocation's stream, on other streams once the work enqueued before this call has
/// completed (and after the work of streams added by `gmlake_record_stream`).
///
/// A NULL `ptr` does nothing and returns `GMLAKE_OK`, as C's `free(NULL)` does.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator; `GMLAKE_ERROR_NOT_ALLOCATED` for
/// a pointer that is not a live allocation (unknown, interior, or already freed), which changes
/// nothing.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_free(a: *mut gmlake_allocator, ptr: *mut c_void) -> gmlake_status {
    guard("gmlake_free", || {
        with(a, |a| match ptr.is_null() {
            true => Ok(()),
            false => Ok(a.free(ptr as u64)?),
        })
    })
}

/// Declares that the allocation at `ptr` is also used on `stream` (as `Tensor.record_stream`):
/// its free then waits for the work enqueued on `stream` until the free.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator; `GMLAKE_ERROR_NOT_ALLOCATED` for
/// a pointer that is not a live allocation.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_record_stream(
    a: *mut gmlake_allocator,
    ptr: *mut c_void,
    stream: *mut c_void,
) -> gmlake_status {
    guard("gmlake_record_stream", || {
        with(a, |a| {
            Ok(a.record_stream(ptr as u64, StreamHandle(stream as u64))?)
        })
    })
}

/// The requested size in bytes of the live allocation at `ptr` into `*out`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`;
/// `GMLAKE_ERROR_NOT_ALLOCATED` if `ptr` is not a live allocation.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_allocation_size(
    a: *const gmlake_allocator,
    ptr: *const c_void,
    out: *mut u64,
) -> gmlake_status {
    guard("gmlake_allocation_size", || {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        let addr = ptr as u64;
        let size = with(a, |a| {
            a.allocation_size(addr)
                .ok_or(Failure::from(gmlake_core::Error::NotAllocated { addr }))
        })?;
        // SAFETY: checked non-null.
        unsafe { *out = size };
        Ok(())
    })
}

/// Returns every free physical chunk to the device (after synchronizing it) and destroys cached
/// stitched blocks (`torch.cuda.empty_cache`).
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator; `GMLAKE_ERROR_DEVICE` if the
/// synchronization failed (nothing was released then).
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_empty_cache(a: *mut gmlake_allocator) -> gmlake_status {
    guard("gmlake_empty_cache", || with(a, |a| Ok(a.empty_cache()?)))
}

/// Limits the memory this allocator reserves to `fraction` of the device's total memory
/// (`torch.cuda.set_per_process_memory_fraction`).
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or a fraction outside (0, 1].
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_set_memory_fraction(
    a: *mut gmlake_allocator,
    fraction: f64,
) -> gmlake_status {
    guard("gmlake_set_memory_fraction", || {
        with(a, |a| Ok(a.set_memory_fraction(fraction)?))
    })
}

/// Copies the main statistics into `*out`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_get_stats(
    a: *const gmlake_allocator,
    out: *mut gmlake_stats,
) -> gmlake_status {
    get_into("gmlake_get_stats", a, out, |a| {
        Ok(gmlake_stats::from(a.stats_ref()))
    })
}

/// Sets every peak statistic to its current value (`torch.cuda.reset_peak_memory_stats`).
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_reset_peak_stats(a: *mut gmlake_allocator) -> gmlake_status {
    guard("gmlake_reset_peak_stats", || {
        with(a, |a| {
            a.reset_peak_stats();
            Ok(())
        })
    })
}

/// All statistics as a JSON object (PyTorch's `memory_stats()` keys, then `gmlake.*` keys, with
/// `gmlake.driver_us`: the wall time spent inside driver calls so far, in microseconds).
/// `*out` receives a NUL-terminated string owned by the caller: free it with `gmlake_string_free`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_stats_json(
    a: *const gmlake_allocator,
    out: *mut *mut c_char,
) -> gmlake_status {
    get_into("gmlake_stats_json", a, out, |a| {
        let driver_us = gmlake_core::Device::books(a.device()).map(|b| b.driver_us);
        let json = stats_json(a.stats_ref(), driver_us);
        Ok(CString::new(json)
            .map_err(|_| invalid("statistics contain a NUL"))?
            .into_raw())
    })
}

/// A snapshot of everything the allocator holds, as a JSON object: `segments` (address,
/// total_size, stream, segment_type, its physical `chunks` and its `blocks` with their state:
/// "active_allocated", "active_pending_free", "inactive", "released" or {"lent_to_stitched": ADDR})
/// and `stitched` blocks with the chunk `pieces` they map. `*out` receives a NUL-terminated string
/// owned by the caller: free it with `gmlake_string_free`.
///
/// Errors: `GMLAKE_ERROR_INVALID_ARGUMENT` for a NULL allocator or `out`.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_snapshot_json(
    a: *const gmlake_allocator,
    out: *mut *mut c_char,
) -> gmlake_status {
    get_into("gmlake_snapshot_json", a, out, |a| {
        let json = crate::snapshot::snapshot_json(&a.snapshot());
        Ok(CString::new(json)
            .map_err(|_| invalid("snapshot contains a NUL"))?
            .into_raw())
    })
}

/// Frees a string returned by gmlake (`gmlake_stats_json`, `gmlake_snapshot_json`). NULL is ignored.
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: the string came from `CString::into_raw` in this library (documented).
        drop(unsafe { CString::from_raw(s) });
    }
}

/// Destroys an allocator and gives everything it holds back to the device. With live allocations
/// it refuses (`GMLAKE_ERROR_LIVE_ALLOCATIONS`, the allocator stays usable) unless `release_live`
/// is true, in which case they are freed too. NULL is accepted and does nothing.
///
/// Errors: `GMLAKE_ERROR_LIVE_ALLOCATIONS` as above; `GMLAKE_ERROR_DEVICE` if the device kept
/// refusing to take memory back (the allocator is destroyed anyway; what was refused is lost).
///
/// # Safety
/// Pointer arguments are NULL or valid, as the header's conventions say.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gmlake_destroy(
    a: *mut gmlake_allocator,
    release_live: bool,
) -> gmlake_status {
    guard("gmlake_destroy", || {
        if a.is_null() {
            return Ok(());
        }
        let live = with(a, |a| Ok(a.live_allocations()))?;
        if live > 0 && !release_live {
            return Err(Failure::from(gmlake_core::Error::LiveAllocations {
                count: live as u64,
            }));
        }
        // SAFETY: the pointer came from a create function (documented) and is destroyed once.
        let boxed = unsafe { Box::from_raw(a) };
        let mut allocator = boxed.inner.into_inner();
        let held = allocator.release_all()?;
        if held > 0 {
            return Err(Failure(
                gmlake_status::GMLAKE_ERROR_DEVICE,
                format!("the device refused to take back {held} objects"),
            ));
        }
        Ok(())
    })
}
