//! The allocator's internal records: blocks, segments, physical chunks, pages, stitched blocks and
//! live allocations.

use crate::device::PhysHandle;
use crate::stats::PoolKind;
use alloc::vec::Vec;

pub(crate) type BlockId = u32;
pub(crate) type SegId = u32;
pub(crate) type StitchId = u32;
pub(crate) type StreamIdx = u32;
/// Index of a memory pool: 0 is the default pool, others are private pools (`pools.rs`).
pub(crate) type PoolIdx = u32;

/// The default pool's index.
pub(crate) const DEFAULT_POOL: PoolIdx = 0;
/// Index of a lane: the free blocks of one pool on one stream (`pools.rs`).
pub(crate) type LaneIdx = u32;

/// Work that must complete before memory freed on one stream can be used on another: everything
/// enqueued on `stream` up to the moment `epoch` was closed (see `streams.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fence {
    pub stream: StreamIdx,
    pub epoch: u64,
}

impl Fence {
    /// Memory never used by any work (fresh from the device).
    pub const NONE: Fence = Fence {
        stream: StreamIdx::MAX,
        epoch: 0,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlockState {
    /// In a free pool.
    Free,
    /// Handed to a caller.
    Allocated,
    /// Backing part of the active stitched block: reachable only through the stitched range.
    Lent(StitchId),
    /// Its physical chunk went back to the device; the virtual range is unmapped.
    Hole,
}

/// A byte range inside a segment's virtual range. Blocks of a segment tile it, linked in address
/// order (PyTorch's `Block` with `prev`/`next`).
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub addr: u64,
    pub size: u64,
    pub seg: SegId,
    pub prev: Option<BlockId>,
    pub next: Option<BlockId>,
    pub state: BlockState,
    /// For a free block: the work that last used it.
    pub fence: Fence,
    /// Whether this free block was counted in `inactive_split` when it entered its pool.
    pub counted_split: bool,
    /// For a free block: the start of the first and the end of the last physical chunk lying
    /// wholly inside it (`u64::MAX, 0` if none), set when it enters its pool, so that the best
    /// fit can tell whether a placement breaks a whole chunk without reading the chunks.
    pub whole: (u64, u64),
}

impl Block {
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// One physical handle, mapped once into its segment at `offset`, and into stitched blocks
/// `stitch_maps` more times.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    pub offset: u64,
    pub size: u64,
    pub handle: PhysHandle,
    pub released: bool,
    /// Pieces of stitched blocks that map part of this chunk; it cannot go back while any does.
    pub stitch_maps: u32,
}

/// A primitive virtual range mapping one or more physical chunks back to back.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub va: u64,
    pub size: u64,
    /// The lane (memory pool and stream) whose free lists hold its free blocks.
    pub lane: LaneIdx,
    pub pool: PoolKind,
    /// Late memory ([`super::policy::grows_late`]): best fit takes it last.
    pub late: bool,
    pub chunks: Vec<Chunk>,
    pub live_chunks: u32,
    pub first_block: BlockId,
    /// The block that ends the segment (kept by splits, merges and growth in place).
    pub last_block: BlockId,
    /// `chunk_of[i]`: the index of the chunk holding byte `i << unit_shift` of the segment, so
    /// that [`Segment::chunk_at`] is one load. Every chunk's size, hence every chunk boundary, is a
    /// multiple of `1 << unit_shift`. Empty when the table would be too long (binary search then).
    /// Kept by [`Segment::reindex`].
    pub chunk_of: Vec<u32>,
    /// log2 of the unit of `chunk_of`, in bytes (21 for 2 MiB).
    pub unit_shift: u32,
    /// The peer device whose memory its chunks are (borrowed memory, `peer.rs`); `None` for this
    /// device's own.
    pub peer: Option<u32>,
}

impl Segment {
    /// Bytes of whole free chunks (chunks lying wholly inside the free block `[bstart, bend)`)
    /// that placing `[at, at + len)` (inside the block, `len > 0`) would use up or leave partly
    /// used.
    ///
    /// O(log chunks): chunks tile the segment back to back and a free block spans no released
    /// chunk (a released chunk is a hole block of its own), so the chunks concerned are one run of
    /// indices, found by two binary searches, whose bytes are its end minus its start.
    pub fn whole_loss(&self, bstart: u64, bend: u64, at: u64, len: u64) -> u64 {
        match self.whole_run(at, at + len, bstart, bend) {
            Some((lo, hi)) => {
                self.chunks[hi].offset + self.chunks[hi].size - self.chunks[lo].offset
            }
            None => 0,
        }
    }

