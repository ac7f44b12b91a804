//! Growing: new physical chunks mapped into a new segment; and shrinking: returning free chunks to
//! the device, also from segments that are partly in use.
//!
//! # Physical handle size
//! The driver's cost of mapping and of granting access grows with the number of handles in a
//! range (about 26 us per handle on the H200: `shared/reference/h200-measurements.md`), not with
//! bytes. So a growth of `n` bytes is one handle when `n <= max_handle_size` (default 1 GiB), and
//! `ceil(n / max_handle_size)` handles otherwise; growth is only ever by what a request lacks, so
//! handles are sized to demand. Stitching maps granule-aligned *parts* of handles, so large
//! handles do not limit what can be stitched. They limit what `empty_cache` can return: a handle
//! goes back only when all of it is free. `docs/design.md` gives the measured trade-off.

use super::types::*;
use super::{Allocator, Miss};
use crate::device::{Device, DeviceErrorKind, DeviceResult, DriverCall, PhysHandle};
use crate::stats::PoolKind;
use alloc::vec;
use alloc::vec::Vec;

impl<D: Device> Allocator<D> {
    /// Creates a segment of `bytes` (a multiple of the granularity) for stream `s` in `pool`, as one
    /// free block. Everything is undone if any call fails.
    pub(super) fn grow(&mut self, s: StreamIdx, pool: PoolKind, bytes: u64) -> Result<SegId, Miss> {
        let reserved = self.stats.reserved_bytes.all.current as u64;
        if self
            .limit
            .is_some_and(|l| reserved.saturating_add(bytes) > l)
        {
            return Err(Miss::NoMemory);
        }
        let max_handle = (self.cfg.max_handle_size.div_ceil(self.gran) * self.gran).max(self.gran);
        let mut sizes = Vec::new();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(max_handle);
            sizes.push(n);
            left -= n;
        }
        let mut handles: Vec<(PhysHandle, u64)> = Vec::with_capacity(sizes.len());
        for &size in &sizes {
            match self.call(DriverCall::CreateHandle, |d| d.create_handle(size)) {
                Ok(h) => handles.push((h, size)),
                Err(e) => {
                    self.undo_handles(&handles);
                    return Err(Miss::from_device(e));
                }
            }
        }
        let va = match self.va_alloc(bytes) {
            Ok(va) => va,
            Err(e) => {
                self.undo_handles(&handles);
                return Err(Miss::from_device(e));
            }
        };
        let mut offset = 0;
        for &(h, size) in &handles {
            if let Err(e) = self.call(DriverCall::Map, |d| d.map(va + offset, size, h, 0)) {
                self.undo_range(va, bytes, offset);
                self.undo_handles(&handles);
                return Err(Miss::from_device(e));
            }
            offset += size;
        }
        if let Err(e) = self.call(DriverCall::SetAccess, |d| d.set_access(va, bytes)) {
            self.undo_range(va, bytes, bytes);
            self.undo_handles(&handles);
            return Err(Miss::from_device(e));
        }

        let mut chunks = Vec::with_capacity(handles.len());
        let mut offset = 0;
        for &(handle, size) in &handles {
            chunks.push(Chunk {
                offset,
                size,
                handle,
                released: false,
            });
            offset += size;
        }
        let pages = match pool {
            PoolKind::Large => vec![Page::default(); (bytes / self.gran) as usize],
            PoolKind::Small => Vec::new(),
        };
        let seg = self.segments.insert(Segment {
            va,
            size: bytes,
            stream: s,
            pool,
            live_chunks: chunks.len() as u32,
            chunks,
            pages,
            first_block: 0,
        });
        let b = self.blocks.insert(Block {
            addr: va,
            size: bytes,
            seg,
            prev: None,
            next: None,
            state: BlockState::Free,
            fence: Fence::NONE,
            counted_split: false,
        });
        self.segments[seg].first_block = b;
        self.insert_free(b);
        self.stats.reserved_bytes.update(pool, bytes as i64);
        self.stats.segment.update(pool, 1);
        Ok(seg)
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
        self.va_free(va, size);
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
                if !segm.pages.is_empty() {
                    let first = (c.offset / self.gran) as usize;
                    let last = first + (size / self.gran) as usize;
                    if segm.pages[first..last]
                        .iter()
                        .any(|p| !p.aliases.is_empty() || p.users > 0)
                    {
                        continue;
                    }
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
        self.undo_range(segm.va, segm.size, 0);
        self.stats.segment.update(segm.pool, -1);
    }
}

impl Miss {
    fn from_device(e: crate::device::DeviceError) -> Miss {
        if e.kind == DeviceErrorKind::OutOfMemory {
            Miss::NoMemory
        } else {
            Miss::Failed(e)
        }
    }
}
