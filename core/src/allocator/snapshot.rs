//! A snapshot of everything an allocator holds: every segment with its physical chunks and blocks,
//! and every stitched block with the chunks it maps (in the spirit of `torch.cuda.memory._snapshot()`,
//! which has no stitched blocks).

use super::pools::PoolId;
use super::types::*;
use super::Allocator;
use crate::device::Device;
use crate::stats::PoolKind;
use alloc::vec::Vec;
use hashbrown::HashMap;

/// Everything an allocator holds at one moment. Addresses and sizes in bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Segments in creation-slot order.
    pub segments: Vec<SegmentInfo>,
    /// Stitched blocks in creation-slot order.
    pub stitched: Vec<StitchedInfo>,
}

impl Snapshot {
    /// The segment and physical chunk that a piece of a stitched block maps, if the snapshot holds
    /// them. O(segments).
    pub fn chunk_of(&self, piece: &PieceInfo) -> Option<(&SegmentInfo, &ChunkInfo)> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.address == piece.segment_address)?;
        Some((seg, seg.chunks.get(piece.chunk_index as usize)?))
    }

    /// Where a piece of a stitched block lies in its segment's own range (the other view of the
    /// same physical bytes), if the snapshot holds its segment. O(segments).
    pub fn piece_address(&self, piece: &PieceInfo) -> Option<u64> {
        let (seg, chunk) = self.chunk_of(piece)?;
        Some(seg.address + chunk.offset + piece.offset_in_handle)
    }
}

/// A primitive segment: a virtual range mapping physical chunks back to back.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentInfo {
    /// Start of the virtual range.
    pub address: u64,
    /// Size of the virtual range.
    pub size: u64,
    /// The stream (as the caller names it) whose pool holds its free blocks.
    pub stream: u64,
    /// Small or large pool.
    pub pool: PoolKind,
    /// The memory pool that owns it (`PoolId::DEFAULT`, or a private pool).
    pub owner: PoolId,
    /// Its physical chunks in address order.
    pub chunks: Vec<ChunkInfo>,
    /// Its blocks in address order; they tile the segment.
    pub blocks: Vec<BlockInfo>,
}

/// One physical handle mapped into a segment.
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkInfo {
    /// The backend's handle value.
    pub handle: u64,
    /// Offset of the chunk in its segment.
    pub offset: u64,
    /// Size of the handle.
    pub size: u64,
    /// Whether it has gone back to the device (its range is then a hole).
    pub released: bool,
    /// How many mappings of stitched blocks use part of it.
    pub stitched_mappings: u32,
}

/// What a block is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockStateInfo {
    /// Handed to a caller (PyTorch's `active_allocated`).
    ActiveAllocated,
    /// Freed, waiting for other streams' work (PyTorch's `active_pending_free`).
    ActivePendingFree,
    /// Free (PyTorch's `inactive`).
    Inactive,
    /// Backing part of the active stitched block at this address.
    Lent {
        /// The stitched block's address.
        stitched_address: u64,
    },
    /// Its chunk went back to the device.
    Released,
}

/// A block inside a segment.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockInfo {
    /// Start address.
    pub address: u64,
    /// Size.
    pub size: u64,
    /// Bytes the caller asked for (0 unless allocated or pending free).
    pub requested_size: u64,
    /// State.
    pub state: BlockStateInfo,
    /// The caller's context id when it was allocated (0 unless allocated or pending free).
    pub context: u64,
}

/// A stitched block: a virtual range mapping pieces of chunks of several segments.
#[derive(Clone, Debug, PartialEq)]
pub struct StitchedInfo {
    /// The address it hands out: the start of its virtual range, or, for a block stitched from
    /// a chunk's free end (`stitch_free_ends`), that many bytes into its first piece.
    pub address: u64,
    /// The bytes it can serve, from `address` to the end of its range.
    pub size: u64,
    /// Whether it is handed out (or pending free).
    pub active: bool,
    /// Bytes the caller asked for (0 when cached).
    pub requested_size: u64,
    /// The caller's context id when it was handed out (0 when cached).
    pub context: u64,
    /// The memory pool that owns it.
    pub owner: PoolId,
    /// Its mappings in address order.
    pub pieces: Vec<PieceInfo>,
}