    /// The start of the first and the end of the last chunk lying wholly inside `[bstart, bend)`
    /// (a range of a free block, which spans no released chunk); `(u64::MAX, 0)` if none.
    pub fn whole_span(&self, bstart: u64, bend: u64) -> (u64, u64) {
        match self.whole_run(bstart, bend, bstart, bend) {
            Some((lo, hi)) => (
                self.va + self.chunks[lo].offset,
                self.va + self.chunks[hi].offset + self.chunks[hi].size,
            ),
            None => (u64::MAX, 0),
        }
    }

    /// Indices of the first and last chunk that overlap `[start, end)` (non-empty) and lie wholly
    /// inside `[bstart, bend)`, which contains it; `None` if there is none. Two look-ups: the run
    /// goes from the chunk holding `start`, or the next if that one begins before the block, to
    /// the chunk holding `end - 1`, or the one before if that one ends after the block.
    fn whole_run(&self, start: u64, end: u64, bstart: u64, bend: u64) -> Option<(usize, usize)> {
        let (first, last) = (
            self.chunk_at(start - self.va),
            self.chunk_at(end - 1 - self.va),
        );
        let (f, l) = (self.chunks.get(first)?, self.chunks.get(last)?);
        let lo = if self.va + f.offset >= bstart {
            first
        } else {
            first + 1
        };
        let hi = if self.va + l.offset + l.size <= bend {
            last
        } else {
            last.checked_sub(1)?
        };
        (lo <= hi).then_some((lo, hi))
    }

    /// Index of the chunk holding byte `offset` of the segment (the number of chunks if past the
    /// end).
    ///
    /// This look-up runs several times per allocation and free (`whole_span` when a block enters
    /// its pool, `whole_loss` when one is placed), on segments of up to hundreds of chunks of
    /// unequal sizes; a table per segment makes it one load (profiled on gpt2_train's warm passes:
    /// the binary search it replaces was 16% of the core's time).
    pub fn chunk_at(&self, offset: u64) -> usize {
        if offset >= self.size {
            return self.chunks.len();
        }
        match self.chunk_of.get((offset >> self.unit_shift) as usize) {
            Some(&ci) => ci as usize,
            None => self.chunks.partition_point(|c| c.offset + c.size <= offset),
        }
    }

    /// Rebuilds the table of [`Segment::chunk_at`] after chunks were added or split. O(size /
    /// unit), where the unit is the largest power of two dividing every chunk size (the device's
    /// granularity or a multiple of it): a few thousand entries for a multi-GiB segment.
    pub fn reindex(&mut self) {
        /// Longest table kept: 4 MiB of entries, 2 TiB of segment at a 2 MiB granularity.
        const MAX_ENTRIES: u64 = 1 << 20;
        let shift = self
            .chunks
            .iter()
            .map(|c| c.size.trailing_zeros())
            .min()
            .unwrap_or(0);
        self.unit_shift = shift;
        self.chunk_of.clear();
        if self.size >> shift > MAX_ENTRIES {
            return;
        }
        self.chunk_of.reserve((self.size >> shift) as usize);
        for (ci, c) in self.chunks.iter().enumerate() {
            let cells = c.size >> shift;
            self.chunk_of
                .extend(core::iter::repeat_n(ci as u32, cells as usize));
        }
    }
}

/// A run of pages of one chunk, mapped with one call into a stitched range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub seg: SegId,
    pub first_page: u32,
    pub pages: u32,
}

