//! # gmlake-core
//!
//! A GPU memory allocator that defeats fragmentation by *virtual memory stitching* (GMLake, Guo et
//! al., ASPLOS 2024): when no single free block fits a request, several free physical chunks are
//! mapped back to back into one new virtual range, instead of asking the device for more memory.
//!
//! The core is `#![no_std]` + `alloc` and runs against the abstract [`Device`] trait; a CUDA
//! backend lives in `gmlake-cuda`, and [`sim::SimulatedDevice`] keeps a GPU's books in host memory
//! for tests and trace replay ([`replay`]).
//!
//! ```
//! use gmlake_core::{Allocator, Config, StreamHandle, sim::SimulatedDevice};
//! let mut a = Allocator::new(SimulatedDevice::new(1 << 30), Config::default()).unwrap();
//! let p = a.malloc(3 << 20, StreamHandle(0)).unwrap();
//! a.free(p).unwrap();
//! a.empty_cache().unwrap();
//! assert_eq!(a.stats().reserved_bytes.all.current, 0);
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(loom)]
extern crate std;

mod allocator;
pub mod config;
pub mod device;
pub mod error;
pub mod ledger;
pub mod replay;
pub mod sim;
pub mod stats;
mod sync;

pub use allocator::{
    Allocator, BlockInfo, BlockStateInfo, ChunkInfo, HistoryRecord, PieceInfo, PoolCheckpoint,
    PoolId, PoolRestore, SegmentInfo, Shared, SharedPiece, Snapshot, StitchedInfo, BORROW_POOL,
    MAX_REQUEST, MIN_BLOCK_SIZE,
};
pub use config::Config;
pub use device::{
    Device, DeviceError, DeviceErrorKind, DriverCall, DriverCallCounts, EventHandle, PhysHandle,
    StreamHandle,
};
pub use error::{Error, OomInfo, Result};
pub use stats::{PoolKind, Stat, StatArray, Stats};
pub use sync::SharedAllocator;
