//! The device-memory contract a backend fulfils.
//!
//! The allocator never talks to a driver directly: it asks a [`Device`] for physical memory handles,
//! virtual address ranges, mappings between the two, access rights, and events. The CUDA backend
//! (`gmlake-cuda`) fulfils it with the driver's virtual memory management calls (`cuMemCreate`,
//! `cuMemAddressReserve`, `cuMemMap`, `cuMemSetAccess`, ...); the [`crate::sim::SimulatedDevice`]
//! keeps the same books in host memory for tests and trace replay.
//!
//! Sizes and offsets are bytes. Addresses are device virtual addresses as `u64`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// An opaque physical memory handle (CUDA: `CUmemGenericAllocationHandle`).
///
/// Created by [`Device::create_handle`], released by [`Device::release_handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhysHandle(pub u64);

/// An opaque event handle (CUDA: `CUevent`). Created by [`Device::create_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventHandle(pub u64);

/// A stream as the caller names it (CUDA: the `CUstream` value; 0 is the legacy default stream).
///
/// The allocator never creates or destroys streams; it only records events on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamHandle(pub u64);

/// Every kind of call the allocator makes on a device; used for counting, cost estimates and fault
/// injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriverCall {
    /// Create a physical handle (`cuMemCreate`).
    CreateHandle,
    /// Release a physical handle (`cuMemRelease`).
    ReleaseHandle,
    /// Reserve a virtual address range (`cuMemAddressReserve`).
    ReserveRange,
    /// Free a virtual address range (`cuMemAddressFree`).
    FreeRange,
    /// Map part of a handle into a range (`cuMemMap`).
    Map,
    /// Unmap a range (`cuMemUnmap`).
    Unmap,
    /// Grant read/write access on a mapped range (`cuMemSetAccess`).
    SetAccess,
    /// Create an event (`cuEventCreate`).
    CreateEvent,
    /// Destroy an event (`cuEventDestroy`).
    DestroyEvent,
    /// Record an event on a stream (`cuEventRecord`).
    RecordEvent,
    /// Ask whether an event has completed, without blocking (`cuEventQuery`).
    QueryEvent,
    /// Wait for all work on one stream (`cuStreamSynchronize`).
    SynchronizeStream,
    /// Wait for all work on the device (`cuCtxSynchronize`).
    SynchronizeDevice,
    /// Export a physical handle for another process (`cuMemExportToShareableHandle`).
    ExportHandle,
}

impl DriverCall {
    /// How many kinds there are.
    pub const COUNT: usize = 14;

    /// All kinds, in a fixed order (the order of [`DriverCallCounts`] and of reports).
    pub const ALL: [DriverCall; DriverCall::COUNT] = [
        DriverCall::CreateHandle,
        DriverCall::ReleaseHandle,
        DriverCall::ReserveRange,
        DriverCall::FreeRange,
        DriverCall::Map,
        DriverCall::Unmap,
        DriverCall::SetAccess,
        DriverCall::CreateEvent,
        DriverCall::DestroyEvent,
        DriverCall::RecordEvent,
        DriverCall::QueryEvent,
        DriverCall::SynchronizeStream,
        DriverCall::SynchronizeDevice,
        DriverCall::ExportHandle,
    ];

