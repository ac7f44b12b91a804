//! Memory pools and lanes.
//!
//! Besides the default pool, an allocator holds *private pools* (PyTorch's `MempoolId_t`: the
//! memory of CUDA graphs and of `torch.cuda.MemPool`). A captured graph replays into the addresses
//! it was given during capture, also after the tensors there were freed, so memory of a private
//! pool serves only allocations directed to that pool, and is neither given back to the device
//! nor lent to another pool's stitched block while the pool is in use. Stitching works inside a
//! pool. A pool is counted by its users ([`Allocator::create_or_incref_pool`],
//! [`Allocator::release_pool`]); once none is left, its free memory goes back to the device, at
//! once and again whenever cached memory is released, until nothing of it is left.
//!
//! A *lane* is the free blocks of one pool on one stream: what best fit searches. Segments belong
//! to a lane; lanes are created on first use and never removed (a few bytes each).
//!
//! While a CUDA graph is being captured ([`Allocator::begin_capture`]), the allocator records no
//! event, queries none and synchronizes nothing, as such calls are illegal or would enter the
//! graph: frees that must wait for other streams' work wait until the capture ends.

use super::types::*;
use super::{policy, Allocator, Served};
use crate::device::{Device, DeviceError, StreamHandle};
use crate::error::{Error, Result};
use crate::stats::PoolKind;
use alloc::vec::Vec;
use hashbrown::HashMap;

/// A memory pool as PyTorch names it (`MempoolId_t`, a pair of integers); `(0, 0)` is the default
/// pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub u64, pub u64);

impl PoolId {
    /// The default pool.
    pub const DEFAULT: PoolId = PoolId(0, 0);
}

/// One pool's books.
#[derive(Clone, Debug)]
pub(crate) struct PoolState {
    pub id: PoolId,
    /// Users (graphs, `MemPool` objects, allocation contexts); 0 once released.
    pub use_count: u32,
    /// Live allocations served from it.
    pub live: u64,
    /// Its blocks are handed out whole and each growth is a segment of its own (PyTorch's
    /// `MemPool(no_split=True)`, for memory registered with a communication library).
    pub no_split: bool,
    /// Requests of the default pool that find no memory may take its free blocks.
    pub use_on_oom: bool,
}

/// One lane: a pool's free blocks on one stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lane {
    pub pool: PoolIdx,
    pub stream: StreamIdx,
}

/// The pools and lanes of an allocator.
#[derive(Debug)]
pub(crate) struct Pools {
    /// By index; `None` once a released pool has nothing left.
    pub list: Vec<Option<PoolState>>,
    index: HashMap<PoolId, PoolIdx>,
    pub lanes: Vec<Lane>,
    lane_index: HashMap<(PoolIdx, StreamIdx), LaneIdx>,
    /// The lane found last (lanes are never removed): most requests ask for the same again.
    last_lane: Option<((PoolIdx, StreamIdx), LaneIdx)>,
    /// The lanes of each pool, for the search over other streams.
    pub pool_lanes: Vec<Vec<LaneIdx>>,
    /// Captures underway: while non-zero, no event is recorded or queried and nothing is
    /// synchronized.
    pub capturing: u32,
}

impl Default for Pools {
    fn default() -> Self {
        let mut index = HashMap::new();
        index.insert(PoolId::DEFAULT, DEFAULT_POOL);
        Pools {
            list: alloc::vec![Some(PoolState {
                id: PoolId::DEFAULT,
                use_count: 1,
                live: 0,
                no_split: false,
                use_on_oom: false,
            })],
            index,
            lanes: Vec::new(),
            lane_index: HashMap::new(),
            last_lane: None,
            pool_lanes: alloc::vec![Vec::new()],
            capturing: 0,
        }
    }
}

impl Pools {
    /// The index of pool `id`, if it exists.
    pub fn find(&self, id: PoolId) -> Option<PoolIdx> {
        if id == PoolId::DEFAULT {
            return Some(DEFAULT_POOL); // every request outside captures: no look-up
        }
        self.index.get(&id).copied()
    }

