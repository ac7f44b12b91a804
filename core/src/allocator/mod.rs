//! The stitching allocator for one device.
//!
//! # Algorithm
//! A request is rounded up to 512 bytes (PyTorch's `kMinBlockSize`) and served by the first of
//! these that succeeds, which is GMLake's order (ASPLOS 2024, `GMLake/src/CUDACachingAllocator.cpp`,
//! `malloc`), with its known bugs fixed (`shared/reference/gmlake-algorithm.md` §6):
//! 1. best fit among free blocks of the request's pool and stream (then, for other streams, only
//!    blocks whose last use has completed);
//! 2. reuse of a cached stitched block of at most `reuse_limit` times the request;
//! 3. stitching: mapping several whole free physical chunks back to back into a new virtual range
//!    (requests of at least `frag_limit`; `defrag_level` sets how eagerly): the driver maps whole
//!    handles only;
//! 4. new physical memory, only what the free chunks lack, then stitched with them;
//! 5. releasing cached memory (every free physical chunk, and free stitched blocks), then once more;
//! 6. an out-of-memory error with the request, reserved, allocated and free bytes.
//!
//! Requests of at most `small_size` bytes use a small pool of one-granule segments, so a tensor of
//! a few bytes does not take a whole granule. Blocks split at 512-byte boundaries and coalesce with
//! free neighbours.
//!
//! # Thread-safety
//! An `Allocator` is driven through `&mut self`; share one between threads through
//! [`crate::SharedAllocator`], which locks it.

mod arena;
mod check;
mod pool;
mod segments;
mod snapshot;
mod stitch;
mod streams;
mod types;
mod va;

use crate::config::Config;
use crate::device::{Device, DeviceError, DeviceErrorKind, DeviceResult, DriverCall, StreamHandle};
use crate::error::{Error, OomInfo, Result};
use crate::stats::{PoolKind, Stats};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use arena::Arena;
use hashbrown::HashMap;
use types::*;

pub use snapshot::{
    BlockInfo, BlockStateInfo, ChunkInfo, PieceInfo, SegmentInfo, Snapshot, StitchedInfo,
};

/// Every request is rounded up to a multiple of this many bytes (PyTorch's `kMinBlockSize`).
pub const MIN_BLOCK_SIZE: u64 = 512;

/// The largest request accepted, in bytes (1 PiB): anything larger is refused as absurd before any
/// device call.
pub const MAX_REQUEST: u64 = 1 << 50;

/// How many candidates a best-fit search examines before giving up on fences of other streams.
const FIT_PROBES: usize = 16;

/// How many cached stitched blocks a reuse examines in each of its two orders, best fit and most
/// recently freed (each costs a look-up per piece).
const REUSE_PROBES: usize = 64;

/// How many of the most recently freed cached stitched blocks a reuse looks at for ones of a
/// fitting size, so that the search stays bounded however many are cached.
const REUSE_RECENT_SCAN: usize = 4 * REUSE_PROBES;

/// Free blocks of one stream, ordered for best fit by [`fit_key`]: size, then address.
#[derive(Debug, Default)]
struct StreamPools {
    small: BTreeMap<u128, BlockId>,
    large: BTreeMap<u128, BlockId>,
}

/// The best-fit order of a free block: by size, then address, packed in one integer (one compare).
fn fit_key(size: u64, addr: u64) -> u128 {
    ((size as u128) << 64) | addr as u128
}

/// The stitching allocator of one device. See the module documentation for the algorithm.
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
    pools: Vec<StreamPools>,
    /// Free (cached) stitched blocks by size: `(size, id)`.
    reusable: BTreeSet<(u64, StitchId)>,
    /// Free stitched blocks in least-recently-freed order: `(last_free, id)`.
    stitch_lru: BTreeSet<(u64, StitchId)>,
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
}

/// What serves a request.
enum Served {
    Block(BlockId),
    Stitched(StitchId),
}

