//! A full consistency check of the allocator's books, for tests and debugging.

use super::types::*;
use super::Allocator;
use crate::device::Device;
use crate::stats::{PoolKind, MAX_PEERS};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

impl<D: Device> Allocator<D> {
    /// Checks every internal invariant and the statistics against a recount: blocks tile their
    /// segments; exactly the free blocks are in the pools; stitched blocks map live chunks and sit
    /// in the right sets; lent blocks belong to active stitched blocks; byte and count statistics match the live allocations and held chunks; and no two
    /// live allocations share a byte of physical memory. O(everything held): for tests.
    ///
    /// # Errors
    /// A description of the first inconsistency found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let g = self.gran;
        let mut free_blocks = 0usize;
        let mut reserved = [0i64; 2];
        let mut borrowed = [0u64; MAX_PEERS];
        let pidx = |p: PoolKind| (p == PoolKind::Large) as usize;
        for (sid, seg) in self.segments.iter() {
            let mut at = seg.va;
            let mut prev = None;
            let mut b = Some(seg.first_block);
            while let Some(id) = b {
                let blk = &self.blocks[id];
                if blk.addr != at || blk.seg != sid || blk.prev != prev || blk.size == 0 {
                    return Err(format!(
                        "segment {sid}: block {id} breaks the tiling at {at:#x}"
                    ));
                }
                if blk.state == BlockState::Free {
                    free_blocks += 1;
                    let pools = &self.free[seg.lane as usize];
                    let set = if seg.pool == PoolKind::Small {
                        &pools.small
                    } else {
                        &pools.large
                    };
                    if set.get(&super::pool::fit_key(blk.size, blk.addr)) != Some(&id) {
                        return Err(format!("free block {id} is not in its pool"));
                    }
                }
                if let BlockState::Lent(st) = blk.state {
                    if !self.stitched.get(st).is_some_and(|s| {
                        (s.active || self.free_or_parked(id)) && s.lent.contains(&id)
                    }) {
                        return Err(format!(
                            "lent block {id} does not belong to active stitched block {st}"
                        ));
                    }
                }
                at = blk.end();
                prev = Some(id);
                b = blk.next;
            }
            if prev != Some(seg.last_block) {
                return Err(format!("segment {sid}: its last block is not {prev:?}"));
            }
            if at != seg.va + seg.size {
                return Err(format!(
                    "segment {sid}: blocks end at {at:#x}, not at its end"
                ));
            }
            let mut offset = 0;
            for (ci, c) in seg.chunks.iter().enumerate() {
                if c.offset != offset
                    || seg.chunk_at(c.offset) != ci
                    || seg.chunk_at(c.offset + c.size - 1) != ci
                {
                    return Err(format!(
                        "segment {sid}: chunk {ci} misplaced or mis-indexed"
                    ));
                }
                offset += c.size;
            }
            if seg.chunk_at(seg.size) != seg.chunks.len() {
                return Err(format!("segment {sid}: chunk index past its end"));
            }
            let live = seg.chunks.iter().filter(|c| !c.released).count() as u32;
            if live != seg.live_chunks {
                return Err(format!("segment {sid}: live chunk count is off"));
            }
            let held = seg
                .chunks
                .iter()
                .filter(|c| !c.released)
                .map(|c| c.size)
                .sum::<u64>();
            reserved[pidx(seg.pool)] += held as i64;
            if let Some(p) = seg.peer {
                borrowed[p as usize] += held;
                if self.pool_id(self.lane_pool(seg.lane)) != super::peer::BORROW_POOL {
                    return Err(format!(
                        "segment {sid}: borrowed memory outside the borrowing pool"
                    ));
                }
            }
        }
        for d in &self.deferred {
            if let Deferred::Release {
                size,
                reserved: Some(pool),
                peer,
                ..
            } = d
            {
                reserved[pidx(*pool)] += *size as i64;
                if let Some(p) = peer {
                    borrowed[*p as usize] += *size;
                }
            }
        }
        if borrowed != self.stats.borrowed_by_peer
            || borrowed.iter().sum::<u64>() as i64 != self.stats.borrowed_bytes.current
        {
            return Err(format!(
                "borrowed bytes {:?} ({}) != borrowed chunks {borrowed:?}",
                self.stats.borrowed_by_peer, self.stats.borrowed_bytes.current
            ));
        }
        let pooled: usize = self
            .free
            .iter()
            .map(|p| p.small.len() + p.large.len())
            .sum();
        if pooled != free_blocks {
            return Err(format!(
                "{pooled} blocks in pools, {free_blocks} free blocks in segments"
            ));
        }
        if self.stats.reserved_bytes.small_pool.current != reserved[0]
            || self.stats.reserved_bytes.large_pool.current != reserved[1]
        {
            return Err(format!(
                "reserved_bytes {:?} != held chunks {reserved:?}",
                self.stats.reserved_bytes
            ));
        }

