//! Stitching the free ends of chunks (`stitch_free_ends`, off by default): where the whole free
//! chunks fall short of a request, a stitch may also map a chunk whose free bytes end it (first in
//! the range: the stitched block then serves from those bytes on, its *lead* before them) and one
//! whose free bytes start it (last); and a stitch that grows new memory for what whole chunks
//! lack may map both around it, to grow less. The driver maps whole handles, so such a chunk is
//! mapped whole, its used part included; only its free bytes are lent to the stitched block, and
//! the allocation checker (`check.rs`) verifies that no two allocations share a handle's bytes.
//! Which ends to use is [`policy::free_ends_for`] and [`policy::ends_pay`], of the largest free
//! tail and head; `docs/design.md`, "Stitching the free ends of chunks", has the measurements.

use super::policy;
use super::stitch::{choose, Candidate};
use super::types::*;
use super::Allocator;
use super::Miss;
use crate::device::Device;
use alloc::vec::Vec;

/// A chunk with a free end and how many bytes that end holds.
type FreeEnd = (u64, Candidate);

impl<D: Device> Allocator<D> {
    /// The chunks whose free bytes lie at one end, usable by lane `l`: `(tails, heads)`, each
    /// `(free bytes, chunk)`. A tail chunk's free bytes end it (its start is in use): it can only
    /// begin a stitched range, which then serves from those bytes on; a head chunk's free bytes
    /// start it: it can only end one. Of [`Self::usable_free_blocks`], as `candidates`.
    fn free_ends(&self, l: LaneIdx) -> (Vec<FreeEnd>, Vec<FreeEnd>) {
        let (mut tails, mut heads) = (Vec::new(), Vec::new());
        for blk in self.usable_free_blocks(l) {
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

    /// The largest free tail and the largest free head usable by lane `l` (the lower address on
    /// a tie), the head only in another chunk than the tail. O(free blocks).
    fn largest_ends(&self, l: LaneIdx) -> (Option<FreeEnd>, Option<FreeEnd>) {
        let (tails, heads) = self.free_ends(l);
        let largest = |v: Vec<FreeEnd>| v.into_iter().max_by_key(|&(b, c)| (b, u64::MAX - c.start));
        let (tail, head) = (largest(tails), largest(heads));
        let other = |h: &FreeEnd| tail.is_none_or(|t| t.1.start != h.1.start);
        (tail, head.filter(other))
    }

    /// The chunks of a stitch for `rounded` bytes where the whole free chunks `cands` (in
    /// [`policy::stitch_order`], `whole` bytes in all) do not suffice, with the free bytes at one
    /// end of other chunks: a tail chunk first, whole chunks, a head chunk last
    /// ([`policy::free_ends_for`]), each end the largest of its kind (`largest_ends`). Returns
    /// them in range order with the block's lead; `None` if they do not suffice either.
    /// O(free blocks).
    pub(super) fn with_free_ends(
        &self,
        cands: &[Candidate],
        whole: u64,
        rounded: u64,
        l: LaneIdx,
    ) -> Option<(Vec<Candidate>, u64)> {
        let (tail, head) = self.largest_ends(l);
        let (t, h) = (tail.map_or(0, |x| x.0), head.map_or(0, |x| x.0));
        let (use_t, use_h) = policy::free_ends_for(t, h, rounded.saturating_sub(whole))?;
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

    /// `stitch_growing` with free ends: where the largest free tail and head (`largest_ends`)
    /// with all whole free chunks `cands` (in [`policy::stitch_order`], `have` bytes) lack some
    /// bytes, and growing what they lack needs fewer new bytes than growing what the whole chunks
    /// alone lack ([`policy::ends_pay`]), maps
    /// tail, new memory (a new segment, at least `floor` bytes), whole chunks and head back to
    /// back; the new chunks are mapped once for both, as in `stitch_growing`. A tail so works as
    /// growing any chunk's free end in place. `Ok(None)` where that saves nothing or a mapping
    /// failed (a segment grown stays); `Err` if the growth failed (nothing changed).
    /// O(free blocks + chunks).
    pub(super) fn grow_onto_ends(
        &mut self,
        rounded: u64,
        floor: u64,
        (cands, have): (&[Candidate], u64),
        l: LaneIdx,
    ) -> Result<Option<StitchId>, Miss> {
        let (tail, head) = self.largest_ends(l);
        let ends = tail.map_or(0, |x| x.0) + head.map_or(0, |x| x.0);
        let g = self.gran;
        let growth = |lack: u64| (lack.div_ceil(g) * g).max(floor);
        if !policy::ends_pay(rounded - have, ends, growth) {
            return Ok(None);
        }
        let grow = growth(rounded - have - ends);
        let (need, cur) = ((rounded, grow), self.handle_size);
        self.handle_size = policy::shortfall_handle_size(&self.cfg, g, need, cur);
        let mut after: Vec<Candidate> = cands.to_vec();
        after.extend(head.map(|x| x.1));
        let after_bytes: u64 = after.iter().map(|c| c.bytes).sum();
        let after = self.pieces_of(&after);
        let (lead_chunk, lead) = tail.map_or((0, 0), |(bytes, c)| (c.bytes, c.bytes - bytes));
        let size = lead_chunk + grow + after_bytes;
        let va = self.va_alloc(size).map_err(Miss::from_device)?;
        let first = tail.map(|(_, c)| self.pieces_of(&[c]));
        if let Some(p) = &first {
            if self.map_pieces(va, p).is_none() {
                self.va_free(va + lead_chunk, size - lead_chunk);
                return Ok(None);
            }
        }
        let grown = self.grow_and_map(va + lead_chunk, l, grow, after_bytes, &after);
        let Ok(Some(rest)) = grown else {
            if lead_chunk > 0 {
                self.undo_range(va, lead_chunk, lead_chunk);
            }
            return grown.map(|_| None);
        };
        let mut pieces = first.unwrap_or_default();
        pieces.extend(rest);
        let own: Vec<(u64, u64)> = [(va, lead_chunk), (va + lead_chunk + grow, after_bytes)]
            .into_iter()
            .filter(|&(_, len)| len > 0)
            .collect();
        let sid = self.register_stitched(va, size, own, 0, &pieces, l);
        self.stitched[sid].lead = lead;
        self.stats.num_stitches += 1;
        self.claim_new(sid, rounded, l);
        Ok(Some(sid))
    }
}
