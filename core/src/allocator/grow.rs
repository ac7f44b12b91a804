//! Growing: new physical chunks, mapped into a new segment or at the end of an existing one.
//!
//! How large a growth is and how it is cut into handles is decided in `policy.rs`
//! ([`super::policy::handle_size`], [`super::policy::extension_bytes`]); this file only makes
//! the driver calls and keeps the books. Every function undoes what it did if a call fails.

use super::history::HistoryAction;
use super::policy;
use super::types::*;
use super::{Allocator, Miss};
use crate::device::{Device, DriverCall, PhysHandle};
use crate::stats::PoolKind;
use alloc::vec::Vec;

impl<D: Device> Allocator<D> {
    /// Creates physical handles for `bytes` (a multiple of the granularity), at most
    /// `max_handle_size` each. On failure nothing is held.
    ///
    /// While borrowing (`self.borrowing`), the handles are created in the peer's memory, within
    /// the per-peer limit instead of this device's.
    fn create_chunks(&mut self, bytes: u64) -> Result<Vec<(PhysHandle, u64)>, Miss> {
        let over = match self.borrowing {
            Some((p, _)) => self.stats.borrowed_from(p).saturating_add(bytes) > self.peer_limit(),
            None => self
                .limit
                .is_some_and(|l| self.local_reserved().saturating_add(bytes) > l),
        };
        if over {
            return Err(Miss::NoMemory);
        }
        let max_handle = self.handle_size;
        let peer = self.borrowing.map(|b| b.0);
        let mut handles: Vec<(PhysHandle, u64)> = Vec::new();
        let mut left = bytes;
        while left > 0 {
            let size = left.min(max_handle);
            let made = match peer {
                Some(p) => self.call(DriverCall::CreateHandle, |d| d.create_peer_handle(p, size)),
                None => self.call(DriverCall::CreateHandle, |d| d.create_handle(size)),
            };
            match made {
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
    pub(super) fn grow(&mut self, l: LaneIdx, pool: PoolKind, bytes: u64) -> Result<SegId, Miss> {
        let handles = self.create_chunks(bytes)?;
        let va = match self.va_alloc(bytes) {
            Ok(va) => va,
            Err(e) => {
                self.undo_handles(&handles);
                return Err(Miss::from_device(e));
            }
        };
        self.map_chunks(va, &handles)?;
        Ok(self.add_segment(va, &handles, l, pool))
    }

    /// Creates a large-pool segment of `bytes` for stream `s` at `va`, address space the caller
    /// has taken. On failure everything is undone, including `[va, va + bytes)` going back.
    pub(super) fn grow_at(&mut self, va: u64, l: LaneIdx, bytes: u64) -> Result<SegId, Miss> {
        let handles = self.back_range(va, bytes)?;
        Ok(self.add_segment(va, &handles, l, PoolKind::Large))
    }

    /// Creates handles for `bytes` and maps them at `va`, address space the caller has taken. On
    /// failure everything is undone, including `[va, va + bytes)` going back.
    fn back_range(&mut self, va: u64, bytes: u64) -> Result<Vec<(PhysHandle, u64)>, Miss> {
        let handles = match self.create_chunks(bytes) {
            Ok(h) => h,
            Err(m) => {
                self.va_free(va, bytes);
                return Err(m);
            }
        };
        self.map_chunks(va, &handles)?;
        Ok(handles)
    }

    /// Registers mapped `handles` at `va` as a new segment holding one free block.
    fn add_segment(
        &mut self,
        va: u64,
        handles: &[(PhysHandle, u64)],
        l: LaneIdx,
        pool: PoolKind,
    ) -> SegId {
        let bytes: u64 = handles.iter().map(|h| h.1).sum();
        // Borrowed memory goes to the borrowing lane, whatever lane asked for it.
        let (l, peer) = match self.borrowing {
            Some((p, lb)) => (lb, Some(p)),
            None => (l, None),
        };
        let seg = self.segments.insert(Segment {
            va,
            size: 0,
            lane: l,
            pool,
            late: self.growth_late,
            live_chunks: 0,
            chunks: Vec::new(),
            first_block: 0,
            last_block: 0,
            chunk_of: Vec::new(),
            unit_shift: 0,
            peer,
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
        self.segments[seg].last_block = b;
        self.insert_free(b);
        self.stats.segment.update(pool, 1);
        self.record_growth(l, va, bytes);
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
            if let Some(p) = segm.peer {
                self.stats.borrow(p, size as i64);
            }
        }
        segm.reindex();
        self.last_growth = self.requests;
    }

    /// The large-pool segment of stream `s` to grow in place for a request of `rounded` bytes, and
    /// by how many bytes (at least `floor`): the one needing the smallest growth
    /// ([`policy::extension_bytes`]) among those with free address space after them and memory of
    /// the kind this growth makes (late or not: [`policy::grows_late`]). O(segments).
    pub(super) fn extendable(&self, l: LaneIdx, rounded: u64, floor: u64) -> Option<(SegId, u64)> {
        let mut best: Option<(SegId, u64)> = None;
        for (id, seg) in self.segments.iter() {
            if seg.lane != l || seg.pool != PoolKind::Large || seg.late != self.growth_late {
                continue;
            }
            let blk = &self.blocks[seg.last_block];
            let tail = if blk.state == BlockState::Free
                && self.streams.safe_for(blk.fence, self.lane_stream(l))
            {
                blk.size
            } else {
                0
            };
            let bytes = policy::extension_bytes(rounded, tail, floor, self.gran);
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
        let handles = self.back_range(end, bytes)?;
        self.record_growth(self.segments[seg].lane, end, bytes);
        let last = self.segments[seg].last_block;
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
        self.segments[seg].last_block = b;
        self.insert_free(b);
        Ok(b)
    }

    /// Records `bytes` of new memory mapped at `va` for lane `l` in the history
    /// (PyTorch's `segment_map`, as expandable segments record their growth).
    fn record_growth(&mut self, l: LaneIdx, va: u64, bytes: u64) {
        let (stream, owner) = (self.lane_stream(l), self.lane_pool(l));
        self.record(HistoryAction::SegmentMap, va, bytes, stream, owner);
    }
}