/// A stitched block: a virtual range mapping pages of several free blocks back to back
/// (GMLake's sBlock).
#[derive(Clone, Debug)]
pub(crate) struct Stitched {
    pub va: u64,
    pub size: u64,
    /// Bytes at the start of the range, in its first piece, that it never serves: the part of
    /// that chunk before the free bytes it was stitched for, which other blocks use (a stitch
    /// from a chunk's free end: `Allocator::stitch`). 0 for a block that starts on whole chunks.
    pub lead: u64,
    /// The memory pool that owns it: only allocations of that pool reuse it.
    pub owner: PoolIdx,
    /// The parts of the range this block mapped and owns, `(address, bytes)`, which it unmaps and
    /// frees when destroyed. The rest of the range is segments' own: a segment grown for this
    /// block (`Allocator::stitch_growing`) has its chunks mapped once, at the same addresses, for
    /// both.
    pub own: Vec<(u64, u64)>,
    /// Address space right after the range that the block holds, unmapped, to grow into
    /// (`Allocator::stitch_onto_cached`), in bytes.
    pub headroom: u64,
    pub pieces: Vec<Piece>,
    /// Handed to a caller: the lent blocks back its first bytes.
    pub active: bool,
    pub lent: Vec<BlockId>,
    /// When it was last freed (a counter), for LRU garbage collection.
    pub last_free: u64,
    /// Its place in the order stitched blocks were made or last grown: reuse tries older ones
    /// first (`policy::reuse_order`).
    pub born: u64,
    /// The work that last used it.
    pub fence: Fence,
}

impl Stitched {
    /// The address it serves: `lead` bytes into its range.
    pub fn addr(&self) -> u64 {
        self.va + self.lead
    }

    /// The bytes it can serve: its range less its `lead`.
    pub fn servable(&self) -> u64 {
        self.size - self.lead
    }