    /// The pool at `p`.
    pub fn get(&self, p: PoolIdx) -> Option<&PoolState> {
        self.list.get(p as usize)?.as_ref()
    }

    /// Whether pool `p`'s memory must stay where it is: a private pool some user still holds.
    pub fn pinned(&self, p: PoolIdx) -> bool {
        p != DEFAULT_POOL && self.get(p).is_some_and(|s| s.use_count > 0)
    }

    /// Ends every capture and drops every user of every private pool (the allocator is being
    /// torn down).
    pub fn forget_users(&mut self) {
        self.capturing = 0;
        for s in self.list.iter_mut().skip(1).flatten() {
            s.use_count = 0;
        }
    }

    /// Forgets the id of a pool that is gone (a new pool may take the id again).
    fn forget(&mut self, id: PoolId) {
        self.index.remove(&id);
    }

    /// Adds a pool and returns its index.
    pub fn add(&mut self, state: PoolState) -> PoolIdx {
        let p = self.list.len() as PoolIdx;
        self.index.insert(state.id, p);
        self.list.push(Some(state));
        self.pool_lanes.push(Vec::new());
        p
    }

    /// Whether pool `p` hands out whole blocks only.
    pub fn no_split(&self, p: PoolIdx) -> bool {
        self.get(p).is_some_and(|s| s.no_split)
    }
}

impl<D: Device> Allocator<D> {
    /// The lane of pool `p` on stream `s`, made on first use. O(1).
    pub(super) fn lane(&mut self, p: PoolIdx, s: StreamIdx) -> LaneIdx {
        if let Some((key, l)) = self.pools.last_lane {
            if key == (p, s) {
                return l;
            }
        }
        if let Some(&l) = self.pools.lane_index.get(&(p, s)) {
            self.pools.last_lane = Some(((p, s), l));
            return l;
        }
        let l = self.pools.lanes.len() as LaneIdx;
        self.pools.lanes.push(Lane { pool: p, stream: s });
        self.pools.lane_index.insert((p, s), l);
        self.pools.pool_lanes[p as usize].push(l);
        self.free.push(Default::default());
        l
    }

    /// The stream of lane `l`.
    pub(super) fn lane_stream(&self, l: LaneIdx) -> StreamIdx {
        self.pools.lanes[l as usize].stream
    }

    /// The pool of lane `l`.
    pub(super) fn lane_pool(&self, l: LaneIdx) -> PoolIdx {
        self.pools.lanes[l as usize].pool
    }

    /// The id of pool `p` (the default pool's if it is gone).
    pub(super) fn pool_id(&self, p: PoolIdx) -> PoolId {
        self.pools.get(p).map_or(PoolId::DEFAULT, |s| s.id)
    }

    pub(super) fn pool_index(&self, id: PoolId) -> Result<PoolIdx> {
        self.pools
            .find(id)
            .filter(|&p| self.pools.get(p).is_some())
            .ok_or(Error::InvalidArgument("no memory pool of this id"))
    }

    /// Allocates `size` bytes for `stream` from pool `pool` (as [`Allocator::malloc`], which uses
    /// the default pool).
    ///
    /// # Errors
    /// As `malloc`; `InvalidArgument` for a pool that does not exist or was released by all its
    /// users.
    pub fn malloc_in(&mut self, size: u64, stream: StreamHandle, pool: PoolId) -> Result<u64> {
        let p = self.pool_index(pool)?;
        if !(p == DEFAULT_POOL || self.pools.pinned(p)) {
            return Err(Error::InvalidArgument("the memory pool was released"));
        }
        self.malloc_lane(size, stream, p)
    }

