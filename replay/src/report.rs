//! The replay report as JSON rows and as a table.

use gmlake_core::replay::ReplayReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// One trace's results; the JSON object of `--format json`.
#[derive(Debug, Serialize)]
pub struct Row {
    pub trace: String,
    pub config: String,
    pub events: u64,
    pub allocs: u64,
    pub frees: u64,
    pub unmatched_frees: u64,
    pub duplicate_allocs: u64,
    /// Peak of live requested bytes.
    pub peak_active_bytes: u64,
    /// Peak physical bytes gmlake held.
    pub peak_reserved_bytes: u64,
    pub utilization: f64,
    pub native_peak_reserved_bytes: u64,
    pub native_utilization: f64,
    pub native_segment_allocs: u64,
    /// PyTorch's segment_alloc count times the measured cudaMalloc cost, microseconds.
    pub native_estimated_driver_us: f64,
    pub ooms: u64,
    pub num_stitches: u64,
    pub num_stitch_reuses: u64,
    pub num_stitch_gc: u64,
    /// Driver calls by kind, over the whole replay including the teardown.
    pub driver_calls: BTreeMap<String, u64>,
    /// Estimated driver time during the trace, microseconds (H200 cost table).
    pub estimated_driver_us: f64,
    /// Estimated driver time of the final free-everything and empty_cache, microseconds.
    pub teardown_driver_us: f64,
    /// Wall time of the replay loop per allocation or free, nanoseconds (host CPU, simulated device).
    pub replay_ns_per_op: f64,
    pub end_handles: u64,
    pub end_ranges: u64,
    pub end_mappings: u64,
    pub end_events: u64,
    /// Segments created in the small and large pools.
    pub segments_created: [u64; 2],
}

impl Row {
    pub fn new(trace: String, r: ReplayReport, elapsed: Duration, config: &str) -> Row {
        Row {
            trace,
            config: config.to_string(),
            events: r.events,
            allocs: r.allocs,
            frees: r.frees,
            unmatched_frees: r.unmatched_frees,
            duplicate_allocs: r.duplicate_allocs,
            peak_active_bytes: r.peak_active_bytes,
            peak_reserved_bytes: r.peak_reserved_bytes,
            utilization: r.utilization,
            native_peak_reserved_bytes: r.native_peak_reserved_bytes,
            native_utilization: r.native_utilization,
            native_segment_allocs: r.native_segment_allocs,
            native_estimated_driver_us: r.native_estimated_driver_us,
            ooms: r.ooms,
            num_stitches: r.num_stitches,
            num_stitch_reuses: r.num_stitch_reuses,
            num_stitch_gc: r.num_stitch_gc,
            driver_calls: r
                .driver_calls
                .iter()
                .map(|(c, n)| (c.name().to_string(), n))
                .collect(),
            estimated_driver_us: r.estimated_driver_us,
            teardown_driver_us: r.teardown_driver_us,
            replay_ns_per_op: if r.ops == 0 {
                0.0
            } else {
                elapsed.as_nanos() as f64 / r.ops as f64
            },
            end_handles: r.end_handles,
            end_ranges: r.end_ranges,
            end_mappings: r.end_mappings,
            end_events: r.end_events,
            segments_created: [
                r.stats.segment.small_pool.allocated,
                r.stats.segment.large_pool.allocated,
            ],
        }
    }
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// A fixed-width table, one line per trace, gmlake's figures beside PyTorch's.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:>10} {:>12} {:>8} {:>12} {:>8} {:>5} {:>8} {:>7} {:>11} {:>11} {:>7} {:>9}",
        "trace",
        "allocs",
        "peak GB",
        "gmlake GB",
        "util",
        "native GB",
        "native",
        "ooms",
        "stitches",
        "reuses",
        "driver ms",
        "native ms",
        "ns/op",
        "leaks h/r/m"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>10.2} {:>12.2} {:>8.4} {:>12.2} {:>8.4} {:>5} {:>8} {:>7} {:>11.1} {:>11.1} {:>7.0} {:>3}/{}/{}",
            r.trace,
            r.allocs,
            gb(r.peak_active_bytes),
            gb(r.peak_reserved_bytes),
            r.utilization,
            gb(r.native_peak_reserved_bytes),
            r.native_utilization,
            r.ooms,
            r.num_stitches,
            r.num_stitch_reuses,
            r.estimated_driver_us / 1e3,
            r.native_estimated_driver_us / 1e3,
            r.replay_ns_per_op,
            r.end_handles,
            r.end_ranges,
            r.end_mappings
        );
    }
    out
}
