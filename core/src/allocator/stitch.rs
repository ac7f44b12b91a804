//! Virtual memory stitching (GMLake, ASPLOS 2024: the sPool and Stitch): making stitched blocks.
//!
//! A stitched block maps several whole free physical chunks back to back into a new virtual range
//! (the driver maps whole handles only). Handing it out, caching and reusing it and destroying it
//! is `stitch_cache.rs`; which chunks to stitch is decided in `policy.rs`.
//!
//! A stitch that needs new memory (`stitch_growing`) puts the new chunks, as a new segment, at the
//! start of its range: they are mapped once for both, and the stitched block owns and unmaps only
//! the rest of the range.
//!
//! Every stitched block holds unmapped address space after its range (its headroom). A stitch
//! whose chunks include all those of a cached block grows that block into its headroom instead of
//! mapping them all again (`stitch_onto_cached`).

use super::policy;
use super::types::*;
use super::{Allocator, Miss};
use crate::device::{Device, DriverCall};
use alloc::vec::Vec;
use hashbrown::HashSet;

/// A physical chunk that lies wholly inside a free block: the unit of stitching, since the driver
/// maps whole handles only.
#[derive(Clone, Copy)]
pub(super) struct Candidate {
    pub bytes: u64,
    pub start: u64,
    pub seg: SegId,
    pub chunk: usize,
}