    /// Creates private pool `id` with one user, or adds a user to it (PyTorch's
    /// `createOrIncrefPool`; `beginAllocateToPool` adds a user too).
    ///
    /// # Errors
    /// `InvalidArgument` for the default pool's id `(0, 0)`.
    pub fn create_or_incref_pool(&mut self, id: PoolId) -> Result<()> {
        if id == PoolId::DEFAULT {
            return Err(Error::InvalidArgument("(0, 0) is the default pool"));
        }
        if let Some(state) = self
            .pools
            .find(id)
            .and_then(|p| self.pools.list[p as usize].as_mut())
        {
            state.use_count += 1;
            return Ok(());
        }
        self.pools.add(PoolState {
            id,
            use_count: 1,
            live: 0,
            no_split: false,
            use_on_oom: false,
        });
        Ok(())
    }

    /// The users of pool `id` (0 if it does not exist or was released).
    pub fn pool_use_count(&self, id: PoolId) -> u32 {
        self.pools
            .find(id)
            .and_then(|p| self.pools.get(p))
            .map_or(0, |s| s.use_count)
    }

    /// Removes a user of private pool `id` (PyTorch's `releasePool`). When none is left, its free
    /// memory goes back to the device (after the device has finished the work that used it), and
    /// the rest as soon as its allocations are freed and cached memory is released.
    ///
    /// # Errors
    /// `InvalidArgument` for the default pool or a pool without users; `Device` if the
    /// synchronization failed (the pool is released all the same; its memory goes back later).
    pub fn release_pool(&mut self, id: PoolId) -> Result<()> {
        let p = self.pool_index(id)?;
        let state = self.pools.list[p as usize]
            .as_mut()
            .filter(|s| s.use_count > 0 && p != DEFAULT_POOL)
            .ok_or(Error::InvalidArgument("the memory pool has no users"))?;
        state.use_count -= 1;
        if state.use_count == 0 && self.pools.capturing == 0 {
            self.release_cached().map_err(Error::Device)?;
        }
        Ok(())
    }

    /// Makes pool `id` hand out whole blocks and grow by one segment per allocation (PyTorch's
    /// `MemPool(no_split=True)`).
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown pool or the default pool.
    pub fn set_pool_no_split(&mut self, id: PoolId) -> Result<()> {
        self.private_pool_mut(id)?.no_split = true;
        Ok(())
    }

    /// Lets requests of the default pool that find no memory take free blocks of pool `id`
    /// (PyTorch's `MemPool(use_on_oom=True)`).
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown pool or the default pool.
    pub fn set_pool_use_on_oom(&mut self, id: PoolId, on: bool) -> Result<()> {
        self.private_pool_mut(id)?.use_on_oom = on;
        Ok(())
    }

    fn private_pool_mut(&mut self, id: PoolId) -> Result<&mut PoolState> {
        let p = self.pool_index(id)?;
        self.pools.list[p as usize]
            .as_mut()
            .filter(|_| p != DEFAULT_POOL)
            .ok_or(Error::InvalidArgument("not a private pool"))
    }