    /// The kind's short name, as used by `--inject-fault KIND:N` and in JSON reports
    /// (`create_handle`, `map`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DriverCall::CreateHandle => "create_handle",
            DriverCall::ReleaseHandle => "release_handle",
            DriverCall::ReserveRange => "reserve_range",
            DriverCall::FreeRange => "free_range",
            DriverCall::Map => "map",
            DriverCall::Unmap => "unmap",
            DriverCall::SetAccess => "set_access",
            DriverCall::CreateEvent => "create_event",
            DriverCall::DestroyEvent => "destroy_event",
            DriverCall::RecordEvent => "record_event",
            DriverCall::QueryEvent => "query_event",
            DriverCall::SynchronizeStream => "synchronize_stream",
            DriverCall::SynchronizeDevice => "synchronize_device",
            DriverCall::ExportHandle => "export_handle",
        }
    }

    /// Parses a name produced by [`DriverCall::name`]; `None` for anything else.
    pub fn from_name(name: &str) -> Option<DriverCall> {
        DriverCall::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Index of this kind in [`DriverCall::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DriverCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A count per [`DriverCall`] kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverCallCounts(pub [u64; DriverCall::COUNT]);

impl DriverCallCounts {
    /// The count of one kind.
    pub fn get(&self, call: DriverCall) -> u64 {
        self.0[call.index()]
    }

    /// Adds one to a kind.
    pub fn bump(&mut self, call: DriverCall) {
        self.0[call.index()] += 1;
    }

    /// The sum over all kinds.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(name, count)` pairs in [`DriverCall::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DriverCall, u64)> + '_ {
        DriverCall::ALL.iter().map(move |c| (*c, self.get(*c)))
    }
}

/// Why a device call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceErrorKind {
    /// The device has no memory left for the request (CUDA: `CUDA_ERROR_OUT_OF_MEMORY`).
    OutOfMemory,
    /// An argument was refused (bad size, alignment, handle or address).
    InvalidValue,
    /// The device or driver lacks the feature (for example no virtual memory management).
    NotSupported,
    /// No usable driver or device (library absent, bad ordinal).
    NoDevice,
    /// Any other failure; see the code and message.
    Other,
}

/// A failed device call: which call, why, the backend's code and a message with the sizes involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceError {
    /// The call that failed.
    pub call: DriverCall,
    /// The failure's class, which the allocator acts on (only `OutOfMemory` leads to a retry after
    /// releasing cached memory).
    pub kind: DeviceErrorKind,
    /// The backend's own code (CUDA: the numeric `CUresult`), 0 when there is none.
    pub code: i64,
    /// A human-readable message: the backend's error name and the sizes or addresses involved.
    pub message: String,
}

impl DeviceError {
    /// Builds an error.
    pub fn new(
        call: DriverCall,
        kind: DeviceErrorKind,
        code: i64,
        message: impl Into<String>,
    ) -> Self {
        DeviceError {
            call,
            kind,
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed ({:?}, code {}): {}",
            self.call, self.kind, self.code, self.message
        )
    }
}

/// The result of a device call.
pub type DeviceResult<T> = Result<T, DeviceError>;

/// Device memory operations the allocator needs, with no CUDA types.
///
/// One value drives one device. The allocator calls it while holding its own lock, so an
/// implementation needs no locking of its own for the allocator's sake; it must be [`Send`] to let
/// the allocator move between threads. Every call may fail; the allocator rolls back what it did
/// before the failure.
///
/// Contract (what the allocator guarantees, and what a backend may check):
/// - handle sizes, range sizes, mapping sizes and offsets are multiples of [`Device::granularity`];
/// - a range is mapped only where nothing is mapped yet, and unmapped exactly along what was mapped
///   (one call may cover several adjacent mappings);
/// - a handle is released only when nothing maps it any more;
/// - a range is freed only when nothing is mapped in it.
pub trait Device: Send {
    /// The allocation granularity in bytes (CUDA: `cuMemGetAllocationGranularity`, 2 MiB on the
    /// H100 and H200). A power of two.
    fn granularity(&self) -> u64;

    /// The device's total memory in bytes, used for the per-process memory fraction and error
    /// messages.
    fn total_memory(&self) -> u64;

    /// Free device memory in bytes as the driver sees it (CUDA: `cuMemGetInfo`), for error
    /// messages. A backend that cannot tell returns `None`.
    fn free_memory(&mut self) -> Option<u64>;

    /// Creates a physical handle of `size` bytes, a multiple of the granularity.
    ///
    /// # Errors
    /// `OutOfMemory` when the device has no room; others on driver failure.
    fn create_handle(&mut self, size: u64) -> DeviceResult<PhysHandle>;

    /// Releases a handle that nothing maps any more.
    ///
    /// # Errors
    /// On driver failure; the handle is then still held.
    fn release_handle(&mut self, handle: PhysHandle) -> DeviceResult<()>;

    /// Reserves `size` bytes of virtual address space (a multiple of the granularity) and returns
    /// its start, aligned to the granularity.
    ///
    /// # Errors
    /// When address space is exhausted or on driver failure.
    fn reserve_range(&mut self, size: u64) -> DeviceResult<u64>;

    /// Frees a range returned by [`Device::reserve_range`] (`addr` and `size` exactly as reserved),
    /// with nothing mapped in it.
    ///
    /// # Errors
    /// On driver failure; the range is then still reserved.
    fn free_range(&mut self, addr: u64, size: u64) -> DeviceResult<()>;

    /// Maps `size` bytes of `handle`, starting `offset` bytes into it, at `addr`. The allocator
    /// maps whole handles only (`offset` 0, `size` the handle's size), the only form the CUDA driver
    /// supports (`cuMemMap` returns `CUDA_ERROR_NOT_SUPPORTED` otherwise, seen on the H200).
    ///
    /// # Errors
    /// On driver failure; nothing is then mapped.
    fn map(&mut self, addr: u64, size: u64, handle: PhysHandle, offset: u64) -> DeviceResult<()>;

    /// Unmaps `[addr, addr + size)`, which covers whole mappings.
    ///
    /// # Errors
    /// On driver failure; the mappings then stay.
    fn unmap(&mut self, addr: u64, size: u64) -> DeviceResult<()>;

    /// Grants the device read/write access to the mapped range `[addr, addr + size)`.
    ///
    /// # Errors
    /// On driver failure.
    fn set_access(&mut self, addr: u64, size: u64) -> DeviceResult<()>;

    /// Creates an event for stream ordering (timing disabled).
    ///
    /// # Errors
    /// On driver failure.
    fn create_event(&mut self) -> DeviceResult<EventHandle>;

    /// Destroys an event.
    ///
    /// # Errors
    /// On driver failure.
    fn destroy_event(&mut self, event: EventHandle) -> DeviceResult<()>;

    /// Records `event` on `stream`: it completes once all work enqueued on the stream so far has.
    ///
    /// # Errors
    /// On driver failure (a bad stream among them).
    fn record_event(&mut self, event: EventHandle, stream: StreamHandle) -> DeviceResult<()>;

    /// Whether `event` has completed; never blocks.
    ///
    /// # Errors
    /// On driver failure.
    fn query_event(&mut self, event: EventHandle) -> DeviceResult<bool>;

    /// Blocks until all work on `stream` has completed.
    ///
    /// # Errors
    /// On driver failure.
    fn synchronize_stream(&mut self, stream: StreamHandle) -> DeviceResult<()>;

    /// Blocks until all work on the device has completed.
    ///
    /// # Errors
    /// On driver failure.
    fn synchronize_device(&mut self) -> DeviceResult<()>;

    /// Exports `handle` for another process and returns the operating system's name for it (CUDA:
    /// a POSIX file descriptor from `cuMemExportToShareableHandle`; host memory: the memfd), valid
    /// for as long as the handle lives; exporting the same handle again returns the same name.
    /// The default refuses (`NotSupported`): a device that cannot share memory across processes.
    ///
    /// # Errors
    /// `NotSupported` where the device cannot export; others on driver failure.
    fn export_handle(&mut self, handle: PhysHandle) -> DeviceResult<i64> {
        Err(DeviceError::new(
            DriverCall::ExportHandle,
            DeviceErrorKind::NotSupported,
            0,
            alloc::format!(
                "this device cannot share handle {:#x} with other processes",
                handle.0
            ),
        ))
    }

    /// The devices whose memory this one can map and access (CUDA: the ordinals of the GPUs with
    /// peer access to this one, over NVLink or PCIe), in the order a borrower should try them.
    /// The default: none, so that nothing is ever borrowed.
    fn peers(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Creates a physical handle of `size` bytes (a multiple of the granularity) in the memory of
    /// peer device `peer`, to be mapped into this device's ranges like any handle:
    /// [`Device::map`], [`Device::set_access`] (which grants *this* device access),
    /// [`Device::unmap`] and [`Device::release_handle`] take it as they take a local one. Counted
    /// and fault-injected as [`DriverCall::CreateHandle`]. The default refuses (`NotSupported`).
    ///
    /// # Errors
    /// `OutOfMemory` when the peer has no room; `NotSupported` where `peer` is not a peer of this
    /// device; others on driver failure.
    fn create_peer_handle(&mut self, peer: u32, size: u64) -> DeviceResult<PhysHandle> {
        Err(DeviceError::new(
            DriverCall::CreateHandle,
            DeviceErrorKind::NotSupported,
            0,
            alloc::format!("device {peer} is not a peer of this device ({size} bytes asked)"),
        ))
    }

    /// What a plain `cudaMalloc` of `bytes` costs on this device, in microseconds, where the
    /// backend models driver costs (the simulated device does, from its cost table); `None` (the
    /// default) otherwise. Trace replays use it to estimate the native allocator's driver time.
    fn native_malloc_us(&self, bytes: u64) -> Option<f64> {
        let _ = bytes;
        None
    }

    /// What the backend itself counts as held, for leak checks and cost reports; `None` (the
    /// default) if it keeps no such books.
    fn books(&self) -> Option<DeviceBooks> {
        None
    }
}

/// What a device holds now, as the backend counts it, and its estimated driver time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeviceBooks {
    /// Live physical handles.
    pub handles: u64,
    /// Bytes of live physical handles.
    pub handle_bytes: u64,
    /// Peak bytes of live physical handles.
    pub peak_handle_bytes: u64,
    /// Reserved virtual ranges.
    pub ranges: u64,
    /// Live mappings.
    pub mappings: u64,
    /// Live events.
    pub events: u64,
    /// Driver time spent (or, for a simulated device, estimated) so far, in microseconds.
    pub driver_us: f64,
}
