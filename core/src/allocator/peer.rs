//! Borrowing a peer device's memory (`peer_borrow`): when a request finds no room on this device,
//! new physical handles are created in a peer's memory ([`crate::Device::create_peer_handle`]) and
//! mapped into this device's address space, alone or stitched behind this device's own free
//! chunks, so that a request larger than what is free here is served by memory of two devices.
//! When and from whom is decided in `policy.rs` ([`super::policy::may_borrow`],
//! [`super::policy::peer_limit`]).
//!
//! Borrowed memory lives in segments of its own (`Segment::peer`), in the lanes of an internal
//! pool ([`BORROW_POOL`]), so that best fit for ordinary requests never hands it out; it is used
//! again only by requests that borrow, and goes back to the peer, before local memory, whenever
//! cached memory is released (`empty_cache`, or an allocation that found no room). The handles
//! are this device's: the peer's own allocator never sees them, and counts them as memory its
//! device no longer has. Borrowed chunks are never cut (`split.rs`).

use super::pools::{PoolId, PoolState};
use super::types::*;
use super::{policy, Allocator, Served};
use crate::device::Device;
use crate::stats::{PoolKind, MAX_PEERS};

/// The id of the internal pool that holds borrowed memory (no PyTorch pool id takes it).
pub const BORROW_POOL: PoolId = PoolId(u64::MAX, u64::MAX);

impl<D: Device> Allocator<D> {
    /// The most bytes this allocator borrows from one peer ([`policy::peer_limit`]).
    pub(super) fn peer_limit(&self) -> u64 {
        policy::peer_limit(&self.cfg, self.dev.total_memory(), self.gran)
    }

    /// The lane of borrowed memory for the stream of lane `l`, its pool made on first use (with
    /// no users, so that releasing cached memory returns all of it). O(1).
    fn borrow_lane(&mut self, l: LaneIdx) -> LaneIdx {
        let p = match self.pools.find(BORROW_POOL) {
            Some(p) if self.pools.get(p).is_some() => p,
            _ => self.pools.add(PoolState {
                id: BORROW_POOL,
                use_count: 0,
                live: 0,
                no_split: false,
                use_on_oom: false,
            }),
        };
        let s = self.lane_stream(l);
        self.lane(p, s)
    }

    /// A free block of memory borrowed before that fits `rounded` bytes on lane `l`'s stream, and
    /// the lane it is taken from (`l` if none). O(log free borrowed blocks).
    pub(super) fn reuse_borrowed(&mut self, rounded: u64, l: LaneIdx) -> (Option<Served>, LaneIdx) {
        let lb = self.borrow_lane(l);
        match self.best_fit(PoolKind::Large, lb, rounded) {
            Some(b) => (Some(Served::Block(b)), lb),
            None => (None, l),
        }
    }

    /// Serves `rounded` bytes (a large request of lane `l`, default pool) with a peer's memory:
    /// this device's free chunks, and whatever room the device (or its limit) still has, stitched
    /// with new handles in the first peer with room under [`Self::peer_limit`] for the rest, else
    /// a new segment wholly in that peer's memory. Returns what serves it (`None` if no peer
    /// lends; the room taken here then stays cached) and the lane it is taken from.
    /// O(peers × a stitch).
    pub(super) fn borrow_from_peers(
        &mut self,
        rounded: u64,
        l: LaneIdx,
    ) -> (Option<Served>, LaneIdx) {
        let lb = self.borrow_lane(l);
        let bytes = rounded.div_ceil(self.gran) * self.gran;
        self.handle_size = policy::handle_size(&self.cfg, self.gran, rounded);
        let free = self.dev.free_memory().unwrap_or(0);
        let room = free.min(self.reserved_cap().saturating_sub(self.local_reserved())) / self.gran
            * self.gran;
        if room > 0 && room < bytes {
            // What is left here is used before anything is borrowed; it is cached if no peer lends.
            let _ = self.grow(l, PoolKind::Large, room);
        }
        let peers = self.dev.peers();
        for p in peers.into_iter().filter(|&p| (p as usize) < MAX_PEERS) {
            if self.stats.borrowed_from(p) + self.gran > self.peer_limit() {
                continue;
            }
            self.borrowing = Some((p, lb));
            let served = match self.stitch_growing(rounded, self.gran, l, self.cfg.stitch_free_ends)
            {
                Ok(Some(sid)) => Some((Served::Stitched(sid), l)),
                _ => self
                    .grow(lb, PoolKind::Large, bytes)
                    .ok()
                    .map(|seg| (Served::Block(self.segments[seg].first_block), lb)),
            };
            self.borrowing = None;
            if let Some((s, lane)) = served {
                return (Some(s), lane);
            }
        }
        (None, l)
    }
}
