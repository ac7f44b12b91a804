//! Growing: new physical chunks mapped into a new segment; and shrinking: returning free chunks to
//! the device, also from segments that are partly in use.
//!
//! # Physical handle size
//! The driver maps whole handles only, and its cost of mapping and of granting access grows with
//! the number of handles in a range (about 30 us per handle on the H200), not with bytes. Small
//! handles keep free memory stitchable; large ones keep driver calls few. A growth for a request of
//! `r` bytes creates handles of `r / handle_divisions` bytes, between `min_handle_size` and
//! `max_handle_size`; and a whole free chunk much larger than a request is split before the request
//! breaks it (`split_for`). `docs/design.md` gives the measured trade-off.

use super::types::*;
use super::{Allocator, Miss};
use crate::device::{Device, DeviceErrorKind, DeviceResult, DriverCall, PhysHandle};
use crate::stats::PoolKind;
use alloc::vec::Vec;

/// A chunk is cut for a request only while the free reserved bytes are at most this many times the
/// largest request so far. A cut (about 100 us of driver calls on the H200) keeps a chunk
/// stitchable for a later request that no free block fits; while the free bytes are several
/// times any request ever made, that need is remote, and a cut made then is often paid for
/// nothing. Measured (docs/design.md, "Held-out traces"): chosen at 2 on nine traces in the seventh
/// session (1 lost utilization on two of them), then checked on six traces recorded afterwards:
/// driver time 2-13% lower on four of them, and utilization unchanged on four, 0.002 lower on
/// one (mixtral_moe) and 0.0002 higher on one.
pub(super) const SPLIT_FREE_FACTOR: u64 = 2;

impl<D: Device> Allocator<D> {
    /// Creates physical handles for `bytes` (a multiple of the granularity), at most
    /// `max_handle_size` each. On failure nothing is held.
    fn create_chunks(&mut self, bytes: u64) -> Result<Vec<(PhysHandle, u64)>, Miss> {
        let reserved = self.stats.reserved_bytes.all.current as u64;
        if self
            .limit
            .is_some_and(|l| reserved.saturating_add(bytes) > l)
        {
            return Err(Miss::NoMemory);
        }
        let max_handle = self.handle_size;
        let mut handles: Vec<(PhysHandle, u64)> = Vec::new();
        let mut left = bytes;
        while left > 0 {
            let size = left.min(max_handle);
            match self.call(DriverCall::CreateHandle, |d| d.create_handle(size)) {
                Ok(h) => handles.push((h, size)),
                Err(e) => {
                    self.undo_handles(&handles);
                    return Err(Miss::from_device(e));
                }
            }
            left -= size;
        }
        Ok(handles)
    }

    /// Maps `handles` back to back at `va` (taken by the caller) and grants access. On failure
    /// everything is undone: the range goes back, the handles are released.
    fn map_chunks(&mut self, va: u64, handles: &[(PhysHandle, u64)]) -> Result<(), Miss> {
        let bytes: u64 = handles.iter().map(|h| h.1).sum();
        let mut offset = 0;
        for &(h, size) in handles {
            if let Err(e) = self.call(DriverCall::Map, |d| d.map(va + offset, size, h, 0)) {
                self.undo_range(va, bytes, offset);
                self.undo_handles(handles);
                return Err(Miss::from_device(e));
            }
            offset += size;
        }
        if let Err(e) = self.call(DriverCall::SetAccess, |d| d.set_access(va, bytes)) {
            self.undo_range(va, bytes, bytes);
            self.undo_handles(handles);
            return Err(Miss::from_device(e));
        }
        Ok(())
    }

    /// Creates a segment of `bytes` (a multiple of the granularity) for stream `s` in `pool`, as one
    /// free block. Everything is undone if any call fails.
    pub(super) fn grow(&mut self, s: StreamIdx, pool: PoolKind, bytes: u64) -> Result<SegId, Miss> {
        let handles = self.create_chunks(bytes)?;
        let va = match self.va_alloc(bytes) {
            Ok(va) => va,
            Err(e) => {
                self.undo_handles(&handles);
                return Err(Miss::from_device(e));
            }
        };
        self.map_chunks(va, &handles)?;
        Ok(self.add_segment(va, &handles, s, pool))
    }

