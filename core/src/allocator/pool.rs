//! Free pools per stream, best fit, split, coalesce, and page accounting.
//!
//! Blocks of a segment tile its virtual range. A free block sits in its segment's stream pool,
//! ordered by `(size, address)` for best fit (PyTorch's `BlockComparatorSize`); free large-pool
//! blocks are also indexed by address so that stitching can find the block under a page.
//!

use super::policy;
use super::types::*;
use super::Allocator;
use crate::device::Device;
use crate::stats::PoolKind;
use alloc::collections::BTreeMap;

/// Free blocks of one stream, ordered for best fit by [`fit_key`]: size, then address.
#[derive(Debug, Default)]
pub(crate) struct StreamPools {
    pub small: BTreeMap<u128, BlockId>,
    pub large: BTreeMap<u128, BlockId>,
}

impl StreamPools {
    /// The free blocks of `pool`.
    pub(super) fn of(&self, pool: PoolKind) -> &BTreeMap<u128, BlockId> {
        match pool {
            PoolKind::Small => &self.small,
            PoolKind::Large => &self.large,
        }
    }
}

/// The best-fit order of a free block: by size, then address, packed in one integer (one compare).
pub(crate) fn fit_key(size: u64, addr: u64) -> u128 {
    ((size as u128) << 64) | addr as u128
}

impl<D: Device> Allocator<D> {
    fn pool_set(&mut self, b: BlockId) -> &mut BTreeMap<u128, BlockId> {
        let seg = &self.segments[self.blocks[b].seg];
        let pools = &mut self.free[seg.lane as usize];
        match seg.pool {
            PoolKind::Small => &mut pools.small,
            PoolKind::Large => &mut pools.large,
        }
    }

    /// Puts a block into its pool as free.
    pub(super) fn insert_free(&mut self, b: BlockId) {
        let blk = &self.blocks[b];
        let (key, size) = (fit_key(blk.size, blk.addr), blk.size);
        let split = blk.prev.is_some() || blk.next.is_some();
        let seg = &self.segments[blk.seg];
        let pool = seg.pool;
        // (The small pool's blocks are handed out without looking at chunks.)
        let whole = if pool == PoolKind::Large {
            seg.whole_span(blk.addr, blk.end())
        } else {
            (u64::MAX, 0)
        };
        self.pool_set(b).insert(key, b);
        let blk = &mut self.blocks[b];
        blk.state = BlockState::Free;
        blk.counted_split = split;
        blk.whole = whole;
        if split {
            self.stats.inactive_split.update(pool, 1);
            self.stats.inactive_split_bytes.update(pool, size as i64);
        }
    }

    /// Takes a free block out of its pool (its state is left for the caller to set).
    pub(super) fn remove_free(&mut self, b: BlockId) {
        let blk = &self.blocks[b];
        let (key, size, split) = (fit_key(blk.size, blk.addr), blk.size, blk.counted_split);
        let pool = self.segments[blk.seg].pool;
        self.pool_set(b).remove(&key);
        if split {
            self.stats.inactive_split.update(pool, -1);
            self.stats.inactive_split_bytes.update(pool, -(size as i64));
        }
    }

    /// What best fit knows of the free block `b` (see [`policy::pick_fit`]).
    fn fit_view(&self, b: BlockId) -> FitView {
        let blk = &self.blocks[b];
        FitView {
            size: blk.size,
            addr: blk.addr,
            whole: blk.whole,
            small_pool: self.segments[blk.seg].pool == PoolKind::Small,
            late: self.segments[blk.seg].late,
        }
    }

    /// Best fit ([`policy::pick_fit`]) among the free blocks of `pool` in lane `t` that a request
    /// on lane `l` may use now.
    fn fit_in(&self, t: LaneIdx, pool: PoolKind, l: LaneIdx, rounded: u64) -> Option<BlockId> {
        let set = self.free[t as usize].of(pool);
        let s = self.lane_stream(l);
        let candidates = set.range(fit_key(rounded, 0)..).map(|(_, &b)| b);
        policy::pick_fit(candidates, rounded, |b| {
            let v = self.fit_view(b);
            debug_assert!(v.small_pool || self.keeps_agrees(b, rounded));
            self.streams.safe_for(self.blocks[b].fence, s).then_some(v)
        })
    }

    /// Whether the block's kept span of whole chunks agrees with a computation from the chunks
    /// (a debug check of `insert_free`'s bookkeeping).
    fn keeps_agrees(&self, b: BlockId, rounded: u64) -> bool {
        let blk = &self.blocks[b];
        let seg = &self.segments[blk.seg];
        let (addr, end) = (blk.addr, blk.end());
        let by_span =
            blk.size == rounded || addr + rounded <= blk.whole.0 || end - rounded >= blk.whole.1;
        let by_chunks = blk.size == rounded
            || seg.whole_loss(addr, end, addr, rounded) == 0
            || seg.whole_loss(addr, end, end - rounded, rounded) == 0;
        by_span == by_chunks
    }

    /// The smallest free block of at least `rounded` bytes usable by a request on lane `l`, by
    /// [`policy::pick_fit`]: first in the lane itself, then in the pool's lanes of other streams,
    /// among blocks whose last use has completed.
    pub(super) fn best_fit(&mut self, pool: PoolKind, l: LaneIdx, rounded: u64) -> Option<BlockId> {
        if let Some(b) = self.fit_in(l, pool, l, rounded) {
            return Some(b);
        }
        let p = self.lane_pool(l);
        if self.pools.pool_lanes[p as usize].len() < 2 {
            return None;
        }
        self.advance_other_streams(self.lane_stream(l));
        for i in 0..self.pools.pool_lanes[p as usize].len() {
            let t = self.pools.pool_lanes[p as usize][i];
            if t == l {
                continue;
            }
            if let Some(b) = self.fit_in(t, pool, l, rounded) {
                self.stats.num_cross_stream_reuses += 1;
                return Some(b);
            }
        }
        None
    }

