//! The allocator's internal records: blocks, segments, physical chunks, pages, stitched blocks and
//! live allocations.

use crate::device::PhysHandle;
use crate::stats::PoolKind;
use alloc::vec::Vec;

pub(crate) type BlockId = u32;
pub(crate) type SegId = u32;
pub(crate) type StitchId = u32;
pub(crate) type StreamIdx = u32;

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
    /// Whether access has been granted on the chunk's range in its segment. It is granted only
    /// when a block of the segment that covers the chunk is handed out, because a chunk used only
    /// through stitched ranges never needs it, and each grant costs about 25 us per handle.
    pub access: bool,
}

/// A primitive virtual range mapping one or more physical chunks back to back.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub va: u64,
    pub size: u64,
    pub stream: StreamIdx,
    pub pool: PoolKind,
    pub chunks: Vec<Chunk>,
    pub live_chunks: u32,
    pub first_block: BlockId,
}

impl Segment {
    /// Bytes of whole free chunks (unreleased chunks lying wholly inside the free block
    /// `[bstart, bend)`) that placing `[at, at + len)` would use up or leave partly used. Visits
    /// only the chunks under the placement.
    pub fn whole_loss(&self, bstart: u64, bend: u64, at: u64, len: u64) -> u64 {
        self.whole_loss_capped(bstart, bend, at, len, u64::MAX)
    }

    /// [`Self::whole_loss`], stopping as soon as it exceeds `cap`.
    pub fn whole_loss_capped(&self, bstart: u64, bend: u64, at: u64, len: u64, cap: u64) -> u64 {
        let mut loss = 0;
        for c in &self.chunks[self.chunk_at(at - self.va)..] {
            let cs = self.va + c.offset;
            if cs >= at + len {
                break;
            }
            if !c.released && cs >= bstart && cs + c.size <= bend {
                loss += c.size;
                if loss > cap {
                    break;
                }
            }
        }
        loss
    }

    /// Index of the chunk holding byte `offset` of the segment.
    pub fn chunk_at(&self, offset: u64) -> usize {
        self.chunks.partition_point(|c| c.offset + c.size <= offset)
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
    pub pieces: Vec<Piece>,
    /// Handed to a caller: the lent blocks back its first bytes.
    pub active: bool,
    pub lent: Vec<BlockId>,
    /// When it was last freed (a counter), for LRU garbage collection.
    pub last_free: u64,
    /// The work that last used it.
    pub fence: Fence,
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
    pub stream: StreamIdx,
    /// Streams named by `record_stream`, besides the allocation's own.
    pub extra_streams: Vec<StreamIdx>,
}

/// A freed allocation waiting for other streams' work (`record_stream`).
#[derive(Clone, Debug)]
pub(crate) struct PendingFree {
    pub live: Live,
    pub fences: Vec<Fence>,
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
    },
}
