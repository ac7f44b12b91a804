//! A locked allocator for sharing between threads.
//!
//! The allocator itself is driven through `&mut self`; [`SharedAllocator`] puts it behind a spin
//! lock (`spin::Mutex`, the core's only lock, since the core is `no_std`). Critical sections are
//! short except when the allocator calls the device (creating memory, synchronizing), which
//! PyTorch's caching allocator also does under its mutex.
//!
//! The lock goes through the small shim [`Lock`] so that the loom model (`core/tests/loom.rs`, built
//! with `RUSTFLAGS="--cfg loom"`) can swap in loom's mutex: loom cannot see spin's atomics.

use crate::allocator::Allocator;
use crate::device::Device;

/// The core's one lock: `spin::Mutex`, or loom's mutex under `cfg(loom)`.
pub(crate) struct Lock<T>(
    #[cfg(not(loom))] spin::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

impl<T> Lock<T> {
    fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return Lock(spin::Mutex::new(value));
        #[cfg(loom)]
        return Lock(loom::sync::Mutex::new(value));
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(not(loom))]
        return f(&mut self.0.lock());
        #[cfg(loom)]
        return f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn into_inner(self) -> T {
        #[cfg(not(loom))]
        return self.0.into_inner();
        #[cfg(loom)]
        return self.0.into_inner().unwrap_or_else(|e| e.into_inner());
    }
}

/// An [`Allocator`] behind a lock: `Send + Sync` when the device is `Send`.
pub struct SharedAllocator<D: Device> {
    inner: Lock<Allocator<D>>,
}

impl<D: Device> SharedAllocator<D> {
    /// Wraps an allocator.
    pub fn new(allocator: Allocator<D>) -> Self {
        SharedAllocator {
            inner: Lock::new(allocator),
        }
    }

    /// Runs `f` with the allocator locked. Do not call back into the same `SharedAllocator` from
    /// `f`: the lock is not re-entrant and would spin forever.
    pub fn with<R>(&self, f: impl FnOnce(&mut Allocator<D>) -> R) -> R {
        self.inner.with(f)
    }

    /// Unwraps the allocator.
    pub fn into_inner(self) -> Allocator<D> {
        self.inner.into_inner()
    }
}