/// Why new memory could not be had.
enum Miss {
    /// The device or the limit refused memory: try stitching or releasing cached memory.
    NoMemory,
    /// The device failed otherwise: give up with this error.
    Failed(DeviceError),
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
            pools: Vec::new(),
            reusable: BTreeSet::new(),
            stitch_lru: BTreeSet::new(),
            live: HashMap::new(),
            pending_frees: Vec::new(),
            streams: streams::Streams::default(),
            deferred: Vec::new(),
            va: va::VaSpace::default(),
            tick: 0,
            handle_size: 0,
            largest_request: 0,
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

    /// Limits reserved memory to `bytes` (or lifts the limit with `None`).
    pub fn set_reserved_limit(&mut self, bytes: Option<u64>) {
        self.limit = bytes;
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
        let rounded = size.div_ceil(MIN_BLOCK_SIZE) * MIN_BLOCK_SIZE;
        let pool = if rounded <= self.cfg.small_size {
            PoolKind::Small
        } else {
            PoolKind::Large
        };

        self.largest_request = self.largest_request.max(rounded);
        let mut device_error = None;
        let mut served = self.serve(rounded, pool, s, false, &mut device_error);
        if served.is_none() && device_error.is_none() {
            // Release everything cached and try once more (PyTorch's `release_cached_blocks` retry).
            self.stats.num_alloc_retries += 1;
            match self.release_cached() {
                Ok(()) => served = self.serve(rounded, pool, s, true, &mut device_error),
                Err(e) => device_error = Some(e),
            }
        }
        if let Some(Served::Block(b)) = served {
            served = self.prepare_block(b, rounded, pool, s);
        }
        match served {
            Some(what) => Ok(self.hand_out(what, size, rounded, s)),
            None => {
                self.stats.num_ooms += 1;
                match device_error {
                    Some(e) if e.kind != DeviceErrorKind::OutOfMemory => Err(Error::Device(e)),
                    _ => Err(Error::OutOfMemory(self.oom_info(size))),
                }
            }
        }
    }

    /// Runs the allocation order once. `last_resort` is set on the retry after releasing cached
    /// memory. A device failure other than running out of memory stops the search and is left in
    /// `device_error`.
    fn serve(
        &mut self,
        rounded: u64,
        pool: PoolKind,
        s: StreamIdx,
        last_resort: bool,
        device_error: &mut Option<DeviceError>,
    ) -> Option<Served> {
        if let Some(b) = self.best_fit(pool, s, rounded) {
            return Some(Served::Block(b));
        }
        self.set_handle_size(rounded);
        if pool == PoolKind::Small {
            // Before the small pool grows, the large pool's free blocks, smallest first, and
            // among them first those the request can use without breaking a whole physical
            // chunk. A growth adds to reserved memory for certain; a broken chunk only stays out
            // of stitches while the small tensor lives. Limited to blocks that break no chunk,
            // this let llama_beam (a held-out trace) grow its small pool while 660 MiB of whole
            // chunks sat free: utilization 0.960 instead of 0.985 (`docs/design.md`, "Held-out
            // traces").
            if let Some(b) = self.best_fit(PoolKind::Large, s, rounded) {
                return Some(Served::Block(b));
            }
            return match self.grow(s, PoolKind::Small, self.gran) {
                Ok(seg) => Some(Served::Block(self.segments[seg].first_block)),
                Err(Miss::NoMemory) => None,
                Err(Miss::Failed(e)) => {
                    *device_error = Some(e);
                    None
                }
            };
        }
        if let Some(sid) = self.reuse_stitched(rounded, s) {
            return Some(Served::Stitched(sid));
        }
        let may_stitch = self.cfg.stitching && (rounded >= self.cfg.frag_limit || last_resort);
        let stitch_now = may_stitch && (self.cfg.defrag_level == 0 || last_resort);
        if stitch_now {
            if let Some(sid) = self.stitch(rounded, s) {
                return Some(Served::Stitched(sid));
            }
            // New physical memory for only what the free chunks lack, stitched with them; for
            // requests smaller than a growth, a growth that serves them alone is cheaper.
            let floor = if last_resort { 0 } else { self.min_growth() };
            if rounded > self.min_growth() || last_resort {
                match self.stitch_growing(rounded, floor, s) {
                    Ok(Some(sid)) => return Some(Served::Stitched(sid)),
                    Ok(None) | Err(Miss::NoMemory) => {}
                    Err(Miss::Failed(e)) => {
                        *device_error = Some(e);
                        return None;
                    }
                }
            }
        }
        // Grow in place where a segment's free tail can be extended, else a new segment.
        let floor = if last_resort { 0 } else { self.min_growth() };
        let grown = match self.extendable(s, rounded, floor) {
            Some((seg, bytes)) => self.extend(seg, bytes),
            None => {
                let bytes = (rounded.div_ceil(self.gran) * self.gran).max(floor);
                self.grow(s, PoolKind::Large, bytes)
                    .map(|seg| self.segments[seg].first_block)
            }
        };
        match grown {
            Ok(b) if self.blocks[b].size >= rounded => Some(Served::Block(b)),
            Ok(_) => self
                .best_fit(PoolKind::Large, s, rounded)
                .map(Served::Block),
            // defrag_level 1: stitch only once the device refuses new memory.
            Err(Miss::NoMemory) if may_stitch && self.cfg.defrag_level == 1 => {
                self.stitch(rounded, s).map(Served::Stitched)
            }
            // Rather than fail, a large request may take a free block of the small pool.
            Err(Miss::NoMemory) if last_resort => self
                .best_fit(PoolKind::Small, s, rounded)
                .map(Served::Block),
            Err(Miss::NoMemory) => None,
            Err(Miss::Failed(e)) => {
                *device_error = Some(e);
                None
            }
        }
    }

