//! Cutting a whole free chunk in two: the chunk is unmapped, released and created again as two
//! handles mapped over the same range, which costs driver calls but no memory, since it holds no
//! data. When and where to cut is decided by [`super::policy::split_point`].

use super::policy;
use super::types::*;
use super::{Allocator, Served};
use crate::device::{Device, DriverCall, PhysHandle};
use crate::stats::PoolKind;
use alloc::vec::Vec;

/// The most cuts before one placement: its first chunk's, its last chunk's, and a second in a
/// chunk that held the whole placement past its first granule.
const MAX_CUTS: usize = 3;

impl<D: Device> Allocator<D> {
    /// Where the whole free chunk under a placement of `rounded` bytes at `at()`, in the free
    /// block `[bstart, bend)` of segment `seg`, would be cut ([`policy::split_allowed`],
    /// [`policy::split_point`]), with the chunk's index; `None` if it would not be.
    pub(super) fn cut_point(
        &self,
        seg_id: SegId,
        (bstart, bend): (u64, u64),
        at: impl FnOnce() -> u64,
        rounded: u64,
    ) -> Option<(u64, usize)> {
        let reserved = self.stats.reserved_bytes.all.current.max(0) as u64;
        let free = reserved.saturating_sub(self.stats.allocated_bytes.all.current.max(0) as u64);
        let pressed = self.cuts_pressed();
        let seg = &self.segments[seg_id];
        // Borrowed memory is not cut: recreating it would take the peer's memory again. A chunk
        // that may be cut lies inside the block, so the block's size bounds it: most placements
        // end here, before the placement and the chunk are looked up.
        let gate = |bytes| pressed || policy::split_allowed(free, self.largest_request, bytes);
        if seg.pool != PoolKind::Large || seg.peer.is_some() || !gate(bend - bstart) {
            return None;
        }
        let at = at();
        // The chunk holding the placement's start, then (only short of memory: the others are
        // not cut) the one holding its end.
        let first = seg.chunk_at(at - seg.va);
        let last = if pressed {
            seg.chunk_at(at + rounded - 1 - seg.va)
        } else {
            first
        };
        [first, last][..1 + usize::from(last != first)]
            .iter()
            .find_map(|&ci| {
                let c = &seg.chunks[ci];
                let (cstart, cend) = (seg.va + c.offset, seg.va + c.offset + c.size);
                let view = SplitView {
                    cstart,
                    cend,
                    inside: cstart >= bstart && cend <= bend && !c.released,
                    holds: cstart <= at && at + rounded <= cend,
                    stitch_mapped: c.stitch_maps > 0,
                    seg_va: seg.va,
                    pressed,
                };
                gate(c.size)
                    .then(|| policy::split_point(&view, at, rounded, self.gran))?
                    .map(|cut| (cut, ci))
            })
    }

    /// Whether cuts are those of memory short: every whole chunk under a placement is cut, until
    /// the job settles.
    fn cuts_pressed(&self) -> bool {
        policy::under_pressure(self.local_reserved(), self.reserved_cap())
            && !policy::settled(&self.cfg, self.since_growth())
    }

    /// Before `rounded` bytes are placed in the free block `b`: cuts the whole free chunk under
    /// the placement where [`Self::cut_point`] says so, once the chunk's last use has completed.
    /// Any failure leaves the chunk as it was, or, if it cannot even be recreated, drops it: then
    /// `false` is returned and `b` may no longer be a free block.
    pub(super) fn split_for(&mut self, b: BlockId, rounded: u64) -> bool {
        let blk = &self.blocks[b];
        let (seg_id, fence, span) = (blk.seg, blk.fence, (blk.addr, blk.end()));
        // The fence is checked last: its check may record an event.
        // Short of memory, a placement that crosses chunks may cut one at each end, and one in
        // the middle of a chunk twice (before and after it), looked up again after each cut;
        // with room, one cut. Most placements make none and end at the first look-up.
        let mut cuts = 0;
        while let Some((cut, ci)) =
            self.cut_point(seg_id, span, || self.placement(b, rounded), rounded)
        {
            if !(self.fence_passed(fence) && self.unstitch_chunk(seg_id, ci)) {
                break;
            }
            if !self.split_chunk(seg_id, ci, cut) {
                return false;
            }
            cuts += 1;
            if cuts == MAX_CUTS || !self.cuts_pressed() {
                break;
            }
        }
        true
    }

    /// Whether the chunk's last use (`fence`) is complete, waiting for it where
    /// [`policy::WAIT_TO_CUT`] says so.
    fn fence_passed(&mut self, fence: Fence) -> bool {
        if policy::WAIT_TO_CUT {
            self.wait_for(fence)
        } else {
            self.try_complete(fence)
        }
    }

    /// Destroys the cached stitched blocks that map chunk `ci` of `seg` (a whole free chunk, so
    /// no stitched block in use maps it); whether none maps it any more. O(stitched blocks ×
    /// pieces) when some do.
    fn unstitch_chunk(&mut self, seg: SegId, ci: usize) -> bool {
        if self.segments[seg].chunks[ci].stitch_maps == 0 {
            return true;
        }
        let g = self.gran;
        let mapping: Vec<StitchId> = self
            .stitched
            .iter()
            .filter(|(_, st)| {
                !st.active
                    && st.pieces.iter().any(|p| {
                        p.seg == seg && self.segments[seg].chunk_at(p.first_page as u64 * g) == ci
                    })
            })
            .map(|(sid, _)| sid)
            .collect();
        for sid in mapping {
            self.destroy_cached(sid);
        }
        self.segments[seg].chunks[ci].stitch_maps == 0
    }

