//! Cached stitched blocks: handing one out (its bytes are *lent* out of the free blocks under its
//! first pages, so that no primitive allocation lands there), taking it back when freed (it stays
//! cached with its mappings), reusing it for a later request if the pages under that request's
//! bytes are free again (no driver call), and destroying it (GMLake's StitchFree), never while
//! work that used it may run. Which blocks to reuse and when to destroy them is decided in
//! `policy.rs`.

use super::parked::Parked;
use super::policy;
use super::types::*;
use super::Allocator;
use crate::device::{Device, DriverCall};
use alloc::vec::Vec;

impl<D: Device> Allocator<D> {
    /// Counts pieces of a stitched block on their chunks (`up`) or uncounts them.
    pub(super) fn count_stitch_maps(&mut self, pieces: &[Piece], up: bool) {
        for p in pieces {
            let segm = &mut self.segments[p.seg];
            let ci = segm.chunk_at(p.first_page as u64 * self.gran);
            let c = &mut segm.chunks[ci];
            if up {
                c.stitch_maps += 1;
            } else {
                c.stitch_maps -= 1;
            }
        }
    }

    /// The free block of segment `seg` containing `[addr, addr + len)`, if stream `s` may follow
    /// its last use. Walks the segment's blocks: this serves stitching only, never the fast path.
    pub(super) fn free_block_under(
        &self,
        seg: SegId,
        addr: u64,
        len: u64,
        l: LaneIdx,
    ) -> Option<BlockId> {
        // Memory of one pool never serves another, except borrowed memory (`peer.rs`), which
        // the default pool's stitched blocks map.
        let (mine, theirs) = (self.lane_pool(self.segments[seg].lane), self.lane_pool(l));
        if mine != theirs && !(self.segments[seg].peer.is_some() && theirs == DEFAULT_POOL) {
            return None;
        }
        let mut b = Some(self.segments[seg].first_block);
        while let Some(id) = b {
            let blk = &self.blocks[id];
            if blk.end() > addr {
                let ok = blk.state == BlockState::Free
                    && blk.addr <= addr
                    && blk.end() >= addr + len
                    && self.streams.safe_for(blk.fence, self.lane_stream(l));
                return ok.then_some(id);
            }
            b = blk.next;
        }
        None
    }

    /// Hands the inactive stitched block `sid` out for `bytes` on stream `s`: lends the bytes it
    /// will use out of the free blocks under its first pages. `false`, changing nothing, if some
    /// of those bytes are not free for `s`.
    pub(super) fn claim(&mut self, sid: StitchId, bytes: u64, l: LaneIdx) -> bool {
        self.unpark();
        let g = self.gran;
        let runs: Vec<(SegId, u64, u64)> = self.stitched[sid]
            .spans(bytes, g)
            .map(|(p, skip, len)| {
                let at = self.segments[p.seg].va + p.first_page as u64 * g + skip;
                (p.seg, at, len)
            })
            .collect();
        if runs
            .iter()
            .any(|&(seg, addr, len)| self.free_block_under(seg, addr, len, l).is_none())
        {
            return false;
        }
        let st = &mut self.stitched[sid];
        let (owner, size, last_free) = (st.owner, st.servable(), st.last_free);
        st.active = true;
        self.reusable.remove(&(owner, size, sid));
        self.stitch_lru.remove(&(last_free, sid));
        let mut lent = Vec::with_capacity(runs.len());
        for (seg, addr, len) in runs {
            if let Some(b) = self.free_block_under(seg, addr, len, l) {
                lent.push(self.carve(b, addr, len, BlockState::Lent(sid)));
            }
        }
        self.stitched[sid].lent = lent;
        true
    }

    /// A freed stitched block: it stays cached, and its lent bytes go back to their pools when
    /// `unpark` is next called ([`policy::reclaims_parked`]).
    pub(super) fn unclaim(&mut self, sid: StitchId, fence: Fence) {
        self.unpark();
        self.tick += 1;
        let st = &mut self.stitched[sid];
        st.active = false;
        st.fence = fence;
        st.last_free = self.tick;
        self.parked = Some(Parked::Stitched(sid));
    }

