//! A locked allocator for sharing between threads.
//!
//! The allocator itself is driven through `&mut self`; [`SharedAllocator`] puts it behind a spin
//! lock (`spin::Mutex`, the core's only lock, since the core is `no_std`). Critical sections are
//! short except when the allocator calls the device (creating memory, synchronizing), which
//! PyTorch's caching allocator also does under its mutex.

use crate::allocator::Allocator;
use crate::device::Device;

/// An [`Allocator`] behind a lock: `Send + Sync` when the device is `Send`.
pub struct SharedAllocator<D: Device> {
    inner: spin::Mutex<Allocator<D>>,
}

impl<D: Device> SharedAllocator<D> {
    /// Wraps an allocator.
    pub fn new(allocator: Allocator<D>) -> Self {
        SharedAllocator {
            inner: spin::Mutex::new(allocator),
        }
    }

    /// Runs `f` with the allocator locked. Do not call back into the same `SharedAllocator` from
    /// `f`: the lock is not re-entrant and would spin forever.
    pub fn with<R>(&self, f: impl FnOnce(&mut Allocator<D>) -> R) -> R {
        f(&mut self.inner.lock())
    }

    /// Unwraps the allocator.
    pub fn into_inner(self) -> Allocator<D> {
        self.inner.into_inner()
    }
}
