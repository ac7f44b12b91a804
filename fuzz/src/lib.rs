//! Fuzzing harness for gmlake (issue 6): an operation language — allocate a size on a stream, free
//! a live allocation, free a garbage pointer, free twice, free an interior pointer, record a stream,
//! empty the cache, change the device's capacity, make an upcoming driver call fail — decoded from
//! raw bytes with [`arbitrary`] and run against the simulated device or the host-memory device
//! (real, aliasing memory), checking after every step:
//!
//! - the allocator's own consistency check (`Allocator::check_invariants`: blocks tile segments,
//!   pools, page counts, stitched aliases, statistics, no two live allocations sharing memory);
//! - a model of the live allocations: each answer is the one the API documents (`ZeroSize`,
//!   `TooLarge`, `NotAllocated`, `OutOfMemory`, `Device` only where a fault or the capacity explains
//!   it), live ranges never overlap, `requested_bytes` equals the model's sum;
//! - on host memory, every allocation's tag bytes, verified before it is freed;
//! - at the end, after freeing everything: no handle, range, mapping or event left on the device.
//!
//! The same entry point, [`run_bytes`], is called by the cargo-fuzz target (`fuzz/cargo-fuzz/`,
//! nightly), by the stable-toolchain random driver (`gmlake-fuzz` binary), and by the corpus and
//! proptest tests in `fuzz/tests/`.

#![deny(unsafe_op_in_unsafe_fn)]

mod faulty;
mod program;
mod run;

pub use faulty::FaultyDevice;
pub use program::{Backend, Op, Preset, Program, SizeChoice};
pub use run::{run_bytes, run_program, Outcome, Violation};