    /// Reuses a cached stitched block of lane `l`'s pool for `rounded` bytes: the first in
    /// [`policy::reuse_order`] whose first `rounded` bytes lie on pages free for the lane (each
    /// check is a look-up per piece). No driver call.
    pub(super) fn reuse_stitched(&mut self, rounded: u64, l: LaneIdx) -> Option<StitchId> {
        if self.reusable.is_empty() {
            return None;
        }
        let max = policy::reuse_max(rounded, &self.cfg);
        let p = self.lane_pool(l);
        let fitting = self.reusable.range((p, rounded, 0)..(p + 1, 0, 0));
        let fitting = fitting.map(|&(_, size, sid)| (size, self.stitched[sid].born, sid));
        let cands = policy::reuse_order(fitting, max);
        for sid in cands {
            if self.claim(sid, rounded, l) {
                self.stats.num_stitch_reuses += 1;
                return Some(sid);
            }
        }
        None
    }

    /// Garbage-collects free stitched blocks past [`policy::over_stitch_bounds`].
    pub(super) fn enforce_stitch_bounds(&mut self) {
        if self.over_stitch_bounds() {
            self.gc_stitched(false);
        }
    }

    fn over_stitch_bounds(&self) -> bool {
        policy::over_stitch_bounds(
            (
                self.stats.stitched_bytes.current as u64,
                self.stats.stitch_mappings.current as u64,
            ),
            &self.cfg,
            self.dev.total_memory(),
        )
    }

    /// Destroys free stitched blocks, least recently freed first, whose last use has completed
    /// and whose pool is not a private pool in use: all of them with `all`, else until back
    /// within bounds. Returns whether any was destroyed.
    pub(super) fn gc_stitched(&mut self, all: bool) -> bool {
        let order: Vec<StitchId> = self.stitch_lru.iter().map(|&(_, sid)| sid).collect();
        let mut any = false;
        for sid in order {
            if !all && !self.over_stitch_bounds() {
                break;
            }
            // A private pool in use keeps its cached blocks: a graph may replay into them.
            if self.destroy_cached(sid) {
                any = true;
            }
        }
        any
    }

    /// Destroys the free stitched block `sid` if its last use has completed and no private pool
    /// in use keeps it; whether it was.
    pub(super) fn destroy_cached(&mut self, sid: StitchId) -> bool {
        if self.pools.pinned(self.stitched[sid].owner) {
            return false;
        }
        let fence = self.stitched[sid].fence;
        self.try_complete(fence) && self.destroy_stitched(sid)
    }

    /// Unmaps and frees a free stitched block and forgets it (a segment sharing the start of its
    /// range stays). `false` if the device refused to unmap (it then stays cached).
    fn destroy_stitched(&mut self, sid: StitchId) -> bool {
        if self.parked == Some(Parked::Stitched(sid)) {
            self.unpark();
        }
        let st = &self.stitched[sid];
        let own = st.own.clone();
        let headroom = (st.va + st.size, st.headroom);
        if let Some(&(va, len)) = own.first() {
            if self.call(DriverCall::Unmap, |d| d.unmap(va, len)).is_err() {
                return false;
            }
            self.va_free(va, len);
        }
        // Past the first part there is no going back: a refusal is queued and retried.
        for &(va, len) in own.iter().skip(1) {
            self.undo_range(va, len, len);
        }
        self.drop_headroom(headroom.0, headroom.1);
        let Some(st) = self.stitched.remove(sid) else {
            return false;
        };
        self.count_stitch_maps(&st.pieces, false);
        self.reusable.remove(&(st.owner, st.servable(), sid));
        self.stitch_lru.remove(&(st.last_free, sid));
        self.stats.stitched_bytes.update(-(st.size as i64));
        self.stats.stitched_blocks.update(-1);
        self.stats.stitch_mappings.update(-(st.pieces.len() as i64));
        self.stats.num_stitch_gc += 1;
        true
    }
}
