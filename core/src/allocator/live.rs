//! Allocations: handing memory out, taking it back when freed (at once on its own stream, after
//! other streams' work where `record_stream` named them), and making an allocation again at a
//! given address (restoring a private pool).

use super::history::HistoryAction;
use super::types::*;
use super::{Allocator, Served};
use crate::device::{Device, StreamHandle};
use crate::error::{Error, Result};
use crate::stats::PoolKind;
use alloc::vec::Vec;

impl<D: Device> Allocator<D> {
    /// Marks what serves a request on lane `l` as allocated and records the allocation. A pool
    /// that hands out whole blocks takes the block as it is.
    pub(super) fn hand_out(&mut self, what: Served, size: u64, rounded: u64, l: LaneIdx) -> u64 {
        match what {
            Served::Block(b) => {
                let rounded = if self.pools.no_split(self.lane_pool(l)) {
                    self.blocks[b].size
                } else {
                    rounded
                };
                let stat_pool = self.segments[self.blocks[b].seg].pool;
                let b = self.allocate_block(b, rounded);
                let addr = self.blocks[b].addr;
                self.register_live(addr, LiveKind::Block(b), stat_pool, size, rounded, l)
            }
            Served::Again(b) => {
                let (addr, stat_pool) =
                    (self.blocks[b].addr, self.segments[self.blocks[b].seg].pool);
                self.register_live(addr, LiveKind::Block(b), stat_pool, size, rounded, l)
            }
            Served::Stitched(sid) => {
                let addr = self.stitched[sid].addr();
                let kind = LiveKind::Stitched(sid);
                self.register_live(addr, kind, PoolKind::Large, size, rounded, l)
            }
        }
    }

    /// Books a live allocation of `size` bytes (`rounded` held) at `addr`, served on lane `l`.
    fn register_live(
        &mut self,
        addr: u64,
        kind: LiveKind,
        stat_pool: PoolKind,
        size: u64,
        rounded: u64,
        l: LaneIdx,
    ) -> u64 {
        self.requests += 1;
        let st = &mut self.stats;
        st.allocation.update(stat_pool, 1);
        st.active.update(stat_pool, 1);
        st.allocated_bytes.update(stat_pool, rounded as i64);
        st.active_bytes.update(stat_pool, rounded as i64);
        st.requested_bytes.update(stat_pool, size as i64);
        let owner = self.lane_pool(l);
        if let Some(p) = self.pools.list[owner as usize].as_mut() {
            p.live += 1;
        }
        let stream = self.lane_stream(l);
        self.record(HistoryAction::Alloc, addr, size, stream, owner);
        self.live.insert(
            addr,
            Live {
                kind,
                requested: size,
                rounded,
                pool: stat_pool,
                owner,
                stream,
                context: self.context,
                extra_streams: Vec::new(),
            },
        );
        addr
    }

    /// Makes an allocation of `requested` bytes again at exactly `addr` on lane `l`: a cached
    /// stitched block of the lane's pool at that address, or the free bytes there in a segment of
    /// that pool. `None`, changing nothing, if that memory is not free. O(segments + blocks of the
    /// segment): for restoring a pool, not the hot path.
    pub(super) fn claim_exact(&mut self, addr: u64, requested: u64, l: LaneIdx) -> Option<()> {
        let rounded = requested.div_ceil(super::MIN_BLOCK_SIZE) * super::MIN_BLOCK_SIZE;
        self.unpark();
        let p = self.lane_pool(l);
        let cached = self
            .stitched
            .iter()
            .find(|(_, st)| st.addr() == addr && st.owner == p && !st.active)
            .map(|(sid, _)| sid);
        if let Some(sid) = cached {
            if !self.claim(sid, rounded, l) {
                return None;
            }
            self.register_live(
                addr,
                LiveKind::Stitched(sid),
                PoolKind::Large,
                requested,
                rounded,
                l,
            );
            return Some(());
        }
        let (seg, _) = self.segments.iter().find(|(_, sg)| {
            sg.va <= addr && addr < sg.va + sg.size && self.lane_pool(sg.lane) == p
        })?;
        let b = self.free_block_under(seg, addr, rounded, l)?;
        let stat_pool = self.segments[seg].pool;
        let taken = self.carve(b, addr, rounded, BlockState::Allocated);
        self.register_live(
            addr,
            LiveKind::Block(taken),
            stat_pool,
            requested,
            rounded,
            l,
        );
        Some(())
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
        self.record(
            HistoryAction::FreeRequested,
            addr,
            live.requested,
            live.stream,
            live.owner,
        );
        if !live.extra_streams.is_empty() && self.capturing() {
            // No event may be recorded during a capture: the free waits for its end.
            self.count_free(&live);
            self.pending_frees.push(PendingFree {
                live,
                fences: Vec::new(),
                awaiting_capture: true,
            });
            return Ok(());
        }
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
            self.pending_frees.push(PendingFree {
                live,
                fences,
                awaiting_capture: false,
            });
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

    fn count_free(&mut self, live: &Live) {
        if let Some(p) = self.pools.list[live.owner as usize].as_mut() {
            p.live -= 1;
        }
        let st = &mut self.stats;
        st.allocation.update(live.pool, -1);
        st.allocated_bytes.update(live.pool, -(live.rounded as i64));
        st.requested_bytes
            .update(live.pool, -(live.requested as i64));
    }

    /// Returns the memory of a freed allocation to the pools, behind `fence`.
    pub(super) fn finish_free(&mut self, live: Live, fence: Fence) {
        let addr = match live.kind {
            LiveKind::Block(b) => self.blocks[b].addr,
            LiveKind::Stitched(sid) => self.stitched[sid].addr(),
        };
        self.record(
            HistoryAction::FreeCompleted,
            addr,
            live.requested,
            live.stream,
            live.owner,
        );
        match live.kind {
            LiveKind::Block(b) => self.park_block(b, fence),
            LiveKind::Stitched(sid) => self.unclaim(sid, fence),
        }
        self.stats.active.update(live.pool, -1);
        self.stats
            .active_bytes
            .update(live.pool, -(live.rounded as i64));
    }
}

impl<D: Device> Allocator<D> {
    /// After a capture: frees that waited for it record their events now (those the device
    /// refuses wait for the next try).
    pub(super) fn finish_capture_deferred_frees(&mut self) {
        for i in 0..self.pending_frees.len() {
            if !self.pending_frees[i].awaiting_capture {
                continue;
            }
            let extra = self.pending_frees[i].live.extra_streams.clone();
            let fences: core::result::Result<Vec<Fence>, _> =
                extra.iter().map(|&x| self.fence_now(x)).collect();
            if let Ok(fences) = fences {
                let p = &mut self.pending_frees[i];
                p.fences = fences;
                p.awaiting_capture = false;
            }
        }
    }
}