    /// Creates a large-pool segment of `bytes` for stream `s` at `va`, address space the caller
    /// has taken. On failure everything is undone, including `[va, va + bytes)` going back.
    pub(super) fn grow_at(&mut self, va: u64, s: StreamIdx, bytes: u64) -> Result<SegId, Miss> {
        let handles = match self.create_chunks(bytes) {
            Ok(h) => h,
            Err(m) => {
                self.va_free(va, bytes);
                return Err(m);
            }
        };
        self.map_chunks(va, &handles)?;
        Ok(self.add_segment(va, &handles, s, PoolKind::Large))
    }

    /// Registers mapped `handles` at `va` as a new segment holding one free block.
    fn add_segment(
        &mut self,
        va: u64,
        handles: &[(PhysHandle, u64)],
        s: StreamIdx,
        pool: PoolKind,
    ) -> SegId {
        let bytes: u64 = handles.iter().map(|h| h.1).sum();
        let seg = self.segments.insert(Segment {
            va,
            size: 0,
            stream: s,
            pool,
            live_chunks: 0,
            chunks: Vec::new(),
            first_block: 0,
            chunk_of: Vec::new(),
            unit_shift: 0,
        });
        self.add_chunks(seg, handles);
        let b = self.blocks.insert(Block {
            addr: va,
            size: bytes,
            seg,
            prev: None,
            next: None,
            state: BlockState::Free,
            fence: Fence::NONE,
            counted_split: false,
            whole: (u64::MAX, 0),
        });
        self.segments[seg].first_block = b;
        self.insert_free(b);
        self.stats.segment.update(pool, 1);
        seg
    }

    /// Appends mapped chunks to a segment's books and counts them as reserved.
    fn add_chunks(&mut self, seg: SegId, handles: &[(PhysHandle, u64)]) {
        let segm = &mut self.segments[seg];
        for &(handle, size) in handles {
            segm.chunks.push(Chunk {
                offset: segm.size,
                size,
                handle,
                released: false,
                stitch_maps: 0,
            });
            segm.size += size;
            segm.live_chunks += 1;
            self.stats.reserved_bytes.update(segm.pool, size as i64);
        }
        segm.reindex();
    }

    /// The large-pool segment of stream `s` to grow in place for a request of `rounded` bytes, and
    /// by how many bytes (at least `floor`): the one whose free tail saves the most, among those
    /// with free address space after them.
    pub(super) fn extendable(
        &self,
        s: StreamIdx,
        rounded: u64,
        floor: u64,
    ) -> Option<(SegId, u64)> {
        let mut best: Option<(SegId, u64)> = None;
        for (id, seg) in self.segments.iter() {
            if seg.stream != s || seg.pool != PoolKind::Large {
                continue;
            }
            let mut last = seg.first_block;
            while let Some(n) = self.blocks[last].next {
                last = n;
            }
            let blk = &self.blocks[last];
            let tail = if blk.state == BlockState::Free && self.streams.safe_for(blk.fence, s) {
                blk.size
            } else {
                0
            };
            let bytes = (rounded.saturating_sub(tail).div_ceil(self.gran) * self.gran)
                .max(floor)
                .max(self.gran);
            if best.is_none_or(|(_, b)| bytes < b) && self.va.is_free(seg.va + seg.size, bytes) {
                best = Some((id, bytes));
            }
        }
        best
    }

    /// Grows segment `seg` in place by `bytes` (a multiple of the granularity): new chunks are
    /// mapped right after its end and join its free tail (as PyTorch's expandable segments grow).
    /// Returns the free block that ends the segment. Everything is undone if any call fails.
    pub(super) fn extend(&mut self, seg: SegId, bytes: u64) -> Result<BlockId, Miss> {
        let end = self.segments[seg].va + self.segments[seg].size;
        if !self.va_take_exact(end, bytes) {
            return Err(Miss::NoMemory);
        }
        let handles = match self.create_chunks(bytes) {
            Ok(h) => h,
            Err(m) => {
                self.va_free(end, bytes);
                return Err(m);
            }
        };
        self.map_chunks(end, &handles)?;
        let mut last = self.segments[seg].first_block;
        while let Some(n) = self.blocks[last].next {
            last = n;
        }
        self.add_chunks(seg, &handles);
        if self.blocks[last].state == BlockState::Free {
            self.remove_free(last);
            self.blocks[last].size += bytes;
            self.insert_free(last);
            return Ok(last);
        }
        let b = self.blocks.insert(Block {
            addr: end,
            size: bytes,
            seg,
            prev: Some(last),
            next: None,
            state: BlockState::Free,
            fence: Fence::NONE,
            counted_split: false,
            whole: (u64::MAX, 0),
        });
        self.blocks[last].next = Some(b);
        self.insert_free(b);
        Ok(b)
    }

