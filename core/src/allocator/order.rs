//! The allocation order of `policy.rs` walked for one request: each step asks the policy's
//! functions what to do and calls the mechanics that do it; the order itself, and why, is in the
//! policy's module documentation.

use super::policy::*;
use super::types::*;
use super::{Allocator, Miss, Served};
use crate::device::{Device, DeviceError};
use crate::stats::PoolKind;

impl<D: Device> Allocator<D> {
    /// The allocation order for `rounded` bytes in `pool` on stream `s`, with the retry after
    /// releasing cached memory (PyTorch's `release_cached_blocks` retry), and the chunk cut before
    /// a free block is handed out. `Err` carries the device failure that stopped the search, if
    /// the device failed otherwise than by running out of memory.
    pub(super) fn place(
        &mut self,
        rounded: u64,
        pool: PoolKind,
        l: LaneIdx,
    ) -> Result<(Served, LaneIdx), Option<DeviceError>> {
        self.largest_request = self.largest_request.max(rounded);
        let live = self.stats.allocated_bytes.all.current.max(0) as u64 + rounded;
        let mut device_error = None;
        let mut served = self.serve(rounded, pool, l, false, &mut device_error);
        let mut lane = l;
        let borrow =
            served.is_none() && may_borrow(&self.cfg, pool, self.lane_pool(l), self.capturing());
        // Free borrowed memory serves before a release would give it back to borrow it again.
        if borrow && device_error.is_none() {
            (served, lane) = self.reuse_borrowed(rounded, l);
        }
        // No release during a capture: it synchronizes (PyTorch skips it there too).
        if served.is_none() && device_error.is_none() && !self.capturing() {
            self.stats.num_alloc_retries += 1;
            match self.release_cached() {
                Ok(()) => served = self.serve(rounded, pool, l, true, &mut device_error),
                Err(e) => device_error = Some(e),
            }
        }
        if served.is_none() && device_error.is_none() {
            (served, lane) = self.borrow_from_pools(rounded, pool, l);
        }
        if served.is_none() && borrow {
            (served, lane) = self.borrow_from_peers(rounded, l);
            device_error = device_error.filter(|_| served.is_none());
        }
        if let Some(Served::Block(b)) = served {
            served = self.prepare_block(b, rounded, pool, lane);
        }
        self.live_peak = self.live_peak.max(live);
        served.map(|s| (s, lane)).ok_or(device_error)
    }

    /// Runs the allocation order once (module documentation). `last_resort` is set on the retry
    /// after releasing cached memory. A device failure other than running out of memory stops the
    /// search and is left in `device_error`.
    pub(super) fn serve(
        &mut self,
        rounded: u64,
        pool: PoolKind,
        l: LaneIdx,
        last_resort: bool,
        device_error: &mut Option<DeviceError>,
    ) -> Option<Served> {
        if let Some(b) = self.reclaim_parked_block(rounded, pool, l) {
            return Some(Served::Again(b));
        }
        let whole_only = self.pools.no_split(self.lane_pool(l));
        if whole_only || self.parked_free_extent() >= rounded {
            self.unpark(); // its bytes could serve: the order sees them as free
        }
        if whole_only {
            return self.serve_whole(rounded, pool, l, device_error);
        }
        if let Some(b) = self.best_fit(pool, l, rounded) {
            return Some(Served::Block(b));
        }
        if let Some(sid) = self.reclaim_parked(rounded, l) {
            return Some(Served::Stitched(sid));
        }
        self.unpark();
        let reserved = self.stats.reserved_bytes.all.current.max(0) as u64;
        let pressed = under_pressure(reserved + rounded, self.reserved_cap());
        self.handle_size = growth_handle_size(&self.cfg, self.gran, rounded, pressed);
        self.settled_once |= settled(&self.cfg, self.since_growth());
        let live = self.stats.allocated_bytes.all.current.max(0) as u64 + rounded;
        self.growth_late = grows_late(self.settled_once, live > self.live_peak, pressed);
        if pool == PoolKind::Small {
            // A growth adds to reserved memory for certain; a broken chunk only while the tensor
            // lives (llama_beam: 0.960 utilization instead of 0.985 without this).
            if let Some(b) = self.best_fit(PoolKind::Large, l, rounded) {
                return Some(Served::Block(b));
            }
            let seg = self.grow(l, PoolKind::Small, self.gran);
            let seg = seg.map_err(|m| m.report(device_error)).ok()?;
            return Some(Served::Block(self.segments[seg].first_block));
        }
        if let Some(sid) = self.reuse_stitched(rounded, l) {
            return Some(Served::Stitched(sid));
        }
        let stitchable = may_stitch(&self.cfg, rounded, last_resort);
        let floor = growth_floor(&self.cfg, self.gran, last_resort);
        let ends = ends_now(&self.cfg, self.since_growth(), pressed);
        if stitchable && stitch_before_growth(&self.cfg, last_resort) {
            if let Some(sid) = self.stitch(rounded, l, ends) {
                return Some(Served::Stitched(sid));
            }
            if stitch_growing_pays(&self.cfg, self.gran, rounded, last_resort) {
                let grow_ends = self.cfg.stitch_free_ends || pressed;
                match self.stitch_growing(rounded, floor, l, grow_ends) {
                    Ok(Some(sid)) => return Some(Served::Stitched(sid)),
                    Ok(None) | Err(Miss::NoMemory) => {}
                    Err(Miss::Failed(e)) => {
                        *device_error = Some(e);
                        return None;
                    }
                }
            }
        }
        let grown = match self.extendable(l, rounded, floor) {
            Some((seg, bytes)) => self.extend(seg, bytes),
            None => {
                let bytes = (rounded.div_ceil(self.gran) * self.gran).max(floor);
                self.grow(l, PoolKind::Large, bytes)
                    .map(|seg| self.segments[seg].first_block)
            }
        };
        match grown {
            Ok(b) if self.blocks[b].size >= rounded => Some(Served::Block(b)),
            Ok(_) => self
                .best_fit(PoolKind::Large, l, rounded)
                .map(Served::Block),
            // defrag_level 1: stitch only once the device refuses new memory.
            Err(Miss::NoMemory) if stitchable && self.cfg.defrag_level == 1 => {
                self.stitch(rounded, l, ends).map(Served::Stitched)
            }
            // Rather than fail, a large request may take a free block of the small pool.
            Err(Miss::NoMemory) if last_resort => self
                .best_fit(PoolKind::Small, l, rounded)
                .map(Served::Block),
            Err(m) => {
                m.report(device_error);
                None
            }
        }
    }
}
