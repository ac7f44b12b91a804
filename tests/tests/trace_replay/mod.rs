//! Replays of the repository's trace files on the simulated H200 and the checks every replay of a
//! real trace must pass; shared by `traces.rs` and `held_out_traces.rs`.
#![allow(dead_code)] // each test binary uses a subset

use gmlake_core::replay::{replay, ReplayReport, TraceEvent};
use gmlake_core::sim::SimulatedDevice;
use gmlake_core::Config;
use std::path::PathBuf;

/// The H200's memory in bytes, as the simulated device's capacity.
pub const H200_BYTES: u64 = 150_754_820_096;

/// The events of `<dir>/<name>.txt.gz`, `dir` relative to the repository root.
pub fn trace(dir: &str, name: &str) -> Vec<TraceEvent> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir)
        .join(format!("{name}.txt.gz"));
    gmlake_trace::read_trace(&path, None).unwrap()
}

/// Replays `<dir>/<name>.txt.gz` with the default configuration on a device of `capacity` bytes.
pub fn run(dir: &str, name: &str, capacity: u64) -> ReplayReport {
    replay(
        SimulatedDevice::new(capacity),
        Config::default(),
        trace(dir, name),
    )
    .unwrap()
}

/// Replays a trace and asserts: no OOM; utilization at least `floor` and above PyTorch's by more
/// than `native_margin`; driver time at most `driver_ratio` times PyTorch's estimate; nothing
/// left on the device; and no OOM with the capacity set to PyTorch's peak reserved bytes.
/// Returns the report of the full-capacity replay.
pub fn check(
    dir: &str,
    name: &str,
    floor: f64,
    native_margin: f64,
    driver_ratio: f64,
) -> ReplayReport {
    let r = run(dir, name, H200_BYTES);
    assert_eq!(r.ooms, 0, "{name}");
    assert!(
        r.utilization >= floor,
        "{name}: utilization {} below {floor}",
        r.utilization
    );
    assert!(
        r.utilization > r.native_utilization + native_margin,
        "{name}: {} is no better than PyTorch's {}",
        r.utilization,
        r.native_utilization
    );
    assert!(
        r.estimated_driver_us <= driver_ratio * r.native_estimated_driver_us,
        "{name}: {} us of driver time against PyTorch's {}",
        r.estimated_driver_us,
        r.native_estimated_driver_us
    );
    assert_eq!(
        (r.end_handles, r.end_ranges, r.end_mappings, r.end_events),
        (0, 0, 0, 0),
        "{name}"
    );
    // gmlake fits wherever PyTorch fit.
    let tight = run(dir, name, r.native_peak_reserved_bytes);
    assert_eq!(tight.ooms, 0, "{name} at PyTorch's peak reserved");
    r
}