impl<D: Device> Allocator<D> {
    /// The free large-pool blocks of lane `l`'s pool whose last use the lane's stream may follow:
    /// what a stitch may map. O(free blocks of the pool): stitching's slow path only.
    pub(super) fn usable_free_blocks(&self, l: LaneIdx) -> impl Iterator<Item = &Block> + '_ {
        let s = self.lane_stream(l);
        let lanes = &self.pools.pool_lanes[self.lane_pool(l) as usize];
        lanes
            .iter()
            .flat_map(|&t| self.free[t as usize].large.values())
            .map(|&b| &self.blocks[b])
            .filter(move |blk| self.streams.safe_for(blk.fence, s))
    }

    /// The whole free chunks usable by lane `l` (what a stitch could map now): those inside
    /// [`Self::usable_free_blocks`].
    pub(super) fn candidates(&self, l: LaneIdx) -> Vec<Candidate> {
        let mut out = Vec::new();
        for blk in self.usable_free_blocks(l) {
            let seg = &self.segments[blk.seg];
            for ci in seg.chunk_at(blk.addr - seg.va)..seg.chunks.len() {
                let c = &seg.chunks[ci];
                let start = seg.va + c.offset;
                if start >= blk.end() {
                    break;
                }
                if !c.released && start >= blk.addr && start + c.size <= blk.end() {
                    out.push(Candidate {
                        bytes: c.size,
                        start,
                        seg: blk.seg,
                        chunk: ci,
                    });
                }
            }
        }
        out
    }

    /// Stitches whole free chunks into a new block for a request of `rounded` bytes on stream `s`,
    /// claims it, and returns it; `None` if the free chunks do not suffice or the device refused
    /// (then nothing changed). Where a cached stitched block already maps some of the chunks it
    /// needs, that block grows instead (`stitch_onto_cached`).
    pub(super) fn stitch(&mut self, rounded: u64, l: LaneIdx, ends: bool) -> Option<StitchId> {
        let mut cands = self.candidates(l);
        let free_bytes = cands.iter().map(|c| c.bytes).sum::<u64>();
        let worth = policy::worth_stitching(free_bytes, cands.len(), rounded);
        if !worth && !ends {
            return None;
        }
        sort_for_stitch(&mut cands);
        let (chosen, lead) = if worth {
            let chosen = choose(&cands, rounded);
            if let Some(sid) = self.stitch_onto_cached(&chosen, rounded, l) {
                return Some(sid);
            }
            (chosen, 0)
        } else {
            self.with_free_ends(&cands, free_bytes, rounded, l)?
        };
        let pieces = self.pieces_of(&chosen);
        let size: u64 = chosen.iter().map(|c| c.bytes).sum();
        let sid = match self.map_stitched(&pieces, size, lead, l) {
            Some(sid) => sid,
            None => {
                // The device refused address space or a mapping: make room and try once more.
                if !self.gc_stitched(true) {
                    return None;
                }
                self.map_stitched(&pieces, size, lead, l)?
            }
        };
        self.stats.num_stitches += 1;
        self.claim_new(sid, rounded, l);
        Some(sid)
    }

    /// Claims a stitched block just made or grown for `rounded` bytes, then keeps the cached ones
    /// within bounds.
    pub(super) fn claim_new(&mut self, sid: StitchId, rounded: u64, l: LaneIdx) {
        let claimed = self.claim(sid, rounded, l);
        debug_assert!(claimed, "a new stitched block lies on free chunks");
        self.enforce_stitch_bounds();
    }

    /// `stitch` of the `chosen` chunks by growing a cached stitched block that maps some of them,
    /// all free (`growable`): only the chunks it lacks are mapped, into its headroom right after
    /// its range, and only they are granted access, so its mappings are not paid for again (each
    /// handle costs about 25 us to map on the H200). The chunks used are those a new stitch would
    /// use. `None`, changing nothing, where no block qualifies or its headroom is too small;
    /// `None` with the block's headroom given up if the device refused.
    fn stitch_onto_cached(
        &mut self,
        chosen: &[Candidate],
        rounded: u64,
        l: LaneIdx,
    ) -> Option<StitchId> {
        let (sid, rest) = self.growable(chosen, rounded, l)?;
        let chosen = choose(&rest, rounded - self.stitched[sid].size);
        let pieces = self.pieces_of(&chosen);
        let extra: u64 = chosen.iter().map(|c| c.bytes).sum();
        let (va, left) = self.take_headroom(sid, extra)?;
        if self.map_pieces(va, &pieces).is_none() {
            self.drop_headroom(va + extra, left);
            return None;
        }
        self.annex(sid, extra, left, pieces, Some((va, extra)));
        self.stats.num_stitches += 1;
        self.claim_new(sid, rounded, l);
        Some(sid)
    }

    /// The cached stitched block a stitch for `rounded` bytes can grow: an inactive one, smaller
    /// than `rounded`, each of whose pieces is a whole chunk among `cands` (free for the stream);
    /// the first such among [`policy::growable_candidates`]. Returns it with
    /// the candidates it does not map.
    fn growable(
        &self,
        cands: &[Candidate],
        rounded: u64,
        l: LaneIdx,
    ) -> Option<(StitchId, Vec<Candidate>)> {
        if self.reusable.is_empty() {
            return None;
        }
        let g = self.gran;
        let free: HashSet<(u64, u64)> = cands.iter().map(|c| (c.start, c.bytes)).collect();
        let piece_key = |p: &Piece| {
            (
                self.segments[p.seg].va + p.first_page as u64 * g,
                p.pages as u64 * g,
            )
        };
        let p = self.lane_pool(l);
        let smaller = self.reusable.range((p, 0, 0)..(p, rounded, 0));
        let smaller = smaller.map(|&(_, size, sid)| (size, sid));
        let sid = policy::growable_candidates(smaller).find(|&sid| {
            let st = &self.stitched[sid];
            st.lead == 0 && st.pieces.iter().all(|p| free.contains(&piece_key(p)))
        })?;
        let mapped: HashSet<(u64, u64)> = self.stitched[sid].pieces.iter().map(piece_key).collect();
        let rest = cands
            .iter()
            .filter(|c| !mapped.contains(&(c.start, c.bytes)))
            .copied()
            .collect();
        Some((sid, rest))
    }

    /// Takes the stitched block `sid`'s headroom for growing by `extra` bytes: returns where they
    /// start (right after its range) and how many bytes of headroom lie past them, which go back
    /// to the block if it grows (`annex`) or to the free address space if not (`drop_headroom`);
    /// `None`, changing nothing, if it holds fewer than `extra`.
    fn take_headroom(&mut self, sid: StitchId, extra: u64) -> Option<(u64, u64)> {
        let st = &mut self.stitched[sid];
        if st.headroom < extra {
            return None;
        }
        let rest = st.headroom - extra;
        st.headroom = 0;
        Some((st.va + st.size, rest))
    }

    /// Returns `bytes` of headroom at `va` to the free address space (a growth that failed).
    pub(super) fn drop_headroom(&mut self, va: u64, bytes: u64) {
        if bytes > 0 {
            self.va_free(va, bytes);
        }
    }

    /// Grows the inactive stitched block `sid` by `pieces`, which the caller has mapped into the
    /// first `extra` bytes of its headroom, right after its range (`take_headroom`), with
    /// `headroom` bytes left after them; `own` is the part of them the block owns.
    fn annex(
        &mut self,
        sid: StitchId,
        extra: u64,
        headroom: u64,
        pieces: Vec<Piece>,
        own: Option<(u64, u64)>,
    ) {
        self.count_stitch_maps(&pieces, true);
        self.stats.stitched_bytes.update(extra as i64);
        self.stats.stitch_mappings.update(pieces.len() as i64);
        let st = &mut self.stitched[sid];
        self.reusable.remove(&(st.owner, st.servable(), sid));
        st.pieces.extend(pieces);
        st.size += extra;
        st.headroom = headroom;
        st.own.extend(own);
        // Grown, it serves requests it could not before: it counts as made now
        // (`policy::reuse_order`).
        st.born = self.stitch_births;
        self.stitch_births += 1;
        self.reusable.insert((st.owner, st.servable(), sid));
    }

    /// The pieces that map `chosen` chunks whole.
    pub(super) fn pieces_of(&self, chosen: &[Candidate]) -> Vec<Piece> {
        let g = self.gran;
        chosen
            .iter()
            .map(|c| {
                let chunk = &self.segments[c.seg].chunks[c.chunk];
                Piece {
                    seg: c.seg,
                    first_page: (chunk.offset / g) as u32,
                    pages: (chunk.size / g) as u32,
                }
            })
            .collect()
    }

    /// Maps `pieces` back to back from `va` (address space the caller holds) and grants access to
    /// them. On failure, what was mapped is unmapped and `[va, va + bytes of pieces)` goes back.
    pub(super) fn map_pieces(&mut self, va: u64, pieces: &[Piece]) -> Option<()> {
        let g = self.gran;
        let size: u64 = pieces.iter().map(|p| p.pages as u64 * g).sum();
        let mut off = 0;
        for p in pieces {
            let segm = &self.segments[p.seg];
            let seg_off = p.first_page as u64 * g;
            let chunk = &segm.chunks[segm.chunk_at(seg_off)];
            let (handle, handle_off, len) =
                (chunk.handle, seg_off - chunk.offset, p.pages as u64 * g);
            if self
                .call(DriverCall::Map, |d| {
                    d.map(va + off, len, handle, handle_off)
                })
                .is_err()
            {
                self.undo_range(va, size, off);
                return None;
            }
            off += len;
        }
        if self
            .call(DriverCall::SetAccess, |d| d.set_access(va, size))
            .is_err()
        {
            self.undo_range(va, size, size);
            return None;
        }
        Some(())
    }

    /// Reserves a range of `size` bytes and maps `pieces` into it back to back, then registers the
    /// stitched block (inactive, not yet claimed). `None`, with everything undone, on failure.
    /// `lead`: the bytes of the first piece it does not serve (`Stitched::lead`); a block with a
    /// lead holds no headroom, since it never grows (`growable`).
    fn map_stitched(
        &mut self,
        pieces: &[Piece],
        size: u64,
        lead: u64,
        l: LaneIdx,
    ) -> Option<StitchId> {
        let total = self.dev.total_memory();
        let headroom = [policy::headroom_for(size, total, self.gran), 0][(lead > 0) as usize];
        let va = self.va_alloc(size + headroom).ok()?;
        if self.map_pieces(va, pieces).is_none() {
            self.drop_headroom(va + size, headroom);
            return None;
        }
        let own = Vec::from([(va, size)]);
        let sid = self.register_stitched(va, size, own, headroom, pieces, l);
        self.stitched[sid].lead = lead;
        Some(sid)
    }

    /// Records a mapped stitched block of `size` bytes at `va`, of lane `l`'s pool, that owns the
    /// `own` parts of its range (the rest is segments') and `headroom` bytes of address space
    /// after it.
    pub(super) fn register_stitched(
        &mut self,
        va: u64,
        size: u64,
        own: Vec<(u64, u64)>,
        headroom: u64,
        pieces: &[Piece],
        l: LaneIdx,
    ) -> StitchId {
        let sid = self.stitched.insert(Stitched {
            va,
            size,
            owner: self.lane_pool(l),
            own,
            headroom,
            lead: 0,
            pieces: pieces.to_vec(),
            active: false,
            lent: Vec::new(),
            last_free: 0,
            born: self.stitch_births,
            fence: Fence::NONE,
        });
        self.stitch_births += 1;
        self.count_stitch_maps(pieces, true);
        self.stats.stitched_bytes.update(size as i64);
        self.stats.stitched_blocks.update(1);
        self.stats.stitch_mappings.update(pieces.len() as i64);
        sid
    }

    /// Serves `rounded` bytes on stream `s` when the whole free chunks usable by `s` hold some,
    /// but fewer, bytes: creates what they lack (rounded up to the granularity, at least `floor`
    /// bytes) as a new segment and stitches it with all those free chunks, mapped right after it.
    /// The new segment's chunks are thus mapped and granted access once, at the same addresses for
    /// the segment and for the stitched block, rather than once for each (each handle mapped costs
    /// about 25 us on the H200: `docs/design.md`, "Stitching with new memory").
    ///
    /// With `ends`, chunks' free ends may be mapped too where the growth is then smaller
    /// (`grow_onto_ends`). `Ok(None)` if no free chunk qualifies, or if mapping the free chunks
    /// failed: the new segment then stays, as after any growth. `Err` if the growth failed
    /// (nothing changed).
    pub(super) fn stitch_growing(
        &mut self,
        rounded: u64,
        floor: u64,
        l: LaneIdx,
        ends: bool,
    ) -> Result<Option<StitchId>, Miss> {
        let mut cands = self.candidates(l);
        let have: u64 = cands.iter().map(|c| c.bytes).sum();
        if have == 0 || have >= rounded {
            return Ok(None);
        }
        if ends {
            sort_for_stitch(&mut cands);
            if let r @ (Ok(Some(_)) | Err(_)) =
                self.grow_onto_ends(rounded, floor, (&cands, have), l)
            {
                return r;
            }
        }
        let grow = ((rounded - have).div_ceil(self.gran) * self.gran).max(floor);
        // Kept for the rest of this request's order: a growth after a failed stitch uses it too
        // (as measured: `docs/design.md`, "Handles of a stitch's growth").
        let (need, cur) = ((rounded, grow), self.handle_size);
        self.handle_size = policy::shortfall_handle_size(&self.cfg, self.gran, need, cur);
        sort_for_stitch(&mut cands);
        // A cached stitched block that maps some of these chunks grows by the rest (see
        // `stitch_onto_cached`), where the address space beside it is free.
        if let Some((sid, rest)) = self.growable(&cands, rounded, l) {
            let rest_bytes: u64 = rest.iter().map(|c| c.bytes).sum();
            let extra = grow + rest_bytes;
            if let Some((va, left)) = self.take_headroom(sid, extra) {
                let rest = self.pieces_of(&rest);
                let pieces = match self.grow_and_map(va, l, grow, rest_bytes, &rest) {
                    Ok(Some(pieces)) => pieces,
                    failed => {
                        self.drop_headroom(va + extra, left);
                        return failed.map(|_| None);
                    }
                };
                let own = (rest_bytes > 0).then_some((va + grow, rest_bytes));
                self.annex(sid, extra, left, pieces, own);
                self.stats.num_stitches += 1;
                self.claim_new(sid, rounded, l);
                return Ok(Some(sid));
            }
        }
        let old = self.pieces_of(&cands);
        let headroom = policy::headroom_for(grow + have, self.dev.total_memory(), self.gran);
        let va = self
            .va_alloc(grow + have + headroom)
            .map_err(Miss::from_device)?;
        let pieces = match self.grow_and_map(va, l, grow, have, &old) {
            Ok(Some(pieces)) => pieces,
            failed => {
                self.drop_headroom(va + grow + have, headroom);
                return failed.map(|_| None);
            }
        };
        let own = Vec::from([(va + grow, have)]);
        let sid = self.register_stitched(va, grow + have, own, headroom, &pieces, l);
        self.stats.num_stitches += 1;
        self.claim_new(sid, rounded, l);
        Ok(Some(sid))
    }

    /// At `va`, address space the caller has taken for `grow + old_bytes` bytes: creates a new
    /// segment of `grow` bytes, maps the `old` pieces (`old_bytes` in all) right after it, and
    /// returns the pieces of both, in address order. `Err` if the growth failed (then all the
    /// address space went back); `Ok(None)` if mapping `old` failed (the segment stays, as after
    /// any growth).
    pub(super) fn grow_and_map(
        &mut self,
        va: u64,
        l: LaneIdx,
        grow: u64,
        old_bytes: u64,
        old: &[Piece],
    ) -> Result<Option<Vec<Piece>>, Miss> {
        let seg = match self.grow_at(va, l, grow) {
            Ok(seg) => seg,
            Err(m) => {
                if old_bytes > 0 {
                    self.va_free(va + grow, old_bytes);
                }
                return Err(m);
            }
        };
        if !old.is_empty() && self.map_pieces(va + grow, old).is_none() {
            return Ok(None);
        }
        let g = self.gran;
        let mut pieces: Vec<Piece> = self.segments[seg]
            .chunks
            .iter()
            .map(|c| Piece {
                seg,
                first_page: (c.offset / g) as u32,
                pages: (c.size / g) as u32,
            })
            .collect();
        pieces.extend_from_slice(old);
        Ok(Some(pieces))
    }
}

/// The chunks a stitch of `need` bytes maps, from `cands` in [`policy::stitch_order`]
/// ([`policy::choose_chunks`]).
pub(super) fn choose(cands: &[Candidate], need: u64) -> Vec<Candidate> {
    let sizes: Vec<u64> = cands.iter().map(|c| c.bytes).collect();
    policy::choose_chunks(&sizes, need)
        .into_iter()
        .map(|i| cands[i])
        .collect()
}

/// Sorts whole free chunks in [`policy::stitch_order`].
pub(super) fn sort_for_stitch(cands: &mut [Candidate]) {
    cands.sort_unstable_by(|a, b| policy::stitch_order((a.bytes, a.start), (b.bytes, b.start)));
}