    /// The addresses of the live allocations served from pool `id`, sorted. O(live allocations).
    pub fn pool_live_allocations(&self, id: PoolId) -> Vec<u64> {
        let Some(p) = self.pools.find(id) else {
            return Vec::new();
        };
        let mut v: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, l)| l.owner == p)
            .map(|(&a, _)| a)
            .collect();
        v.sort_unstable();
        v
    }

    /// A CUDA graph capture begins: until the matching [`Allocator::end_capture`], no event is
    /// recorded or queried and nothing is synchronized (such calls are illegal during capture or
    /// would be captured into the graph). Captures nest.
    pub fn begin_capture(&mut self) {
        self.pools.capturing += 1;
    }

    /// A capture ended: frees that waited for it record their events now.
    pub fn end_capture(&mut self) {
        self.pools.capturing = self.pools.capturing.saturating_sub(1);
        if self.pools.capturing == 0 {
            self.finish_capture_deferred_frees();
        }
    }

    /// Whether a capture is underway.
    pub fn capturing(&self) -> bool {
        self.pools.capturing > 0
    }

    /// Returns the free memory of pool `id` to the device (PyTorch's `emptyCache(mempool_id)`): of
    /// the default pool, all cached memory but that of private pools in use ([`Self::empty_cache`]);
    /// of a private pool, its free memory once all its users released it, and nothing while any
    /// remains (a graph may replay into it); of an unknown pool (never made, or released and
    /// forgotten), nothing.
    ///
    /// # Errors
    /// `Device` if the synchronization failed.
    pub fn empty_pool_cache(&mut self, id: PoolId) -> Result<()> {
        // A pool released by all its users and already forgotten holds nothing to release
        // (PyTorch's `~MemPool` releases the pool, then empties its cache).
        let Ok(p) = self.pool_index(id) else {
            return Ok(());
        };
        let only = (p != DEFAULT_POOL).then_some(p);
        if only.is_some() && self.pools.pinned(p) {
            return Ok(());
        }
        self.release_cached_of(only).map_err(Error::Device)
    }

    /// Forgets released private pools with nothing left: no segment, stitched block or live
    /// allocation. O(segments + stitched blocks).
    pub(super) fn forget_empty_pools(&mut self) {
        let mut used = alloc::vec![false; self.pools.list.len()];
        for (_, seg) in self.segments.iter() {
            used[self.lane_pool(seg.lane) as usize] = true;
        }
        for (_, st) in self.stitched.iter() {
            used[st.owner as usize] = true;
        }
        for (p, is_used) in used.into_iter().enumerate().skip(1) {
            let slot = &mut self.pools.list[p];
            if slot
                .as_ref()
                .is_some_and(|s| s.use_count == 0 && s.live == 0 && !is_used)
            {
                if let Some(s) = slot.take() {
                    self.pools.forget(s.id);
                }
            }
        }
    }
}

/// The orders PyTorch's pool settings ask for (`MemPool(use_on_oom=True)`, `MemPool(no_split=True)`):
/// part of the allocation order of `policy.rs` (its steps 6 and `no_split`), kept here with the
/// pools they serve.
impl<D: Device> Allocator<D> {
    /// Where a request of the default pool that found no memory may still be served: a free
    /// block of a private pool marked `use_on_oom` (PyTorch's `MemPool(use_on_oom=True)`: memory
    /// set aside for a job that lets others use it rather than fail). Returns it with the lane of
    /// that pool, which owns the memory. O(pools × FIT_PROBES).
    pub(super) fn borrow_from_pools(
        &mut self,
        rounded: u64,
        pool: PoolKind,
        l: LaneIdx,
    ) -> (Option<Served>, LaneIdx) {
        if self.lane_pool(l) != DEFAULT_POOL {
            return (None, l);
        }
        let s = self.lane_stream(l);
        for p in 1..self.pools.list.len() as PoolIdx {
            if self
                .pools
                .get(p)
                .is_some_and(|st| st.use_on_oom && st.use_count > 0)
            {
                let lane = self.lane(p, s);
                if let Some(b) = self.best_fit(pool, lane, rounded) {
                    return (Some(Served::Block(b)), lane);
                }
            }
        }
        (None, l)
    }

    /// The order for a pool that hands out whole blocks (`no_split`): the smallest free block that
    /// fits, else a segment of exactly the request. No stitching, no growth in place, no chunk
    /// cut: each allocation is a segment of its own, as memory registered with a communication
    /// library must be.
    pub(super) fn serve_whole(
        &mut self,
        rounded: u64,
        pool: PoolKind,
        l: LaneIdx,
        device_error: &mut Option<DeviceError>,
    ) -> Option<Served> {
        if let Some(b) = self.best_fit(pool, l, rounded) {
            return Some(Served::Block(b));
        }
        self.handle_size = policy::handle_size(&self.cfg, self.gran, rounded);
        self.grow(l, pool, rounded.div_ceil(self.gran) * self.gran)
            .map(|seg| Served::Block(self.segments[seg].first_block))
            .map_err(|m| m.report(device_error))
            .ok()
    }
}
