//! Parked memory: what was freed last, kept as it is until the next request, which takes it back
//! at once where the allocation order would hand out exactly that memory again
//! ([`policy::reclaims_parked`]). Anything else that looks for free memory returns it to the pools
//! first (`unpark`), so every placement is what it would be without parking. One thing is parked
//! at a time: a freed stitched block with its lent blocks, or a freed block not yet merged with
//! its free neighbours.

use super::policy;
use super::pool::fit_key;
use super::types::*;
use super::Allocator;
use crate::device::Device;
use crate::stats::PoolKind;

/// What is parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parked {
    /// A freed stitched block that keeps its lent blocks; in neither `reusable` nor
    /// `stitch_lru` until returned.
    Stitched(StitchId),
    /// A freed block, still marked allocated, and the fence of its free.
    Block(BlockId, Fence),
}

impl<D: Device> Allocator<D> {
    /// Parks the block `b` freed behind `fence`, returning to the pools what was parked before.
    pub(super) fn park_block(&mut self, b: BlockId, fence: Fence) {
        self.unpark();
        self.parked = Some(Parked::Block(b, fence));
    }

    /// Returns what is parked to the pools: a stitched block's lent blocks (the block is cached
    /// as any freed stitched block), or a block (merged with its free neighbours as a free
    /// would).
    pub(super) fn unpark(&mut self) {
        match self.parked.take() {
            None => {}
            Some(Parked::Block(b, fence)) => {
                self.release_block(b, fence);
            }
            Some(Parked::Stitched(sid)) => {
                let st = &mut self.stitched[sid];
                let (fence, lent) = (st.fence, core::mem::take(&mut st.lent));
                self.reusable.insert((st.owner, st.servable(), sid));
                self.stitch_lru.insert((st.last_free, sid));
                for b in lent {
                    self.release_block(b, fence);
                }
            }
        }
    }

    /// Whether block `id` is free memory: free, or parked (a parked block or a parked stitched
    /// block's lent block).
    pub(super) fn free_or_parked(&self, id: BlockId) -> bool {
        let blk = &self.blocks[id];
        match (blk.state, self.parked) {
            (BlockState::Free, _) => true,
            (BlockState::Lent(s), Some(Parked::Stitched(p))) => s == p,
            (_, Some(Parked::Block(p, _))) => p == id,
            _ => false,
        }
    }

    /// The largest free block the parked memory would form with its free neighbours once
    /// returned (for [`Allocator::largest_free_block`] and `policy.rs`'s order); 0 if nothing is
    /// parked. O(blocks in those runs).
    pub(super) fn parked_free_extent(&self) -> u64 {
        let extent = |b: BlockId| {
            let mut first = b;
            while let Some(p) = self.blocks[first].prev.filter(|&p| self.free_or_parked(p)) {
                first = p;
            }
            let (mut bytes, mut at) = (0, Some(first));
            while let Some(x) = at.filter(|&x| self.free_or_parked(x)) {
                bytes += self.blocks[x].size;
                at = self.blocks[x].next;
            }
            bytes
        };
        match self.parked {
            None => 0,
            Some(Parked::Block(b, _)) => extent(b),
            Some(Parked::Stitched(sid)) => {
                let lent = &self.stitched[sid].lent;
                lent.iter().map(|&b| extent(b)).max().unwrap_or(0)
            }
        }
    }

    /// Hands the parked stitched block out again for `rounded` bytes on lane `l` where
    /// [`policy::reclaims_parked`] says it serves them and the reuse step would take it first
    /// (`reuse_stitched`: of the pool's cached blocks of `rounded` to [`policy::reuse_max`]
    /// bytes it comes first, and its pages, with the free blocks they would merge with, are
    /// free for the stream). Its lent blocks are still its own: no change to the pools.
    pub(super) fn reclaim_parked(&mut self, rounded: u64, l: LaneIdx) -> Option<StitchId> {
        let Some(Parked::Stitched(sid)) = self.parked else {
            return None;
        };
        let (st, s, p) = (&self.stitched[sid], self.lane_stream(l), self.lane_pool(l));
        let lent: u64 = st.lent.iter().map(|&b| self.blocks[b].size).sum();
        if !policy::reclaims_parked(lent, rounded) || st.servable() < rounded {
            return None;
        }
        let safe = |b: Option<BlockId>| {
            b.map(|b| &self.blocks[b])
                .is_none_or(|b| b.state != BlockState::Free || self.streams.safe_for(b.fence, s))
        };
        let first = st.owner == p
            && st.servable() <= policy::reuse_max(rounded, &self.cfg)
            && self
                .reusable
                .range((p, rounded, 0)..(p, st.servable(), sid))
                .next()
                .is_none();
        let free_for_s = self.streams.safe_for(st.fence, s)
            && st
                .lent
                .iter()
                .all(|&b| safe(self.blocks[b].prev) && safe(self.blocks[b].next));
        if !(first && free_for_s) {
            return None;
        }
        self.parked = None;
        self.stitched[sid].active = true;
        self.stats.num_stitch_reuses += 1;
        Some(sid)
    }

    /// Hands the parked block out again for `rounded` bytes of pool kind `pool` on lane `l`
    /// where the order would hand out exactly it: [`policy::reclaims_parked`] says so; the free
    /// block its release would make (with its free neighbours, as `release_block` merges them) is
    /// the first candidate of best fit on the lane, usable by the stream and keeping whole chunks
    /// whole ([`policy::pick_fit`]); no chunk would be cut for it (`split_for`'s first test); and
    /// [`policy::placement`] puts the request where the block is. No change to the pools.
    /// O(log free blocks).
    pub(super) fn reclaim_parked_block(
        &mut self,
        rounded: u64,
        pool: PoolKind,
        l: LaneIdx,
    ) -> Option<BlockId> {
        let Some(Parked::Block(b, fence)) = self.parked else {
            return None;
        };
        let blk = &self.blocks[b];
        let seg = &self.segments[blk.seg];
        // Late memory goes last in best fit: whether it would go first is not known here.
        if !policy::reclaims_parked(blk.size, rounded)
            || seg.late
            || seg.lane != l
            || seg.pool != pool
            || self.pools.no_split(self.lane_pool(l))
        {
            return None;
        }
        // The free block release_block would make of it.
        let (merged, f) = self.merges(b, fence);
        let start = merged[0].map_or(blk.addr, |p| self.blocks[p].addr);
        let end = merged[1].map_or(blk.end(), |n| self.blocks[n].end());
        let size = end - start;
        let small = pool == PoolKind::Small;
        let v = FitView {
            size,
            addr: start,
            whole: if small {
                (u64::MAX, 0)
            } else {
                seg.whole_span(start, end)
            },
            small_pool: small,
            late: seg.late,
        };
        // No other block sorts before it (the neighbours go into it).
        let first = self.free[l as usize]
            .of(pool)
            .range(fit_key(rounded, 0)..fit_key(size, start))
            .take(3)
            .all(|(_, x)| merged.contains(&Some(*x)));
        if !(first
            && v.keeps_whole_chunks(rounded)
            && self.streams.safe_for(f, self.lane_stream(l)))
        {
            return None;
        }
        let at = policy::placement(&v, rounded, seg.chunks.len() >= 2, |at| {
            seg.whole_loss(start, end, at, rounded)
        });
        let cuts = self.cfg.stitching && self.cfg.split_chunks;
        if at != blk.addr
            || (cuts
                && self
                    .cut_point(blk.seg, (start, end), || at, rounded)
                    .is_some())
        {
            return None;
        }
        self.parked = None;
        self.blocks[b].fence = f;
        Some(b)
    }
}