/// One mapping of a stitched block: part of a physical chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct PieceInfo {
    /// Address of the segment the chunk belongs to.
    pub segment_address: u64,
    /// Index of the chunk in that segment.
    pub chunk_index: u32,
    /// The chunk's handle value.
    pub handle: u64,
    /// Offset of the piece inside the handle.
    pub offset_in_handle: u64,
    /// Size of the piece.
    pub size: u64,
}

impl<D: Device> Allocator<D> {
    /// A snapshot of all segments, blocks and stitched blocks.
    pub fn snapshot(&self) -> Snapshot {
        let mut requested: HashMap<LiveKind, (u64, bool, u64)> = HashMap::new();
        for l in self.live.values() {
            requested.insert(l.kind, (l.requested, false, l.context));
        }
        for p in &self.pending_frees {
            requested.insert(p.live.kind, (p.live.requested, true, p.live.context));
        }
        let g = self.gran;
        let mut snap = Snapshot::default();
        for (_, seg) in self.segments.iter() {
            let mut blocks = Vec::new();
            let mut b = Some(seg.first_block);
            while let Some(id) = b {
                let blk = &self.blocks[id];
                let (req, state, context) = match blk.state {
                    BlockState::Free => (0, BlockStateInfo::Inactive, 0),
                    BlockState::Hole => (0, BlockStateInfo::Released, 0),
                    // Parked memory is free memory.
                    _ if self.free_or_parked(id) => (0, BlockStateInfo::Inactive, 0),
                    BlockState::Lent(sid) => (
                        0,
                        BlockStateInfo::Lent {
                            stitched_address: self.stitched[sid].addr(),
                        },
                        0,
                    ),
                    BlockState::Allocated => match requested.get(&LiveKind::Block(id)) {
                        Some(&(r, true, c)) => (r, BlockStateInfo::ActivePendingFree, c),
                        Some(&(r, false, c)) => (r, BlockStateInfo::ActiveAllocated, c),
                        None => (0, BlockStateInfo::ActiveAllocated, 0),
                    },
                };
                blocks.push(BlockInfo {
                    address: blk.addr,
                    size: blk.size,
                    requested_size: req,
                    state,
                    context,
                });
                b = blk.next;
            }
            snap.segments.push(SegmentInfo {
                address: seg.va,
                size: seg.size,
                stream: self.streams.list[self.lane_stream(seg.lane) as usize]
                    .handle
                    .0,
                pool: seg.pool,
                owner: self.pool_id(self.lane_pool(seg.lane)),
                chunks: seg
                    .chunks
                    .iter()
                    .map(|c| ChunkInfo {
                        handle: c.handle.0,
                        offset: c.offset,
                        size: c.size,
                        released: c.released,
                        stitched_mappings: c.stitch_maps,
                    })
                    .collect(),
                blocks,
            });
        }
        for (sid, st) in self.stitched.iter() {
            let pieces = st
                .pieces
                .iter()
                .map(|p| {
                    let seg = &self.segments[p.seg];
                    let off = p.first_page as u64 * g;
                    let ci = seg.chunk_at(off);
                    let c = &seg.chunks[ci];
                    PieceInfo {
                        segment_address: seg.va,
                        chunk_index: ci as u32,
                        handle: c.handle.0,
                        offset_in_handle: off - c.offset,
                        size: p.pages as u64 * g,
                    }
                })
                .collect();
            let (req, _, context) = requested
                .get(&LiveKind::Stitched(sid))
                .copied()
                .unwrap_or_default();
            snap.stitched.push(StitchedInfo {
                address: st.addr(),
                size: st.servable(),
                active: st.active,
                requested_size: req,
                context,
                owner: self.pool_id(st.owner),
                pieces,
            });
        }
        snap
    }
}
