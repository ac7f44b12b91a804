//! The stitching allocator for one device: its books and public operations.
//!
//! Every decision (where a request is served from, when to stitch, handle sizes, splitting, reuse
//! and garbage collection of stitched blocks) is in [`policy`]; the other files are mechanics.
//!
//! # Thread-safety
//! An `Allocator` is driven through `&mut self`; share one between threads through
//! [`crate::SharedAllocator`], which locks it.

mod arena;
mod check;
mod checkpoint;
mod grow;
mod history;
mod live;
mod order;
mod parked;
mod peer;
mod policy;
mod pool;
mod pools;
mod release;
mod share;
mod snapshot;
mod split;
mod stitch;
mod stitch_cache;
mod stitch_ends;
mod streams;
mod types;
mod va;

use crate::config::Config;
use crate::device::{Device, DeviceError, DeviceErrorKind, DeviceResult, DriverCall, StreamHandle};
use crate::error::{Error, OomInfo, Result};
use crate::stats::Stats;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use arena::Arena;
use hashbrown::HashMap;
use types::*;

pub use checkpoint::{PoolCheckpoint, PoolRestore};
pub use history::HistoryRecord;
pub use peer::BORROW_POOL;
pub use pools::PoolId;
pub use share::{Shared, SharedPiece};
pub use snapshot::{
    BlockInfo, BlockStateInfo, ChunkInfo, PieceInfo, SegmentInfo, Snapshot, StitchedInfo,
};

/// Every request is rounded up to a multiple of this many bytes (PyTorch's `kMinBlockSize`).
pub const MIN_BLOCK_SIZE: u64 = 512;

/// The largest request accepted, in bytes (1 PiB): anything larger is refused as absurd before any
/// device call.
pub const MAX_REQUEST: u64 = 1 << 50;

/// The stitching allocator of one device.
///
/// A request is served, in this order, by the best-fitting free block, a cached stitched block,
/// a new stitch of whole free physical chunks, new memory for only what the free chunks lack
/// (stitched with them), and, after releasing all cached memory, the same once more; else it
/// fails as out of memory. Every decision of that order, with why and the measurements behind
/// it, is in one file, `core/src/allocator/policy.rs`.
///
/// Sizes are bytes; addresses are device virtual addresses. Every method that fails leaves the
/// allocator as it was before the call (or, for cleanup the device refused, with the cleanup queued
/// and retried later): nothing is lost or leaked.
pub struct Allocator<D: Device> {
    dev: D,
    cfg: Config,
    gran: u64,
    limit: Option<u64>,
    stats: Stats,
    blocks: Arena<Block>,
    segments: Arena<Segment>,
    stitched: Arena<Stitched>,
    /// Free blocks, by lane (a pool's free blocks on one stream: `pools.rs`).
    free: Vec<pool::StreamPools>,
    pools: pools::Pools,
    /// Free (cached) stitched blocks by owner pool and size: `(pool, size, id)`.
    reusable: BTreeSet<(PoolIdx, u64, StitchId)>,
    /// Free stitched blocks in least-recently-freed order: `(last_free, id)`.
    stitch_lru: BTreeSet<(u64, StitchId)>,
    /// What was freed last, if it is still kept as it was (`parked.rs`).
    parked: Option<parked::Parked>,
    live: HashMap<u64, Live>,
    pending_frees: Vec<PendingFree>,
    streams: streams::Streams,
    deferred: Vec<Deferred>,
    va: va::VaSpace,
    tick: u64,
    /// Size of the physical handles the current request's growth creates (see `set_handle_size`).
    handle_size: u64,
    /// The largest rounded request so far, in bytes (see `split_for`).
    largest_request: u64,
    /// Requests served so far, and that count when reserved memory last grew (while serving the
    /// next): `since_growth`.
    requests: u64,
    last_growth: u64,
    /// Whether the job has settled at some point ([`policy::settled`]).
    settled_once: bool,
    /// The most live bytes a request has asked to reach so far (allocated bytes plus the request).
    live_peak: u64,
    /// Whether memory grown for the request under way is late ([`policy::grows_late`]).
    growth_late: bool,
    /// Stitched blocks made so far: the next one's `born`.
    stitch_births: u64,
    /// The caller's context id for what the calls now under way do (history and snapshots).
    context: u64,
    history: history::History,
    /// While a request borrows memory: the peer lending it and the lane its segments join
    /// (`peer.rs`); growth then creates handles in that peer's memory.
    borrowing: Option<(u32, LaneIdx)>,
}