    /// Releases handles created by a growth that failed; a refused release is queued.
    fn undo_handles(&mut self, handles: &[(PhysHandle, u64)]) {
        for &(handle, size) in handles {
            if self
                .call(DriverCall::ReleaseHandle, |d| d.release_handle(handle))
                .is_err()
            {
                self.deferred.push(Deferred::Release {
                    handle,
                    size,
                    reserved: None,
                });
            }
        }
    }

    /// Unmaps the first `mapped` bytes of a virtual range and returns the range to its arena; a
    /// refused unmap is queued (the range stays out of use until it succeeds).
    pub(super) fn undo_range(&mut self, va: u64, size: u64, mapped: u64) {
        if mapped > 0
            && self
                .call(DriverCall::Unmap, |d| d.unmap(va, mapped))
                .is_err()
        {
            self.deferred.push(Deferred::Unmap { va, size, mapped });
            return;
        }
        if size > 0 {
            self.va_free(va, size);
        }
    }

    /// Retries queued cleanups; those refused again stay queued.
    pub(super) fn run_deferred(&mut self) {
        for job in core::mem::take(&mut self.deferred) {
            match job {
                Deferred::Unmap { va, size, mapped } => self.undo_range(va, size, mapped),
                Deferred::Release {
                    handle,
                    size,
                    reserved,
                } => {
                    if self
                        .call(DriverCall::ReleaseHandle, |d| d.release_handle(handle))
                        .is_ok()
                    {
                        if let Some(pool) = reserved {
                            self.stats.reserved_bytes.update(pool, -(size as i64));
                        }
                    } else {
                        self.deferred.push(Deferred::Release {
                            handle,
                            size,
                            reserved,
                        });
                    }
                }
            }
        }
    }

    /// PyTorch's `release_cached_blocks`, and more: synchronizes the device, finishes pending
    /// frees, destroys every free stitched block, and returns every free physical chunk.
    pub(super) fn release_cached(&mut self) -> DeviceResult<()> {
        self.call(DriverCall::SynchronizeDevice, |d| d.synchronize_device())?;
        self.after_device_sync();
        self.run_deferred();
        self.gc_stitched(true);
        self.release_free_chunks();
        self.release_idle_arenas();
        Ok(())
    }

    /// Returns each chunk that no allocated, lent or stitched block uses to the device.
    fn release_free_chunks(&mut self) {
        for seg in self.segments.ids() {
            self.coalesce_segment(seg);
            let n = self.segments[seg].chunks.len();
            for ci in 0..n {
                let segm = &self.segments[seg];
                let c = &segm.chunks[ci];
                if c.released {
                    continue;
                }
                let (start, size) = (segm.va + c.offset, c.size);
                // Still mapped by a stitched block (an active one, or one the device would not unmap).
                if c.stitch_maps > 0 {
                    continue;
                }
                let mut b = Some(segm.first_block);
                while let Some(id) = b {
                    if self.blocks[id].end() > start {
                        break;
                    }
                    b = self.blocks[id].next;
                }
                let Some(b) = b else { continue };
                let blk = &self.blocks[b];
                if blk.state == BlockState::Free && blk.addr <= start && blk.end() >= start + size {
                    self.release_chunk(seg, ci, b);
                }
            }
            if self.segments[seg].live_chunks == 0 {
                self.remove_segment(seg);
            }
        }
    }