    /// Chooses the size of the physical handles a growth for a request of `rounded` bytes creates:
    /// `rounded / handle_divisions` (`large_handle_divisions` from `large_request_size` up)
    /// rounded up to the granularity, between `min_handle_size` and `max_handle_size`. Stitches
    /// map whole handles only (the driver's rule), so handles must be small enough to stay
    /// whole-free and few enough to keep driver calls down: `docs/design.md`.
    fn set_handle_size(&mut self, rounded: u64) {
        let cap = (self.cfg.max_handle_size.div_ceil(self.gran) * self.gran).max(self.gran);
        let k = if rounded >= self.cfg.large_request_size {
            self.cfg.large_handle_divisions
        } else {
            self.cfg.handle_divisions
        }
        .max(1);
        let floor =
            (self.cfg.min_handle_size.div_ceil(self.gran) * self.gran).clamp(self.gran, cap);
        self.handle_size = (rounded.div_ceil(k).div_ceil(self.gran) * self.gran).clamp(floor, cap);
    }

    /// The smallest large-pool growth in bytes, a multiple of the granularity.
    fn min_growth(&self) -> u64 {
        self.cfg.min_growth.div_ceil(self.gran) * self.gran
    }

    /// Before a free block serves a request: cut a much larger whole free chunk under it (see
    /// `split_for`). If that went wrong so badly that the chunk was dropped, another block is
    /// looked for.
    fn prepare_block(
        &mut self,
        b: BlockId,
        rounded: u64,
        pool: PoolKind,
        s: StreamIdx,
    ) -> Option<Served> {
        if !(self.cfg.stitching && self.cfg.split_chunks) || self.split_for(b, rounded) {
            return Some(Served::Block(b));
        }
        self.best_fit(pool, s, rounded)
            .or_else(|| self.best_fit(PoolKind::Large, s, rounded))
            .map(Served::Block)
    }

