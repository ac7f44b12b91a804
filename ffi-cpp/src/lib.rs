//! # gmlake C++ API (through cxx)
//!
//! The bridge below exposes an opaque [`RustAllocator`] to C++; `include/gmlake/gmlake.hpp` wraps it
//! in RAII classes (`gmlake::Allocator`, `gmlake::Buffer`, `gmlake::MemoryResource`). Every fallible
//! call returns `Result`, which cxx turns into a thrown `rust::Error` whose `what()` is gmlake's
//! message; panics are caught here and become errors too (a panic crossing a cxx bridge would abort).
//! `libgmlake_cpp.a` also carries the whole C API (`gmlake.h`), so C and C++ code link one library.
//! Thread-safety: a `RustAllocator` locks itself; it may be shared between threads.

pub use gmlake as c_api;

use gmlake::AnyDevice;
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::{Allocator, Config, SharedAllocator, StreamHandle};
use gmlake_cuda::CudaVmm;
use std::panic::{catch_unwind, AssertUnwindSafe};

#[cxx::bridge(namespace = "gmlake::bridge")]
mod ffi {
    /// The main statistics (bytes and counts), as `gmlake_stats` in the C API.
    #[derive(Debug, Default)]
    struct Stats {
        allocated_bytes: u64,
        peak_allocated_bytes: u64,
        reserved_bytes: u64,
        peak_reserved_bytes: u64,
        active_bytes: u64,
        peak_active_bytes: u64,
        requested_bytes: u64,
        peak_requested_bytes: u64,
        allocations: u64,
        segments: u64,
        num_stitches: u64,
        num_stitch_reuses: u64,
        num_ooms: u64,
        utilization: f64,
    }

    extern "Rust" {
        type RustAllocator;
        fn create_cuda(device: i32, config: &str) -> Result<Box<RustAllocator>>;
        fn create_simulated(capacity: u64, config: &str) -> Result<Box<RustAllocator>>;
        fn allocate(self: &RustAllocator, size: usize, stream: usize) -> Result<usize>;
        fn deallocate(self: &RustAllocator, ptr: usize) -> Result<()>;
        fn record_stream(self: &RustAllocator, ptr: usize, stream: usize) -> Result<()>;
        fn empty_cache(self: &RustAllocator) -> Result<()>;
        fn set_memory_fraction(self: &RustAllocator, fraction: f64) -> Result<()>;
        fn stats(self: &RustAllocator) -> Stats;
        fn snapshot_json(self: &RustAllocator) -> String;
        fn live_allocations(self: &RustAllocator) -> usize;
        fn release_all(self: &RustAllocator) -> Result<usize>;
    }
}

/// One allocator, locked for each call.
pub struct RustAllocator {
    inner: SharedAllocator<AnyDevice>,
}

/// Runs `f`, turning a panic into an error (a panic must not unwind through the bridge).
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("gmlake: internal error (a bug in gmlake)".into()))
}

fn create(
    device: impl FnOnce() -> Result<AnyDevice, String>,
    config: &str,
) -> Result<Box<RustAllocator>, String> {
    guarded(|| {
        let cfg = Config::parse(config).map_err(|e| format!("gmlake: {e}"))?;
        let alloc = Allocator::new(device()?, cfg).map_err(|e| format!("gmlake: {e}"))?;
        Ok(Box::new(RustAllocator {
            inner: SharedAllocator::new(alloc),
        }))
    })
}

/// An allocator on CUDA device `device` configured by `config` (see `Config::parse`).
///
/// # Errors
/// No driver or device, a driver failure, or a bad configuration (the message says which).
pub fn create_cuda(device: i32, config: &str) -> Result<Box<RustAllocator>, String> {
    create(
        || {
            CudaVmm::new(device)
                .map(AnyDevice::Cuda)
                .map_err(|e| format!("gmlake: {e}"))
        },
        config,
    )
}

/// An allocator on a simulated device of `capacity` bytes (its addresses hold no memory).
///
/// # Errors
/// A zero capacity or a bad configuration.
pub fn create_simulated(capacity: u64, config: &str) -> Result<Box<RustAllocator>, String> {
    if capacity == 0 {
        return Err("gmlake: capacity is 0".into());
    }
    create(
        || Ok(AnyDevice::Simulated(SimulatedDevice::new(capacity))),
        config,
    )
}

impl RustAllocator {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Allocator<AnyDevice>) -> gmlake_core::Result<T>,
    ) -> Result<T, String> {
        guarded(|| self.inner.with(f).map_err(|e| e.to_string()))
    }

    /// Allocates `size` bytes for `stream` (a `cudaStream_t` as an integer; 0 is the default).
    ///
    /// # Errors
    /// A zero or absurd size, out of memory (message starting "CUDA out of memory."), or a driver
    /// failure.
    pub fn allocate(&self, size: usize, stream: usize) -> Result<usize, String> {
        self.with(|a| a.malloc(size as u64, StreamHandle(stream as u64)))
            .map(|p| p as usize)
    }

    /// Frees an allocation of this allocator.
    ///
    /// # Errors
    /// An unknown pointer or a double free.
    pub fn deallocate(&self, ptr: usize) -> Result<(), String> {
        self.with(|a| a.free(ptr as u64))
    }

    /// Declares that the allocation is also used on `stream`.
    ///
    /// # Errors
    /// An unknown pointer.
    pub fn record_stream(&self, ptr: usize, stream: usize) -> Result<(), String> {
        self.with(|a| a.record_stream(ptr as u64, StreamHandle(stream as u64)))
    }

    /// Returns every free physical chunk to the device.
    ///
    /// # Errors
    /// A failed device synchronization.
    pub fn empty_cache(&self) -> Result<(), String> {
        self.with(|a| a.empty_cache())
    }

    /// Caps reserved memory at `fraction` of the device.
    ///
    /// # Errors
    /// A fraction outside (0, 1].
    pub fn set_memory_fraction(&self, fraction: f64) -> Result<(), String> {
        self.with(|a| a.set_memory_fraction(fraction))
    }

    /// The main statistics.
    pub fn stats(&self) -> ffi::Stats {
        let s = self.inner.with(|a| a.stats());
        let v = |x: i64| x.max(0) as u64;
        ffi::Stats {
            allocated_bytes: v(s.allocated_bytes.all.current),
            peak_allocated_bytes: v(s.allocated_bytes.all.peak),
            reserved_bytes: v(s.reserved_bytes.all.current),
            peak_reserved_bytes: v(s.reserved_bytes.all.peak),
            active_bytes: v(s.active_bytes.all.current),
            peak_active_bytes: v(s.active_bytes.all.peak),
            requested_bytes: v(s.requested_bytes.all.current),
            peak_requested_bytes: v(s.requested_bytes.all.peak),
            allocations: v(s.allocation.all.current),
            segments: v(s.segment.all.current),
            num_stitches: s.num_stitches,
            num_stitch_reuses: s.num_stitch_reuses,
            num_ooms: s.num_ooms,
            utilization: s.utilization(),
        }
    }

    /// The snapshot as JSON (the format of `gmlake_snapshot_json`).
    pub fn snapshot_json(&self) -> String {
        self.inner.with(|a| gmlake::snapshot_json_of(&a.snapshot()))
    }

    /// Live allocations.
    pub fn live_allocations(&self) -> usize {
        self.inner.with(|a| a.live_allocations())
    }

    /// Frees every live allocation and gives everything back to the device; returns how many
    /// device objects the device refused to take back.
    ///
    /// # Errors
    /// A failed device synchronization.
    pub fn release_all(&self) -> Result<usize, String> {
        self.with(|a| a.release_all())
    }
}