    /// Replaces free chunk `ci` of `seg` by two handles split at address `cut`.
    fn split_chunk(&mut self, seg: SegId, ci: usize, cut: u64) -> bool {
        let segm = &self.segments[seg];
        let c = segm.chunks[ci].clone();
        let (start, pool) = (segm.va + c.offset, segm.pool);
        if self
            .call(DriverCall::Unmap, |d| d.unmap(start, c.size))
            .is_err()
        {
            return true;
        }
        if self
            .call(DriverCall::ReleaseHandle, |d| d.release_handle(c.handle))
            .is_err()
        {
            // Still held: map it back as it was.
            return self.remap_or_drop(seg, ci, &[(c.handle, c.size)]);
        }
        let sizes = [cut - start, start + c.size - cut];
        let mut made: Vec<(PhysHandle, u64)> = Vec::new();
        for &size in &sizes {
            match self.call(DriverCall::CreateHandle, |d| d.create_handle(size)) {
                Ok(h) => made.push((h, size)),
                Err(_) => break,
            }
        }
        if made.len() < 2 {
            self.undo_handles(&made);
            // Recreate the chunk whole; if even that fails, it is gone.
            return match self.call(DriverCall::CreateHandle, |d| d.create_handle(c.size)) {
                Ok(h) => self.remap_or_drop(seg, ci, &[(h, c.size)]),
                Err(_) => {
                    self.drop_chunk(seg, ci, pool);
                    false
                }
            };
        }
        let kept = self.remap_or_drop(seg, ci, &made);
        if kept {
            self.stats.num_chunk_splits += 1;
        }
        kept
    }

    /// Maps `handles` back to back over chunk `ci`'s range and makes them its chunks; if that
    /// fails, the handles are released and the chunk is dropped (`false`).
    fn remap_or_drop(&mut self, seg: SegId, ci: usize, handles: &[(PhysHandle, u64)]) -> bool {
        let segm = &self.segments[seg];
        let c = segm.chunks[ci].clone();
        let (start, pool) = (segm.va + c.offset, segm.pool);
        let mut off = 0;
        let mut ok = true;
        for &(h, size) in handles {
            if self
                .call(DriverCall::Map, |d| d.map(start + off, size, h, 0))
                .is_err()
            {
                ok = false;
                break;
            }
            off += size;
        }
        if ok
            && self
                .call(DriverCall::SetAccess, |d| d.set_access(start, c.size))
                .is_err()
        {
            ok = false;
        }
        if !ok {
            if off > 0
                && self
                    .call(DriverCall::Unmap, |d| d.unmap(start, off))
                    .is_err()
            {
                // The range stays mapped: queue its unmap (owned by the segment, `size: 0`, so
                // the range goes back to the arena only with the segment and only once unmapped)
                // and the handles' release.
                self.deferred.push(Deferred::Unmap {
                    va: start,
                    size: 0,
                    mapped: off,
                });
                for &(handle, size) in handles {
                    self.deferred.push(Deferred::Release {
                        handle,
                        size,
                        reserved: None,
                        peer: None,
                    });
                }
                self.drop_chunk(seg, ci, pool);
                return false;
            }
            self.undo_handles(handles);
            self.drop_chunk(seg, ci, pool);
            return false;
        }
        let segm = &mut self.segments[seg];
        let mut offset = c.offset;
        let new: Vec<Chunk> = handles
            .iter()
            .map(|&(handle, size)| {
                let ch = Chunk {
                    offset,
                    size,
                    handle,
                    released: false,
                    stitch_maps: 0,
                };
                offset += size;
                ch
            })
            .collect();
        segm.live_chunks += new.len() as u32 - 1;
        segm.chunks.splice(ci..=ci, new);
        segm.reindex();
        true
    }

    /// Chunk `ci` of `seg` has no physical memory any more (its handle is gone): its free range
    /// becomes a hole and it stops counting as reserved.
    fn drop_chunk(&mut self, seg: SegId, ci: usize, pool: PoolKind) {
        let segm = &mut self.segments[seg];
        let c = segm.chunks[ci].clone();
        segm.chunks[ci].released = true;
        segm.live_chunks -= 1;
        let start = segm.va + c.offset;
        let mut b = Some(segm.first_block);
        while let Some(id) = b {
            let blk = &self.blocks[id];
            if blk.end() > start {
                break;
            }
            b = blk.next;
        }
        if let Some(b) = b {
            self.carve(b, start, c.size, BlockState::Hole);
        }
        self.stats.reserved_bytes.update(pool, -(c.size as i64));
    }

    /// Before a free block serves a request: cut a much larger whole free chunk under it
    /// ([`split_point`]). If that went so wrong that the chunk was dropped, another block is
    /// looked for.
    pub(super) fn prepare_block(
        &mut self,
        b: BlockId,
        rounded: u64,
        pool: PoolKind,
        l: LaneIdx,
    ) -> Option<Served> {
        let cut =
            self.cfg.stitching && self.cfg.split_chunks && !self.pools.no_split(self.lane_pool(l));
        if !cut || self.split_for(b, rounded) {
            return Some(Served::Block(b));
        }
        self.best_fit(pool, l, rounded)
            .or_else(|| self.best_fit(PoolKind::Large, l, rounded))
            .map(Served::Block)
    }
}