    /// What `bytes` served from its address cover of each piece, in order: `(piece, offset into
    /// the piece, bytes)`, in bytes (`gran`: the granularity, a page's size). O(pieces used).
    pub fn spans(&self, bytes: u64, gran: u64) -> impl Iterator<Item = (&Piece, u64, u64)> + '_ {
        let (mut left, mut skip) = (bytes, self.lead);
        self.pieces.iter().map_while(move |p| {
            let len = left.min(p.pages as u64 * gran - skip);
            let span = (p, skip, len);
            (left, skip) = (left - len, 0);
            (len > 0).then_some(span)
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LiveKind {
    Block(BlockId),
    Stitched(StitchId),
}

/// A live allocation, keyed by its address.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub kind: LiveKind,
    pub requested: u64,
    pub rounded: u64,
    pub pool: PoolKind,
    /// The memory pool it was served from.
    pub owner: PoolIdx,
    pub stream: StreamIdx,
    /// The caller's context id when it was allocated (for history and snapshots).
    pub context: u64,
    /// Streams named by `record_stream`, besides the allocation's own.
    pub extra_streams: Vec<StreamIdx>,
}

/// A freed allocation waiting for other streams' work (`record_stream`).
#[derive(Clone, Debug)]
pub(crate) struct PendingFree {
    pub live: Live,
    pub fences: Vec<Fence>,
    /// Freed during a capture: its fences are recorded when the capture ends.
    pub awaiting_capture: bool,
}

/// Cleanup that failed once and is retried later, so that nothing leaks.
#[derive(Clone, Debug)]
pub(crate) enum Deferred {
    /// Unmap `[va, va + mapped)`, then return the virtual range `[va, va + size)` to the arena
    /// (`size: 0`: the range belongs to a live segment and goes back with it).
    Unmap { va: u64, size: u64, mapped: u64 },
    /// Release a handle that nothing maps; `reserved` says whether it is still counted in
    /// `reserved_bytes` (and of which pool).
    Release {
        handle: PhysHandle,
        size: u64,
        reserved: Option<PoolKind>,
        /// The peer whose memory the handle is, for the borrowed-bytes statistics.
        peer: Option<u32>,
    },
}

/// What best fit knows of a candidate free block (the policy's `pick_fit` and `placement`).
/// physical chunks inside it (`(u64::MAX, 0)` if none), and whether it is in the small pool.
#[derive(Clone, Copy, Debug)]
pub(super) struct FitView {
    pub size: u64,
    pub addr: u64,
    pub whole: (u64, u64),
    pub small_pool: bool,
    pub late: bool,
}

impl FitView {
    /// Whether `rounded` bytes at the front or at the back of the block stay clear of every whole
    /// chunk in it (whole free chunks are what a stitch can map). Two comparisons.
    pub fn keeps_whole_chunks(&self, rounded: u64) -> bool {
        self.small_pool
            || self.size == rounded
            || self.addr + rounded <= self.whole.0
            || self.addr + self.size - rounded >= self.whole.1
    }
}

/// A whole free chunk `[cstart, cend)` under a placement of `rounded` bytes at `at`.
#[derive(Clone, Copy, Debug)]
pub(super) struct SplitView {
    /// The chunk's bounds.
    pub cstart: u64,
    pub cend: u64,
    /// Whether it lies wholly inside the free block (so it is free) and is mapped.
    pub inside: bool,
    /// Whether it holds the whole placement.
    pub holds: bool,
    /// Whether a stitched block maps it.
    pub stitch_mapped: bool,
    /// The start of its segment (cuts fall on granules counted from there).
    pub seg_va: u64,
    /// Whether memory is short ([`super::policy::under_pressure`]).
    pub pressed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, chunk by chunk.
    fn whole_loss_by_scan(seg: &Segment, bstart: u64, bend: u64, at: u64, len: u64) -> u64 {
        seg.chunks
            .iter()
            .map(|c| (seg.va + c.offset, seg.va + c.offset + c.size))
            .filter(|&(cs, ce)| cs >= bstart && ce <= bend && cs < at + len && ce > at)
            .map(|(cs, ce)| ce - cs)
            .sum()
    }

    /// A xorshift generator: each call with `n` gives a number in `0..n`.
    fn xorshift(mut rng: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        }
    }

    /// A segment at 1 TiB of 1 to `max_chunks` chunks back to back, each `size(next)` bytes, with
    /// its `chunk_at` table built.
    fn random_segment(
        next: &mut dyn FnMut(u64) -> u64,
        max_chunks: u64,
        size: fn(&mut dyn FnMut(u64) -> u64) -> u64,
    ) -> Segment {
        let mut seg = Segment {
            va: 1 << 40,
            size: 0,
            lane: 0,
            pool: PoolKind::Large,
            late: false,
            chunks: Vec::new(),
            live_chunks: 0,
            first_block: 0,
            last_block: 0,
            chunk_of: Vec::new(),
            unit_shift: 0,
            peer: None,
        };
        for _ in 0..1 + next(max_chunks) {
            let size = size(next);
            seg.chunks.push(Chunk {
                offset: seg.size,
                size,
                handle: PhysHandle(0),
                released: false,
                stitch_maps: 0,
            });
            seg.size += size;
        }
        seg.reindex();
        seg
    }

    /// The table of `chunk_at` against a plain search, and the search it falls back on (a
    /// segment too long for a table) against the same.
    #[test]
    fn chunk_at_agrees_with_a_scan_with_and_without_its_table() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..500 {
            // Sizes of 1-6 units of 2^(9..12) bytes: mixed powers, so the unit varies.
            let seg = random_segment(&mut next, 12, |next| (1 + next(6)) << (9 + next(4)));
            assert_eq!(seg.chunk_of.len() as u64, seg.size >> seg.unit_shift);
            let by_scan = |off: u64| {
                seg.chunks
                    .iter()
                    .position(|c| c.offset <= off && off < c.offset + c.size)
                    .unwrap_or(seg.chunks.len())
            };
            let mut untabled = seg.clone();
            untabled.chunk_of.clear();
            for _ in 0..50 {
                let off = next(seg.size + 1024);
                assert_eq!(seg.chunk_at(off), by_scan(off), "{:?} at {off}", seg.chunks);
                assert_eq!(untabled.chunk_at(off), by_scan(off));
            }
        }
    }

    #[test]
    fn whole_loss_matches_a_scan_of_every_chunk() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let seg = random_segment(&mut next, 8, |next| (1 + next(5)) * 512);
            let bstart = seg.va + next(seg.size);
            let bend = bstart + 1 + next(seg.va + seg.size - bstart);
            let at = bstart + next(bend - bstart);
            let len = 1 + next(bend - at);
            assert_eq!(
                seg.whole_loss(bstart, bend, at, len),
                whole_loss_by_scan(&seg, bstart, bend, at, len),
                "{:?} block {bstart:#x}..{bend:#x} at {at:#x}+{len}",
                seg.chunks
            );
        }
    }
}