    /// Marks what serves a request as allocated and records the allocation.
    fn hand_out(&mut self, what: Served, size: u64, rounded: u64, s: StreamIdx) -> u64 {
        let (addr, kind, stat_pool) = match what {
            Served::Block(b) => {
                let stat_pool = self.segments[self.blocks[b].seg].pool;
                let b = self.allocate_block(b, rounded);
                (self.blocks[b].addr, LiveKind::Block(b), stat_pool)
            }
            Served::Stitched(sid) => (
                self.stitched[sid].va,
                LiveKind::Stitched(sid),
                PoolKind::Large,
            ),
        };
        let st = &mut self.stats;
        st.allocation.update(stat_pool, 1);
        st.active.update(stat_pool, 1);
        st.allocated_bytes.update(stat_pool, rounded as i64);
        st.active_bytes.update(stat_pool, rounded as i64);
        st.requested_bytes.update(stat_pool, size as i64);
        self.live.insert(
            addr,
            Live {
                kind,
                requested: size,
                rounded,
                pool: stat_pool,
                stream: s,
                extra_streams: Vec::new(),
            },
        );
        addr
    }

    /// Frees the allocation at `addr`. On its own stream the memory is reusable at once; on other
    /// streams once the work enqueued before this call has completed; if streams were added with
    /// [`Allocator::record_stream`], only once their work enqueued before this call has completed.
    ///
    /// # Errors
    /// `NotAllocated` if `addr` is not a live allocation (unknown address or double free), with no
    /// effect; `Device` if an event could not be recorded on a recorded stream and that stream
    /// could not be synchronized either, in which case the allocation stays live.
    pub fn free(&mut self, addr: u64) -> Result<()> {
        let live = self
            .live
            .remove(&addr)
            .ok_or(Error::NotAllocated { addr })?;
        if !live.extra_streams.is_empty() {
            let mut fences = Vec::with_capacity(live.extra_streams.len());
            for &x in &live.extra_streams {
                match self.fence_now(x) {
                    Ok(f) => fences.push(f),
                    Err(e) => {
                        self.live.insert(addr, live);
                        return Err(Error::Device(e));
                    }
                }
            }
            self.count_free(&live);
            self.pending_frees.push(PendingFree { live, fences });
            return Ok(());
        }
        self.count_free(&live);
        let fence = self.streams.free_fence(live.stream);
        self.finish_free(live, fence);
        Ok(())
    }

    /// Declares that the allocation at `addr` is also used on `stream` (PyTorch's
    /// `Tensor.record_stream`): its free then waits for the work enqueued on `stream` until the free.
    ///
    /// # Errors
    /// `NotAllocated` if `addr` is not a live allocation.
    pub fn record_stream(&mut self, addr: u64, stream: StreamHandle) -> Result<()> {
        let s = self.stream_index(stream);
        let live = self
            .live
            .get_mut(&addr)
            .ok_or(Error::NotAllocated { addr })?;
        if live.stream != s && !live.extra_streams.contains(&s) {
            live.extra_streams.push(s);
        }
        Ok(())
    }

    /// The requested size in bytes of the live allocation at `addr`, if there is one.
    pub fn allocation_size(&self, addr: u64) -> Option<u64> {
        self.live.get(&addr).map(|l| l.requested)
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

    /// Frees every live allocation (in address order) and empties the cache, then destroys the
    /// allocator's pooled events, retrying (up to 4 passes) whatever the device refused. Returns
    /// how many device objects are still held (segments, stitched blocks, address arenas, queued
    /// cleanups, events): 0 unless the device kept refusing.
    ///
    /// # Errors
    /// `Device` if the device synchronization failed on every pass.
    pub fn release_all(&mut self) -> Result<usize> {
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

    fn count_free(&mut self, live: &Live) {
        let st = &mut self.stats;
        st.allocation.update(live.pool, -1);
        st.allocated_bytes.update(live.pool, -(live.rounded as i64));
        st.requested_bytes
            .update(live.pool, -(live.requested as i64));
    }

    /// Returns the memory of a freed allocation to the pools, behind `fence`.
    fn finish_free(&mut self, live: Live, fence: Fence) {
        match live.kind {
            LiveKind::Block(b) => self.release_block(b, fence),
            LiveKind::Stitched(sid) => self.unclaim(sid, fence),
        }
        self.stats.active.update(live.pool, -1);
        self.stats
            .active_bytes
            .update(live.pool, -(live.rounded as i64));
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
