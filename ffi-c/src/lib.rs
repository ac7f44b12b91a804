//! # gmlake C ABI
//!
//! `libgmlake.a` / `libgmlake.so` and the header `include/gmlake.h` (generated from this crate by
//! cbindgen; a test fails when the committed header is stale). Every function returns a
//! [`gmlake_status`]; on failure a message for the calling thread is available from
//! [`gmlake_last_error`]. Null or invalid arguments return an error code; no panic crosses the
//! boundary (a caught panic returns `GMLAKE_ERROR_INTERNAL`). All functions are thread-safe: each
//! allocator is locked for the duration of a call.
#![allow(non_camel_case_types)]

mod api;
mod device;
mod error;
mod inspect;
mod ipc;
mod out;
mod pools;
mod snapshot;
mod stats;
mod torch;

pub use api::*;
pub use device::AnyDevice;
pub use error::{gmlake_last_error, gmlake_status};
pub use inspect::*;
pub use ipc::*;
pub use pools::*;
pub use stats::{gmlake_device_stats, gmlake_stat, gmlake_stat_array, gmlake_stats};

/// All statistics as flat JSON, as `gmlake_stats_json` returns them (also used by the Python
/// module). `driver_us` is the device's driver time in microseconds, where it keeps one
/// ([`gmlake_core::device::DeviceBooks::driver_us`]); it is then reported as `gmlake.driver_us`.
pub fn stats_json_of(s: &gmlake_core::Stats, driver_us: Option<f64>) -> String {
    stats::stats_json(s, driver_us)
}

/// The snapshot as JSON, as `gmlake_snapshot_json` returns it (also used by the C++ API and the
/// Python module).
pub fn snapshot_json_of(s: &gmlake_core::Snapshot) -> String {
    snapshot::snapshot_json(s)
}
pub use torch::*;