    /// Before `rounded` bytes are placed in the free block `b`: if they would fall inside one whole
    /// free chunk at least four times their size, that chunk is cut in two (released and created
    /// again as two handles in the same address range, which costs no memory since it holds no
    /// data), so that the allocation breaks only a chunk of its own size and the rest stays
    /// stitchable. Only once the chunk's last use has completed, and only while the free reserved
    /// bytes are at most [`SPLIT_FREE_FACTOR`] times the largest request so far; any failure
    /// leaves the chunk as it was, or, if it cannot even be recreated, drops it: then `false` is
    /// returned and `b` may no longer be a free block.
    pub(super) fn split_for(&mut self, b: BlockId, rounded: u64) -> bool {
        let st = &self.stats;
        let free = (st.reserved_bytes.all.current - st.allocated_bytes.all.current).max(0) as u64;
        if free > SPLIT_FREE_FACTOR.saturating_mul(self.largest_request) {
            return true;
        }
        let g = self.gran;
        let at = self.placement(b, rounded);
        let blk = &self.blocks[b];
        let (seg_id, fence, bstart, bend) = (blk.seg, blk.fence, blk.addr, blk.end());
        let seg = &self.segments[seg_id];
        if seg.pool != PoolKind::Large {
            return true;
        }
        let ci = seg.chunk_at(at - seg.va);
        let c = &seg.chunks[ci];
        let (cstart, cend) = (seg.va + c.offset, seg.va + c.offset + c.size);
        let need = rounded.div_ceil(g) * g;
        let inside = cstart >= bstart && cend <= bend && at + rounded <= cend;
        if !inside || c.released || c.size < 4 * need {
            return true;
        }
        let mapped = c.stitch_maps > 0;
        let cut = if at == cstart {
            cstart + need
        } else {
            (at - seg.va) / g * g + seg.va
        };
        // A chunk some stitched block maps stays whole: destroying cached stitched blocks to cut it
        // costs more in later stitches than it saves (measured: docs/design.md). Checked before
        // the fence, whose check may record an event.
        if mapped || cut <= cstart || cut >= cend || !self.try_complete(fence) {
            return true;
        }
        self.split_chunk(seg_id, ci, cut)
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

    /// Turns chunk `ci` of `seg`, inside the free block `b`, into a hole and gives its handle back.
    fn release_chunk(&mut self, seg: SegId, ci: usize, b: BlockId) {
        let segm = &self.segments[seg];
        let c = &segm.chunks[ci];
        let (start, size, handle, pool) = (segm.va + c.offset, c.size, c.handle, segm.pool);
        let fence = self.blocks[b].fence;
        let hole = self.carve(b, start, size, BlockState::Hole);
        if self
            .call(DriverCall::Unmap, |d| d.unmap(start, size))
            .is_err()
        {
            // Still mapped: keep it as cached free memory.
            self.release_block(hole, fence);
            return;
        }
        let segm = &mut self.segments[seg];
        segm.chunks[ci].released = true;
        segm.live_chunks -= 1;
        if self
            .call(DriverCall::ReleaseHandle, |d| d.release_handle(handle))
            .is_ok()
        {
            self.stats.reserved_bytes.update(pool, -(size as i64));
        } else {
            self.deferred.push(Deferred::Release {
                handle,
                size,
                reserved: Some(pool),
            });
        }
    }

    /// Frees the virtual range of a segment whose chunks are all released, and forgets it.
    fn remove_segment(&mut self, seg: SegId) {
        let Some(segm) = self.segments.remove(seg) else {
            return;
        };
        let mut b = Some(segm.first_block);
        while let Some(id) = b {
            b = self.blocks[id].next;
            self.blocks.remove(id);
        }
        // Parts of the range still mapped after a refused unmap (queued with `size: 0`) now own
        // their piece of the range: it goes back to the arena when their unmap succeeds. The
        // rest goes back now. (Found by the fuzzer: freeing the whole range let a later growth
        // map over the stale mapping.)
        let (lo, hi) = (segm.va, segm.va + segm.size);
        let mut stale: Vec<(u64, u64)> = Vec::new();
        for job in self.deferred.iter_mut() {
            if let Deferred::Unmap { va, size, mapped } = job {
                if *size == 0 && *va >= lo && *va < hi {
                    *size = *mapped;
                    stale.push((*va, *mapped));
                }
            }
        }
        stale.sort_unstable();
        let mut at = lo;
        for (va, len) in stale {
            if va > at {
                self.va_free(at, va - at);
            }
            at = at.max(va + len);
        }
        if hi > at {
            self.va_free(at, hi - at);
        }
        self.stats.segment.update(segm.pool, -1);
    }
}

impl Miss {
    pub(super) fn from_device(e: crate::device::DeviceError) -> Miss {
        if e.kind == DeviceErrorKind::OutOfMemory {
            Miss::NoMemory
        } else {
            Miss::Failed(e)
        }
    }
}
