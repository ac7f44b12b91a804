//! Stitching the free ends of chunks (`stitch_free_ends`, off by default): where the whole free
//! chunks fall short of a request, a stitch may also map a chunk whose free bytes end it (first in
//! the range: the stitched block then serves from those bytes on, its *lead* before them) and one
//! whose free bytes start it (last). The driver maps whole handles, so such a chunk is mapped
//! whole, its used part included; only its free bytes are lent to the stitched block, and the
//! allocation checker (`check.rs`) verifies that no two allocations share a handle's bytes.
//! Which ends to use is [`policy::free_ends_for`]; `docs/design.md`, "Stitching the free ends of
//! chunks", has the measurements.

use super::policy;
use super::stitch::{choose, Candidate};
use super::types::*;
use super::Allocator;
use crate::device::Device;
use alloc::vec::Vec;

/// A chunk with a free end and how many bytes that end holds.
type FreeEnd = (u64, Candidate);

impl<D: Device> Allocator<D> {
    /// The chunks whose free bytes lie at one end, usable by lane `l`: `(tails, heads)`, each
    /// `(free bytes, chunk)`. A tail chunk's free bytes end it (its start is in use): it can only
    /// begin a stitched range, which then serves from those bytes on; a head chunk's free bytes
    /// start it: it can only end one. Scans every free large-pool block, as `candidates`.
    fn free_ends(&self, l: LaneIdx) -> (Vec<FreeEnd>, Vec<FreeEnd>) {
        let (mut tails, mut heads) = (Vec::new(), Vec::new());
        let s = self.lane_stream(l);
        let lanes = &self.pools.pool_lanes[self.lane_pool(l) as usize];
        for &b in lanes
            .iter()
            .flat_map(|&t| self.free[t as usize].large.values())
        {
            let blk = &self.blocks[b];
            if !self.streams.safe_for(blk.fence, s) {
                continue;
            }
            let seg = &self.segments[blk.seg];
            let (first, last) = (
                seg.chunk_at(blk.addr - seg.va),
                seg.chunk_at(blk.end() - 1 - seg.va),
            );
            let cand = |ci: usize| Candidate {
                bytes: seg.chunks[ci].size,
                start: seg.va + seg.chunks[ci].offset,
                seg: blk.seg,
                chunk: ci,
            };
            let (f, e) = (cand(first), cand(last));
            if blk.addr > f.start && blk.end() >= f.start + f.bytes && !seg.chunks[first].released {
                tails.push((f.start + f.bytes - blk.addr, f));
            }
            if blk.end() < e.start + e.bytes && blk.addr <= e.start && !seg.chunks[last].released {
                heads.push((blk.end() - e.start, e));
            }
        }
        (tails, heads)
    }

    /// The chunks of a stitch for `rounded` bytes where the whole free chunks `cands` (in
    /// [`policy::stitch_order`], `whole` bytes in all) do not suffice, with the free bytes at one
    /// end of other chunks: a tail chunk first, whole chunks, a head chunk last
    /// ([`policy::free_ends_for`]), each end the largest of its kind. Returns them in range
    /// order with the block's lead; `None` if they do not suffice either. O(free blocks).
    pub(super) fn with_free_ends(
        &self,
        cands: &[Candidate],
        whole: u64,
        rounded: u64,
        l: LaneIdx,
    ) -> Option<(Vec<Candidate>, u64)> {
        let (tails, heads) = self.free_ends(l);
        let best = |v: &[FreeEnd]| {
            v.iter()
                .copied()
                .max_by_key(|&(b, c)| (b, u64::MAX - c.start))
        };
        let (tail, head) = (best(&tails), best(&heads));
        let (t, h) = (tail.map_or(0, |x| x.0), head.map_or(0, |x| x.0));
        let same = matches!((tail, head), (Some((_, a)), Some((_, b))) if a.start == b.start);
        let (use_t, use_h) = policy::free_ends_for(
            &self.cfg,
            t,
            [h, 0][same as usize],
            rounded.saturating_sub(whole),
        )?;
        let ends = [t, 0][!use_t as usize] + [h, 0][!use_h as usize];
        let mut chosen = Vec::new();
        let mut lead = 0;
        if let Some((bytes, c)) = tail.filter(|_| use_t) {
            chosen.push(c);
            lead = c.bytes - bytes;
        }
        let middle = choose(cands, rounded.saturating_sub(ends));
        let middle_bytes: u64 = middle.iter().map(|c| c.bytes).sum();
        chosen.extend(middle);
        let served = [t, 0][!use_t as usize] + middle_bytes;
        if let Some((_, c)) = head.filter(|_| use_h && served < rounded) {
            chosen.push(c);
        }
        (chosen.len() >= 2).then_some((chosen, lead))
    }
}
