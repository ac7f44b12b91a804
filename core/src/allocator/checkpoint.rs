//! Checkpoints of private pools (PyTorch's `getCheckpointState` and `setCheckpointPoolState`,
//! used by CUDA graph trees): a pool's live allocations at one moment, and the return to them.

use super::pools::PoolId;
use super::Allocator;
use crate::device::{Device, StreamHandle};
use crate::error::{Error, Result};
use alloc::vec::Vec;

/// A private pool's live allocations at one moment, to return the pool to that state
/// ([`Allocator::restore_pool`]; PyTorch's `getCheckpointState`, used by CUDA graph trees).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolCheckpoint {
    /// The pool.
    pub pool: PoolId,
    /// `(address, requested bytes, stream)` of each live allocation, by address.
    pub allocations: Vec<(u64, u64, StreamHandle)>,
}

/// What [`Allocator::restore_pool`] did: the allocations it freed and those it made again, by
/// address (an address may be in both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolRestore {
    /// Addresses of the allocations freed.
    pub freed: Vec<u64>,
    /// Addresses of the allocations made again, at the addresses of the checkpoint.
    pub allocated: Vec<u64>,
}

impl<D: Device> Allocator<D> {
    /// The live allocations of private pool `id`, to return to later.
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown or released pool.
    pub fn checkpoint_pool(&self, id: PoolId) -> Result<PoolCheckpoint> {
        let p = self.pool_index(id)?;
        if !self.pools.pinned(p) {
            return Err(Error::InvalidArgument("not a private pool in use"));
        }
        let mut allocations: Vec<(u64, u64, StreamHandle)> = self
            .live
            .iter()
            .filter(|(_, l)| l.owner == p)
            .map(|(&a, l)| (a, l.requested, self.streams.list[l.stream as usize].handle))
            .collect();
        allocations.sort_unstable();
        Ok(PoolCheckpoint {
            pool: id,
            allocations,
        })
    }

    /// Returns private pool `cp.pool` to the checkpoint: frees every live allocation of the pool,
    /// then makes each allocation of the checkpoint again at its address (its data is where it
    /// was: nothing is moved). Synchronizes the device first, so that no free waits for other
    /// streams. PyTorch's `setCheckpointPoolState`, for CUDA graph trees.
    ///
    /// # Errors
    /// `InvalidArgument` for an unknown or released pool, or during a capture; `Device` if the
    /// synchronization failed (nothing changed then); `NotAllocated` (naming the address) if an
    /// allocation of the checkpoint cannot be made again at its address, after which the pool
    /// holds the allocations made so far.
    pub fn restore_pool(&mut self, cp: &PoolCheckpoint) -> Result<PoolRestore> {
        let p = self.pool_index(cp.pool)?;
        if !self.pools.pinned(p) || self.capturing() {
            return Err(Error::InvalidArgument(
                "only a private pool in use can be restored, outside a capture",
            ));
        }
        self.call(crate::device::DriverCall::SynchronizeDevice, |d| {
            d.synchronize_device()
        })
        .map_err(Error::Device)?;
        self.after_device_sync();
        self.unpark();
        let mut out = PoolRestore {
            freed: self.pool_live_allocations(cp.pool),
            allocated: Vec::new(),
        };
        for &a in &out.freed {
            self.free(a)?;
        }
        // Every free of the pool is complete now (the device is idle): free neighbours that
        // different streams' work kept apart can merge.
        self.after_device_sync();
        for seg in self.segments.ids() {
            if self.lane_pool(self.segments[seg].lane) == p {
                self.coalesce_segment(seg);
            }
        }
        for &(addr, requested, stream) in &cp.allocations {
            let s = self.stream_index(stream);
            let l = self.lane(p, s);
            self.claim_exact(addr, requested, l)
                .ok_or(Error::NotAllocated { addr })?;
            out.allocated.push(addr);
        }
        Ok(out)
    }
}