        // Stitched blocks: pieces on live chunks, pool membership.
        let (mut bytes, mut maps) = (0i64, 0i64);
        for (sid, st) in self.stitched.iter() {
            let mut size = 0;
            for p in &st.pieces {
                let seg = self
                    .segments
                    .get(p.seg)
                    .ok_or_else(|| format!("stitched block {sid} maps a dead segment"))?;
                let off = p.first_page as u64 * g;
                let c = &seg.chunks[seg.chunk_at(off)];
                if c.released || off + p.pages as u64 * g > c.offset + c.size {
                    return Err(format!(
                        "stitched block {sid} maps a released chunk or crosses chunks"
                    ));
                }
                size += p.pages as u64 * g;
            }
            let first = st.pieces.first().map_or(0, |p| p.pages as u64 * g);
            if st.lead >= first.max(1) {
                return Err(format!(
                    "stitched block {sid}: lead {} not in its first piece",
                    st.lead
                ));
            }
            if size != st.size {
                return Err(format!(
                    "stitched block {sid}: pieces cover {size} of {} bytes",
                    st.size
                ));
            }
            let reusable = self.reusable.contains(&(st.owner, st.servable(), sid));
            let in_lru = self.stitch_lru.contains(&(st.last_free, sid));
            let parked = self.parked == Some(super::parked::Parked::Stitched(sid));
            let cached = !st.active && !parked;
            if cached != in_lru
                || cached != reusable
                || cached != st.lent.is_empty()
                || (parked && st.active)
            {
                return Err(format!("stitched block {sid} is in the wrong sets"));
            }
            bytes += st.size as i64;
            maps += st.pieces.len() as i64;
        }
        // Each chunk counts the stitched pieces on it.
        let mut maps_on: hashbrown::HashMap<(SegId, usize), u32> = hashbrown::HashMap::new();
        for (_, st) in self.stitched.iter() {
            for p in &st.pieces {
                let seg = &self.segments[p.seg];
                *maps_on
                    .entry((p.seg, seg.chunk_at(p.first_page as u64 * g)))
                    .or_default() += 1;
            }
        }
        for (sid, seg) in self.segments.iter() {
            for (ci, c) in seg.chunks.iter().enumerate() {
                if c.stitch_maps != maps_on.get(&(sid, ci)).copied().unwrap_or(0) {
                    return Err(format!(
                        "segment {sid} chunk {ci}: stitched mapping count is off"
                    ));
                }
            }
        }
        if self.reusable.len() > self.stitched.len() || self.stitch_lru.len() > self.stitched.len()
        {
            return Err(String::from("stitched sets hold dead blocks"));
        }
        if self.stats.stitched_bytes.current != bytes || self.stats.stitch_mappings.current != maps
        {
            return Err(String::from("stitched statistics are off"));
        }

        // Allocation statistics.
        let mut count = [0i64; 2];
        let (mut req, mut rounded) = ([0i64; 2], [0i64; 2]);
        for l in self.live.values() {
            count[pidx(l.pool)] += 1;
            req[pidx(l.pool)] += l.requested as i64;
            rounded[pidx(l.pool)] += l.rounded as i64;
        }
        let mut active = rounded;
        for p in &self.pending_frees {
            active[pidx(p.live.pool)] += p.live.rounded as i64;
        }
        let st = &self.stats;
        let got = [
            (st.allocation.small_pool.current, count[0]),
            (st.allocation.large_pool.current, count[1]),
            (st.requested_bytes.small_pool.current, req[0]),
            (st.requested_bytes.large_pool.current, req[1]),
            (st.allocated_bytes.small_pool.current, rounded[0]),
            (st.allocated_bytes.large_pool.current, rounded[1]),
            (st.active_bytes.small_pool.current, active[0]),
            (st.active_bytes.large_pool.current, active[1]),
        ];
        if got.iter().any(|(a, b)| a != b) {
            return Err(format!("allocation statistics are off: {got:?}"));
        }
        self.check_physical_exclusive()
    }

    /// No two live (or pending-free) allocations share a byte of any physical handle.
    fn check_physical_exclusive(&self) -> Result<(), String> {
        let g = self.gran;
        // (handle, start, end) of every allocation's bytes.
        let mut spans: Vec<(u64, u64, u64)> = Vec::new();
        let lives = self
            .live
            .values()
            .chain(self.pending_frees.iter().map(|p| &p.live));
        for l in lives {
            match l.kind {
                LiveKind::Block(b) => {
                    let blk = &self.blocks[b];
                    let seg = &self.segments[blk.seg];
                    let mut off = blk.addr - seg.va;
                    let end = off + l.rounded;
                    while off < end {
                        let c = &seg.chunks[seg.chunk_at(off)];
                        let stop = end.min(c.offset + c.size);
                        spans.push((c.handle.0, off - c.offset, stop - c.offset));
                        off = stop;
                    }
                }
                LiveKind::Stitched(sid) => {
                    for (p, skip, len) in self.stitched[sid].spans(l.rounded, g) {
                        let seg = &self.segments[p.seg];
                        let off = p.first_page as u64 * g + skip;
                        let c = &seg.chunks[seg.chunk_at(off)];
                        spans.push((c.handle.0, off - c.offset, off - c.offset + len));
                    }
                }
            }
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[0].0 == w[1].0 && w[1].1 < w[0].2 {
                return Err(format!(
                    "two allocations share bytes of handle {}: {:?} and {:?}",
                    w[0].0, w[0], w[1]
                ));
            }
        }
        Ok(())
    }
}
