//! Shrinking: returning free physical chunks to the device, also from segments that are partly
//! in use (a released chunk's range becomes a hole), and cleanups the device refused, queued and
//! retried so that nothing leaks.
//!
//! Release is linear in the chunks and blocks held: one walk per segment over its chunks and its
//! blocks in address order.

use super::history::HistoryAction;
use super::types::*;
use super::Allocator;
use crate::device::{Device, DeviceResult, DriverCall, PhysHandle};
use crate::stats::PoolKind;
use alloc::vec::Vec;

impl<D: Device> Allocator<D> {
    /// Releases handles created by a growth that failed; a refused release is queued.
    pub(super) fn undo_handles(&mut self, handles: &[(PhysHandle, u64)]) {
        for &(handle, size) in handles {
            if self
                .call(DriverCall::ReleaseHandle, |d| d.release_handle(handle))
                .is_err()
            {
                self.deferred.push(Deferred::Release {
                    handle,
                    size,
                    reserved: None,
                    peer: None,
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
                    peer,
                } => {
                    if self
                        .call(DriverCall::ReleaseHandle, |d| d.release_handle(handle))
                        .is_ok()
                    {
                        if let Some(pool) = reserved {
                            self.unreserve(pool, size, peer);
                        }
                    } else {
                        self.deferred.push(Deferred::Release {
                            handle,
                            size,
                            reserved,
                            peer,
                        });
                    }
                }
            }
        }
    }

    /// PyTorch's `release_cached_blocks`, and more: synchronizes the device, finishes pending
    /// frees, destroys every free stitched block, and returns every free physical chunk, of
    /// every pool but private pools in use (a graph may still replay into their memory). Nothing
    /// during a capture, where synchronizing is illegal.
    pub(super) fn release_cached(&mut self) -> DeviceResult<()> {
        self.release_cached_of(None)
    }

    /// [`Self::release_cached`], for pool `only` alone where given.
    pub(super) fn release_cached_of(&mut self, only: Option<PoolIdx>) -> DeviceResult<()> {
        self.unpark();
        if self.capturing() {
            return Ok(());
        }
        self.call(DriverCall::SynchronizeDevice, |d| d.synchronize_device())?;
        self.after_device_sync();
        self.run_deferred();
        self.gc_stitched(true);
        self.release_free_chunks(only);
        self.release_idle_arenas();
        self.forget_empty_pools();
        Ok(())
    }

    /// Returns each chunk that no allocated, lent or stitched block uses to the device (of pool
    /// `only`, or of every pool but private pools in use), and forgets segments left with none. One walk per segment over its chunks and blocks together,
    /// both in address order: O(chunks + blocks) plus a pool update per chunk released.
    fn release_free_chunks(&mut self, only: Option<PoolIdx>) {
        // Borrowed memory goes back first: a peer is waiting for it.
        let mut order = self.segments.ids();
        if self.stats.borrowed_bytes.current > 0 {
            order.sort_by_key(|&s| self.segments[s].peer.is_none());
        }
        for seg in order {
            let p = self.lane_pool(self.segments[seg].lane);
            if self.pools.pinned(p) || only.is_some_and(|o| o != p) {
                continue;
            }
            self.coalesce_segment(seg);
            // The first block that ends past the current chunk's start.
            let mut b = Some(self.segments[seg].first_block);
            for ci in 0..self.segments[seg].chunks.len() {
                let segm = &self.segments[seg];
                let c = &segm.chunks[ci];
                // Released already, or still mapped by a stitched block (an active one, or one
                // the device would not unmap).
                if c.released || c.stitch_maps > 0 {
                    continue;
                }
                let (start, size) = (segm.va + c.offset, c.size);
                while let Some(id) = b {
                    if self.blocks[id].end() > start {
                        break;
                    }
                    b = self.blocks[id].next;
                }
                let Some(id) = b else { break };
                let blk = &self.blocks[id];
                if blk.state == BlockState::Free && blk.addr <= start && blk.end() >= start + size {
                    b = Some(self.release_chunk(seg, ci, id));
                }
            }
            if self.segments[seg].live_chunks == 0 {
                self.remove_segment(seg);
            }
        }
    }

    /// Turns chunk `ci` of `seg`, inside the free block `b`, into a hole and gives its handle back.
    /// Returns the block now holding the chunk's range (the hole, or the free block it stayed in
    /// if the device refused to unmap it).
    fn release_chunk(&mut self, seg: SegId, ci: usize, b: BlockId) -> BlockId {
        let segm = &self.segments[seg];
        let c = &segm.chunks[ci];
        let (start, size, handle, pool, peer) =
            (segm.va + c.offset, c.size, c.handle, segm.pool, segm.peer);
        let fence = self.blocks[b].fence;
        let hole = self.carve(b, start, size, BlockState::Hole);
        if self
            .call(DriverCall::Unmap, |d| d.unmap(start, size))
            .is_err()
        {
            // Still mapped: keep it as cached free memory.
            return self.release_block(hole, fence);
        }
        let segm = &mut self.segments[seg];
        segm.chunks[ci].released = true;
        segm.live_chunks -= 1;
        let lane = segm.lane;
        let (stream, owner) = (self.lane_stream(lane), self.lane_pool(lane));
        self.record(HistoryAction::SegmentUnmap, start, size, stream, owner);
        if self
            .call(DriverCall::ReleaseHandle, |d| d.release_handle(handle))
            .is_ok()
        {
            self.unreserve(pool, size, peer);
        } else {
            self.deferred.push(Deferred::Release {
                handle,
                size,
                reserved: Some(pool),
                peer,
            });
        }
        hole
    }

    /// Takes `size` bytes of a released handle out of `reserved_bytes` (and out of the borrowed
    /// bytes where it was `peer`'s memory).
    pub(super) fn unreserve(&mut self, pool: PoolKind, size: u64, peer: Option<u32>) {
        self.stats.reserved_bytes.update(pool, -(size as i64));
        if let Some(p) = peer {
            self.stats.borrow(p, -(size as i64));
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
        // their piece of the range: it goes back to the arena when their unmap succeeds, since a
        // later growth given that piece would map over the stale mapping. The rest goes back now.
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