/// What serves a request.
pub(super) enum Served {
    Block(BlockId),
    Stitched(StitchId),
    /// The parked block, handed out again as it is (`parked.rs`).
    Again(BlockId),
}

/// Why new memory could not be had.
pub(super) enum Miss {
    /// The device or the limit refused memory: try stitching or releasing cached memory.
    NoMemory,
    /// The device failed otherwise: give up with this error.
    Failed(DeviceError),
}

impl Miss {
    /// The miss a device error means: out of memory, or a failure to give up on.
    pub(super) fn from_device(e: DeviceError) -> Miss {
        if e.kind == DeviceErrorKind::OutOfMemory {
            Miss::NoMemory
        } else {
            Miss::Failed(e)
        }
    }

    /// Leaves a failure other than running out of memory in `device_error`.
    pub(super) fn report(self, device_error: &mut Option<DeviceError>) {
        if let Miss::Failed(e) = self {
            *device_error = Some(e);
        }
    }
}

impl<D: Device> Allocator<D> {
    /// Creates an allocator over `dev` with `cfg`.
    ///
    /// # Errors
    /// `Error::Config` if `cfg` does not validate, or if the device's granularity is not a power of
    /// two.
    pub fn new(dev: D, cfg: Config) -> Result<Self> {
        cfg.validate()?;
        let gran = dev.granularity();
        if gran == 0 || !gran.is_power_of_two() {
            return Err(Error::InvalidArgument(
                "device granularity must be a power of two",
            ));
        }
        let mut a = Allocator {
            dev,
            cfg,
            gran,
            limit: None,
            stats: Stats::default(),
            blocks: Arena::default(),
            segments: Arena::default(),
            stitched: Arena::default(),
            free: Vec::new(),
            pools: pools::Pools::default(),
            reusable: BTreeSet::new(),
            stitch_lru: BTreeSet::new(),
            parked: None,
            live: HashMap::new(),
            pending_frees: Vec::new(),
            streams: streams::Streams::default(),
            deferred: Vec::new(),
            va: va::VaSpace::default(),
            tick: 0,
            handle_size: 0,
            largest_request: 0,
            requests: 0,
            last_growth: 0,
            settled_once: false,
            live_peak: 0,
            growth_late: false,
            stitch_births: 0,
            context: 0,
            history: history::History::default(),
            borrowing: None,
        };
        if let Some(f) = a.cfg.memory_fraction {
            a.set_memory_fraction(f)?;
        }
        Ok(a)
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device's granularity in bytes.
    pub fn granularity(&self) -> u64 {
        self.gran
    }

    /// The device, for inspection (the simulated device's books, say).
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, mutably (to inject faults into a simulated device, say). Calls made through it
    /// bypass the allocator's books: use it only for devices' own test controls.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// The statistics (a copy).
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// A reference to the statistics.
    pub fn stats_ref(&self) -> &Stats {
        &self.stats
    }

    /// Sets every peak statistic to its current value.
    pub fn reset_peak_stats(&mut self) {
        self.stats.reset_peaks();
    }

    /// Zeroes accumulated statistics and event counters.
    pub fn reset_accumulated_stats(&mut self) {
        self.stats.reset_accumulated();
    }

    /// Number of live allocations.
    pub fn live_allocations(&self) -> usize {
        self.live.len()
    }

    /// Limits reserved memory to `fraction` of the device's total memory (PyTorch's
    /// `set_per_process_memory_fraction`). Memory already reserved stays; growth past the limit
    /// fails as out of memory after releasing cached memory.
    ///
    /// # Errors
    /// `Error::InvalidArgument` unless `0 < fraction <= 1`.
    pub fn set_memory_fraction(&mut self, fraction: f64) -> Result<()> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(Error::InvalidArgument("memory fraction must be in (0, 1]"));
        }
        self.limit = Some((self.dev.total_memory() as f64 * fraction) as u64);
        Ok(())
    }

    /// The fraction of the device's memory reserved memory is limited to (1.0 without a limit).
    pub fn memory_fraction(&self) -> f64 {
        match self.limit {
            Some(l) => l as f64 / self.dev.total_memory().max(1) as f64,
            None => 1.0,
        }
    }

    /// The largest free block held in cache, in bytes (PyTorch's `cacheInfo`, which cuDNN's
    /// benchmark mode asks to size its workspaces). O(lanes), plus the blocks around parked
    /// memory.
    pub fn largest_free_block(&self) -> u64 {
        self.free
            .iter()
            .flat_map(|f| [f.small.last_key_value(), f.large.last_key_value()])
            .flatten()
            .map(|(&key, _)| (key >> 64) as u64)
            .max()
            .unwrap_or(0)
            .max(self.parked_free_extent())
    }

    /// Limits reserved memory to `bytes` (or lifts the limit with `None`).
    pub fn set_reserved_limit(&mut self, bytes: Option<u64>) {
        self.limit = bytes;
    }

    /// Reserved bytes in this device's own memory (borrowed bytes are counted in reserved memory
    /// too, but against the per-peer limit, not this device's).
    pub(super) fn local_reserved(&self) -> u64 {
        (self.stats.reserved_bytes.all.current - self.stats.borrowed_bytes.current).max(0) as u64
    }

    /// Requests served since the one that last grew reserved memory, counted with it: how long
    /// the job has run without new memory (`policy::settled`).
    pub(super) fn since_growth(&self) -> u64 {
        self.requests - self.last_growth
    }

    /// What reserved memory may reach: the limit, else the device's memory.
    pub(super) fn reserved_cap(&self) -> u64 {
        self.limit.unwrap_or_else(|| self.dev.total_memory())
    }

    /// The current limit on reserved bytes, if any.
    pub fn reserved_limit(&self) -> Option<u64> {
        self.limit
    }

    /// Allocates `size` bytes for use on `stream` and returns the device address, aligned to 512
    /// bytes. The memory may be used on `stream` at once; use on other streams must be declared
    /// with [`Allocator::record_stream`].
    ///
    /// # Errors
    /// `ZeroSize`; `TooLarge` above [`MAX_REQUEST`]; `OutOfMemory` when the request fits neither in
    /// cached memory nor in what the device or the limit allows, even after releasing cached memory;
    /// `Device` when the device failed otherwise. The allocator is unchanged by a failure, except
    /// that cached memory may have been released.
    pub fn malloc(&mut self, size: u64, stream: StreamHandle) -> Result<u64> {
        self.malloc_lane(size, stream, DEFAULT_POOL)
    }

    /// `malloc` from pool `p` (an existing pool).
    fn malloc_lane(&mut self, size: u64, stream: StreamHandle, p: PoolIdx) -> Result<u64> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if size > MAX_REQUEST {
            return Err(Error::TooLarge {
                size,
                max: MAX_REQUEST,
            });
        }
        self.process_events();
        let s = self.stream_index(stream);
        let l = self.lane(p, s);
        let rounded = size.div_ceil(MIN_BLOCK_SIZE) * MIN_BLOCK_SIZE;
        let pool = policy::pool_for(rounded, &self.cfg);
        match self.place(rounded, pool, l) {
            Ok((what, lane)) => Ok(self.hand_out(what, size, rounded, lane)),
            Err(device_error) => {
                self.stats.num_ooms += 1;
                if self.history.enabled {
                    let free = self.dev.free_memory().unwrap_or(0);
                    self.record(history::HistoryAction::Oom, free, size, s, p);
                }
                match device_error {
                    Some(e) if e.kind != DeviceErrorKind::OutOfMemory => Err(Error::Device(e)),
                    _ => Err(Error::OutOfMemory(self.oom_info(size))),
                }
            }
        }
    }

    /// Returns every free physical chunk to the device, including free chunks inside segments that
    /// are partly in use, once the work that last used it has completed (the device is synchronized
    /// first), and destroys every free stitched block (PyTorch's `empty_cache`).
    ///
    /// # Errors
    /// `Device` if synchronization failed (nothing is released then). A chunk the device refuses to
    /// unmap stays cached; a handle it refuses to release is queued and retried on the next call.
    pub fn empty_cache(&mut self) -> Result<()> {
        self.release_cached().map_err(Error::Device)
    }

    /// Frees every live allocation (in address order), releases every private pool and empties
    /// the cache, then destroys the allocator's pooled events, retrying (up to 4 passes) whatever the device refused. Returns
    /// how many device objects are still held (segments, stitched blocks, address arenas, queued
    /// cleanups, events): 0 unless the device kept refusing.
    ///
    /// # Errors
    /// `Device` if the device synchronization failed on every pass.
    pub fn release_all(&mut self) -> Result<usize> {
        // Everything goes: private pools and captures too.
        self.pools.forget_users();
        let mut addrs: Vec<u64> = self.live.keys().copied().collect();
        addrs.sort_unstable();
        for a in addrs {
            self.free(a)?;
        }
        let mut last = Ok(());
        for _ in 0..4 {
            last = self.release_cached();
            if last.is_ok() {
                self.destroy_pooled_events();
            }
            self.run_deferred();
            if self.held_on_device() == 0 {
                break;
            }
        }
        last.map_err(Error::Device)?;
        Ok(self.held_on_device())
    }

    /// Device objects this allocator still holds: segments, stitched blocks, address arenas,
    /// queued cleanups and events.
    pub fn held_on_device(&self) -> usize {
        self.segments.len()
            + self.stitched.len()
            + self.va.arena_count()
            + self.deferred.len()
            + self.streams.free_events.len()
            + self.streams.outstanding
    }

    /// Cleanups the device refused and that are queued for retry.
    pub fn deferred_cleanups(&self) -> usize {
        self.deferred.len()
    }

    fn oom_info(&mut self, requested: u64) -> OomInfo {
        OomInfo {
            requested,
            reserved: self.stats.reserved_bytes.all.current as u64,
            allocated: self.stats.allocated_bytes.all.current as u64,
            device_total: self.dev.total_memory(),
            device_free: self.dev.free_memory(),
            limit: self.limit,
        }
    }

    /// Counts a driver call in the statistics and makes it.
    fn call<T>(
        &mut self,
        call: DriverCall,
        f: impl FnOnce(&mut D) -> DeviceResult<T>,
    ) -> DeviceResult<T> {
        self.stats.driver_calls.bump(call);
        match call {
            DriverCall::CreateHandle | DriverCall::Map => self.stats.num_device_alloc += 1,
            DriverCall::ReleaseHandle | DriverCall::Unmap => self.stats.num_device_free += 1,
            DriverCall::SynchronizeDevice => self.stats.num_sync_all_streams += 1,
            _ => {}
        }
        f(&mut self.dev)
    }
}

impl<D: Device> Drop for Allocator<D> {
    /// Gives everything back to the device, best effort: live allocations are freed too, since no
    /// one can free them any more.
    fn drop(&mut self) {
        let _ = self.release_all();
    }
}
