//! Sharing a live allocation with another process (PyTorch's CUDA IPC): the physical handles
//! behind its bytes, in address order, exported by the device as operating-system handles that
//! the other process imports and maps back to back into a range of its own.

use super::types::LiveKind;
use super::Allocator;
use crate::device::{Device, DriverCall};
use crate::error::{Error, Result};
use alloc::vec::Vec;

/// One physical handle's part of a shared allocation: `size` bytes from `offset` into a handle of
/// `handle_size` bytes, exported as `os_handle` (CUDA: a POSIX file descriptor of the exporting
/// process, which stays open for as long as the handle lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedPiece {
    /// The exported handle, as the device names it (a file descriptor on Linux).
    pub os_handle: i64,
    /// The physical handle's size in bytes.
    pub handle_size: u64,
    /// Where the piece starts in the handle, in bytes (0 for every piece gmlake makes: the driver
    /// maps whole handles only).
    pub offset: u64,
    /// The piece's size in bytes.
    pub size: u64,
}

/// What another process needs to map a live allocation: its pieces, to be mapped back to back in
/// this order, and where the allocation starts in the first (`offset` bytes in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shared {
    /// Bytes from the start of the first piece to the allocation's first byte.
    pub offset: u64,
    /// The pieces, in address order; together they cover the allocation.
    pub pieces: Vec<SharedPiece>,
}

impl Shared {
    /// The size every piece shares when all are whole handles of one size (the form PyTorch's
    /// expandable segments share, which its own allocator can import), else `None`.
    pub fn uniform_handle_size(&self) -> Option<u64> {
        let first = self.pieces.first()?;
        self.pieces
            .iter()
            .all(|p| p.offset == 0 && p.size == p.handle_size && p.handle_size == first.handle_size)
            .then_some(first.handle_size)
    }
}

impl<D: Device> Allocator<D> {
    /// The physical handles behind the live allocation at `addr`, exported for another process
    /// ([`Device::export_handle`]): for a block of a segment, the whole chunks its bytes lie in;
    /// for a stitched block, the pieces it maps, up to its rounded size. O(pieces).
    ///
    /// # Errors
    /// [`Error::NotAllocated`] if `addr` is not a live allocation; [`Error::Device`] if the device
    /// cannot export a handle (the host and simulated devices name handles but share nothing).
    pub fn share(&mut self, addr: u64) -> Result<Shared> {
        let live = self.live.get(&addr).ok_or(Error::NotAllocated { addr })?;
        let (kind, len) = (live.kind, live.rounded);
        let g = self.gran;
        // (handle, handle size, offset into it, bytes), in address order.
        let mut parts = Vec::new();
        let offset;
        match kind {
            LiveKind::Block(b) => {
                let seg = &self.segments[self.blocks[b].seg];
                let (first, last) = (
                    seg.chunk_at(addr - seg.va),
                    seg.chunk_at(addr + len - 1 - seg.va),
                );
                offset = addr - seg.va - seg.chunks[first].offset;
                for c in &seg.chunks[first..=last] {
                    parts.push((c.handle, c.size, 0, c.size));
                }
            }
            LiveKind::Stitched(s) => {
                offset = self.stitched[s].lead;
                let mut covered = 0;
                for p in &self.stitched[s].pieces {
                    if covered >= offset + len {
                        break;
                    }
                    let seg = &self.segments[p.seg];
                    let off = p.first_page as u64 * g;
                    let c = &seg.chunks[seg.chunk_at(off)];
                    let bytes = p.pages as u64 * g;
                    parts.push((c.handle, c.size, off - c.offset, bytes));
                    covered += bytes;
                }
            }
        }
        let mut pieces = Vec::with_capacity(parts.len());
        for (handle, handle_size, off, size) in parts {
            let os_handle = self
                .call(DriverCall::ExportHandle, |d| d.export_handle(handle))
                .map_err(Error::Device)?;
            pieces.push(SharedPiece {
                os_handle,
                handle_size,
                offset: off,
                size,
            });
        }
        Ok(Shared { offset, pieces })
    }
}