    /// Splits `b` at `at` (inside it); the new upper block copies state and fence and is returned.
    /// Neither part is put into a pool.
    fn split_off(&mut self, b: BlockId, at: u64) -> BlockId {
        let blk = &self.blocks[b];
        let upper = Block {
            addr: at,
            size: blk.end() - at,
            seg: blk.seg,
            prev: Some(b),
            next: blk.next,
            state: blk.state,
            fence: blk.fence,
            counted_split: false,
            whole: (u64::MAX, 0),
        };
        let (next, seg) = (blk.next, blk.seg);
        let u = self.blocks.insert(upper);
        match next {
            Some(n) => self.blocks[n].prev = Some(u),
            None => self.segments[seg].last_block = u,
        }
        let blk = &mut self.blocks[b];
        blk.next = Some(u);
        blk.size = at - blk.addr;
        u
    }

    /// Where `rounded` bytes of the free block `b` go ([`policy::placement`]).
    pub(super) fn placement(&self, b: BlockId, rounded: u64) -> u64 {
        let blk = &self.blocks[b];
        let seg = &self.segments[blk.seg];
        let (addr, end) = (blk.addr, blk.end());
        let v = self.fit_view(b);
        policy::placement(&v, rounded, seg.chunks.len() >= 2, |at| {
            seg.whole_loss(addr, end, at, rounded)
        })
    }

    /// Hands `rounded` bytes of the free block `b` out at [`Self::placement`]; the rest stays
    /// free. Returns the allocated block.
    pub(super) fn allocate_block(&mut self, b: BlockId, rounded: u64) -> BlockId {
        let at = self.placement(b, rounded);
        self.remove_free(b);
        let blk = &self.blocks[b];
        let (addr, end) = (blk.addr, blk.end());
        let mut taken = b;
        if at > addr {
            taken = self.split_off(b, at);
            self.insert_free(b);
        }
        if at + rounded < end {
            let tail = self.split_off(taken, at + rounded);
            self.insert_free(tail);
        }
        self.blocks[taken].state = BlockState::Allocated;
        taken
    }

    /// Carves `[addr, addr + len)` out of the free block `b`, which contains it; the carved block
    /// takes `state` (lent or hole) and is returned; what is left on either side stays free.
    pub(super) fn carve(&mut self, b: BlockId, addr: u64, len: u64, state: BlockState) -> BlockId {
        self.remove_free(b);
        let mut mid = b;
        if addr > self.blocks[b].addr {
            mid = self.split_off(b, addr);
            self.insert_free(b);
        }
        if self.blocks[mid].end() > addr + len {
            let tail = self.split_off(mid, addr + len);
            self.insert_free(tail);
        }
        self.blocks[mid].state = state;
        mid
    }

    /// Returns a block (allocated, lent or a hole put back) to its pool, merging it with free
    /// neighbours whose fences allow (PyTorch's `free_block` / `try_merge_blocks`). Returns the
    /// free block it ended up in.
    pub(super) fn release_block(&mut self, b: BlockId, fence: Fence) -> BlockId {
        let ([prev, next], fence) = self.merges(b, fence);
        let mut b = b;
        if let Some(p) = prev {
            self.remove_free(p);
            self.absorb(p, b);
            b = p;
        }
        if let Some(n) = next {
            self.remove_free(n);
            self.absorb(b, n);
        }
        self.blocks[b].fence = fence;
        self.insert_free(b);
        b
    }

    /// The free neighbours (previous, next) that releasing `b` behind `fence` merges it with,
    /// those whose fences allow merging, in that order, and the fence of the merged block.
    pub(super) fn merges(&self, b: BlockId, fence: Fence) -> ([Option<BlockId>; 2], Fence) {
        let mut f = fence;
        let mut merge = |nb: Option<BlockId>| {
            let n = nb.filter(|&n| self.blocks[n].state == BlockState::Free)?;
            f = self.streams.merge(self.blocks[n].fence, f)?;
            Some(n)
        };
        let prev = merge(self.blocks[b].prev);
        let next = merge(self.blocks[b].next);
        ([prev, next], f)
    }

    /// Merges adjacent free blocks of a segment that were kept apart because different streams'
    /// work was pending on them, where their fences now allow.
    pub(super) fn coalesce_segment(&mut self, seg: SegId) {
        let mut b = Some(self.segments[seg].first_block);
        while let Some(id) = b {
            let next = self.blocks[id].next;
            if let Some(n) = next {
                if self.blocks[id].state == BlockState::Free
                    && self.blocks[n].state == BlockState::Free
                {
                    if let Some(f) = self
                        .streams
                        .merge(self.blocks[id].fence, self.blocks[n].fence)
                    {
                        self.remove_free(id);
                        self.remove_free(n);
                        self.absorb(id, n);
                        self.blocks[id].fence = f;
                        self.insert_free(id);
                        continue;
                    }
                }
            }
            b = next;
        }
    }

    /// Merges `upper` into `lower`, its lower neighbour; `upper`'s id dies.
    fn absorb(&mut self, lower: BlockId, upper: BlockId) {
        let Some(u) = self.blocks.remove(upper) else {
            return;
        };
        match u.next {
            Some(n) => self.blocks[n].prev = Some(lower),
            None => self.segments[u.seg].last_block = lower,
        }
        let l = &mut self.blocks[lower];
        l.size += u.size;
        l.next = u.next;
    }
}
